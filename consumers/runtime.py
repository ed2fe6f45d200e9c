"""The one consumer-group runtime every group reuses: the handler (``consumers.base.BatchHandler``) only commits.

Per worker: create the group on every stream (MKSTREAM, tolerate BUSYGROUP); lease its share of the streams
(``consumers.leases``: each stream — a shard — has one reader, the group's workers split them and rebalance when
one joins or leaves); on each newly leased stream, re-read this consumer's own pending entries, then take over what
other consumers left pending; then one ``XREADGROUP COUNT/BLOCK`` reader per leased stream (one key per command:
Redis Cluster allows nothing else) fills batches that flush when full, when a read comes back empty or when
``max_wait`` is up; hand each batch to the group's handler and ``XACK`` only after it committed. Periodically
``XAUTOCLAIM`` entries idle longer than ``claim_idle_ms`` (a dead worker's batch is finished by a live one). An
entry delivered more than ``max_deliveries`` times is copied with its error to the dead-letter stream and acked in
one MULTI/EXEC.
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
import dataclasses
import logging
import os
import random
import signal
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from common.aio import cancel_and_wait
from common.keys import Keys, dead_letter_fields
from common.redact import redact_text
from common.redis_client import text
from common.settings import ConsumerSettings
from consumers.base import BatchHandler, BatchResult, Entry
from consumers.leases import ShardLeases
from consumers.status import age_s, oldest_unacked_ms, record_rate_sample
from consumers.trim import trim_stream

log = logging.getLogger(__name__)
#: A new group reads its streams from the beginning (nothing published before it started is skipped).
GROUP_START_ID = "0"
#: How often a worker samples the lag of the streams it holds (entries, and the age of the oldest unacked entry).
LAG_SAMPLE_S = 1.0


class Chunk(NamedTuple):
    """What one read of a stream delivered (or the error it raised); ``caught_up``: fewer entries than asked."""

    stream: str
    entries: list[Entry] | BaseException
    caught_up: bool


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
    oldest_age_s: float = 0.0  # age of the oldest entry of its streams not yet acked (0: none)
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
        # A sink that needs large batches (BigQuery load jobs: a daily quota per table) declares ``batching``:
        # (entries per batch, seconds a partial batch waits). Its batches then flush only when full or that old,
        # not when a read comes back empty.
        batching: tuple[int, float] | None = getattr(handler, "batching", None)
        if batching is not None:
            self.config = dataclasses.replace(self.config, batch_size=batching[0], max_wait_s=batching[1])
        self._flush_when_idle = batching is None
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
        self.leases = ShardLeases(redis, keys, self.group, self.streams, self.name, self.config.lease_ttl_s)
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._chunks: asyncio.Queue[Chunk] = asyncio.Queue()
        self._queued = 0  # entries in the queue
        self._reserved = 0  # entries asked for by reads in flight
        self._in_hand: defaultdict[str, set[str]] = defaultdict(set)  # per stream: ids read, not yet processed
        self._taking: set[str] = set()  # leased, not yet taken over
        self._releasing: set[str] = set()  # to hand back once nothing of them is in hand
        self._stopping_readers: set[str] = set()
        self._changed = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stopping.set()
        self._notify()

    @property
    def task_prefix(self) -> str:
        """The name prefix of every asyncio task this worker starts (its lease loop and stream readers)."""
        return f"{self.group}/{self.name}/"

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
                        async with asyncio.timeout(delay):
                            await self._stopping.wait()
        finally:
            if started:
                await self.handler.close()
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await self.leases.leave()
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await self.redis.delete(self.keys.health(self.group, self.name))

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self.config.max_backoff_s, 0.2 * 2 ** min(attempt, 8)) * (0.5 + random.random() / 2)  # noqa: S311
        return delay

    @property
    def owned(self) -> list[str]:
        """The streams this worker holds the lease of (it alone reads their new entries)."""
        return sorted(self.leases.owned)

    async def _consume(self) -> None:
        """Read, handle and ack until stopped. One reader task per leased stream feeds a bounded queue (at most one
        batch read ahead while the previous one is in the sink); the loop below batches, processes and acks, hands
        back the leases it is asked to release once it holds nothing of them, and takes over newly leased streams
        (their pending entries first). Every stream held when this starts counts as newly taken: after a Redis
        error, this consumer's own pending entries are re-read first."""
        self._taking = self.leases.owned - self._releasing
        await self._refresh_leases()
        lease_task = asyncio.create_task(self._lease_loop(), name=f"{self.task_prefix}leases")
        lag_task = asyncio.create_task(self._lag_loop(), name=f"{self.task_prefix}lag")
        try:
            while not self.stopping:
                await self._take_over()
                await self._process_read(await self._collect())
                await self._hand_back()
                await self._housekeeping()
                if lease_task.done():
                    lease_task.result()
            await self._stop_readers(set(self._readers))
            drained: list[Entry] = []
            while self._chunks.qsize():  # what the readers had delivered: finish it before handing the leases back
                drained += self._take_chunk(self._chunks.get_nowait()) or []
            for i in range(0, len(drained), self.config.batch_size):
                await self._process_read(drained[i : i + self.config.batch_size])
        finally:
            await cancel_and_wait([lease_task, lag_task, *self._readers.values()])
            self._readers.clear()
            self._chunks = asyncio.Queue()  # entries left in it stay pending for this consumer: re-read on resume
            self._queued = self._reserved = 0
            self._in_hand.clear()

    # --- leases --------------------------------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        """Renew and balance the leases every second (TTL/3 if shorter), independent of how long a batch takes.
        While Redis refuses, keep trying; leases not renewed within the TTL are treated as lost (their streams are not
        read)."""
        interval = min(1.0, self.config.lease_ttl_s / 3)  # a joining worker gets its share within about a second
        renewed = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(interval)
            try:
                await self._refresh_leases()
                renewed = time.monotonic()
            except (redis_errors.RedisError, OSError) as exc:
                log.warning("group %s: lease renewal failed (%s: %s)", self.group, exc.__class__.__name__, exc)
                if time.monotonic() - renewed > self.config.lease_ttl_s:
                    self._lose(self.leases.owned)

    async def _refresh_leases(self) -> None:
        changes = await self.leases.refresh(frozenset(self._releasing))
        if changes.lost:
            log.warning("group %s: lost the lease of %s to another worker", self.group, ", ".join(changes.lost))
            self._lose(set(changes.lost))
        for stream in changes.release:
            log.info("group %s: handing %s back (%d workers share the streams)", self.group, stream, changes.members)
            self._releasing.add(stream)
        self._taking |= set(changes.acquired)
        if changes.release or changes.lost:
            self._notify()

    def _lose(self, streams: set[str]) -> None:
        """Stop reading ``streams`` (another worker holds them now); what is in hand of them is still processed."""
        for stream in list(streams):
            self.leases.owned.discard(stream)
            self._taking.discard(stream)
            self._releasing.discard(stream)
            self._stopping_readers.add(stream)
        self._notify()

    async def _take_over(self) -> None:
        """Newly leased streams: this consumer's own pending entries first, then what other consumers left pending
        (the previous holder finished or died), then a reader for new entries."""
        while self._taking and not self.stopping:
            stream = min(self._taking)
            await self._own_pending(stream)
            await self._take_pending(stream)
            self._taking.discard(stream)
            if stream in self.leases.owned and stream not in self._releasing:
                previous = self._readers.get(stream)
                if previous is not None and not previous.done():  # (lost, then regained) it stops after its read
                    await asyncio.gather(previous, return_exceptions=True)
                self._stopping_readers.discard(stream)
                self._readers[stream] = asyncio.create_task(self._read(stream), name=f"{self.task_prefix}read {stream}")
                log.info("group %s: reading %s", self.group, stream)

    async def _hand_back(self) -> None:
        """Release leases marked for release once their reader stopped and nothing read from them is unprocessed."""
        for stream in sorted(self._releasing):
            self._stopping_readers.add(stream)
            task = self._readers.get(stream)
            if task is not None and not task.done():
                continue
            if self._in_hand[stream]:
                continue
            self._readers.pop(stream, None)
            self._releasing.discard(stream)
            await self.handler.released(stream, lost=False)
            await self.leases.release(stream)
            log.info("group %s: handed %s back", self.group, stream)
        for stream in [s for s, t in self._readers.items() if t.done() and s not in self._releasing]:
            task = self._readers.pop(stream)
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
            if stream not in self.leases.owned:  # lost to another worker: forget its state without saving it
                await self.handler.released(stream, lost=True)

    async def _stop_readers(self, streams: set[str]) -> None:
        self._stopping_readers |= streams
        self._notify()
        await asyncio.gather(*(self._readers[s] for s in streams if s in self._readers), return_exceptions=True)

    def _notify(self) -> None:
        self._changed.set()

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

    async def _own_pending(self, stream: str) -> None:
        """Re-read what this consumer name already had on ``stream`` (a restart under the same name)."""
        cursor = "0"
        while not self.stopping:
            response = await self.redis.xreadgroup(
                self.group, self.name, {stream: cursor}, count=self.config.batch_size
            )
            entries = self._entries(response)
            if not entries:
                return
            cursor = entries[-1].id
            await self._process(entries)

    async def _read(self, stream: str) -> None:
        """A leased stream's reader: blocking ``XREADGROUP`` of new entries into the queue, while there is room
        (at most one batch queued). A read that returns fewer entries than asked (or none) marks its chunk
        ``caught_up``: the collector then hands a partial batch over after at most ``linger_ms``. Never cancelled
        mid-read by the runtime (entries delivered to a cancelled read would wait for a claim): asked to stop, it
        finishes its read (≤ ``block_ms``) and returns."""
        try:
            while not self.stopping and stream not in self._stopping_readers:
                count = self._batch_room()
                if count <= 0:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                self._reserved += count
                try:
                    response = await self.redis.xreadgroup(
                        self.group, self.name, {stream: ">"}, count=count, block=self.config.block_ms
                    )
                finally:
                    self._reserved -= count
                entries = self._entries(response)
                self._in_hand[stream].update(e.id for e in entries)
                self._queued += len(entries)
                self._chunks.put_nowait(Chunk(stream, entries, caught_up=len(entries) < count))
        except (redis_errors.RedisError, OSError) as exc:
            self._chunks.put_nowait(Chunk(stream, exc, caught_up=True))
            raise

    def _batch_room(self) -> int:
        """How many entries a reader may ask for: what is left of one batch (queued and asked for by reads in flight
        count), and at most an even share of a batch per reader — else one reader's back-to-back blocking reads
        would hold the whole room and the worker's other shards would never be read."""
        readers = sum(1 for task in self._readers.values() if not task.done()) or 1
        share = max(1, self.config.batch_size // readers)
        return min(share, self.config.batch_size - self._queued - self._reserved)

    async def _collect(self) -> list[Entry]:
        """A batch from the readers. Adaptive: under a backlog (reads come back full) it fills up to ``batch_size``;
        once the group has caught up (a read returned fewer entries than asked, or none) it takes what is already
        queued, waits at most ``linger_ms`` for more and is handed over — so a batch is about the rate times the
        time the last one took, and an event waits for no timer. ``max_wait_s`` stays the upper bound. A handler
        that declares ``batching`` (BigQuery load jobs) flushes only when full or that old."""
        batch: list[Entry] = []
        deadline = time.monotonic() + self.config.max_wait_s
        flush_at = deadline  # moves closer (now + linger) once caught up with something in hand
        while len(batch) < self.config.batch_size and not self.stopping:
            remaining = flush_at - time.monotonic()
            if remaining <= 0:
                while batch and self._chunks.qsize() and len(batch) < self.config.batch_size:
                    batch += self._take_chunk(self._chunks.get_nowait()) or []  # what is queued already goes too
                break
            if self._taking and not self._flush_when_idle:
                break  # long batch windows: a newly leased stream (a dead worker's) is taken over now, not later
            if not self._readers and not self._chunks.qsize():
                with contextlib.suppress(TimeoutError):  # nothing leased: wait for a change, not a busy loop
                    async with asyncio.timeout(min(remaining, self.config.block_ms / 1000)):
                        await self._changed.wait()
                self._changed.clear()
                break
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (a task never stops)
                async with asyncio.timeout(min(remaining, self.config.block_ms / 1000)):
                    item = await self._chunks.get()
            except TimeoutError:
                continue
            entries = self._take_chunk(item)
            if entries is None:
                continue
            batch += entries
            if self._flush_when_idle:  # (declared batching: only full or max_wait_s old)
                if not item.caught_up:
                    flush_at = deadline  # a full read: a backlog, let the batch grow
                elif batch:
                    flush_at = min(flush_at, time.monotonic() + self.config.linger_ms / 1000)
            await self._beat()
        return batch

    def _take_chunk(self, item: Chunk) -> list[Entry] | None:
        """A reader's chunk out of the queue; None for a stream whose lease was lost meanwhile (its entries stay
        pending for the new holder to claim)."""
        stream, chunk = item.stream, item.entries
        if isinstance(chunk, BaseException):
            raise chunk
        self._queued -= len(chunk)
        self._notify()
        if stream not in self.leases.owned:
            self._in_hand[stream].difference_update(e.id for e in chunk)
            return None
        return chunk

    async def _process_read(self, batch: list[Entry]) -> None:
        """Process a batch the readers delivered and count it done per stream (releases wait for that)."""
        if not batch:
            return
        try:
            await self._process(batch)
        finally:
            for entry in batch:
                self._in_hand[entry.stream].discard(entry.id)

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
        owned = self.owned
        if now - self._last_claim >= self.config.claim_every_s:
            self._last_claim = now
            for stream in owned:
                await self._claim(stream, self.config.claim_idle_ms)
        if now - self._last_trim >= self.config.trim_every_s:
            self._last_trim = now
            for stream in owned:  # every group trims what it reads; XTRIM MINID is idempotent
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
            for stream in owned:
                with self._best_effort("progress sample"):
                    await record_rate_sample(self.redis, self.keys, stream, self.group)
        await self._beat()

    async def _lag_loop(self) -> None:
        """Samples the lag every ``LAG_SAMPLE_S`` on its own task: a sink stuck in a batch shows a growing age."""
        while not self.stopping:
            with contextlib.suppress(redis_errors.RedisError, OSError):  # Redis trouble: the main loop deals with it
                await self._sample_lag(self.owned)
            await asyncio.sleep(LAG_SAMPLE_S)

    async def _sample_lag(self, owned: list[str]) -> None:
        """Lag of the streams this worker holds: entries not yet delivered, and the age of the oldest entry not yet
        acked (the group's end-to-end lag; 0 when it has everything)."""
        lag, oldest = 0, None
        for stream in owned:
            for group in await self.redis.xinfo_groups(stream):
                if text(group["name"]) == self.group:
                    lag += int(group.get("lag") or 0)
                    published = await oldest_unacked_ms(self.redis, stream, group)
                    if published is not None:
                        oldest = published if oldest is None else min(oldest, published)
        self.stats.lag = lag
        self.stats.oldest_age_s = age_s(oldest) or 0.0

    async def _take_pending(self, stream: str) -> None:
        """A newly leased stream: take over what other consumers left pending on it (the previous holder handed it
        back, died, or lost its lease) and process it. Claimed with ``XCLAIM … JUSTID``, which does not count a
        delivery: a shard handed from worker to worker (a failover can make leases move several times) must not
        push entries over the delivery limit and into the dead letters."""
        async for rows in self._pending_pages(stream):
            ids: list[Any] = [text(r["message_id"]) for r in rows if text(r["consumer"]) != self.name]
            if ids:
                claimed = [text(i) for i in await self.redis.xclaim(stream, self.group, self.name, 0, ids, justid=True)]
                entries = await self._fetch(stream, claimed)
                if entries:
                    self.stats.claimed += len(entries)
                    log.info("group %s: took over %d pending entries of %s", self.group, len(entries), stream)
                    await self._process(entries)

    async def _pending_pages(self, stream: str, min_idle_ms: int | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """``stream``'s pending entries of this group (``XPENDING`` rows, idle at least ``min_idle_ms``), a batch
        at a time, oldest first, until the end or a stop."""
        start = "-"
        while not self.stopping:
            rows = await self.redis.xpending_range(
                stream, self.group, min=start, max="+", count=self.config.batch_size, idle=min_idle_ms
            )
            if not rows:
                return
            yield rows
            if len(rows) < self.config.batch_size:
                return
            start = "(" + text(rows[-1]["message_id"])

    async def _fetch(self, stream: str, ids: list[str]) -> list[Entry]:
        """The entries ``ids`` of ``stream``; ids trimmed away meanwhile are acked (nothing left to process)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(stream, min=entry_id, max=entry_id, count=1)
            found = await pipe.execute()
        entries = self._entries([(stream, [row[0] for row in found if row])])
        gone = [i for i, row in zip(ids, found, strict=True) if not row]
        if gone:
            await self.redis.xack(stream, self.group, *gone)
        return entries

    async def _claim(self, stream: str, min_idle_ms: int) -> None:
        """Take over entries of ``stream`` another consumer left pending at least ``min_idle_ms`` (it died
        mid-batch); an entry delivered more than ``max_deliveries`` times (e.g. it crashes every worker that reads
        it) goes to the dead letters. This consumer's own entries are claimed too (entries its sink failed are
        retried that way), except those in hand (read ahead, or the batch in the sink)."""
        async for rows in self._pending_pages(stream, min_idle_ms):
            in_hand = self._in_hand[stream]
            ids: list[Any] = [
                i for r in rows if (i := text(r["message_id"])) not in in_hand or text(r["consumer"]) != self.name
            ]
            entries = (
                self._entries([(stream, await self.redis.xclaim(stream, self.group, self.name, min_idle_ms, ids))])
                if ids
                else []
            )
            if entries:
                self.stats.claimed += len(entries)
                log.info("group %s: claimed %d idle entries from %s", self.group, len(entries), stream)
                # The rows' delivery counts, plus this claim (XCLAIM counts a delivery): no second XPENDING per entry.
                counts = {text(r["message_id"]): int(r["times_delivered"]) + 1 for r in rows}
                fresh = []
                for entry in entries:
                    if counts.get(entry.id, 0) > self.config.max_deliveries:
                        error = self.stats.last_errors.get(entry.id, "exceeded the delivery limit")
                        await self._dead_letter(entry, error, counts[entry.id])
                    else:
                        fresh.append(entry)
                if fresh:
                    await self._process(fresh)

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
