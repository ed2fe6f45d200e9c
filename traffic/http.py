"""Replays generated requests against the API over HTTP with N concurrent connections (demo, tests)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson


@dataclass(slots=True)
class SimulationResult:
    """What the simulator saw: statuses, client-side latencies, decisions per arm, prediction ids."""

    statuses: Counter[int] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (arm, decision)
    #: Deciding model version of each 200 response, in completion order.
    versions: list[str | None] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    prediction_ids: list[str] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.errors

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def simulate(
    base_url: str,
    requests: Iterable[dict[str, Any]],
    *,
    api_key: str | None = None,
    connections: int = 8,
    timeout_s: float = 10.0,
) -> SimulationResult:
    """POST every request to ``/v1/bnpl/risk-assessment`` using ``connections`` concurrent connections."""
    result = SimulationResult()
    source: Iterator[dict[str, Any]] = iter(requests)
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    url = base_url.rstrip("/") + "/v1/bnpl/risk-assessment"

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in source:
            start = time.perf_counter()
            try:
                async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                    payload = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                result.errors += 1
                continue
            result.latencies_ms.append((time.perf_counter() - start) * 1000.0)
            result.statuses[resp.status] += 1
            if resp.status == 200:
                decided = orjson.loads(payload)
                result.decisions[(decided["traffic_segment"], decided["business_decision"])] += 1
                result.prediction_ids.append(decided["prediction_id"])
                result.versions.append(decided["model_version"])

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def post_batches(
    base_url: str,
    path: str,
    key: str,
    items: list[dict[str, Any]],
    *,
    api_key: str | None = None,
    batch: int = 500,
    connections: int = 4,
    timeout_s: float = 60.0,
) -> list[tuple[int, Any]]:
    """POST ``items`` in bodies of ``{key: [... up to batch items]}`` to ``path`` over ``connections`` connections;
    returns (status, decoded body) per call, in item order."""
    url = base_url.rstrip("/") + path
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    answers: list[tuple[int, Any]] = [(0, None)] * len(chunks)
    queue = iter(range(len(chunks)))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in queue:
            async with session.post(url, data=orjson.dumps({key: chunks[i]}), headers=headers) as resp:
                answers[i] = (resp.status, orjson.loads(await resp.read()))

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return answers
