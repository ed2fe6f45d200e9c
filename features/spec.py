"""The feature specification: category lists, encodings and the order of the 36 features.

Encodings (compatible with the original service's 36 features):

* numeric passthrough: amount, customer_tenure_days, device_is_trusted (0/1), risk_score, installment_count,
  payment_credit_limit, price_comparison_time — scaling belongs to each model's pipeline, not here;
* time, from the wall-clock time as written in ``transaction_timestamp`` (the shopper's local time):
  week_of_month (1–5), is_weekend, is_month_end (day ≥ 25), is_holiday_season (Nov/Dec), is_business_hours (9–17),
  is_late_night (22–5) and time_of_day (night 0–6, morning 7–12, afternoon 13–18, evening 19–23), all computed by
  :func:`date_features`, :func:`hour_features` and :func:`time_of_day_index` at the end of this module;
* ordinal: the index of the value in its list below;
* one-hot with the first category dropped.

Unknown categories (a value not in the list, after trimming and lower-casing) are **not** silently mapped to the
dropped reference category as the original did. They get an explicit, documented encoding:

* one-hot group: every category of the group counts 1/K (an equal mixture of the K known categories), so the
  vector is distinguishable from every known value and the model's output is the average over known values for
  linear models;
* ordinal: the midpoint of the scale, (K-1)/2.

Every unknown field is reported by name, so the API can count it and the drift group can watch its rate.
"""

from __future__ import annotations

from typing import Any, Final

#: Version of this specification; stored with every trained model and every event.
FEATURE_SPEC_VERSION: Final = 1

CREDIT_SCORE_RANGES: Final = ("poor", "fair", "good", "excellent")
AGE_BRACKETS: Final = ("18-24", "25-34", "35-44", "45-54", "55+")
INCOME_BRACKETS: Final = ("<25k", "25k-50k", "50k-75k", "75k-100k", "100k+")
VERIFICATION_LEVELS: Final = ("unverified", "partial", "verified")
PRODUCT_RISK_CATEGORIES: Final = ("low", "medium", "high")
RISK_LEVELS: Final = ("low", "medium", "high", "very_high")
DEVICE_TYPES: Final = ("desktop", "mobile", "tablet")
PAYMENT_PROVIDERS: Final = ("affirm", "afterpay", "klarna", "sezzle")
PRODUCT_CATEGORIES: Final = ("beauty", "clothing", "electronics", "home", "sports")
PURCHASE_CONTEXTS: Final = ("normal", "impulse", "rushed")
RISK_SCENARIOS: Final = ("low_risk_purchase", "impulse_purchase", "credit_stretched", "high_risk_behavior")
TIMES_OF_DAY: Final = ("night", "morning", "afternoon", "evening")

#: Request fields passed through as numbers, in feature order.
NUMERIC_FIELDS: Final = (
    "amount",
    "customer_tenure_days",
    "device_is_trusted",
    "risk_score",
    "installment_count",
    "payment_credit_limit",
    "price_comparison_time",
)

TIME_FEATURES: Final = (
    "week_of_month",
    "is_weekend",
    "is_month_end",
    "is_holiday_season",
    "is_business_hours",
    "is_late_night",
)

#: Ordinal request fields: (request field, feature name, ordered categories).
ORDINAL_FIELDS: Final = (
    ("customer_credit_score_range", "credit_score_ordinal", CREDIT_SCORE_RANGES),
    ("customer_age_bracket", "age_bracket_ordinal", AGE_BRACKETS),
    ("customer_income_bracket", "income_bracket_ordinal", INCOME_BRACKETS),
    ("customer_verification_level", "verification_level_ordinal", VERIFICATION_LEVELS),
    ("product_risk_category", "product_risk_ordinal", PRODUCT_RISK_CATEGORIES),
    ("risk_level", "risk_level_ordinal", RISK_LEVELS),
)

#: One-hot request fields: (request field, categories); the first category is the dropped reference.
ONE_HOT_FIELDS: Final = (
    ("device_type", DEVICE_TYPES),
    ("payment_provider", PAYMENT_PROVIDERS),
    ("product_category", PRODUCT_CATEGORIES),
    ("purchase_context", PURCHASE_CONTEXTS),
    ("risk_scenario", RISK_SCENARIOS),
)

#: Every categorical request field with its known values (used by validation, drift profiles, the generator).
CATEGORICAL_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    **{name: cats for name, _, cats in ORDINAL_FIELDS},
    **dict(ONE_HOT_FIELDS),
}


def _one_hot_names(field: str, categories: tuple[str, ...]) -> list[str]:
    return [f"{field}_{c}" for c in categories[1:]]


FEATURE_NAMES: Final[tuple[str, ...]] = (
    *NUMERIC_FIELDS,
    *TIME_FEATURES,
    *(feature for _, feature, _ in ORDINAL_FIELDS),
    *(name for field, cats in ONE_HOT_FIELDS for name in _one_hot_names(field, cats)),
    *_one_hot_names("time_of_day", TIMES_OF_DAY),
)
N_FEATURES: Final = len(FEATURE_NAMES)
assert N_FEATURES == 36, N_FEATURES


def normalize_category(value: str) -> str:
    """Canonical spelling of a categorical value: trimmed and lower-cased (``" Klarna"`` is ``klarna``)."""
    return value.strip().lower()


# --- the calendar rules, written once ----------------------------------------------------------------------------
# Plain comparisons and arithmetic only, so the same function serves one request (ints) and a whole column (numpy
# arrays): ``features.single`` and ``features.batch`` both call these.


def date_features(day: Any, weekday: Any, month: Any) -> tuple[Any, Any, Any, Any]:
    """week_of_month (1–5), is_weekend (Sat/Sun; Monday = 0), is_month_end (day ≥ 25), is_holiday_season (Nov/Dec).

    >>> date_features(27, 5, 11)
    (4, True, True, True)
    """
    return (day - 1) // 7 + 1, weekday >= 5, day >= 25, month >= 11


def hour_features(hour: Any) -> tuple[Any, Any]:
    """is_business_hours (9–17), is_late_night (22–5).

    >>> hour_features(23)
    (False, True)
    """
    return (hour >= 9) & (hour <= 17), (hour >= 22) | (hour <= 5)


def time_of_day_index(hour: Any) -> Any:
    """Index into ``TIMES_OF_DAY``: night (0–6), morning (7–12), afternoon (13–18), evening (19–23).

    >>> [TIMES_OF_DAY[time_of_day_index(h)] for h in (6, 7, 13, 19)]
    ['night', 'morning', 'afternoon', 'evening']
    """
    return (hour > 6) * 1 + (hour > 12) + (hour > 18)


def feature_columns(field: str) -> list[int]:
    """Indices in :data:`FEATURE_NAMES` of the features derived from request ``field`` (an ordinal's one column,
    a one-hot group's columns; none for fields that are not features).

    >>> feature_columns("customer_age_bracket"), feature_columns("device_type")
    ([14], [19, 20])
    """
    for request_field, feature, _ in ORDINAL_FIELDS:
        if request_field == field:
            return [FEATURE_NAMES.index(feature)]
    for request_field, categories in ONE_HOT_FIELDS:
        if request_field == field:
            return [FEATURE_NAMES.index(name) for name in _one_hot_names(request_field, categories)]
    if field in FEATURE_NAMES:
        return [FEATURE_NAMES.index(field)]
    return []


#: Watched time fields derived from ``transaction_timestamp`` (time of day and the kind of day; the month and the
#: holiday season change by design and are not watched).
TIME_FIELDS: Final[dict[str, tuple[str, ...]]] = {"time_of_day": TIMES_OF_DAY, "day_type": ("weekday", "weekend")}


def time_categories(timestamp: str) -> dict[str, str]:
    """The watched time fields of a request timestamp as written (wall-clock time; ``{}`` when unreadable).

    >>> time_categories("2025-11-29T23:10:00Z")
    {'time_of_day': 'evening', 'day_type': 'weekend', 'date': '2025-11-29'}
    """
    import datetime as _dt

    try:
        day = _dt.date(int(timestamp[0:4]), int(timestamp[5:7]), int(timestamp[8:10]))
        hour = int(timestamp[11:13]) if len(timestamp) >= 13 else 0
    except ValueError:
        return {}
    return {
        "time_of_day": TIMES_OF_DAY[time_of_day_index(hour)],
        "day_type": "weekend" if day.weekday() >= 5 else "weekday",
        "date": timestamp[0:10],
    }


def metric_key(value: str) -> str:
    """A category value as part of a metric name (MLflow keys take no ``+``).

    >>> metric_key("55+"), metric_key("18-24")
    ('55_plus', '18_to_24')
    """
    return value.replace("+", "_plus").replace("-", "_to_")
