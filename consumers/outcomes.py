"""The outcomes group: loan outcomes → the warehouse's ``outcomes`` table, and the performance job on a schedule.

Landing is idempotent by transaction (``Warehouse.insert_outcomes``): a later outcome supersedes the loan's current
one, the same outcome again changes nothing, so re-delivery after a crash and re-sent files count once. Outcomes for
transactions the warehouse has no decision for are landed like any other (they may arrive first) and reported by
``bnpl performance``.

The tick runs the performance analysis that is due (``BNPL_PERFORMANCE_CADENCE``: Mondays or daily), at most once per
analysis date across workers and restarts (a marker key per date), checked every ``BNPL_PERFORMANCE_SCHEDULE_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from common.settings import Settings
from consumers.base import BatchResult, Entry, decode_entries
from schemas.outcomes import OUTCOME_VERSION, OutcomeEvent
from warehouse.base import OutcomeResult, Warehouse

log = logging.getLogger(__name__)
_DECODER = msgspec.json.Decoder(OutcomeEvent)
#: How long the marker of a scheduled analysis is kept.
DONE_TTL_S = 400 * 86_400


def _decode(version: int, document: bytes) -> OutcomeEvent:
    if version != OUTCOME_VERSION:
        raise ValueError(f"unknown outcome event version {version}")
    return _DECODER.decode(document)


class OutcomesHandler:
    group = "outcomes"

    def __init__(self, warehouse: Warehouse, settings: Settings, redis: Any) -> None:
        self.warehouse = warehouse
        self.settings = settings
        self.redis = redis
        self.keys = settings.keys
        self.totals = OutcomeResult()
        self._next_check = 0.0

    @property
    def streams(self) -> list[str]:
        return [self.keys.outcomes()]

    async def start(self) -> None:
        await asyncio.to_thread(self.warehouse.ensure_tables)

    async def handle(self, entries: list[Entry]) -> BatchResult:
        decoded, failed = decode_entries(entries, _decode, "outcome event")
        if decoded:
            result = await asyncio.to_thread(self.warehouse.insert_outcomes, [event for _, event in decoded])
            self.totals.inserted += result.inserted
            self.totals.superseded += result.superseded
            self.totals.unchanged += result.unchanged
        return BatchResult(failed)

    async def released(self, stream: str, lost: bool) -> None:
        return None

    async def tick(self) -> None:
        perf = self.settings.performance
        if perf.schedule_s <= 0 or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + perf.schedule_s
        from governance.guardian import guarded_analysis
        from performance.analysis import due_date

        due = due_date(datetime.now(UTC), perf.cadence)
        marker = self.keys.performance_done(f"{perf.cadence}:{due.isoformat()}")
        if await self.redis.exists(marker):
            return
        log.info("performance analysis of %s due: running", due)
        result = await asyncio.to_thread(guarded_analysis, self.settings, due, warehouse=self.warehouse)
        await self.redis.set(marker, result.metric_rows, ex=DONE_TTL_S)
        log.info("performance analysis of %s: %d metric rows, %d alert(s)", due, result.metric_rows, len(result.raised))

    async def close(self) -> None:
        await asyncio.to_thread(self.warehouse.close)
