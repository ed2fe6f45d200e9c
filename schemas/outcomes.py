"""Loan outcomes: the ground truth of funded decisions, as clients send them and as they travel the outcome stream.

An outcome says how a funded loan ended (or where it stands): ``paid``, ``defaulted`` (a missed payment was not
cured), ``charged_off`` (written off) or ``partially_paid`` (closed with a shortfall). The last three are **bad**
outcomes: they are what the default probability predicts. A later outcome for the same loan supersedes an earlier
one (a default later charged off); the same outcome sent twice changes nothing (``outcome_id`` is its content hash).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from schemas.request import ISO_8601_PATTERN, Category, Identifier

OUTCOME_VERSION: Final = 1
OutcomeKind = Literal["paid", "defaulted", "charged_off", "partially_paid"]
#: Outcomes that count as a default (label 1) for performance monitoring.
BAD_OUTCOMES: Final = frozenset({"defaulted", "charged_off", "partially_paid"})
#: Which outcome wins when two for the same loan carry the same date (higher wins).
OUTCOME_RANK: Final = {"paid": 0, "partially_paid": 1, "defaulted": 2, "charged_off": 3}


class Outcome(msgspec.Struct, kw_only=True):
    """One loan outcome (``POST /v1/bnpl/outcomes`` item, one line of an outcome file)."""

    #: The decision's transaction (the request's ``transaction_id``).
    transaction_id: Identifier
    customer_id: Identifier
    outcome: OutcomeKind
    #: Money recovered on a bad outcome (on ``paid``: the amount repaid).
    amount_recovered: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 0.0
    #: When the outcome became known (ISO-8601 date or date-time).
    outcome_date: Annotated[str, msgspec.Meta(pattern=ISO_8601_PATTERN, max_length=40)]
    #: Where it came from (servicing system, collections agency, file name …).
    source: Category = "unspecified"

    def __post_init__(self) -> None:
        try:
            datetime.fromisoformat(self.outcome_date)
        except ValueError:
            raise ValueError("Invalid date or time - at `$.outcome_date`") from None

    @property
    def bad(self) -> bool:
        return self.outcome in BAD_OUTCOMES


class OutcomeEvent(msgspec.Struct, kw_only=True):
    """An outcome as published to ``<prefix>:outcomes`` (version 1)."""

    schema_version: int = OUTCOME_VERSION
    outcome_id: str
    outcome: Outcome
    #: When the system received it (ISO-8601, UTC) and through which door (``api``, ``loader``).
    received_at: str
    received_via: str


class OutcomeAccepted(msgspec.Struct, kw_only=True):
    """Answer of ``POST /v1/bnpl/outcomes`` (202): the outcomes are in the stream."""

    accepted: int
    outcome_ids: list[str]


def outcome_id(outcome: Outcome) -> str:
    """Content hash of an outcome: the same outcome (sent twice, through either door) has the same id.

    >>> o = Outcome(transaction_id="t1", customer_id="c1", outcome="paid", outcome_date="2026-01-02")
    >>> outcome_id(o) == outcome_id(Outcome(transaction_id="t1", customer_id="c1", outcome="paid",
    ...                                     outcome_date="2026-01-02", source="other"))
    True
    """
    key = f"{outcome.transaction_id}\x1f{outcome.outcome}\x1f{outcome.outcome_date}\x1f{outcome.amount_recovered!r}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def outcome_event(outcome: Outcome, received_at: str, via: str) -> OutcomeEvent:
    return OutcomeEvent(outcome_id=outcome_id(outcome), outcome=outcome, received_at=received_at, received_via=via)


def batch_outcome_type(limit: int) -> type[msgspec.Struct]:
    """The body of ``POST /v1/bnpl/outcomes``: 1 … ``limit`` outcomes (``BNPL_OUTCOMES_BATCH_MAX``)."""
    return msgspec.defstruct(
        "OutcomeBatch",
        [("outcomes", Annotated[list[Outcome], msgspec.Meta(min_length=1, max_length=limit)])],
        kw_only=True,
    )


def parse_outcome(data: Any) -> Outcome:
    """Validate a decoded object (a JSON line, a CSV row with numbers as text) into an outcome."""
    return msgspec.convert(data, Outcome, strict=False)
