"""Run one performance analysis end to end: read the warehouse, analyse, write ``model_metrics``, log one MLflow run
per version and analysis date with its HTML report, raise performance alerts. Idempotent per (version, analysis
date): metric ids are deterministic (re-running replaces the rows), an existing MLflow run is kept (``force``
replaces it), alert keys carry the analysis date (a re-run alerts nothing twice).

**Alerts** (through the alert stream and webhooks, like drift alerts):

* ``performance_auc_drop`` (critical): a version's AUC among its own approved loans is more than
  ``BNPL_PERFORMANCE_AUC_DROP`` (relative) below the same figure on its holdout, and the upper end of its
  ``1 − α`` DeLong interval is below the holdout figure (a drop this sample can show, not noise);
* ``performance_calibration``: observed/expected defaults outside its calibration interval overall (critical) or in a
  score band (warning); the intervals are Bonferroni-adjusted over the bands and overall so each version has at most
  ``α`` chance of a false alarm per analysis;
* ``performance_default_rate`` (critical): an arm's default rate among approved is above
  ``BNPL_PERFORMANCE_DEFAULT_LIMIT`` with the lower end of its ``1 − α`` clustered interval;
* ``retraining_recommended`` (critical): a version has a performance alert now and drift alerts in the last 30 days;
  the alert lists both;
* ``fairness_adverse_impact`` (critical): a deciding version approves an age bracket at less than four fifths of the
  rate of its most-approved bracket (the adverse impact ratio, on the last period's decisions), with ``1 − α``
  confidence (clustered variances).

No alert below ``BNPL_PERFORMANCE_MIN_LOANS`` matured loans with an outcome, and none for a version that decided fewer
loans than that: a shadow-scored version is measured and reported (MLflow, ``model_metrics``, the HTML report, its
paired comparison with the champion) — it decides nothing, so nothing about it needs an operator now; promotion
review reads its figures.

**Reconciliation first.** Before analysing, the days of the matured cohort and of the fresh period are reconciled
(``bnpl reconcile``: the API's published ledger against the warehouse's rows per day and API instance). A mismatch
does not stop the analysis — outcomes and decisions already landed are still worth measuring, and a blocked weekly
job would hide the very report that shows the gap — it is a warning in the report (``JobResult.reconciliation``) and
in the log. Without ``BNPL_REDIS_URL`` (the ledger lives in Redis) or with BigQuery, the report says it was not run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from common.settings import Settings
from features.spec import metric_key
from performance.analysis import PerformanceReport, VersionReport, analyse, loans_of, windows
from schemas.alerts import Alert

log = logging.getLogger(__name__)

EXPERIMENT: Final = "bnpl-performance"
DRIFT_EVIDENCE_DAYS: Final = 30
RUNBOOKS: Final = {
    "performance_auc_drop": "The model ranks risk worse than at training: check drift alerts and the segments, "
    "retrain on recent matured outcomes, compare with the challenger (`bnpl ab-report`).",
    "performance_calibration": "Defaults differ from what the scores predict: find the band or segment in the "
    "performance report; recalibrate or retrain; consider tighter thresholds meanwhile.",
    "performance_default_rate": "Approved loans default above the limit: review thresholds now (`bnpl promote` a "
    "safer policy or model), then the performance report.",
    "retraining_recommended": "Inputs drifted and performance dropped: retrain on recent data, register, "
    "compare with `bnpl ab-report` before promoting.",
    "fairness_adverse_impact": "A protected group is approved far less often: take the version out of its arm "
    "(`bnpl promote`), review its features for proxies of the protected field, document the business necessity "
    "or retrain with the field protected.",
}


@dataclass(slots=True)
class JobResult:
    report: PerformanceReport
    metric_rows: int
    runs: dict[str, str] = field(default_factory=dict)  # version → MLflow run id
    runs_kept: list[str] = field(default_factory=list)  # versions whose run existed (not logged again)
    alerts: list[Alert] = field(default_factory=list)  # what this analysis found
    raised: list[str] = field(default_factory=list)  # alert keys actually raised (not deduplicated)
    html: Path | None = None
    outcome_counts: dict[str, int] = field(default_factory=dict)
    verdict: Any = None  # the guardian's verdict (set by governance.guardian.guarded_analysis)
    #: what reconciling the period's days found: a summary line, then one warning per mismatch
    reconciliation: list[str] = field(default_factory=list)


def run_name(cadence: str, analysis_date: date) -> str:
    """``weekly_performance_<date>`` (the architecture document's name)."""
    return f"{cadence}_performance_{analysis_date.isoformat()}"


def metric_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def version_metrics(v: VersionReport) -> dict[str, tuple[float, float | None, float | None, int]]:
    """metric → (value, CI low, CI high, sample size) of one version."""
    out: dict[str, tuple[float, float | None, float | None, int]] = {
        "auc": (v.auc.value, v.auc.low, v.auc.high, v.loans),
        "gini": (v.gini, None, None, v.loans),
        "ks": (v.ks, None, None, v.loans),
        "brier": (v.brier, None, None, v.loans),
        "loans": (float(v.loans), None, None, v.loans),
        "default_rate": (v.bads / v.loans if v.loans else math.nan, None, None, v.loans),
        "auc_approved": (v.auc_approved.value, v.auc_approved.low, v.auc_approved.high, v.auc_approved.n),
        "default_rate_approved": (
            v.default_approved.value,
            v.default_approved.low,
            v.default_approved.high,
            v.default_approved.n,
        ),
        "estimated_default_rate_approved": (
            v.estimated_matured.default_rate,
            v.estimated_matured.default_rate_low,
            v.estimated_matured.default_rate_high,
            v.estimated_matured.loans,
        ),
        "estimated_auc_approved": (v.estimated_matured.auc, None, None, v.estimated_matured.loans),
        "estimation_gap_default_rate": (v.gap, None, None, v.estimated_matured.loans),
        "fresh_estimated_default_rate_approved": (
            v.estimated_fresh.default_rate,
            v.estimated_fresh.default_rate_low,
            v.estimated_fresh.default_rate_high,
            v.estimated_fresh.loans,
        ),
        "fresh_estimated_auc_approved": (v.estimated_fresh.auc, None, None, v.estimated_fresh.loans),
    }
    c = v.calibration
    if c is not None:
        out["observed_expected"] = (c.overall.ratio, c.overall.ratio_low, c.overall.ratio_high, c.overall.loans)
        out["calibration_in_the_large"] = (c.citl, c.citl_low, c.citl_high, v.loans)
        out["hosmer_lemeshow"] = (c.hosmer_lemeshow, None, None, v.loans)
        out["hosmer_lemeshow_p_value"] = (c.hl_p_value, None, None, v.loans)
    if v.vs_champion is not None:
        t = v.vs_champion
        out["auc_vs_champion"] = (t.delta, t.ci_low, t.ci_high, v.loans)
        out["auc_vs_champion_p_value"] = (t.p_value, None, None, v.loans)
    return out


def metric_rows(report: PerformanceReport, computed_at: datetime) -> list[dict[str, Any]]:
    """``model_metrics`` rows of an analysis: per version, and per arm (approval and default rate)."""
    w = report.windows
    day = w.analysis_date.isoformat()
    name = report.model_name or ""
    analysis_at = datetime(w.analysis_date.year, w.analysis_date.month, w.analysis_date.day, tzinfo=UTC)
    rows = []

    def add(version: str, arm: str | None, metric: str, value: tuple[float, Any, Any, int], population: str) -> None:
        if _finite(value[0]) is None:
            return
        rows.append(
            {
                "metric_id": metric_id(name, version, arm or "", metric, day, w.cadence, population),
                "model_name": name,
                "model_version": version,
                "arm": arm,
                "metric": metric,
                "value": float(value[0]),
                "window_start": w.cohort_start,
                "window_end": w.cohort_end,
                "computed_at": computed_at,
                "analysis_date": analysis_at,
                "population": population,
                "ci_low": _finite(value[1]),
                "ci_high": _finite(value[2]),
                "sample_size": int(value[3]),
            }
        )

    for v in report.versions:
        for metric, value in version_metrics(v).items():
            population = "fresh approved decisions (estimated)" if metric.startswith("fresh_") else "funded loans"
            if metric.endswith("_approved") and not metric.startswith("fresh_"):
                population = "approved loans"
            add(v.version, None, metric, value, population)
    for f in report.fairness:
        for b in f.brackets:
            key = metric_key(b.bracket)
            a = b.approval
            add(f.version, None, f"approval_rate_age_{key}", (a.value, a.low, a.high, a.n), "fresh decisions")
            add(
                f.version, None, f"adverse_impact_ratio_age_{key}", (b.impact_ratio, None, None, a.n), "fresh decisions"
            )
            d = b.default_approved
            add(f.version, None, f"default_rate_approved_age_{key}", (d.value, d.low, d.high, d.n), "approved loans")
    for arm in report.arms:
        version = ",".join(arm.versions)
        r = arm.approval_rate
        add(version, arm.arm, "approval_rate", (r.value, r.low, r.high, r.n), "all decisions")
        d = arm.default_approved
        add(version, arm.arm, "default_rate_approved", (d.value, d.low, d.high, d.n), "approved loans")
    return rows


def _alert(report: PerformanceReport, version: str | None, kind: str, severity: str, **kw: Any) -> Alert:
    import uuid_utils

    w = report.windows
    key_part = kw.pop("key_part", "")
    return Alert(
        alert_id=str(uuid_utils.uuid7()),
        alert_key=f"performance:{version or '-'}:{kind}:{key_part}:{w.analysis_date.isoformat()}",
        kind=kind,
        severity=severity,
        model_name=report.model_name,
        model_version=version,
        window=f"loans decided {w.cohort_start:%Y-%m-%d} – {w.cohort_end - timedelta(seconds=1):%Y-%m-%d} "
        f"(matured, analysis {w.analysis_date.isoformat()})",
        first_seen=datetime.now(UTC).isoformat(),
        runbook=RUNBOOKS[kind],
        **kw,
    )


def findings(report: PerformanceReport, settings: Settings) -> list[Alert]:
    """The performance alerts of an analysis (before dedup)."""
    perf = settings.performance
    out: list[Alert] = []
    for v in report.versions:
        if v.loans < perf.min_loans or v.deciding_loans < perf.min_loans:
            continue  # too few loans, or a shadow version: measured and reported, not alerted on
        ref = v.holdout_auc_approved
        a = v.auc_approved
        if ref and a.n and math.isfinite(a.value) and a.value < (1 - perf.auc_drop) * ref and a.high < ref:
            out.append(
                _alert(
                    report,
                    v.version,
                    "performance_auc_drop",
                    "critical",
                    statistic="auc_approved",
                    value=a.value,
                    threshold=(1 - perf.auc_drop) * ref,
                    message=f"v{v.version} AUC among approved {a.value:.3f} (upper {1 - report.alpha:.1%} bound "
                    f"{a.high:.3f}) vs {ref:.3f} on its holdout: {1 - a.value / ref:.1%} drop "
                    f"(limit {perf.auc_drop:.0%}), {a.n:,} loans",
                )
            )
        c = v.calibration_alert
        if c is not None:
            failed = [*c.failed_bands, *(b for b in v.segment_bands if b.outside)]
            if failed:
                overall = c.overall.outside
                shown = c.overall if overall else max(failed, key=lambda b: abs(b.z))
                where = (
                    "overall"
                    if overall
                    else (shown.label if shown.label.startswith("income") else f"score band {shown.label}")
                )
                out.append(
                    _alert(
                        report,
                        v.version,
                        "performance_calibration",
                        "critical" if overall else "warning",
                        key_part="overall" if overall else "band",
                        statistic="observed_expected",
                        feature=where,
                        value=shown.ratio,
                        threshold=shown.ratio_high if shown.ratio > 1 else shown.ratio_low,
                        message=f"v{v.version} calibration fails {where}: observed/expected defaults "
                        f"{shown.ratio:.2f} ({shown.observed:.0f} vs {shown.expected:.1f} expected on "
                        f"{shown.loans:,} funded loans; calibrated range "
                        f"{shown.ratio_low:.2f}–{shown.ratio_high:.2f}); "
                        f"{len(failed)} of {len(c.bands) + 1 + len(v.segment_bands)} checks outside",
                    )
                )
    from scipy import stats

    one_sided = float(stats.norm.ppf(1 - report.alpha))
    for f in report.fairness:
        worst = f.lowest
        if worst is None or worst.four_fifths_z >= -one_sided:
            continue
        out.append(
            _alert(
                report,
                f.version,
                "fairness_adverse_impact",
                "critical",
                key_part=worst.bracket,
                statistic="adverse_impact_ratio",
                feature=f"customer_age_bracket={worst.bracket}",
                value=worst.impact_ratio,
                threshold=0.8,
                message=f"v{f.version} approves age {worst.bracket} at {worst.approval.value:.1%} vs "
                f"{f.reference} at {worst.approval.value / worst.impact_ratio:.1%}: adverse impact ratio "
                f"{worst.impact_ratio:.2f}, below the four-fifths line (z {worst.four_fifths_z:.1f}; "
                f"{worst.decisions:,} decisions in the last period)",
            )
        )
    z = float(stats.norm.ppf(1 - report.alpha / 2))
    for arm in report.arms:
        d = arm.default_approved
        if d.n < perf.min_loans or not math.isfinite(d.value):
            continue
        low = d.value - z * (d.value - d.low) / float(stats.norm.ppf(0.975)) if math.isfinite(d.low) else math.nan
        if low > perf.default_limit:
            out.append(
                _alert(
                    report,
                    ",".join(arm.versions) or None,
                    "performance_default_rate",
                    "critical",
                    key_part=arm.arm,
                    statistic="default_rate_approved",
                    value=d.value,
                    threshold=perf.default_limit,
                    message=f"arm {arm.arm}: {d.value:.2%} of approved loans defaulted (lower bound {low:.2%}) "
                    f"above the limit {perf.default_limit:.2%}, {d.n:,} loans",
                )
            )
    return out


def retraining(report: PerformanceReport, alerts: list[Alert], drift: dict[str, list[Alert]]) -> list[Alert]:
    """A retraining recommendation per version with a performance alert now and drift alerts recently."""
    out = []
    for version in sorted({a.model_version for a in alerts if a.model_version}):
        found = drift.get(version, [])
        if not found:
            continue
        mine = [a for a in alerts if a.model_version == version]
        evidence = "; ".join(a.message for a in mine[:3])
        drifted = ", ".join(sorted({f"{a.kind} on {a.feature or 'score'}" for a in found})[:5])
        out.append(
            _alert(
                report,
                version,
                "retraining_recommended",
                "critical",
                statistic="performance_and_drift_alerts",
                value=float(len(mine) + len(found)),
                threshold=2.0,
                message=f"retrain v{version}: performance — {evidence}; drift in the last {DRIFT_EVIDENCE_DAYS} "
                f"days — {drifted}",
            )
        )
    return out


def references(settings: Settings) -> dict[str, dict[str, float]]:
    """version → training figures recorded on it (``holdout_auc``, ``holdout_auc_approved``)."""
    from registry.store import list_versions, mlflow_client

    try:
        client = mlflow_client(settings.registry)
        versions = list_versions(client, settings.registry.model_name)
    except Exception as exc:  # no registry: metrics without the AUC-drop rule
        log.warning("performance: no training references (%s)", exc)
        return {}
    out: dict[str, dict[str, float]] = {}
    for v in versions:
        figures: dict[str, float] = {}
        for key in ("holdout_auc", "holdout_auc_approved"):
            if key in v.tags:
                figures[key] = float(v.tags[key])
        out[v.version] = figures
    return out


async def _drift_alerts(redis: Any, settings: Settings) -> dict[str, list[Alert]]:
    from alerting.channel import alert_of

    since = int((datetime.now(UTC) - timedelta(days=DRIFT_EVIDENCE_DAYS)).timestamp() * 1000)
    out: dict[str, list[Alert]] = {}
    for _, fields in await redis.xrange(settings.keys.alerts(), min=f"{since}-0", max="+"):
        alert = alert_of(fields)
        if alert is not None and alert.alert_key.startswith("drift:") and alert.model_version:
            out.setdefault(alert.model_version, []).append(alert)
    return out


async def _raise(settings: Settings, report: PerformanceReport, alerts: list[Alert]) -> tuple[list[Alert], list[str]]:
    from alerting.channel import raise_alert
    from common.redis_client import redis_for

    redis = redis_for(settings.streams)
    raised = []
    try:
        alerts = alerts + retraining(report, alerts, await _drift_alerts(redis, settings))
        ttl = max(settings.alerts.alert_cooldown_s, 90 * 86_400)  # the key names the analysis date: keep it
        for alert in alerts:
            if await raise_alert(redis, settings.keys, alert, ttl):
                raised.append(alert.alert_key)
                log.info("ALERT %s", alert.message)
    finally:
        await redis.aclose()
    return alerts, raised


def log_runs(
    settings: Settings, report: PerformanceReport, html: Path, force: bool = False
) -> tuple[dict[str, str], list[str]]:
    """One MLflow run per version for this analysis date (kept if it exists, replaced with ``force``)."""
    from mlflow.entities import Metric

    from registry.store import ensure_experiment, mlflow_client

    client = mlflow_client(settings.registry)
    experiment_id = ensure_experiment(client, settings.registry, EXPERIMENT)
    w = report.windows
    day = w.analysis_date.isoformat()
    stamp = int(
        datetime(w.analysis_date.year, w.analysis_date.month, w.analysis_date.day, tzinfo=UTC).timestamp() * 1000
    )
    runs: dict[str, str] = {}
    kept: list[str] = []
    for v in report.versions:
        existing = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`bnpl.analysis_date` = '{day}' AND tags.`bnpl.model_version` = '{v.version}' "
            f"AND tags.`bnpl.cadence` = '{w.cadence}'",
        )
        if existing and not force:
            runs[v.version] = existing[0].info.run_id
            kept.append(v.version)
            continue
        for old in existing:
            client.delete_run(old.info.run_id)
        run = client.create_run(
            experiment_id,
            run_name=run_name(w.cadence, w.analysis_date),
            tags={
                "bnpl.kind": "performance",
                "bnpl.analysis_date": day,
                "bnpl.cadence": w.cadence,
                "bnpl.model_version": v.version,
                "bnpl.model_alias": v.alias,
                "bnpl.model_name": report.model_name or "",
                "bnpl.population": report.population,
                "bnpl.cohort": f"{w.cohort_start.isoformat()} – {w.cohort_end.isoformat()}",
            },
        )
        metrics = []
        for name, (value, low, high, _) in version_metrics(v).items():
            for suffix, x in (("", value), ("_ci_low", low), ("_ci_high", high)):
                if x is not None and math.isfinite(x):
                    metrics.append(Metric(name + suffix, float(x), stamp, 0))
        client.log_batch(run.info.run_id, metrics=metrics)
        client.log_artifact(run.info.run_id, str(html))
        client.set_terminated(run.info.run_id)
        runs[v.version] = run.info.run_id
    return runs, kept


def reconcile_period(settings: Settings, days: list[date], store: Any) -> list[str]:
    """Reconcile ``days`` (published ledger vs the warehouse ``store``): a summary line, then one line per
    mismatch. Never raises: the analysis goes on whatever this finds."""
    from performance.reconcile import IN_FLIGHT, WAREHOUSE, reconcile, warnings
    from warehouse.duckdb_store import DuckDBWarehouse

    span = f"{days[0]} – {days[-1]}"
    if not settings.streams.redis_url:
        return [f"reconciliation of {span} not run: the published ledger lives in Redis and BNPL_REDIS_URL is not set"]
    try:  # DuckDB: the store the job already has open; BigQuery: one count query on the period's partitions
        result = reconcile(
            settings, days, sinks=(WAREHOUSE,), warehouse=store if isinstance(store, DuckDBWarehouse) else None
        )
    except Exception as exc:
        log.warning("performance: reconciliation of %s failed (%s: %s)", span, exc.__class__.__name__, exc)
        return [f"reconciliation of {span} not run ({exc.__class__.__name__}: {exc})"]
    if not result.recorded:
        return [f"reconciliation of {span}: no published ledger for these days (not judged)"]
    flowing = sum(1 for r in result.rows if r.status == IN_FLIGHT)
    tail = f", {flowing} (day, instance) still in flight" if flowing else ""
    if result.ok:
        return [f"reconciliation of {span}: the warehouse holds what the API published{tail}"]
    lines = warnings(result)
    log.warning("performance: reconciliation of %s found %d mismatch(es): %s", span, len(result.mismatches), lines)
    return [
        f"WARNING reconciliation of {span}: {len(result.mismatches)} (day, instance) differ from what the API "
        f"published{tail} — the analysis below ran regardless",
        *lines,
    ]


def period_days(win: Any) -> list[date]:
    """The UTC days of an analysis' matured cohort and fresh period."""
    days: set[date] = set()
    for start, end in ((win.cohort_start, win.cohort_end), (win.fresh_start, win.fresh_end)):
        day = start.date()
        while datetime.combine(day, datetime.min.time(), tzinfo=UTC) < end:
            days.add(day)
            day += timedelta(days=1)
    return sorted(days)


def run_analysis(
    settings: Settings,
    analysis_date: date,
    *,
    cadence: str | None = None,
    force: bool = False,
    log_mlflow: bool = True,
    send_alerts: bool = True,
    html_dir: Path | None = None,
    warehouse: Any = None,
    write_html: bool = True,
) -> JobResult:
    """One analysis end to end (see the module docstring); ``write_html=False`` skips the report page (and so the
    MLflow runs, whose artifact it is). ``governance.guardian.guarded_analysis`` runs the guardian after it."""
    from performance.html import render_html
    from warehouse.base import make_warehouse

    perf = settings.performance
    win = windows(analysis_date, cadence or perf.cadence, perf.maturity_days)
    store = warehouse or make_warehouse(settings.warehouse)
    reconciliation = reconcile_period(settings, period_days(win), store)
    columns = store.performance_rows(win.read_start, win.fresh_end, perf.time_column)
    report = analyse(loans_of(columns), win, references(settings) if log_mlflow or send_alerts else {}, perf.alpha)
    rows = metric_rows(report, datetime.now(UTC))
    store.write_metrics(rows)
    result = JobResult(report, len(rows), outcome_counts=store.outcome_counts(), reconciliation=reconciliation)
    result.alerts = findings(report, settings)
    if send_alerts and settings.streams.redis_url:
        result.alerts, result.raised = asyncio.run(_raise(settings, report, result.alerts))
    if not write_html:
        return result
    directory = html_dir or Path(tempfile.mkdtemp(prefix="bnpl-performance-"))
    directory.mkdir(parents=True, exist_ok=True)
    html = directory / f"{run_name(win.cadence, analysis_date)}.html"
    html.write_text(render_html(report, result.alerts))
    result.html = html
    if log_mlflow:
        result.runs, result.runs_kept = log_runs(settings, report, html, force)
    return result
