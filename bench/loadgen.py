"""Load generator used when wrk is not installed: N keep-alive connections for a fixed duration (aiohttp)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np


async def run_load(
    url: str, bodies: list[bytes], connections: int, seconds: float, api_key: str = ""
) -> dict[str, float]:
    """Same result keys as the wrk script: requests, duration_us, non2xx, errors, p50/p90/p99/max in µs."""
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    latencies: list[float] = []
    counts = {"non2xx": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        counts["non2xx"] += 1
            except aiohttp.ClientError:
                counts["errors"] += 1
                continue
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(worker(session, k) for k in range(connections)))
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1e6
    return {
        "requests": len(latencies) + counts["errors"],
        "duration_us": elapsed * 1e6,
        "non2xx": counts["non2xx"],
        "errors": counts["errors"],
        **{f"p{q}_us": float(np.percentile(lat, q)) if lat.size else 0.0 for q in (50, 90, 99)},
        "max_us": float(np.max(lat)) if lat.size else 0.0,
    }
