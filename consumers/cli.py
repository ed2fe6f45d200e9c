"""``bnpl consume <group>`` and ``bnpl status``: process management around the runtime."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from common.processes import Child, bnpl_command, supervise
from common.redis_client import redis_for, redis_for_sync
from common.settings import ConsumerSettings, Settings
from consumers.alert_sender import AlertSender
from consumers.groups import GROUPS
from consumers.runtime import ConsumerWorker, run_worker

log = logging.getLogger(__name__)


#: A group's first ``/metrics`` port while ``BNPL_METRICS_PORT`` is unset; worker i of ``--workers N`` serves base + i.
#: Blocks of ten: up to ten workers of every group run on one host without two of them asking for one port.
METRICS_PORTS: dict[str, int] = {
    "warehouse": 9101,
    "mlflow": 9111,
    "drift": 9121,
    "outcomes": 9131,
    "alert-sender": 9141,
}


def metrics_port(settings: ConsumerSettings, group: str) -> int:
    """The port of this worker's ``/metrics`` (0: none): ``BNPL_METRICS_PORT`` when set, else the group's block
    (:data:`METRICS_PORTS`), plus the worker's slot within ``--workers N``."""
    if settings.metrics_port == 0:
        return 0
    base = METRICS_PORTS[group] if settings.metrics_port is None else settings.metrics_port
    return base + settings.worker_index


class WorkerCollector:
    """A consumer worker's Prometheus families, read from its counters at scrape time (labels: group, consumer).

    Every worker: ``bnpl_consumer_{processed,failed,dead_lettered,retries,claimed,batches,redis_errors}_total``,
    ``bnpl_consumer_{up,lag,oldest_entry_age_seconds,leased_streams,batch_seconds}``; the alert sender adds its
    webhook deliveries and failures, the drift group the alerts its findings raised (by kind and model version).
    """

    def __init__(self, worker: ConsumerWorker) -> None:
        self.worker = worker

    def describe(self) -> list[Any]:
        """Nothing up front: the families are built at scrape time."""
        return []

    def collect(self) -> Iterator[Any]:
        """The families of one scrape (from the server's thread: only reads that are safe while the loop runs)."""
        worker, stats = self.worker, self.worker.stats
        labels = ["group", "consumer"]
        values = [worker.group, worker.name]
        for name, count, doc in (
            ("processed", stats.processed, "Entries processed and acked"),
            ("failed", stats.failed, "Entries the sink reported as bad (retried, then dead-lettered)"),
            ("dead_lettered", stats.dead_lettered, "Entries moved to the dead-letter stream"),
            ("retries", stats.retries, "Batch retries after a sink failure"),
            ("claimed", stats.claimed, "Entries taken over from other consumers"),
            ("batches", stats.batches, "Batches committed"),
            ("redis_errors", stats.redis_errors, "Redis errors the worker healed from (reconnected, resumed)"),
        ):
            counter = CounterMetricFamily(f"bnpl_consumer_{name}", doc, labels=labels)
            counter.add_metric(values, count)
            yield counter
        for name, value, doc in (
            ("up", 0 if worker.stopping else 1, "1 while the worker consumes, 0 while it drains to stop"),
            ("lag", stats.lag, "Entries of the streams it holds not yet delivered to the group (sampled every 1 s)"),
            (
                "oldest_entry_age_seconds",
                stats.oldest_age_s,
                "Age of the oldest entry of its streams the group has not acked (pending or not yet delivered): "
                "the end-to-end lag of the group (sampled every 1 s; 0: none)",
            ),
            ("leased_streams", len(worker.leases.owned), "Stream shards whose lease this worker holds"),
            ("batch_seconds", stats.last_batch_s, "Duration of the last batch"),
        ):
            gauge = GaugeMetricFamily(f"bnpl_consumer_{name}", doc, labels=labels)
            gauge.add_metric(values, value)
            yield gauge
        handler = worker.handler
        if isinstance(handler, AlertSender):
            for name, count, doc in (
                ("bnpl_alert_deliveries", handler.delivered, "Webhook calls answered 2xx"),
                (
                    "bnpl_alert_delivery_failures",
                    handler.delivery_failures,
                    "Webhook calls that failed (status >= 300, connection error, timeout); the batch is retried",
                ),
            ):
                counter = CounterMetricFamily(name, doc, labels=labels)
                counter.add_metric(values, count)
                yield counter
        if worker.group == "drift":
            from consumers.drift_group import DriftHandler

            if isinstance(handler, DriftHandler):
                yield self._drift_alerts(handler, labels, values)

    @staticmethod
    def _drift_alerts(handler: Any, labels: list[str], values: list[str]) -> Any:
        raised: dict[tuple[str, str], int] = {}
        key: str
        for key in handler.alerts_sent:  # drift:<version>:<kind>:<feature>
            parts = key.split(":", 3)
            kind, version = (parts[2], parts[1]) if len(parts) > 2 else ("unknown", "unknown")
            raised[(kind, version)] = raised.get((kind, version), 0) + 1
        family = CounterMetricFamily(
            "bnpl_drift_alerts_raised",
            "Drift findings raised as alerts (at most one per cause per cooldown)",
            labels=[*labels, "kind", "model_version"],
        )
        for (kind, version), count in sorted(raised.items()):
            family.add_metric([*values, kind, version], count)
        return family


def serve_metrics(worker: ConsumerWorker, host: str, port: int) -> Any:
    """Serve ``worker``'s families and the process's own (CPU, memory, GC) on ``http://host:port/metrics`` from a
    daemon thread; returns the server, or None when the port cannot be bound (logged: the worker runs on without
    ``/metrics``, it never stops for it)."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, WorkerCollector(worker)):
        registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning(
            "group %s: metrics not served on %s:%d (%s); the worker runs on without /metrics "
            "(set BNPL_METRICS_PORT to a free port, or 0 for none)",
            worker.group,
            host,
            port,
            exc.strerror or exc,
        )
        return None
    log.info("group %s: metrics on http://%s:%d/metrics", worker.group, host, port)
    return server


async def _run_one(settings: Settings, group: str) -> int:
    redis = redis_for(settings.streams, role="worker")
    worker = ConsumerWorker(redis, settings.keys, GROUPS[group](settings, redis), settings.consumers)
    port = metrics_port(settings.consumers, group)
    if port:
        serve_metrics(worker, settings.consumers.metrics_host, port)
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
