"""``make bench-api``: our decision API vs a trivial aiohttp handler vs ``mlflow models serve``, in one run.

Each server runs in its own process on this machine; the load generator (wrk when installed, else an aiohttp
client) sends the same generated requests at 1 and 16 connections. Prints req/s, p50, p99 and the ratios.

The machine is shared and noisy, so each cell is measured in ``BENCH_ROUNDS`` rounds and the servers take turns
within a round (ours, ours ×2, trivial, mlflow, then again): a slow patch of the machine hits every server, not one.
The table shows the median of the rounds; the ratios are the median of the per-round ratios, with their range.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.loadgen import run_load
from common import processes
from common.keys import Keys
from common.redis_server import RedisServer, free_port
from common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = processes.BIN
BENCH = Settings.from_env().bench
SECONDS = BENCH.bench_seconds
ROUNDS = BENCH.bench_rounds
WARMUP = BENCH.bench_warmup_seconds
API_KEY = "bench-key"


@dataclass
class Target:
    name: str
    url: str
    bodies: Path
    api_key: str = ""
    proc: subprocess.Popen[bytes] | None = None


def _load(target: Target, connections: int, seconds: float) -> dict[str, float]:
    if shutil.which("wrk"):
        env = {**os.environ, "BODIES": str(target.bodies), "API_KEY": target.api_key}
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds:.0f}s",
                "--timeout",
                "5s",
                "-s",
                str(ROOT / "bench" / "post.lua"),
                target.url,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("JSON "))
        result: dict[str, float] = json.loads(line[5:])
        return result
    bodies = [line.encode() for line in target.bodies.read_text().splitlines() if line]
    return asyncio.run(run_load(target.url, bodies, connections, seconds, target.api_key))


def _ensure_registry(settings: Settings) -> None:
    from registry import has_aliases, mlflow_client
    from training.train import train_and_register

    if not has_aliases(mlflow_client(settings.registry), settings.registry.model_name):
        print("no champion/challenger in the registry: training first", flush=True)
        train_and_register(settings, promote=True)


def _write_bodies(directory: Path) -> tuple[Path, Path]:
    from datagen import generate
    from features import featurize_columns

    data = generate(1_000, seed=99)
    requests = directory / "requests.jsonl"
    requests.write_bytes(b"\n".join(orjson.dumps(data.request(i)) for i in range(len(data))) + b"\n")
    matrix = featurize_columns(data.columns).matrix
    inputs = directory / "mlflow.jsonl"
    inputs.write_bytes(b"\n".join(orjson.dumps({"inputs": [row.tolist()]}) for row in matrix) + b"\n")
    return requests, inputs


def main() -> int:
    settings = Settings.from_env()
    _ensure_registry(settings)
    work = Path(tempfile.mkdtemp(prefix="bnpl-bench-"))
    requests, inputs = _write_bodies(work)
    redis = RedisServer(work / "redis").start()
    env = {
        "MLFLOW_TRACKING_URI": settings.registry.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    ports = {name: free_port() for name in ("ours", "ours2", "trivial", "mlflow")}
    prefix = f"bench{int(time.time())}"
    targets = {
        "ours": Target(
            "bnpl API (full decision path)",
            f"http://127.0.0.1:{ports['ours']}/v1/bnpl/risk-assessment",
            requests,
            API_KEY,
        ),
        "ours2": Target(
            "bnpl API, 2 processes (--workers 2)",
            f"http://127.0.0.1:{ports['ours2']}/v1/bnpl/risk-assessment",
            requests,
            API_KEY,
        ),
        "trivial": Target(
            "trivial aiohttp handler", f"http://127.0.0.1:{ports['trivial']}/v1/bnpl/risk-assessment", requests
        ),
        "mlflow": Target("mlflow models serve", f"http://127.0.0.1:{ports['mlflow']}/invocations", inputs),
    }
    commands = {
        "ours": (
            [str(BIN / "bnpl"), "serve", "--port", str(ports["ours"])],
            {
                "BNPL_REDIS_URL": redis.url,
                "BNPL_API_KEYS": API_KEY,
                "BNPL_INSTANCE_ID": f"bench-{os.getpid()}",
                "BNPL_KEY_PREFIX": prefix,
                "BNPL_SPOOL_DIR": str(work / "spool"),
            },
            f"http://127.0.0.1:{ports['ours']}/readyz?strict=1",
        ),
        "ours2": (
            [str(BIN / "bnpl"), "serve", "--port", str(ports["ours2"]), "--workers", "2"],
            {
                "BNPL_REDIS_URL": redis.url,
                "BNPL_API_KEYS": API_KEY,
                "BNPL_INSTANCE_ID": f"bench2-{os.getpid()}",
                "BNPL_KEY_PREFIX": f"bench2x{int(time.time())}",
                "BNPL_SPOOL_DIR": str(work / "spool2"),
            },
            f"http://127.0.0.1:{ports['ours2']}/readyz?strict=1",
        ),
        "trivial": ([sys.executable, "-m", "bench.trivial_server", "--port", str(ports["trivial"])], {}, None),
        "mlflow": (
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{settings.registry.model_name}@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(ports["mlflow"]),
            ],
            {},
            f"http://127.0.0.1:{ports['mlflow']}/ping",
        ),
    }
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for key, (cmd, extra, ready) in commands.items():
            proc = processes.start(cmd, {**env, **extra}, work / f"{key}.log", cwd=ROOT)
            targets[key].proc = proc
            if ready:
                processes.wait_http(ready, proc)
            else:
                time.sleep(1.5)
        print(
            f"load generator: {'wrk' if shutil.which('wrk') else 'aiohttp client'}, {ROUNDS} rounds of {SECONDS:.0f}s "
            f"per cell, servers taking turns; {WARMUP:.0f}s warm-up; 1,000 generated requests in rotation",
            flush=True,
        )
        for target in targets.values():
            _load(target, 16, WARMUP)
        for connections in (16, 1):
            for round_no in range(1, ROUNDS + 1):
                for key, target in targets.items():
                    r = _load(target, connections, SECONDS)
                    results.setdefault((key, connections), []).append(r)
                    print(
                        f"  round {round_no} {target.name:36s} c={connections:<3d} "
                        f"{r['requests'] / (r['duration_us'] / 1e6):9.0f} req/s  p99 {r['p99_us'] / 1000:6.2f} ms",
                        flush=True,
                    )
    finally:
        for target in targets.values():
            if target.proc:
                processes.stop(target.proc)
        events = _stream_length(redis.url, Keys(prefix).predictions())
        redis.stop()
    _report(targets, results, events)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _stream_length(url: str, stream: str) -> int:
    from common.redis_client import connect_sync

    client = connect_sync(url)
    try:
        return int(client.xlen(stream))
    finally:
        client.close()


def _rps(r: dict[str, float]) -> float:
    return r["requests"] / (r["duration_us"] / 1e6)


def _report(targets: dict[str, Target], results: dict[tuple[str, int], list[dict[str, float]]], events: int) -> None:
    def cell(key: str, c: int, field: str) -> float:
        rounds = results[(key, c)]
        return statistics.median(_rps(r) if field == "rps" else r[field] for r in rounds)

    def ratio(key: str, base: str, c: int) -> str:
        # Per round, each server against the baseline measured in the same round; median and range.
        pairs = [_rps(a) / _rps(b) for a, b in zip(results[(key, c)], results[(base, c)], strict=True)]
        fmt = "{:.2f}" if base == "trivial" else "{:.1f}x"
        spread = ", ".join(fmt.format(p) for p in pairs)
        return f"{fmt.format(statistics.median(pairs))} (rounds: {spread})"

    print(f"\n| server | connections | req/s | p50 ms | p99 ms | non-2xx | errors |  (median of {ROUNDS} rounds)")
    print("|---|---|---|---|---|---|---|")
    for c in (1, 16):
        for key, target in targets.items():
            rounds = results[(key, c)]
            print(
                f"| {target.name} | {c} | {cell(key, c, 'rps'):,.0f} | {cell(key, c, 'p50_us') / 1000:.2f} | "
                f"{cell(key, c, 'p99_us') / 1000:.2f} | {int(sum(r['non2xx'] for r in rounds))} | "
                f"{int(sum(r['errors'] for r in rounds))} |"
            )
    print()
    for c in (1, 16):
        print(f"c={c}: ours / trivial = {ratio('ours', 'trivial', c)}")
        print(f"      ours / mlflow models serve = {ratio('ours', 'mlflow', c)}")
        print(f"      trivial / mlflow models serve = {ratio('trivial', 'mlflow', c)}")
        print(
            f"      2 processes: / trivial = {ratio('ours2', 'trivial', c)}, / mlflow = {ratio('ours2', 'mlflow', c)}"
        )
    sent = sum(r["requests"] for c in (1, 16) for r in results[("ours", c)])
    print(f"events in the stream after the run: {events:,} (measured requests to ours: {int(sent):,} + warm-up)")


if __name__ == "__main__":
    sys.exit(main())
