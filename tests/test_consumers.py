"""The consumer-group runtime and the warehouse group with a real redis-server and a real DuckDB file."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from common.keys import Keys, decode_entry
from common.settings import ConsumerSettings
from consumers.base import BatchResult, Entry
from consumers.runtime import ConsumerWorker
from consumers.status import collect, healthy
from consumers.trim import trim_stream
from consumers.warehouse import WarehouseHandler
from tests.streams import (
    QuietHandler,
    add_events,
    kill_workers_mid_batch,
    make_events,
    spawn_worker,
    wait_group_drained,
    worker_env,
)
from warehouse.duckdb_store import DuckDBWarehouse

FAST = ConsumerSettings(
    batch_size=1_000,
    max_wait_s=0.3,
    block_ms=100,
    claim_idle_ms=500,
    claim_every_s=0.3,
    max_deliveries=3,
    trim_every_s=3_600,
    max_backoff_s=2.0,
)


@pytest.fixture
async def redis(redis_server):
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _ids_in_warehouse(path: Path) -> list[str]:
    return [r[0] for r in DuckDBWarehouse(path).query("SELECT prediction_id FROM prediction_logs")]


async def _run_until_drained(worker: ConsumerWorker, redis, stream: str, seconds: float = 120.0) -> None:
    task = asyncio.create_task(worker.run())
    try:
        await wait_group_drained(redis, stream, worker.group, seconds)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def test_warehouse_group_lands_each_event_once_even_when_redelivered(tmp_path, redis, key_prefix):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(3_000, seed=1)
    await add_events(redis, stream, events)
    await add_events(redis, stream, events[:500])  # the same events published twice
    path = tmp_path / "wh.duckdb"
    worker = ConsumerWorker(redis, keys, WarehouseHandler(DuckDBWarehouse(path), keys), FAST, name="w1")
    await _run_until_drained(worker, redis, stream)
    ids = _ids_in_warehouse(path)
    assert sorted(ids) == sorted(e.prediction_id for e in events)
    assert worker.stats.processed == 3_500
    rows = DuckDBWarehouse(path).query(
        "SELECT customer_id, business_decision, selected_model, amount, json_extract(risk_thresholds, '$') "
        "FROM prediction_logs WHERE prediction_id = ?",
        [events[0].prediction_id],
    )
    assert rows[0][:3] == (events[0].request.customer_id, events[0].decision.business_decision, "rules")


class _FlakyWarehouse(DuckDBWarehouse):
    """The real DuckDB warehouse, unreachable for the first ``down_s`` seconds."""

    def __init__(self, path: Path, down_s: float) -> None:
        super().__init__(path)
        self.until = time.monotonic() + down_s
        self.failures = 0

    def _check(self) -> None:
        if time.monotonic() < self.until:
            self.failures += 1
            raise ConnectionError("warehouse unavailable")

    def insert_events(self, payloads):
        self._check()
        return super().insert_events(payloads)


async def test_warehouse_down_for_30s_retries_and_loses_nothing(tmp_path, redis, key_prefix):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(5_000, seed=2)
    await add_events(redis, stream, events)
    flaky = _FlakyWarehouse(tmp_path / "wh.duckdb", down_s=30.0)
    worker = ConsumerWorker(redis, keys, WarehouseHandler(flaky, keys), FAST, name="w1")
    started = time.monotonic()
    await _run_until_drained(worker, redis, stream, seconds=120)
    assert time.monotonic() - started >= 30
    assert flaky.failures >= 5
    assert worker.stats.retries == flaky.failures
    ids = _ids_in_warehouse(tmp_path / "wh.duckdb")
    assert len(ids) == len(set(ids)) == 5_000


async def test_poison_event_is_dead_lettered_while_the_rest_flow(tmp_path, redis, key_prefix):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(2_000, seed=3)
    await add_events(redis, stream, events, poison_at={777})
    worker = ConsumerWorker(
        redis, keys, WarehouseHandler(DuckDBWarehouse(tmp_path / "wh.duckdb"), keys), FAST, name="w"
    )
    await _run_until_drained(worker, redis, stream, seconds=60)
    ids = set(_ids_in_warehouse(tmp_path / "wh.duckdb"))
    assert len(ids) == 1_999
    assert events[777].prediction_id not in ids
    dead = await redis.xrange(keys.dead_letter(stream))
    assert len(dead) == 1
    fields = dead[0][1]
    assert decode_entry(fields).record_id == events[777].prediction_id
    assert b"malformed JSON" in fields[b"error"]
    assert int(fields[b"deliveries"]) >= FAST.max_deliveries
    assert worker.stats.dead_lettered == 1


async def test_sigkill_workers_mid_batch_five_times_every_event_once(tmp_path, redis_server, redis, key_prefix):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(20_000, seed=4)
    await add_events(redis, stream, events)
    path = tmp_path / "wh.duckdb"
    env = worker_env(redis_server.url, key_prefix, path, tmp_path / "data", BNPL_CONSUMER_BATCH="1000")
    await kill_workers_mid_batch(redis, stream, "warehouse", env, kills=5)
    ids = _ids_in_warehouse(path)
    assert len(ids) == len(set(ids)) == 20_000
    assert set(ids) == {e.prediction_id for e in events}


class _Recorder(QuietHandler):
    """A second group that only records what it saw (and can be stopped)."""

    group = "audit"

    def __init__(self, keys: Keys) -> None:
        self.seen: list[str] = []
        self.streams = keys.prediction_streams()

    async def handle(self, entries: list[Entry]) -> BatchResult:
        self.seen += [e.id for e in entries]
        return BatchResult()


async def test_trimming_keeps_what_a_stopped_group_has_not_acked(tmp_path, redis, key_prefix):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(1_000, seed=6)
    ids = await add_events(redis, stream, events)
    audit = ConsumerWorker(redis, keys, _Recorder(keys), FAST, name="a1")
    await audit.ensure_groups()  # the audit group exists but is stopped
    warehouse = ConsumerWorker(
        redis, keys, WarehouseHandler(DuckDBWarehouse(tmp_path / "w.duckdb"), keys), FAST, name="w"
    )
    await _run_until_drained(warehouse, redis, stream)

    result = await trim_stream(redis, stream, retention_ms=0, approximate=False)
    assert result.removed == 0  # the audit group has acked nothing
    assert await redis.xlen(stream) == 1_000

    # The audit group reads and acks the first 400 only: exactly those may go.
    reply = await redis.xreadgroup("audit", "a1", {stream: ">"}, count=400)
    await redis.xack(stream, "audit", *[entry_id for entry_id, _ in reply[0][1]])
    result = await trim_stream(redis, stream, retention_ms=0, approximate=False)
    assert result.removed == 400
    remaining = [e[0].decode() for e in await redis.xrange(stream)]
    assert remaining == ids[400:]

    await _run_until_drained(audit, redis, stream)
    result = await trim_stream(redis, stream, retention_ms=0, approximate=False)
    assert await redis.xlen(stream) == 0
    # With the default 30-day retention nothing young is trimmed even when everyone acked it.
    await add_events(redis, stream, make_events(10, seed=7))
    assert (await trim_stream(redis, stream, retention_ms=30 * 86_400_000, approximate=False)).removed == 0


async def test_status_reports_a_stopped_group_as_stuck(tmp_path, redis_server, redis, key_prefix):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    await add_events(redis, stream, make_events(200, seed=8))
    await redis.xgroup_create(stream, "warehouse", id="0", mkstream=True)
    only = {"warehouse": [stream]}  # the other groups' absence is the next test's subject
    streams = await collect(redis, keys, expected=only)
    (group,) = streams[0].groups
    assert group.stuck
    assert "no consumer is alive" in group.reason
    assert not healthy(streams)

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bnpl_cli.main",
        "status",
        env={**os.environ, "BNPL_REDIS_URL": redis_server.url, "BNPL_KEY_PREFIX": key_prefix},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 1
    assert b"STUCK" in out

    worker = ConsumerWorker(redis, keys, WarehouseHandler(DuckDBWarehouse(tmp_path / "w.duckdb"), keys), FAST, name="w")
    task = asyncio.create_task(worker.run())
    try:
        await wait_group_drained(redis, stream, "warehouse")
        streams = await collect(redis, keys, expected=only)
        assert healthy(streams)
        assert streams[0].groups[0].live_consumers == 1
    finally:
        worker.request_stop()
        await task
    # Drained, and its only worker gone: nothing waits yet, but the next event would; flagged, exit code 1.
    (group,) = (await collect(redis, keys, expected=only))[0].groups
    assert not group.stuck
    assert group.unattended
    assert "no live consumer" in group.reason
    assert not healthy(await collect(redis, keys, expected=only))


async def test_status_lists_every_stream_and_group_and_its_json_follows_the_schema(redis_server, redis, key_prefix):
    """Every stream (each prediction shard, alerts, outcomes) with its dead-letter stream; every group that reads it,
    including one never started (flagged only when entries wait for it); ``--json`` valid against ``--schema``."""
    import jsonschema

    keys = Keys(key_prefix, 2)
    first, second = keys.prediction_streams()
    await add_events(redis, first, make_events(20, seed=3))
    await redis.xgroup_create(first, "warehouse", id="0", mkstream=True)
    env = {**os.environ, "BNPL_REDIS_URL": redis_server.url, "BNPL_KEY_PREFIX": key_prefix, "BNPL_STREAM_SHARDS": "2"}

    def bnpl(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "bnpl_cli.main", "status", *args], env=env, capture_output=True, text=True
        )
        return done.returncode, done.stdout

    code, out = bnpl("--json")
    assert code == 1  # events wait for groups nobody started
    document = orjson.loads(out)
    schema_code, schema = bnpl("--schema")
    assert schema_code == 0
    jsonschema.validate(document, orjson.loads(schema))
    by_stream = {s["stream"]: s for s in document["streams"]}
    assert list(by_stream) == [first, second, keys.alerts(), keys.outcomes()]
    assert by_stream[first]["dead_letter_stream"] == keys.dead_letter(first)
    groups = {s: {g["name"]: g for g in by_stream[s]["groups"]} for s in by_stream}
    assert set(groups[first]) == set(groups[second]) == {"warehouse", "mlflow", "drift"}
    assert set(groups[keys.alerts()]) == {"alert-sender"}
    assert set(groups[keys.outcomes()]) == {"outcomes"}
    assert groups[first]["warehouse"]["created"]
    assert groups[first]["warehouse"]["stuck"]
    assert groups[first]["warehouse"]["oldest_age_s"] >= 0  # 20 events wait: the age of the first of them
    assert groups[second]["warehouse"]["oldest_age_s"] is None  # nothing waits (not created there)
    assert not groups[first]["mlflow"]["created"]
    assert groups[first]["mlflow"]["unattended"]
    assert groups[first]["mlflow"]["lag"] == 20
    assert not groups[second]["drift"]["created"]
    assert not groups[second]["drift"]["unattended"]
    code, text_out = bnpl()
    assert "group mlflow: UNATTENDED (not created" in text_out
    assert f"dead letters 0 in {keys.dead_letter(keys.alerts())}" in text_out
    broken = {**document, "streams": [{**document["streams"][0], "length": "many"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, orjson.loads(schema))


async def _add_fresh(url: str, stream: str, events) -> None:
    """Publish with a client of its own (a test's connection does not survive the restarts either)."""
    client = aioredis.from_url(url)
    try:
        await add_events(client, stream, events)
    finally:
        await client.aclose()


async def test_redis_restarted_under_a_running_group_it_resumes_and_lands_each_row_once(
    tmp_path, dedicated_redis, key_prefix
):
    """Redis goes away twice while the warehouse group works (kill -9, then a graceful restart); the worker never
    exits, reconnects by itself and every event lands exactly once."""
    redis = aioredis.from_url(dedicated_redis.url)
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(9_000, seed=9)
    path = tmp_path / "wh.duckdb"
    worker = ConsumerWorker(redis, keys, WarehouseHandler(DuckDBWarehouse(path), keys), FAST, name="w1")
    task = asyncio.create_task(worker.run())
    try:
        await _add_fresh(dedicated_redis.url, stream, events[:3_000])
        for _ in range(200):  # let it work on the first part
            if worker.stats.processed:
                break
            await asyncio.sleep(0.05)
        dedicated_redis.kill()
        await asyncio.sleep(2.0)
        dedicated_redis.start()
        await _add_fresh(dedicated_redis.url, stream, events[3_000:6_000])
        await asyncio.sleep(0.5)
        dedicated_redis.stop()
        await asyncio.sleep(1.0)
        dedicated_redis.start()
        await _add_fresh(dedicated_redis.url, stream, events[6_000:])
        checker = aioredis.from_url(dedicated_redis.url)
        try:
            await wait_group_drained(checker, stream, "warehouse", seconds=120)
        finally:
            await checker.aclose()
        assert not task.done()  # it healed; nobody restarted it
        assert worker.stats.redis_errors >= 2
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
        await redis.aclose()
    ids = _ids_in_warehouse(path)
    assert len(ids) == len(set(ids)) == 9_000


def _check(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-m", "bnpl_cli.main", "consume", "warehouse", "--check"],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    ).returncode


async def test_a_killed_worker_of_a_supervised_group_is_restarted_and_check_fails_meanwhile(
    tmp_path, redis_server, redis, key_prefix
):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(6_000, seed=10)
    path = tmp_path / "wh.duckdb"
    env = worker_env(redis_server.url, key_prefix, path, tmp_path / "data")
    supervisor = spawn_worker("warehouse", env, "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while _check(env) != 0:
            assert time.monotonic() < deadline, "the supervised workers never became healthy"
            await asyncio.sleep(0.5)
        (key,) = [k async for k in redis.scan_iter(match=keys.supervisor_pattern("warehouse", socket.gethostname()))]
        first = orjson.loads(await redis.get(key))["children"]
        await add_events(redis, stream, events[:3_000])
        os.kill(first[0]["pid"], signal.SIGKILL)
        assert _check(env) == 1  # one child is gone: unhealthy until it is back and beating
        deadline = time.monotonic() + 60
        while _check(env) != 0:
            assert time.monotonic() < deadline, "the killed worker was not restarted"
            await asyncio.sleep(0.5)
        now = orjson.loads(await redis.get(key))["children"]
        assert now[0]["pid"] != first[0]["pid"]
        assert now[0]["restarts"] == 1
        assert now[1]["pid"] == first[1]["pid"]
        await add_events(redis, stream, events[3_000:])
        await wait_group_drained(redis, stream, "warehouse", seconds=120)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    ids = _ids_in_warehouse(path)
    assert len(ids) == len(set(ids)) == 6_000


async def test_trimming_reports_only_groups_with_old_work_waiting(redis, key_prefix):
    """An idle stream whose groups acked everything long ago is healthy (no "older than the retention" error); a
    group with old entries still to read is reported, and keeps them."""
    stream = Keys(key_prefix).predictions()
    for i in range(1, 4):  # entries from 1970: far behind any retention
        await redis.xadd(stream, {"v": 1}, id=f"{1000 + i}-0")
    for group in ("done", "behind"):
        await redis.xgroup_create(stream, group, id="0")
    reply = await redis.xreadgroup("done", "c", {stream: ">"})
    await redis.xack(stream, "done", *[entry_id for entry_id, _ in reply[0][1]])
    first = await redis.xreadgroup("behind", "c", {stream: ">"}, count=1)  # one pending, two not delivered
    result = await trim_stream(redis, stream, retention_ms=3_600_000, approximate=False)
    assert result.overdue_groups == ("behind",)
    assert await redis.xlen(stream) == 3  # nothing "behind" needs was removed
    rest = await redis.xreadgroup("behind", "c", {stream: ">"})
    await redis.xack(stream, "behind", *[e for e, _ in first[0][1]], *[e for e, _ in rest[0][1]])
    result = await trim_stream(redis, stream, retention_ms=3_600_000, approximate=False)
    assert result.overdue_groups == ()  # both groups are done: an idle stream raises no error
    assert await redis.xlen(stream) == 0


class _AcksRightAfterLooking:
    """A real client whose ``XINFO GROUPS`` answer is followed at once by the group acking what it had pending —
    another worker finishing its batch between the trimmer's two calls."""

    def __init__(self, redis, group: str) -> None:
        self._redis, self._group = redis, group

    async def xinfo_groups(self, stream: str):
        rows = await self._redis.xinfo_groups(stream)
        pending = await self._redis.xpending_range(stream, self._group, "-", "+", 1_000)
        await self._redis.xack(stream, self._group, *[p["message_id"] for p in pending])
        return rows

    def __getattr__(self, name: str):
        return getattr(self._redis, name)


async def test_trimming_survives_pending_entries_acked_between_its_calls(redis, key_prefix):
    """The group had entries pending when the trimmer looked and acked them before it asked for the oldest one (no
    ``min`` then): the trimmer falls back to the group's last-delivered id instead of failing the worker."""
    stream = Keys(key_prefix).predictions()
    for i in range(1, 6):
        await redis.xadd(stream, {"v": 1}, id=f"{1000 + i}-0")
    await redis.xgroup_create(stream, "g", id="0")
    await redis.xreadgroup("g", "c", {stream: ">"}, count=3)  # 3 pending, 2 not delivered
    result = await trim_stream(_AcksRightAfterLooking(redis, "g"), stream, retention_ms=0, approximate=False)
    assert result.safe_min_id == "1003-1"  # right after the last delivered: what the group still needs
    assert [e for e, _ in await redis.xrange(stream)] == [b"1004-0", b"1005-0"]
    assert result.overdue_groups == ("g",)  # two entries still wait for it
