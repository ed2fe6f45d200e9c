"""Adaptive batching and end-to-end lag of the consumer runtime, with a real redis-server.

A group that has caught up hands its partial batch over at once (after at most ``linger_ms``) instead of waiting out
``max_wait_s`` while events keep trickling in; under a backlog batches fill up. Each worker samples the age of the
oldest entry its group has not acked (its end-to-end lag): in its stats, its ``/metrics`` and ``bnpl status``."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis

from common.keys import Keys
from common.settings import ConsumerSettings
from consumers.base import BatchResult, Entry
from consumers.cli import WorkerCollector
from consumers.runtime import ConsumerWorker
from consumers.status import collect
from tests.streams import QuietHandler, add_events, make_events, wait_group_drained

#: A batch window far longer than any test here waits: batches handed over before it ends were not timed out.
LONG_WAIT = ConsumerSettings(batch_size=100_000, max_wait_s=600.0, block_ms=100, linger_ms=20, trim_every_s=3_600)


@pytest.fixture
async def redis(redis_server):
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


class _Batches(QuietHandler):
    """A group that records the size of each batch it is handed; ``hold`` keeps it inside its first batch."""

    group = "batching"

    def __init__(self, keys: Keys, hold: asyncio.Event | None = None) -> None:
        self.streams = keys.prediction_streams()
        self.sizes: list[int] = []
        self.hold = hold
        self.entered = asyncio.Event()

    async def handle(self, entries: list[Entry]) -> BatchResult:
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        self.sizes.append(len(entries))
        return BatchResult()


@contextlib.asynccontextmanager
async def _running(worker: ConsumerWorker):
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def _until(condition, seconds: float = 60.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
async def test_a_caught_up_group_hands_batches_over_while_events_keep_trickling_in(redis, key_prefix):
    """Events arrive one every 10 ms, so no read ever comes back empty: a batcher that waits for a full batch, the
    batch window (600 s) or an empty read hands nothing over while the trickle lasts. This one hands over batch
    after batch, each a small fraction of the batch size."""
    keys = Keys(key_prefix)
    events = make_events(3_000, seed=11)
    handler = _Batches(keys)
    worker = ConsumerWorker(redis, keys, handler, LONG_WAIT, name="w")
    async with _running(worker):
        sent = 0
        async with asyncio.timeout(60):  # the trickle ends as soon as three batches were handed over
            while len(handler.sizes) < 3:
                await add_events(redis, keys.predictions(), events[sent : sent + 1])
                sent += 1
                await asyncio.sleep(0.01)
        await wait_group_drained(redis, keys.predictions(), handler.group, 60)
    assert sum(handler.sizes) == sent
    assert max(handler.sizes) < 1_000 < LONG_WAIT.batch_size


async def test_under_a_backlog_batches_fill_up_to_the_batch_size(redis, key_prefix):
    """2,000 entries waiting when the worker starts: every read comes back full, so every batch is full."""
    keys = Keys(key_prefix)
    await add_events(redis, keys.predictions(), make_events(2_000, seed=12))
    handler = _Batches(keys)
    config = ConsumerSettings(batch_size=500, max_wait_s=600.0, block_ms=100, linger_ms=0, trim_every_s=3_600)
    async with _running(ConsumerWorker(redis, keys, handler, config, name="w")):
        await wait_group_drained(redis, keys.predictions(), handler.group, 60)
    assert handler.sizes == [500, 500, 500, 500]


def _gauge(worker: ConsumerWorker, name: str) -> float:
    for family in WorkerCollector(worker).collect():
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"{name} not exported")


@pytest.mark.timeout(120)
async def test_the_age_of_the_oldest_unacked_entry_is_exported_and_in_status(redis, key_prefix):
    """While the group holds its first batch (its sink is slow), the age of the oldest entry it has not acked
    grows: the worker's gauge and ``bnpl status`` report it; once everything is acked both say so (0 / none)."""
    keys = Keys(key_prefix)
    hold = asyncio.Event()
    handler = _Batches(keys, hold)
    config = ConsumerSettings(batch_size=100, max_wait_s=0.2, block_ms=100, trim_every_s=3_600, claim_idle_ms=600_000)
    worker = ConsumerWorker(redis, keys, handler, config, name="w")
    await add_events(redis, keys.predictions(), make_events(50, seed=13))
    async with _running(worker):
        await asyncio.wait_for(handler.entered.wait(), 60)
        await _until(lambda: _gauge(worker, "bnpl_consumer_oldest_entry_age_seconds") >= 1.5)  # sampled meanwhile
        streams = await collect(redis, keys, config, expected={handler.group: [keys.predictions()]})
        (group,) = [g for g in streams[0].groups if g.name == handler.group]
        assert group.oldest_age_s is not None
        assert group.oldest_age_s >= 1.5
        hold.set()
        await wait_group_drained(redis, keys.predictions(), handler.group, 60)
        await _until(lambda: _gauge(worker, "bnpl_consumer_oldest_entry_age_seconds") == 0.0)
    streams = await collect(redis, keys, config, expected={handler.group: [keys.predictions()]})
    (group,) = [g for g in streams[0].groups if g.name == handler.group]
    assert group.oldest_age_s is None
    assert sum(handler.sizes) == 50
