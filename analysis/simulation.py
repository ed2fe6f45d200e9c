"""Simulated experiments: how the tests behave when nothing differs (A/A) and when something does (A/B).

:func:`peeking` draws independent Bernoulli decisions (the textbook regime); :func:`simulate_reports` runs the
real report (``analysis.ab_report``) on real traffic with arms assigned per customer, the regime the service is in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from analysis.ab_report import Decisions, Plan, build_report
from analysis.proportions import chi2_arms
from analysis.sequential import SequentialTest, difference_of_rates
from analysis.srm import sample_ratio_mismatch


@dataclass(frozen=True, slots=True)
class PeekingResult:
    sequential_rate: float  # share of experiments where the always-valid test crossed α
    naive_rate: float  # share where a fixed-horizon test was significant at some peek
    median_stop: float  # median samples per arm at the sequential crossing (nan if none)


def peeking(
    rate_a: float, rate_b: float, experiments: int, looks: int, step: int, seed: int, tau2: float = 0.02**2
) -> PeekingResult:
    """Simulate ``experiments`` two-arm experiments, peeking after every ``step`` samples per arm ``looks`` times."""
    rng = np.random.default_rng(seed)
    sequential = naive = 0
    stops = []
    for _ in range(experiments):
        ca = np.cumsum(rng.random(step * looks) < rate_a)
        cb = np.cumsum(rng.random(step * looks) < rate_b)
        test = SequentialTest(tau2=tau2)
        naive_hit = False
        for k in range(1, looks + 1):
            n = k * step
            test.update(int(ca[n - 1]), n, int(cb[n - 1]), n)
            estimate, variance = difference_of_rates(int(ca[n - 1]), n, int(cb[n - 1]), n)
            naive_hit |= variance > 0 and 2 * stats.norm.sf(abs(estimate) / np.sqrt(variance)) < 0.05
        sequential += test.crossed_at is not None
        naive += naive_hit
        if test.crossed_at is not None:
            stops.append(test.crossed_at / 2)
    return PeekingResult(
        sequential / experiments, naive / experiments, float(np.median(stops)) if stops else float("nan")
    )


@dataclass(frozen=True, slots=True)
class ReportRates:
    """Shares of simulated experiments in which the report said something, over ``runs`` experiments."""

    runs: int
    approval: float  # fixed-horizon clustered test of the approval rate significant
    deny: float
    score: float
    sequential: float  # the sequential test crossed
    srm: float  # the sample-ratio check failed (verdict INVALID)
    false_verdict: float  # a verdict other than NO DIFFERENCE / COLLECTING
    design_effect: float  # median over runs
    per_decision_approval: float  # the same approval test with each decision as an independent draw (χ²)
    per_decision_srm: float  # the sample-ratio check on decisions instead of customers


def simulate_reports(
    base: Decisions,
    arms_of_runs: list[npt.NDArray[np.str_]],
    plan: Plan,
    effect: float = 0.0,
    treatment: str | None = None,
) -> ReportRates:
    """Run the A/B report on ``base`` once per arm assignment (one array of arms per decision each) and count what
    the reports say. With an ``effect``, the ``treatment`` arm approves that much more, the way a more lenient model
    would: its lowest-scored manual reviews become approvals (so the effect follows the customers' risk, as a real
    model difference does)."""
    counts = dict.fromkeys(COUNTED, 0)
    effects = []
    alpha = 1 - plan.confidence
    reviews = np.flatnonzero(base.decision == "manual_review")
    reviews = reviews[np.argsort(base.score[reviews], kind="stable")]  # most lenient flips first
    for arms in arms_of_runs:
        decision = base.decision
        if effect:
            treated_reviews = reviews[arms[reviews] == treatment]
            flips = treated_reviews[: round(effect * float((arms == treatment).sum()))]
            decision = decision.copy()
            decision[flips] = "approve"
        data = Decisions(arms, base.version, base.customer, decision, base.score, base.latency_ms)
        report = build_report("simulation", data, plan)
        (comparison,) = report.comparisons
        for metric in ("approval_rate", "deny_rate", "mean_score"):
            result = comparison.result(metric)
            if result is not None and result.difference.p_value < alpha:
                counts[{"approval_rate": "approval", "deny_rate": "deny", "mean_score": "score"}[metric]] += 1
        counts["sequential"] += comparison.sequential.crossed is not None
        counts["srm"] += report.srm.mismatch
        counts["false_verdict"] += report.verdict not in ("NO DIFFERENCE", "COLLECTING")
        effects.append(report.design_effect)
        in_arm = [arms == arm for arm in plan.allocation]
        _, p_naive = chi2_arms([int((decision[m] == "approve").sum()) for m in in_arm], [int(m.sum()) for m in in_arm])
        counts["per_decision_approval"] += p_naive < alpha
        srm = sample_ratio_mismatch([int(m.sum()) for m in in_arm], list(plan.allocation.values()))
        counts["per_decision_srm"] += srm.mismatch
    runs = len(arms_of_runs)
    rates = {name: counts[name] / runs for name in COUNTED}
    return ReportRates(runs=runs, design_effect=float(np.median(effects)), **rates)


#: What :func:`simulate_reports` counts, as :class:`ReportRates` fields.
COUNTED = (
    "approval",
    "deny",
    "score",
    "sequential",
    "srm",
    "false_verdict",
    "per_decision_approval",
    "per_decision_srm",
)
