"""Publishing outcomes: the API's ``POST /v1/bnpl/outcomes`` and ``bnpl outcomes load`` append to ``<prefix>:outcomes``.

Unlike decisions, outcomes are not answered before they are stored: the caller (a servicing system, a file loader)
gets its acknowledgement only once Redis has every outcome of the call, and retries otherwise. A retry may append
an outcome twice; the outcomes group lands it once (the table is keyed by transaction, the outcome id is its content
hash), so nothing is lost and nothing counts twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from common.keys import Keys, encode_entry
from schemas.outcomes import OUTCOME_VERSION, Outcome, OutcomeEvent, outcome_event

_ENCODER = msgspec.json.Encoder()


def outcome_events(outcomes: Sequence[Outcome], via: str) -> list[OutcomeEvent]:
    """The events of ``outcomes`` received now through ``via`` (``api``, ``loader``)."""
    now = datetime.now(UTC).isoformat()
    return [outcome_event(o, now, via) for o in outcomes]


def _entries(keys: Keys, events: Sequence[OutcomeEvent]) -> list[tuple[str, dict[str, Any]]]:
    stream = keys.outcomes()
    return [(stream, encode_entry(e.outcome_id, _ENCODER.encode(e), OUTCOME_VERSION)) for e in events]


async def publish_outcomes(redis: Any, keys: Keys, events: Sequence[OutcomeEvent]) -> None:
    """Append every event in one round trip; raises the Redis error when any append failed."""
    pipe = redis.pipeline(transaction=False)
    for stream, fields in _entries(keys, events):
        pipe.xadd(stream, fields)
    await pipe.execute()


def publish_outcomes_sync(redis: Any, keys: Keys, events: Sequence[OutcomeEvent]) -> None:
    """:func:`publish_outcomes` with a blocking client (command-line loader)."""
    pipe = redis.pipeline(transaction=False)
    for stream, fields in _entries(keys, events):
        pipe.xadd(stream, fields)
    pipe.execute()
