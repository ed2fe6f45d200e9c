"""Risk-based decision thresholds on the calibrated default probability, from a stated objective.

approve if p < review; manual_review if review ≤ p < deny; deny otherwise. Both cut-offs come from an
:class:`Objective`, on the calibrated probabilities of the validation period:

**Cost matrix** (amounts as shares of the loan amount, so the cut-offs do not depend on the basket size): a repaid
loan earns ``margin``; a defaulted one loses ``loss_given_default``; a manual review costs ``review_cost`` and stops
``review_catch`` of the defaulters it sees (good applicants pass). Expected profit per unit of amount:

* approve: ``m·(1−p) − L·p``;   review: ``m·(1−p) − L·(1−s)·p − c``;   deny: ``0``.

Reviewing beats approving once ``p > c / (L·s)``; denying beats reviewing once ``p > (m − c) / (m + L·(1−s))``.
When the first is not below the second there is no review band: one cut-off at the break-even ``m / (m + L)``.

**Objectives:**

* ``default_rate`` (default): the largest approval cut-off whose expected default rate among the approved is at
  most ``target_default_rate``; deny where even a reviewed loan is expected to lose money (the cost matrix's
  review/deny cut-off), so the band between is where a review pays.
* ``profit``: both cut-offs from the cost matrix (maximum expected profit per application).

The expected outcome mix of the chosen cut-offs on the validation period (shares, expected default rate per
decision, expected profit) is stored with every version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

OBJECTIVES = ("default_rate", "profit")


@dataclass(frozen=True, slots=True)
class Objective:
    """What the cut-offs optimise (see the module docstring; the defaults are the training settings', see
    ``training.train.objective_of``)."""

    kind: str
    target_default_rate: float
    margin: float
    loss_given_default: float
    review_cost: float
    review_catch: float

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.kind!r}")
        if not 0 < self.target_default_rate < 1 or self.margin <= 0 or self.loss_given_default <= 0:
            raise ValueError("target default rate must be in (0, 1); margin and loss given default positive")
        if self.review_cost < 0 or not 0 <= self.review_catch <= 1:
            raise ValueError("review cost must be ≥ 0 and review catch in [0, 1]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        costs = (
            f"margin {self.margin:.1%}, loss given default {self.loss_given_default:.0%}, review cost "
            f"{self.review_cost:.1%} stopping {self.review_catch:.0%} of defaulters"
        )
        if self.kind == "profit":
            return f"maximum expected profit ({costs})"
        return f"default rate among approved ≤ {self.target_default_rate:.1%}; review band from costs ({costs})"

    def profit(self, p: npt.NDArray[np.float64], decision: npt.NDArray[np.int8]) -> npt.NDArray[np.float64]:
        """Expected profit per unit of amount of each decision (0 approve, 1 review, 2 deny) at probability ``p``."""
        m, loss, c, s = self.margin, self.loss_given_default, self.review_cost, self.review_catch
        approve = m * (1 - p) - loss * p
        review = approve + loss * s * p - c
        return np.where(decision == 0, approve, np.where(decision == 1, review, 0.0))

    def cost_cutoffs(self) -> tuple[float, float]:
        """(review, deny) cut-offs of the cost matrix alone."""
        m, loss, c, s = self.margin, self.loss_given_default, self.review_cost, self.review_catch
        review = c / (loss * s) if loss * s > 0 else np.inf
        deny = (m - c) / (m + loss * (1 - s))
        if review >= deny:
            review = deny = m / (m + loss)
        return float(review), float(deny)


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


def target_cutoff(p: npt.NDArray[np.float64], target: float) -> float:
    """Largest cut-off ``t`` such that the mean of ``p`` over ``p < t`` is at most ``target`` (approving below
    0.10 approves 0.01, 0.02 and 0.03, whose mean is the target):

    >>> float(target_cutoff(np.array([0.01, 0.02, 0.03, 0.10, 0.50]), 0.02))
    0.1
    """
    ordered = np.sort(np.asarray(p, dtype=np.float64))
    running = np.cumsum(ordered) / np.arange(1, ordered.size + 1)
    fits = np.flatnonzero(running <= target)
    if fits.size == 0:
        return float(ordered[0]) if ordered.size else 0.0
    last = int(fits[-1])
    return float(ordered[last + 1]) if last + 1 < ordered.size else float(np.nextafter(ordered[-1], np.inf))


def choose_thresholds(p: npt.NDArray[np.float64], objective: Objective) -> Thresholds:
    """The cut-offs ``objective`` asks for on calibrated probabilities ``p``."""
    review, deny = objective.cost_cutoffs()
    if objective.kind == "default_rate":
        review = target_cutoff(p, objective.target_default_rate)
        deny = max(deny, review)
    # Six decimals, rounded down: a rounded cut-off never lets in an application the objective keeps out.
    return Thresholds(review=math.floor(review * 1e6) / 1e6, deny=math.floor(deny * 1e6) / 1e6)


def decide(p: npt.NDArray[np.float64], thresholds: Thresholds) -> npt.NDArray[np.int8]:
    """0 approve, 1 review, 2 deny for each probability."""
    return np.asarray((p >= thresholds.review).astype(np.int8) + (p >= thresholds.deny), dtype=np.int8)


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


def expected_mix(p: npt.NDArray[np.float64], thresholds: Thresholds, objective: Objective) -> dict[str, float]:
    """What the cut-offs are expected to do on applications like ``p`` (calibrated): the share of each decision,
    the expected default rate within each, and the expected profit per unit of amount applied for."""
    decision = decide(p, thresholds)
    mix: dict[str, float] = {}
    for code, name in enumerate(("approve", "review", "deny")):
        rows = decision == code
        mix[f"{name}_rate"] = float(rows.mean())
        mix[f"{name}_default_rate"] = float(p[rows].mean()) if rows.any() else float("nan")
    mix["profit_per_unit"] = float(objective.profit(p, decision).mean())
    return mix
