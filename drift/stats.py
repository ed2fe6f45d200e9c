"""Distribution distances against a reference profile: PSI over the profile's bins, KS from its quantiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

EPS = 1e-4


def psi(actual: npt.NDArray[np.float64], expected: npt.NDArray[np.float64]) -> float:
    """Population stability index Σ (a − e)·ln(a / e) over matching bins (shares clipped at 1e-4).

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])), 6)
    0.0
    """
    a = np.clip(actual, EPS, None)
    e = np.clip(expected, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_psi(values: npt.NDArray[np.float64], summary: Mapping[str, Any]) -> float:
    """PSI of ``values`` over the reference summary's bins (``bin_edges`` interior cut points)."""
    edges = np.asarray(summary["bin_edges"], dtype=float)
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return psi(counts / max(values.size, 1), np.asarray(summary["bin_fractions"], dtype=float))


def ks_from_quantiles(values: npt.NDArray[np.float64], summary: Mapping[str, Any]) -> float:
    """Kolmogorov–Smirnov distance evaluated at the reference quantiles (p01 … p99) and at the histogram's bin edges.

    At a bin edge the reference CDF is known exactly (the cumulated bin fractions). At a quantile ``q`` of level
    ``p`` it is only known that ``F(q−) ≤ p ≤ F(q)`` (equality for a continuous field; a discrete one jumps at
    ``q``), so the distance there is how far ``p`` lies outside the values' own ``[F̂(q−), F̂(q)]``: an unchanged
    discrete field reads ≈ 0, not the size of its jumps.

    >>> trusted = {"quantiles": {"p01": 0.0, "p50": 0.0, "p75": 1.0, "p99": 1.0}, "bin_edges": [0.0],
    ...            "bin_fractions": [0.7, 0.3]}  # a 0/1 field, 30 % ones
    >>> ks_from_quantiles(np.array([0.0] * 7 + [1.0] * 3), trusted), ks_from_quantiles(np.ones(10), trusted)
    (0.0, 0.7)
    """
    ordered = np.sort(values)
    n = max(values.size, 1)
    quantiles = summary["quantiles"]
    points = np.array([float(v) for v in quantiles.values()])
    levels = np.array([int(k[1:]) / 100 for k in quantiles])
    below = np.searchsorted(ordered, points, side="left") / n  # F̂(q−)
    upto = np.searchsorted(ordered, points, side="right") / n  # F̂(q)
    distance = np.maximum(np.maximum(levels - upto, below - levels), 0.0)
    edges = np.asarray(summary.get("bin_edges", []), dtype=float)
    exact = np.cumsum(np.asarray(summary.get("bin_fractions", []), dtype=float))[: edges.size]
    at_edges = np.abs(np.searchsorted(ordered, edges, side="right") / n - exact)
    return float(max(np.max(distance, initial=0.0), np.max(at_edges, initial=0.0)))


def categorical_psi(values: Sequence[str], frequencies: Mapping[str, float]) -> float:
    """PSI of category shares vs the reference, with every unseen value pooled into one extra bucket."""
    known = list(frequencies)
    index = {c: i for i, c in enumerate(known)}
    counts = np.zeros(len(known) + 1)
    for v in values:
        counts[index.get(v, len(known))] += 1
    expected = np.array([*frequencies.values(), 0.0])
    return psi(counts / max(len(values), 1), expected)
