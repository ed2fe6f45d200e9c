"""Feature engineering: the original example, unknown categories, time features, single == batch."""

from __future__ import annotations

import numpy as np
import pytest

from datagen import ORIGINAL_EXAMPLE, NewCategory, example_request, generate
from features import FEATURE_NAMES, N_FEATURES, featurize, featurize_columns
from schemas import parse_request


def _by_name(vector: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, vector.tolist(), strict=True))


def test_original_example_gives_36_known_features():
    result = featurize(example_request())
    assert N_FEATURES == 36
    assert result.vector.shape == (36,)
    assert result.unknown_fields == ()
    f = _by_name(result.vector)
    # 2025-09-27 is a Saturday, 15:30 is business hours in the afternoon.
    assert f["amount"] == 450.0
    assert f["device_is_trusted"] == 1.0
    assert f["week_of_month"] == 4.0
    assert f["is_weekend"] == 1.0
    assert f["is_month_end"] == 1.0
    assert f["is_holiday_season"] == 0.0
    assert f["is_business_hours"] == 1.0
    assert f["is_late_night"] == 0.0
    assert f["credit_score_ordinal"] == 1.0  # fair
    assert f["income_bracket_ordinal"] == 2.0  # 50k-75k
    assert f["risk_level_ordinal"] == 1.0  # medium
    assert f["payment_provider_klarna"] == 1.0
    assert f["payment_provider_afterpay"] == f["payment_provider_sezzle"] == 0.0
    assert f["device_type_mobile"] == 1.0
    assert f["time_of_day_afternoon"] == 1.0
    assert f["risk_scenario_impulse_purchase"] == 1.0


def test_unknown_provider_is_reported_and_not_the_reference_category():
    unknown = featurize(example_request(payment_provider="zip"))
    reference = featurize(example_request(payment_provider="affirm"))
    assert unknown.unknown_fields == ("payment_provider",)
    f = _by_name(unknown.vector)
    assert [f[f"payment_provider_{p}"] for p in ("afterpay", "klarna", "sezzle")] == [0.25, 0.25, 0.25]
    assert not np.array_equal(unknown.vector, reference.vector)


def test_unknown_ordinal_takes_the_midpoint_and_is_reported():
    result = featurize(example_request(customer_credit_score_range="platinum", risk_level="extreme"))
    assert result.unknown_fields == ("customer_credit_score_range", "risk_level")
    f = _by_name(result.vector)
    assert f["credit_score_ordinal"] == 1.5
    assert f["risk_level_ordinal"] == 1.5


def test_very_high_risk_level_is_known():
    # The original API wrongly rejected it.
    assert featurize(example_request(risk_level="very_high")).unknown_fields == ()


def test_case_and_whitespace_do_not_make_a_category_unknown():
    result = featurize(example_request(payment_provider=" Klarna ", device_type="MOBILE"))
    assert result.unknown_fields == ()
    np.testing.assert_array_equal(result.vector, featurize(example_request()).vector)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        # week_of_month, is_weekend, is_month_end, is_holiday_season, is_business_hours, is_late_night, tod
        ("2025-11-03T08:59:59Z", (1, 0, 0, 1, 0, 0, "morning")),
        ("2025-12-31T23:00:00+05:00", (5, 0, 1, 1, 0, 1, "evening")),
        ("2025-06-29T05:00:00", (5, 1, 1, 0, 0, 1, "night")),
        ("2025-06-15T09:00:00.250-07:00", (3, 1, 0, 0, 1, 0, "morning")),
        ("2025-06-16 17:59:00", (3, 0, 0, 0, 1, 0, "afternoon")),
        ("2025-06-16T22:00", (3, 0, 0, 0, 0, 1, "evening")),
        ("2025-06-16", (3, 0, 0, 0, 0, 1, "night")),
    ],
)
def test_time_features_use_the_wall_clock_as_written(timestamp, expected):
    result = featurize(example_request(transaction_timestamp=timestamp))
    f = _by_name(result.vector)
    names = [
        "week_of_month",
        "is_weekend",
        "is_month_end",
        "is_holiday_season",
        "is_business_hours",
        "is_late_night",
    ]
    assert tuple(int(f[n]) for n in names) == expected[:6]
    buckets = {"night": (0, 0, 0), "morning": (1, 0, 0), "afternoon": (0, 1, 0), "evening": (0, 0, 1)}
    tod = tuple(int(f[f"time_of_day_{b}"]) for b in ("morning", "afternoon", "evening"))
    assert tod == buckets[expected[6]]
    batch = featurize_columns({k: [v] for k, v in {**ORIGINAL_EXAMPLE, "transaction_timestamp": timestamp}.items()})
    np.testing.assert_array_equal(batch.matrix[0], result.vector)


def test_single_and_batch_give_identical_vectors_on_generated_requests():
    data = generate(12_000, seed=21, drifts=[NewCategory(start_index=6_000, share=0.2)])
    columns = {k: v.copy() for k, v in data.columns.items()}
    # Mix in unusual spellings, other unknowns and timestamp forms the single path must agree on.
    columns["device_type"][::97] = "Tablet "
    columns["risk_level"][::101] = "extreme"
    columns["purchase_context"][::103] = "bulk"
    stamps = columns["transaction_timestamp"]
    stamps[::89] = [s[:-1] + "+02:00" for s in stamps[::89]]
    stamps[::91] = [s[:16] for s in stamps[::91]]
    batch = featurize_columns(columns)
    rows = {k: v.tolist() for k, v in columns.items()}
    unknown_rows = 0
    for i in range(len(data)):
        single = featurize(parse_request({k: rows[k][i] for k in rows}))
        np.testing.assert_array_equal(single.vector, batch.matrix[i], err_msg=f"row {i}")
        assert single.unknown_fields == batch.unknown_fields(i)
        unknown_rows += bool(single.unknown_fields)
    assert len(data) >= 10_000
    assert unknown_rows > 600  # the comparison really covered unknown encodings


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-11-30",
        "2024-11-30T23:59",
        "2024-11-30 05:00:00.123456+05:30",
        "2024-02-29T12:00:00Z",
        "2025-12-25T22:10:00-08:00",
        "2026-03-01T00:00:00.5",
    ],
)
def test_time_features_read_by_position_equal_a_full_parse(timestamp):
    from datetime import datetime

    from features.single import time_features
    from features.spec import TIME_FEATURES, TIMES_OF_DAY

    f = _by_name(featurize(example_request(transaction_timestamp=timestamp)).vector)
    values, bucket = time_features(timestamp)
    assert [f[name] for name in TIME_FEATURES] == values
    assert [f[f"time_of_day_{c}"] for c in TIMES_OF_DAY[1:]] == [1.0 if c == bucket else 0.0 for c in TIMES_OF_DAY[1:]]
    assert f["is_weekend"] == (1.0 if datetime.fromisoformat(timestamp).weekday() >= 5 else 0.0)
