"""``bnpl ab-report <experiment>``: read the warehouse, print the A/B report, write HTML, log it to MLflow, alert.

The analysis unit is the customer (``analysis.ab_report``). The first time the always-valid sequential test of a
treatment crosses significance, an ``ab_test_significant`` alert carrying the p-value and the difference *of that
look* is appended to the ``<prefix>:{alerts}`` stream (once per experiment and segment; the alert channel delivers
it).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from analysis.ab_report import (
    DEFAULT_MARGINS,
    SUCCESS,
    AbReport,
    Decisions,
    Plan,
    build_report,
    parse_margins,
    render_text,
)
from analysis.clustered import customer_sums, linearised
from analysis.paired import PairedComparison, mcnemar
from common.settings import Settings

COLUMNS = (
    "traffic_segment, model_version, customer_id, business_decision, default_probability, processing_time_ms, "
    "all_predictions, model_versions"
)


def _warehouse(settings: Settings) -> Any:
    from bnpl_cli.report import duckdb_warehouse

    return duckdb_warehouse(settings, "ab-report", "; for BigQuery query prediction_logs_dedup instead")


def _load(settings: Settings, experiment_id: str) -> list[tuple[Any, ...]]:
    """The experiment's decisions in time order, each with its loan's outcome when one is known (``bad``: NULL when
    unknown or not funded; always NULL without an ``outcomes`` table)."""
    warehouse = _warehouse(settings)
    has_outcomes = bool(
        warehouse.query("SELECT count(*) FROM information_schema.tables WHERE table_name = 'outcomes'")[0][0]
    )
    outcome = "o.bad" if has_outcomes else "CAST(NULL AS BOOLEAN)"
    join = "LEFT JOIN outcomes o USING (transaction_id) " if has_outcomes else ""
    columns = ", ".join(f"p.{c.strip()}" for c in COLUMNS.split(","))
    query = (
        f"SELECT {columns}, {outcome} FROM prediction_logs p {join}WHERE p.experiment_id = ? "  # noqa: S608 - ours
        "ORDER BY p.assessment_timestamp, p.prediction_id"
    )
    rows: list[tuple[Any, ...]] = warehouse.query(query, [experiment_id])
    return rows


def decisions_of(rows: list[tuple[Any, ...]]) -> Decisions:
    """The report's input from warehouse rows (``COLUMNS``, time order)."""
    return Decisions(
        arm=np.array([r[0] for r in rows], dtype=np.str_),
        version=np.array([str(r[1] or "rules") for r in rows], dtype=np.str_),
        customer=np.array([r[2] for r in rows], dtype=np.str_),
        decision=np.array([r[3] for r in rows], dtype=np.str_),
        score=np.array([math.nan if r[4] is None else r[4] for r in rows], dtype=np.float64),
        latency_ms=np.array([r[5] for r in rows], dtype=np.float64),
        defaulted=_defaulted(rows),
    )


def _defaulted(rows: list[tuple[Any, ...]]) -> npt.NDArray[np.float64] | None:
    """1 defaulted, 0 repaid, NaN unknown — or None when no decision of the experiment has an outcome yet."""
    if not rows or len(rows[0]) < 9 or all(r[8] is None for r in rows):
        return None
    return np.array([math.nan if r[8] is None else float(r[8]) for r in rows], dtype=np.float64)


def plan_of(tags: dict[str, str], allocation: dict[str, float]) -> Plan:
    """The experiment's plan from its MLflow tags (``bnpl.minimum_sample_size`` counts customers per arm)."""
    margins = {**DEFAULT_MARGINS, **parse_margins(tags.get("bnpl.guardrail_margins", ""))}
    return Plan(
        allocation=allocation,
        minimum_customers=int(tags.get("bnpl.minimum_sample_size") or 1_000),
        confidence=float(tags.get("bnpl.confidence_level") or 0.95),
        margins=margins,
        minimum_effect=float(tags.get("bnpl.minimum_effect") or 0.02),
    )


def _covariates(settings: Settings, experiment_id: str, start: str) -> dict[str, float]:
    """CUPED covariates: each customer's linearised approval contribution before the experiment started."""
    query = (
        "SELECT customer_id, business_decision FROM prediction_logs "
        "WHERE assessment_timestamp < CAST(? AS TIMESTAMPTZ) "
        "AND customer_id IN (SELECT customer_id FROM prediction_logs WHERE experiment_id = ?)"
    )
    rows = _warehouse(settings).query(query, [start, experiment_id])
    if not rows:
        return {}
    customers = np.array([r[0] for r in rows], dtype=np.str_)
    names, codes = np.unique(customers, return_inverse=True)
    approved = np.array([r[1] == "approve" for r in rows], dtype=np.float64)
    sums = customer_sums(codes.astype(np.int64), approved, np.ones(len(rows)))
    return {str(names[c]): float(v) for c, v in zip(sums.codes, linearised(sums), strict=True)}


def _paired(rows: list[tuple[Any, ...]], thresholds: dict[str, float]) -> PairedComparison | None:
    """Approve decisions of the champion and of the first shadow model on the same requests."""
    champion, shadow = [], []
    for row in rows:
        scores, versions = orjson.loads(row[6]), orjson.loads(row[7])
        if "champion" not in scores or len(scores) < 2:
            continue
        other = next(a for a in scores if a != "champion")
        champion.append(scores["champion"] < thresholds.get(versions["champion"], float("inf")))
        shadow.append(scores[other] < thresholds.get(versions[other], float("inf")))
    return mcnemar(champion, shadow) if champion else None


def _metric_label(segment: str) -> str:
    """A segment label as an MLflow metric name part (``@`` is not allowed there).

    >>> _metric_label("challenger@v3")
    'challenger/v3'
    """
    return segment.replace("@", "/")


def _log_to_mlflow(client: Any, experiment_id: str, report: AbReport, html_path: Path) -> str:
    from mlflow.entities import Metric

    run = client.create_run(
        experiment_id,
        run_name=f"ab-report {datetime.now(UTC):%Y-%m-%d %H:%M}",
        tags={"bnpl.kind": "ab-report", "bnpl.verdict": report.verdict, "bnpl.reason": report.reason[:250]},
    )
    now = int(datetime.now(UTC).timestamp() * 1000)
    values = {"srm_p_value": report.srm.p_value, "design_effect": report.design_effect}
    for seg in report.segments:
        label = _metric_label(seg.label)
        values[f"{label}.customers"] = seg.customers
        values[f"{label}.decisions"] = seg.decisions
        values[f"{label}.approve_rate"] = seg.mix["approve"]
    for c in report.comparisons:
        label = _metric_label(c.treatment.label)
        for r in c.results:
            values[f"{label}.{r.metric}_diff"] = r.difference.delta
            values[f"{label}.{r.metric}_p_value"] = r.difference.p_value
        values[f"{label}.approval_p_holm"] = c.success_p_holm
        values[f"{label}.approval_p_sequential"] = c.sequential.p_value
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if math.isfinite(float(v))]
    client.log_batch(run.info.run_id, metrics=metrics)
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
    from common.redis_client import redis_for
    from schemas.alerts import Alert

    redis = redis_for(settings.streams)
    sent = []
    try:
        for c in report.comparisons:
            look = c.sequential.crossed
            if look is None:
                continue
            alert = Alert(
                alert_id=str(uuid_utils.uuid7()),
                alert_key=f"ab:{report.experiment}:{c.treatment.label}:{SUCCESS}",
                kind="ab_test_significant",
                severity="info",
                experiment=report.experiment,
                statistic="always_valid_p_value",
                value=look.p_value,
                threshold=1 - report.plan.confidence,
                window=f"first {look.decisions:,} decisions ({look.customers:,} customers)",
                first_seen=datetime.now(UTC).isoformat(),
                message=f"{c.treatment.label} vs {c.control.label}: approval Δ {look.delta:+.2%} "
                f"(always-valid p {look.p_value:.3g}) after {look.decisions:,} decisions from "
                f"{look.customers:,} customers",
                runbook="Review `bnpl ab-report` (guardrails, verdict) before promoting: `bnpl promote …`",
            )
            if await raise_alert(redis, settings.keys, alert, cooldown_s=None):  # once per experiment and segment
                sent.append(alert.alert_key)
    finally:
        await redis.aclose()
    return sent


def report_for(settings: Settings, name: str) -> tuple[AbReport, Any, str]:
    """The report of experiment ``name`` from the warehouse (and the MLflow client and experiment id)."""
    from registry import list_versions, mlflow_client
    from registry.experiments import get_experiment

    registry = settings.registry
    client = mlflow_client(registry)
    info = get_experiment(client, registry.model_name, name)
    allocation = dict(info.as_experiment().allocation)
    rows = _load(settings, info.experiment_id)
    thresholds = {v.version: v.threshold_review for v in list_versions(client, registry.model_name)}
    start = info.tags.get("bnpl.start_date", "")
    cuped = info.tags.get("bnpl.cuped", "").lower() == "true" and bool(start)
    report = build_report(
        name,
        decisions_of(rows),
        plan_of(info.tags, allocation),
        covariates=_covariates(settings, info.experiment_id, start) if cuped else None,
        paired=_paired(rows, thresholds),
    )
    return report, client, info.experiment_id


def run(settings: Settings, name: str, out: str | None) -> int:
    from bnpl_cli.ab_html import render_html

    report, client, experiment_id = report_for(settings, name)
    text = render_text(report)
    print(text)
    html_path = Path(out) if out else Path(tempfile.mkdtemp()) / f"ab-report-{name}.html"
    html_path.write_text(render_html(report, text))
    run_id = _log_to_mlflow(client, experiment_id, report, html_path)
    print(f"\nHTML report: {html_path}\nlogged to MLflow run {run_id} (experiment {experiment_id})")
    for key in _alert_crossings(settings, report):
        print(f"alert published: {key} (first crossing of the sequential test)")
    return 0
