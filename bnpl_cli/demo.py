"""``bnpl demo``: the whole system on embedded defaults, ending with a readable report.

Trains (unless the registry already has champion + challenger), starts a private redis-server, starts a
champion/challenger experiment, runs ``bnpl serve`` and sends simulated traffic through it, then reports.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from common.progress import step
from common.settings import Settings
from datagen import NewCategory, example_request, generate
from features import FEATURE_NAMES, featurize

DEMO_REQUESTS = 20_000
DEMO_CONNECTIONS = 16
DEMO_EXPERIMENT = "champion-vs-challenger"
DEMO_ALLOCATION = "champion:0.7,challenger:0.3"


def _banner(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def _models(settings: Settings, retrain: bool) -> Any:
    from bnpl_cli.report import registry_table, training_summary
    from registry import has_aliases, list_versions, mlflow_client
    from training.train import train_and_register

    with step("connecting to the MLflow registry"):
        client = mlflow_client(settings)
    _banner("models")
    if retrain or not has_aliases(client, settings.model_name):
        print(training_summary(train_and_register(settings)))
    else:
        print(
            f"registry already has {settings.model_name}@champion and @challenger; skipping training "
            "(bnpl demo --retrain to train again)"
        )
    _banner(f"registry: {settings.model_name}")
    print(registry_table(list_versions(client, settings.model_name)))
    return client


def _features() -> None:
    _banner("features of the original example request")
    for provider in ("klarna", "zip"):
        result = featurize(example_request(payment_provider=provider))
        unknown = ", ".join(result.unknown_fields) or "none"
        print(f"payment_provider={provider!r}: {len(result.vector)} features, unknown fields: {unknown}")
    shown = ", ".join(f"{n}={v:g}" for n, v in zip(FEATURE_NAMES[:8], result.vector[:8], strict=True))
    print(f"first features: {shown} …")


def _traffic(settings: Settings, client: Any, requests: int) -> None:
    import redis as sync_redis

    from common import processes
    from common.redis_server import RedisServer, free_port
    from producers.simulator import simulate
    from registry.experiments import start_experiment

    _banner("decision API under simulated traffic")
    experiment = start_experiment(client, settings, DEMO_EXPERIMENT, DEMO_ALLOCATION)
    print(f"experiment {experiment.name!r} (MLflow id {experiment.experiment_id}) active: {DEMO_ALLOCATION}")
    redis_server = RedisServer(settings.data_dir / "redis").start()
    port, key = free_port(), secrets.token_urlsafe(16)
    prefix = f"demo{datetime.now(UTC):%Y%m%d%H%M%S}"
    env = {
        "BNPL_REDIS_URL": redis_server.url,
        "BNPL_API_KEYS": key,
        "BNPL_PORT": str(port),
        "BNPL_INSTANCE_ID": "demo-api",
        "BNPL_KEY_PREFIX": prefix,
        "BNPL_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }
    api = processes.start([str(processes.BIN / "bnpl"), "serve"], env, settings.data_dir / "logs" / "api.log")
    try:
        with step(f"starting bnpl serve on 127.0.0.1:{port} (embedded redis {redis_server.url})"):
            processes.wait_http(f"http://127.0.0.1:{port}/readyz?strict=1", api)
        data = generate(
            requests,
            seed=2026,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            days=30,
            drifts=[NewCategory(start_index=requests // 2, share=0.05)],
        )
        with step(f"sending {requests:,} generated requests over {DEMO_CONNECTIONS} connections"):
            result = asyncio.run(
                simulate(f"http://127.0.0.1:{port}", data.iter_requests(), api_key=key, connections=DEMO_CONNECTIONS)
            )
    finally:
        code = processes.stop(api)
    stream = settings.keys.predictions().replace(settings.key_prefix, prefix, 1)
    reader = sync_redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        entries: list[tuple[str, dict[str, str]]] = reader.xrange(stream)  # type: ignore[assignment]
        in_stream = Counter(fields["id"] for _, fields in entries)
    finally:
        reader.close()
        redis_server.stop()
    print(f"requests: {result.sent:,}, statuses: {dict(result.statuses)}, client errors: {result.errors}")
    print(
        f"decisions/s: {result.rate:,.0f}; latency p50 {result.percentile(50):.2f} ms, "
        f"p95 {result.percentile(95):.2f} ms, p99 {result.percentile(99):.2f} ms (client side, incl. HTTP)"
    )
    arms = sorted({arm for arm, _ in result.decisions})
    print("decision mix per arm:")
    for arm in arms:
        total = sum(n for (a, _), n in result.decisions.items() if a == arm)
        mix = "  ".join(f"{d} {result.decisions[(arm, d)] / total:6.1%}" for d in ("approve", "manual_review", "deny"))
        print(f"  {arm:<11s} n={total:>6,}  {mix}")
    once = sum(1 for pid in result.prediction_ids if in_stream.get(pid) == 1)
    print(
        f"events in stream {stream}: {sum(in_stream.values()):,}; decided requests found exactly once: "
        f"{once:,}/{len(result.prediction_ids):,} (API exit code {code})"
    )


def run_demo(settings: Settings, retrain: bool = False, requests: int = DEMO_REQUESTS) -> int:
    """Run every part that exists and print the report."""
    print(f"BNPL risk demo — data dir {settings.data_dir.resolve()}, MLflow {settings.mlflow_tracking_uri}")
    client = _models(settings, retrain)
    _features()
    _traffic(settings, client, requests)
    return 0
