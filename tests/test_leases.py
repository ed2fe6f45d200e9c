"""Shard leases on a real redis-server: the workers of a group split the shard streams between them, rebalance when
one joins, leaves or dies, and every entry is read by one worker only (a dead worker's unacked entries excepted: they
are claimed and read again, as they must be)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from common.aio import cancel_and_wait
from common.keys import Keys
from common.settings import ConsumerSettings
from consumers.base import BatchResult, Entry
from consumers.leases import ShardLeases
from consumers.runtime import ConsumerWorker
from tests.streams import wait_group_drained

SHARDS = 6
TTL_S = 1.5
CONFIG = ConsumerSettings(
    batch_size=200,
    max_wait_s=0.2,
    block_ms=100,
    claim_idle_ms=2_000,
    claim_every_s=0.5,
    trim_every_s=3_600,
    max_backoff_s=1.0,
    lease_ttl_s=TTL_S,
)


class _Recorder:
    """Records which worker handled which entry; ``slow`` seconds per batch keep batches in hand."""

    group = "leased"

    def __init__(self, keys: Keys, name: str, seen: list[tuple[str, str, str]], slow: float = 0.0) -> None:
        self.streams = keys.prediction_streams()
        self.name = name
        self.seen = seen
        self.slow = slow
        self.released_streams: list[tuple[str, bool]] = []

    async def start(self) -> None:
        return None

    async def released(self, stream: str, lost: bool) -> None:
        self.released_streams.append((stream, lost))

    async def tick(self) -> None:
        return None

    async def handle(self, entries: list[Entry]) -> BatchResult:
        if self.slow:
            await asyncio.sleep(self.slow)
        self.seen += [(self.name, e.stream, e.id) for e in entries]
        return BatchResult()

    async def close(self) -> None:
        return None


@pytest.fixture
async def redis(redis_server):
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _produce(redis, keys: Keys, published: list[tuple[str, str]], stop: asyncio.Event) -> None:
    counter = itertools.count()
    while not stop.is_set():
        streams = [keys.predictions(next(counter) % SHARDS) for _ in range(60)]
        async with redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xadd(stream, {"v": 1, "id": "x", "e": b"{}"})
            published += [(s, i.decode()) for s, i in zip(streams, await pipe.execute(), strict=True)]
        await asyncio.sleep(0.05)


class _Traffic:
    """Entries appended to every shard until stopped; what the workers recorded."""

    def __init__(self, redis, keys: Keys) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.published: list[tuple[str, str]] = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(_produce(redis, keys, self.published, self.stop))

    async def end(self) -> None:
        self.stop.set()
        await self.task  # idempotent: a finished task returns at once


async def _until(check: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds:.0f}s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _split(workers: list[ConsumerWorker], sizes: list[int], streams: list[str]) -> Callable[[], bool]:
    """Every stream held by exactly one of ``workers``, who hold ``sizes`` streams each."""

    def check() -> bool:
        owned = [w.owned for w in workers]
        flat = [s for o in owned for s in o]
        return sorted(len(o) for o in owned) == sorted(sizes) and sorted(flat) == sorted(streams)

    return check


async def _stop(workers: dict[str, ConsumerWorker], tasks: dict[str, asyncio.Task[None]]) -> None:
    """Stop every worker still running: gracefully, or (if one does not stop within a minute) by cancelling it."""
    for name in tasks:
        workers[name].request_stop()
    _, running = await asyncio.wait(tasks.values(), timeout=60)
    await cancel_and_wait(running)
    for task in tasks.values():
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _drained(redis, keys: Keys, group: str) -> None:
    for stream in keys.prediction_streams():
        await wait_group_drained(redis, stream, group, seconds=60)


async def test_workers_split_the_shards_rebalance_on_join_and_leave_and_read_every_entry_once(redis, key_prefix):
    keys = Keys(key_prefix, SHARDS)
    streams = keys.prediction_streams()
    traffic = _Traffic(redis, keys)
    seen, published = traffic.seen, traffic.published
    workers: dict[str, ConsumerWorker] = {}
    tasks: dict[str, asyncio.Task[None]] = {}

    def start(name: str) -> None:
        workers[name] = ConsumerWorker(redis, keys, _Recorder(keys, name, seen, slow=0.05), CONFIG, name=name)
        tasks[name] = asyncio.create_task(workers[name].run())

    try:
        start("w0")
        start("w1")
        await _until(_split([workers["w0"], workers["w1"]], [3, 3], streams), 20, "two workers, 3 + 3 shards")
        start("w2")
        await _until(_split(list(workers.values()), [2, 2, 2], streams), 20, "a third joins: 2 + 2 + 2")
        workers["w0"].request_stop()  # a graceful leave hands its leases back at once
        await tasks.pop("w0")
        left = [workers["w1"], workers["w2"]]
        await _until(_split(left, [3, 3], streams), 20, "w0 left: 3 + 3")
        await asyncio.sleep(1.0)
        await traffic.end()
        await _drained(redis, keys, "leased")
    finally:
        await traffic.end()
        await _stop(workers, tasks)
    by_id = Counter((stream, entry_id) for _, stream, entry_id in seen)
    assert len(published) > 1_000  # entries kept arriving through both rebalances
    assert sorted(by_id) == sorted(published)  # nothing unread
    assert set(by_id.values()) == {1}  # nothing read twice, through two rebalances
    for name in ("w1", "w2"):  # each worker read only streams it held
        assert {s for w, s, _ in seen if w == name} <= set(streams)
    handed_back = [s for w in workers.values() for s, lost in w.handler.released_streams if not lost]  # type: ignore[attr-defined]
    assert len(handed_back) >= 2  # w2 joining took two shards, handed over by their holders after their batches


async def test_a_dead_workers_shards_move_within_the_lease_ttl_a_replacement_rebalances_and_only_unacked_entries_repeat(
    redis, key_prefix
):
    keys = Keys(key_prefix, SHARDS)
    streams = keys.prediction_streams()
    traffic = _Traffic(redis, keys)
    seen, published = traffic.seen, traffic.published
    workers = {
        name: ConsumerWorker(redis, keys, _Recorder(keys, name, seen, slow=0.2), CONFIG, name=name)
        for name in ("w0", "w1", "w2")
    }
    tasks = {name: asyncio.create_task(w.run()) for name, w in workers.items()}
    try:
        await _until(_split(list(workers.values()), [2, 2, 2], streams), 20, "2 + 2 + 2")
        await asyncio.sleep(0.5)
        # w1 dies: no hand-back, no more renewals or acks (what SIGKILL does to a process).
        dead = workers["w1"]
        dead_streams = dead.owned

        async def no_goodbye() -> None:
            return None

        dead.leases.leave = no_goodbye  # type: ignore[method-assign]
        await cancel_and_wait([tasks.pop("w1")])
        # Its lease loop and readers too: a cancellation lost inside redis-py (3.11) must not leave one renewing.
        await cancel_and_wait([t for t in asyncio.all_tasks() if t.get_name().startswith(dead.task_prefix)])
        unacked = {
            (stream, row["message_id"].decode())
            for stream in dead_streams
            for row in await redis.xpending_range(stream, "leased", "-", "+", 10_000, consumername="w1")
        }
        alive = [workers["w0"], workers["w2"]]
        leases = ShardLeases(redis, keys, "leased", streams, "observer", TTL_S)
        await _until(_split(alive, [3, 3], streams), 4 * TTL_S + 5, "the dead worker's shards taken over")
        holders = await leases.holders()
        # A replacement starts: it gets its share back from the survivors (handed over after their batches).
        workers["w3"] = ConsumerWorker(redis, keys, _Recorder(keys, "w3", seen, slow=0.2), CONFIG, name="w3")
        tasks["w3"] = asyncio.create_task(workers["w3"].run())
        alive.append(workers["w3"])
        await _until(_split(alive, [2, 2, 2], streams), 20, "the replacement takes two shards: 2 + 2 + 2")
        await asyncio.sleep(1.0)
        await traffic.end()
        await _drained(redis, keys, "leased")
    finally:
        await traffic.end()
        await _stop(workers, tasks)
    assert set(holders.values()) <= {"w0", "w2"}
    by_id = Counter((stream, entry_id) for _, stream, entry_id in seen)
    assert sorted(by_id) == sorted(published)  # no shard left unread
    twice = {entry_id for entry_id, n in by_id.items() if n > 1}
    assert twice <= unacked  # read again only what the dead worker held unacked
    assert max(by_id.values()) <= 2


async def test_a_worker_holding_several_shards_reads_a_busy_one_while_another_is_idle(redis, key_prefix):
    """One worker, two shards, entries on the second only: the first shard's reader, blocking on an idle stream
    back to back, must not hold the whole read room (it did: the second shard was never read)."""
    keys = Keys(key_prefix, 2)
    config = ConsumerSettings(batch_size=200, max_wait_s=0.2, block_ms=100, trim_every_s=3_600, lease_ttl_s=600)
    seen: list[tuple[str, str, str]] = []
    worker = ConsumerWorker(redis, keys, _Recorder(keys, "w", seen), config, name="w")
    tasks = {"w": asyncio.create_task(worker.run())}
    try:
        idle, busy = keys.prediction_streams()
        await _until(_split([worker], [2], [idle, busy]), 30, "the worker holds both shards")
        await asyncio.sleep(0.5)  # both readers in their blocking reads
        published = [(busy, (await redis.xadd(busy, {"v": 1, "id": "x", "e": b"{}"})).decode()) for _ in range(20)]
        await wait_group_drained(redis, busy, _Recorder.group, seconds=60)
        assert {(s, i) for _, s, i in seen} == set(published)
    finally:
        await _stop({"w": worker}, tasks)
