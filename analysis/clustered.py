"""Customer-clustered statistics: the customer is the unit of randomisation, so it is the unit of analysis.

A decision-level metric (approval rate, mean score, latency …) is a **ratio metric** over customers: customer ``i``
contributes a numerator ``Y_i`` (e.g. approvals) and a denominator ``N_i`` (decisions), and the arm's estimate is
``R = ΣY / ΣN``. Customers come back, so their decisions are not independent; the variance of ``R`` comes from the
delta method over customers (Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric Analytics"; the same
construction as GrowthBook's ``RatioStatistic``)::

    Var(R) ≈ [Var(Y) − 2R·Cov(Y, N) + R²·Var(N)] / (n · N̄²)

with sample (co)variances over the arm's ``n`` customers. Equivalently ``Var(R) = Σᵢ Lᵢ² / (n(n−1))`` for the
linearised contributions ``Lᵢ = (Yᵢ − R·Nᵢ) / N̄``; with ``n`` instead of ``n − 1`` it is exactly the cluster-robust
(CR0) variance of an intercept-only OLS on the decision-level indicator, clusters = customers. Arms hold disjoint
customers, so the variance of a difference is the sum of the two. The **design effect** is this variance over the
binomial one that treats decisions as independent.

**CUPED** (Deng, Xu, Kohavi & Walker 2013), for a ratio metric through its linearisation: each customer's
pre-experiment contribution ``Xᵢ`` (0 without history) is a covariate; ``θ = Cov(L, X)/Var(X)`` pooled over arms,
and the difference and its variance are those of ``L − θX``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CustomerSums:
    """Per-customer numerator and denominator sums of one metric in one arm (customers with N > 0 only)."""

    numerator: Array
    denominator: Array
    #: The customer code of each row (to align covariates and look customers up).
    codes: npt.NDArray[np.int64]

    @property
    def customers(self) -> int:
        return int(self.denominator.size)

    @property
    def decisions(self) -> float:
        return float(self.denominator.sum())


def customer_sums(customer: npt.NDArray[np.int64], numerator: Array, denominator: Array) -> CustomerSums:
    """Sum decision-level values per customer code (``customer`` holds small integer codes, e.g. from
    ``np.unique(..., return_inverse=True)``); customers whose denominator is 0 carry no information and are dropped.

    >>> s = customer_sums(np.array([0, 0, 1]), np.array([1.0, 0.0, 1.0]), np.ones(3))
    >>> s.numerator.tolist(), s.denominator.tolist()
    ([1.0, 1.0], [2.0, 1.0])
    """
    if customer.size == 0:
        return CustomerSums(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
    length = int(np.max(customer)) + 1
    num: Array = np.bincount(customer, weights=numerator, minlength=length).astype(np.float64)
    den: Array = np.bincount(customer, weights=denominator, minlength=length).astype(np.float64)
    keep = den > 0
    return CustomerSums(num[keep], den[keep], np.flatnonzero(keep))


@dataclass(frozen=True, slots=True)
class RatioEstimate:
    """A ratio metric of one arm with its delta-method (clustered) variance."""

    customers: int
    decisions: float
    estimate: float
    variance: float  # clustered (delta method)
    #: Linearised per-customer contributions (for differences and CUPED), and the customer code of each.
    influence: Array
    codes: npt.NDArray[np.int64]

    @property
    def iid_variance(self) -> float:
        """The variance if decisions were independent: for a 0/1 metric, R(1 − R)/N."""
        return self.estimate * (1 - self.estimate) / self.decisions if self.decisions else math.nan

    @property
    def design_effect(self) -> float:
        """Clustered variance over the independent-decisions variance (for 0/1 metrics)."""
        iid = self.iid_variance
        return self.variance / iid if iid and iid > 0 else math.nan


def ratio_estimate(sums: CustomerSums, ddof: int = 1) -> RatioEstimate:
    """``R = ΣY/ΣN`` and its delta-method variance over customers (``ddof=0``: the CR0 sandwich).

    >>> r = ratio_estimate(CustomerSums(np.array([2.0, 0.0, 1.0]), np.array([2.0, 1.0, 1.0]), np.arange(3)))
    >>> round(r.estimate, 4), round(r.variance, 4)
    (0.75, 0.082)
    """
    n = sums.customers
    if n == 0 or sums.decisions == 0:
        return RatioEstimate(n, sums.decisions, math.nan, math.nan, np.zeros(0), sums.codes)
    y, m = sums.numerator, sums.denominator
    mean_n = float(m.mean())
    r = float(y.sum() / m.sum())
    influence = (y - r * m) / mean_n
    variance = float((influence**2).sum() / (n * (n - ddof))) if n > ddof else math.nan
    return RatioEstimate(n, float(m.sum()), r, variance, influence, sums.codes)


@dataclass(frozen=True, slots=True)
class Difference:
    """Treatment minus control of one metric, with a clustered z-test."""

    control: float
    treatment: float
    delta: float
    variance: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    #: Relative change delta / control.
    lift: float
    #: 1 − adjusted variance / unadjusted variance when CUPED was applied (else 0).
    variance_reduction: float = 0.0

    @property
    def defined(self) -> bool:
        """False while the data cannot support a test (an empty cell, no variation at all)."""
        return math.isfinite(self.variance) and self.variance > 0


def compare(control: RatioEstimate, treatment: RatioEstimate, confidence: float = 0.95) -> Difference:
    """z-test of treatment − control with the sum of the arms' clustered variances.

    >>> a = ratio_estimate(CustomerSums(np.array([1.0, 1, 0, 1]), np.ones(4), np.arange(4)))
    >>> b = ratio_estimate(CustomerSums(np.array([1.0, 1, 1, 1, 0, 1]), np.ones(6), np.arange(6)))
    >>> d = compare(a, b)
    >>> round(d.delta, 4), round(d.p_value, 3)
    (0.0833, 0.782)
    """
    delta = treatment.estimate - control.estimate
    variance = control.variance + treatment.variance
    return _difference(control.estimate, treatment.estimate, delta, variance, confidence)


def compare_cuped(
    control: RatioEstimate,
    treatment: RatioEstimate,
    control_covariate: Array,
    treatment_covariate: Array,
    confidence: float = 0.95,
) -> Difference:
    """Like :func:`compare`, with the CUPED adjustment by pre-experiment covariates (one per customer, aligned with
    the arms' influence arrays). θ is estimated on both arms pooled."""
    unadjusted = control.variance + treatment.variance
    influence = np.concatenate([control.influence, treatment.influence])
    covariate = np.concatenate([control_covariate, treatment_covariate])
    spread = float(covariate.var(ddof=1)) if covariate.size > 1 else 0.0
    if spread <= 0:
        return compare(control, treatment, confidence)
    theta = float(np.cov(influence, covariate, ddof=1)[0, 1] / spread)
    adjusted_c = control.influence - theta * (control_covariate - covariate.mean())
    adjusted_t = treatment.influence - theta * (treatment_covariate - covariate.mean())
    n_c, n_t = control.customers, treatment.customers
    variance = float(adjusted_c.var(ddof=1) / n_c + adjusted_t.var(ddof=1) / n_t)
    delta = treatment.estimate - control.estimate - theta * float(treatment_covariate.mean() - control_covariate.mean())
    result = _difference(control.estimate, treatment.estimate, delta, variance, confidence)
    return dataclasses.replace(result, variance_reduction=1 - variance / unadjusted if unadjusted > 0 else 0.0)


def _difference(control: float, treatment: float, delta: float, variance: float, confidence: float) -> Difference:
    if not (math.isfinite(variance) and variance > 0):
        return Difference(control, treatment, delta, variance, math.nan, math.nan, math.nan, math.nan, math.nan)
    se = math.sqrt(variance)
    z = delta / se
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * se
    p_value = float(2 * stats.norm.sf(abs(z)))
    lift = delta / control if control else math.nan
    return Difference(control, treatment, delta, variance, delta - half, delta + half, z, p_value, lift)


def linearised(sums: CustomerSums) -> Array:
    """Per-customer linearised contributions ``(Yᵢ − R·Nᵢ)/N̄`` of a metric (e.g. over a pre-experiment period,
    as CUPED covariates)."""
    return ratio_estimate(sums).influence
