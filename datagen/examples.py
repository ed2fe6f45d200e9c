"""The example request used by the original service's tests, kept verbatim (a compatibility fixture)."""

from __future__ import annotations

from typing import Any, Final

from schemas.request import RiskAssessmentRequest, parse_request

ORIGINAL_EXAMPLE: Final[dict[str, Any]] = {
    "transaction_id": "txn_api_test_001",
    "customer_id": "cust_api_test_001",
    "amount": 450.0,
    "transaction_timestamp": "2025-09-27T15:30:00Z",
    "customer_credit_score_range": "fair",
    "customer_age_bracket": "25-34",
    "customer_income_bracket": "50k-75k",
    "customer_verification_level": "verified",
    "customer_tenure_days": 180,
    "device_type": "mobile",
    "device_is_trusted": True,
    "product_category": "electronics",
    "product_risk_category": "medium",
    "risk_score": 0.65,
    "risk_level": "medium",
    "risk_scenario": "impulse_purchase",
    "payment_provider": "klarna",
    "installment_count": 4,
    "payment_credit_limit": 1500.0,
    "price_comparison_time": 60.0,
    "purchase_context": "normal",
}


def example_request(**changes: Any) -> RiskAssessmentRequest:
    """The original example as a validated request, with ``changes`` applied (e.g. ``payment_provider="zip"``)."""
    return parse_request({**ORIGINAL_EXAMPLE, **changes})
