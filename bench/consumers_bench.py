"""``make bench-consumers``: events/s of the warehouse group into DuckDB with 1 and 2 worker processes.

Puts the same generated prediction events on a fresh stream for each run, starts
``bnpl consume warehouse --workers N`` and times from the first read until the group has acked everything.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from common import processes
from common.redis_server import RedisServer
from producers.synthetic import add_events, make_events

EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))


async def _run(redis_url: str, work: Path, events: list, workers: int) -> tuple[float, int]:
    prefix = f"bench{workers}w"
    stream = f"{prefix}:predictions"
    redis = aioredis.from_url(redis_url)
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
            [str(processes.BIN / "bnpl"), "consume", "warehouse", "--workers", str(workers)],
            env,
            work / f"{prefix}.log",
        )
        started = None
        try:
            while True:
                groups = (
                    {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
                    if await redis.exists(stream)
                    else {}
                )
                g = groups.get("warehouse")
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
    from warehouse.duckdb_store import DuckDBWarehouse

    rows = DuckDBWarehouse(work / f"{prefix}.duckdb").query("SELECT count(DISTINCT prediction_id) FROM prediction_logs")
    return elapsed, int(rows[0][0])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bnpl-bench-consumers-"))
    print(f"generating {EVENTS:,} prediction events …", flush=True)
    events = make_events(EVENTS, seed=5)
    redis = RedisServer(work / "redis").start()
    results = {}
    try:
        for workers in (1, 2):
            elapsed, landed = asyncio.run(_run(redis.url, work, events, workers))
            results[workers] = (elapsed, landed)
            print(f"  {workers} worker(s): {EVENTS / elapsed:,.0f} events/s ({landed:,} rows)", flush=True)
    finally:
        redis.stop()
    print("\n| group | workers | events | seconds | events/s | events/s per worker | rows landed |")
    print("|---|---|---|---|---|---|---|")
    for workers, (elapsed, landed) in results.items():
        rate = EVENTS / elapsed
        print(
            f"| warehouse → DuckDB | {workers} | {EVENTS:,} | {elapsed:.2f} | {rate:,.0f} | {rate / workers:,.0f} | "
            f"{landed:,} |"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
