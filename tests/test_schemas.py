"""The request schema: the original body is accepted unchanged, types and ranges are enforced."""

from __future__ import annotations

import msgspec
import pytest

from datagen import ORIGINAL_EXAMPLE
from schemas import RiskAssessmentRequest, parse_request


def test_original_example_is_accepted_unchanged():
    request = parse_request(ORIGINAL_EXAMPLE)
    assert isinstance(request, RiskAssessmentRequest)
    assert msgspec.to_builtins(request) == ORIGINAL_EXAMPLE


def test_unknown_category_values_are_accepted():
    assert parse_request({**ORIGINAL_EXAMPLE, "payment_provider": "zip"}).payment_provider == "zip"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", -1.0, "Expected `float` > 0"),
        ("amount", "450", "Expected `float`, got `str`"),
        ("risk_score", 1.5, "Expected `float` <= 1"),
        ("customer_tenure_days", 1.5, "Expected `int`, got `float`"),
        ("device_is_trusted", "yes", "Expected `bool`, got `str`"),
        ("installment_count", 0, "Expected `int` >= 1"),
        ("transaction_timestamp", "27/09/2025 15:30", "Expected `str` matching regex"),
        ("transaction_timestamp", "2025-13-45T15:30:00Z", "Invalid date or time"),
        ("payment_provider", "", "length >= 1"),
    ],
)
def test_type_and_range_errors_name_the_field(field, value, message):
    with pytest.raises(msgspec.ValidationError) as info:
        parse_request({**ORIGINAL_EXAMPLE, field: value})
    assert message in str(info.value)
    assert f"$.{field}" in str(info.value)


def test_missing_field_is_an_error():
    body = dict(ORIGINAL_EXAMPLE)
    del body["risk_level"]
    with pytest.raises(msgspec.ValidationError, match="risk_level"):
        parse_request(body)
