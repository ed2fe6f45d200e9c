"""``make bench-replication``: what waiting for a replica costs the API's publisher on a Redis Cluster.

On a private 3-master + 3-replica cluster, the real ``EventPublisher`` (6 shards) publishes the same generated
events three ways, side by side in one run: without waiting (asynchronous replication, the default), and with
``BNPL_PUBLISH_WAIT_REPLICAS=1`` (each block's script followed by ``WAIT 1`` on the master's connection) at two
block sizes. Timed from the first ``publish()`` until every event is confirmed in Redis; the request path never
waits (``publish()`` only enqueues), so the cost shows as publisher throughput and the time an event waits in memory.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common.redis_client import connect
from common.redis_server import RedisClusterServers
from common.settings import Settings
from producers.publisher import EventPublisher
from schemas.events import PredictionEvent
from traffic.events import make_events

EVENTS = Settings.from_env().bench.bench_events


async def _publish(url: str, work: Path, events: list[PredictionEvent], wait: int, batch: int) -> tuple[float, int]:
    settings = Settings.build(
        data_dir=work / f"w{wait}b{batch}",
        redis_url=url,
        redis_cluster=True,
        stream_shards=6,
        key_prefix=f"bench-w{wait}-b{batch}",
        publish_wait_replicas=wait,
        publish_batch=batch,
    )
    redis = connect(url, "api", cluster=True)
    publisher = EventPublisher(redis, settings.keys, settings.publisher, f"bench-{wait}-{batch}")
    publisher.start()
    try:
        started = time.perf_counter()
        for i, event in enumerate(events):
            publisher.publish(event)
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the flusher run, as a serving API does between requests
                while publisher.queue_depth > 5_000:  # noqa: ASYNC110 - stay below the queue bound (no spooling)
                    await asyncio.sleep(0.001)
        while publisher.stats.published < len(events):  # noqa: ASYNC110 - polls the publisher's counter
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
    finally:
        await publisher.stop()
        await redis.aclose()
    return elapsed, publisher.stats.write_failures + publisher.stats.spooled


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bnpl-bench-replication-"))
    print(f"generating {EVENTS:,} prediction events …", flush=True)
    events = make_events(EVENTS, seed=11)
    cluster = RedisClusterServers(work / "cluster").start()
    results = {}
    try:
        for wait, batch in ((0, 500), (1, 500), (1, 100)):
            elapsed, failures = asyncio.run(_publish(cluster.url, work, events, wait, batch))
            results[(wait, batch)] = (elapsed, failures)
            print(f"  WAIT {wait}, blocks of ≤ {batch}: {EVENTS / elapsed:,.0f} events/s", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = EVENTS / results[(0, 500)][0]
    print(
        "\n| replicas waited for | events per block (most) | events | seconds | events/s | vs no wait "
        "| failed or spooled |"
    )
    print("|---|---|---|---|---|---|---|")
    for (wait, batch), (elapsed, failures) in results.items():
        rate = EVENTS / elapsed
        print(f"| {wait} | {batch} | {EVENTS:,} | {elapsed:.2f} | {rate:,.0f} | {rate / base:.2f}x | {failures} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
