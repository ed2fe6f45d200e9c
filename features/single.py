"""Single-request featurization for the request path: plain Python lookups, no pandas, one small numpy array."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from datetime import datetime

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec.structs import astuple

from features.spec import (
    NUMERIC_FIELDS,
    ONE_HOT_FIELDS,
    ORDINAL_FIELDS,
    TIMES_OF_DAY,
    date_features,
    hour_features,
    normalize_category,
    time_of_day_index,
)
from schemas.request import RiskAssessmentRequest

# Lookup tables built once from the spec: value -> encoded number(s), plus the explicit unknown encoding.
# Whole-numbered codes are kept as ints: the values list goes into every event, and JSON-encoding an int is far
# cheaper than a float (the vector the models see is float64 either way).
_POSITION = {name: i for i, name in enumerate(RiskAssessmentRequest.__struct_fields__)}
_NUMERIC_POSITIONS = tuple(_POSITION[name] for name in NUMERIC_FIELDS)
_TYPES = {f.name: f.type for f in msgspec.structs.fields(RiskAssessmentRequest)}
_BOOL_SLOTS = tuple(i for i, name in enumerate(NUMERIC_FIELDS) if _TYPES[name] is bool)
#: (field, position in the request, value -> encoded numbers, unknown encoding): ordinal fields, then one-hot.
_CATEGORICAL: list[tuple[str, int, dict[str, tuple[float, ...]], tuple[float, ...]]] = []
for _field, _, _cats in ORDINAL_FIELDS:
    _CATEGORICAL.append((_field, _POSITION[_field], {c: (i,) for i, c in enumerate(_cats)}, ((len(_cats) - 1) / 2.0,)))
for _field, _cats in ONE_HOT_FIELDS:
    _CATEGORICAL.append(
        (
            _field,
            _POSITION[_field],
            {c: tuple(1 if c == d else 0 for d in _cats[1:]) for c in _cats},
            tuple(1.0 / len(_cats) for _ in _cats[1:]),
        )
    )
_TIME_OF_DAY = {c: tuple(1 if c == d else 0 for d in TIMES_OF_DAY[1:]) for c in TIMES_OF_DAY}


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """The 36 features of one request (as float64 vector and as a list of plain numbers) and its unknown fields."""

    vector: npt.NDArray[np.float64]
    #: The same 36 values as ints where whole-numbered by construction (what events carry).
    values: list[float]
    unknown_fields: tuple[str, ...]


def time_features(timestamp: str) -> tuple[list[float], str]:
    """Time features and time-of-day bucket from the wall-clock time written in ``timestamp`` (a full parse)."""
    ts = datetime.fromisoformat(timestamp)
    values = [float(v) for v in (*date_features(ts.day, ts.weekday(), ts.month), *hour_features(ts.hour))]
    return values, TIMES_OF_DAY[time_of_day_index(ts.hour)]


# The request schema only admits ``YYYY-MM-DD[( |T)HH:MM…]`` (a real date, checked on decoding), so the request
# path reads date and hour by position: per date, the date features are computed once; per hour, a table.
_DATE_CACHE: dict[str, tuple[float, ...]] = {}
_DATE_CACHE_MAX = 4096


def _date_features(date: str) -> tuple[float, ...]:
    found = _DATE_CACHE.get(date)
    if found is None:
        if len(_DATE_CACHE) >= _DATE_CACHE_MAX:
            _DATE_CACHE.clear()
        day = datetime.fromisoformat(date)
        found = _DATE_CACHE[date] = tuple(int(v) for v in date_features(day.day, day.weekday(), day.month))
    return found


def _hour_features(hour: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(int(v) for v in hour_features(hour)), _TIME_OF_DAY[TIMES_OF_DAY[time_of_day_index(hour)]]


_HOURS = tuple(_hour_features(h) for h in range(24))


def featurize(request: RiskAssessmentRequest) -> FeatureResult:
    """Turn one validated request into its 36 features (order: ``features.spec.FEATURE_NAMES``).

    >>> from datagen import example_request
    >>> result = featurize(example_request(payment_provider="zip"))
    >>> len(result.vector), result.unknown_fields
    (36, ('payment_provider',))
    """
    values = astuple(request)
    row: list[float] = [values[p] for p in _NUMERIC_POSITIONS]
    for i in _BOOL_SLOTS:  # 0/1, not true/false in the event's JSON
        row[i] = int(row[i])
    timestamp = request.transaction_timestamp
    hour_values, time_of_day_dummies = _HOURS[int(timestamp[11:13]) if len(timestamp) > 10 else 0]
    row += _date_features(timestamp[:10])
    row += hour_values
    unknown: list[str] = []
    # Canonical spellings hit the table directly; only a miss pays for normalizing.
    for field, position, table, fallback in _CATEGORICAL:
        value = values[position]
        encoded = table.get(value)
        if encoded is None:
            encoded = table.get(normalize_category(value))
            if encoded is None:
                unknown.append(field)
                encoded = fallback
        row += encoded
    row += time_of_day_dummies
    return FeatureResult(np.frombuffer(array("d", row)), row, tuple(unknown))
