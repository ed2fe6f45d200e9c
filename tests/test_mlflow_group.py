"""The MLflow group with real MLflow (SQLite store) and the real runtime: one run per arm, exact counts, idempotent."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from common.settings import ConsumerSettings
from consumers.base import Entry
from consumers.mlflow_group import MlflowMetricsHandler
from consumers.runtime import ConsumerWorker
from decision.engine import DecisionEngine
from decision.models import ModelSet
from registry import mlflow_client
from registry.experiments import start_experiment
from tests.streams import add_events, make_events, wait_group_drained

CONFIG = ConsumerSettings(batch_size=2_000, max_wait_s=0.2, block_ms=100, claim_idle_ms=1_000, claim_every_s=0.5)


def _metric_total(client, run_id: str, key: str) -> float:
    return sum(m.value for m in client.get_metric_history(run_id, key))


@pytest.mark.parametrize("shards", [1, 2])
async def test_each_arm_run_has_the_right_counts_and_redelivery_changes_nothing(
    registry_copy, redis_server, key_prefix, loaded_models, shards
):
    settings = registry_copy.replace(key_prefix=key_prefix, redis_url=redis_server.url, stream_shards=shards)
    client = mlflow_client(settings.registry)
    experiment = start_experiment(client, settings.registry, "ab-test", "champion:0.7,challenger:0.3")
    engine = DecisionEngine(ModelSet(loaded_models.models, experiment))
    events = make_events(20_000 // shards, seed=21, engine=engine)
    expected = Counter((e.decision.traffic_segment, e.decision.business_decision) for e in events)

    redis = aioredis.from_url(redis_server.url)
    keys = settings.keys
    windows = ConsumerSettings(mlflow_window_s=3_600, mlflow_lateness_s=0)
    handler = MlflowMetricsHandler(settings.registry, windows, redis, keys)
    try:
        for shard, stream in enumerate(keys.prediction_streams()):  # each shard gets its own customers
            await add_events(redis, stream, [e for e in events if keys.shard_of(e.request.customer_id) == shard])
        worker = ConsumerWorker(redis, keys, handler, CONFIG, name="m1")
        task = asyncio.create_task(worker.run())
        for stream in keys.prediction_streams():
            await wait_group_drained(redis, stream, "mlflow")
        worker.request_stop()
        await task
        # Re-handle every entry (as a redelivery after a crash would): nothing may be counted twice.
        entries = [Entry(s, i.decode(), f) for s in keys.prediction_streams() for i, f in await redis.xrange(s)]
        await handler.handle(entries[:5_000])
        logged = await handler.flush_closed_windows(now=time.time() + 10 * 3_600)
        assert logged >= 2
        assert await handler.flush_closed_windows(now=time.time() + 10 * 3_600) == 0
    finally:
        await redis.aclose()

    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`bnpl.kind` = 'arm-metrics'")
    by_arm = {r.data.tags["bnpl.arm"]: r for r in runs}
    assert sorted(by_arm) == ["challenger", "champion"]  # one run per arm (each arm has one model version)
    for arm, run in by_arm.items():
        n = sum(v for (a, _), v in expected.items() if a == arm)
        assert _metric_total(client, run.info.run_id, "requests") == n
        approve = next(m for m in client.get_metric_history(run.info.run_id, "approve_rate"))
        assert approve.value == expected[(arm, "approve")] / n
        assert run.data.params["traffic_allocation"] == "champion:0.7,challenger:0.3"
        assert run.data.params["decision_policy"] == "threshold-v1"
        assert run.data.params["model_version"] == dict((m.alias, m.version) for m in loaded_models.models)[arm]
        assert "score_p50" in run.data.metrics
        assert "latency_p99_ms" in run.data.metrics


async def test_arm_runs_read_well_steps_from_zero_window_end_timestamps_quantiles_within_their_error(
    registry_copy, redis_server, key_prefix, loaded_models
):
    """Six one-minute windows of decisions: the arm run's history has steps 0..5 stamped at each window's end, its
    quantiles lie within the stated relative error of each window's exact order statistics, and the run is
    FINISHED at the last window's end, under a name that says what it is."""
    import msgspec
    import numpy as np

    from consumers.mlflow_group import QUANTILE_RELATIVE_ERROR

    settings = registry_copy.replace(key_prefix=key_prefix, redis_url=redis_server.url)
    client = mlflow_client(settings.registry)
    experiment = start_experiment(client, settings.registry, "readable", "champion:1.0")
    engine = DecisionEngine(ModelSet(loaded_models.models, experiment))
    window_s, windows = 60, 6
    origin = (int(time.time()) // window_s - 100) * window_s  # a whole window boundary, 100 windows ago
    rng = np.random.default_rng(5)
    events = []
    for i, event in enumerate(make_events(3_000, seed=23, engine=engine)):
        at = origin + (i % windows) * window_s + rng.uniform(0, window_s - 1)
        decision = msgspec.structs.replace(
            event.decision,
            assessment_timestamp=datetime.fromtimestamp(at, UTC).isoformat(),
            processing_time_ms=float(rng.lognormal(0.5, 0.8)),
        )
        events.append(msgspec.structs.replace(event, decision=decision))
    redis = aioredis.from_url(redis_server.url)
    handler = MlflowMetricsHandler(
        settings.registry, ConsumerSettings(mlflow_window_s=window_s, mlflow_lateness_s=10_000), redis, settings.keys
    )
    try:
        await add_events(redis, settings.keys.predictions(), events)
        worker = ConsumerWorker(redis, settings.keys, handler, CONFIG, name="m1")
        task = asyncio.create_task(worker.run())
        await wait_group_drained(redis, settings.keys.predictions(), "mlflow")
        worker.request_stop()
        await task
        await handler.flush_closed_windows(now=time.time() + 20_000)  # past the lateness: every window closes
    finally:
        await redis.aclose()

    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.`bnpl.kind` = 'arm-metrics'")
    version = events[0].decision.model_version
    assert run.info.run_name == f"champion arm · {settings.registry.model_name} v{version} · experiment readable"
    assert run.info.status == "FINISHED"
    assert run.info.start_time == origin * 1000
    assert run.info.end_time == (origin + windows * window_s) * 1000
    history = sorted(client.get_metric_history(run.info.run_id, "requests"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(windows))
    assert [m.timestamp for m in history] == [(origin + (w + 1) * window_s) * 1000 for w in range(windows)]
    assert sum(m.value for m in history) == 3_000
    for metric, field, q in (
        ("latency_p50_ms", "processing_time_ms", 0.5),
        ("latency_p99_ms", "processing_time_ms", 0.99),
        ("score_p50", "default_probability", 0.5),
        ("score_p90", "default_probability", 0.9),
    ):
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric)}
        for w in range(windows):
            values = np.array([getattr(e.decision, field) for i, e in enumerate(events) if i % windows == w])
            exact = float(np.quantile(values, q, method="lower"))
            assert abs(logged[w] - exact) <= QUANTILE_RELATIVE_ERROR * exact + 1e-12, (metric, w, logged[w], exact)
