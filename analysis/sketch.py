"""A mergeable quantile sketch: counts in logarithmic buckets (DDSketch's mapping), every quantile within a stated
relative error. The MLflow group keeps the counts in Redis per window and shard; ``bnpl send`` keeps them in memory
for its live percentiles."""

from __future__ import annotations

import math


class LogBuckets:
    """DDSketch's logarithmic mapping: bucket i holds values in (γ^(i-1), γ^i] with γ = (1 + α) / (1 - α), and
    reports 2γ^i / (γ + 1), within relative error α of any value in it. Counts per bucket add up across shards and
    workers, so the quantiles of a window are those of all its events, whatever split them (Masson, Rim & Lee,
    "DDSketch", VLDB 2019). Values below ``floor`` share one bucket (``z``), reported as 0.

    >>> b = LogBuckets(0.01, floor=1e-6)
    >>> values = [0.5, 1.0, 2.0, 4.0, 8.0]
    >>> hist = {}
    >>> for v in values:
    ...     hist[b.index(v)] = hist.get(b.index(v), 0) + 1
    >>> abs(b.quantile(hist, 0.5) - 2.0) / 2.0 <= 0.01
    True
    >>> b.index(0.0), b.quantile({"z": 3}, 0.9)
    ('z', 0.0)
    """

    def __init__(self, relative_error: float, floor: float) -> None:
        self.gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self.gamma)
        self.floor = floor

    def index(self, value: float) -> str:
        """The bucket of ``value`` (a hash field suffix)."""
        if value < self.floor:
            return "z"
        return str(math.ceil(math.log(value) / self._log_gamma))

    def value(self, index: str) -> float:
        """The value a bucket reports."""
        if index == "z":
            return 0.0
        return 2 * self.gamma ** int(index) / (self.gamma + 1)

    def quantile(self, hist: dict[str, int], q: float) -> float:
        """The q-quantile (the ⌊q (n - 1)⌋-th order statistic, 0-based) of the counted values; NaN when empty."""
        total = sum(hist.values())
        if not total:
            return math.nan
        rank, seen = q * (total - 1), 0
        ordered = sorted(hist, key=lambda k: -math.inf if k == "z" else int(k))
        for index in ordered:
            seen += hist[index]
            if seen > rank:
                return self.value(index)
        return self.value(ordered[-1])
