"""``bnpl consume <group>`` and ``bnpl status``: process management around the runtime."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import orjson

from common.processes import Child, bnpl_command, supervise
from common.redis_client import redis_for, redis_for_sync
from common.settings import Settings
from consumers.groups import GROUPS
from consumers.runtime import ConsumerWorker, run_worker

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
    redis = redis_for(settings.streams, role="worker")
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
    """0 when ``group`` runs healthily on this host: under a ``--workers N`` supervisor, every child alive (its pid
    exists here) and beating (a fresh health key); otherwise at least one live worker of the group on this host."""
    host = socket.gethostname()
    keys = settings.keys
    redis = redis_for(settings.streams)
    problems: list[str] = []
    try:
        supervisors = [k async for k in redis.scan_iter(match=keys.supervisor_pattern(group, host))]
        children = 0
        for key in supervisors:
            raw = await redis.get(key)
            if raw is None:
                continue
            for child in orjson.loads(raw)["children"]:
                children += 1
                pid, slot = int(child["pid"]), child["slot"]
                if not _pid_alive(pid):
                    problems.append(f"worker {slot} (pid {pid}) is not running; its supervisor is restarting it")
                elif not await redis.exists(keys.health(group, f"{host}-{pid}")):
                    problems.append(f"worker {slot} (pid {pid}) has not reported as healthy yet")
        if not supervisors:
            children = len([k async for k in redis.scan_iter(match=keys.health(group, f"{host}-*"))])
            if not children:
                problems.append("no live worker on this host")
    finally:
        await redis.aclose()
    for problem in problems:
        print(f"group {group}: {problem}")
    print(f"group {group}: {children} worker(s) on {host}, {'unhealthy' if problems else 'healthy'}")
    return 1 if problems else 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _supervisor_beat(settings: Settings, group: str) -> Any:
    """Report the children to Redis about once a second (``--check`` reads it); errors are the caller's to log."""
    keys = settings.keys
    key = keys.supervisor(group, socket.gethostname(), os.getpid())
    client = redis_for_sync(settings.streams)

    def beat(children: list[Child]) -> None:
        report = {
            "group": group,
            "supervisor_pid": os.getpid(),
            "children": [
                {"slot": c.slot, "pid": c.proc.pid, "alive": c.alive, "restarts": c.restarts} for c in children
            ],
        }
        client.set(key, orjson.dumps(report), ex=settings.consumers.health_ttl_s)

    return beat


def consume(settings: Settings, group: str, workers: int = 1) -> int:
    """Run ``group``: one worker in this process, or ``workers`` supervised worker processes (restarted when they
    die, reported for ``--check``)."""
    if group not in GROUPS:
        raise SystemExit(f"unknown group {group!r}; known: {', '.join(GROUPS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers <= 1:
        return asyncio.run(_run_one(settings, group))
    commands = [(bnpl_command(settings, "consume", group), {"BNPL_WORKER_INDEX": str(i)}) for i in range(workers)]
    return supervise(commands, beat=_supervisor_beat(settings, group))


async def status(settings: Settings, as_json: bool = False, schema: bool = False) -> int:
    from consumers.status import STATUS_SCHEMA, collect, healthy, render, to_json

    if schema:
        print(orjson.dumps(STATUS_SCHEMA, option=orjson.OPT_INDENT_2).decode())
        return 0

    redis = redis_for(settings.streams)
    try:
        streams = await collect(redis, settings.keys, settings.consumers)
    finally:
        await redis.aclose()
    print(to_json(streams).decode() if as_json else render(streams))
    return 0 if healthy(streams) else 1
