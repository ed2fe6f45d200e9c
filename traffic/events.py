"""Synthetic prediction events straight onto a stream (benchmarks, tests): the same entries the API publishes."""

from __future__ import annotations

from typing import Any

import msgspec

from common.keys import encode_entry
from datagen import generate
from decision.engine import DecisionEngine
from schemas import PREDICTION_EVENT_VERSION, PredictionEvent, parse_request


def make_events(n: int, seed: int = 0, engine: DecisionEngine | None = None) -> list[PredictionEvent]:
    """``n`` real prediction events (the rule-based fallback decides unless an engine with models is given)."""
    engine = engine or DecisionEngine(None)
    data = generate(n, seed=seed)
    return [engine.decide(parse_request(data.request(i)))[1] for i in range(n)]


async def add_events(
    redis: Any,
    stream: str,
    events: list[PredictionEvent],
    poison_at: set[int] | None = None,
    version: int = PREDICTION_EVENT_VERSION,
    encode: Any = None,
) -> list[str]:
    """XADD the events with the publisher's entry layout; entries at ``poison_at`` get undecodable payloads.
    ``version``/``encode`` write events of another schema version (upgrade tests)."""
    encode = encode or msgspec.json.Encoder().encode
    ids: list[str] = []
    for start in range(0, len(events), 1_000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1_000, len(events))):
                poison = poison_at is not None and i in poison_at
                payload = b'{"prediction_id": 42, "broken": ' if poison else encode(events[i])
                pipe.xadd(stream, encode_entry(events[i].prediction_id, payload, version))
            ids += [x.decode() for x in await pipe.execute()]
    return ids
