"""Decided traffic straight into a warehouse (benchmarks, tests): what the API and the warehouse and outcomes groups
would land, without the HTTP and stream hops in between."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from datagen import Dataset
from datagen.outcomes import funded_outcomes
from decision.engine import DecisionEngine
from producers.outcomes import outcome_events
from schemas import parse_request
from schemas.outcomes import parse_outcome
from warehouse.base import Warehouse


def decide_into(
    warehouse: Warehouse,
    engine: DecisionEngine,
    data: Dataset,
    stop: int | None = None,
    chunk: int = 50_000,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Decide requests ``0 … stop`` of ``data`` with ``engine`` and land their events in ``warehouse`` (in chunks,
    ``progress(done, total)`` after each); returns transaction id → business decision."""
    total = len(data) if stop is None else stop
    encoder = msgspec.json.Encoder()
    decisions: dict[str, str] = {}
    for begin in range(0, total, chunk):
        payloads = []
        for i in range(begin, min(total, begin + chunk)):
            response, event = engine.decide(parse_request(data.request(i)))
            decisions[response.transaction_id] = response.business_decision
            payloads.append(encoder.encode(event))
        warehouse.insert_events(payloads)
        if progress is not None:
            progress(min(total, begin + chunk), total)
    return decisions


def land_outcomes(
    warehouse: Warehouse,
    data: Dataset,
    decisions: dict[str, str],
    review_approval_rate: float,
    seed: int,
    via: str = "loader",
    chunk: int = 50_000,
) -> int:
    """Land the outcomes of the funded loans among ``decisions`` (``datagen.outcomes``); returns how many."""
    records = funded_outcomes(data, decisions, review_approval_rate, seed)
    for begin in range(0, len(records), chunk):
        warehouse.insert_outcomes(outcome_events([parse_outcome(r) for r in records[begin : begin + chunk]], via))
    return len(records)
