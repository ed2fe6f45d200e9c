"""Always-valid inference: the normal mixture sequential probability ratio test (mSPRT).

For an estimate θ̂ₙ (e.g. a difference of rates) with variance Vₙ, mixing the alternative over θ ~ N(0, τ²) gives
the likelihood ratio  Λₙ = √(Vₙ/(Vₙ+τ²)) · exp(τ²θ̂ₙ² / (2Vₙ(Vₙ+τ²))).  The always-valid p-value
pₙ = min(pₙ₋₁, 1/Λₙ) may be checked after every observation: P(ever pₙ ≤ α | H₀) ≤ α (Johari, Pekelis & Walsh,
"Always Valid Inference", 2017). Inverting the test gives a confidence sequence for θ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
