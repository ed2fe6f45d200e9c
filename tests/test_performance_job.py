"""The performance job end to end on real parts: decisions and outcomes in DuckDB, the session's MLflow registry and
tracking store, alerts on a real Redis stream."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
from sklearn.metrics import roc_auc_score

from common.keys import decode_entry, encode_entry
from datagen import ConceptShift, generate
from decision.engine import DecisionEngine
from performance.analysis import windows
from performance.job import EXPERIMENT, run_analysis, run_name
from schemas.alerts import Alert
from traffic.landing import decide_into, land_outcomes
from warehouse.duckdb_store import DuckDBWarehouse

START = datetime(2026, 2, 2, tzinfo=UTC)
SHIFT_DAY = 49


@pytest.fixture(scope="module")
def decided(tmp_path_factory, loaded_models):
    """20 weeks of traffic decided by the registry's models, landed with the funded loans' outcomes; from day 49 the
    default probability of the <25k income bracket is × 4 (features unchanged)."""
    path = tmp_path_factory.mktemp("perf") / "wh.duckdb"
    data = generate(
        36_000,
        seed=21,
        start=START,
        days=140,
        drifts=[
            ConceptShift(
                start_time=START + timedelta(days=SHIFT_DAY), factor=4.0, segment={"customer_income_bracket": "<25k"}
            )
        ],
    )
    wh = DuckDBWarehouse(path)
    wh.ensure_tables()
    decisions = decide_into(wh, DecisionEngine(loaded_models), data, chunk=5_000)
    land_outcomes(wh, data, decisions, 0.5, seed=21)
    return path


def _settings(trained_registry, path, redis_url="", prefix="bnpl"):
    settings, _ = trained_registry
    return settings.replace(duckdb_path=path, time_column="transaction", redis_url=redis_url, key_prefix=prefix)


def test_realized_auc_per_version_equals_sklearn_on_the_same_joined_rows(trained_registry, decided, tmp_path):
    settings = _settings(trained_registry, decided)
    day = date(2026, 3, 30)
    result = run_analysis(settings, day, log_mlflow=False, send_alerts=False, html_dir=tmp_path)
    w = windows(day, "weekly", settings.performance.maturity_days)
    rows = DuckDBWarehouse(decided).query(
        "SELECT p.all_predictions, p.model_versions, o.bad FROM prediction_logs p JOIN outcomes o USING "
        "(transaction_id) WHERE CAST(p.transaction_timestamp AS TIMESTAMPTZ) >= ? AND "
        "CAST(p.transaction_timestamp AS TIMESTAMPTZ) < ? AND (p.business_decision = 'approve' OR "
        "p.business_decision = 'manual_review')",
        [w.cohort_start, w.cohort_end],
    )
    assert result.report.versions
    for v in result.report.versions:
        import orjson

        y, s = [], []
        for preds, versions, bad in rows:
            alias = {ver: a for a, ver in orjson.loads(versions).items()}.get(v.version)
            if alias is not None:
                y.append(bad)
                s.append(orjson.loads(preds)[alias])
        assert v.loans == len(y) > 1_000
        assert abs(v.auc.value - roc_auc_score(np.array(y), np.array(s))) < 1e-9
    assert result.report.population.startswith("funded loans")
    assert result.outcome_counts["without_decision"] == 0


async def test_one_mlflow_run_per_version_and_date_idempotent_metrics_and_alerts(
    trained_registry, decided, tmp_path, redis_server, key_prefix
):
    import asyncio

    from registry.store import mlflow_client

    settings = _settings(trained_registry, decided, redis_server.url, key_prefix)
    before = date(2026, 3, 23)  # cohort of Feb 2–9: before the shift
    after = before + timedelta(days=7 * 9)  # cohort of Apr 6–13: shifted
    quiet = await asyncio.to_thread(run_analysis, settings, before, html_dir=tmp_path)
    assert quiet.alerts == []
    champion = quiet.report.champion
    drift = Alert(
        alert_id="drift-1",
        alert_key=f"drift:{champion}:categorical_psi:customer_income_bracket",
        kind="categorical_psi",
        severity="warning",
        model_version=champion,
        feature="customer_income_bracket",
        statistic="psi",
        value=0.2,
        threshold=0.1,
        window="5000 events",
        first_seen=datetime.now(UTC).isoformat(),
        message="income mix moved",
    )
    redis = aioredis.from_url(redis_server.url)
    try:
        await redis.xadd(settings.keys.alerts(), encode_entry(drift.alert_id, msgspec.json.encode(drift), 1))
    finally:
        await redis.aclose()
    first = await asyncio.to_thread(run_analysis, settings, after, html_dir=tmp_path)
    kinds = {a.kind for a in first.alerts}
    assert "performance_calibration" in kinds
    assert {a.model_version for a in first.alerts} == {champion}  # the shadow version is measured, not alerted on
    advice = [a for a in first.alerts if a.kind == "retraining_recommended"]
    assert len(advice) == 1
    assert "income mix" not in advice[0].message
    assert "categorical_psi on customer_income_bracket" in advice[0].message
    assert any("income <25k" in (a.feature or "") or a.feature == "overall" for a in first.alerts)
    assert first.raised
    assert set(first.raised) == {a.alert_key for a in first.alerts}

    client = mlflow_client(settings.registry)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`bnpl.analysis_date` = '{after}'")
    assert sorted(r.data.tags["bnpl.model_version"] for r in runs) == sorted(v.version for v in first.report.versions)
    assert {r.info.run_name for r in runs} == {run_name("weekly", after)}
    for r in runs:
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == [f"{run_name('weekly', after)}.html"]
        history = client.get_metric_history(r.info.run_id, "auc")
        assert len(history) == 1
        assert history[0].timestamp == int(datetime(after.year, after.month, after.day, tzinfo=UTC).timestamp() * 1000)

    count = DuckDBWarehouse(decided).query("SELECT count(*) FROM model_metrics")[0][0]
    again = await asyncio.to_thread(run_analysis, settings, after, html_dir=tmp_path)
    assert sorted(again.runs_kept) == sorted(first.runs)
    assert again.runs == first.runs
    assert again.raised == []  # the same analysis alerts nothing twice
    assert DuckDBWarehouse(decided).query("SELECT count(*) FROM model_metrics")[0][0] == count
    rows = DuckDBWarehouse(decided).query(
        "SELECT count(DISTINCT metric_id), count(*), min(analysis_date) FROM model_metrics WHERE population IS NOT NULL"
    )
    assert rows[0][0] == rows[0][1] == count

    redis = aioredis.from_url(redis_server.url)
    try:
        entries = await redis.xrange(settings.keys.alerts())
    finally:
        await redis.aclose()
    alerts = [msgspec.json.decode(decode_entry(f).payload, type=Alert) for _, f in entries]
    assert sorted(a.alert_key for a in alerts if a.alert_id != "drift-1") == sorted(first.raised)
    assert all(a.runbook and a.window.startswith("loans decided") for a in alerts if a.alert_id != "drift-1")
