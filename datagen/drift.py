"""Drift knobs for the generator. Each starts at an event index or a timestamp (whichever is given).

* :class:`CovariateShift` — from the start, a share of transactions come from a newly acquired, riskier customer
  population (lower income and credit mix, higher latent risk): the features and the score distribution move.
* :class:`NewCategory` — from the start, a share of transactions carry a value the models never saw
  (default: ``payment_provider = "zip"``).
* :class:`ConceptShift` — from the start, the default probability of a segment is multiplied by ``factor``:
  the features stay the same, the relation to the label changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Drift:
    """Common part: where the drift starts. Give ``start_index`` or ``start_time`` (naive UTC or aware)."""

    start_index: int | None = None
    start_time: datetime | None = None

    def __post_init__(self) -> None:
        if (self.start_index is None) == (self.start_time is None):
            raise ValueError("give exactly one of start_index or start_time")


@dataclass(frozen=True, slots=True)
class CovariateShift(Drift):
    """A share of transactions from a shifted population (income/credit mix down, latent risk up)."""

    share: float = 0.5
    income_shift: float = -1.0
    credit_shift: float = -0.8
    latent_shift: float = 0.5


@dataclass(frozen=True, slots=True)
class NewCategory(Drift):
    """A share of transactions use a never-seen categorical value."""

    field: str = "payment_provider"
    value: str = "zip"
    share: float = 0.1


@dataclass(frozen=True, slots=True)
class ConceptShift(Drift):
    """Default probability × ``factor`` for transactions matching ``segment`` (all fields equal)."""

    factor: float = 2.0
    segment: dict[str, str] = field(default_factory=lambda: {"product_category": "electronics"})
    #: When the shift ends (a transient shock); None: it lasts.
    end_time: datetime | None = None
