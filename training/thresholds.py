"""Decision thresholds on the default-probability scale, chosen so the decision mix is sensible.

approve if p < review_threshold; manual_review if review_threshold ≤ p < deny_threshold; deny otherwise.
Thresholds are quantiles of the model's scores on training data, so they always fit the score scale
(the original service's fixed thresholds approved everything).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

#: Target shares of the decision mix on training traffic.
TARGET_APPROVE = 0.80
TARGET_DENY = 0.08


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Per-model-version cut-offs on the default probability."""

    review: float
    deny: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DecisionRates:
    """Shares of approve / manual_review / deny and the default rate among approved applications."""

    approve: float
    review: float
    deny: float
    approved_default_rate: float


def choose_thresholds(
    scores: npt.NDArray[np.float64], approve: float = TARGET_APPROVE, deny: float = TARGET_DENY
) -> Thresholds:
    """Quantile thresholds giving ≈ ``approve`` approvals and ≈ ``deny`` denials on ``scores``.

    >>> choose_thresholds(np.linspace(0, 1, 101))
    Thresholds(review=0.8, deny=0.92)
    """
    review_t, deny_t = np.quantile(scores, [approve, 1.0 - deny])
    return Thresholds(review=round(float(review_t), 6), deny=round(float(max(deny_t, review_t)), 6))


def decision_rates(
    scores: npt.NDArray[np.float64], labels: npt.NDArray[np.bool_], thresholds: Thresholds
) -> DecisionRates:
    """Decision mix of ``scores`` under ``thresholds`` and the observed default rate among approvals."""
    approved = scores < thresholds.review
    denied = scores >= thresholds.deny
    return DecisionRates(
        approve=float(approved.mean()),
        review=float((~approved & ~denied).mean()),
        deny=float(denied.mean()),
        approved_default_rate=float(labels[approved].mean()) if approved.any() else 0.0,
    )
