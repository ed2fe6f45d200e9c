"""Proportions: Wilson intervals, Newcombe's hybrid-score interval for a difference, χ² tests, Cohen's h."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    >>> tuple(round(v, 4) for v in wilson_interval(80, 100))
    (0.7112, 0.8666)
    """
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(s1: int, n1: int, s2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) for p2 − p1, built from the two Wilson intervals."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, confidence)
    l2, u2 = wilson_interval(s2, n2, confidence)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return low, high


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """Two-arm comparison of a rate."""

    rate_a: float
    rate_b: float
    difference: float  # rate_b - rate_a
    ci_low: float
    ci_high: float
    chi2: float
    p_value: float
    cohens_h: float


def cohens_h(p1: float, p2: float) -> float:
    """Effect size for proportions: 2·asin(√p2) − 2·asin(√p1)."""
    return 2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))


def compare_proportions(s1: int, n1: int, s2: int, n2: int, confidence: float = 0.95) -> ProportionTest:
    """χ² test (no continuity correction, = two-sided z-test) and Newcombe interval for arm B vs arm A."""
    table = np.array([[s1, n1 - s1], [s2, n2 - s2]])
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    low, high = newcombe_interval(s1, n1, s2, n2, confidence)
    return ProportionTest(
        s1 / n1, s2 / n2, s2 / n2 - s1 / n1, low, high, float(chi2), float(p_value), cohens_h(s1 / n1, s2 / n2)
    )


def chi2_arms(successes: list[int], totals: list[int]) -> tuple[float, float]:
    """χ² test of equal rates across k arms: (statistic, p-value)."""
    table = np.array([[s, n - s] for s, n in zip(successes, totals, strict=True)])
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p_value)
