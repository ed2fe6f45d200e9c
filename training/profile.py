"""Training reference profile: what "normal" looks like for one model version, stored with it for drift checks.

For each of the 36 features and for the score: mean, std, quantiles and a histogram over interior quantile cut
points (bins ``(-inf, c1], (c1, c2], …, (ck, inf)``), so PSI against live windows needs only these numbers.
For each categorical request field, and for the time of day and the kind of day of the request timestamp: the
frequency of every value seen. Plain JSON, versioned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from features.spec import CATEGORICAL_FIELDS, FEATURE_NAMES, TIME_FIELDS, normalize_category, time_categories

PROFILE_SCHEMA_VERSION: Final = 1
QUANTILES: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def numeric_summary(values: npt.NDArray[np.float64], bins: int = 10) -> dict[str, Any]:
    """Summary + histogram of one numeric column over ``bins`` quantile bins (fewer when values repeat).

    >>> s = numeric_summary(np.array([0.0, 0.0, 1.0, 1.0]))
    >>> s["bin_edges"], s["bin_fractions"]
    ([0.0, 1.0], [0.5, 0.5, 0.0])
    """
    # Edges are observed values (inverted CDF), so discrete features get one bin per value, not interpolated ones.
    interior = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf"))
    counts = np.bincount(np.searchsorted(interior, values, side="left"), minlength=len(interior) + 1)
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "quantiles": {
            f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)
        },
        "bin_edges": [float(e) for e in interior],
        "bin_fractions": [float(c) for c in counts / values.size],
    }


def category_frequencies(values: Sequence[Any] | npt.NDArray[Any]) -> dict[str, float]:
    """Share of each (normalized) value, most frequent first."""
    normalized = [normalize_category(str(v)) for v in values]
    uniq, counts = np.unique(np.asarray(normalized, dtype=np.str_), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(uniq[i]): float(counts[i] / len(normalized)) for i in order}


def _time_profile(timestamps: Sequence[Any] | npt.NDArray[Any] | None) -> dict[str, Any]:
    """Shares of each watched time field's values (``features.spec.TIME_FIELDS``) in the reference rows."""
    if timestamps is None or len(timestamps) == 0:
        return {}
    rows = [time_categories(str(t)) for t in timestamps]
    return {
        name: {"known_values": list(values), "frequencies": category_frequencies([r.get(name, "") for r in rows])}
        for name, values in TIME_FIELDS.items()
    }


def null_design_effects(
    profile: Mapping[str, Any],
    features: npt.NDArray[np.float64],
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]],
    window: int = 5_000,
) -> dict[str, Any]:
    """How much noisier each drift statistic is on real traffic than the χ² null assumes, because customers come
    back: a window of ``n`` decisions holds fewer than ``n`` independent customers.

    Measured on held-out rows in time order: the **cluster factor** of a window (``Σ m_c² / n`` over its customers'
    decision counts ``m_c``; 1 when every decision is a different customer) averaged over consecutive windows, and per
    watched field the **within-customer agreement** ``ρ`` (how much more often two decisions of one customer fall in
    the same bin than two random decisions; 1 for a customer attribute, ≈ 0 for a per-purchase value). The design
    effect is ``1 + (cluster − 1) · ρ``; the drift monitor multiplies its χ² critical value by it. Seasonal changes
    are not counted (they are drift, not noise).
    """
    from features.spec import NUMERIC_FIELDS

    customers = np.asarray([str(c) for c in columns["customer_id"]])
    n_rows = customers.size
    size = min(window, n_rows // 4) if n_rows >= 400 else 0
    if size == 0:
        return {"window": 0, "cluster_factor": 1.0, "agreement": {}, "design_effect": {}}
    factors = []
    for start in range(0, n_rows - size + 1, size):
        _, counts = np.unique(customers[start : start + size], return_counts=True)
        factors.append(float((counts.astype(np.float64) ** 2).sum() / size))
    cluster = float(np.mean(factors))
    _, codes = np.unique(customers, return_inverse=True)
    order = np.lexsort((np.arange(n_rows), codes))
    same_customer = codes[order][1:] == codes[order][:-1]  # consecutive decisions of one customer

    def agreement(bins: npt.NDArray[np.int64]) -> float:
        if not same_customer.any():
            return 0.0
        ordered = bins[order]
        observed = float(np.mean(ordered[1:][same_customer] == ordered[:-1][same_customer]))
        _, counts = np.unique(bins, return_counts=True)
        chance = float(((counts / bins.size) ** 2).sum())
        return max(0.0, (observed - chance) / (1 - chance)) if chance < 1 else 0.0

    rho: dict[str, float] = {}
    for j, name in enumerate(FEATURE_NAMES):
        if name in NUMERIC_FIELDS:
            edges = np.asarray(profile["features"][name]["bin_edges"], dtype=float)
            rho[name] = agreement(np.searchsorted(edges, features[:, j], side="left").astype(np.int64))
    for name in CATEGORICAL_FIELDS:
        values = np.asarray([normalize_category(str(v)) for v in columns[name]])
        rho[name] = agreement(np.unique(values, return_inverse=True)[1].astype(np.int64))
    for name in TIME_FIELDS:
        values = np.asarray([time_categories(str(t)).get(name, "") for t in columns["transaction_timestamp"]])
        rho[name] = agreement(np.unique(values, return_inverse=True)[1].astype(np.int64))
    return {
        "window": size,
        "cluster_factor": cluster,
        "agreement": rho,
        "design_effect": {name: 1.0 + (cluster - 1.0) * r for name, r in rho.items()},
    }


def build_profile(
    features: npt.NDArray[np.float64],
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]],
    scores: npt.NDArray[np.float64],
    decision_rates: Mapping[str, float],
    held_out: tuple[npt.NDArray[np.float64], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The reference profile of one model version (JSON-serializable); ``held_out`` (features, columns of later rows
    in time order) measures the drift statistics' design effects."""
    profile = _profile(features, columns, scores, decision_rates)
    if held_out is not None:
        profile["null"] = null_design_effects(profile, *held_out)
    return profile


def _profile(
    features: npt.NDArray[np.float64],
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]],
    scores: npt.NDArray[np.float64],
    decision_rates: Mapping[str, float],
) -> dict[str, Any]:
    return {
        "schema_version": PROFILE_SCHEMA_VERSION,
        "rows": int(features.shape[0]),
        "features": {name: numeric_summary(features[:, j]) for j, name in enumerate(FEATURE_NAMES)},
        "categorical": {
            name: {"known_values": list(known), "frequencies": category_frequencies(columns[name])}
            for name, known in CATEGORICAL_FIELDS.items()
        },
        "time": _time_profile(columns.get("transaction_timestamp")),
        "score": {**numeric_summary(scores, bins=20), "score_rows": int(scores.size)},
        "decision_rates": dict(decision_rates),
    }
