"""The warehouse group: prediction events → ``prediction_logs`` (DuckDB by default, BigQuery in production)."""

from __future__ import annotations

import asyncio

import msgspec

from consumers.base import BatchResult, Entry
from schemas.events import PredictionEvent
from warehouse.base import Warehouse, event_columns

_DECODER = msgspec.json.Decoder(PredictionEvent)


class WarehouseHandler:
    """Decode, convert to columns, insert idempotently; undecodable or unloadable events fail individually."""

    group = "warehouse"

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    async def start(self) -> None:
        await asyncio.to_thread(self.warehouse.ensure_tables)

    def _handle(self, entries: list[Entry]) -> BatchResult:
        failed: dict[str, str] = {}
        events: list[PredictionEvent] = []
        entry_of: dict[str, str] = {}
        for entry in entries:
            try:
                event = _DECODER.decode(entry.payload)
            except msgspec.DecodeError as exc:
                failed[entry.id] = f"undecodable prediction event: {exc}"
                continue
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
