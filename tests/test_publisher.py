"""Event publishing under faults, with a real redis-server that is killed and restarted: nothing lost or doubled."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.keys import PUBLISHER
from common.keys import Keys, decode_entry
from common.settings import PublisherSettings
from datagen import generate
from decision.engine import DecisionEngine
from producers.publisher import EventPublisher
from producers.spool import Spool, SpoolLockedError
from tests.conftest import api_settings, start_api
from traffic.http import simulate


async def _stream_ids(url: str, stream: str) -> Counter[str]:
    client = aioredis.from_url(url)
    try:
        return Counter(decode_entry(fields).record_id for _, fields in await client.xrange(stream))
    finally:
        await client.aclose()


async def _wait_drained(publisher: EventPublisher, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if publisher.queue_depth == 0 and not publisher.spool.pending and publisher.redis_ok:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not drained: queue {publisher.queue_depth}, spool {publisher.spool.pending_bytes} bytes")


def _requests(n: int, seed: int, on_index: dict[int, object]):
    data = generate(n, seed=seed)
    for i in range(n):
        action = on_index.get(i)
        if action is not None:
            action()  # type: ignore[operator]
        yield data.request(i)


async def test_kill_redis_during_5000_requests_loses_and_duplicates_nothing(
    tmp_path, dedicated_redis, key_prefix, loaded_models
):
    settings = api_settings(tmp_path, dedicated_redis.url, key_prefix)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    try:
        result = await simulate(
            client.url("/"),
            _requests(5_000, 41, {1_000: dedicated_redis.kill, 3_500: dedicated_redis.start}),
            api_key="test-key",
            connections=8,
        )
        assert result.statuses == Counter({200: 5_000})
        publisher = client.app[PUBLISHER]
        await _wait_drained(publisher)
        assert publisher.stats.spooled > 0  # Redis really was down for part of the run
        ids = await _stream_ids(settings.streams.redis_url, settings.keys.predictions())
        assert len(result.prediction_ids) == 5_000
        assert set(ids) == set(result.prediction_ids)
        assert max(ids.values()) == 1
    finally:
        await stop()


async def test_api_restart_mid_spool_loses_nothing(tmp_path, dedicated_redis, key_prefix, loaded_models):
    settings = api_settings(tmp_path, dedicated_redis.url, key_prefix, publish_batch=50)
    engine = DecisionEngine(loaded_models)
    dedicated_redis.kill()
    first, stop_first = await start_api(settings, engine)
    result = await simulate(first.url("/"), _requests(2_000, 43, {}), api_key="test-key", connections=4)
    assert result.statuses == Counter({200: 2_000})
    await stop_first()  # graceful: everything still in memory goes to the spool
    spool = Spool(settings.publisher.spool_path(settings.api.instance_id))
    assert spool.pending_bytes > 0
    spool.close()

    dedicated_redis.start()
    second, stop_second = await start_api(settings, engine)
    publisher = second.app[PUBLISHER]
    for _ in range(400):  # stop it again as soon as part of the spool was replayed
        if publisher.stats.replayed:
            break
        await asyncio.sleep(0.005)
    await stop_second()

    third, stop_third = await start_api(settings, engine)
    try:
        await _wait_drained(third.app[PUBLISHER])
        ids = await _stream_ids(settings.streams.redis_url, settings.keys.predictions())
        assert set(ids) == set(result.prediction_ids)
        assert max(ids.values()) == 1
    finally:
        await stop_third()


async def test_resending_a_block_is_skipped_by_redis(tmp_path, redis_server, key_prefix):
    client = aioredis.from_url(redis_server.url)
    keys = Keys(prefix=key_prefix)
    publisher = EventPublisher(client, keys, PublisherSettings(spool_dir=tmp_path), "inst-1")
    stream = keys.predictions()
    try:
        assert await publisher._append(stream, 7, ["p1", "p2"], [b"{}", b"{}"]) is True
        assert await publisher._append(stream, 7, ["p1", "p2"], [b"{}", b"{}"]) is False  # unknown outcome retried
        assert await publisher._append(stream, 6, ["p0"], [b"{}"]) is False  # older block
        assert await publisher._append(stream, 8, ["p3"], [b"{}"]) is True
        assert await client.xlen(stream) == 3
    finally:
        publisher.spool.close()
        await client.aclose()


def test_spool_truncates_a_torn_block_and_keeps_confirmed_offset(tmp_path: Path):
    path = tmp_path / "s.spool"
    spool = Spool(path)
    spool.append(1, "s", [b'{"a":1}', b'{"a":2}'], 2)
    spool.append(2, "s", [b'{"a":3}'], 2)
    spool.sync()
    first = spool.read(1)
    assert [b.seq for b in first] == [1]
    spool.confirm(first[0].end)
    spool.close()
    with path.open("ab") as fh:  # a crash in the middle of appending block 3
        fh.write(b'#B 3 s 2\n{"a":4}\n{"a"')
    reopened = Spool(path)
    blocks = reopened.read(100)
    assert [(b.seq, b.events) for b in blocks] == [(2, [b'{"a":3}'])]
    assert reopened.max_seq == 2
    reopened.confirm(blocks[-1].end)
    assert not reopened.pending
    assert path.stat().st_size == 0  # fully confirmed spools are truncated
    reopened.close()


def test_spool_has_one_owner(tmp_path: Path):
    spool = Spool(tmp_path / "s.spool")
    with pytest.raises(SpoolLockedError):
        Spool(tmp_path / "s.spool")
    spool.close()


async def test_sequence_numbers_are_never_reused_after_restart(tmp_path, redis_server, key_prefix):
    client = aioredis.from_url(redis_server.url)
    keys = Keys(prefix=key_prefix)
    try:
        first = EventPublisher(client, keys, PublisherSettings(spool_dir=tmp_path), "inst")
        taken = [first._seq.take() for _ in range(5)]
        first.spool.close()
        second = EventPublisher(client, keys, PublisherSettings(spool_dir=tmp_path), "inst")
        assert second._seq.take() > max(taken)
        second.spool.close()
    finally:
        await client.aclose()


async def test_graceful_stop_flushes_queued_events(tmp_path, redis_server, key_prefix, loaded_models):
    settings = api_settings(tmp_path, redis_server.url, key_prefix).replace(
        publish_interval_ms=3_600_000.0, publish_batch=100_000
    )
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    try:
        result = await simulate(client.url("/"), _requests(300, 47, {}), api_key="test-key", connections=4)
        queued = client.app[PUBLISHER].queue_depth
    finally:
        await stop()
    assert queued == 300  # nothing was written before the stop: long interval, huge batch
    ids = await _stream_ids(settings.streams.redis_url, settings.keys.predictions())
    assert set(ids) == set(result.prediction_ids)


async def test_a_spool_written_before_the_event_upgrade_replays_upgraded(
    tmp_path, redis_server, key_prefix, loaded_models
):
    """An API upgraded with blocks still in its spool: version 1 blocks (four-word headers, the stream's old name,
    flat events) land in the current stream as version 2 events, once each."""
    import msgspec

    from schemas.events import decode_event
    from tests.test_upgrade import as_v1
    from traffic.events import make_events

    settings = api_settings(tmp_path, redis_server.url, key_prefix)
    events = make_events(3, seed=48, engine=DecisionEngine(loaded_models))
    path = settings.publisher.spool_path(settings.api.instance_id)
    path.parent.mkdir(parents=True)
    lines = b"".join(msgspec.json.encode(as_v1(e)) + b"\n" for e in events)
    path.write_bytes(f"#B 1 {key_prefix}:predictions 3\n".encode() + lines)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    try:
        await _wait_drained(client.app[PUBLISHER])
    finally:
        await stop()
    redis = aioredis.from_url(redis_server.url)
    try:
        entries = [decode_entry(f) for _, f in await redis.xrange(settings.keys.predictions())]
    finally:
        await redis.aclose()
    assert [(e.version, e.record_id) for e in entries] == [(2, ev.prediction_id) for ev in events]
    assert [decode_event(e.version, e.payload) for e in entries] == [
        decode_event(1, msgspec.json.encode(as_v1(ev))) for ev in events
    ]
