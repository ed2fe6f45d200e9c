"""``bnpl consume <group>`` and ``bnpl status``: process management around the runtime."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common.processes import bnpl_command, run_children
from common.redis_client import connect
from common.settings import Settings
from consumers.groups import GROUPS
from consumers.runtime import ConsumerWorker, run_worker
from consumers.status import count_live

log = logging.getLogger(__name__)


def _serve_metrics(worker: ConsumerWorker, port: int) -> None:
    from prometheus_client import REGISTRY, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def describe(self) -> list[Any]:
            return []

        def collect(self) -> Any:
            labels = ["group", "consumer"]
            values = [worker.group, worker.name]
            for name, value in (
                ("processed", worker.stats.processed),
                ("failed", worker.stats.failed),
                ("dead_lettered", worker.stats.dead_lettered),
                ("retries", worker.stats.retries),
                ("claimed", worker.stats.claimed),
            ):
                family = CounterMetricFamily(f"bnpl_consumer_{name}", f"Entries {name}", labels=labels)
                family.add_metric(values, value)
                yield family
            gauge = GaugeMetricFamily("bnpl_consumer_batch_seconds", "Duration of the last batch", labels=labels)
            gauge.add_metric(values, worker.stats.last_batch_s)
            yield gauge
            lag = GaugeMetricFamily("bnpl_consumer_lag", "Entries not yet delivered to the group", labels=labels)
            lag.add_metric(values, worker.stats.lag)
            yield lag

    REGISTRY.register(Collector())
    start_http_server(port, addr="127.0.0.1")


async def _run_one(settings: Settings, group: str) -> int:
    redis = connect(settings.streams.redis_url, role="worker")
    worker = ConsumerWorker(redis, settings.keys, GROUPS[group](settings, redis), settings.consumers)
    if settings.consumers.metrics_port:
        _serve_metrics(worker, settings.consumers.metrics_port + settings.consumers.worker_index)
    log.info("group %s: consumer %s started on %s", group, worker.name, ", ".join(worker.streams))
    try:
        await run_worker(worker)
    finally:
        await redis.aclose()
    log.info("group %s: consumer %s stopped (processed %d)", group, worker.name, worker.stats.processed)
    return 0


async def check(settings: Settings, group: str) -> int:
    """0 when at least one consumer of ``group`` refreshed its health key within its TTL."""
    redis = connect(settings.streams.redis_url)
    try:
        alive = await count_live(redis, settings.keys, group)
    finally:
        await redis.aclose()
    print(f"group {group}: {alive} live consumer(s)")
    return 0 if alive else 1


def consume(settings: Settings, group: str, workers: int = 1) -> int:
    """Run ``workers`` worker processes (one in-process when 1) of ``group``."""
    if group not in GROUPS:
        raise SystemExit(f"unknown group {group!r}; known: {', '.join(GROUPS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers <= 1:
        return asyncio.run(_run_one(settings, group))
    return run_children(
        [
            (
                bnpl_command(settings, "consume", group),
                {"BNPL_WORKER_INDEX": str(i)},
            )
            for i in range(workers)
        ]
    )


async def status(settings: Settings) -> int:
    from consumers.status import collect, healthy, render

    redis = connect(settings.streams.redis_url)
    try:
        streams = await collect(redis, settings.keys)
    finally:
        await redis.aclose()
    print(render(streams))
    return 0 if healthy(streams) else 1
