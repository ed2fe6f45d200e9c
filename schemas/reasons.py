"""The reason-code catalogue: every code an adverse decision can carry, and the request field it is about.

Part of the public contract (responses, events, the warehouse): a code never changes meaning. Model reasons name
the request field whose values pushed the deciding model's score up the most; policy reasons name the rule.
"""

from __future__ import annotations

from typing import Final

#: Model reasons: request field → code.
FIELD_REASON_CODES: Final[dict[str, str]] = {
    "amount": "HIGH_AMOUNT",
    "customer_tenure_days": "SHORT_CUSTOMER_TENURE",
    "device_is_trusted": "UNTRUSTED_DEVICE",
    "risk_score": "HIGH_UPSTREAM_RISK_SCORE",
    "installment_count": "INSTALLMENT_PLAN",
    "payment_credit_limit": "LOW_CREDIT_LIMIT",
    "price_comparison_time": "SHORT_PRICE_COMPARISON",
    "transaction_timestamp": "TRANSACTION_TIME",
    "customer_credit_score_range": "CREDIT_SCORE_RANGE",
    "customer_age_bracket": "AGE_BRACKET",
    "customer_income_bracket": "INCOME_BRACKET",
    "customer_verification_level": "VERIFICATION_LEVEL",
    "product_risk_category": "PRODUCT_RISK_CATEGORY",
    "risk_level": "HIGH_UPSTREAM_RISK_LEVEL",
    "device_type": "DEVICE_TYPE",
    "payment_provider": "PAYMENT_PROVIDER",
    "product_category": "PRODUCT_CATEGORY",
    "purchase_context": "PURCHASE_CONTEXT",
    "risk_scenario": "RISK_SCENARIO",
}
#: Policy reasons: code → the request field the rule reads.
POLICY_REASON_CODES: Final[dict[str, str]] = {
    "AMOUNT_EXCEEDS_CREDIT_LIMIT": "amount",
    "HIGH_LIMIT_UTILISATION": "payment_credit_limit",
    "HIGH_UPSTREAM_RISK_SCORE": "risk_score",
}


def field_of_code(code: str) -> str:
    """The request field a code is about (``""`` for a code this catalogue does not know).

    >>> field_of_code("HIGH_LIMIT_UTILISATION"), field_of_code("INCOME_BRACKET")
    ('payment_credit_limit', 'customer_income_bracket')
    """
    if code in POLICY_REASON_CODES:
        return POLICY_REASON_CODES[code]
    return next((f for f, c in FIELD_REASON_CODES.items() if c == code), "")
