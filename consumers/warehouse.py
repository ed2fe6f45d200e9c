"""The warehouse group: prediction events → ``prediction_logs`` (DuckDB by default, BigQuery in production)."""

from __future__ import annotations

import asyncio

import msgspec

from consumers.base import BatchResult, Entry, decode_entries
from schemas.events import PredictionEvent
from warehouse.base import Warehouse, event_columns

_DECODER = msgspec.json.Decoder(PredictionEvent)


class WarehouseHandler:
    """Insert idempotently; undecodable or unloadable events fail individually (and are dead-lettered later).

    Warehouses with ``insert_raw`` (DuckDB) get the raw event JSON and parse it natively; others (BigQuery) get
    events decoded and validated with msgspec, as columns.
    """

    group = "warehouse"

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    async def start(self) -> None:
        await asyncio.to_thread(self.warehouse.ensure_tables)

    def _handle(self, entries: list[Entry]) -> BatchResult:
        insert_raw = getattr(self.warehouse, "insert_raw", None)
        if insert_raw is not None:  # the warehouse parses event JSON itself (DuckDB): Python only moves bytes
            _, rejected = insert_raw([e.payload for e in entries])
            return BatchResult({entries[i].id: f"unloadable prediction event: {why}" for i, why in rejected.items()})
        decoded, failed = decode_entries(entries, _DECODER.decode)
        events: list[PredictionEvent] = []
        entry_of: dict[str, str] = {}
        for entry, event in decoded:
            if event.prediction_id in entry_of:  # the same event twice in one batch: insert it once
                continue
            entry_of[event.prediction_id] = entry.id
            events.append(event)
        if events:
            result = self.warehouse.insert_predictions(event_columns(events))
            for prediction_id, error in result.rejected.items():
                failed[entry_of[prediction_id]] = error
        return BatchResult(failed)

    async def handle(self, entries: list[Entry]) -> BatchResult:
        # Decoding and the (blocking) warehouse client run off the event loop, which keeps health beats going.
        return await asyncio.to_thread(self._handle, entries)

    async def close(self) -> None:
        await asyncio.to_thread(self.warehouse.close)
