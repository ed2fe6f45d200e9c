"""Continuous metrics: Welch's t-test with its interval, and Cohen's d."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats


@dataclass(frozen=True, slots=True)
class MeanTest:
    mean_a: float
    mean_b: float
    difference: float  # mean_b - mean_a
    ci_low: float
    ci_high: float
    t: float
    df: float
    p_value: float
    cohens_d: float


def welch_test(a: npt.ArrayLike, b: npt.ArrayLike, confidence: float = 0.95) -> MeanTest:
    """Welch's unequal-variance t-test of mean(b) − mean(a) with a Welch–Satterthwaite interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(y.mean() - x.mean())
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    t = diff / se
    p_value = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    pooled = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    return MeanTest(
        float(x.mean()),
        float(y.mean()),
        diff,
        diff - half,
        diff + half,
        float(t),
        float(df),
        p_value,
        diff / pooled if pooled else 0.0,
    )
