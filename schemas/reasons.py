"""The reason-code catalogue: every code an adverse decision can carry, the request field it is about, and what it
tells the applicant.

Part of the public contract (responses, events, the warehouse): a code never changes meaning. Model reasons name
the request field whose values pushed the deciding model's score up the most; policy reasons name the rule.

Adverse-action reasons must be the specific principal reasons, in words an applicant can recognise or act on (CFPB
Circular 2023-03). So every code an adverse decision may carry has a **statement** (what the applicant reads) and an
**explanation** (what an analyst reads) in :data:`REASON_STATEMENTS`. Fields that must never be a reason — a
protected characteristic (age) and the time of day or the calendar — have no statement and are never given:
``AGE_BRACKET`` and ``TRANSACTION_TIME`` stay in the catalogue only so older events still decode.
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


#: Request fields that are never a reason for an adverse decision.
NEVER_REASON_FIELDS: Final = frozenset({"customer_age_bracket", "transaction_timestamp"})

#: Code → (statement for the applicant, explanation for analysts). Every code a decision can carry is here.
REASON_STATEMENTS: Final[dict[str, tuple[str, str]]] = {
    "HIGH_AMOUNT": (
        "The purchase amount is high for a pay-later plan.",
        "amount pushed the default probability up",
    ),
    "LOW_CREDIT_LIMIT": (
        "The purchase uses a large share of your available credit limit.",
        "payment_credit_limit relative to amount pushed the score up",
    ),
    "INCOME_BRACKET": (
        "The purchase amount is high relative to your stated income.",
        "customer_income_bracket (affordability) pushed the score up",
    ),
    "INSTALLMENT_PLAN": (
        "The number of instalments requested for this purchase.",
        "installment_count pushed the score up",
    ),
    "VERIFICATION_LEVEL": (
        "Your identity or account details are not fully verified.",
        "customer_verification_level pushed the score up",
    ),
    "SHORT_CUSTOMER_TENURE": (
        "Your account with us is new.",
        "customer_tenure_days pushed the score up",
    ),
    "UNTRUSTED_DEVICE": (
        "The purchase was made from a device we do not recognise.",
        "device_is_trusted = false pushed the score up",
    ),
    "SHORT_PRICE_COMPARISON": (
        "The purchase was completed very soon after viewing the item.",
        "price_comparison_time pushed the score up",
    ),
    "CREDIT_SCORE_RANGE": (
        "Your credit score range.",
        "customer_credit_score_range pushed the score up",
    ),
    "HIGH_UPSTREAM_RISK_SCORE": (
        "The result of our identity and fraud checks.",
        "the upstream risk_score pushed the score up, or reached the policy's limit",
    ),
    "HIGH_UPSTREAM_RISK_LEVEL": (
        "The result of our identity and fraud checks.",
        "the upstream risk_level pushed the score up",
    ),
    "PRODUCT_RISK_CATEGORY": (
        "The type of item purchased has a higher rate of non-payment.",
        "product_risk_category pushed the score up",
    ),
    "PRODUCT_CATEGORY": (
        "The category of the item purchased.",
        "product_category pushed the score up",
    ),
    "DEVICE_TYPE": (
        "The type of device used for the purchase.",
        "device_type pushed the score up",
    ),
    "PAYMENT_PROVIDER": (
        "The payment provider chosen for this purchase.",
        "payment_provider pushed the score up",
    ),
    "PURCHASE_CONTEXT": (
        "How the purchase was made (for example, completed in a hurry).",
        "purchase_context pushed the score up",
    ),
    "RISK_SCENARIO": (
        "The purchase pattern flagged by our risk checks.",
        "the upstream risk_scenario pushed the score up",
    ),
    "AMOUNT_EXCEEDS_CREDIT_LIMIT": (
        "The purchase amount is above your available credit limit.",
        "policy: amount > payment_credit_limit",
    ),
    "HIGH_LIMIT_UTILISATION": (
        "The purchase would use more than 80% of your available credit limit.",
        "policy: amount > 0.8 × payment_credit_limit",
    ),
}


def statement_of(code: str) -> str:
    """The applicant-facing statement of ``code`` (``""`` for a code that is never given).

    >>> statement_of("UNTRUSTED_DEVICE")
    'The purchase was made from a device we do not recognise.'
    """
    found = REASON_STATEMENTS.get(code)
    return found[0] if found else ""


def field_of_code(code: str) -> str:
    """The request field a code is about (``""`` for a code this catalogue does not know).

    >>> field_of_code("HIGH_LIMIT_UTILISATION"), field_of_code("INCOME_BRACKET")
    ('payment_credit_limit', 'customer_income_bracket')
    """
    if code in POLICY_REASON_CODES:
        return POLICY_REASON_CODES[code]
    return next((f for f, c in FIELD_REASON_CODES.items() if c == code), "")
