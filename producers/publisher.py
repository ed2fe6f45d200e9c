"""The API's event publisher: in-memory enqueue on the request path, blocks written to Redis in the background.

* ``publish()`` appends to a bounded deque (no I/O) while Redis takes writes. At the bound (``BNPL_QUEUE_MAX``), and
  whenever events are not reaching Redis, it writes the event to the spool file instead and hands it to the
  operating system before the answer goes out: an answered decision then survives Redis being down, full or
  read-only, and the API being killed. Nothing is dropped.
* A flusher task writes batches (``publish_batch`` events or ``publish_interval_ms``, whichever first) as **blocks**
  through a Lua script: a block's events are ``XADD``-ed and the block's sequence number is recorded in the same
  atomic step. Sequence numbers grow per instance, so re-sending a block whose outcome was unknown (connection lost
  mid-call, process restarted) is skipped by Redis: every event lands exactly once.
* **Any** failed write (connection, timeout, ``OOM``, ``READONLY``, ``MOVED``, a script error …, see
  ``producers.errors``) spools the block it concerns, with its sequence number, before anything else happens; from
  then on that **shard's** events go to the spool (those still queued first, so a shard's blocks keep their order)
  while the other shards keep writing directly — on a Redis Cluster, a master failing over holds back only its
  own shards. A replay task drains the spool in order, several blocks per call, with exponential backoff and
  jitter, once Redis takes writes again; a shard goes back to the queue once none of its blocks waits in the spool.
* Both tasks are supervised: an exception is logged with its class and the task restarts with backoff.
* :meth:`health` says when events are not reaching Redis (spooling, queue above its high-water mark, or no write
  for ``BNPL_PUBLISH_STALL_S``); ``/readyz`` and the metrics show it. Once Redis is back and the spool drained, an
  ``events_delayed`` alert records how long and how many.
* Sequence numbers are reserved on disk ahead of use (``producers.sequence``), so a restart never reuses one.

While Redis is healthy, a ``kill -9`` loses what was answered within the last publish interval (the queue is
memory); a graceful stop writes or spools everything.

Redis replicates asynchronously: a block its master acknowledged and had not sent to a replica dies with the master.
With ``BNPL_PUBLISH_WAIT_REPLICAS`` = n > 0 each block's script is followed, on the same connection to the master
of its shard, by ``WAIT n timeout``; a block fewer than n replicas acknowledged in time counts as failed — it is
spooled with its sequence number and re-sent (skipped by Redis if it survived, written again if a failover lost it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis import exceptions as redis_errors

from common.aio import cancel_and_wait
from common.keys import LEDGER_LIVE, Keys, lua_xadd_entry
from common.redact import redact_text
from common.settings import PublisherSettings
from producers.outage import Outage, PublishHealth
from producers.sequence import SeqAllocator
from producers.spool import Spool
from schemas.codec import EVENT_CODEC, compress_many
from schemas.events import PREDICTION_EVENT_VERSION, PredictionEvent, projection, upgrade_payload

log = logging.getLogger(__name__)

#: KEYS: stream, publish-state hash, then the published-ledger hashes the call adds to (all in the stream's slot).
#: ARGV: instance, schema version, codec, ledger TTL (s), then per block its sequence number, its prediction ids
#: (newline-terminated), the byte lengths of its payloads (comma-separated), the payloads themselves, concatenated
#: (compressed payloads are binary: no separator is safe inside them), and its ledger counts (lines
#: ``<KEYS index>\t<field>\t<count>\n``: events per UTC day, instance, experiment and arm). A block at or below the
#: instance's last recorded sequence number is skipped — its events and its ledger counts; the others are written,
#: counted into the ledger and the last number recorded, in one atomic step. Returns {events written, events
#: skipped}. Five arguments per block, not several per event: packing arguments costs the API more than the XADD
#: costs Redis.
APPEND_BLOCKS = (
    """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local written, skipped = 0, 0
local touched, seen = {}, {}
for b = 5, #ARGV, 5 do
  local seq, ids, payloads = tonumber(ARGV[b]), ARGV[b + 1], ARGV[b + 3]
  local i, p = 1, 1
  for length in string.gmatch(ARGV[b + 2], '%d+') do
    local id_end = string.find(ids, '\\n', i, true)
    local n = tonumber(length)
    if seq > last then
      """
    + lua_xadd_entry(
        "KEYS[1]", "ARGV[2]", "string.sub(ids, i, id_end - 1)", "string.sub(payloads, p, p + n - 1)", "ARGV[3]"
    )
    + """
      written = written + 1
    else
      skipped = skipped + 1
    end
    i, p = id_end + 1, p + n
  end
  if seq > last then
    last = seq
    for k, field, n in string.gmatch(ARGV[b + 4], '(%d+)\\t([^\\t]*)\\t(%d+)\\n') do
      redis.call('HINCRBY', KEYS[tonumber(k)], field, tonumber(n))
      if not seen[k] then
        seen[k] = true
        touched[#touched + 1] = KEYS[tonumber(k)]
      end
    end
  end
end
redis.call('HSET', KEYS[2], ARGV[1], last)
for _, key in ipairs(touched) do redis.call('EXPIRE', key, ARGV[4]) end
return {written, skipped}
"""
)


#: Blocks of at least this many events are compressed off the event loop.
_OFFLOAD_EVENTS = 100

#: Events of one block per (UTC day, API instance, experiment id or None, arm): what the published ledger adds.
Ledger = Counter[tuple[str, str, str | None, str]]


def utc_day(timestamp: str) -> str:
    """The UTC day (``YYYY-MM-DD``) of an ISO-8601 decision time; the engine's ``…Z`` stamps are sliced, not parsed.

    >>> utc_day("2026-11-27T23:59:59.999Z"), utc_day("2026-11-27T23:30:00+00:00"), utc_day("2026-11-28T00:30:00+02:00")
    ('2026-11-27', '2026-11-27', '2026-11-27')
    """
    if timestamp.endswith("Z"):
        return timestamp[:10]
    moment = datetime.fromisoformat(timestamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date().isoformat()


def block_ledger(events: list[PredictionEvent]) -> Ledger:
    """The ledger counts of a block of events. The usual block — one day, one instance, one experiment — costs a few
    C-level passes and a count of arm names; anything else is counted per event."""
    decisions = [e.decision for e in events]
    stamps = [d.assessment_timestamp for d in decisions]
    lo, hi = min(stamps, default=""), max(stamps, default="")
    instances = {e.api_instance for e in events}
    experiments = {d.experiment_id for d in decisions}
    # The engine's stamps are UTC ``…Z``: ordered as strings, so all lie within [lo, hi] and share lo's day.
    if lo[:10] == hi[:10] and lo.endswith("Z") and hi.endswith("Z") and len(instances) == len(experiments) == 1:
        day, (instance,), (experiment,) = lo[:10], instances, experiments
        arms = Counter([d.traffic_segment for d in decisions])
        return Counter({(day, instance, experiment, arm): n for arm, n in arms.items()})
    return Counter(
        [
            (utc_day(d.assessment_timestamp), e.api_instance, d.experiment_id, d.traffic_segment)
            for e, d in zip(events, decisions, strict=True)
        ]
    )


class ReplicaAckError(redis_errors.RedisError):
    """Fewer replicas than ``BNPL_PUBLISH_WAIT_REPLICAS`` acknowledged a block within ``BNPL_PUBLISH_WAIT_MS``."""


@dataclass(slots=True)
class PublisherStats:
    """Counters exported on /metrics."""

    published: int = 0  # events confirmed in Redis (direct or replayed)
    spooled: int = 0  # events written to the spool
    replayed: int = 0  # spooled events confirmed in Redis
    skipped_duplicates: int = 0  # events of blocks Redis already had
    write_failures: int = 0
    task_restarts: int = 0  # supervised background tasks that failed and were restarted
    spool_errors: int = 0  # events that could not be spooled (kept in memory instead)


def _backoff(attempt: int, ceiling: float) -> float:
    delay: float = min(ceiling, 0.1 * 2 ** min(attempt, 8)) * (0.5 + random.random() / 2)  # noqa: S311 - jitter
    return delay


class EventPublisher:
    """Publishes prediction events to Redis Streams; never blocks the request path and never drops."""

    def __init__(self, redis: Any, keys: Keys, settings: PublisherSettings, instance_id: str) -> None:
        self._redis = redis
        self._keys = keys
        self._instance = instance_id
        self._settings = settings
        self._queue: deque[PredictionEvent] = deque()
        self._queue_max = settings.queue_max
        self._batch_size = settings.publish_batch
        self._interval = settings.publish_interval_ms / 1000.0
        self._encoder = msgspec.json.Encoder()
        spool_path = settings.spool_path(instance_id)
        self.spool = Spool(spool_path)
        self._seq = SeqAllocator(spool_path.with_name(spool_path.name + ".seq"), self.spool.max_seq)
        self._script = redis.register_script(APPEND_BLOCKS)
        self._wait_replicas = settings.publish_wait_replicas
        self._wait_ms = settings.publish_wait_ms
        self._ledger_ttl = settings.ledger_retention_days * 86_400
        self._masters: dict[str, tuple[Any, Any]] = {}  # cluster node name → (its own client, the script on it)
        self._wakeup = asyncio.Event()
        self._spool_dirty = asyncio.Event()
        self._stopping = False
        #: blocks of each stream appended to the spool by this process and not yet confirmed: such a stream is
        #: spooled (its new events too, to keep its blocks in sequence order) until they are replayed
        self._spooled: Counter[str] = Counter()
        #: every stream is spooled: blocks left by an earlier process wait in the spool, or the sequence floor
        #: could not be read from Redis yet
        self._hold_all = self.spool.pending
        self._floor_synced = False
        self.outage = Outage(instance_id, settings)
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = PublisherStats()

    # --- request path --------------------------------------------------------------------------------------------
    def publish(self, event: PredictionEvent) -> None:
        """Enqueue one event; while its shard's events are not reaching Redis (or at the queue bound), spool it
        instead."""
        queue = self._queue
        if len(queue) < self._queue_max and (
            not (self._spooled or self._hold_all) or self._direct(self._stream_of(event))
        ):
            queue.append(event)
            depth = len(queue)
            if depth == 1 or depth >= self._batch_size:  # wake the flusher: first event, or a full batch
                self._wakeup.set()
            return
        self._write_through(event)

    def _stream_of(self, event: PredictionEvent) -> str:
        return self._keys.predictions(self._keys.shard_of(event.request.customer_id))

    def _direct(self, stream: str) -> bool:
        """Whether ``stream``'s events go to Redis directly (none of its blocks waits in the spool)."""
        return not self._hold_all and not self._spooled[stream]

    def _write_through(self, event: PredictionEvent) -> None:
        """Spool ``event`` behind its shard's queued events (its shard's order kept) and hand it to the OS before
        the answer."""
        stream = self._stream_of(event)
        try:
            behind = [e for e in self._queue if self._stream_of(e) == stream]
            if behind:
                self._queue = deque(e for e in self._queue if self._stream_of(e) != stream)
                self._spool_events(behind)
            self._spool_events([event], flush=True)
        except OSError as exc:  # disk full or gone: keep it in memory (beyond the bound) rather than lose it
            self.stats.spool_errors += 1
            log.error("could not spool an event (%s: %s); keeping it in memory", exc.__class__.__name__, exc)
            self._queue.append(event)
        self._spool_dirty.set()
        self._wakeup.set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def redis_ok(self) -> bool:
        """True while every shard's events go straight to Redis."""
        return not self._hold_all and not self._spooled

    @property
    def spooled_streams(self) -> int:
        """Streams (shards) whose events wait in the spool now."""
        return len(self.spooled_stream_names)

    @property
    def spooled_stream_names(self) -> list[str]:
        if self._hold_all:
            return self._keys.prediction_streams()
        return sorted(stream for stream, blocks in self._spooled.items() if blocks)

    @property
    def last_error(self) -> str | None:
        """Class and message of the last failed Redis call (credentials redacted)."""
        return self.outage.last_error

    def health(self) -> PublishHealth:
        """Whether events are reaching Redis (see :meth:`producers.outage.Outage.health`)."""
        return self.outage.health(self.redis_ok, len(self._queue), self.spool.pending)

    # --- background tasks ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the supervised flusher and replay tasks (kept referenced until :meth:`stop`)."""
        self._tasks = {
            asyncio.create_task(self._supervised("flush", self._flush_loop), name="publisher-flush"),
            asyncio.create_task(self._supervised("replay", self._replay_loop), name="publisher-replay"),
        }

    async def _supervised(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` until it returns; on any exception log it with its class and restart it with backoff."""
        attempt = 0
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self.stats.task_restarts += 1
                delay = _backoff(attempt, 5.0)
                log.exception(
                    "publisher %s task failed (%s: %s); restarting in %.2fs",
                    name,
                    exc.__class__.__name__,
                    redact_text(str(exc)),
                    delay,
                )
                if self._stopping:
                    return
                await asyncio.sleep(delay)

    async def _flush_loop(self) -> None:
        """After the first event, linger up to ``interval`` for a full batch, then write; drain on stop.

        Idle, it sleeps until an event arrives (no timer wake-ups); it also fsyncs what was spooled.
        """
        await self._sync_floor()
        while True:
            if self._spool_dirty.is_set():
                self._spool_dirty.clear()
                await asyncio.to_thread(self.spool.sync)
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                if not self._spool_dirty.is_set():
                    await self._wakeup.wait()
                continue
            if len(self._queue) < self._batch_size and not self._stopping:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wakeup.wait()
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            await self._write_batch(batch)

    async def _replay_loop(self) -> None:
        """Replay the spool whenever it holds blocks; back off while Redis refuses; raise the outage alert."""
        attempt = 0
        while not (self._stopping and not self.spool.pending):
            if not self.spool.pending:
                if self.outage.since is not None and self.redis_ok:
                    await self.outage.alert_if_over(self._redis, self._keys)
                await asyncio.sleep(0.05)
                continue
            try:
                await self._replay_some()
                attempt = 0
            except Exception as exc:
                attempt += 1
                self._failed(exc, "spool replay")
                delay = _backoff(attempt, 5.0)
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

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Drain: write what is queued for up to ``drain_seconds``, spool whatever is left, fsync, close the spool."""
        self._stopping = True
        self._wakeup.set()
        _, running = await asyncio.wait(self._tasks, timeout=drain_seconds)
        await cancel_and_wait(running)
        if self._queue:
            self._spool_events(list(self._queue))
            self._queue.clear()
        await asyncio.to_thread(self.spool.close)
        await self._forget_masters()

    # --- writing -------------------------------------------------------------------------------------------------
    def _group(self, events: list[PredictionEvent]) -> dict[str, list[PredictionEvent]]:
        groups: dict[str, list[PredictionEvent]] = {}
        for event in events:
            groups.setdefault(self._stream_of(event), []).append(event)
        return groups

    def _spool_events(self, events: list[PredictionEvent], flush: bool = False) -> None:
        for stream, group in self._group(events).items():
            lines = [self._encoder.encode(e) for e in group]
            self._spool_block(self._seq.take(), stream, lines, flush)

    def _spool_block(self, seq: int, stream: str, documents: list[bytes], flush: bool = False) -> None:
        self.spool.append(seq, stream, documents, PREDICTION_EVENT_VERSION, flush=flush)
        self._spooled[stream] += 1
        self.stats.spooled += len(documents)
        self.outage.spooled += len(documents)

    async def _append_blocks(
        self, stream: str, blocks: list[tuple[int, str, list[bytes]]], ledgers: list[Ledger] | None = None
    ) -> tuple[int, int]:
        """Write blocks (seq, newline-terminated ids, JSON documents) of one stream, each document compressed
        (``schemas.codec``), and add each written block's ``ledgers`` counts to the published ledger; returns events
        (written, skipped because Redis already had their block)."""
        args: list[Any] = [self._instance, PREDICTION_EVENT_VERSION, EVENT_CODEC, self._ledger_ttl]
        keys = [stream, self._keys.publish_state(stream)]

        # Compressing costs ≈3 µs an event. A large block is compressed in a worker thread (zstd releases the GIL,
        # the event loop serves on); a small one inline, where a thread hand-off would cost more than it saves.
        def compress_blocks() -> list[list[bytes]]:
            return [compress_many(documents) for _, _, documents in blocks]

        events = sum(len(documents) for _, _, documents in blocks)
        compressed = await asyncio.to_thread(compress_blocks) if events >= _OFFLOAD_EVENTS else compress_blocks()
        for i, ((seq, ids, _), payloads) in enumerate(zip(blocks, compressed, strict=True)):
            lines = []
            for (day, instance, experiment, arm), n in (ledgers[i] if ledgers else {}).items():
                key = self._keys.ledger(stream, day)
                if key not in keys:
                    keys.append(key)
                field = self._keys.ledger_field(instance, experiment or LEDGER_LIVE, arm)
                lines.append(f"{keys.index(key) + 1}\t{field}\t{n}\n")
            args += [seq, ids, ",".join([str(len(p)) for p in payloads]), b"".join(payloads), "".join(lines)]
        if self._wait_replicas:
            written, skipped = await self._append_and_wait(keys, args)
        else:
            written, skipped = await self._script(keys=keys, args=args)
        return int(written), int(skipped)

    async def _append_and_wait(self, keys: list[str], args: list[Any]) -> Any:
        """The script, then ``WAIT`` on the same connection (WAIT counts the replicas that have this connection's
        writes): on a cluster through a plain client of the master serving the shard."""
        client, script = self._master_of(keys[0])
        try:
            async with client.pipeline(transaction=False) as pipe:
                await script(keys=keys, args=args, client=pipe)
                pipe.execute_command("WAIT", self._wait_replicas, self._wait_ms)
                result, acked = await pipe.execute()
        except (redis_errors.MovedError, redis_errors.AskError, redis_errors.ConnectionError) as exc:
            await self._forget_masters(refresh=True)  # a failover moved the shard: learn the new master first
            raise redis_errors.TryAgainError(f"{exc.__class__.__name__}: {exc}") from exc
        if int(acked) < self._wait_replicas:
            raise ReplicaAckError(
                f"{acked} of {self._wait_replicas} replica(s) acknowledged the block within {self._wait_ms} ms"
            )
        return result

    def _master_of(self, stream: str) -> tuple[Any, Any]:
        if not hasattr(self._redis, "get_node_from_key"):  # one Redis: its own connections
            return self._redis, self._script
        node = self._redis.get_node_from_key(stream)
        found = self._masters.get(node.name)
        if found is None:
            from redis.asyncio import ConnectionPool, Redis

            pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            client = Redis.from_pool(pool)  # owns the pool: aclose() disconnects it
            found = self._masters[node.name] = (client, client.register_script(APPEND_BLOCKS))
        return found

    async def _forget_masters(self, refresh: bool = False) -> None:
        masters, self._masters = self._masters, {}
        for client, _ in masters.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        if refresh and hasattr(self._redis, "nodes_manager"):
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await self._redis.nodes_manager.initialize()

    async def _write_batch(self, batch: list[PredictionEvent]) -> None:
        """Write each shard's part of ``batch`` as one block; a shard whose events are spooled is spooled, and a
        failed write spools that block alone (the other shards go on)."""
        groups = list(self._group(batch).items())
        for i, (stream, group) in enumerate(groups):
            if not self._direct(stream):  # checked after every await: a write-through may have spooled it meanwhile
                self._spool_events(group)
                self._spool_dirty.set()
                continue
            seq = self._seq.take()
            documents = self._encoder.encode_lines(group).split(b"\n")[:-1]  # one C call for the whole block
            try:
                written, _ = await self._append_blocks(
                    stream,
                    [(seq, "".join([f"{e.decision.prediction_id}\n" for e in group]), documents)],
                    [block_ledger(group)],
                )
            except BaseException as exc:
                # Outcome unknown: keep the block with the same seq, so a retry is skipped if this one landed.
                # From now on this shard's events are spooled (see _direct); only then does anything else happen.
                first = self.redis_ok
                self._spool_block(seq, stream, documents, flush=True)
                self._spool_dirty.set()
                if not isinstance(exc, Exception):  # cancelled (stop), interrupted: nothing lost, pass it on
                    self._spool_events([e for _, rest in groups[i + 1 :] for e in rest])
                    raise
                self._failed(exc, "write", first)
                continue
            self.stats.published += written
            self.outage.succeeded()

    async def _replay_some(self) -> None:
        blocks = await asyncio.to_thread(self.spool.read, max(self._batch_size, 1))
        if not blocks:
            return
        if not self._floor_synced:
            await self._sync_floor(raise_errors=True)
        # Consecutive blocks of one stream go in one call; blocks spooled by an older version are upgraded to the
        # current layout and stream names first.
        runs: list[tuple[str, list[tuple[int, str, list[bytes]]], int, list[Ledger]]] = []
        for block in blocks:
            stream = self._keys.current_stream(block.stream)
            events = [upgrade_payload(block.version, e) for e in block.events]
            views = [_ID_DECODER.decode(e) for e in events]
            ids = "".join(f"{v.decision.prediction_id}\n" for v in views)
            ledger: Ledger = Counter(
                (
                    utc_day(v.decision.assessment_timestamp),
                    v.api_instance,
                    v.decision.experiment_id,
                    v.decision.traffic_segment,
                )
                for v in views
            )
            entry = (block.seq, ids, events)
            if runs and runs[-1][0] == stream:
                runs[-1][1].append(entry)
                runs[-1][3].append(ledger)
                runs[-1] = (stream, runs[-1][1], block.end, runs[-1][3])
            else:
                runs.append((stream, [entry], block.end, [ledger]))
        for stream, run, end, ledgers in runs:
            written, skipped = await self._append_blocks(stream, run, ledgers)
            self.stats.published += written
            self.stats.replayed += written
            self.stats.skipped_duplicates += skipped
            self.spool.confirm(end)
            self._spooled[stream] -= len(run)
            if self._spooled[stream] <= 0:
                del self._spooled[stream]
            self.outage.succeeded()
        if not self.spool.pending:
            self._spooled.clear()
            self._hold_all = False
            log.info("spool drained; publishing directly again")

    async def _sync_floor(self, raise_errors: bool = False) -> None:
        """Never hand out a sequence number Redis already saw for this instance (e.g. after a lost seq file)."""
        try:
            for stream in self._keys.prediction_streams():
                last = await self._redis.hget(self._keys.publish_state(stream), self._instance)
                if last is not None:
                    self._seq.raise_floor(max(int(last), self.spool.max_seq))
            self._floor_synced = True
        except (redis_errors.RedisError, OSError) as exc:
            if raise_errors:
                raise
            first = self.redis_ok
            self._hold_all = True  # until the floor is known, every stream goes through the spool
            self._failed(exc, "start-up", first)

    def _failed(self, exc: BaseException, during: str, first: bool = False) -> None:
        """Record a failed Redis call; ``first``: every shard was still writing directly."""
        self.outage.failed(exc, during, first=first)
        self.stats.write_failures += 1
        if isinstance(exc, redis_errors.NoScriptError):  # the script cache was flushed: load it again
            self._script = self._redis.register_script(APPEND_BLOCKS)


#: What replaying a spooled block reads of its events: ids, and the ledger's day, instance, experiment and arm.
_ID_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    projection(
        "EventId",
        decision=["prediction_id", "assessment_timestamp", "experiment_id", "traffic_segment"],
        event=["api_instance"],
    )
)
