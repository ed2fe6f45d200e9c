"""The A/B report of one experiment, with the customer as the unit of analysis.

Input: one row per decision, in time order (arm, model version, customer, decision, score, latency; outcomes when
they exist), read from the warehouse, so DuckDB and BigQuery feed it alike. Every metric is a ratio over customers
with a delta-method variance (``analysis.clustered``); the sample-ratio check counts customers; the sequential test
uses all decisions so far with the clustered variance (``analysis.sequential``); sample sizes are planned in
customers with the design effect measured on the experiment's own traffic.

**Metrics.** The success metric is the approval rate (higher is better). Guardrails, where higher is worse: the deny
rate, the manual-review rate, the mean score, the latency, and the default rate among approved decisions as soon as
outcomes exist. A guardrail is *ok* when the one-sided upper confidence bound of its increase is below its
non-inferiority margin (settable per experiment), *breached* when even the lower bound is above it, and
*inconclusive* otherwise.

**Verdict**, first match wins:

1. INVALID — the customers per arm do not match the allocation (sample-ratio mismatch, p < 0.001);
2. COLLECTING — an arm has fewer customers than the minimum, or a cell is empty or without variation;
3. GUARDRAIL BREACH — a guardrail of a treatment is breached;
4. SHIP — the approval rate of a treatment is higher (Holm-adjusted across treatments) and its guardrails are ok;
   COLLECTING while a guardrail is still inconclusive;
5. DO NOT SHIP — the approval rate of a treatment is significantly lower;
6. NO DIFFERENCE — otherwise.

**Model versions.** An arm whose alias moved during the experiment is split into one segment per version; a
segment is compared with the control's decisions of the same period, so a version is never credited with another's
traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import stats

from analysis.clustered import Difference, RatioEstimate, compare, compare_cuped, customer_sums, ratio_estimate
from analysis.multiple import holm
from analysis.paired import PairedComparison
from analysis.power import sample_size_two_proportions
from analysis.sequential import ClusteredSequential, clustered_sequential
from analysis.srm import SrmCheck, sample_ratio_mismatch

SUCCESS: Final = "approval_rate"
#: Guardrails and their default non-inferiority margins (largest acceptable increase, in the metric's unit).
DEFAULT_MARGINS: Final[dict[str, float]] = {
    "deny_rate": 0.01,
    "review_rate": 0.02,
    "mean_score": 0.005,
    "latency_ms": 2.0,
    "default_rate_approved": 0.005,
}


def parse_margins(text: str) -> dict[str, float]:
    """Guardrail margins from ``"deny_rate:0.01,latency_ms:2"``; raises ``ValueError`` on an unknown guardrail or a
    margin that is not a number.

    >>> parse_margins("deny_rate:0.01, latency_ms:2")
    {'deny_rate': 0.01, 'latency_ms': 2.0}
    """
    margins: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        metric, _, value = (s.strip() for s in part.partition(":"))
        if metric not in DEFAULT_MARGINS:
            raise ValueError(f"unknown guardrail {metric!r}; known: {', '.join(DEFAULT_MARGINS)}")
        try:
            margins[metric] = float(value)
        except ValueError:
            raise ValueError(f"guardrail margin {part!r} is not metric:number") from None
    return margins


LABELS: Final = {
    "approval_rate": "approval rate",
    "deny_rate": "deny rate",
    "review_rate": "manual-review rate",
    "mean_score": "mean score",
    "latency_ms": "latency (ms)",
    "default_rate_approved": "default rate among approved",
}
RATE_METRICS: Final = {"approval_rate", "deny_rate", "review_rate", "default_rate_approved"}


@dataclass(frozen=True, slots=True)
class Decisions:
    """Decisions of an experiment, one element per decision, in time order."""

    arm: npt.NDArray[np.str_]
    version: npt.NDArray[np.str_]
    customer: npt.NDArray[np.str_]
    decision: npt.NDArray[np.str_]
    score: npt.NDArray[np.float64]  # NaN where no model scored (rule-based fallback)
    latency_ms: npt.NDArray[np.float64]
    #: 1 defaulted, 0 repaid, NaN unknown (no outcome yet, or not funded); None when outcomes are not available.
    defaulted: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return int(self.arm.size)

    def take(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Decisions:
        return Decisions(
            self.arm[rows],
            self.version[rows],
            self.customer[rows],
            self.decision[rows],
            self.score[rows],
            self.latency_ms[rows],
            None if self.defaulted is None else self.defaulted[rows],
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What the experiment was set up with (MLflow experiment tags)."""

    allocation: dict[str, float]
    minimum_customers: int = 1_000
    confidence: float = 0.95
    margins: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))
    #: Smallest approval-rate change worth detecting, for the sample-size plan.
    minimum_effect: float = 0.02
    power: float = 0.8


@dataclass(slots=True)
class Segment:
    """One arm, or one model version of an arm whose alias moved."""

    arm: str
    version: str
    label: str
    rows: npt.NDArray[np.bool_]
    customers: int
    decisions: int
    metrics: dict[str, RatioEstimate]
    mix: dict[str, float]


@dataclass(slots=True)
class MetricResult:
    metric: str
    kind: str  # success | guardrail
    margin: float | None
    difference: Difference
    status: str  # better / worse / no difference / ok / breach / inconclusive / undefined


@dataclass(slots=True)
class SegmentComparison:
    treatment: Segment
    control: Segment
    results: list[MetricResult]
    sequential: ClusteredSequential
    success_p_holm: float = math.nan

    def result(self, metric: str) -> MetricResult | None:
        return next((r for r in self.results if r.metric == metric), None)

    @property
    def success(self) -> MetricResult:
        found = self.result(SUCCESS)
        assert found is not None, "the success metric is always computed"
        return found


@dataclass(slots=True)
class AbReport:
    experiment: str
    control: str
    plan: Plan
    segments: list[Segment]
    comparisons: list[SegmentComparison]
    srm: SrmCheck
    customers_per_arm: dict[str, int]
    design_effect: float
    decisions_per_customer: float
    planned_customers: int | None
    verdict: str
    reason: str
    paired: PairedComparison | None = None
    notes: list[str] = field(default_factory=list)
    #: Finite scores of each segment (score distributions).
    scores: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)


def _codes(values: npt.NDArray[np.str_]) -> npt.NDArray[np.int64]:
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64)


def _metric_values(data: Decisions) -> dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Decision-level numerator and denominator of every metric."""
    ones = np.ones(len(data))
    approved = (data.decision == "approve").astype(float)
    scored = np.isfinite(data.score)
    values = {
        "approval_rate": (approved, ones),
        "deny_rate": ((data.decision == "deny").astype(float), ones),
        "review_rate": ((data.decision == "manual_review").astype(float), ones),
        "mean_score": (np.where(scored, data.score, 0.0), scored.astype(float)),
        "latency_ms": (data.latency_ms.astype(float), ones),
    }
    if data.defaulted is not None:
        known = approved * np.isfinite(data.defaulted)
        values["default_rate_approved"] = (np.where(known > 0, data.defaulted, 0.0), known)
    return values


def _segments(data: Decisions, allocation: dict[str, float], codes: npt.NDArray[np.int64]) -> list[Segment]:
    metrics = _metric_values(data)
    segments = []
    for arm in allocation:
        in_arm = data.arm == arm
        versions = [v for v in dict.fromkeys(data.version[in_arm].tolist())]  # first-seen order
        for version in versions or ["-"]:
            rows = in_arm & (data.version == version) if versions else in_arm
            label = arm if len(versions) <= 1 else f"{arm}@v{version}"
            segments.append(_segment(arm, version, label, rows, data, codes, metrics))
    return segments


def _segment(
    arm: str,
    version: str,
    label: str,
    rows: npt.NDArray[np.bool_],
    data: Decisions,
    codes: npt.NDArray[np.int64],
    metrics: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
) -> Segment:
    estimates = {
        name: ratio_estimate(customer_sums(codes[rows], num[rows], den[rows])) for name, (num, den) in metrics.items()
    }
    n = int(rows.sum())
    decided = data.decision[rows]
    mix = {d: float((decided == d).sum() / n) if n else 0.0 for d in ("approve", "manual_review", "deny")}
    return Segment(arm, version, label, rows, len(np.unique(codes[rows])), n, estimates, mix)


def _status(difference: Difference, kind: str, margin: float | None, confidence: float) -> str:
    if not difference.defined:
        return "undefined"
    alpha = 1 - confidence
    if kind == "success":
        if difference.p_value < alpha:
            return "better" if difference.delta > 0 else "worse"
        return "no difference"
    assert margin is not None
    z = float(stats.norm.ppf(1 - alpha))  # one-sided bounds of the increase
    se = math.sqrt(difference.variance)
    if difference.delta - z * se > margin:
        return "breach"
    if difference.delta + z * se < margin:
        return "ok"
    return "inconclusive"


def build_report(
    experiment: str,
    data: Decisions,
    plan: Plan,
    *,
    covariates: dict[str, float] | None = None,
    paired: PairedComparison | None = None,
) -> AbReport:
    """Everything the terminal and HTML reports show. The first arm of the allocation is the control.
    ``covariates``: per customer, the pre-experiment linearised approval contribution (CUPED), when history
    exists."""
    codes = _codes(data.customer)
    segments = _segments(data, plan.allocation, codes)
    control_arm = next(iter(plan.allocation))
    customers_per_arm = {arm: int(np.unique(codes[data.arm == arm]).size) for arm in plan.allocation}
    srm = sample_ratio_mismatch(list(customers_per_arm.values()), list(plan.allocation.values()))
    metrics = _metric_values(data)
    comparisons = []
    for treatment in segments:
        if treatment.arm == control_arm or not treatment.decisions:
            continue
        comparisons.append(_compare(data, codes, metrics, treatment, control_arm, plan, covariates))
    for comparison, adjusted in zip(comparisons, holm([_p(c.success) for c in comparisons]), strict=True):
        comparison.success_p_holm = adjusted
    control_all = _segment(control_arm, "", control_arm, data.arm == control_arm, data, codes, metrics).metrics[SUCCESS]
    design_effect = control_all.design_effect
    decisions_per_customer = control_all.decisions / control_all.customers if control_all.customers else math.nan
    planned = _planned_customers(control_all, plan, design_effect, decisions_per_customer)
    verdict, reason = _verdict(plan, segments, comparisons, srm, customers_per_arm)
    notes = []
    if "default_rate_approved" not in metrics:
        notes.append("default rate among approved: no outcomes yet (it joins the guardrails once outcomes land)")
    scores = {seg.label: data.score[seg.rows][np.isfinite(data.score[seg.rows])] for seg in segments}
    return AbReport(
        experiment,
        control_arm,
        plan,
        segments,
        comparisons,
        srm,
        customers_per_arm,
        design_effect,
        decisions_per_customer,
        planned,
        verdict,
        reason,
        paired,
        notes,
        scores,
    )


def _p(result: MetricResult) -> float:
    return result.difference.p_value if math.isfinite(result.difference.p_value) else 1.0


def _compare(
    data: Decisions,
    codes: npt.NDArray[np.int64],
    metrics: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    treatment: Segment,
    control_arm: str,
    plan: Plan,
    covariates: dict[str, float] | None,
) -> SegmentComparison:
    # The control's decisions of the treatment segment's own period (the whole experiment unless a version moved).
    positions = np.flatnonzero(treatment.rows)
    window = np.zeros(len(data), dtype=bool)
    window[positions[0] : positions[-1] + 1] = True
    control_rows = (data.arm == control_arm) & window
    control = _segment(control_arm, "", control_arm, control_rows, data, codes, metrics)
    results = []
    for metric in metrics:
        kind = "success" if metric == SUCCESS else "guardrail"
        margin = None if kind == "success" else plan.margins.get(metric, DEFAULT_MARGINS[metric])
        a, b = control.metrics[metric], treatment.metrics[metric]
        if metric == SUCCESS and covariates:
            names = np.unique(data.customer)  # customer code → id
            cov_a, cov_b = ([covariates.get(str(names[c]), 0.0) for c in e.codes] for e in (a, b))
            difference = compare_cuped(a, b, np.array(cov_a), np.array(cov_b), plan.confidence)
        else:
            difference = compare(a, b, plan.confidence)
        status = _status(difference, kind, margin, plan.confidence)
        results.append(MetricResult(metric, kind, margin, difference, status))
    both = control_rows | treatment.rows
    sequential = clustered_sequential(
        treatment.rows[both], codes[both], metrics[SUCCESS][0][both], alpha=1 - plan.confidence
    )
    return SegmentComparison(treatment, control, results, sequential)


def _planned_customers(
    control: RatioEstimate, plan: Plan, design_effect: float, decisions_per_customer: float
) -> int | None:
    """Customers per arm (of the smallest arm) to detect ``minimum_effect`` at ``power``: the independent-decision
    sample size, times the design effect, over decisions per customer."""
    p = control.estimate
    if not (0 < p < 1) or not math.isfinite(design_effect) or not decisions_per_customer:
        return None
    target = min(max(p + plan.minimum_effect, 1e-6), 1 - 1e-6)
    shares = list(plan.allocation.values())
    ratio = min(shares) / shares[0] if shares[0] else 1.0
    decisions = sample_size_two_proportions(p, target, plan.power, 1 - plan.confidence, ratio)
    return math.ceil(decisions * ratio * max(design_effect, 1.0) / decisions_per_customer)


def _verdict(
    plan: Plan,
    segments: list[Segment],
    comparisons: list[SegmentComparison],
    srm: SrmCheck,
    customers_per_arm: dict[str, int],
) -> tuple[str, str]:
    alpha = 1 - plan.confidence
    if srm.mismatch:
        return "INVALID", (
            f"customers per arm do not match the allocation (χ² p {srm.p_value:.2g} < 0.001): fix the assignment "
            "or the logging before reading any result"
        )
    smallest = min(customers_per_arm.values()) if customers_per_arm else 0
    if smallest < plan.minimum_customers:
        return "COLLECTING", f"smallest arm has {smallest:,} of {plan.minimum_customers:,} customers required"
    if not comparisons:
        return "COLLECTING", "no treatment arm has decisions yet"
    undefined = [c.treatment.label for c in comparisons if c.success.status == "undefined"]
    if undefined:
        return "COLLECTING", f"no variation yet to test {', '.join(undefined)} (a cell is empty or constant)"
    breaches = [(c, r) for c in comparisons for r in c.results if r.status == "breach"]
    if breaches:
        return "GUARDRAIL BREACH", "; ".join(
            f"{c.treatment.label}: {LABELS[r.metric]} up {r.difference.delta:+.4g}, beyond the margin {r.margin:g}"
            for c, r in breaches
        )
    significant = [c for c in comparisons if c.success_p_holm < alpha]
    winners = [c for c in significant if c.success.difference.delta > 0]
    if winners:
        pending = [
            f"{c.treatment.label} {LABELS[r.metric]}"
            for c in winners
            for r in c.results
            if r.kind == "guardrail" and r.status in ("inconclusive", "undefined")
        ]
        if pending:
            return "COLLECTING", "approval is up, but harm beyond the margin is not ruled out yet for " + ", ".join(
                pending
            )
        return "SHIP", "; ".join(
            f"{c.treatment.label} approves {c.success.difference.delta:+.2%} vs {c.control.label} "
            f"(Holm p {c.success_p_holm:.2g}), every guardrail within its margin"
            for c in winners
        )
    if significant:
        return "DO NOT SHIP", "; ".join(
            f"{c.treatment.label} approves {c.success.difference.delta:+.2%} vs {c.control.label} "
            f"(Holm p {c.success_p_holm:.2g})"
            for c in significant
        )
    return "NO DIFFERENCE", f"no approval-rate difference at {plan.confidence:.0%} confidence"


def format_value(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.2%}" if metric in RATE_METRICS else f"{value:.4g}"


def format_delta(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.2%}" if metric in RATE_METRICS else f"{value:+.4g}"


def render_text(report: AbReport) -> str:
    """The terminal report."""
    plan = report.plan
    lines = [
        f"A/B report — experiment {report.experiment} (control: {report.control}, confidence {plan.confidence:.0%}, "
        "unit of analysis: the customer)",
        "",
        f"{'segment':<18s} {'version':>7s} {'customers':>10s} {'decisions':>10s}  approve  review    deny",
    ]
    for seg in report.segments:
        lines.append(
            f"{seg.label:<18s} {seg.version:>7s} {seg.customers:>10,} {seg.decisions:>10,}  "
            f"{seg.mix['approve']:6.1%}  {seg.mix['manual_review']:6.1%}  {seg.mix['deny']:6.1%}"
        )
    lines += [
        "",
        f"design effect (approval rate, control): {report.design_effect:.2f} — "
        f"{report.decisions_per_customer:.2f} decisions per customer",
    ]
    if report.planned_customers is not None:
        lines.append(
            f"plan: {report.planned_customers:,} customers in the smallest arm to detect "
            f"{plan.minimum_effect * 100:+.1f} points of approval at {plan.power:.0%} power "
            f"(minimum set: {plan.minimum_customers:,})"
        )
    for c in report.comparisons:
        lines += ["", f"{c.treatment.label} vs {c.control.label} (same period):"]
        lines.append(f"  {'metric':<28s} {'control':>9s} {'treatment':>9s} {'Δ':>9s}  {'CI':<22s} {'p':>8s}  status")
        for r in c.results:
            d = r.difference
            ci = f"{format_delta(r.metric, d.ci_low)} … {format_delta(r.metric, d.ci_high)}"
            margin = f" (margin {r.margin:g})" if r.margin is not None else f" (Holm {c.success_p_holm:.3g})"
            cuped = f", CUPED −{d.variance_reduction:.0%} variance" if d.variance_reduction else ""
            control, treatment = format_value(r.metric, d.control), format_value(r.metric, d.treatment)
            lines.append(
                f"  {LABELS[r.metric]:<28s} {control:>9s} {treatment:>9s} "
                f"{format_delta(r.metric, d.delta):>9s}  {ci:<22s} {d.p_value:>8.3g}  {r.status}{margin}{cuped}"
            )
        seq = c.sequential
        if seq.crossed is not None:
            x = seq.crossed
            lines.append(
                f"  sequential: crossed at {x.decisions:,} decisions / {x.customers:,} customers "
                f"(Δ {x.delta:+.2%}, always-valid p {x.p_value:.3g}); now p {seq.p_value:.3g}"
            )
        else:
            lines.append(f"  sequential: not crossed (always-valid p {seq.p_value:.3g} after {len(seq.looks)} looks)")
    srm = report.srm
    counts = ", ".join(f"{arm} {n:,}" for arm, n in report.customers_per_arm.items())
    lines += [
        "",
        f"sample-ratio check on customers ({counts}): χ² {srm.chi2:.2f}, p {srm.p_value:.3g} "
        f"(mismatch below 0.001) → {'MISMATCH' if srm.mismatch else 'ok'}",
    ]
    if report.paired is not None:
        p = report.paired
        lines.append(
            f"champion vs shadow on the same requests: {p.n:,} requests, approve decisions disagree on "
            f"{p.disagreement_rate:.2%} (only champion approves {p.only_a:,}, only shadow {p.only_b:,}), "
            f"McNemar p {p.p_value:.3g}"
        )
    lines += [f"note: {n}" for n in report.notes]
    lines += ["", f"verdict: {report.verdict} — {report.reason}"]
    if report.comparisons:
        lines.append(f"sequential rule: {report.comparisons[0].sequential.rule}")
    return "\n".join(lines)
