"""Sample-ratio mismatch: are the arms' sizes consistent with the configured allocation?"""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True, slots=True)
class SrmCheck:
    chi2: float
    p_value: float
    mismatch: bool


def sample_ratio_mismatch(observed: list[int], allocation: list[float], threshold: float = 0.001) -> SrmCheck:
    """χ² goodness of fit of observed arm counts to the allocation; ``mismatch`` below ``threshold`` (strict, as
    an SRM means the assignment or logging is broken, not that an arm is better).

    >>> sample_ratio_mismatch([7000, 3000], [0.7, 0.3]).mismatch
    False
    """
    total = sum(observed)
    expected = [total * share for share in allocation]
    chi2, p_value = stats.chisquare(observed, expected)
    return SrmCheck(float(chi2), float(p_value), bool(p_value < threshold))
