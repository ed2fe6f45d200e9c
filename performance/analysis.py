"""One performance analysis: which decisions it looks at, and every figure it reports per model version and arm.

**Windows.** An analysis on date ``D`` with period ``P`` (7 days weekly, 1 day daily) and maturity ``M`` (the days
after a decision by which its outcome is known, ``BNPL_OUTCOME_MATURITY_DAYS``) looks at:

* the **matured cohort**: decisions made in ``[D − M − P, D − M)`` — their outcomes are in; realized figures;
* the **fresh window**: decisions made in ``[D − P, D)`` — no outcomes yet; estimated figures only;
* the **vintage window**: the last 12 periods of funded loans, for vintage curves;
* the **reference periods**: the 4 matured periods before a window, whose observed/expected recalibrates the scores
  for that window's estimates (as CBPE calibrates on labelled reference data).

**Population.** Only funded credit has an outcome: approved decisions, and manual reviews a reviewer approved (they
are recognised by having an outcome). Every realized figure is measured on **funded loans**, never on applicants:
denied applicants' outcomes are unknown, so the AUC here is the AUC within the approved range, lower than a holdout
AUC over all applicants. The AUC-drop rule therefore compares like with like: the AUC among a version's own approved
loans against the same figure on its holdout (``holdout_auc_approved``, recorded at training).

**Versions.** Every version that scored a loan is measured on it: the deciding one and every shadow-scored one, on
the same loans, so versions are compared paired (DeLong) against the champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from analysis.clustered import RatioEstimate, customer_sums, ratio_estimate
from analysis.performance import (
    Band,
    Calibration,
    Estimate,
    Vintage,
    band,
    brier,
    calibration,
    calibration_factor,
    customer_codes,
    delong,
    estimate,
    ks_statistic,
    paired_test,
    two_sided_z,
    vintages,
)

PERIOD_DAYS: Final = {"weekly": 7, "daily": 1}
VINTAGE_PERIODS: Final = 12
#: Matured periods before a cohort whose observed/expected recalibrates the estimates (CBPE's reference data).
REFERENCE_PERIODS: Final = 4
BANDS: Final = 10
CONFIDENCE: Final = 0.95


@dataclass(frozen=True, slots=True)
class Windows:
    """The time ranges of one analysis (UTC, half-open)."""

    analysis_date: date
    cadence: str
    cohort_start: datetime
    cohort_end: datetime
    fresh_start: datetime
    fresh_end: datetime
    vintage_start: datetime

    @property
    def period(self) -> timedelta:
        return timedelta(days=PERIOD_DAYS[self.cadence])

    @property
    def read_start(self) -> datetime:
        """Where the decisions an analysis reads begin: the vintage window, or the estimates' reference periods."""
        return min(self.cohort_start - REFERENCE_PERIODS * self.period, self.vintage_start)


def windows(analysis_date: date, cadence: str, maturity_days: int) -> Windows:
    """The windows of the analysis on ``analysis_date`` (see the module docstring).

    >>> w = windows(date(2026, 3, 2), "weekly", 42)
    >>> w.cohort_start.date(), w.cohort_end.date(), w.fresh_start.date()
    (datetime.date(2026, 1, 12), datetime.date(2026, 1, 19), datetime.date(2026, 2, 23))
    """
    if cadence not in PERIOD_DAYS:
        raise ValueError(f"cadence must be one of {sorted(PERIOD_DAYS)}, not {cadence!r}")
    period = timedelta(days=PERIOD_DAYS[cadence])
    end = datetime(analysis_date.year, analysis_date.month, analysis_date.day, tzinfo=UTC)
    cohort_end = end - timedelta(days=maturity_days)
    return Windows(
        analysis_date,
        cadence,
        cohort_end - period,
        cohort_end,
        end - period,
        end,
        end - VINTAGE_PERIODS * period,
    )


def weekly_analysis_dates(start: datetime, days: int, maturity_days: int) -> list[date]:
    """The weekly analysis dates whose matured cohorts cover decisions made from ``start`` for ``days`` days: the
    first when the first week has matured, then every 7 days.

    >>> weekly_analysis_dates(datetime(2026, 4, 6, tzinfo=UTC), 14, 42)
    [datetime.date(2026, 5, 25), datetime.date(2026, 6, 1)]
    """
    first = (start + timedelta(days=7 + maturity_days)).date()
    last = (start + timedelta(days=days + maturity_days)).date()
    return [first + timedelta(days=7 * k) for k in range((last - first).days // 7 + 1)]


def due_date(now: datetime, cadence: str) -> date:
    """The latest analysis date at or before ``now``: a Monday (weekly) or today (daily)."""
    today = now.astimezone(UTC).date()
    return today - timedelta(days=today.weekday()) if cadence == "weekly" else today


@dataclass(slots=True)
class Loans:
    """Decisions with their outcome, as arrays (one row per transaction)."""

    customer: npt.NDArray[np.int64]
    decided_at: npt.NDArray[np.datetime64]
    decision: npt.NDArray[np.str_]
    arm: npt.NDArray[np.str_]
    version: npt.NDArray[np.str_]  # deciding version ("" for the rule-based fallback)
    has_outcome: npt.NDArray[np.bool_]
    bad: npt.NDArray[np.bool_]
    bad_at: npt.NDArray[np.datetime64]
    income: npt.NDArray[np.str_]
    age: npt.NDArray[np.str_]
    #: version → score of every row (NaN where the version did not score it).
    scores: dict[str, npt.NDArray[np.float64]]
    #: version → alias it was scored under (the latest seen), and the champion version.
    aliases: dict[str, str]
    model_name: str | None

    def __len__(self) -> int:
        return int(self.customer.size)

    def where(self, mask: npt.NDArray[np.bool_]) -> Loans:
        return Loans(
            self.customer[mask],
            self.decided_at[mask],
            self.decision[mask],
            self.arm[mask],
            self.version[mask],
            self.has_outcome[mask],
            self.bad[mask],
            self.bad_at[mask],
            self.income[mask],
            self.age[mask],
            {v: s[mask] for v, s in self.scores.items()},
            self.aliases,
            self.model_name,
        )

    def between(self, start: datetime, end: datetime) -> Loans:
        lo, hi = np.datetime64(start.replace(tzinfo=None), "us"), np.datetime64(end.replace(tzinfo=None), "us")
        return self.where((self.decided_at >= lo) & (self.decided_at < hi))

    @property
    def approved(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.decision == "approve")

    @property
    def funded(self) -> npt.NDArray[np.bool_]:
        """Approved, or reviewed and funded (a manual review with an outcome)."""
        funded: npt.NDArray[np.bool_] = self.approved | ((self.decision == "manual_review") & self.has_outcome)
        return funded

    @property
    def champion(self) -> str | None:
        found = [v for v, a in self.aliases.items() if a == "champion"]
        return found[0] if found else None


def _utc64(values: Any) -> npt.NDArray[np.datetime64]:
    """UTC timestamps as ``datetime64[us]``: from a numpy array as the DuckDB warehouse returns them, or from
    aware datetimes (None → NaT)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return values.astype("datetime64[us]")
    out = np.full(len(values), np.datetime64("NaT", "us"), dtype="datetime64[us]")
    for i, v in enumerate(values):
        if v is not None:
            out[i] = np.datetime64(v.astimezone(UTC).replace(tzinfo=None), "us")
    return out


def loans_of(columns: dict[str, list[Any]]) -> Loans:
    """The warehouse's performance rows (``Warehouse.performance_rows``) as :class:`Loans`."""
    n = len(columns.get("transaction_id", []))
    codes = customer_codes(columns.get("customer_id", []))
    scores: dict[str, npt.NDArray[np.float64]] = {}
    aliases: dict[str, str] = {}
    for i, (preds, versions) in enumerate(
        zip(columns.get("all_predictions", []), columns.get("model_versions", []), strict=True)
    ):
        p = orjson.loads(preds) if preds else {}
        vs = orjson.loads(versions) if versions else {}
        for alias, score in p.items():
            version = vs.get(alias)
            if version is None:
                continue
            column = scores.get(version)
            if column is None:
                column = scores[version] = np.full(n, np.nan)
            column[i] = score
            aliases[version] = alias
    outcome = columns.get("outcome", [])
    bad = np.array([bool(b) for b in columns.get("bad", [])], dtype=bool) if n else np.zeros(0, dtype=bool)
    bad_at = _utc64(columns.get("outcome_date", []))
    bad_at[~bad] = np.datetime64("NaT", "us")
    names = [m for m in columns.get("model_name", []) if m]
    return Loans(
        codes.astype(np.int64),
        _utc64(columns.get("decided_at", [])),
        np.asarray(columns.get("business_decision", []), dtype=str),
        np.asarray(columns.get("traffic_segment", []), dtype=str),
        np.asarray([v or "" for v in columns.get("model_version", [])], dtype=str),
        np.array([o is not None for o in outcome], dtype=bool),
        bad,
        bad_at,
        np.asarray([x or "" for x in columns.get("customer_income_bracket", [])], dtype=str),
        np.asarray([x or "" for x in columns.get("customer_age_bracket", [])], dtype=str),
        scores,
        aliases,
        names[-1] if names else None,
    )


@dataclass(frozen=True, slots=True)
class Interval:
    value: float
    low: float = math.nan
    high: float = math.nan
    n: int = 0


@dataclass(slots=True)
class VersionReport:
    """Realized (matured cohort) and estimated (fresh window) performance of one model version."""

    version: str
    alias: str
    deciding_loans: int  # matured funded loans this version decided
    loans: int  # matured funded loans with an outcome this version scored
    bads: int
    auc: Interval
    gini: float
    ks: float
    brier: float
    calibration: Calibration | None
    #: The same checks at the alerting confidence (Bonferroni over bands, segments and overall).
    calibration_alert: Calibration | None
    #: Observed vs expected per income bracket, at the alerting confidence (a concept shift in a segment shows
    #: here first: its scores do not move, its defaults do).
    segment_bands: list[Band]
    #: Paired DeLong against the champion on the same loans (None for the champion itself).
    vs_champion: Any
    #: AUC among the version's own approved loans, and its reference from training.
    auc_approved: Interval
    holdout_auc_approved: float | None
    holdout_auc: float | None
    #: Default rate among the version's approved loans: realized, and estimated from the same loans' scores.
    default_approved: Interval
    estimated_matured: Estimate
    #: Estimated figures of the fresh window's approved decisions (no outcomes yet).
    estimated_fresh: Estimate
    design_effect: float
    vintages: list[Vintage] = field(default_factory=list)
    #: ROC curve points (false-positive rate, true-positive rate), at most ~200.
    roc: tuple[list[float], list[float]] = ([], [])

    @property
    def gap(self) -> float:
        """Realized minus estimated default rate among approved (matured cohort)."""
        return self.default_approved.value - self.estimated_matured.default_rate


@dataclass(slots=True)
class BracketFigures:
    """One age bracket of one deciding version: its approval rate on the fresh decisions, the adverse impact ratio
    (its rate over the most-approved bracket's), and the default rate among its approved, matured loans."""

    bracket: str
    decisions: int
    approval: Interval
    impact_ratio: float
    #: z of (rate − 0.8 × best rate) with the clustered variances of both: negative beyond the four-fifths line.
    four_fifths_z: float
    default_approved: Interval


@dataclass(slots=True)
class FairnessReport:
    """Adverse impact by age bracket of the decisions one version made (the four-fifths rule)."""

    version: str
    reference: str  # the most-approved bracket
    brackets: list[BracketFigures]

    @property
    def lowest(self) -> BracketFigures | None:
        shown = [b for b in self.brackets if math.isfinite(b.impact_ratio)]
        return min(shown, key=lambda b: b.impact_ratio) if shown else None


@dataclass(slots=True)
class ArmReport:
    arm: str
    versions: list[str]
    decisions: int
    approval_rate: Interval
    default_approved: Interval


@dataclass(slots=True)
class PerformanceReport:
    windows: Windows
    model_name: str | None
    decisions: int  # matured cohort, all decisions
    funded: int
    labelled: int
    approved_without_outcome: int
    reviews_funded: int
    champion: str | None
    versions: list[VersionReport]
    arms: list[ArmReport]
    #: Income bracket → (loans, observed, expected by the deciding scores) on the matured cohort: where a
    #: calibration failure sits.
    segments: dict[str, tuple[int, float, float]]
    alpha: float
    fairness: list[FairnessReport] = field(default_factory=list)

    @property
    def population(self) -> str:
        return "funded loans (approved + manual reviews a reviewer funded); denied applicants have no outcome"


def _rate(customer: npt.NDArray[np.int64], hits: npt.NDArray[np.bool_]) -> RatioEstimate:
    """The share of ``hits`` with its variance clustered by customer."""
    return ratio_estimate(customer_sums(customer, hits.astype(np.float64), np.ones(customer.size)))


def _interval(r: RatioEstimate, z: float) -> Interval:
    if r.customers == 0:
        return Interval(math.nan)
    half = z * math.sqrt(r.variance) if r.variance == r.variance else math.nan
    return Interval(r.estimate, r.estimate - half, r.estimate + half, int(r.decisions))


def _clustered_rate(customer: npt.NDArray[np.int64], hits: npt.NDArray[np.bool_], z: float) -> Interval:
    return _interval(_rate(customer, hits), z)


def analyse(
    loans: Loans,
    win: Windows,
    references: dict[str, dict[str, float]],
    alpha: float,
) -> PerformanceReport:
    """Every figure of one analysis. ``references``: version → training metrics (``holdout_auc``,
    ``holdout_auc_approved``)."""
    cohort = loans.between(win.cohort_start, win.cohort_end)
    fresh = loans.between(win.fresh_start, win.fresh_end)
    vintage_rows = loans.between(win.vintage_start, win.fresh_end)
    funded = cohort.funded
    labelled = funded & cohort.has_outcome
    z95 = two_sided_z(CONFIDENCE)
    brackets = sorted(set(cohort.income[labelled].tolist()) - {""})
    alert_conf = 1 - alpha / (BANDS + 1 + len(brackets))
    champion = loans.champion
    versions = []
    for version in sorted(loans.scores, key=lambda v: (v != champion, v)):
        s = cohort.scores[version]
        mask = labelled & ~np.isnan(s)
        y, p, cust = cohort.bad[mask], s[mask], cohort.customer[mask]
        result = delong(y, p, cust)
        lo, hi = result.ci(0, CONFIDENCE)
        vs = None
        if champion is not None and version != champion:
            both = mask & ~np.isnan(cohort.scores[champion])
            if both.any():
                pair = np.vstack([s[both], cohort.scores[champion][both]])
                vs = paired_test(delong(cohort.bad[both], pair, cohort.customer[both]), 0, 1, CONFIDENCE)
        own = labelled & cohort.approved & (cohort.version == version)
        own_result = delong(cohort.bad[own], s[own], cohort.customer[own]) if own.any() else delong([], [])
        a_lo, a_hi = own_result.ci(0, 1 - alpha) if own.any() else (math.nan, math.nan)
        ratio = _rate(cohort.customer[own], cohort.bad[own])
        default_approved = _interval(ratio, z95)
        design = ratio.design_effect if own.sum() > 1 and ratio.design_effect == ratio.design_effect else 1.0
        fresh_own = fresh.approved & (fresh.version == version)
        for_cohort = _reference_factor(loans, version, win.cohort_start, win.period)
        for_fresh = _reference_factor(loans, version, win.cohort_end, win.period)
        ref = references.get(version, {})
        decided = funded & (cohort.version == version)
        bads = int(y.sum())
        versions.append(
            VersionReport(
                version=version,
                alias=loans.aliases.get(version, ""),
                deciding_loans=int(decided.sum()),
                loans=int(mask.sum()),
                bads=bads,
                auc=Interval(float(result.aucs[0]), lo, hi, int(mask.sum())),
                gini=2 * float(result.aucs[0]) - 1,
                ks=ks_statistic(y, p),
                brier=brier(y, p),
                calibration=calibration(y, p, cust, BANDS, CONFIDENCE) if y.size else None,
                calibration_alert=calibration(y, p, cust, BANDS, alert_conf) if y.size else None,
                segment_bands=[
                    band(f"income {b}", y[seg], p[seg], cust[seg], alert_conf)
                    for b in brackets
                    if (seg := cohort.income[mask] == b).any()
                ],
                vs_champion=vs,
                auc_approved=Interval(float(own_result.aucs[0]), a_lo, a_hi, int(own.sum())),
                holdout_auc_approved=ref.get("holdout_auc_approved"),
                holdout_auc=ref.get("holdout_auc"),
                default_approved=default_approved,
                estimated_matured=estimate(s[own], CONFIDENCE, design, *for_cohort),
                estimated_fresh=estimate(fresh.scores[version][fresh_own], CONFIDENCE, design, *for_fresh),
                design_effect=design,
                vintages=_vintages(vintage_rows, version, win),
                roc=_roc(y, p),
            )
        )
    arms = []
    for arm in sorted(set(cohort.arm.tolist())):
        rows = cohort.arm == arm
        appr = rows & labelled & cohort.approved
        arms.append(
            ArmReport(
                arm,
                sorted(set(cohort.version[rows].tolist()) - {""}),
                int(rows.sum()),
                _clustered_rate(cohort.customer[rows], cohort.approved[rows], z95),
                _clustered_rate(cohort.customer[appr], cohort.bad[appr], z95),
            )
        )
    segments: dict[str, tuple[int, float, float]] = {}
    if champion is not None:
        deciding = np.full(len(cohort), np.nan)
        for version, column in cohort.scores.items():
            mine = cohort.version == version
            deciding[mine] = column[mine]
        for bracket in sorted(set(cohort.income[labelled].tolist())):
            rows = labelled & (cohort.income == bracket) & ~np.isnan(deciding)
            segments[bracket] = (int(rows.sum()), float(cohort.bad[rows].sum()), float(deciding[rows].sum()))
    return PerformanceReport(
        windows=win,
        model_name=loans.model_name,
        decisions=len(cohort),
        funded=int(funded.sum()),
        labelled=int(labelled.sum()),
        approved_without_outcome=int((cohort.approved & ~cohort.has_outcome).sum()),
        reviews_funded=int(((cohort.decision == "manual_review") & cohort.has_outcome).sum()),
        champion=champion,
        versions=versions,
        arms=arms,
        segments=segments,
        alpha=alpha,
        fairness=[
            _fairness(fresh, cohort, labelled, version, z95) for version in sorted(set(fresh.version.tolist()) - {""})
        ],
    )


#: Age brackets need this many fresh decisions of a version to be compared.
MIN_BRACKET_DECISIONS: Final = 200


def _fairness(fresh: Loans, cohort: Loans, labelled: npt.NDArray[np.bool_], version: str, z: float) -> FairnessReport:
    """Approval rate per age bracket of the fresh decisions ``version`` made, each against the most-approved
    bracket, and the default rate among approved per bracket on the matured cohort."""
    mine = fresh.version == version
    rates: dict[str, tuple[int, Interval, float]] = {}
    for bracket in sorted(set(fresh.age[mine].tolist()) - {""}):
        rows = mine & (fresh.age == bracket)
        n = int(rows.sum())
        if n < MIN_BRACKET_DECISIONS:
            continue
        r = _rate(fresh.customer[rows], fresh.approved[rows])
        rates[bracket] = (n, _interval(r, z), r.variance)
    if not rates:
        return FairnessReport(version, "", [])
    reference = max(rates, key=lambda b: rates[b][1].value)
    best, best_var = rates[reference][1].value, rates[reference][2]
    out = []
    for bracket, (n, approval, variance) in rates.items():
        sd = math.sqrt(max(variance + 0.64 * best_var, 1e-18))
        appr = labelled & cohort.approved & (cohort.version == version) & (cohort.age == bracket)
        out.append(
            BracketFigures(
                bracket,
                n,
                approval,
                approval.value / best if best > 0 else math.nan,
                (approval.value - 0.8 * best) / sd,
                _clustered_rate(cohort.customer[appr], cohort.bad[appr], z),
            )
        )
    return FairnessReport(version, reference, out)


def _reference_factor(loans: Loans, version: str, before: datetime, period: timedelta) -> tuple[float, float]:
    """Observed/expected (and its variance) of the version's approved, labelled loans decided in the
    ``REFERENCE_PERIODS`` periods before ``before``: what recalibrates its estimates (1, 0 without any)."""
    rows = loans.between(before - REFERENCE_PERIODS * period, before)
    own = rows.approved & rows.has_outcome & (rows.version == version) & ~np.isnan(rows.scores[version])
    if own.sum() < 100:
        return 1.0, 0.0
    return calibration_factor(rows.bad[own], rows.scores[version][own], rows.customer[own])


def _roc(y: npt.NDArray[np.bool_], p: npt.NDArray[np.float64]) -> tuple[list[float], list[float]]:
    if y.all() or not y.any():
        return [], []
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    keep = np.unique(np.linspace(0, fpr.size - 1, min(fpr.size, 200)).astype(int))
    return fpr[keep].tolist(), tpr[keep].tolist()


def _vintages(rows: Loans, version: str, win: Windows) -> list[Vintage]:
    funded = rows.funded & (rows.version == version)
    as_of = np.datetime64(win.fresh_end.replace(tzinfo=None), "us")
    return vintages(rows.decided_at[funded], rows.bad_at[funded], as_of, weeks=8)
