"""``make bench-consumers``: events/s of the warehouse group (into DuckDB) and of the drift group, with 1 and 2
worker processes each.

Puts the same generated prediction events (decided by the registry's champion and challenger, so every event
carries two model scores) on a fresh stream for each run, starts ``bnpl consume <group> --workers N`` and times
from the first read until the group has acked everything.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import processes
from common.keys import Keys
from common.redis_client import connect
from common.redis_server import RedisServer
from common.settings import Settings
from schemas.events import PredictionEvent
from traffic.events import add_events, make_events

BENCH = Settings.from_env().bench
EVENTS = BENCH.bench_events
GROUPS = BENCH.bench_groups


async def _run(
    redis_url: str, work: Path, events: list[PredictionEvent], group: str, workers: int
) -> tuple[float, int]:
    prefix = f"bench{group}{workers}w"
    stream = Keys(prefix).predictions()
    redis = connect(redis_url)
    try:
        await add_events(redis, stream, events)
        env = {
            "BNPL_REDIS_URL": redis_url,
            "BNPL_KEY_PREFIX": prefix,
            "BNPL_DATA_DIR": str(work),
            "BNPL_DUCKDB_PATH": str(work / f"{prefix}.duckdb"),
            "BNPL_CONSUMER_BATCH": "10000",
            "BNPL_CONSUMER_WAIT_S": "1",
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
                groups = (
                    {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
                    if await redis.exists(stream)
                    else {}
                )
                g = groups.get(group)
                if g is not None and started is None and int(g.get("entries-read") or 0) > 0:
                    started = time.perf_counter()
                lag = g.get("lag") if g is not None else None
                if (
                    g is not None
                    and started is not None
                    and int(g["pending"]) == 0
                    and lag is not None
                    and int(lag) == 0
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
    from warehouse.duckdb_store import DuckDBWarehouse

    rows = DuckDBWarehouse(work / f"{prefix}.duckdb").query("SELECT count(DISTINCT prediction_id) FROM prediction_logs")
    return elapsed, int(rows[0][0])


def main() -> int:
    from decision.engine import DecisionEngine
    from registry import mlflow_client
    from registry.loader import build_model_set, registry_pointers

    work = Path(tempfile.mkdtemp(prefix="bnpl-bench-consumers-"))
    registry = Settings.from_env().registry
    models = build_model_set(*registry_pointers(mlflow_client(registry), registry))
    print(f"generating {EVENTS:,} prediction events …", flush=True)
    events = make_events(EVENTS, seed=5, engine=DecisionEngine(models))
    redis = RedisServer(work / "redis").start()
    results = {}
    try:
        for group in GROUPS:
            for workers in (1, 2):
                elapsed, landed = asyncio.run(_run(redis.url, work, events, group, workers))
                results[(group, workers)] = (elapsed, landed)
                print(f"  {group}, {workers} worker(s): {EVENTS / elapsed:,.0f} events/s", flush=True)
    finally:
        redis.stop()
    print("\n| group | workers | events | seconds | events/s | events/s per worker | rows landed |")
    print("|---|---|---|---|---|---|---|")
    for (group, workers), (elapsed, landed) in results.items():
        rate = EVENTS / elapsed
        name = "warehouse → DuckDB" if group == "warehouse" else group
        rows = f"{landed:,}" if group == "warehouse" else "—"
        print(f"| {name} | {workers} | {EVENTS:,} | {elapsed:.2f} | {rate:,.0f} | {rate / workers:,.0f} | {rows} |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
