"""Reason codes: which request fields pushed the deciding model's score up the most.

Feature contributions (log-odds, see ``decision.scorers``) are summed per request field — the one-hot columns of a
field and all time features count as one reason — and the largest positive sums become reason codes, each with its
applicant-facing statement. Fields that are never a reason (age, time of day, calendar:
``schemas.reasons.NEVER_REASON_FIELDS``) are skipped; when no remaining field pushed the score up, the one that
pushed it least down is given, so an adverse decision always carries a specific reason.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

from features.spec import FEATURE_NAMES, NUMERIC_FIELDS, ONE_HOT_FIELDS, ORDINAL_FIELDS, TIME_FEATURES
from schemas.reasons import FIELD_REASON_CODES, NEVER_REASON_FIELDS, statement_of
from schemas.response import ReasonCode

#: Reason code of each request field (the catalogue lives with the wire formats).
REASON_CODES: Final[dict[str, str]] = FIELD_REASON_CODES


def _field_of_feature() -> list[str]:
    fields: dict[str, str] = {name: name for name in NUMERIC_FIELDS}
    fields.update({name: "transaction_timestamp" for name in TIME_FEATURES})
    fields.update({feature: field for field, feature, _ in ORDINAL_FIELDS})
    for field, cats in ONE_HOT_FIELDS:
        fields.update({f"{field}_{c}": field for c in cats[1:]})
    fields.update({f"time_of_day_{c}": "transaction_timestamp" for c in ("morning", "afternoon", "evening")})
    return [fields[name] for name in FEATURE_NAMES]


_FIELDS: Final = _field_of_feature()
_FIELD_NAMES: Final = sorted(set(_FIELDS))
_FIELD_INDEX: Final = np.array([_FIELD_NAMES.index(f) for f in _FIELDS], dtype=np.intp)


_GIVEN: Final = np.array([name not in NEVER_REASON_FIELDS for name in _FIELD_NAMES])


def top_reasons(contributions: npt.NDArray[np.float64], limit: int = 4, at_least_one: bool = True) -> list[ReasonCode]:
    """Up to ``limit`` fields with the largest positive summed contribution, largest first (never age or time);
    with ``at_least_one``, the best remaining field when none is positive.

    >>> c = np.zeros(36); c[0] = 0.9; c[5] = 0.4; c[3] = -1.0; c[14] = 2.0; c[10] = 1.5
    >>> [r.code for r in top_reasons(c)]
    ['HIGH_AMOUNT', 'LOW_CREDIT_LIMIT']
    >>> top_reasons(np.full(36, -0.1))[0].statement != ""
    True
    """
    per_field, order = _rank_fields(np.asarray(contributions, dtype=np.float64), _FIELD_INDEX, len(_FIELD_NAMES))
    sums = per_field.tolist()
    given = [i for i in order.tolist() if _GIVEN[i]]
    chosen = [i for i in given[:limit] if sums[i] > 0]
    if not chosen and at_least_one and given:
        chosen = given[:1]
    return [_reason(_FIELD_NAMES[i], sums[i]) for i in chosen]


def _reason(field: str, contribution: float) -> ReasonCode:
    code = REASON_CODES[field]
    return ReasonCode(code, field, round(contribution, 6), statement_of(code))


@njit(cache=True, nogil=True)
def _rank_fields(
    contributions: npt.NDArray[np.float64], field_index: npt.NDArray[np.intp], n_fields: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    # Sum per field in feature order, then rank largest first (stable: ties keep field order).
    per_field = np.zeros(n_fields)
    for j in range(contributions.size):
        per_field[field_index[j]] += contributions[j]
    return per_field, np.argsort(-per_field, kind="mergesort")
