"""The warehouse group: prediction events → ``prediction_logs`` (DuckDB by default, BigQuery in production)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import uuid_utils

from alerting.channel import raise_alert
from common.keys import Keys
from common.settings import AlertSettings
from consumers.base import BatchResult, Entry
from consumers.status import oldest_of_group
from schemas.alerts import Alert
from schemas.events import upgrade_payload
from warehouse.base import BatchUploadError, Warehouse

if TYPE_CHECKING:
    from consumers.warehouse_stream import StreamAppender

log = logging.getLogger(__name__)
#: An upload alert is raised once per batch: its marker lives this long (s).
UPLOAD_ALERT_TTL_S = 7 * 86_400
#: How many rejected entries an alert quotes.
QUOTED_ERRORS = 3


class WarehouseHandler:
    """Insert idempotently (on prediction_id); events that cannot load fail individually and are dead-lettered.

    Events go to the warehouse as JSON documents (decompressed; DuckDB parses the JSON itself, BigQuery's sink
    decodes it); documents of an older event version are upgraded first. With Redis given, entries the sink
    rejects raise a critical ``warehouse_data_quality`` alert (once per set of entries per cooldown: they are
    rejected again at each redelivery until dead-lettered), and a batch the sink could not land after its retries
    (``warehouse.bigquery_store.BatchUploadError``) a critical ``warehouse_upload_failed`` alert, once per batch.
    ``batching`` (entries, seconds) is passed to the runtime (BigQuery load jobs: see the README's quota arithmetic).
    With ``BNPL_BQ_MODE=stream`` the batch goes to :class:`consumers.warehouse_stream.StreamAppender` (Storage Write
    API offsets kept in Redis), which acks the entries it landed together with the offset.
    """

    group = "warehouse"

    def __init__(
        self,
        warehouse: Warehouse,
        keys: Keys,
        redis: Any = None,
        alerts: AlertSettings | None = None,
        batching: tuple[int, float] | None = None,
        max_delay_s: float | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.keys = keys
        self.redis = redis
        self.alerts = alerts or AlertSettings()
        self.batching = batching
        self.max_delay_s = max_delay_s
        self._streams = keys.prediction_streams()
        self._last_delay_check = 0.0
        self._appender: StreamAppender | None = None
        if getattr(warehouse, "mode", None) == "stream":  # BigQuery Storage Write API: offsets kept in Redis
            from consumers.warehouse_stream import StreamAppender
            from warehouse.bigquery_store import BigQueryWarehouse

            if redis is None or not isinstance(warehouse, BigQueryWarehouse):
                raise ValueError("BNPL_BQ_MODE=stream needs the BigQuery warehouse and Redis (offsets live there)")
            self._appender = StreamAppender(warehouse, keys, redis, self.group)

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
        try:
            if self._appender is not None:
                result = await self._appender.handle(entries)
            else:
                result = await asyncio.to_thread(self._handle, entries)
        except BatchUploadError as exc:
            errors = "; ".join(exc.errors[:QUOTED_ERRORS])
            await self._alert(
                f"warehouse:upload:{exc.batch}",
                "warehouse_upload_failed",
                len(entries),
                f"a batch of {len(entries)} prediction events ({exc.batch}) could not be loaded into the warehouse "
                f"after its retries; the group keeps retrying it. First errors: {errors}",
                UPLOAD_ALERT_TTL_S,
            )
            raise
        if result.failed:
            ids = sorted(result.failed)
            first = "; ".join(f"{i}: {result.failed[i]}" for i in ids[:QUOTED_ERRORS])
            digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
            await self._alert(
                f"warehouse:data-quality:{digest}",
                "warehouse_data_quality",
                len(ids),
                f"{len(ids)} of {len(entries)} prediction events cannot load into prediction_logs; they go to the "
                f"dead-letter stream once delivered BNPL_MAX_DELIVERIES times. First errors: {first}",
                self.alerts.alert_cooldown_s,
            )
        return result

    async def _alert(
        self,
        key: str,
        kind: str,
        value: int,
        message: str,
        cooldown_s: int,
        severity: str = "critical",
        threshold: float = 0.0,
    ) -> None:
        if self.redis is None:
            return
        alert = Alert(
            alert_id=str(uuid_utils.uuid7()),
            alert_key=key,
            kind=kind,
            severity=severity,
            statistic="seconds" if kind == "warehouse_delay" else "events",
            value=float(value),
            threshold=threshold,
            window="one warehouse batch",
            first_seen=datetime.now(UTC).isoformat(),
            message=message,
            runbook="bnpl status; the prediction streams' dead letters hold the rejected events with their error; "
            "the warehouse group's logs",
        )
        try:
            if await raise_alert(self.redis, self.keys, alert, cooldown_s):
                log.error("group warehouse: alert %s raised: %s", kind, message)
        except Exception as exc:  # the alert is best effort: never lose or block the batch for it
            log.warning("group warehouse: alert %s not raised (%s: %s)", kind, exc.__class__.__name__, exc)

    async def released(self, stream: str, lost: bool) -> None:
        return None

    async def tick(self) -> None:
        """Let other processes at a DuckDB file once idle (the warehouse holds its connection across batches); with
        ``max_delay_s``: about once a minute, a warning alert when the oldest event of a stream not yet in the
        warehouse (pending for the group, or not delivered yet) is older than that."""
        await asyncio.to_thread(self.warehouse.release_idle)
        if self.redis is None or self.max_delay_s is None or time.monotonic() - self._last_delay_check < 60:
            return
        self._last_delay_check = time.monotonic()
        now_ms = time.time() * 1000
        for shard, stream in enumerate(self._streams):
            oldest = await oldest_of_group(self.redis, stream, self.group)
            if oldest is None or (now_ms - oldest) / 1000 <= self.max_delay_s:
                continue
            age_s = (now_ms - oldest) / 1000
            await self._alert(
                f"warehouse:delay:{shard}",  # an alert key, one per shard
                "warehouse_delay",
                int(age_s),
                f"the oldest event of {stream} not yet in the warehouse is {age_s / 3600:.1f} h old "
                f"(BNPL_BQ_MAX_DELAY_S {self.max_delay_s:.0f} s): the warehouse group is behind or failing",
                self.alerts.alert_cooldown_s,
                severity="warning",
                threshold=self.max_delay_s,
            )

    async def close(self) -> None:
        await asyncio.to_thread(self.warehouse.close)
