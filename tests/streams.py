"""Consumer-test helpers: the load tools' events on a stream, waiting for a group to drain, and worker processes
killed with SIGKILL while they hold a batch."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from consumers.status import wait_drained as wait_group_drained
from traffic.events import add_events, make_events

__all__ = [
    "QuietHandler",
    "add_events",
    "kill_workers_mid_batch",
    "make_events",
    "spawn_worker",
    "wait_group_drained",
    "worker_env",
]


class QuietHandler:
    """A test group's handler without start-up, periodic or shutdown work: subclasses set ``group`` and
    ``streams`` and write ``handle``."""

    async def start(self) -> None:
        return None

    async def released(self, stream: str, lost: bool) -> None:
        return None

    async def tick(self) -> None:
        return None

    async def close(self) -> None:
        return None


def worker_env(redis_url: str, prefix: str, duckdb_path: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker process under test: its Redis, key prefix, DuckDB file and data dir, quick batch
    flushes and claims (1 s idle), a dead worker's streams taken over after 2 s, plus ``extra`` variables."""
    return {
        "BNPL_REDIS_URL": redis_url,
        "BNPL_KEY_PREFIX": prefix,
        "BNPL_DUCKDB_PATH": str(duckdb_path),
        "BNPL_CONSUMER_WAIT_S": "0.3",
        "BNPL_CLAIM_IDLE_MS": "1000",
        "BNPL_LEASE_TTL_S": "2",
        "BNPL_DATA_DIR": str(data_dir),
        **extra,
    }


def spawn_worker(group: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``bnpl consume <group> [args]`` as a child process with ``env`` added."""
    return subprocess.Popen(
        [sys.executable, "-m", "bnpl_cli.main", "consume", group, *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def kill_workers_mid_batch(
    redis: Any, stream: str, group: str, env: dict[str, str], *, kills: int, workers: int = 2, seed: int = 5
) -> None:
    """Run ``workers`` worker processes of ``group``; ``kills`` times, SIGKILL one that holds pending entries (a
    batch in flight) and start a replacement; then wait until the group has drained ``stream`` and stop them."""
    running = [spawn_worker(group, env) for _ in range(workers)]
    rng = random.Random(seed)
    killed = 0
    try:
        while killed < kills:
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            victim = running[rng.randrange(len(running))]
            name = f"{socket.gethostname()}-{victim.pid}"
            try:
                consumers = {c["name"].decode(): c for c in await redis.xinfo_consumers(stream, group)}
            except aioredis.ResponseError:  # the group is not created yet
                continue
            if int(consumers.get(name, {}).get("pending", 0)) == 0:
                continue  # not holding a batch right now: wait for one
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed += 1
            running.remove(victim)
            running.append(spawn_worker(group, env))
        await wait_group_drained(redis, stream, group, seconds=180)
    finally:
        for w in running:
            w.send_signal(signal.SIGTERM)
        for w in running:
            w.wait(timeout=60)
