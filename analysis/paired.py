"""Champion vs shadow on the same requests: how often they disagree, and McNemar's test on the decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True, slots=True)
class PairedComparison:
    n: int
    disagreement_rate: float
    only_a: int  # A positive, B negative (e.g. A approves, B does not)
    only_b: int
    statistic: float
    p_value: float
    exact: bool


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> PairedComparison:
    """McNemar's test of paired binary outcomes: exact binomial when discordant pairs < 25, else χ² with
    continuity correction (statsmodels' defaults)."""
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    discordant = only_a + only_b
    n = len(a)
    if discordant == 0:
        return PairedComparison(n, 0.0, 0, 0, 0.0, 1.0, True)
    if discordant < 25:
        p_value = float(stats.binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
        return PairedComparison(n, discordant / n, only_a, only_b, float(min(only_a, only_b)), p_value, True)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return PairedComparison(n, discordant / n, only_a, only_b, statistic, float(stats.chi2.sf(statistic, 1)), False)
