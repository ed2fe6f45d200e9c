"""Helpers for consumer tests: put real prediction events on a stream, wait for groups to drain."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from datagen import generate
from decision.engine import DecisionEngine
from schemas import parse_request


def make_events(n: int, seed: int = 0) -> list[Any]:
    """``n`` real prediction events (rule-based fallback decides: fast and deterministic enough)."""
    engine = DecisionEngine(None)
    data = generate(n, seed=seed)
    return [engine.decide(parse_request(data.request(i)))[1] for i in range(n)]


async def add_events(redis: Any, stream: str, events: list[Any], poison_at: set[int] | None = None) -> list[str]:
    """XADD the events (like the API's publisher does); entries at ``poison_at`` carry undecodable payloads."""
    encoder = msgspec.json.Encoder()
    ids = []
    for start in range(0, len(events), 1_000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1_000, len(events))):
                payload = (
                    b'{"prediction_id": 42, "broken": ' if poison_at and i in poison_at else encoder.encode(events[i])
                )
                pipe.xadd(stream, {"v": 1, "id": events[i].prediction_id, "e": payload})
            ids += [x.decode() for x in await pipe.execute()]
    return ids


async def wait_group_drained(redis: Any, stream: str, group: str, seconds: float = 120.0) -> None:
    """Until the group has read everything and nothing is pending."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        groups = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
        g = groups.get(group)
        if g is not None and int(g["pending"]) == 0 and int(g.get("lag") or 0) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"group {group} did not drain: {groups.get(group)}")
