"""How good a risk model's scores were, once outcomes are known — and how good they should be, before.

Everything here takes plain arrays: ``y`` (1 = the loan went bad), ``p`` (the model's default probability at decision
time), ``customer`` (small integer codes; loans of one customer are not independent, so intervals that can be
clustered are). The population is whatever the caller passes; the performance job passes **funded loans** only
(approved decisions, and manual reviews a reviewer approved): denied applicants never get an outcome.

* **Discrimination.** :func:`auc` is the Mann–Whitney statistic with midranks (ties count ½), identical to
  ``sklearn.metrics.roc_auc_score``. :func:`delong` gives the AUCs of several score columns on the same rows with
  their DeLong covariance (DeLong, DeLong & Clarke-Pearson 1988) in the fast midrank form of Sun & Xu (2014), so a
  version's CI and the paired test of two versions (:func:`paired_test`) come from one pass. Gini = 2·AUC − 1; KS is
  the largest gap between the score distributions of bad and good loans.
* **Calibration.** Brier score; observed vs expected defaults per score band (deciles of the score) and overall. A
  band's observed/expected ratio is compared with the interval it would fall in if the scores were calibrated: the
  variance of ``O − E`` is the cluster-robust one over customers (``Σ_c (Σ_{i∈c} y_i − p_i)²``), never less than the
  independent-loans one (``Σ p(1−p)``). Calibration-in-the-large is ``mean(y) − mean(p)`` with the same clustered CI.
  Hosmer–Lemeshow over the deciles is reported (with ``g − 2`` degrees of freedom) but not alerted on: at tens of
  thousands of loans it flags miscalibrations too small to matter.
* **Estimated performance** (confidence-based, as NannyML's CBPE): before outcomes arrive, a calibrated score *is*
  the expected outcome, so the expected default rate of a set of loans is ``mean(p)`` (with the interval the realized
  rate falls in if the scores are calibrated) and the expected AUC is the Mann–Whitney statistic where every loan is
  a fractional bad (weight ``p``) and a fractional good (weight ``1 − p``).
* **Vintages.** Cumulative default rate by origination week and weeks on book.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

Array = npt.NDArray[np.float64]
Codes = npt.NDArray[np.int64]


def two_sided_z(confidence: float) -> float:
    """The normal quantile of a two-sided interval at ``confidence`` (1.96 at 0.95)."""
    return float(stats.norm.ppf(0.5 + confidence / 2))


def auc(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count ½); NaN when one class is missing.

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    labels = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    m, n = int(labels.sum()), int((~labels).sum())
    if m == 0 or n == 0:
        return math.nan
    ranks = stats.rankdata(s)
    return float((ranks[labels].sum() - m * (m + 1) / 2) / (m * n))


@dataclass(frozen=True, slots=True)
class DeLong:
    """AUCs of ``k`` score columns on the same loans and their DeLong covariance matrix (k × k)."""

    aucs: Array
    covariance: Array
    positives: int
    negatives: int

    def ci(self, i: int = 0, confidence: float = 0.95) -> tuple[float, float]:
        """Wald interval of AUC ``i``, clipped to [0, 1]."""
        half = two_sided_z(confidence) * math.sqrt(max(float(self.covariance[i, i]), 0.0))
        return max(0.0, float(self.aucs[i]) - half), min(1.0, float(self.aucs[i]) + half)


def delong(y: npt.ArrayLike, scores: npt.ArrayLike, customer: Codes | None = None) -> DeLong:
    """DeLong AUCs and covariance of the score rows of ``scores`` (shape k × n, or one row of n) against ``y``.

    With ``customer`` (integer codes, see :func:`customer_codes`) the covariance is clustered by customer
    (Obuchowski 1997): a customer's loans share one borrower, so their placements are not independent, and the
    independent-loan variance is too small when customers repeat.
    """
    labels = np.asarray(y, dtype=bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = int(labels.sum()), int((~labels).sum())
    k = s.shape[0]
    if m < 2 or n < 2:
        return DeLong(np.full(k, math.nan), np.full((k, k), math.nan), m, n)
    pos, neg = s[:, labels], s[:, ~labels]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    aucs = np.empty(k)
    for r in range(k):
        tx = stats.rankdata(pos[r])
        ty = stats.rankdata(neg[r])
        tz = stats.rankdata(np.concatenate([pos[r], neg[r]]))
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[r] = (tz[:m] - tx) / n  # per bad loan: share of good loans it outranks
        v01[r] = 1.0 - (tz[m:] - ty) / m  # per good loan: share of bad loans that outrank it
    if customer is None:
        covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    else:
        covariance = _clustered_covariance(v10, v01, aucs, np.asarray(customer), labels)
    return DeLong(aucs, covariance, m, n)


def _clustered_covariance(v10: Array, v01: Array, aucs: Array, customer: Codes, labels: npt.NDArray[np.bool_]) -> Array:
    """Obuchowski's clustered DeLong covariance: placements summed per customer, centred by each customer's count
    of bad (``m_c``) and good (``n_c``) loans times the AUC."""
    _, codes = np.unique(customer, return_inverse=True)
    clusters = int(np.max(codes)) + 1
    pos, neg = codes[labels], codes[~labels]
    m, n = pos.size, neg.size
    m_c = np.bincount(pos, minlength=clusters).astype(np.float64)
    n_c = np.bincount(neg, minlength=clusters).astype(np.float64)
    a = np.stack([np.bincount(pos, weights=row, minlength=clusters) for row in v10]) - np.outer(aucs, m_c)
    b = np.stack([np.bincount(neg, weights=row, minlength=clusters) for row in v01]) - np.outer(aucs, n_c)
    scale = clusters / (clusters - 1) if clusters > 1 else 1.0
    s10 = scale * (a @ a.T) / m
    s01 = scale * (b @ b.T) / n
    s11 = scale * (a @ b.T)
    covariance: Array = s10 / m + s01 / n + (s11 + s11.T) / (m * n)
    return covariance


@dataclass(frozen=True, slots=True)
class PairedTest:
    """AUC of ``a`` minus AUC of ``b`` on the same loans, with its DeLong z-test."""

    delta: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


def paired_test(result: DeLong, a: int = 0, b: int = 1, confidence: float = 0.95) -> PairedTest:
    """Paired DeLong test of AUC ``a`` vs AUC ``b`` from one :func:`delong` result."""
    c = result.covariance
    delta = float(result.aucs[a] - result.aucs[b])
    variance = float(c[a, a] + c[b, b] - 2 * c[a, b])
    if not variance > 0:
        same = delta == 0 or math.isnan(delta)
        return PairedTest(
            delta, 0.0, 0.0 if same else math.copysign(math.inf, delta), 1.0 if same else 0.0, delta, delta
        )
    se = math.sqrt(variance)
    z = delta / se
    half = two_sided_z(confidence) * se
    return PairedTest(delta, se, z, float(2 * stats.norm.sf(abs(z))), delta - half, delta + half)


def ks_statistic(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Kolmogorov–Smirnov distance between the scores of bad and good loans (0 … 1)."""
    labels = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    if labels.all() or not labels.any():
        return math.nan
    return float(stats.ks_2samp(s[labels], s[~labels]).statistic)


def brier(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean squared error of the probabilities."""
    diff = np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(np.mean(diff**2)) if diff.size else math.nan


def customer_codes(customers: npt.ArrayLike) -> Codes:
    """Integer code per customer id (the clusters of every clustered interval).

    >>> customer_codes(["b", "a", "b"]).tolist()
    [1, 0, 1]
    """
    return np.unique(np.asarray(customers, dtype=object).astype(str), return_inverse=True)[1].astype(np.int64)


def clustered_residual_variance(residual: Array, customer: Codes) -> float:
    """``Σ_c (Σ_{i∈c} r_i)²``: the cluster-robust variance of ``Σ r`` (customers as clusters)."""
    if residual.size == 0:
        return 0.0
    sums = np.bincount(customer, weights=residual)
    return float((sums**2).sum())


@dataclass(frozen=True, slots=True)
class Band:
    """Observed vs expected defaults of one set of loans (a score band, or all of them)."""

    label: str
    loans: int
    expected: float  # Σ p
    observed: float  # Σ y
    #: The interval observed/expected falls in with the given confidence if the scores are calibrated.
    ratio_low: float
    ratio_high: float
    #: z of O − E under calibration (clustered variance).
    z: float

    @property
    def ratio(self) -> float:
        return self.observed / self.expected if self.expected > 0 else math.nan

    @property
    def outside(self) -> bool:
        return self.loans > 0 and not (self.ratio_low <= self.ratio <= self.ratio_high)


def band(label: str, y: Array, p: Array, customer: Codes, confidence: float) -> Band:
    """Observed/expected of one set of loans, with its calibration interval (see the module docstring)."""
    expected, observed = float(p.sum()), float(y.sum())
    if y.size == 0 or expected <= 0:
        return Band(label, int(y.size), expected, observed, math.nan, math.nan, 0.0)
    variance = max(float((p * (1 - p)).sum()), clustered_residual_variance(y - p, customer))
    sd = math.sqrt(variance)
    half = two_sided_z(confidence) * sd / expected
    return Band(label, int(y.size), expected, observed, max(0.0, 1 - half), 1 + half, (observed - expected) / sd)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Calibration of one model on one set of loans."""

    overall: Band
    bands: list[Band]
    #: mean(y) − mean(p) and its clustered CI.
    citl: float
    citl_low: float
    citl_high: float
    hosmer_lemeshow: float
    hl_p_value: float

    @property
    def failed_bands(self) -> list[Band]:
        """The bands (overall included) whose observed/expected is outside its calibration interval."""
        return [b for b in (self.overall, *self.bands) if b.outside]


def calibration(
    y: npt.ArrayLike, p: npt.ArrayLike, customer: Codes, bands: int = 10, confidence: float = 0.95
) -> Calibration:
    """Observed vs expected overall and per score band (quantiles of ``p``), CITL and Hosmer–Lemeshow.

    ``confidence`` applies per band; the caller passes a Bonferroni-adjusted one when it alerts on any band.
    """
    yy = np.asarray(y, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    overall = band("all", yy, pp, customer, confidence)
    n = yy.size
    if n == 0:
        nan = math.nan
        return Calibration(overall, [], nan, nan, nan, nan, nan)
    order = np.argsort(pp, kind="stable")
    groups = [g for g in np.array_split(order, min(bands, n)) if g.size]
    per_band = []
    hl = 0.0
    for g in groups:
        lo, hi = float(np.min(pp[g])), float(np.max(pp[g]))
        b = band(f"{lo:.3f}–{hi:.3f}", yy[g], pp[g], customer[g], confidence)
        per_band.append(b)
        mean_p = b.expected / b.loans
        if 0 < mean_p < 1:
            hl += (b.observed - b.expected) ** 2 / (b.expected * (1 - mean_p))
    citl = float(yy.mean() - pp.mean())
    se = math.sqrt(max(float((pp * (1 - pp)).sum()), clustered_residual_variance(yy - pp, customer))) / n
    half = two_sided_z(confidence) * se
    dof = max(len(per_band) - 2, 1)
    return Calibration(overall, per_band, citl, citl - half, citl + half, hl, float(stats.chi2.sf(hl, dof)))


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected performance of a set of loans from their scores alone (no outcomes)."""

    loans: int
    default_rate: float  # mean p × calibration factor
    #: Where the realized default rate falls with the given confidence if the (recalibrated) scores hold.
    default_rate_low: float
    default_rate_high: float
    auc: float
    #: Observed/expected of the reference loans the estimate was recalibrated with (1: none).
    factor: float = 1.0


def estimate(
    p: npt.ArrayLike,
    confidence: float = 0.95,
    design_effect: float = 1.0,
    factor: float = 1.0,
    factor_variance: float = 0.0,
) -> Estimate:
    """Confidence-based performance estimation: expected default rate (with its interval) and expected AUC.

    ``design_effect`` widens the interval for loans of repeat customers (the ratio of the clustered to the
    independent variance, measured on matured loans); 1 treats loans as independent. ``factor`` recalibrates the
    scores with the observed/expected ratio of recent matured loans (CBPE calibrates on labelled reference data the
    same way); its uncertainty (``factor_variance``) widens the interval.

    >>> e = estimate([0.01, 0.02, 0.5, 0.9])
    >>> round(e.default_rate, 4), round(e.auc, 3)
    (0.3575, 0.976)
    """
    pp = np.asarray(p, dtype=np.float64)
    n = pp.size
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan, factor)
    mean = float(pp.mean())
    rate = mean * factor
    sampling = float((pp * (1 - pp)).sum()) * max(design_effect, 1.0) * max(factor, 0.0) / n**2
    half = two_sided_z(confidence) * math.sqrt(sampling + mean**2 * factor_variance)
    return Estimate(n, rate, max(0.0, rate - half), min(1.0, rate + half), expected_auc(pp), factor)


def calibration_factor(y: npt.ArrayLike, p: npt.ArrayLike, customer: Codes) -> tuple[float, float]:
    """Observed/expected defaults of labelled reference loans and the variance of that ratio (clustered by
    customer); (1, 0) without reference loans.

    >>> calibration_factor(np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5, 0.5]), np.arange(4))
    (1.0, 0.25)
    """
    yy = np.asarray(y, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    expected = float(pp.sum())
    if yy.size == 0 or expected <= 0:
        return 1.0, 0.0
    variance = max(float((pp * (1 - pp)).sum()), clustered_residual_variance(yy - pp, customer))
    return float(yy.sum()) / expected, variance / expected**2


def expected_auc(p: Array) -> float:
    """Expected AUC if outcomes are Bernoulli(p): each loan is bad with weight p and good with weight 1 − p; pairs
    of one loan with itself are excluded. Ties count ½."""
    n = p.size
    if n < 2:
        return math.nan
    order = np.argsort(p, kind="stable")
    s, w_bad = p[order], p[order]
    w_good = 1 - s
    # For each distinct score: good weight strictly below it, and good weight tied with it.
    uniq, start = np.unique(s, return_index=True)
    good_by_value = np.add.reduceat(w_good, start)
    below = np.concatenate([[0.0], np.cumsum(good_by_value)[:-1]])
    idx = np.searchsorted(uniq, s)
    wins = w_bad * (below[idx] + 0.5 * (good_by_value[idx] - w_good))  # a loan's own good weight is excluded
    pairs = w_bad.sum() * w_good.sum() - float((w_bad * w_good).sum())
    return float(wins.sum() / pairs) if pairs > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Vintage:
    """Cumulative default rate of one origination week by weeks on book (NaN where the cohort is not that old)."""

    cohort: str  # Monday of the origination week, ISO date
    loans: int
    cumulative: list[float]


def vintages(
    decided_at: npt.NDArray[np.datetime64],
    bad_at: npt.NDArray[np.datetime64],
    as_of: np.datetime64,
    weeks: int = 8,
) -> list[Vintage]:
    """Vintage curves: per origination week, the share of its loans that went bad within 1 … ``weeks`` weeks on
    book (``bad_at`` is NaT for loans that did not go bad, or whose outcome is not known yet)."""
    if decided_at.size == 0:
        return []
    day = decided_at.astype("datetime64[D]")
    monday = day - ((day.astype(np.int64) + 3) % 7).astype("timedelta64[D]")
    age_days = (bad_at.astype("datetime64[s]") - decided_at.astype("datetime64[s]")).astype(np.float64) / 86_400
    out = []
    for cohort in np.unique(monday):
        rows = monday == cohort
        n = int(rows.sum())
        cohort_age = (as_of.astype("datetime64[s]") - cohort.astype("datetime64[s]")).astype(np.float64) / 86_400
        curve = []
        for w in range(1, weeks + 1):
            if cohort_age < 7 * w:
                curve.append(math.nan)
                continue
            ages = age_days[rows]
            curve.append(float(np.sum(ages[~np.isnan(ages)] <= 7 * w)) / n)
        out.append(Vintage(str(cohort), n, curve))
    return out
