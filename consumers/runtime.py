"""The one consumer-group runtime every group reuses: the handler (``consumers.base.BatchHandler``) only commits.

Per worker: create the group (MKSTREAM, tolerate BUSYGROUP); first re-read this consumer's own pending entries;
then ``XREADGROUP COUNT/BLOCK`` into batches that flush when full or when ``max_wait`` is up; hand each batch to
the group's handler and ``XACK`` only after it committed. Periodically ``XAUTOCLAIM`` entries idle longer than
``claim_idle_ms`` (a dead worker's batch is finished by a live one). An entry delivered more than
``max_deliveries`` times is copied with its error to the dead-letter stream and acked in one MULTI/EXEC.
Transient handler failures retry the same batch with exponential backoff (ceiling, jitter), logging attempts.
A health key with a TTL is refreshed; the first SIGTERM/SIGINT stops reading and drains, the second exits now.

A worker heals itself: any Redis error (connection lost while Redis restarts, a failover, ``OOM``, the group gone
with the data) is logged, backed off with jitter and retried from the top: groups ensured again (MKSTREAM), this
consumer's own pending entries re-read first, then reading resumes. Nothing is acked twice or lost: unacked
entries stay pending and sinks are idempotent. The health beat and progress samples are best effort (under ``OOM``
Redis refuses them, but acks and trims, which free memory, still go through).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from common.keys import Keys, dead_letter_fields
from common.redact import redact_text
from common.settings import ConsumerSettings
from consumers.base import BatchHandler, BatchResult, Entry
from consumers.status import record_rate_sample
from consumers.trim import trim_stream

log = logging.getLogger(__name__)
#: A new group reads its streams from the beginning (nothing published before it started is skipped).
GROUP_START_ID = "0"


@dataclass(slots=True)
class WorkerStats:
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    claimed: int = 0
    redis_errors: int = 0  # Redis errors the worker healed from (reconnected and resumed)
    last_batch_s: float = 0.0
    lag: int = 0  # entries of the streams not yet delivered to this group (XINFO GROUPS)
    last_errors: dict[str, str] = field(default_factory=dict)


def consumer_name() -> str:
    """Unique, readable consumer name: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ConsumerWorker:
    """One consumer of one group over every prediction stream."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        handler: BatchHandler,
        config: ConsumerSettings | None = None,
        name: str | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.handler = handler
        self.config = config or ConsumerSettings()
        self.name = name or consumer_name()
        self.group = handler.group
        self.streams = list(handler.streams)
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._last_claim = 0.0
        self._last_trim = 0.0
        self._last_health = 0.0
        self._last_sample = 0.0
        self._warned: dict[str, bool] = {}

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id=GROUP_START_ID, mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self) -> None:
        """Process until :meth:`request_stop`, healing from Redis errors; then finish the batch in hand, return."""
        started = False
        attempt = 0
        try:
            while not self.stopping:
                try:
                    await self.ensure_groups()
                    if not started:
                        await self.handler.start()
                        started = True
                    await self._beat()
                    await self._own_pending()
                    await self._consume()
                    return
                except (redis_errors.RedisError, OSError) as exc:
                    attempt += 1
                    self.stats.redis_errors += 1
                    delay = self._backoff(attempt)
                    log.warning(
                        "group %s: Redis error (%s: %s); reconnecting in %.1fs (attempt %d), then resuming from "
                        "this consumer's pending entries",
                        self.group,
                        exc.__class__.__name__,
                        redact_text(str(exc)),
                        delay,
                        attempt,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            if started:
                await self.handler.close()
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await self.redis.delete(self.keys.health(self.group, self.name))

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.config.max_backoff_s, 0.2 * 2 ** min(attempt, 8)) * (0.5 + random.random() / 2)  # noqa: S311
        return delay

    async def _consume(self) -> None:
        """Read, handle and ack until stopped. Prefetches one batch while the previous one is in the sink (bounded:
        at most two batches in hand); a prefetched batch left behind by an error stays pending for this consumer."""
        upcoming: asyncio.Task[list[Entry]] | None = asyncio.create_task(self._collect())
        try:
            while upcoming is not None:
                batch = await upcoming
                upcoming = None if self.stopping else asyncio.create_task(self._collect())
                if batch:
                    await self._process(batch)
                await self._housekeeping()
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)

    # --- reading -------------------------------------------------------------------------------------------------
    def _entries(self, response: Any) -> list[Entry]:
        out: list[Entry] = []
        for stream, items in response or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in items:
                if fields is None:  # deleted while pending
                    continue
                out.append(Entry(name, entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
        return out

    async def _own_pending(self) -> None:
        """Re-read what this consumer name already had (a restart under the same name)."""
        cursor: dict[Any, Any] = dict.fromkeys(self.streams, "0")
        while not self.stopping:
            response = await self.redis.xreadgroup(self.group, self.name, cursor, count=self.config.batch_size)
            entries = self._entries(response)
            if not entries:
                return
            for entry in entries:
                cursor[entry.stream] = entry.id
            await self._process(entries)

    async def _collect(self) -> list[Entry]:
        batch: list[Entry] = []
        deadline = time.monotonic() + self.config.max_wait_s
        while len(batch) < self.config.batch_size and not self.stopping:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            response = await self.redis.xreadgroup(
                self.group,
                self.name,
                dict.fromkeys(self.streams, ">"),
                count=self.config.batch_size - len(batch),
                block=min(remaining_ms, self.config.block_ms),
            )
            entries = self._entries(response)
            if not entries and batch:
                break  # idle after some data: flush now rather than wait out the window
            batch += entries
            await self._beat()
        return batch

    # --- processing ----------------------------------------------------------------------------------------------
    async def _process(self, entries: list[Entry]) -> None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self.handler.handle(entries)
                break
            except Exception as exc:  # sink down: keep the batch, back off, try again
                attempt += 1
                self.stats.retries += 1
                delay = self._backoff(attempt)
                log.warning(
                    "group %s: batch of %d failed (%s: %s); retry %d in %.1fs",
                    self.group,
                    len(entries),
                    exc.__class__.__name__,
                    exc,
                    attempt,
                    delay,
                )
                if self.stopping and attempt > 1:
                    log.warning(
                        "group %s: stopping; %d entries stay pending for another worker", self.group, len(entries)
                    )
                    return
                await self._beat()
                await asyncio.sleep(delay)
        self.stats.last_batch_s = time.perf_counter() - started
        self.stats.batches += 1
        done = [e for e in entries if e.id not in result.failed]
        if not result.acked:
            await self._ack(done)
        self.stats.processed += len(done)
        if result.failed:
            self.stats.failed += len(result.failed)
            self.stats.last_errors.update(result.failed)
            await self._dead_letter_exhausted([e for e in entries if e.id in result.failed], result)

    async def _ack(self, entries: list[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        for stream, ids in by_stream.items():
            for i in range(0, len(ids), 10_000):
                await self.redis.xack(stream, self.group, *ids[i : i + 10_000])

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry_id in ids:
            rows = await self.redis.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
            if rows:
                counts[entry_id] = int(rows[0]["times_delivered"])
        return counts

    async def _dead_letter_exhausted(self, failed: list[Entry], result: BatchResult) -> None:
        by_stream: dict[str, list[Entry]] = {}
        for entry in failed:
            by_stream.setdefault(entry.stream, []).append(entry)
        for stream, entries in by_stream.items():
            counts = await self._delivery_counts(stream, [e.id for e in entries])
            exhausted = [e for e in entries if counts.get(e.id, 0) >= self.config.max_deliveries]
            for entry in exhausted:
                await self._dead_letter(entry, result.failed.get(entry.id, "unknown error"), counts[entry.id])

    async def _dead_letter(self, entry: Entry, error: str, deliveries: int) -> None:
        """Copy to ``<stream>:dead`` with the error and ack, atomically (MULTI/EXEC)."""
        fields = dead_letter_fields(entry.fields, entry.id, self.group, error, deliveries, int(time.time() * 1000))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.dead_letter(entry.stream), fields)  # type: ignore[arg-type]
            pipe.xack(entry.stream, self.group, entry.id)
            await pipe.execute()
        self.stats.dead_lettered += 1
        log.error("group %s: entry %s dead-lettered after %d deliveries: %s", self.group, entry.id, deliveries, error)

    # --- housekeeping --------------------------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_claim >= self.config.claim_every_s:
            self._last_claim = now
            await self._claim_idle()
        if now - self._last_trim >= self.config.trim_every_s:
            self._last_trim = now
            for stream in self.streams:  # every group trims what it reads; XTRIM MINID is idempotent
                audit = stream in (self.keys.alerts(), self.keys.outcomes())  # alerts and outcomes: a trail
                await trim_stream(
                    self.redis, stream, self.config.alert_retention_ms if audit else self.config.retention_ms
                )
        try:  # time-driven work of a group (e.g. closing windows while no events arrive)
            await self.handler.tick()
        except Exception as exc:
            log.warning("group %s: periodic work failed (%s: %s); will retry", self.group, exc.__class__.__name__, exc)
        if now - self._last_sample >= 5.0:
            self._last_sample = now
            lag = 0
            for stream in self.streams:
                with self._best_effort("progress sample"):
                    await record_rate_sample(self.redis, self.keys, stream, self.group)
                for group in await self.redis.xinfo_groups(stream):
                    name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                    if name == self.group:
                        lag += int(group.get("lag") or 0)
            self.stats.lag = lag
        await self._beat()

    async def _claim_idle(self) -> None:
        """Take over entries another consumer left idle too long (it died mid-batch)."""
        for stream in self.streams:
            start = "0-0"
            while not self.stopping:
                reply = await self.redis.xautoclaim(
                    stream,
                    self.group,
                    self.name,
                    self.config.claim_idle_ms,
                    start_id=start,
                    count=self.config.batch_size,
                )
                start = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
                entries = self._entries([(stream, reply[1])])
                if entries:
                    self.stats.claimed += len(entries)
                    log.info("group %s: claimed %d idle entries from %s", self.group, len(entries), stream)
                    counts = await self._delivery_counts(stream, [e.id for e in entries])
                    fresh = []
                    for entry in entries:
                        if counts.get(entry.id, 0) > self.config.max_deliveries:
                            error = self.stats.last_errors.get(entry.id, "exceeded the delivery limit")
                            await self._dead_letter(entry, error, counts[entry.id])
                        else:
                            fresh.append(entry)
                    if fresh:
                        await self._process(fresh)
                if start == "0-0":
                    break

    @contextlib.contextmanager
    def _best_effort(self, what: str) -> Iterator[None]:
        """Writes that must not stop consumption: Redis refuses them under OOM, while acks and trims still pass."""
        try:
            yield
        except redis_errors.ResponseError as exc:  # OOM, READONLY …: the connection itself is fine
            if not self._warned.get(what):
                log.warning("group %s: %s not written (%s); carrying on", self.group, what, exc)
                self._warned[what] = True
        else:
            self._warned.pop(what, None)

    async def _beat(self) -> None:
        now = time.monotonic()
        if now - self._last_health < 1.0:
            return
        self._last_health = now
        with self._best_effort("health beat"):
            await self._write_health()

    async def _write_health(self) -> None:
        status = {
            "group": self.group,
            "consumer": self.name,
            "pid": os.getpid(),
            "at": time.time(),
            "processed": self.stats.processed,
            "failed": self.stats.failed,
            "dead_lettered": self.stats.dead_lettered,
            "retries": self.stats.retries,
        }
        await self.redis.set(self.keys.health(self.group, self.name), orjson.dumps(status), ex=self.config.health_ttl_s)


async def run_worker(worker: ConsumerWorker) -> None:
    """Run with two-stage shutdown: the first SIGTERM/SIGINT drains (the batch in hand is finished, within
    ``BNPL_DRAIN_TIMEOUT_S``), the second — or the timeout — exits at once; unacked entries are then claimed by
    another worker."""
    loop = asyncio.get_running_loop()
    signals = 0

    def exit_now(why: str) -> None:
        log.warning("group %s: exiting now (%s); unacked entries will be claimed by another worker", worker.group, why)
        os._exit(1)

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("group %s: stopping after the current batch (signal again to exit now)", worker.group)
            worker.request_stop()
            loop.call_later(worker.config.drain_timeout_s, exit_now, "drain timeout")
        else:
            exit_now("second signal")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
