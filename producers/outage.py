"""The publisher's view of an outage: since when events have not reached Redis, why, and the alert once they do.

Kept apart from the publisher's write path: it only records successes and failures (classified by
``producers.errors``, logged once per outage with the class and, for misconfigurations, as such), answers
``/readyz`` (:class:`PublishHealth`), and raises one ``events_delayed`` alert when the outage is over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uuid_utils
from redis import exceptions as redis_errors

from alerting.channel import raise_alert
from common.keys import Keys
from common.redact import redact_text
from common.settings import PublisherSettings
from producers.errors import classify
from schemas.alerts import Alert

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishHealth:
    """Whether events are reaching Redis, and if not, why (phrases for /readyz and logs, no secrets)."""

    ok: bool
    reasons: tuple[str, ...]
    seconds_since_success: float


class Outage:
    """Failure bookkeeping of one API instance's publisher."""

    def __init__(self, instance: str, settings: PublisherSettings) -> None:
        self._instance = instance
        self._settings = settings
        self._last_success = time.monotonic()
        self.since: float | None = None  # wall clock of the first failure of the current outage
        self.spooled = 0  # events spooled during the current outage
        self.last_error: str | None = None  # class and message of the last failure, credentials redacted
        self.failures = 0

    def succeeded(self) -> None:
        self._last_success = time.monotonic()

    def failed(self, exc: BaseException, during: str, first: bool) -> None:
        """Record a failed Redis call; ``first``: the publisher was still writing directly (log it then)."""
        message = redact_text(str(exc))[:300]
        self.last_error = f"{exc.__class__.__name__}: {message}"
        self.failures += 1
        if self.since is None:
            self.since = time.time()
            self.spooled = 0
        if not first:
            return
        kind = classify(exc)
        if kind == "misconfigured":
            log.error(
                "Redis %s failed: %s — a configuration problem (cluster redirect, cross-slot keys, permissions or "
                "password); events are spooled until it is fixed",
                during,
                self.last_error,
            )
        elif kind == "unexpected":
            log.error("Redis %s failed unexpectedly (%s); events are spooled", during, self.last_error, exc_info=exc)
        else:
            log.warning("Redis %s failed (%s); events are spooled until Redis takes writes", during, self.last_error)

    def health(self, writing: bool, queued: int, spool_pending: bool) -> PublishHealth:
        """Degraded when events are spooled instead of written, the queue is above its high-water mark, or nothing
        reached Redis for ``stall_s`` while events were waiting."""
        reasons = []
        since = time.monotonic() - self._last_success
        if not writing:
            cause = (self.last_error or "").split(":", 1)[0] or "unknown error"
            reasons.append(f"events are spooled: Redis does not take writes ({cause})")
        if queued > self._settings.queue_high_water:
            reasons.append(f"{queued} events queued (high-water mark {self._settings.queue_high_water})")
        if (queued or spool_pending) and since > self._settings.stall_s:
            reasons.append(f"no event reached Redis for {since:.0f}s")
        return PublishHealth(not reasons, tuple(reasons), since)

    async def alert_if_over(self, redis: Any, keys: Keys) -> None:
        """Once events flow again: record the outage as one alert (retried on the next call if Redis fails)."""
        started = self.since
        if started is None:
            return
        ended = time.time()
        start_text, end_text = (datetime.fromtimestamp(t, UTC).isoformat() for t in (started, ended))
        alert = Alert(
            alert_id=str(uuid_utils.uuid7()),
            alert_key=f"publish:{self._instance}:{int(started * 1000)}",
            kind="events_delayed",
            severity="warning",
            statistic="seconds_without_redis",
            value=round(ended - started, 3),
            threshold=self._settings.stall_s,
            window=f"{start_text} .. {end_text}",
            first_seen=start_text,
            message=f"API {self._instance}: events did not reach Redis for {ended - started:.0f}s "
            f"({self.spooled:,} spooled, all replayed since); last error {self.last_error}",
            runbook="Check Redis memory (maxmemory, retention), failover and the API logs; nothing was lost.",
        )
        try:
            await raise_alert(redis, keys, alert, cooldown_s=None)
        except (redis_errors.RedisError, OSError):
            return
        log.warning("ALERT %s", alert.message)
        self.since = None
