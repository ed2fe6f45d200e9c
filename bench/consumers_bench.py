"""``make bench-consumers``: events/s of the warehouse group (into DuckDB, and into BigQuery load jobs against the
HTTP-level fake, with its batch sizes) and of the drift group — on one
redis-server with 1 worker / 1 shard and 2 workers / 2 shards, then on a private Redis Cluster (3 masters + 3
replicas) with 1 shard / 1 worker and 3 shards / 3 workers. A group's workers split the shard streams (one reader
per shard), so workers beyond the shard count would only stand by: each run has as many shards as workers.

Puts the same generated prediction events (decided by the registry's champion and challenger, so every event
carries two model scores) on fresh shard streams for each run, starts ``bnpl consume <group> --workers N`` and
times from the first read until the group has acked everything on every shard.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import processes
from common.keys import Keys
from common.redis_client import connect
from common.redis_server import RedisClusterServers, RedisServer
from common.settings import Settings
from schemas.events import PredictionEvent
from traffic.events import add_events, make_events

BENCH = Settings.from_env().bench
EVENTS = BENCH.bench_events
GROUPS = BENCH.bench_groups


#: The BigQuery runs: the warehouse group on BigQuery load jobs against the HTTP-level fake (``tests/fakes``). Full
#: batches of ``BNPL_BQ_BATCH_ROWS``; the age bound is lowered so the last, partial batch of the run closes soon.
BQ_DATASET = "bnpl_bench"
BQ_BATCH_MAX_S = "2"


async def _run(
    redis_url: str,
    work: Path,
    events: list[PredictionEvent],
    group: str,
    workers: int,
    cluster: bool,
    bigquery: Any = None,
) -> tuple[float, int]:
    prefix = f"bench{group}{workers}w{'c' if cluster else ''}{'bq' if bigquery is not None else ''}"
    keys = Keys(prefix, shards=workers)
    redis = connect(redis_url, cluster=cluster)
    try:
        by_shard: dict[str, list[PredictionEvent]] = {}
        for event in events:
            by_shard.setdefault(keys.predictions(keys.shard_of(event.request.customer_id)), []).append(event)
        for stream, shard_events in by_shard.items():
            await add_events(redis, stream, shard_events)
        env = {
            "BNPL_REDIS_URL": redis_url,
            "BNPL_REDIS_CLUSTER": "true" if cluster else "false",
            "BNPL_STREAM_SHARDS": str(workers),
            "BNPL_KEY_PREFIX": prefix,
            "BNPL_DATA_DIR": str(work),
            "BNPL_DUCKDB_PATH": str(work / f"{prefix}.duckdb"),
            "BNPL_CONSUMER_BATCH": "10000",
            "BNPL_CONSUMER_WAIT_S": "1",
        }
        if bigquery is not None:
            env |= {
                "BNPL_WAREHOUSE": "bigquery",
                "BNPL_BQ_PROJECT": "bench",
                "BNPL_BQ_DATASET": BQ_DATASET,
                "BNPL_BQ_ENDPOINT": bigquery.endpoint,
                "BNPL_BQ_BATCH_MAX_S": BQ_BATCH_MAX_S,
            }
        proc = processes.start(
            [str(processes.BIN / "bnpl"), "consume", group, "--workers", str(workers)],
            env,
            work / f"{prefix}.log",
        )
        started = None
        deadline = time.monotonic() + 600
        try:
            while True:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{group} did not finish; see {work / f'{prefix}.log'}")
                states = [await _group_state(redis, stream, group) for stream in by_shard]
                if started is None and any(int(g.get("entries-read") or 0) > 0 for g in states if g):
                    started = time.perf_counter()
                if started is not None and all(
                    g is not None and int(g["pending"]) == 0 and g.get("lag") is not None and int(g["lag"]) == 0
                    for g in states
                ):
                    elapsed = time.perf_counter() - started
                    break
                await asyncio.sleep(0.01)
        finally:
            processes.stop(proc)
    finally:
        await redis.aclose()
    if group != "warehouse":
        return elapsed, len(events)
    if bigquery is not None:
        return elapsed, len({r["prediction_id"] for r in bigquery.rows[(BQ_DATASET, "prediction_logs")].values()})
    from warehouse.duckdb_store import DuckDBWarehouse

    rows = DuckDBWarehouse(work / f"{prefix}.duckdb").query("SELECT count(DISTINCT prediction_id) FROM prediction_logs")
    return elapsed, int(rows[0][0])


async def _group_state(redis: Any, stream: str, group: str) -> dict[str, Any] | None:
    if not await redis.exists(stream):
        return None
    groups = {
        (g["name"].decode() if isinstance(g["name"], bytes) else g["name"]): g for g in await redis.xinfo_groups(stream)
    }
    return groups.get(group)


def main() -> int:
    from decision.engine import DecisionEngine
    from registry import mlflow_client
    from registry.loader import build_model_set, registry_pointers

    work = Path(tempfile.mkdtemp(prefix="bnpl-bench-consumers-"))
    registry = Settings.from_env().registry
    models = build_model_set(*registry_pointers(mlflow_client(registry), registry))
    print(f"generating {EVENTS:,} prediction events …", flush=True)
    events = make_events(EVENTS, seed=5, engine=DecisionEngine(models))
    results: dict[tuple[str, str, int], tuple[float, int]] = {}
    batches: dict[int, list[int]] = {}
    setups = [("one redis-server", False, (1, 2)), ("Redis Cluster, 3 masters + 3 replicas", True, (1, 3))]
    for setup, cluster, worker_counts in setups:
        server: Any = RedisClusterServers(work / "cluster").start() if cluster else RedisServer(work / "redis").start()
        try:
            for group in GROUPS:
                for workers in worker_counts:
                    elapsed, landed = asyncio.run(_run(server.url, work, events, group, workers, cluster))
                    results[(setup, group, workers)] = (elapsed, landed)
                    print(f"  {setup}: {group}, {workers} shard(s) / worker(s): {EVENTS / elapsed:,.0f} events/s")
            if not cluster and "warehouse" in GROUPS:
                batches = _bigquery_runs(server.url, work, events, worker_counts, results)
        finally:
            server.stop()
    print("\n| Redis | group | shards = workers | events | seconds | events/s | vs 1 shard | rows landed |")
    print("|---|---|---|---|---|---|---|---|")
    for (setup, group, workers), (elapsed, landed) in results.items():
        rate = EVENTS / elapsed
        base = EVENTS / results[(setup, group, 1)][0]
        name = {"warehouse": "warehouse → DuckDB", "warehouse-bq": "warehouse → BigQuery (fake)"}.get(group, group)
        rows = f"{landed:,}" if group.startswith("warehouse") else "—"
        print(
            f"| {setup} | {name} | {workers} | {EVENTS:,} | {elapsed:.2f} | {rate:,.0f} | {rate / base:.2f}x | {rows} |"
        )
    if "warehouse" in GROUPS:
        print("\nBigQuery load jobs (one load into a staging table + one MERGE per batch):")
        for workers, sizes in batches.items():
            ordered = sorted(sizes)
            print(
                f"  {workers} worker(s): {len(sizes)} batches, rows per batch min {ordered[0]:,} / median "
                f"{ordered[len(ordered) // 2]:,} / max {ordered[-1]:,}"
            )
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _bigquery_runs(
    url: str,
    work: Path,
    events: list[PredictionEvent],
    worker_counts: tuple[int, ...],
    results: dict[tuple[str, str, int], tuple[float, int]],
) -> dict[int, list[int]]:
    """The warehouse group on BigQuery load jobs, each run against a fresh fake; the rows of each load job."""
    from tests.fakes.bigquery import FakeBigQuery

    batches = {}
    for workers in worker_counts:
        fake = FakeBigQuery().start()
        try:
            elapsed, landed = asyncio.run(_run(url, work, events, "warehouse", workers, False, bigquery=fake))
        finally:
            fake.stop()
        results[("one redis-server", "warehouse-bq", workers)] = (elapsed, landed)
        batches[workers] = [len(ids) for ids in fake.loaded.values()]
        print(f"  one redis-server: warehouse → BigQuery, {workers} worker(s): {EVENTS / elapsed:,.0f} events/s")
    return batches


if __name__ == "__main__":
    sys.exit(main())
