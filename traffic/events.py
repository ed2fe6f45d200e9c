"""Synthetic prediction events straight onto a stream (benchmarks, tests): the same entries the API publishes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from datagen import generate
from decision.engine import DecisionEngine
from schemas import PredictionEvent, parse_request


def make_events(n: int, seed: int = 0, engine: DecisionEngine | None = None) -> list[PredictionEvent]:
    """``n`` real prediction events (the rule-based fallback decides unless an engine with models is given)."""
    engine = engine or DecisionEngine(None)
    data = generate(n, seed=seed)
    return [engine.decide(parse_request(data.request(i)))[1] for i in range(n)]


async def add_events(
    redis: Any, stream: str, events: list[PredictionEvent], poison_at: set[int] | None = None
) -> list[str]:
    """XADD the events with the publisher's entry layout; entries at ``poison_at`` get undecodable payloads."""
    encoder = msgspec.json.Encoder()
    ids: list[str] = []
    for start in range(0, len(events), 1_000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1_000, len(events))):
                poison = poison_at is not None and i in poison_at
                payload = b'{"prediction_id": 42, "broken": ' if poison else encoder.encode(events[i])
                pipe.xadd(stream, {"v": 1, "id": events[i].prediction_id, "e": payload})
            ids += [x.decode() for x in await pipe.execute()]
    return ids


async def wait_group_drained(redis: Any, stream: str, group: str, seconds: float = 120.0) -> None:
    """Until the group has read everything and nothing is pending."""
    deadline = time.monotonic() + seconds
    state = None
    while time.monotonic() < deadline:
        groups = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
        state = groups.get(group)
        if state is not None and int(state["pending"]) == 0 and int(state.get("lag") or 0) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"group {group} did not drain: {state}")
