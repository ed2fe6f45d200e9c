"""``make bench-ab``: A/A and A/B simulations of the experiment statistics.

* A/A: 1,000 simulated experiments (approval rate 80 % in both arms), peeking after every 100 samples per arm up
  to 5,000: false-positive rate of the always-valid sequential test vs a fixed-horizon χ² test checked at every peek.
* A/B: a known effect (80 % → 82 %) at the sample size the power calculation gives for 80 % power: simulated power
  of the fixed test vs the calculation, and how often / how early the sequential test detects it.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import stats

from analysis.power import power_two_proportions, sample_size_two_proportions
from analysis.simulation import peeking

EXPERIMENTS, STEP, LOOKS = 1_000, 100, 50


def fixed_power(p1: float, p2: float, n: int, sims: int = 5_000, seed: int = 9) -> float:
    rng = np.random.default_rng(seed)
    s1, s2 = rng.binomial(n, p1, sims), rng.binomial(n, p2, sims)
    pooled = (s1 + s2) / (2 * n)
    z = (s2 - s1) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    return float(np.mean(2 * stats.norm.sf(np.abs(z)) < 0.05))


def main() -> int:
    aa = peeking(0.80, 0.80, EXPERIMENTS, LOOKS, STEP, seed=1)
    seq_fpr, naive_fpr = aa.sequential_rate, aa.naive_rate
    n = sample_size_two_proportions(0.80, 0.82, power=0.8)
    calc = power_two_proportions(0.80, 0.82, n)
    simulated = fixed_power(0.80, 0.82, n)
    ab = peeking(0.80, 0.82, EXPERIMENTS, LOOKS, STEP, seed=2)
    seq_power, median_stop = ab.sequential_rate, ab.median_stop
    print(f"A/A, {EXPERIMENTS:,} experiments, peeking every {STEP} samples per arm up to {STEP * LOOKS:,}:")
    print(
        f"| test | false-positive rate (α = 0.05) |\n|---|---|\n| sequential (mSPRT, always valid) | "
        f"{seq_fpr:.1%} |\n| fixed-horizon χ², checked at every peek | {naive_fpr:.1%} |"
    )
    print(
        f"\nA/B, 80 % → 82 %: power calculation n = {n:,} per arm for 80 % power (calculated {calc:.1%}); "
        f"simulated power of the fixed test at that n: {simulated:.1%} (5,000 simulations)"
    )
    print(
        f"sequential test, peeking every {STEP} up to {STEP * LOOKS:,} per arm: detects {seq_power:.1%} "
        f"(median stop at {median_stop:,.0f} per arm)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
