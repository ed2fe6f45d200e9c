"""Drift detection and alert delivery with real Redis, real MLflow profiles and a real local webhook receiver."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from alerting.receiver import RECEIVED, create_receiver
from alerting.signing import sign, verify
from common.keys import Keys
from common.redis_server import free_port
from common.settings import ConsumerSettings, DriftSettings
from consumers.alert_sender import AlertSender
from consumers.drift_group import DriftHandler
from consumers.runtime import ConsumerWorker
from datagen import NewCategory, generate
from decision.engine import DecisionEngine
from drift.monitor import DriftMonitor
from drift.replay import observations
from registry import mlflow_client, read_profile, resolve_alias
from schemas import parse_request
from tests.streams import add_events, wait_group_drained

FAST = ConsumerSettings(
    batch_size=500, max_wait_s=0.2, block_ms=100, claim_idle_ms=1_000, claim_every_s=0.5, max_backoff_s=1.0
)
SMALL = DriftSettings(window=500, mlflow_runs=False)  # the drift runs in MLflow: tests/test_drift_report.py


@pytest.fixture(scope="module")
def champion(trained_registry):
    settings, _ = trained_registry
    client = mlflow_client(settings.registry)
    version = resolve_alias(client, settings.registry.model_name, "champion")
    return version, read_profile(version)


def _feed(monitor, obs, step=250):
    found = []
    for i in range(0, len(obs), step):
        part = obs.take(np.arange(i, min(i + step, len(obs))))
        found += monitor.observe_scores(part.scores.tolist())
        found += monitor.observe_requests(
            part.numeric.tolist(), part.categories, part.unknown, ["champion"] * len(part), part.approved.tolist()
        )
    return [(f.kind, f.feature, f.events_seen) for f in found]


def test_detector_state_survives_pickling(champion, loaded_models):
    version, profile = champion
    scorer = loaded_models.champion.scorer
    data = generate(6_000, seed=3, drifts=[NewCategory(start_index=3_000, share=0.3)])
    obs = observations(data, scorer, loaded_models.champion.review)
    straight = _feed(DriftMonitor(version.version, profile, SMALL), obs)
    first = DriftMonitor(version.version, profile, SMALL)
    resumed = _feed(first, obs.take(np.arange(0, 2_750)))
    restored = pickle.loads(pickle.dumps(first))
    resumed += _feed(restored, obs.take(np.arange(2_750, 6_000)))
    assert resumed == straight
    assert ("unknown_category_rate", "payment_provider", 3_500) in straight


def test_thresholds_follow_the_chi_square_null_and_rare_new_values_and_odd_hours_alert(champion, loaded_models):
    from scipy import stats

    version, profile = champion
    monitor = DriftMonitor(version.version, profile, DriftSettings(window=2_000))
    assert monitor.psi_threshold(10, 2_000) == pytest.approx(stats.chi2.isf(1e-6, 9) / 2_000)
    assert monitor.psi_threshold(2, 1_000_000) == DriftSettings().psi_floor  # never below the floor
    base = stats.chi2.isf(1e-6, 4) / 2_000
    rho = profile["null"]["agreement"]
    # a window where every customer comes three times: customer attributes are three times noisier, purchases not
    assert monitor.psi_threshold(5, 2_000, "customer_income_bracket", cluster=3.0) == pytest.approx(
        base * (1 + 2 * rho["customer_income_bracket"])
    )
    assert rho["customer_income_bracket"] > 0.9 > 0.1 > rho["amount"]
    assert set(profile["time"]) == {"time_of_day", "day_type"}

    scorer, review = loaded_models.champion.scorer, loaded_models.champion.review
    # Time-ordered traffic at the training data's scale with its returning customers, away from the generator's start
    # (where every customer is new) and from the holiday season (which is real drift): nothing alerts.
    steady = generate(200_000, seed=5)
    quiet = observations(steady.slice(90_000, 98_000), scorer, review)
    assert _feed(DriftMonitor(version.version, profile, DriftSettings(window=2_000)), quiet) == []
    assert profile["null"]["cluster_factor"] >= 1.0
    assert profile["null"]["design_effect"]["customer_income_bracket"] >= profile["null"]["design_effect"]["amount"]

    rare = generate(
        4_000, seed=6, drifts=[NewCategory(start_index=0, field="product_category", value="toys", share=0.02)]
    )
    found = _feed(
        DriftMonitor(version.version, profile, DriftSettings(window=2_000)), observations(rare, scorer, review)
    )
    assert ("new_category", "product_category", 2_000) in found  # 2 % — far below the 5 % unknown-rate line

    night = steady.slice(100_000, 106_000)
    night.columns = {**night.columns}
    night.columns["transaction_timestamp"] = np.array(
        [f"{s[:11]}03{s[13:]}" for s in night.columns["transaction_timestamp"].tolist()], dtype=object
    )
    found = _feed(
        DriftMonitor(version.version, profile, DriftSettings(window=2_000)), observations(night, scorer, review)
    )
    kinds = {(kind, feature) for kind, feature, _ in found}
    assert ("time_pattern_psi", "time_of_day") in kinds  # named; night-time requests also score and approve differently
    assert not any(kind in ("feature_psi", "categorical_psi") for kind, _ in kinds)


async def _events(loaded_models, n: int, seed: int):
    engine = DecisionEngine(loaded_models)
    data = generate(n, seed=seed, drifts=[NewCategory(start_index=n // 2, share=0.3)])
    return [engine.decide(parse_request(data.request(i)))[1] for i in range(n)]


async def test_worker_restart_resumes_detector_state(trained_registry, loaded_models, redis_server, key_prefix):
    settings, _ = trained_registry
    settings = settings.replace(key_prefix=key_prefix, redis_url=redis_server.url)
    redis = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    try:
        await add_events(redis, keys.predictions(), await _events(loaded_models, 1_000, 1))
        first = DriftHandler(SMALL, settings.alerts, settings.registry, redis, keys)
        worker = ConsumerWorker(redis, keys, first, FAST, name="d1")
        task = asyncio.create_task(worker.run())
        await wait_group_drained(redis, keys.predictions(), "drift")
        worker.request_stop()
        await task
        seen = {v: m.requests_seen for v, m in first.monitors.items()}
        second = DriftHandler(SMALL, settings.alerts, settings.registry, redis, keys)
        await second.resume(keys.predictions())  # the shard's checkpoint, as the next holder of its lease loads it
        assert {v: m.requests_seen for v, m in second.monitors.items()} == seen
        assert sum(m.scores_seen for m in second.monitors.values()) == 2_000  # champion + challenger scores
    finally:
        await redis.aclose()


async def test_a_starting_worker_has_the_served_versions_profiles_before_its_first_event(
    trained_registry, redis_server, key_prefix
):
    """Loading them with the first event (MLflow's import, the first registry query) held that batch up for
    seconds: the soak's drift group showed a 3 s oldest entry at every start."""
    settings, _ = trained_registry
    redis = aioredis.from_url(redis_server.url)
    try:
        handler = DriftHandler(SMALL, settings.alerts, settings.registry, redis, Keys(key_prefix))
        assert handler.profiles == {}
        await handler.start()
        client = mlflow_client(settings.registry)
        name = settings.registry.model_name
        served = {resolve_alias(client, name, alias).version for alias in settings.registry.model_aliases}
        assert set(handler.profiles) == {(name, v) for v in served}
        assert len(served) == 2  # champion and challenger
        champion = resolve_alias(client, name, "champion")
        assert handler.profiles[name, champion.version] == read_profile(champion)
    finally:
        await redis.aclose()


async def _start_receiver(port: int, secret: str):
    app = create_receiver(secret)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return app, runner


async def test_api_to_receiver_with_receiver_down_30s_and_one_alert_per_cause(
    tmp_path, trained_registry, loaded_models, redis_server, key_prefix
):
    from tests.conftest import api_settings, start_api

    registry_settings, _ = trained_registry
    port, secret = free_port(), "test-secret"
    settings = registry_settings.replace(
        key_prefix=key_prefix,
        redis_url=redis_server.url,
        webhook_urls=(f"http://127.0.0.1:{port}/webhook",),
        webhook_secret=secret,
    )
    keys = Keys(key_prefix)
    redis = aioredis.from_url(redis_server.url)
    api, stop_api = await start_api(api_settings(tmp_path, redis_server.url, key_prefix), DecisionEngine(loaded_models))
    workers, tasks = [], []
    try:
        # Traffic through the real API: the second half carries an unseen payment provider in 30 % of requests.
        data = generate(4_000, seed=8, drifts=[NewCategory(start_index=2_000, share=0.3)])
        from traffic.http import simulate

        result = await simulate(api.url("/"), data.iter_requests(), api_key="test-key", connections=4)
        assert result.statuses[200] == 4_000
        # Two drift workers (one holds the lease, one stands by) and the alert sender; the receiver is down for the
        # first 30 s.
        for i in (0, 1):
            handler = DriftHandler(SMALL, settings.alerts, settings.registry, redis, keys)
            workers.append(ConsumerWorker(redis, keys, handler, FAST, name=f"drift-{i}"))
        sender = ConsumerWorker(redis, keys, AlertSender(settings.alerts, redis, keys), FAST, name="sender")
        tasks = [asyncio.create_task(w.run()) for w in [*workers, sender]]
        await asyncio.sleep(30)
        assert sender.stats.retries >= 3  # deliveries failed and were retried while the receiver was down
        app, runner = await _start_receiver(port, secret)
        try:
            for _ in range(300):  # up to 60 s for the retried delivery to arrive
                if any(a["kind"] == "unknown_category_rate" for a in app[RECEIVED]):
                    break
                await asyncio.sleep(0.2)
            await wait_group_drained(redis, keys.alerts(), "alert-sender", seconds=60)
            # A restarted drift worker sees the same cause again: still no second alert.
            for w in workers:
                w.request_stop()
            await asyncio.gather(*tasks[:2])  # they hand their lease back
            restarted = DriftHandler(SMALL, settings.alerts, settings.registry, redis, keys)
            await redis.delete(keys.drift_state(keys.predictions()))  # its detectors start over
            replay = ConsumerWorker(redis, keys, restarted, FAST, name="drift-restarted")
            await replay.ensure_groups()
            await redis.xgroup_setid(keys.predictions(), "drift", "0")  # redeliver everything to the new worker
            task = asyncio.create_task(replay.run())
            await wait_group_drained(redis, keys.predictions(), "drift")
            replay.request_stop()
            await task
            await asyncio.sleep(1.0)
            received = list(app[RECEIVED])
        finally:
            await runner.cleanup()
    finally:
        for w in [*workers, sender] if workers else []:
            w.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop_api()
        await redis.aclose()
    unknown = [a for a in received if a["kind"] == "unknown_category_rate"]
    assert [a["feature"] for a in unknown] == ["payment_provider"]  # exactly one alert for this cause
    keys_seen = [a["alert_key"] for a in received]
    assert len(keys_seen) == len(set(keys_seen))  # one alert per cause, across two workers and a restart
    assert unknown[0]["model_version"] in {m.version for m in loaded_models.models}
    assert unknown[0]["value"] > 0.05


def test_signatures_reject_tampering_and_replays():
    headers = sign("k", b'{"a":1}', timestamp=1_000)
    assert verify("k", b'{"a":1}', headers["X-Signature"], headers["X-Timestamp"], now=1_100)
    assert not verify("k", b'{"a":2}', headers["X-Signature"], headers["X-Timestamp"], now=1_100)
    assert not verify("other", b'{"a":1}', headers["X-Signature"], headers["X-Timestamp"], now=1_100)
    assert not verify("k", b'{"a":1}', headers["X-Signature"], headers["X-Timestamp"], now=2_000)
