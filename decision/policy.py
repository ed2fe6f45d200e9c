"""Decision policies: score → approve / manual_review / deny.

``threshold-v1`` (a model decided), in order:

1. amount above the customer's BNPL credit limit → **deny** (``AMOUNT_EXCEEDS_CREDIT_LIMIT``);
2. default probability ≥ the version's ``deny`` threshold → **deny**;
   ≥ its ``review`` threshold → **manual_review**; otherwise **approve**;
3. an approval that would use more than 80 % of the credit limit → **manual_review** (``HIGH_LIMIT_UTILISATION``).

``rules-fallback-v1`` (no model could be loaded; documented so operations know what happens):

1. amount above the credit limit → **deny**;
2. upstream ``risk_level`` very_high or ``risk_score`` ≥ 0.8 → **deny**;
3. ``risk_level`` high, ``risk_score`` ≥ 0.55, or more than 80 % of the limit used → **manual_review**;
4. otherwise **approve**.

``risk_level`` in responses is LOW / MEDIUM / HIGH for approve / manual_review / deny.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from features.spec import normalize_category
from schemas.reasons import POLICY_REASON_CODES, statement_of
from schemas.request import RiskAssessmentRequest
from schemas.response import Decision, ReasonCode, RiskLevel

THRESHOLD_POLICY: Final = "threshold-v1"
FALLBACK_POLICY: Final = "rules-fallback-v1"
UTILISATION_REVIEW: Final = 0.8
RISK_LEVEL_OF: Final[dict[Decision, RiskLevel]] = {"approve": "LOW", "manual_review": "MEDIUM", "deny": "HIGH"}


def _rule(code: str) -> ReasonCode:
    return ReasonCode(code, POLICY_REASON_CODES[code], None, statement_of(code))


_OVER_LIMIT = _rule("AMOUNT_EXCEEDS_CREDIT_LIMIT")
_HIGH_UTILISATION = _rule("HIGH_LIMIT_UTILISATION")
_HIGH_UPSTREAM_RISK = _rule("HIGH_UPSTREAM_RISK_SCORE")


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """The decision and the policy rules that shaped it."""

    decision: Decision
    rules: tuple[ReasonCode, ...] = ()


def threshold_policy(probability: float, review: float, deny: float, request: RiskAssessmentRequest) -> PolicyOutcome:
    """``threshold-v1``: see the module docstring."""
    if request.amount > request.payment_credit_limit:
        return PolicyOutcome("deny", (_OVER_LIMIT,))
    if probability >= deny:
        return PolicyOutcome("deny")
    if probability >= review:
        return PolicyOutcome("manual_review")
    if request.amount > UTILISATION_REVIEW * request.payment_credit_limit:
        return PolicyOutcome("manual_review", (_HIGH_UTILISATION,))
    return PolicyOutcome("approve")


def fallback_policy(request: RiskAssessmentRequest) -> PolicyOutcome:
    """``rules-fallback-v1``: see the module docstring."""
    level = normalize_category(request.risk_level)
    if request.amount > request.payment_credit_limit:
        return PolicyOutcome("deny", (_OVER_LIMIT,))
    if level == "very_high" or request.risk_score >= 0.8:
        return PolicyOutcome("deny", (_HIGH_UPSTREAM_RISK,))
    if level == "high" or request.risk_score >= 0.55:
        return PolicyOutcome("manual_review", (_HIGH_UPSTREAM_RISK,))
    if request.amount > UTILISATION_REVIEW * request.payment_credit_limit:
        return PolicyOutcome("manual_review", (_HIGH_UTILISATION,))
    return PolicyOutcome("approve")
