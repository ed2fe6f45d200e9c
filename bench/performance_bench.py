"""``make bench-performance``: the performance job on a year of traffic, with and without a concept shift.

Models are trained into a temporary registry (champion decides, challenger is shadow-scored). Traffic is generated,
decided request by request by the decision engine (the events the API publishes), landed in a DuckDB warehouse by
the warehouse code, and the funded loans' outcomes (approved + manual reviews at ``BNPL_REVIEW_APPROVAL_RATE``)
landed by the outcomes code. Then the performance job runs for every weekly analysis date whose cohort is in the
data, exactly as ``bnpl performance --as-of`` does (without MLflow), cohorts cut on the transaction time.

* **No drift:** ``BENCH_PERFORMANCE_DECISIONS`` decisions (default 1,000,000) from February to mid-October (the
  holiday season is left out: the models are known to under-predict it, which the monitor would rightly flag — that
  is measured separately at the end). Counted: performance alerts of every kind (there should be none), and how
  often the realized default rate among approved falls inside the interval estimated from the scores.
* **Concept shift:** the same generator with the default probability of the ``<25k`` income bracket × 2 from a
  Monday in May (features unchanged, invisible to drift detectors). Measured: the first analysis that alerts, in
  analysis periods after the first shifted cohort matured.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from common.settings import Settings
from datagen import ConceptShift, generate
from performance.analysis import weekly_analysis_dates, windows
from performance.job import run_analysis
from traffic.landing import decide_into, land_outcomes
from warehouse.duckdb_store import DuckDBWarehouse

START = datetime(2026, 2, 2, tzinfo=UTC)  # a Monday
SHIFT_START = datetime(2026, 5, 4, tzinfo=UTC)
CHUNK = 50_000


def _engine(settings: Settings) -> Any:
    from decision.engine import DecisionEngine
    from registry import mlflow_client
    from registry.loader import build_model_set, registry_pointers
    from training.train import train_and_register

    train_and_register(settings, promote=True)
    client = mlflow_client(settings.registry)
    return DecisionEngine(build_model_set(*registry_pointers(client, settings.registry)))


def _land(
    engine: Any,
    settings: Settings,
    path: Path,
    n: int,
    days: int,
    seed: int,
    drifts: list[Any],
    start: datetime = START,
) -> int:
    """Decide ``n`` generated requests, land them and their funded outcomes; returns the outcomes landed."""
    data = generate(n, seed=seed, start=start, days=days, drifts=drifts)
    wh = DuckDBWarehouse(path)
    wh.ensure_tables()
    decisions = decide_into(wh, engine, data, chunk=CHUNK, progress=_progress)
    return land_outcomes(wh, data, decisions, settings.performance.review_approval_rate, seed, chunk=CHUNK)


def _progress(done: int, total: int) -> None:
    print(f"  {done:,}/{total:,} decided and landed", file=sys.stderr, flush=True)


def _run(settings: Settings, path: Path, dates: list[date]) -> list[Any]:
    wh = DuckDBWarehouse(path)
    return [
        run_analysis(settings, d, log_mlflow=False, send_alerts=False, warehouse=wh, write_html=False) for d in dates
    ]


def main() -> int:
    began = time.perf_counter()
    base = Settings.from_env()
    n = base.bench.bench_performance_decisions
    tmp = Path(tempfile.mkdtemp(prefix="bnpl-bench-performance-"))
    settings = Settings.build(
        data_dir=tmp,
        time_column="transaction",
        schedule_s=0,
        review_approval_rate=base.performance.review_approval_rate,
    )
    engine = _engine(settings)
    perf = settings.performance
    days = 259  # February 2 – October 18: 37 weeks, no holiday season

    print(f"no drift: {n:,} decisions over {days} days …", flush=True)
    t = time.perf_counter()
    outcomes = _land(engine, settings, tmp / "undrifted.duckdb", n, days, seed=101, drifts=[])
    landed_s = time.perf_counter() - t
    t = time.perf_counter()
    results = _run(settings, tmp / "undrifted.duckdb", weekly_analysis_dates(START, days, perf.maturity_days))
    analysis_s = (time.perf_counter() - t) / max(len(results), 1)
    alerts = Counter(a.kind for r in results for a in r.alerts)
    covered, checked, gaps, misses = 0, 0, [], []
    loans = 0
    for r in results:
        for v in r.report.versions:
            e, d = v.estimated_matured, v.default_approved
            if e.loans and d.n and v.deciding_loans:
                checked += 1
                inside = e.default_rate_low <= d.value <= e.default_rate_high
                covered += int(inside)
                gaps.append(d.value - e.default_rate)
                if not inside:
                    misses.append(
                        f"{r.report.windows.analysis_date}: realized {d.value:.2%}, estimated {e.default_rate:.2%} "
                        f"({e.default_rate_low:.2%}–{e.default_rate_high:.2%}), recalibration factor {e.factor:.2f}"
                    )
        loans += r.report.labelled
    print(
        f"\n{len(results)} weekly analyses of {n:,} decisions ({outcomes:,} outcomes of funded loans; "
        f"{loans:,} matured loans analysed; landing {landed_s:.0f} s, {analysis_s:.1f} s per analysis)"
    )
    print("| performance alert | alerts without drift |\n|---|---|")
    for kind in (
        "performance_auc_drop",
        "performance_calibration",
        "performance_default_rate",
        "fairness_adverse_impact",
    ):
        print(f"| {kind} | {alerts[kind]} |")
    mean_gap = sum(gaps) / len(gaps) if gaps else float("nan")
    mean_abs = sum(abs(g) for g in gaps) / len(gaps) if gaps else float("nan")
    ratios = [b.impact_ratio for r in results for f in r.report.fairness for b in f.brackets]
    if ratios:
        print(f"lowest adverse impact ratio by age bracket over the analyses: {min(ratios):.3f}")
    print(
        f"\nestimated vs realized default rate among approved (deciding version, matured cohorts): realized inside "
        f"the estimated 95 % interval in {covered}/{checked} analyses; mean gap (realized − estimated) "
        f"{mean_gap:+.3%}, mean absolute gap {mean_abs:.3%}"
    )
    for miss in misses:
        print(f"  outside: {miss}")

    shift_n = max(n // 2, 200_000)
    shift_days = 210  # February 2 – August 30
    print(
        f"\nconcept shift: {shift_n:,} decisions over {shift_days} days; <25k income × 2 defaults from "
        f"{SHIFT_START:%Y-%m-%d} …",
        flush=True,
    )
    shift = ConceptShift(start_time=SHIFT_START, factor=2.0, segment={"customer_income_bracket": "<25k"})
    _land(engine, settings, tmp / "shift.duckdb", shift_n, shift_days, seed=202, drifts=[shift])
    dates = weekly_analysis_dates(START, shift_days, perf.maturity_days)
    shifted = _run(settings, tmp / "shift.duckdb", dates)
    matured = next(d for d in dates if windows(d, "weekly", perf.maturity_days).cohort_end > SHIFT_START)
    print("| analysis date | cohort | shifted | alerts |\n|---|---|---|---|")
    first = None
    for d, r in zip(dates, shifted, strict=True):
        w = r.report.windows
        is_shifted = w.cohort_end > SHIFT_START
        kinds = sorted({f"{a.kind}({a.feature or ''})" for a in r.alerts})
        if is_shifted and r.alerts and first is None:
            first = d
        if d >= matured - timedelta(days=14) and d <= matured + timedelta(days=21):
            cohort = f"{w.cohort_start:%m-%d}–{w.cohort_end - timedelta(days=1):%m-%d}"
            print(f"| {d} | {cohort} | {is_shifted} | {', '.join(kinds) or '—'} |")
    before = sum(len(r.alerts) for d, r in zip(dates, shifted, strict=True) if d < matured)
    if first is None:
        print(f"\nconcept shift NOT flagged (first shifted cohort matured at the analysis of {matured})")
    else:
        print(
            f"\nconcept shift flagged at the analysis of {first}: {(first - matured).days // 7} analysis period(s) "
            f"after the first shifted cohort matured ({matured}); {before} alert(s) before it"
        )

    holiday_start = datetime(2026, 9, 28, tzinfo=UTC)  # a Monday: 13 weeks to December 27
    holiday_n = max(n // 4, 100_000)
    print(f"\nthe holiday season, for comparison: {holiday_n:,} decisions from {holiday_start:%Y-%m-%d}, 13 weeks …")
    _land(engine, settings, tmp / "holiday.duckdb", holiday_n, 91, seed=303, drifts=[], start=holiday_start)
    dates = weekly_analysis_dates(holiday_start, 91, perf.maturity_days)
    print("| cohort | observed/expected (deciding version) | alerts |\n|---|---|---|")
    for r in _run(settings, tmp / "holiday.duckdb", dates):
        w = r.report.windows
        deciding = next((v for v in r.report.versions if v.deciding_loans), None)
        ratio = deciding.calibration.overall.ratio if deciding and deciding.calibration else float("nan")
        kinds = sorted({f"{a.kind}({a.feature or ''})" for a in r.alerts})
        print(f"| {w.cohort_start:%Y-%m-%d} | {ratio:.2f} | {', '.join(kinds) or '—'} |")
    print(f"\n({time.perf_counter() - began:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
