"""The warehouse group: prediction events → ``prediction_logs`` (DuckDB by default, BigQuery in production)."""

from __future__ import annotations

import asyncio

from common.keys import Keys
from consumers.base import BatchResult, Entry
from schemas.events import upgrade_payload
from warehouse.base import Warehouse


class WarehouseHandler:
    """Insert idempotently (on prediction_id); events that cannot load fail individually and are dead-lettered.

    Events go to the warehouse as JSON documents (decompressed; DuckDB parses the JSON itself, BigQuery's sink
    decodes it); documents of an older event version are upgraded first.
    """

    group = "warehouse"

    def __init__(self, warehouse: Warehouse, keys: Keys) -> None:
        self.warehouse = warehouse
        self._streams = keys.prediction_streams()

    @property
    def streams(self) -> list[str]:
        return self._streams

    async def start(self) -> None:
        await asyncio.to_thread(self.warehouse.ensure_tables)

    def _handle(self, entries: list[Entry]) -> BatchResult:
        payloads: list[bytes] = []
        positions: list[int] = []
        failed: dict[str, str] = {}
        for i, entry in enumerate(entries):
            version = entry.version
            try:
                payloads.append(upgrade_payload(version, entry.document))
            except ValueError as exc:
                failed[entry.id] = f"undecodable prediction event (version {version}): {exc}"
                continue
            positions.append(i)
        _, rejected = self.warehouse.insert_events(payloads)
        for position, why in rejected.items():
            failed[entries[positions[position]].id] = f"unloadable prediction event: {why}"
        return BatchResult(failed)

    async def handle(self, entries: list[Entry]) -> BatchResult:
        # Decoding and the (blocking) warehouse client run off the event loop, which keeps health beats going.
        return await asyncio.to_thread(self._handle, entries)

    async def released(self, stream: str, lost: bool) -> None:
        return None

    async def tick(self) -> None:
        return None

    async def close(self) -> None:
        await asyncio.to_thread(self.warehouse.close)
