"""Simulated experiments: how the sequential test and a peeked-at fixed test behave (A/A and A/B)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.sequential import SequentialTest, difference_of_rates


@dataclass(frozen=True, slots=True)
class PeekingResult:
    sequential_rate: float  # share of experiments where the always-valid test crossed α
    naive_rate: float  # share where a fixed-horizon test was significant at some peek
    median_stop: float  # median samples per arm at the sequential crossing (nan if none)


def peeking(
    rate_a: float, rate_b: float, experiments: int, looks: int, step: int, seed: int, tau2: float = 0.02**2
) -> PeekingResult:
    """Simulate ``experiments`` two-arm experiments, peeking after every ``step`` samples per arm ``looks`` times."""
    rng = np.random.default_rng(seed)
    sequential = naive = 0
    stops = []
    for _ in range(experiments):
        ca = np.cumsum(rng.random(step * looks) < rate_a)
        cb = np.cumsum(rng.random(step * looks) < rate_b)
        test = SequentialTest(tau2=tau2)
        naive_hit = False
        for k in range(1, looks + 1):
            n = k * step
            test.update(int(ca[n - 1]), n, int(cb[n - 1]), n)
            estimate, variance = difference_of_rates(int(ca[n - 1]), n, int(cb[n - 1]), n)
            naive_hit |= variance > 0 and 2 * stats.norm.sf(abs(estimate) / np.sqrt(variance)) < 0.05
        sequential += test.crossed_at is not None
        naive += naive_hit
        if test.crossed_at is not None:
            stops.append(test.crossed_at / 2)
    return PeekingResult(
        sequential / experiments, naive / experiments, float(np.median(stops)) if stops else float("nan")
    )
