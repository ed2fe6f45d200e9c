"""The A/B report of one experiment: per arm n, rates with CIs, tests, SRM, sequential monitoring, verdict.

Input is plain arrays read from the warehouse (one element per decision, in time order), so the report can be
computed from DuckDB or BigQuery alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from analysis.means import MeanTest, welch_test
from analysis.multiple import holm
from analysis.paired import PairedComparison, mcnemar
from analysis.proportions import ProportionTest, compare_proportions, wilson_interval
from analysis.sequential import SequentialTest
from analysis.srm import SrmCheck, sample_ratio_mismatch


@dataclass(frozen=True, slots=True)
class ArmData:
    """Decisions of one arm, in time order."""

    arm: str
    model_version: str
    decisions: npt.NDArray[np.str_]
    scores: npt.NDArray[np.float64]
    amounts: npt.NDArray[np.float64]


@dataclass(slots=True)
class ArmSummary:
    arm: str
    model_version: str
    n: int
    approve_rate: float
    approve_ci: tuple[float, float]
    deny_rate: float
    deny_ci: tuple[float, float]
    mean_score: float


@dataclass(slots=True)
class Comparison:
    arm: str
    approval: ProportionTest
    deny: ProportionTest
    score: MeanTest
    amount: MeanTest
    approval_sequential_p: float
    approval_crossed_at: int | None
    adjusted: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class AbReport:
    experiment: str
    control: str
    arms: list[ArmSummary]
    comparisons: list[Comparison]
    srm: SrmCheck
    paired: PairedComparison | None
    verdict: str
    minimum_sample_size: int
    confidence: float


def _rate(decisions: npt.NDArray[np.str_], value: str) -> tuple[int, int]:
    return int((decisions == value).sum()), int(decisions.size)


def _sequential(control: ArmData, arm: ArmData, step: int = 100) -> SequentialTest:
    test = SequentialTest()
    a = np.cumsum(control.decisions == "approve")
    b = np.cumsum(arm.decisions == "approve")
    for k in range(step, min(a.size, b.size) + 1, step):
        test.update(int(a[k - 1]), k, int(b[k - 1]), k)
    return test


def build_report(
    experiment: str,
    arms: list[ArmData],
    allocation: dict[str, float],
    minimum_sample_size: int = 1_000,
    confidence: float = 0.95,
    paired: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]] | None = None,
) -> AbReport:
    """Everything the terminal and HTML reports show. The first arm of ``allocation`` is the control."""
    by_arm = {a.arm: a for a in arms}
    control = by_arm[next(iter(allocation))]
    summaries = []
    for data in arms:
        approve, n = _rate(data.decisions, "approve")
        deny, _ = _rate(data.decisions, "deny")
        summaries.append(
            ArmSummary(
                data.arm,
                data.model_version,
                n,
                approve / n if n else math.nan,
                wilson_interval(approve, n, confidence),
                deny / n if n else math.nan,
                wilson_interval(deny, n, confidence),
                float(np.nanmean(data.scores)) if data.scores.size else math.nan,
            )
        )
    comparisons = []
    for data in arms:
        if data.arm == control.arm or data.decisions.size < 2 or control.decisions.size < 2:
            continue
        ca, cn = _rate(control.decisions, "approve")
        ta, tn = _rate(data.decisions, "approve")
        cd, _ = _rate(control.decisions, "deny")
        td, _ = _rate(data.decisions, "deny")
        sequential = _sequential(control, data)
        comparisons.append(
            Comparison(
                data.arm,
                compare_proportions(ca, cn, ta, tn, confidence),
                compare_proportions(cd, cn, td, tn, confidence),
                welch_test(control.scores, data.scores, confidence),
                welch_test(control.amounts, data.amounts, confidence),
                sequential.p_value,
                sequential.crossed_at,
            )
        )
    labels, p_values = [], []
    for c in comparisons:
        for metric, p in (("approval", c.approval.p_value), ("deny", c.deny.p_value), ("score", c.score.p_value)):
            labels.append((c, metric))
            p_values.append(p)
    for (c, metric), adjusted in zip(labels, holm(p_values), strict=True):
        c.adjusted[metric] = adjusted
    observed = [by_arm[a].decisions.size if a in by_arm else 0 for a in allocation]
    srm = sample_ratio_mismatch(observed, list(allocation.values()))
    paired_result = mcnemar(list(paired[0]), list(paired[1])) if paired is not None and len(paired[0]) else None
    alpha = 1 - confidence
    if srm.mismatch:
        verdict = "INVALID: sample ratio mismatch — fix assignment/logging before reading results"
    elif min(observed) < minimum_sample_size:
        verdict = f"COLLECTING: smallest arm has {min(observed):,} of {minimum_sample_size:,} required decisions"
    else:
        winners = [c for c in comparisons if c.adjusted.get("approval", 1.0) < alpha]
        if winners:
            verdict = "; ".join(
                f"{c.arm} approves {'more' if c.approval.difference > 0 else 'less'} than {control.arm} "
                f"({c.approval.difference:+.2%}, Holm-adjusted p {c.adjusted['approval']:.2g})"
                for c in winners
            )
        else:
            verdict = "NO SIGNIFICANT DIFFERENCE in approval rate at the chosen confidence"
    return AbReport(
        experiment, control.arm, summaries, comparisons, srm, paired_result, verdict, minimum_sample_size, confidence
    )


def render_text(report: AbReport) -> str:
    lines = [
        f"A/B report — experiment {report.experiment} (control: {report.control}, confidence {report.confidence:.0%})",
        "",
    ]
    lines.append(f"{'arm':<12s} {'version':>7s} {'n':>8s}  {'approve (CI)':<26s} {'deny (CI)':<26s} mean score")
    for a in report.arms:
        lines.append(
            f"{a.arm:<12s} {a.model_version:>7s} {a.n:>8,}  "
            f"{a.approve_rate:6.2%} ({a.approve_ci[0]:.2%}–{a.approve_ci[1]:.2%})    "
            f"{a.deny_rate:6.2%} ({a.deny_ci[0]:.2%}–{a.deny_ci[1]:.2%})    {a.mean_score:.4f}"
        )
    for c in report.comparisons:
        lines += [
            "",
            f"{c.arm} vs {report.control}:",
            f"  approval  Δ {c.approval.difference:+.2%} (Newcombe CI {c.approval.ci_low:+.2%} … "
            f"{c.approval.ci_high:+.2%}), χ² {c.approval.chi2:.2f}, p {c.approval.p_value:.3g}, "
            f"Holm {c.adjusted['approval']:.3g}, Cohen's h {c.approval.cohens_h:+.3f}",
            f"  deny      Δ {c.deny.difference:+.2%} (CI {c.deny.ci_low:+.2%} … {c.deny.ci_high:+.2%}), "
            f"p {c.deny.p_value:.3g}, Holm {c.adjusted['deny']:.3g}",
            f"  score     Δ {c.score.difference:+.5f} (Welch CI {c.score.ci_low:+.5f} … {c.score.ci_high:+.5f}), "
            f"t {c.score.t:.2f}, p {c.score.p_value:.3g}, Cohen's d {c.score.cohens_d:+.3f}",
            f"  amount    Δ {c.amount.difference:+.2f} (Welch CI {c.amount.ci_low:+.2f} … {c.amount.ci_high:+.2f}), "
            f"p {c.amount.p_value:.3g}",
            f"  sequential (always-valid) approval p {c.approval_sequential_p:.3g}"
            + (f", crossed significance after {c.approval_crossed_at:,} decisions" if c.approval_crossed_at else ""),
        ]
    lines += [
        "",
        f"sample-ratio check: χ² {report.srm.chi2:.2f}, p {report.srm.p_value:.3g} → "
        f"{'MISMATCH' if report.srm.mismatch else 'ok'}",
    ]
    if report.paired is not None:
        p = report.paired
        lines.append(
            f"champion vs shadow on the same requests: {p.n:,} requests, approve decisions disagree on "
            f"{p.disagreement_rate:.2%} (only champion approves {p.only_a:,}, only shadow {p.only_b:,}), "
            f"McNemar p {p.p_value:.3g}"
        )
    lines += ["", f"verdict: {report.verdict}"]
    return "\n".join(lines)
