"""Training reference profile: what "normal" looks like for one model version, stored with it for drift checks.

For each of the 36 features and for the score: mean, std, quantiles and a histogram over interior quantile cut
points (bins ``(-inf, c1], (c1, c2], …, (ck, inf)``), so PSI against live windows needs only these numbers.
For each categorical request field: the frequency of every value seen. Plain JSON, versioned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from features.spec import CATEGORICAL_FIELDS, FEATURE_NAMES, normalize_category

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
        "min": float(values.min()),
        "max": float(values.max()),
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


def build_profile(
    features: npt.NDArray[np.float64],
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]],
    scores: npt.NDArray[np.float64],
    decision_rates: Mapping[str, float],
) -> dict[str, Any]:
    """The reference profile of one model version (JSON-serializable)."""
    return {
        "schema_version": PROFILE_SCHEMA_VERSION,
        "rows": int(features.shape[0]),
        "features": {name: numeric_summary(features[:, j]) for j, name in enumerate(FEATURE_NAMES)},
        "categorical": {
            name: {"known_values": list(known), "frequencies": category_frequencies(columns[name])}
            for name, known in CATEGORICAL_FIELDS.items()
        },
        "score": {**numeric_summary(scores, bins=20), "score_rows": int(scores.size)},
        "decision_rates": dict(decision_rates),
    }
