"""Vectorized featurization of columnar data (training, backfills): numpy only, same spec as ``features.single``.

Written independently of the single-request path on purpose; the test suite proves both give identical vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from features.spec import (
    N_FEATURES,
    NUMERIC_FIELDS,
    ONE_HOT_FIELDS,
    ORDINAL_FIELDS,
    TIMES_OF_DAY,
    date_features,
    hour_features,
    time_of_day_index,
)

Columns = Mapping[str, Sequence[Any] | npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class BatchFeatures:
    """Feature matrix (n × 36) and, per categorical field, a boolean mask of rows whose value was unknown."""

    matrix: npt.NDArray[np.float64]
    unknown: dict[str, npt.NDArray[np.bool_]]

    def unknown_fields(self, row: int) -> tuple[str, ...]:
        """Names of the fields that were unknown in ``row`` (same order as the single-request path)."""
        return tuple(field for field, mask in self.unknown.items() if mask[row])


def _canonical_wall_clock(timestamps: Sequence[str] | npt.NDArray[Any]) -> npt.NDArray[np.datetime64]:
    """Wall-clock time as written (offset dropped), as datetime64[s]."""
    out: list[str] = []
    for ts in timestamps:
        s = str(ts)
        if len(s) >= 19 and s[4] == "-" and s[7] == "-" and s[10] in "T " and s[13] == ":" and s[16] == ":":
            out.append(s[:10] + "T" + s[11:19])
        else:  # rarer ISO-8601 spellings (basic format, no seconds, date only)
            out.append(datetime.fromisoformat(s).replace(tzinfo=None).isoformat(timespec="seconds"))
    return np.array(out, dtype="datetime64[s]")


def _time_block(timestamps: Sequence[str] | npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    ts = _canonical_wall_clock(timestamps)
    days = ts.astype("datetime64[D]")
    months = ts.astype("datetime64[M]")
    day = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    month = months.astype(np.int64) % 12 + 1
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour = (ts - days.astype("datetime64[s]")).astype(np.int64) // 3600
    bucket = time_of_day_index(hour)
    block = np.column_stack(
        [
            *date_features(day, weekday, month),
            *hour_features(hour),
            *(bucket == k for k in range(1, len(TIMES_OF_DAY))),
        ]
    )
    return block.astype(np.float64)


def _normalized(values: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.str_]:
    return np.char.lower(np.char.strip(np.asarray(values, dtype=np.str_)))


def featurize_columns(columns: Columns) -> BatchFeatures:
    """Featurize columnar requests (field name → sequence), e.g. a generated data set.

    >>> from datagen import generate
    >>> features = featurize_columns(generate(100, seed=1).columns)
    >>> features.matrix.shape
    (100, 36)
    """
    n = len(columns["amount"])
    numeric = np.column_stack([np.asarray(columns[f], dtype=np.float64) for f in NUMERIC_FIELDS])
    time_block = _time_block(columns["transaction_timestamp"])
    unknown: dict[str, npt.NDArray[np.bool_]] = {}

    ordinal = np.empty((n, len(ORDINAL_FIELDS)), dtype=np.float64)
    for j, (field, _, cats) in enumerate(ORDINAL_FIELDS):
        values = _normalized(columns[field])
        known = np.isin(values, cats)
        codes = np.full(n, (len(cats) - 1) / 2.0)
        for i, c in enumerate(cats):
            codes[values == c] = i
        ordinal[:, j] = codes
        unknown[field] = ~known

    one_hot_blocks = []
    for field, cats in ONE_HOT_FIELDS:
        values = _normalized(columns[field])
        block = (values[:, None] == np.asarray(cats[1:])[None, :]).astype(np.float64)
        missing = ~np.isin(values, cats)
        block[missing] = 1.0 / len(cats)
        unknown[field] = missing
        one_hot_blocks.append(block)

    matrix = np.hstack([numeric, time_block[:, :6], ordinal, *one_hot_blocks, time_block[:, 6:]])
    assert matrix.shape == (n, N_FEATURES)
    return BatchFeatures(np.ascontiguousarray(matrix), unknown)
