"""Single-request featurization for the request path: plain Python lookups, no pandas, one small numpy array."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from features.spec import (
    N_FEATURES,
    NUMERIC_FIELDS,
    ONE_HOT_FIELDS,
    ORDINAL_FIELDS,
    TIMES_OF_DAY,
    normalize_category,
    time_of_day,
)
from schemas.request import RiskAssessmentRequest

# Lookup tables built once from the spec: value -> encoded float(s), plus the explicit unknown encoding.
_ORDINAL = tuple(
    (field, {c: float(i) for i, c in enumerate(cats)}, (len(cats) - 1) / 2.0) for field, _, cats in ORDINAL_FIELDS
)
_ONE_HOT = tuple(
    (
        field,
        {c: tuple(1.0 if c == d else 0.0 for d in cats[1:]) for c in cats},
        tuple(1.0 / len(cats) for _ in cats[1:]),
    )
    for field, cats in ONE_HOT_FIELDS
)
_TIME_OF_DAY = {c: tuple(1.0 if c == d else 0.0 for d in TIMES_OF_DAY[1:]) for c in TIMES_OF_DAY}


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """The 36-feature vector of one request and the categorical fields whose value was unknown."""

    vector: npt.NDArray[np.float64]
    unknown_fields: tuple[str, ...]


def time_features(timestamp: str) -> tuple[list[float], str]:
    """Time features and time-of-day bucket from the wall-clock time written in ``timestamp``."""
    ts = datetime.fromisoformat(timestamp)
    hour, day = ts.hour, ts.day
    values = [
        float((day - 1) // 7 + 1),
        1.0 if ts.weekday() >= 5 else 0.0,
        1.0 if day >= 25 else 0.0,
        1.0 if ts.month >= 11 else 0.0,
        1.0 if 9 <= hour <= 17 else 0.0,
        1.0 if hour >= 22 or hour <= 5 else 0.0,
    ]
    return values, time_of_day(hour)


def featurize(request: RiskAssessmentRequest) -> FeatureResult:
    """Turn one validated request into its 36 features (order: ``features.spec.FEATURE_NAMES``).

    >>> from datagen import example_request
    >>> result = featurize(example_request(payment_provider="zip"))
    >>> len(result.vector), result.unknown_fields
    (36, ('payment_provider',))
    """
    row: list[float] = [float(getattr(request, name)) for name in NUMERIC_FIELDS]
    time_values, bucket = time_features(request.transaction_timestamp)
    row += time_values
    unknown: list[str] = []
    for field, table, midpoint in _ORDINAL:
        code = table.get(normalize_category(getattr(request, field)))
        if code is None:
            unknown.append(field)
            code = midpoint
        row.append(code)
    for field, group, mixture in _ONE_HOT:
        dummies = group.get(normalize_category(getattr(request, field)))
        if dummies is None:
            unknown.append(field)
            dummies = mixture
        row += dummies
    row += _TIME_OF_DAY[bucket]
    vector = np.array(row, dtype=np.float64)
    assert vector.shape == (N_FEATURES,)
    return FeatureResult(vector, tuple(unknown))
