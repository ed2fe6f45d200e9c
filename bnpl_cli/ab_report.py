"""``bnpl ab-report <experiment>``: read the warehouse, print the A/B report, write HTML, log it to MLflow, alert.

The first time the always-valid (sequential) approval test of an arm crosses significance, an alert is appended to
the ``<prefix>:alerts`` stream (once per experiment and arm; the alert channel delivers it).
"""

from __future__ import annotations

import asyncio
import base64
import io
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from analysis.ab_report import AbReport, ArmData, build_report, render_text
from analysis.proportions import wilson_interval
from common.settings import Settings


def _load(settings: Settings, experiment_id: str) -> list[tuple[Any, ...]]:
    from warehouse.duckdb_store import DuckDBWarehouse

    warehouse = settings.warehouse
    if warehouse.warehouse != "duckdb":
        raise SystemExit("ab-report reads the DuckDB warehouse; for BigQuery query prediction_logs_dedup instead")
    assert warehouse.duckdb_path is not None
    return DuckDBWarehouse(warehouse.duckdb_path).query(
        "SELECT traffic_segment, model_version, business_decision, default_probability, amount, all_predictions, "
        "model_versions FROM prediction_logs WHERE experiment_id = ? ORDER BY assessment_timestamp, prediction_id",
        [experiment_id],
    )


def _arms(rows: list[tuple[Any, ...]], allocation: dict[str, float]) -> list[ArmData]:
    out = []
    for arm in allocation:
        mine = [r for r in rows if r[0] == arm]
        version = Counter(str(r[1]) for r in mine).most_common(1)[0][0] if mine else "-"
        out.append(
            ArmData(
                arm,
                version,
                np.array([r[2] for r in mine], dtype=np.str_),
                np.array([r[3] for r in mine if r[3] is not None], dtype=float),
                np.array([r[4] for r in mine], dtype=float),
            )
        )
    return out


def _paired(rows: list[tuple[Any, ...]], thresholds: dict[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Approve decisions of the champion and of the first shadow model on the same requests."""
    champion, shadow = [], []
    for row in rows:
        scores, versions = orjson.loads(row[5]), orjson.loads(row[6])
        if "champion" not in scores or len(scores) < 2:
            continue
        other = next(a for a in scores if a != "champion")
        champion.append(scores["champion"] < thresholds.get(versions["champion"], float("inf")))
        shadow.append(scores[other] < thresholds.get(versions[other], float("inf")))
    return (np.array(champion), np.array(shadow)) if champion else None


def _html(report: AbReport, arms: list[ArmData], text: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for data in arms:
        approved = np.cumsum(data.decisions == "approve")
        n = np.arange(1, data.decisions.size + 1)
        if not n.size:
            continue
        idx = np.unique(np.linspace(max(20, n.size // 50), n.size, 50).astype(int)) - 1
        rates = approved[idx] / n[idx]
        bands = np.array([wilson_interval(int(approved[i]), int(n[i])) for i in idx])
        ax.plot(n[idx], rates, label=f"{data.arm} (v{data.model_version})")
        ax.fill_between(n[idx], bands[:, 0], bands[:, 1], alpha=0.2)
    ax.set_xlabel("decisions in the arm (time order)")
    ax.set_ylabel("approval rate (95% Wilson CI)")
    ax.set_title(f"{report.experiment}: approval rate over time")
    ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    image = base64.b64encode(buffer.getvalue()).decode()
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>A/B report {report.experiment}</title>"
        f"</head><body><h1>A/B report — {report.experiment}</h1><p><b>{report.verdict}</b></p>"
        f"<img src='data:image/png;base64,{image}' alt='approval rate over time'><pre>{escaped}</pre>"
        "</body></html>"
    )


def _log_to_mlflow(client: Any, experiment_id: str, report: AbReport, html_path: Path) -> str:
    from mlflow.entities import Metric

    run = client.create_run(
        experiment_id,
        run_name=f"ab-report {datetime.now(UTC):%Y-%m-%d %H:%M}",
        tags={"bnpl.kind": "ab-report", "bnpl.verdict": report.verdict[:250]},
    )
    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [Metric("srm_p_value", report.srm.p_value, now, 0)]
    for a in report.arms:
        metrics += [
            Metric(f"{a.arm}.n", a.n, now, 0),
            Metric(f"{a.arm}.approve_rate", a.approve_rate, now, 0),
            Metric(f"{a.arm}.deny_rate", a.deny_rate, now, 0),
        ]
    for c in report.comparisons:
        metrics += [
            Metric(f"{c.arm}.approval_diff", c.approval.difference, now, 0),
            Metric(f"{c.arm}.approval_p_value", c.approval.p_value, now, 0),
            Metric(f"{c.arm}.approval_p_holm", c.adjusted["approval"], now, 0),
            Metric(f"{c.arm}.approval_p_sequential", c.approval_sequential_p, now, 0),
            Metric(f"{c.arm}.score_p_value", c.score.p_value, now, 0),
        ]
    if report.paired is not None:
        metrics += [
            Metric("shadow.disagreement_rate", report.paired.disagreement_rate, now, 0),
            Metric("shadow.mcnemar_p_value", report.paired.p_value, now, 0),
        ]
    client.log_batch(run.info.run_id, metrics=[m for m in metrics if np.isfinite(m.value)])
    client.log_artifact(run.info.run_id, str(html_path))
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def _alert_crossings(settings: Settings, report: AbReport) -> list[str]:
    if not settings.streams.redis_url:
        return []
    return asyncio.run(_raise_crossings(settings, report))


async def _raise_crossings(settings: Settings, report: AbReport) -> list[str]:
    import uuid_utils

    from alerting.channel import raise_alert
    from common.redis_client import connect
    from schemas.alerts import Alert

    redis = connect(settings.streams.redis_url)
    sent = []
    try:
        for c in report.comparisons:
            if c.approval_crossed_at is None:
                continue
            alert = Alert(
                alert_id=str(uuid_utils.uuid7()),
                alert_key=f"ab:{report.experiment}:{c.arm}:approval",
                kind="ab_test_significant",
                severity="info",
                experiment=report.experiment,
                statistic="always_valid_p_value",
                value=c.approval_sequential_p,
                threshold=1 - report.confidence,
                window=f"first {c.approval_crossed_at} decisions",
                first_seen=datetime.now(UTC).isoformat(),
                message=f"{c.arm} vs {report.control}: approval Δ {c.approval.difference:+.2%} is significant "
                f"(always-valid p {c.approval_sequential_p:.3g})",
                runbook="Review `bnpl ab-report` before promoting: `bnpl promote --alias champion --version …`",
            )
            if await raise_alert(redis, settings.keys, alert, cooldown_s=None):  # once per experiment and arm
                sent.append(alert.alert_key)
    finally:
        await redis.aclose()
    return sent


def run(settings: Settings, name: str, out: str | None) -> int:
    from registry import list_versions, mlflow_client
    from registry.experiments import get_experiment

    registry = settings.registry
    client = mlflow_client(registry)
    info = get_experiment(client, registry.model_name, name)
    experiment = info.as_experiment()
    allocation = dict(experiment.allocation)
    rows = _load(settings, info.experiment_id)
    arms = _arms(rows, allocation)
    thresholds = {v.version: v.threshold_review for v in list_versions(client, registry.model_name)}
    report = build_report(
        name,
        arms,
        allocation,
        int(info.tags.get("bnpl.minimum_sample_size", "1000")),
        float(info.tags.get("bnpl.confidence_level", "0.95")),
        _paired(rows, thresholds),
    )
    text = render_text(report)
    print(text)
    html_path = Path(out) if out else Path(tempfile.mkdtemp()) / f"ab-report-{name}.html"
    html_path.write_text(_html(report, arms, text))
    run_id = _log_to_mlflow(client, info.experiment_id, report, html_path)
    print(f"\nHTML report: {html_path}\nlogged to MLflow run {run_id} (experiment {info.experiment_id})")
    for key in _alert_crossings(settings, report):
        print(f"alert published: {key} (first crossing of the sequential test)")
    return 0
