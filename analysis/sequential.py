"""Always-valid inference: the normal mixture sequential probability ratio test (mSPRT).

For an estimate θ̂ₙ (e.g. a difference of rates) with variance Vₙ, mixing the alternative over θ ~ N(0, τ²) gives
the likelihood ratio  Λₙ = √(Vₙ/(Vₙ+τ²)) · exp(τ²θ̂ₙ² / (2Vₙ(Vₙ+τ²))).  The always-valid p-value
pₙ = min(pₙ₋₁, 1/Λₙ) may be checked after every observation: P(ever pₙ ≤ α | H₀) ≤ α (Johari, Pekelis & Walsh,
"Always Valid Inference", 2017). Inverting the test gives a confidence sequence for θ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from analysis.clustered import compare, customer_sums, ratio_estimate


def msprt_likelihood_ratio(estimate: float, variance: float, tau2: float) -> float:
    """Λ for an estimate with the given variance under a N(0, τ²) mixture."""
    if variance <= 0:
        return 1.0
    exponent = tau2 * estimate * estimate / (2 * variance * (variance + tau2))
    return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))


def confidence_sequence(estimate: float, variance: float, tau2: float, alpha: float = 0.05) -> tuple[float, float]:
    """Interval that contains θ at all times with probability ≥ 1 − α."""
    if variance <= 0:
        return -math.inf, math.inf
    radius = math.sqrt(
        2 * variance * (variance + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log((variance + tau2) / variance))
    )
    return estimate - radius, estimate + radius


def difference_of_rates(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """(p2 − p1, its variance under the pooled null)."""
    if n1 == 0 or n2 == 0:
        return 0.0, 0.0
    pooled = (s1 + s2) / (n1 + n2)
    return s2 / n2 - s1 / n1, pooled * (1 - pooled) * (1 / n1 + 1 / n2)


@dataclass(slots=True)
class SequentialTest:
    """Running always-valid p-value for a difference of rates; call :meth:`update` at every peek."""

    tau2: float = 0.0004  # prior sd 0.02 on the difference: tuned for effects of a few points
    alpha: float = 0.05
    p_value: float = 1.0
    crossed_at: int | None = None
    looks: int = 0

    def update(self, s1: int, n1: int, s2: int, n2: int) -> float:
        """New counts (cumulative); returns the always-valid p-value so far."""
        self.looks += 1
        estimate, variance = difference_of_rates(s1, n1, s2, n2)
        ratio = msprt_likelihood_ratio(estimate, variance, self.tau2)
        self.p_value = min(self.p_value, 1.0 / ratio if ratio > 0 else 1.0)
        if self.crossed_at is None and self.p_value <= self.alpha:
            self.crossed_at = n1 + n2
        return self.p_value


@dataclass(frozen=True, slots=True)
class Look:
    """One look of a clustered sequential test: everything decided up to then, in both arms."""

    decisions: int
    customers: int
    delta: float
    variance: float
    p_value: float  # always-valid, so far
    cs_low: float
    cs_high: float


@dataclass(slots=True)
class ClusteredSequential:
    """An always-valid test of a difference of means over *all* decisions so far, with the customer-clustered
    variance (``analysis.clustered``), looked at every ``step`` decisions of the smaller arm after a burn-in."""

    looks: list[Look] = field(default_factory=list)
    crossed: Look | None = None
    rule: str = ""

    @property
    def p_value(self) -> float:
        return self.looks[-1].p_value if self.looks else 1.0


def clustered_sequential(
    treated: npt.NDArray[np.bool_],
    customer: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    step: int = 100,
    burn_in_customers: int = 200,
    tau2: float = 0.0004,
    alpha: float = 0.05,
) -> ClusteredSequential:
    """Run the mSPRT over decisions in time order (``treated``: the decision's arm is the treatment; ``value``: the
    metric per decision, e.g. 1 for an approval). A look happens whenever the smaller arm has ``step`` more
    decisions, from the first time both arms have ``burn_in_customers`` customers; each look uses every decision so
    far, so both arms always cover the same period."""
    rule = (
        f"mSPRT (normal mixture, τ = {math.sqrt(tau2):.3g}) on the difference of means of all decisions so far, "
        f"customer-clustered variance; a look every {step} decisions of the smaller arm once both arms have "
        f"{burn_in_customers} customers; significant the first time the always-valid p ≤ {alpha:g}"
    )
    result = ClusteredSequential(rule=rule)
    n = treated.size
    if n == 0:
        return result
    smaller = np.minimum(np.cumsum(~treated), np.cumsum(treated))
    # Decision indices (exclusive ends) where the smaller arm reaches each multiple of ``step``.
    marks = np.searchsorted(smaller, np.arange(step, int(smaller[-1]) + 1, step), side="left") + 1
    best = 1.0
    ones = np.ones(n)
    for end in marks:
        control_rows, treated_rows = ~treated[:end], treated[:end]
        a = customer_sums(customer[:end][control_rows], value[:end][control_rows], ones[:end][control_rows])
        b = customer_sums(customer[:end][treated_rows], value[:end][treated_rows], ones[:end][treated_rows])
        if min(a.customers, b.customers) < burn_in_customers:
            continue
        difference = compare(ratio_estimate(a), ratio_estimate(b))
        if not difference.defined:
            continue
        ratio = msprt_likelihood_ratio(difference.delta, difference.variance, tau2)
        best = min(best, 1.0 / ratio if ratio > 0 else 1.0)
        low, high = confidence_sequence(difference.delta, difference.variance, tau2, alpha)
        look = Look(int(end), a.customers + b.customers, difference.delta, difference.variance, best, low, high)
        result.looks.append(look)
        if result.crossed is None and best <= alpha:
            result.crossed = look
    return result
