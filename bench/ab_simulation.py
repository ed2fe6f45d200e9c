"""``make bench-ab``: the A/B report's error rates, in the regime the service is in and in the textbook one.

Traffic: 20,000 generated decisions over 30 days (customers come back, as the generator makes them), decided once
by the registry's champion (trained first if the registry is empty). Each simulated experiment assigns arms 70/30
with a fresh salt and runs the very report ``bnpl ab-report`` prints (``analysis.ab_report``):

* **repeat customers** — arms by the service's own assignment, ``hash(salt:customer_id)``: a customer's decisions
  all fall in one arm;
* **independent decisions** — the same traffic, each decision assigned on its own (the textbook regime).

A/A (no difference, ``BENCH_AB_RUNS`` experiments per regime): how often the fixed-horizon tests of approval, deny
rate and mean score are significant at α = 0.05, the sequential test crosses while peeking every 100 decisions of
the smaller arm, and the sample-ratio check fails. Then a true +2-point approval effect on the treatment arm: the
observed power against the power planned from the measured design effect. Finally the textbook Bernoulli peeking
simulation of the sequential test alone (``analysis.simulation.peeking``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.ab_report import Decisions, Plan
from analysis.power import power_clustered
from analysis.simulation import COUNTED, ReportRates, peeking, simulate_reports
from common.settings import Settings
from decision.experiment import Experiment

ALLOCATION = {"control": 0.7, "treatment": 0.3}
EFFECT = 0.02
DATASETS = 5
EXPERIMENTS, STEP, LOOKS = 1_000, 100, 50


def _engine(settings: Settings) -> Any:
    from decision.engine import DecisionEngine
    from registry import has_aliases, mlflow_client
    from registry.loader import build_model_set, registry_pointers
    from training.train import train_and_register

    client = mlflow_client(settings.registry)
    if not has_aliases(client, settings.registry.model_name):
        train_and_register(settings, promote=True)
    return DecisionEngine(build_model_set(*registry_pointers(client, settings.registry)))


_TRAFFIC: dict[int, Decisions] = {}


def _traffic(engine: Any, seed: int, n: int = 20_000) -> Decisions:
    if seed not in _TRAFFIC:
        _TRAFFIC[seed] = _decide(engine, seed, n)
    return _TRAFFIC[seed]


def _decide(engine: Any, seed: int, n: int) -> Decisions:
    from datagen import generate
    from schemas import parse_request

    # The first month after a launch: every customer is new, and those who come back come back within the month —
    # the most repeat-heavy regime (~3.4 decisions per customer; a steady month of a running business has ~1.2).
    data = generate(n, seed=seed, days=30, history_days=0)
    decided = [engine.decide(parse_request(data.request(i)))[0] for i in range(n)]
    return Decisions(
        arm=np.full(n, "-", dtype=np.str_),
        version=np.full(n, "1", dtype=np.str_),
        customer=np.asarray(data.columns["customer_id"], dtype=np.str_),
        decision=np.array([d.business_decision for d in decided], dtype=np.str_),
        score=np.array([np.nan if d.default_probability is None else d.default_probability for d in decided]),
        latency_ms=np.array([d.processing_time_ms for d in decided]),
    )


def _assignments(units: npt.NDArray[np.str_], runs: int, first_salt: int) -> list[npt.NDArray[np.str_]]:
    """Arms per decision for ``runs`` experiments, assigning each distinct unit (customer or decision) by the
    service's own hash with a fresh salt per experiment."""
    names, inverse = np.unique(units, return_inverse=True)
    out = []
    for run in range(runs):
        experiment = Experiment("sim", "sim", f"salt-{first_salt + run}", tuple(ALLOCATION.items()))
        out.append(np.array([experiment.assign(str(u)) for u in names], dtype=np.str_)[inverse])
    return out


def _regime(engine: Any, runs: int, plan: Plan, per_decision: bool = False, effect: float = 0.0) -> ReportRates:
    """``runs`` experiments spread over ``DATASETS`` generated traffics (so the rates are not one population's)."""
    parts = []
    for k in range(DATASETS):
        base = _traffic(engine, seed=2026 + k)
        if per_decision:  # every decision is its own unit, assigned and analysed on its own
            units = np.array([f"d{k}-{i}" for i in range(len(base))], dtype=np.str_)
            base = Decisions(base.arm, base.version, units, base.decision, base.score, base.latency_ms)
        arms = _assignments(base.customer, runs // DATASETS, 1_000_000 * k + (500_000 if effect else 0))
        parts.append(simulate_reports(base, arms, plan, effect, "treatment"))
    rates = {f: float(np.mean([getattr(p, f) for p in parts])) for f in COUNTED}
    return ReportRates(
        runs=sum(p.runs for p in parts), design_effect=float(np.median([p.design_effect for p in parts])), **rates
    )


def _row(name: str, r: ReportRates) -> str:
    return (
        f"| {name} | {r.approval:.1%} | {r.deny:.1%} | {r.score:.1%} | {r.sequential:.1%} | {r.srm:.1%} | "
        f"{r.false_verdict:.1%} | {r.design_effect:.2f} | {r.per_decision_approval:.1%} | {r.per_decision_srm:.1%} |"
    )


def main() -> int:
    settings = Settings.from_env()
    runs = settings.bench.bench_ab_runs
    started = time.perf_counter()
    engine = _engine(settings)
    sample = _traffic(engine, seed=2026)
    customers = int(np.unique(sample.customer).size)
    print(
        f"traffic: {DATASETS} generated traffics of {len(sample):,} decisions in a launch month; the first has "
        f"{customers:,} customers ({len(sample) / customers:.2f} decisions each)"
    )
    plan = Plan(ALLOCATION, minimum_customers=100)
    by_customer = _regime(engine, runs, plan)
    by_decision = _regime(engine, runs, plan, per_decision=True)
    print(f"\nA/A, {runs:,} experiments per regime, 70/30, α = 0.05 (report code of `bnpl ab-report`):\n")
    print(
        "| regime | approval | deny rate | mean score | sequential (peeking every 100) | SRM fails | false verdict "
        "| design effect | approval, per-decision χ² | SRM on decisions |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(_row("repeat customers (arms per customer)", by_customer))
    print(_row("independent decisions", by_decision))

    effect = _regime(engine, runs, plan, effect=EFFECT)
    control_rate = float((sample.decision == "approve").mean())
    share = ALLOCATION["treatment"]
    planned = power_clustered(
        control_rate,
        control_rate + EFFECT,
        len(sample) * (1 - share),
        len(sample) * share,
        by_customer.design_effect,
    )
    print(
        f"\nA/B, approval +{EFFECT * 100:.0f} points on the treatment (repeat customers, {runs:,} experiments): "
        f"observed power {effect.approval:.1%}, planned {planned:.1%} (design effect "
        f"{by_customer.design_effect:.2f}); difference {100 * (effect.approval - planned):+.1f} points; the sequential "
        f"test detects {effect.sequential:.1%}"
    )
    aa = peeking(0.80, 0.80, EXPERIMENTS, LOOKS, STEP, seed=1)
    print(
        f"\ntextbook regime, sequential test alone: independent Bernoulli decisions, {EXPERIMENTS:,} A/A experiments "
        f"peeking every {STEP} per arm up to {STEP * LOOKS:,}: mSPRT false positives {aa.sequential_rate:.1%}, "
        f"a fixed-horizon test checked at every peek {aa.naive_rate:.1%}"
    )
    print(f"\n({time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
