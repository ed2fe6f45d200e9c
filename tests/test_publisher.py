"""Event publishing under faults, with a real redis-server that is killed and restarted: nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from app.keys import PUBLISHER
from common.keys import Keys, decode_entry
from common.settings import PublisherSettings
from datagen import generate
from decision.engine import DecisionEngine
from producers.publisher import EventPublisher
from producers.spool import Spool, SpoolLockedError
from schemas.codec import decompress
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
        assert await publisher._append_blocks(stream, [(7, "p1\np2\n", [b"{}", b"[]"])]) == (2, 0)
        assert await publisher._append_blocks(stream, [(7, "p1\np2\n", [b"{}", b"[]"])]) == (0, 2)  # outcome unknown
        assert await publisher._append_blocks(stream, [(6, "p0\n", [b"{}"])]) == (0, 1)  # older block
        # Several blocks in one call (a replay): those Redis has are skipped, the rest written.
        assert await publisher._append_blocks(stream, [(7, "p1\n", [b"{}"]), (8, "p3\n", [b"1"])]) == (1, 1)
        entries = [decode_entry(f) for _, f in await client.xrange(stream)]
        assert [(e.record_id, decompress(e.codec, e.payload)) for e in entries] == [
            ("p1", b"{}"),
            ("p2", b"[]"),
            ("p3", b"1"),
        ]
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

    from schemas.codec import decompress
    from schemas.events import decode_event
    from traffic.events import as_v1, make_events

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
    assert [decode_event(e.version, decompress(e.codec, e.payload)) for e in entries] == [
        decode_event(1, msgspec.json.encode(as_v1(ev))) for ev in events
    ]


async def _post_batches(client, requests: list[dict], size: int = 500) -> list[str]:
    """Decide ``requests`` through the batch endpoint; returns the prediction ids answered (all must be 200)."""
    import orjson

    ids: list[str] = []
    url = client.url("/v1/bnpl/risk-assessment/batch")
    headers = {"X-API-Key": "test-key", "Content-Type": "application/json"}
    for start in range(0, len(requests), size):
        body = orjson.dumps({"requests": requests[start : start + size]})
        async with client.session.post(url, data=body, headers=headers) as r:
            assert r.status == 200
            ids += [x["prediction_id"] for x in (await r.json())["results"]]
    return ids


async def _readyz(client) -> tuple[int, dict]:
    async with client.session.get(client.url("/readyz?strict=1"), headers={"X-API-Key": "test-key"}) as r:
        return r.status, await r.json()


async def test_redis_out_of_memory_then_freed_every_decision_lands_exactly_once(
    tmp_path, dedicated_redis, key_prefix, loaded_models
):
    """Redis full (noeviction): every decision is still answered, /readyz says degraded, and once memory is freed
    the spool replays by itself: each answered decision in the stream once, nothing left spooled, one alert."""
    admin = aioredis.from_url(dedicated_redis.url)
    used = int((await admin.info("memory"))["used_memory"])
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", str(used + 300_000))  # room for about a thousand (compressed) events
    settings = api_settings(tmp_path, dedicated_redis.url, key_prefix, publish_batch=200, stall_s=1.0)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    data = generate(6_000, seed=49)
    try:
        ids = await _post_batches(client, [data.request(i) for i in range(len(data))])
        publisher = client.app[PUBLISHER]
        assert publisher.stats.spooled > 3_000  # Redis refused most of them
        status, body = await _readyz(client)
        assert status == 503
        assert body["status"] == "degraded"
        assert any("OutOfMemoryError" in reason for reason in body["reasons"])
        assert "OutOfMemoryError" in body["detail"]["publish_error"]

        await admin.config_set("maxmemory", "0")  # the operator frees memory: nothing else is done
        await _wait_drained(publisher, seconds=60)
        keys = settings.keys
        for _ in range(100):  # the outage alert follows the drained spool
            if await admin.exists(keys.alerts()):
                break
            await asyncio.sleep(0.1)
        status, body = await _readyz(client)
        assert (status, body["status"]) == (200, "ready")
        assert not publisher.spool.pending
    finally:
        await stop()
    in_stream = await _stream_ids(dedicated_redis.url, keys.predictions())
    assert len(ids) == 6_000
    assert set(in_stream) == set(ids)
    assert max(in_stream.values()) == 1
    alerts = [msgspec.json.decode(decode_entry(f).payload) for _, f in await admin.xrange(keys.alerts())]
    await admin.aclose()
    assert [a["kind"] for a in alerts] == ["events_delayed"]
    assert "OutOfMemoryError" in alerts[0]["message"]


def _serve(tmp_path: Path, redis_url: str, key_prefix: str):
    import subprocess
    import sys

    from common.redis_server import free_port

    port = free_port()
    env = {
        "BNPL_REDIS_URL": redis_url,
        "BNPL_API_KEYS": "test-key",
        "BNPL_KEY_PREFIX": key_prefix,
        "BNPL_SPOOL_DIR": str(tmp_path / "spool"),
        "BNPL_INSTANCE_ID": "killed-api",
        "BNPL_DATA_DIR": str(tmp_path / "data"),  # an empty registry: the rule-based fallback decides
        "BNPL_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnpl_cli.main", "serve"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from common.processes import wait_http

    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


async def test_api_killed_while_redis_is_full_loses_nothing(tmp_path, dedicated_redis, key_prefix):
    admin = aioredis.from_url(dedicated_redis.url)
    try:
        ids = await _decide_until_killed(tmp_path, dedicated_redis.url, key_prefix, admin)
        keys = Keys(key_prefix)
        assert len(ids) == 4_000
        assert await admin.xlen(keys.predictions()) < 4_000  # most decisions were only in the spool
        await admin.config_set("maxmemory", "0")
        proc, _ = _serve(tmp_path, dedicated_redis.url, key_prefix)  # same instance id: same spool
        try:
            for _ in range(300):
                if await admin.xlen(keys.predictions()) >= 4_000:
                    break
                await asyncio.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    finally:
        await admin.aclose()
    in_stream = await _stream_ids(dedicated_redis.url, keys.predictions())
    assert set(in_stream) == set(ids)
    assert max(in_stream.values()) == 1
    spool = Spool(tmp_path / "spool" / "killed-api.spool")
    assert not spool.pending  # replayed, then truncated
    spool.close()


async def _decide_until_killed(tmp_path: Path, redis_url: str, key_prefix: str, admin) -> list[str]:
    """Fill Redis, decide 4,000 requests through a `bnpl serve` process, check it is blocked, then kill -9 it."""
    import aiohttp
    import orjson

    used = int((await admin.info("memory"))["used_memory"])
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", str(used + 150_000))
    proc, port = _serve(tmp_path, redis_url, key_prefix)
    data = generate(4_000, seed=50)
    ids: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/bnpl/risk-assessment/batch"
            headers = {"X-API-Key": "test-key", "Content-Type": "application/json"}
            for start in range(0, len(data), 400):
                body = orjson.dumps({"requests": [data.request(i) for i in range(start, start + 400)]})
                async with session.post(url, data=body, headers=headers) as r:
                    assert r.status == 200
                    ids += [x["prediction_id"] for x in (await r.json())["results"]]
            readyz = f"http://127.0.0.1:{port}/readyz?strict=1"
            async with session.get(readyz, headers={"X-API-Key": "test-key"}) as r:
                assert r.status == 503  # blocked: events are being spooled, not written
                assert "OutOfMemoryError" in (await r.json())["detail"]["publish_error"]
    finally:
        proc.send_signal(signal.SIGKILL)  # while Redis still refuses writes
        proc.wait()
    return ids


async def test_a_failing_shard_spools_alone_and_the_others_keep_writing(
    tmp_path, redis_server, key_prefix, loaded_models
):
    """One shard's stream refuses writes (a plain string sits at its key: WRONGTYPE, as a master failing over refuses
    them): only that shard's events are spooled, the other shards' events reach Redis directly; once the key is
    fixed, the spool replays and every decision is in its shard exactly once."""
    shards = 4
    settings = api_settings(tmp_path, redis_server.url, key_prefix, stream_shards=shards)
    keys = settings.keys
    broken = keys.predictions(2)
    redis = aioredis.from_url(redis_server.url)
    await redis.set(broken, "not a stream")
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    try:
        data = generate(2_000, seed=43)
        result = await simulate(client.url("/"), data.iter_requests(), api_key="test-key", connections=8)
        assert result.statuses == Counter({200: 2_000})
        publisher = client.app[PUBLISHER]
        for _ in range(400):  # the flusher writes or spools every event
            if publisher.stats.published + publisher.stats.spooled == 2_000:
                break
            await asyncio.sleep(0.05)
        assert publisher.spooled_stream_names == [broken]  # the failing shard alone
        assert not publisher.redis_ok
        direct = {s: await redis.xlen(s) for s in keys.prediction_streams() if s != broken}
        expected = Counter(keys.shard_of(data.request(i)["customer_id"]) for i in range(2_000))
        assert direct == {keys.predictions(s): n for s, n in expected.items() if keys.predictions(s) != broken}
        await redis.delete(broken)  # the shard takes writes again
        await _wait_drained(publisher)
        ids: Counter[str] = Counter()
        for stream in keys.prediction_streams():
            ids += await _stream_ids(redis_server.url, stream)
        assert set(ids) == set(result.prediction_ids)
        assert max(ids.values()) == 1
        assert publisher.stats.spooled == expected[2]  # exactly the failing shard's events went to the spool
    finally:
        await stop()
        await redis.aclose()
