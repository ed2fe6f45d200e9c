"""The risk-assessment request, exactly as the original service's clients send it (same field names and types, so
existing checkouts need no change).

Categorical fields are plain strings on purpose: a value the models never saw is data, not an error
(it is scored with an explicit unknown encoding and reported). Types and numeric ranges are validated here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

#: Opaque identifiers chosen by the client (no PII beyond these ids travels further).
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
#: A categorical value; unknown values are accepted and reported.
Category = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
PositiveMoney = Annotated[float, msgspec.Meta(gt=0, le=1_000_000)]
#: ISO-8601 extended format: a date, optionally a time (to the minute or finer), optionally Z or an offset.
ISO_8601_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"


class RiskAssessmentRequest(msgspec.Struct, kw_only=True):
    """POST /v1/bnpl/risk-assessment body. Field names and meaning match the original service."""

    transaction_id: Identifier
    customer_id: Identifier
    amount: PositiveMoney
    #: ISO-8601; may end in "Z" or carry an offset. Time features use the wall-clock time as written.
    transaction_timestamp: Annotated[str, msgspec.Meta(pattern=ISO_8601_PATTERN, max_length=40)]
    customer_credit_score_range: Category
    customer_age_bracket: Category
    customer_income_bracket: Category
    customer_verification_level: Category
    customer_tenure_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)]
    device_type: Category
    device_is_trusted: bool
    product_category: Category
    product_risk_category: Category
    risk_score: Annotated[float, msgspec.Meta(ge=0, le=1)]
    risk_level: Category
    risk_scenario: Category
    payment_provider: Category
    installment_count: Annotated[int, msgspec.Meta(gt=0, le=60)]
    payment_credit_limit: PositiveMoney
    price_comparison_time: Annotated[float, msgspec.Meta(ge=0, le=86_400 * 30)]
    purchase_context: Category

    def __post_init__(self) -> None:
        try:
            datetime.fromisoformat(self.transaction_timestamp)
        except ValueError:
            # Well-formed but impossible (e.g. month 13); msgspec turns this into a ValidationError.
            raise ValueError("Invalid date or time - at `$.transaction_timestamp`") from None


def parse_request(data: Any) -> RiskAssessmentRequest:
    """Validate a decoded JSON object (e.g. a dict) into a request; raises ``msgspec.ValidationError``."""
    return msgspec.convert(data, RiskAssessmentRequest)


def batch_request_type(limit: int) -> type[msgspec.Struct]:
    """The body of ``POST /v1/bnpl/risk-assessment/batch`` with its cap (``BNPL_BATCH_MAX``): 1 … ``limit`` requests,
    decided in order. Built per app, so the decoder rejects an oversized list early and the OpenAPI document
    shows the configured cap.

    >>> batch = batch_request_type(2)
    >>> msgspec.json.schema(batch)["$defs"]["BatchRequest"]["properties"]["requests"]["maxItems"]
    2
    """
    return msgspec.defstruct(
        "BatchRequest",
        [("requests", Annotated[list[RiskAssessmentRequest], msgspec.Meta(min_length=1, max_length=limit)])],
        kw_only=True,
    )
