"""``make bench-soak``: the whole system on embedded defaults under an open-loop fixed rate, watched as it runs.

Starts a private redis-server, ``bnpl serve``, the warehouse (DuckDB), mlflow, drift and alert-sender groups and a
webhook receiver, on a copy of the registry (champion and challenger; trained first when there are none) with a
50/50 champion/challenger experiment active, and sends generated requests (a shuffled pool, so the traffic is
stationary) at ``BENCH_SOAK_RATE`` per second for ``BENCH_SOAK_SECONDS``; latency counts from each request's
scheduled send time. Every ``BENCH_SOAK_SAMPLE_S`` it samples the RSS and CPU time of each process (with its
children; the bench's own process, the sender, without), Redis memory and stream length, and per group the entries
not yet delivered and the age of the oldest entry not yet acked. The stream retention is short
(``BENCH_SOAK_RETENTION_S``) so Redis memory reaches its plateau within the run.

It prints: API latency percentiles per minute; per group the oldest-entry age (p50/p99/max) and lag; the end-to-end
lag from answer to warehouse row (``ingested_at`` − ``assessment_timestamp`` of every row); RSS slope per process
(least squares over minutes 2 to the end); CPU per process, over the run and per minute; Redis memory and stream
length per minute; exactly-once counts at the end (answered = published ledger = warehouse rows = distinct ids;
MLflow arm totals = answered per arm, through ``bnpl reconcile``'s comparison); the alerts raised. It reports, it
asserts nothing; the samples are kept as JSON.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from common import processes
from common.redis_client import connect, text
from common.redis_server import RedisServer, free_port
from common.settings import Settings
from consumers.status import age_s, oldest_unacked_ms, wait_drained
from traffic.http import DECISION_PATH, LatencyHistogram, SendProgress, SimulationResult, send

#: The groups the soak runs (outcomes get no traffic here).
GROUPS = ("warehouse", "mlflow", "drift", "alert-sender")
#: Distinct generated requests, shuffled and sent round and round.
POOL = 20_000
#: The champion/challenger experiment the soak's traffic runs in (each arm's MLflow total is checked).
EXPERIMENT, ALLOCATION = "soak", "champion:0.5,challenger:0.5"
#: MLflow windows of the run: short, so the last one is logged soon after the traffic ends.
MLFLOW_WINDOW_S, MLFLOW_LATENESS_S = 10, 5


@dataclass(slots=True)
class Sample:
    t: float  # seconds since the traffic started
    rss_mb: dict[str, float]
    cpu_s: dict[str, float]  # CPU time (user + system) used so far, with the children
    redis_mb: float
    stream_length: int
    lag: dict[str, int]  # group → entries not yet delivered
    oldest_s: dict[str, float]  # group → age of the oldest entry not yet acked (0: none)


@dataclass(slots=True)
class SoakResult:
    rate: float
    seconds: float
    result: SimulationResult
    minutes: list[LatencyHistogram]
    samples: list[Sample]
    end_to_end_s: dict[str, float]  # p50, p99, max
    warehouse_rows: int
    warehouse_distinct: int
    published: int
    mlflow_per_arm: dict[str, int]
    answered_per_arm: dict[str, int]
    reconciled: bool
    reconcile_text: str
    alerts: Counter[str] = field(default_factory=Counter)
    work: Path = Path()

    @property
    def answered(self) -> int:
        return self.result.statuses.get(200, 0)

    @property
    def exactly_once(self) -> bool:
        """Every request answered 200; answered = published = warehouse rows = distinct rows, MLflow per arm =
        answered per arm, reconciled."""
        return (
            0 < self.answered == self.result.sent
            and self.answered == self.published == self.warehouse_rows == self.warehouse_distinct
            and self.mlflow_per_arm == self.answered_per_arm
            and self.reconciled
        )


#: The bench's own process (the sender and the sampler): measured without its children (every other process).
SENDER = "sender"


def _proc_files(pid: int, name: str, tree: bool) -> Iterator[str]:
    """``/proc/<p>/<name>`` of ``pid`` and (``tree``) its live descendants (a process gone meanwhile is skipped)."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            text = Path(f"/proc/{p}/{name}").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split() if tree else []
        except OSError:
            continue
        yield text
        todo += [int(c) for c in children]


def _rss_mb(pid: int, tree: bool = True) -> float:
    """Resident memory of ``pid`` and (``tree``) its descendants (MB; 0 once gone)."""
    kb = 0
    for status in _proc_files(pid, "status", tree):
        kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return kb / 1024


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int, tree: bool = True) -> float:
    """CPU seconds (user + system) of ``pid`` and (``tree``) its live descendants so far (0 once gone)."""
    ticks = 0
    for stat in _proc_files(pid, "stat", tree):
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _TICKS


def _bodies(seed: int = 2026) -> Iterator[bytes]:
    """The request bodies, round and round; the pool is generated now, not at the first request (which would hold
    up the sender's first seconds)."""
    from datagen import generate

    data = generate(POOL, seed=seed)
    pool = [orjson.dumps(data.request(i)) for i in range(POOL)]
    rng = random.Random(seed)

    def cycle() -> Iterator[bytes]:
        while True:
            rng.shuffle(pool)
            yield from pool

    return cycle()


def _copy_registry(source: Settings, data_dir: Path) -> Settings:
    """Settings on a private copy of ``source``'s SQLite registry (the soak's MLflow runs stay out of it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(source.registry.tracking_uri.removeprefix("sqlite:///")), data_dir / "mlflow.db")
    return Settings.build(data_dir=data_dir)


async def _sample(redis: Any, settings: Settings, pids: dict[str, int], t: float) -> Sample:
    keys = settings.keys
    info = await redis.info("memory")
    length, lag, oldest = 0, Counter[str](), dict.fromkeys(GROUPS, 0.0)
    reads = [(s, g) for s in keys.prediction_streams() for g in ("warehouse", "mlflow", "drift")]
    reads.append((keys.alerts(), "alert-sender"))
    for stream in keys.prediction_streams():
        length += int(await redis.xlen(stream))
    for stream, group in reads:
        if not await redis.exists(stream):
            continue
        for row in await redis.xinfo_groups(stream):
            if text(row["name"]) == group:
                lag[group] += int(row.get("lag") or 0)
                oldest[group] = max(oldest[group], age_s(await oldest_unacked_ms(redis, stream, row)) or 0.0)
    return Sample(
        round(t, 3),
        {name: round(_rss_mb(pid, name != SENDER), 1) for name, pid in pids.items()},
        {name: round(_cpu_s(pid, name != SENDER), 2) for name, pid in pids.items()},
        round(int(info["used_memory"]) / 2**20, 2),
        length,
        dict(lag),
        {g: round(v, 3) for g, v in oldest.items()},
    )


async def _traffic(
    url: str, key: str, settings: Settings, pids: dict[str, int], rate: float, seconds: float, every_s: float
) -> tuple[SimulationResult, list[LatencyHistogram], list[Sample]]:
    minutes: list[LatencyHistogram] = []
    marks: dict[str, Any] = {"minute": 0, "copy": LatencyHistogram()}
    samples: list[Sample] = []

    def on_progress(p: SendProgress) -> None:  # per-minute latency histograms
        minute = int(p.elapsed_s // 60)
        if minute > marks["minute"] or p.final:
            minutes.append(p.histogram.since(marks["copy"]))
            marks["minute"], marks["copy"] = minute, p.histogram.copy()

    async def sampler() -> None:
        redis = connect(settings.streams.redis_url)
        start = time.monotonic()
        try:
            while True:
                samples.append(await _sample(redis, settings, pids, time.monotonic() - start))
                await asyncio.sleep(every_s)
        finally:
            await redis.aclose()

    bodies = _bodies()
    task = asyncio.create_task(sampler())
    try:
        result = await send(
            url, bodies, api_key=key, rate=rate, connections=64, seconds=seconds, on_progress=on_progress
        )
        await asyncio.sleep(every_s * 3)  # a few samples of the drain
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return result, [m for m in minutes if m.count], samples


async def _drain(settings: Settings) -> None:
    redis = connect(settings.streams.redis_url)
    try:
        for stream in settings.keys.prediction_streams():
            for group in ("warehouse", "mlflow", "drift"):
                await wait_drained(redis, stream, group, 300)
    finally:
        await redis.aclose()


def _end_to_end(path: Path) -> tuple[dict[str, float], int, int]:
    from warehouse.duckdb_store import DuckDBWarehouse

    (row,) = DuckDBWarehouse(path).query(
        "SELECT quantile_cont(lag, 0.5), quantile_cont(lag, 0.99), max(lag), count(*), count(DISTINCT id) FROM "
        "(SELECT epoch(ingested_at) - epoch(assessment_timestamp) AS lag, prediction_id AS id FROM prediction_logs)"
    )
    p50, p99, worst, rows, distinct = row
    return {"p50": float(p50 or 0), "p99": float(p99 or 0), "max": float(worst or 0)}, int(rows), int(distinct)


def _reconcile(settings: Settings) -> tuple[bool, str, int, dict[str, int]]:
    """``bnpl reconcile`` of today (UTC), waiting (≤ 2 min) for the MLflow windows to be logged."""
    from bnpl_cli.reconcile import render
    from performance.reconcile import IN_FLIGHT, MLFLOW, WAREHOUSE, reconcile

    day = datetime.now(UTC).date()
    deadline = time.monotonic() + 120
    while True:
        result = reconcile(settings, [day])
        settled = not result.in_flight and all(r.status != IN_FLIGHT for r in result.rows)
        if (result.ok and settled) or time.monotonic() > deadline:
            break
        time.sleep(2)
    published = sum(r.published for r in result.rows if r.sink == WAREHOUSE)
    arms = Counter[str]()
    for r in result.rows:
        if r.sink == MLFLOW:
            arms[r.key.rsplit("/", 1)[-1]] += r.landed
    return result.ok, render(result), published, dict(arms)


def _alerts(settings: Settings) -> Counter[str]:
    from alerting.channel import alert_of
    from common.redis_client import connect_sync

    client = connect_sync(settings.streams.redis_url)
    try:
        alerts = [alert_of(fields) for _, fields in client.xrange(settings.keys.alerts())]
        return Counter(a.kind if a is not None else "unreadable" for a in alerts)
    finally:
        client.close()


def run_soak(
    registry: Settings, work: Path, seconds: float, rate: float, sample_s: float, retention_s: float
) -> SoakResult:
    """Run the system on ``work`` (a copy of ``registry``'s models) under ``rate`` decisions/s for ``seconds``."""
    from registry import mlflow_client
    from registry.experiments import start_experiment

    settings = _copy_registry(registry, work / "data").replace(key_prefix="soak")
    start_experiment(mlflow_client(settings.registry), settings.registry, EXPERIMENT, ALLOCATION)  # two arms counted
    server = RedisServer(work / "redis").start()
    settings = settings.replace(redis_url=server.url)
    port, receiver_port, key = free_port(), free_port(), secrets.token_urlsafe(16)
    duckdb_path = work / "data" / "warehouse.duckdb"
    env = {
        "BNPL_REDIS_URL": server.url,
        "BNPL_API_KEYS": key,
        "BNPL_PORT": str(port),
        "BNPL_INSTANCE_ID": "soak-api",
        "BNPL_KEY_PREFIX": settings.keys.prefix,
        "BNPL_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.registry.tracking_uri,
        "BNPL_DUCKDB_PATH": str(duckdb_path),
        "BNPL_MLFLOW_WINDOW_S": str(MLFLOW_WINDOW_S),
        "BNPL_MLFLOW_LATENESS_S": str(MLFLOW_LATENESS_S),
        "BNPL_STREAM_RETENTION_HOURS": str(retention_s / 3600),
        "BNPL_TRIM_EVERY_S": str(max(1.0, retention_s / 10)),
        "BNPL_WEBHOOK_URLS": f"http://127.0.0.1:{receiver_port}/webhook",
        "BNPL_WEBHOOK_SECRET": secrets.token_urlsafe(16),
        "BNPL_PERFORMANCE_SCHEDULE_S": "0",
        "BNPL_METRICS_PORT": "0",  # several soaks (or a demo) may run side by side
    }
    logs = work / "logs"
    bnpl = str(processes.BIN / "bnpl")
    procs = {
        "receiver": processes.start([bnpl, "webhook-receiver", "--port", str(receiver_port)], env, logs / "rcv.log"),
        "api": processes.start([bnpl, "serve"], env, logs / "api.log"),
    }
    procs |= {g: processes.start([bnpl, "consume", g], env, logs / f"{g}.log") for g in GROUPS}
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/readyz?strict=1", procs["api"])
        pids = {name: p.pid for name, p in procs.items() if name != "receiver"}
        pids["redis"] = server.pid or 0
        pids[SENDER] = os.getpid()
        url = f"http://127.0.0.1:{port}{DECISION_PATH}"
        result, minutes, samples = asyncio.run(_traffic(url, key, settings, pids, rate, seconds, sample_s))
        asyncio.run(_drain(settings))
        ok, text_out, published, mlflow_arms = _reconcile(settings)
        end_to_end, rows, distinct = _end_to_end(duckdb_path)
        answered_per_arm = Counter[str]()
        for (arm, _), n in result.decisions.items():
            answered_per_arm[arm] += n
        return SoakResult(
            rate,
            seconds,
            result,
            minutes,
            samples,
            end_to_end,
            rows,
            distinct,
            published,
            mlflow_arms,
            dict(answered_per_arm),
            ok,
            text_out,
            _alerts(settings),
            work,
        )
    finally:
        for proc in procs.values():
            processes.stop(proc)
        server.stop()


# --- report --------------------------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _in_minute(samples: list[Sample], minute: int) -> list[Sample]:
    """The samples taken in minute ``minute`` (0-based) of the run."""
    return [s for s in samples if minute * 60 <= s.t < (minute + 1) * 60]


def _slope_mb_per_min(samples: list[Sample], name: str, after_s: float = 60.0) -> float:
    """Least-squares slope of RSS over the samples after ``after_s`` (MB per minute)."""
    points = [(s.t / 60, s.rss_mb[name]) for s in samples if s.t >= after_s and s.rss_mb.get(name)]
    if len(points) < 3:
        return float("nan")
    return statistics.linear_regression([x for x, _ in points], [y for _, y in points]).slope


def report(r: SoakResult) -> str:
    traffic = [s for s in r.samples if s.t <= r.seconds]
    lines = [
        f"soak: {r.seconds:.0f} s at {r.rate:,.0f} decisions/s (open loop), {r.result.sent:,} sent, "
        f"statuses {dict(r.result.statuses)}, client errors {r.result.errors}, sender's worst lag behind schedule "
        f"{r.result.max_lag_ms:,.0f} ms; {len(r.samples)} samples",
        "",
        "API latency per minute (ms, from the scheduled send time):",
        f"  {'minute':>6s} {'requests':>9s} {'p50':>7s} {'p95':>7s} {'p99':>7s} {'p99/first':>9s}",
    ]
    first_p99 = r.minutes[0].percentile(99) if r.minutes else float("nan")
    for i, m in enumerate(r.minutes):
        lines.append(
            f"  {i + 1:>6d} {m.count:>9,} {m.percentile(50):>7.2f} {m.percentile(95):>7.2f} "
            f"{m.percentile(99):>7.2f} {m.percentile(99) / first_p99:>9.2f}"
        )
    lines += ["", "per group, while the traffic ran: age of the oldest entry not yet acked (s), entries not delivered"]
    for g in GROUPS:
        ages = [s.oldest_s.get(g, 0.0) for s in traffic]
        lags = [s.lag.get(g, 0) for s in traffic]
        lines.append(
            f"  {g:<13s} oldest p50 {_percentile(ages, 50):5.2f}  p99 {_percentile(ages, 99):5.2f}  "
            f"max {max(ages, default=0):5.2f}   lag max {max(lags, default=0):,}"
        )
    e = r.end_to_end_s
    lines += [
        "",
        f"end-to-end lag, answer → warehouse row (every row): p50 {e['p50']:.3f} s, p99 {e['p99']:.3f} s, "
        f"max {e['max']:.3f} s",
        "",
        "RSS per process (MB): first sample, last, slope over minutes 2 to the end (MB/min)",
    ]
    for name in r.samples[0].rss_mb if r.samples else []:
        lines.append(
            f"  {name:<13s} {r.samples[0].rss_mb[name]:8.1f} {traffic[-1].rss_mb[name]:8.1f} "
            f"{_slope_mb_per_min(traffic, name):+8.2f}"
        )
    if len(traffic) > 1:
        span = traffic[-1].t - traffic[0].t
        used = {n: (traffic[-1].cpu_s[n] - traffic[0].cpu_s[n]) / span * 100 for n in traffic[0].cpu_s}
        lines += [
            "",
            f"CPU while the traffic ran (% of one core; the machine has {os.cpu_count()}): "
            + ", ".join(f"{n} {u:.0f}" for n, u in sorted(used.items(), key=lambda kv: -kv[1]))
            + f"; total {sum(used.values()):.0f}",
            "CPU per minute (% of one core; the same work each minute, so a minute where every process needed more "
            "is the machine's, not the code's):",
            "  minute " + " ".join(f"{n[:12]:>12s}" for n in traffic[0].cpu_s),
        ]
        for minute in range(int(r.seconds // 60)):
            at = _in_minute(traffic, minute)
            if len(at) > 1:
                dt = at[-1].t - at[0].t
                lines.append(
                    f"  {minute + 1:>6d} "
                    + " ".join(f"{(at[-1].cpu_s[n] - at[0].cpu_s[n]) / dt * 100:>12.1f}" for n in at[0].cpu_s)
                )
    lines += ["", "Redis per minute: used memory (MB), prediction stream length"]
    for minute in range(int(r.seconds // 60) + 1):
        at = _in_minute(traffic, minute)
        if at:
            lines.append(f"  minute {minute + 1:>3d}: {at[-1].redis_mb:8.1f} MB  {at[-1].stream_length:>9,} entries")
    lines += [
        "",
        f"exactly once: answered {r.answered:,}, published (ledger) {r.published:,}, warehouse rows "
        f"{r.warehouse_rows:,} ({r.warehouse_distinct:,} distinct); per arm answered {r.answered_per_arm}, "
        f"MLflow {r.mlflow_per_arm} → {'yes' if r.exactly_once else 'NO'}",
        r.reconcile_text,
        "",
        f"alerts raised: {dict(r.alerts) or 'none'}",
        f"samples and logs: {r.work}",
    ]
    return "\n".join(lines)


def main() -> int:
    from bench.api_bench import _ensure_registry

    settings = Settings.from_env()
    bench = settings.bench
    _ensure_registry(settings)
    work = Path(tempfile.mkdtemp(prefix="bnpl-soak-"))
    print(
        f"soak: {bench.soak_seconds:.0f} s at {bench.soak_rate:,.0f}/s, retention {bench.soak_retention_s:.0f} s, "
        f"in {work} …",
        flush=True,
    )
    result = run_soak(settings, work, bench.soak_seconds, bench.soak_rate, bench.soak_sample_s, bench.soak_retention_s)
    (work / "samples.json").write_bytes(orjson.dumps(result.samples, option=orjson.OPT_INDENT_2))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
