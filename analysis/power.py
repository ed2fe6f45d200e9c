"""Power, minimum detectable effect and sample size for comparing two proportions (two-sided z-test).

Uses the normal approximation with the Cohen's h (arcsine) effect size, the same as statsmodels'
``NormalIndPower`` with ``proportion_effectsize``.
"""

from __future__ import annotations

import math

from scipy import optimize, stats

from analysis.proportions import cohens_h


def power_two_proportions(p1: float, p2: float, n_per_arm: float, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """Power of the two-sided test to detect p1 → p2 with ``n_per_arm`` in arm A and ``ratio``·n in arm B."""
    h = abs(cohens_h(p1, p2))
    z = float(stats.norm.ppf(1 - alpha / 2))
    scale = h * math.sqrt(n_per_arm * ratio / (1 + ratio))
    return float(stats.norm.sf(z - scale) + stats.norm.cdf(-z - scale))


def sample_size_two_proportions(
    p1: float, p2: float, power: float = 0.8, alpha: float = 0.05, ratio: float = 1.0
) -> int:
    """Smallest n in arm A (arm B: ratio·n) reaching ``power``."""
    found = optimize.brentq(lambda n: power_two_proportions(p1, p2, n, alpha, ratio) - power, 2, 1e9)
    return math.ceil(float(found))


def minimum_detectable_effect(
    p1: float, n_per_arm: float, power: float = 0.8, alpha: float = 0.05, ratio: float = 1.0
) -> float:
    """Smallest increase p2 − p1 detectable with ``power`` (searches p2 in (p1, 1))."""
    if power_two_proportions(p1, 1 - 1e-9, n_per_arm, alpha, ratio) < power:
        return float("nan")
    p2 = optimize.brentq(lambda q: power_two_proportions(p1, q, n_per_arm, alpha, ratio) - power, p1 + 1e-9, 1 - 1e-9)
    return float(p2 - p1)


def power_clustered(
    p1: float, p2: float, decisions_a: float, decisions_b: float, design_effect: float, alpha: float = 0.05
) -> float:
    """Power of the two-sided clustered z-test of p2 − p1 with ``decisions_a``/``decisions_b`` decisions per arm,
    when clustering inflates the variance of the independent-decision case by ``design_effect``.

    >>> [round(power_clustered(0.8, 0.82, 14_000, 6_000, de), 2) for de in (1.0, 3.7)]
    [0.91, 0.41]
    """
    se = math.sqrt(design_effect * (p1 * (1 - p1) / decisions_a + p2 * (1 - p2) / decisions_b))
    z = float(stats.norm.ppf(1 - alpha / 2))
    shift = abs(p2 - p1) / se
    return float(stats.norm.sf(z - shift) + stats.norm.cdf(-z - shift))
