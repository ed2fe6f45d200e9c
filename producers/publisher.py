"""The API's event publisher: in-memory enqueue on the request path, pipelined writes to Redis in the background.

* ``publish()`` only appends to a bounded deque (no I/O). If the deque is full, the event is appended to the spool
  file's buffer instead (local, no network) — never dropped.
* A flusher task writes batches (``publish_batch`` events or ``publish_interval_ms``, whichever first) as one
  **block** per stream through a Lua script: the block's events are ``XADD``-ed and the block's sequence number is
  recorded in the same atomic step. Sequence numbers grow per instance, so re-sending a block whose outcome was
  unknown (connection lost mid-call, process restarted) is skipped by Redis: every event lands exactly once.
* When Redis fails, blocks go to the spool (fsync'd per batch) and, while the spool holds anything, new blocks are
  appended behind them so order is kept. A replay task drains the spool, with exponential backoff and jitter
  between attempts, once Redis answers again.
* Sequence numbers are reserved on disk ahead of use (``<spool>.seq``), so a restart never reuses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from redis import exceptions as redis_errors

from common.keys import Keys, lua_xadd_entry
from common.settings import PublisherSettings
from producers.spool import Spool
from schemas.events import PREDICTION_EVENT_VERSION, PredictionEvent, projection, upgrade_payload

log = logging.getLogger(__name__)

#: KEYS: stream, publish-state hash (same slot). ARGV: instance, block seq, schema version, prediction ids and event
#: JSON documents, each of the last two as one newline-terminated list (compact JSON never holds a raw newline).
#: Two arguments per block instead of two per event: packing each argument costs the API more than the XADD costs
#: Redis.
APPEND_BLOCK = (
    """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= last then return 0 end
local ids, events = ARGV[4], ARGV[5]
local i, e = 1, 1
while e <= #events do
  local id_end = string.find(ids, '\\n', i, true)
  local event_end = string.find(events, '\\n', e, true)
  """
    + lua_xadd_entry("KEYS[1]", "ARGV[3]", "string.sub(ids, i, id_end - 1)", "string.sub(events, e, event_end - 1)")
    + """
  i, e = id_end + 1, event_end + 1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
)
#: Errors after which Redis may or may not have applied a write: the block is spooled and retried idempotently.
WRITE_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    OSError,
)
SEQ_RESERVATION = 1_000_000


@dataclass(slots=True)
class PublisherStats:
    """Counters exported on /metrics."""

    published: int = 0  # events confirmed in Redis (direct or replayed)
    spooled: int = 0  # events written to the spool
    replayed: int = 0  # spooled events confirmed in Redis
    skipped_duplicates: int = 0  # events of blocks Redis already had
    write_failures: int = 0


class _SeqAllocator:
    """Per-instance block sequence numbers, reserved on disk ahead of use so restarts never reuse one."""

    def __init__(self, path: Path, floor: int) -> None:
        self._path = path
        reserved = int(path.read_text()) if path.exists() else 0
        self._next = max(reserved, floor) + 1
        self._ceiling = 0
        self._reserve()

    def _reserve(self) -> None:
        self._ceiling = self._next + SEQ_RESERVATION
        tmp = self._path.with_suffix(".seqtmp")
        with tmp.open("w") as fh:
            fh.write(str(self._ceiling))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._path)

    def raise_floor(self, floor: int) -> None:
        if floor >= self._next:
            self._next = floor + 1
            if self._next >= self._ceiling:
                self._reserve()

    def take(self) -> int:
        if self._next >= self._ceiling:
            self._reserve()
        seq = self._next
        self._next += 1
        return seq


class EventPublisher:
    """Publishes prediction events to Redis Streams; never blocks and never drops."""

    def __init__(self, redis: Any, keys: Keys, settings: PublisherSettings, instance_id: str) -> None:
        self._redis = redis
        self._keys = keys
        self._instance = instance_id
        self._queue: deque[PredictionEvent] = deque()
        self._queue_max = settings.queue_max
        self._batch_size = settings.publish_batch
        self._interval = settings.publish_interval_ms / 1000.0
        self._encoder = msgspec.json.Encoder()
        spool_path = settings.spool_path(instance_id)
        self.spool = Spool(spool_path)
        self._seq = _SeqAllocator(spool_path.with_name(spool_path.name + ".seq"), self.spool.max_seq)
        self._script = redis.register_script(APPEND_BLOCK)
        self._wakeup = asyncio.Event()
        self._spool_dirty = asyncio.Event()
        self._stopping = False
        self._redis_ok = True
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = PublisherStats()

    # --- request path --------------------------------------------------------------------------------------------
    def publish(self, event: PredictionEvent) -> None:
        """Enqueue one event (no I/O unless the queue is full, then a buffered local append)."""
        queue = self._queue
        if len(queue) < self._queue_max:
            queue.append(event)
            depth = len(queue)
            if depth == 1 or depth >= self._batch_size:  # wake the flusher: first event, or a full batch
                self._wakeup.set()
            return
        self._spool_events([event])
        self._spool_dirty.set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def redis_ok(self) -> bool:
        return self._redis_ok

    # --- background tasks ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Flusher: after the first event, linger up to ``interval`` for a full batch, then write; drain on stop.

        Idle, it sleeps until an event arrives (no timer wake-ups).
        """
        await self._sync_floor()
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._queue) < self._batch_size and not self._stopping:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wakeup.wait()
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            await self._write_batch(batch)
            if self._spool_dirty.is_set():
                self._spool_dirty.clear()
                await asyncio.to_thread(self.spool.sync)

    async def replay(self) -> None:
        """Replay the spool into Redis whenever it holds blocks and Redis answers; backoff between failures."""
        attempt = 0
        while not (self._stopping and not self.spool.pending):
            if not self.spool.pending:
                await asyncio.sleep(0.05)
                continue
            try:
                await self._replay_some()
                attempt = 0
            except WRITE_ERRORS as exc:
                attempt += 1
                delay = min(5.0, 0.1 * 2 ** min(attempt, 6)) * (0.5 + random.random() / 2)  # noqa: S311
                log.warning(
                    "spool replay failed (%s); %d bytes waiting, retry %d in %.2fs",
                    exc.__class__.__name__,
                    self.spool.pending_bytes,
                    attempt,
                    delay,
                )
                if self._stopping:
                    return
                await asyncio.sleep(delay)

    def start(self) -> None:
        """Start the flusher and replay tasks (kept referenced until :meth:`stop`)."""
        self._tasks = {
            asyncio.create_task(self.run(), name="publisher-flush"),
            asyncio.create_task(self.replay(), name="publisher-replay"),
        }

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Drain: write what is queued for up to ``drain_seconds``, spool whatever is left, fsync, close the spool."""
        self._stopping = True
        self._wakeup.set()
        _, running = await asyncio.wait(self._tasks, timeout=drain_seconds)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._queue:
            self._spool_events(list(self._queue))
            self._queue.clear()
        await asyncio.to_thread(self.spool.close)

    # --- internals -----------------------------------------------------------------------------------------------
    def _group(self, events: list[PredictionEvent]) -> dict[str, list[PredictionEvent]]:
        groups: dict[str, list[PredictionEvent]] = {}
        for event in events:
            stream = self._keys.predictions(self._keys.shard_of(event.request.customer_id))
            groups.setdefault(stream, []).append(event)
        return groups

    def _spool_events(self, events: list[PredictionEvent]) -> None:
        for stream, group in self._group(events).items():
            self.spool.append(
                self._seq.take(), stream, [self._encoder.encode(e) for e in group], PREDICTION_EVENT_VERSION
            )
            self.stats.spooled += len(group)

    async def _append(self, stream: str, seq: int, ids: list[str], payloads: list[bytes]) -> bool:
        if len(ids) != len(payloads):
            raise ValueError("one prediction id per event")
        return await self._append_lines(
            stream, seq, "".join(f"{i}\n" for i in ids), b"".join(p + b"\n" for p in payloads)
        )

    async def _append_lines(self, stream: str, seq: int, ids: str, lines: bytes) -> bool:
        """Write one block (ids and events newline-terminated); False if Redis already has this or a later seq."""
        args = (self._instance, seq, PREDICTION_EVENT_VERSION, ids, lines)
        written = await self._script(keys=[stream, self._keys.publish_state(stream)], args=args)
        return bool(written)

    async def _write_batch(self, batch: list[PredictionEvent]) -> None:
        if self.spool.pending or not self._redis_ok:
            self._spool_events(batch)
            self._spool_dirty.set()
            return
        groups = list(self._group(batch).items())
        for i, (stream, group) in enumerate(groups):
            seq = self._seq.take()
            lines = self._encoder.encode_lines(group)  # one C call for the whole block
            try:
                await self._append_lines(stream, seq, "".join([f"{e.decision.prediction_id}\n" for e in group]), lines)
                self.stats.published += len(group)
            except (*WRITE_ERRORS, asyncio.CancelledError) as exc:
                # Outcome unknown: keep the block with the same seq, so a retry is skipped if this one landed.
                self.spool.append(seq, stream, lines.split(b"\n")[:-1], PREDICTION_EVENT_VERSION)
                self.stats.spooled += len(group)
                self._spool_dirty.set()
                if isinstance(exc, asyncio.CancelledError):
                    self._spool_events([e for _, rest in groups[i + 1 :] for e in rest])
                    raise
                self._redis_ok = False
                self.stats.write_failures += 1
                log.warning("Redis write failed (%s: %s); spooled %d events", exc.__class__.__name__, exc, len(group))

    async def _replay_some(self) -> None:
        blocks = await asyncio.to_thread(self.spool.read, max(self._batch_size, 1))
        if not blocks:
            return
        if not self._redis_ok:
            await self._sync_floor(raise_errors=True)
        for block in blocks:
            # Blocks spooled by an older version are upgraded to the current layout and stream names.
            events = [upgrade_payload(block.version, e) for e in block.events]
            ids = [_ID_DECODER.decode(e).decision.prediction_id for e in events]
            if await self._append(self._keys.current_stream(block.stream), block.seq, ids, events):
                self.stats.published += len(block.events)
                self.stats.replayed += len(block.events)
            else:
                self.stats.skipped_duplicates += len(block.events)
            self.spool.confirm(block.end)
        if not self.spool.pending:
            self._redis_ok = True
            log.info("spool drained; publishing directly again")

    async def _sync_floor(self, raise_errors: bool = False) -> None:
        """Never hand out a sequence number Redis already saw for this instance (e.g. after a lost seq file)."""
        try:
            for stream in self._keys.prediction_streams():
                last = await self._redis.hget(self._keys.publish_state(stream), self._instance)
                if last is not None:
                    self._seq.raise_floor(max(int(last), self.spool.max_seq))
        except WRITE_ERRORS:
            if raise_errors:
                raise
            self._redis_ok = False
            log.warning("Redis unreachable at start; events go to the spool until it answers")


_ID_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(projection("EventId", decision=["prediction_id"]))
