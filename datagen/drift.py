"""Drift knobs for the generator. Each starts at an event index or a timestamp (whichever is given).

* :class:`CovariateShift` — from the start, a share of transactions come from a newly acquired, riskier customer
  population (lower income and credit mix, higher latent risk): the features and the score distribution move.
* :class:`NewCategory` — from the start, a share of transactions carry a value the models never saw
  (default: ``payment_provider = "zip"``).
* :class:`ConceptShift` — from the start, the default probability of a segment is multiplied by ``factor``:
  the features stay the same, the relation to the label changes.

:func:`make_drift` builds one by its CLI name (:data:`DRIFT_KINDS`), with the magnitude knobs the kind has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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


#: Drift kinds by the name the CLI uses (``bnpl generate --drift KIND``).
DRIFT_KINDS: dict[str, type[Drift]] = {
    "covariate": CovariateShift,
    "new-category": NewCategory,
    "concept": ConceptShift,
}
#: Kinds that change what a request carries (a concept shift changes only the outcomes).
REQUEST_DRIFT_KINDS = ("covariate", "new-category")


def make_drift(
    kind: str,
    start_index: int,
    *,
    share: float | None = None,
    factor: float | None = None,
    strength: float | None = None,
) -> Drift:
    """A drift of ``kind`` from row ``start_index``; knobs left None keep the kind's defaults.

    ``share``: the share of rows affected (covariate, new-category); ``factor``: the default-probability multiplier
    (concept); ``strength``: scales the covariate shift's income, credit and latent-risk shifts (1: as declared).
    A knob the kind does not have raises ``ValueError``.

    >>> make_drift("covariate", 100, strength=2.0)
    CovariateShift(start_index=100, start_time=None, share=0.5, income_shift=-2.0, credit_shift=-1.6, latent_shift=1.0)
    >>> make_drift("concept", 5, factor=3.0).factor
    3.0
    >>> make_drift("new-category", 0, factor=2.0)
    Traceback (most recent call last):
    ...
    ValueError: the new-category drift has no factor (concept only)
    """
    if kind not in DRIFT_KINDS:
        raise ValueError(f"unknown drift kind {kind!r}: one of {', '.join(DRIFT_KINDS)}")
    has = {"share": ("covariate", "new-category"), "factor": ("concept",), "strength": ("covariate",)}
    given = {"share": share, "factor": factor, "strength": strength}
    for knob, value in given.items():
        if value is not None and kind not in has[knob]:
            raise ValueError(f"the {kind} drift has no {knob} ({', '.join(has[knob])} only)")
    if share is not None and not 0.0 < share <= 1.0:
        raise ValueError(f"share {share:g}: expected 0 < share <= 1")
    if factor is not None and factor <= 0.0:
        raise ValueError(f"factor {factor:g}: expected > 0")
    if strength is not None and strength < 0.0:
        raise ValueError(f"strength {strength:g}: expected >= 0")
    if start_index < 0:
        raise ValueError(f"start index {start_index}: expected >= 0")
    if kind == "covariate":
        shift = CovariateShift(start_index=start_index)
        scale = 1.0 if strength is None else strength
        return replace(
            shift,
            share=shift.share if share is None else share,
            income_shift=shift.income_shift * scale,
            credit_shift=shift.credit_shift * scale,
            latent_shift=shift.latent_shift * scale,
        )
    if kind == "new-category":
        new = NewCategory(start_index=start_index)
        return new if share is None else replace(new, share=share)
    concept = ConceptShift(start_index=start_index)
    return concept if factor is None else replace(concept, factor=factor)
