"""The system on a real Redis Cluster (3 masters + 3 replicas on free ports): events land in hash-tagged shard
streams spread evenly over the masters, each exactly once; the consumer groups (three warehouse workers splitting
the shards by lease) land every decision once in DuckDB and MLflow, also when a master is SIGKILLed mid-traffic and
its replica takes over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.cluster import RedisCluster

from app.keys import PUBLISHER
from common.keys import decode_entry, slot_of
from common.redis_client import redis_for, redis_for_sync
from common.redis_server import RedisClusterServers
from consumers.status import node_of
from datagen import generate
from decision.engine import DecisionEngine
from tests.conftest import api_settings, start_api
from tests.streams import spawn_worker, wait_group_drained, worker_env
from traffic.http import simulate
from warehouse.duckdb_store import DuckDBWarehouse


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster")).start()
    yield servers
    servers.stop()


def _owner(client: RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    return f"{node.host}:{node.port}"


@pytest.mark.parametrize("shards", [1, 6])
async def test_api_publishes_every_decision_once_into_shards_spread_over_the_masters(
    cluster, shards, tmp_path: Path, key_prefix, loaded_models
):
    settings = api_settings(tmp_path, cluster.url, key_prefix, redis_cluster=True, stream_shards=shards)
    api, stop = await start_api(settings, DecisionEngine(loaded_models))
    data = generate(1_000, seed=shards)
    try:
        result = await simulate(api.url("/"), data.iter_requests(), api_key="test-key", connections=8)
    finally:
        await stop()  # the publisher drains on shutdown
    assert result.statuses == Counter({200: 1_000})
    client = redis_for_sync(settings.streams)  # what the CLI tools use: a cluster client here
    assert isinstance(client, RedisCluster)
    try:
        keys = settings.keys
        streams = keys.prediction_streams()
        ids = [decode_entry(f).record_id for s in streams for _, f in client.xrange(s)]
        owners = Counter(_owner(client, s) for s in streams)
        masters = {f"127.0.0.1:{m.port}" for m in cluster.masters()}
    finally:
        client.close()
    assert sorted(ids) == sorted(result.prediction_ids)  # Σ XLEN = 1,000, no id twice
    assert len({slot_of(s) for s in streams}) == shards
    if shards == 6:
        assert set(owners) == masters
        assert set(owners.values()) == {2}  # two shards on each of the three masters


# --- the whole pipeline on the cluster --------------------------------------------------------------------------
GROUPS = ("warehouse", "mlflow", "drift", "alert-sender")
DECISIONS = 5_000


def _pipeline_env(cluster_url: str, settings, tmp_path: Path, shards: int) -> dict[str, str]:
    return worker_env(
        cluster_url,
        settings.keys.prefix,
        tmp_path / "warehouse.duckdb",
        tmp_path / "data",
        BNPL_REDIS_CLUSTER="true",
        BNPL_STREAM_SHARDS=str(shards),
        BNPL_MLFLOW_WINDOW_S="3600",  # windows are logged at the end, all at once (below)
        BNPL_MLFLOW_LATENESS_S="3600",
    )


def _start_groups(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """Three warehouse workers and one worker of every other group, as separate processes."""
    return [spawn_worker(g, env) for g in ("warehouse", "warehouse", "warehouse", "mlflow", "drift", "alert-sender")]


async def _drained_everywhere(client, keys, seconds: float = 180) -> None:
    for stream in keys.prediction_streams():
        for group in GROUPS[:3]:
            await wait_group_drained(client, stream, group, seconds)


async def _arm_totals(settings) -> int:
    """Close every window (the MLflow group's own flush, as its workers run it) and add up the arm runs."""
    from consumers.mlflow_group import MlflowMetricsHandler
    from registry.store import mlflow_client

    client = redis_for(settings.streams, "tool")
    try:
        handler = MlflowMetricsHandler(settings.registry, settings.consumers, client, settings.keys)
        await handler.start()
        await handler.flush_closed_windows(now=time.time() + 10 * 86_400)
    finally:
        await client.aclose()
    mlflow = mlflow_client(settings.registry)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(experiments, filter_string="tags.`bnpl.kind` = 'arm-metrics'")
    return int(sum(m.value for r in runs for m in mlflow.get_metric_history(r.info.run_id, "requests")))


def _status_json(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bnpl_cli.main", "status", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, orjson.loads(proc.stdout)


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()


async def _run_pipeline(cluster: RedisClusterServers, shards: int, tmp_path: Path, settings, loaded_models, kill=None):
    """API + 3 warehouse workers + mlflow + drift + alert-sender on the cluster; 5,000 decisions; ``kill``: a
    coroutine run during the traffic (a master dies). Returns what the checks need."""
    env = _pipeline_env(cluster.url, settings, tmp_path, shards)
    workers = _start_groups(env)
    api, stop_api = await start_api(settings, DecisionEngine(loaded_models))
    data = generate(DECISIONS, seed=shards)
    metrics: list[str] = []
    try:
        traffic = asyncio.create_task(simulate(api.url("/"), data.iter_requests(), api_key="test-key", connections=8))
        if kill is not None:
            metrics = await kill(api)
        result = await traffic
        await _until_spool_drained(api.app[PUBLISHER])
        if kill is not None:
            async with api.session.get(api.url("/metrics")) as resp:
                metrics.append(await resp.text())
    finally:
        await stop_api()
    client = redis_for(settings.streams, "tool")
    try:
        await _drained_everywhere(client, settings.keys)
        status_code, status = _status_json(env)
        _stop(workers)
        streams = settings.keys.prediction_streams()
        ids = [decode_entry(f).record_id for s in streams for _, f in await client.xrange(s)]
        owners = Counter(node_of(client, s) for s in streams)
    finally:
        await client.aclose()
    return result, ids, owners, status_code, status, metrics


async def _until_spool_drained(publisher: Any, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while publisher.spool.pending and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a file-backed spool
        await asyncio.sleep(0.2)


def _check_counts(result, ids, status_code, status, tmp_path: Path) -> None:
    assert result.statuses == Counter({200: DECISIONS})
    assert len(ids) == DECISIONS  # Σ XLEN
    assert sorted(ids) == sorted(result.prediction_ids)  # every answered decision, none twice
    assert [s["dead_letters"] for s in status["streams"]] == [0] * len(status["streams"]), status
    count, distinct = DuckDBWarehouse(tmp_path / "warehouse.duckdb").query(
        "SELECT count(*), count(DISTINCT prediction_id) FROM prediction_logs"
    )[0]
    assert count == distinct == DECISIONS
    # Only a group this test never starts may be flagged (the outage alert waits for an alert sender, for one).
    flagged = [
        (s["stream"], g["name"]) for s in status["streams"] for g in s["groups"] if g["stuck"] or g["unattended"]
    ]
    assert all(g["created"] is False for s in status["streams"] for g in s["groups"] if g["unattended"]), flagged
    assert status_code == (1 if flagged else 0), flagged
    rows = [(s["stream"], g["name"], g["lag"], g["pending"]) for s in status["streams"] for g in s["groups"]]
    prediction_rows = [r for r in rows if ":predictions:" in r[0]]
    assert {(r[1]) for r in prediction_rows} == set(GROUPS[:3])
    assert all(lag == 0 and pending == 0 for _, _, lag, pending in prediction_rows), rows


@pytest.mark.parametrize("shards", [1, 6])
async def test_the_whole_pipeline_on_the_cluster_lands_every_decision_once(
    cluster, shards, tmp_path: Path, key_prefix, registry_copy, loaded_models
):
    settings = api_settings(tmp_path, cluster.url, key_prefix, redis_cluster=True, stream_shards=shards)
    run = await _run_pipeline(cluster, shards, tmp_path, settings, loaded_models)
    result, ids, owners, status_code, status, _ = run
    _check_counts(result, ids, status_code, status, tmp_path)
    assert await _arm_totals(settings) == DECISIONS
    if shards == 6:
        assert set(owners) == {f"127.0.0.1:{m.port}" for m in cluster.masters()}  # every master owns shards
    warehouse_holders = {
        g["holder"]
        for s in status["streams"]
        for g in s["groups"]
        if ":predictions:" in s["stream"] and g["name"] == "warehouse"
    }
    assert len(warehouse_holders) == min(shards, 3)  # the three warehouse workers split the shards


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A cluster of this test alone (it kills a master)."""
    servers = RedisClusterServers(tmp_path / "cluster").start()
    yield servers
    servers.stop()


async def test_a_master_killed_during_the_traffic_loses_and_duplicates_nothing(
    own_cluster, tmp_path: Path, key_prefix, registry_copy, loaded_models
):
    shards = 6
    settings = api_settings(tmp_path, own_cluster.url, key_prefix, redis_cluster=True, stream_shards=shards)
    seed_port = own_cluster.nodes[0].port
    victim = next(m for m in own_cluster.masters() if m.port != seed_port)

    async def kill_a_master(api) -> list[str]:
        await asyncio.sleep(2.0)  # traffic is flowing
        victim.kill()
        deadline = time.monotonic() + 30
        while True:  # the API notices: its writes to that master fail, it spools
            async with api.session.get(api.url("/metrics")) as resp:
                during = await resp.text()
            if _metric(during, "bnpl_event_write_failures") > 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(own_cluster.wait_failed_over, 60)  # its replica is promoted
        return [during]

    result, ids, _, status_code, status, metrics = await _run_pipeline(
        own_cluster, shards, tmp_path, settings, loaded_models, kill=kill_a_master
    )
    _check_counts(result, ids, status_code, status, tmp_path)
    assert await _arm_totals(settings) == DECISIONS
    during, after = metrics
    assert _metric(during, "bnpl_event_write_failures") > 0
    assert 1 <= _metric(during, "bnpl_spooled_shards") <= 2  # the dead master's shards only: the other 4 wrote on
    assert _metric(after, "bnpl_redis_ok") == 1
    assert _metric(after, "bnpl_spooled_shards") == 0


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split("{")[0].split(" ")[0] in (name, name + "_total"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_with_wait_a_block_counts_as_written_only_once_a_replica_acknowledged_it(
    cluster, tmp_path: Path, key_prefix, loaded_models
):
    engine = DecisionEngine(loaded_models)
    # One replica per master: WAIT 1 is met, every decision lands once.
    settings = api_settings(
        tmp_path / "one", cluster.url, key_prefix, redis_cluster=True, stream_shards=6, publish_wait_replicas=1
    )
    api, stop = await start_api(settings, engine)
    try:
        result = await simulate(api.url("/"), generate(1_000, seed=3).iter_requests(), api_key="test-key")
        publisher = api.app[PUBLISHER]
        await _until_spool_drained(publisher)
        while publisher.queue_depth:  # noqa: ASYNC110 - the flusher empties the in-memory queue
            await asyncio.sleep(0.05)
        assert publisher.stats.write_failures == 0
    finally:
        await stop()
    client = redis_for(settings.streams, "tool")
    try:
        ids = [decode_entry(f).record_id for s in settings.keys.prediction_streams() for _, f in await client.xrange(s)]
    finally:
        await client.aclose()
    assert sorted(ids) == sorted(result.prediction_ids)
    # Two replicas asked for, one exists: no block counts as written; every one waits in the spool to be re-sent.
    settings = api_settings(
        tmp_path / "two",
        cluster.url,
        key_prefix + "-two",
        redis_cluster=True,
        stream_shards=6,
        publish_wait_replicas=2,
        publish_wait_ms=20,
    )
    api, stop = await start_api(settings, engine)
    try:
        result = await simulate(api.url("/"), generate(300, seed=4).iter_requests(), api_key="test-key")
        assert result.statuses == Counter({200: 300})  # answers never wait for Redis
        publisher = api.app[PUBLISHER]
        while publisher.queue_depth:  # noqa: ASYNC110 - the flusher empties the in-memory queue
            await asyncio.sleep(0.05)
        assert publisher.stats.published == 0
        assert publisher.stats.write_failures > 0
        assert publisher.spool.pending
        assert not publisher.health().ok
    finally:
        await stop()
