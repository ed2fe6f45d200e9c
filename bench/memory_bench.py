"""``make bench-memory``: Redis memory per prediction event, as the previous release wrote events and as now.

The same model-decided events (the registry's champion and challenger; 20,000 by default) are written to a private
redis-server three ways, each to a stream of its own: event version 1 as plain JSON (the previous release), version
2 as plain JSON, and version 2 as the API writes it now (zstd with the events' dictionary, ``schemas.codec``).
Memory is ``MEMORY USAGE`` (every node counted) divided by the entries. The table ends with the Redis memory that
500,000 decisions a day need for one retention period.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import msgspec

from common.keys import Keys, entry_payload
from common.redis_client import connect
from common.redis_server import RedisServer
from common.settings import Settings
from schemas.events import PredictionEvent
from traffic.events import add_events, as_v1, make_events

DECISIONS_PER_DAY = 500_000


async def _measure(url: str, events: list[PredictionEvent], n: int) -> list[tuple[str, float, float]]:
    redis = connect(url)
    encode = msgspec.json.Encoder().encode
    variants = {
        "event v1, JSON (previous release)": {"version": 1, "encode": lambda e: encode(as_v1(e)), "codec": ""},
        "event v2, JSON": {"version": 2, "codec": ""},
        "event v2, zstd + dictionary (now)": {"version": 2},
    }
    rows = []
    try:
        for i, (name, options) in enumerate(variants.items()):
            stream = Keys(f"memory{i}").predictions()
            await add_events(redis, stream, events, **options)  # type: ignore[arg-type]
            memory = int(await redis.memory_usage(stream, samples=0))
            entries = await redis.xrange(stream, count=500)
            payload = sum(len(entry_payload(fields)) for _, fields in entries) / len(entries)
            rows.append((name, payload, memory / n))
    finally:
        await redis.aclose()
    return rows


def main() -> int:
    from decision.engine import DecisionEngine
    from registry import mlflow_client
    from registry.loader import build_model_set, registry_pointers

    settings = Settings.from_env()
    n = min(settings.bench.bench_events, 20_000)
    registry = settings.registry
    models = build_model_set(*registry_pointers(mlflow_client(registry), registry))
    print(f"deciding {n:,} generated requests with {'the registry' if models else 'the rule-based fallback'} …")
    events = make_events(n, seed=8, engine=DecisionEngine(models))
    server = RedisServer(Path(tempfile.mkdtemp(prefix="bnpl-bench-memory-"))).start()
    try:
        rows = asyncio.run(_measure(server.url, events, n))
    finally:
        server.stop()
    hours = settings.consumers.stream_retention_hours
    held = DECISIONS_PER_DAY * hours / 24
    retained = f"{DECISIONS_PER_DAY:,}/day, {hours:g} h retained"
    print(f"\n| events in the stream | payload bytes | Redis bytes per event | {retained} |")
    print("|---|---|---|---|")
    for name, payload, per_event in rows:
        print(f"| {name} | {payload:,.0f} | {per_event:,.0f} | {held * per_event / 1e6:,.1f} MB |")
    before, now = rows[0][2], rows[-1][2]
    print(f"\nRedis bytes per event: previous release / now = {before / now:.1f}x ({before:,.0f} → {now:,.0f} B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
