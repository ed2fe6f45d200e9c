"""``make bench-guardian``: the guardian (``BNPL_GUARDIAN_MODE=auto``) on simulated weeks of decisions and matured
outcomes, four regimes, each on its own copy of one trained registry.

Every week is decided by the decision engine with the models the registry's aliases point at *that week* (the
engine is rebuilt after each analysis, as the API's registry poll would), landed in DuckDB with its funded loans'
outcomes, and then the weekly performance analysis runs with the guardian — so a switch changes who decides the
following weeks, and a rollback changes it back.

* **No degradation:** ``BENCH_GUARDIAN_DECISIONS`` decisions (default 1,000,000), champion and challenger as
  trained. Counted: switches, rollbacks, fallbacks, holds (there should be none) and champion breaches.
* **Concept shift:** from a Monday, loans of the ``<25k`` income bracket default far less often (× 0.3; features
  unchanged, so no drift detector sees it). The challenger is a model retrained on a world where this holds (what a
  team does once performance alerts ask for a retrain), scoring every request in shadow. Measured: the analysis that
  switches, in analysis periods after the first shifted cohort matured (target ≤ 2).
* **Transient shift, then rollback:** the same shift for one week only. The guardian switches when the shifted
  cohort matures; the next cohorts are back to normal, where the new champion under-predicts the bracket. Measured:
  the rollback, in analyses after the switch (target: within ``BNPL_GUARDIAN_PROBATION_PERIODS``).
* **Shift, candidate fails the gate:** the bracket defaults twice as often; the model retrained on that world ranks
  better but approves 18–24-year-olds at less than four fifths of the best bracket's rate. Target: no switch (the
  guardian holds and alerts; a person decides).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from common.settings import Settings
from datagen import ConceptShift, generate
from governance.guardian import guarded_analysis
from traffic.landing import decide_into, land_outcomes
from warehouse.duckdb_store import DuckDBWarehouse

START = datetime(2026, 2, 2, tzinfo=UTC)  # a Monday
SEGMENT = {"customer_income_bracket": "<25k"}
#: The shift the guardian should act on: the bracket's loans default far less often (e.g. a payment-relief
#: programme). The champion over-predicts them (calibration fails overall) and denies good customers; a model
#: retrained on the new world ranks them better and, fairer to the bracket, passes the promotion gate.
FACTOR = 0.3
#: The shift it must not act on automatically: the bracket defaults twice as often. A model retrained on it is
#: better, but approves the youngest applicants at less than four fifths of the best bracket's rate: a person decides.
STRESS_FACTOR = 2.0
SHIFT_WEEK = 3
PER_WEEK = 40_000


@dataclass
class Run:
    name: str
    weeks: int
    decisions: int = 0
    verdicts: list[Any] = field(default_factory=list)  # (analysis date, Verdict)
    reports: list[Any] = field(default_factory=list)  # the analyses' PerformanceReports
    first_shifted: date | None = None
    seconds: float = 0.0

    def actions(self) -> Counter[str]:
        """Verdicts by action (switches and rollbacks acted on; a fallback verdict counts without a Redis)."""
        return Counter(v.action for _, v in self.verdicts if v.action != "none")

    def first(self, action: str) -> date | None:
        return next((d for d, v in self.verdicts if v.action == action), None)


def _engine(settings: Settings, loaded: Any = None) -> Any:
    from decision.engine import DecisionEngine
    from registry import mlflow_client
    from registry.loader import build_model_set, registry_pointers

    pointers, experiment, problem = registry_pointers(mlflow_client(settings.registry), settings.registry)
    return DecisionEngine(build_model_set(pointers, experiment, problem, loaded=loaded))


def _copy(settings: Settings, root: Path, name: str) -> Settings:
    directory = root / name
    directory.mkdir()
    shutil.copy(settings.data_dir / "mlflow.db", directory / "mlflow.db")
    return settings.replace(
        data_dir=directory,
        tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
        artifact_root=settings.registry.artifact_root,
        duckdb_path=directory / "warehouse.duckdb",
    )


def simulate(settings: Settings, name: str, weeks: int, per_week: int, drifts: list[Any], seed: int) -> Run:
    """Decide, land and analyse ``weeks`` weeks; the guardian acts after every analysis."""
    began = time.perf_counter()
    run = Run(name, weeks)
    maturity = settings.performance.maturity_days
    data = generate(per_week * weeks, seed=seed, start=START, days=7 * weeks, drifts=drifts)
    stamps = np.char.rstrip(data.columns["transaction_timestamp"].astype(str), "Z").astype("datetime64[s]")
    wh = DuckDBWarehouse(settings.warehouse.duckdb_path or Path("x"))
    wh.ensure_tables()
    engine = _engine(settings)
    begin = 0
    for week in range(weeks):
        end_of_week = START + timedelta(days=7 * (week + 1))
        end = int((stamps < (stamps.dtype.type(end_of_week.replace(tzinfo=None)))).sum())
        part = data.slice(begin, end)
        decisions = decide_into(wh, engine, part)
        land_outcomes(wh, part, decisions, settings.performance.review_approval_rate, seed + week)
        run.decisions += end - begin
        begin = end
        analysis = end_of_week.date()
        if analysis - timedelta(days=maturity + 7) < START.date():
            continue  # no cohort has matured yet
        result = guarded_analysis(
            settings, analysis, log_mlflow=False, send_alerts=False, warehouse=wh, write_html=False
        )
        verdict = result.verdict
        run.verdicts.append((analysis, verdict))
        run.reports.append(result.report)
        shift_start = next((d.start_time for d in drifts if isinstance(d, ConceptShift)), None)
        if shift_start is not None and run.first_shifted is None and result.report.windows.cohort_end > shift_start:
            run.first_shifted = analysis
        if verdict.acted:  # the guardian moved aliases: decide the next week as the API would after its poll
            current = engine.models
            engine = _engine(settings, current.by_alias if current else None)
    run.seconds = time.perf_counter() - began
    return run


def _periods(later: date | None, earlier: date | None) -> str:
    return "—" if later is None or earlier is None else str((later - earlier).days // 7)


def main() -> int:
    from governance.aliases import promote
    from registry import mlflow_client
    from training.train import train_and_register, training_data

    began = time.perf_counter()
    base = Settings.from_env()
    root = Path(tempfile.mkdtemp(prefix="bnpl-bench-guardian-"))
    settings = Settings.build(
        data_dir=root / "trained",
        time_column="transaction",
        schedule_s=0,
        guardian_mode="auto",
        review_approval_rate=base.performance.review_approval_rate,
    )
    train_and_register(settings, promote=True)
    retrained = {}
    for name, factor in (("relief", FACTOR), ("stress", STRESS_FACTOR)):
        changed = [ConceptShift(start_index=0, factor=factor, segment=SEGMENT)]
        data = training_data(settings.training, drifts=changed)
        described = f"synthetic applications where <25k-income loans default {factor}× as often"
        model = train_and_register(
            settings, families=["hgb"], data=data, aliases=(), data_description=described
        ).models[0]
        retrained[name] = model.version
    print(f"registry trained in {time.perf_counter() - began:.0f} s; retrained versions {retrained}", flush=True)

    n = base.bench.bench_guardian_decisions
    runs = [simulate(_copy(settings, root, "null"), "no degradation", max(8, n // PER_WEEK), PER_WEEK, [], seed=301)]
    shift_at = START + timedelta(days=7 * SHIFT_WEEK)
    weeks = SHIFT_WEEK + 7 + settings.governance.guardian_probation_periods + 1
    for name, world, factor, end in (
        ("concept shift", "relief", FACTOR, None),
        ("transient shift", "relief", FACTOR, shift_at + timedelta(days=7)),
        ("shift, candidate fails the four-fifths gate", "stress", STRESS_FACTOR, None),
    ):
        copy = _copy(settings, root, name.split(",")[0].replace(" ", "-") + f"-{world}")
        client = mlflow_client(copy.registry)
        promote(client, copy, "challenger", retrained[world], force=True, reason="bench: the retrained model")
        drift = ConceptShift(start_time=shift_at, factor=factor, segment=SEGMENT, end_time=end)
        runs.append(simulate(copy, name, weeks, PER_WEEK, [drift], seed=302))

    print(
        "\n| regime | weeks | decisions | analyses | champion breached | switches | rollbacks | fallbacks | holds | "
        "switch after first shifted cohort (periods) | rollback after switch (analyses) | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        acts = r.actions()
        breached = sum(1 for _, v in r.verdicts if v.breaches)
        print(
            f"| {r.name} | {r.weeks} | {r.decisions:,} | {len(r.verdicts)} | {breached} | {acts['switch']} | "
            f"{acts['rollback']} | {acts['fallback']} | {acts['hold']} | "
            f"{_periods(r.first('switch'), r.first_shifted)} | {_periods(r.first('rollback'), r.first('switch'))} | "
            f"{r.seconds:.0f} |"
        )
    print()
    for r in runs:
        for d, v in r.verdicts:
            if v.action != "none":
                print(f"{r.name} {d}: {v.summary()}")
    null, shift, transient, unfair = runs
    probation = settings.governance.guardian_probation_periods
    switched, rolled = shift.first("switch"), transient.first("rollback")
    ok = (
        sum(null.actions().values()) == 0
        and switched is not None
        and int(_periods(switched, shift.first_shifted)) <= 2
        and rolled is not None
        and int(_periods(rolled, transient.first("switch"))) <= probation
        and unfair.actions()["switch"] == 0
    )
    print(f"\nall targets met: {ok} ({time.perf_counter() - began:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
