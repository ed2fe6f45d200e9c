"""Prometheus metrics of one API process (its own registry: several apps can live in one test process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from producers.publisher import EventPublisher

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _PublisherCollector:
    """Reads the publisher's counters at scrape time (no per-event metric calls on the request path)."""

    def __init__(self, publisher: Callable[[], EventPublisher | None]) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Any]:
        pub = self._publisher()
        if pub is None:
            return
        stats = pub.stats
        for name, value, doc in (
            ("bnpl_events_published", stats.published, "Events confirmed in Redis (direct and replayed)"),
            ("bnpl_events_spooled", stats.spooled, "Events written to the local spool"),
            ("bnpl_events_replayed", stats.replayed, "Spooled events replayed into Redis"),
            ("bnpl_events_duplicate_skipped", stats.skipped_duplicates, "Events of blocks Redis already had"),
            ("bnpl_event_write_failures", stats.write_failures, "Failed Redis writes"),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        for name, gauge_value, doc in (
            ("bnpl_event_queue_depth", pub.queue_depth, "Events waiting in memory"),
            ("bnpl_spool_pending_bytes", pub.spool.pending_bytes, "Spool bytes not yet in Redis"),
            ("bnpl_redis_ok", int(pub.redis_ok), "1 while events go straight to Redis"),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], gauge_value)
            yield gauge


class ApiMetrics:
    """Request, decision, model and publisher metrics; labelled children are cached off the hot path."""

    def __init__(self, publisher: Callable[[], EventPublisher | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("bnpl_http_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "bnpl_request_latency_seconds",
            "Request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "bnpl_decisions", "Decisions", ["decision", "arm", "model_version"], registry=self.registry
        )
        self.unknown = Counter(
            "bnpl_unknown_category", "Requests with an unknown category value", ["field"], registry=self.registry
        )
        self.model_info = Gauge(
            "bnpl_model_info",
            "Loaded model versions (1 = loaded)",
            ["alias", "version", "family"],
            registry=self.registry,
        )
        self.fallback = Gauge("bnpl_fallback_mode", "1 while the rule-based fallback decides", registry=self.registry)
        self.registry.register(_PublisherCollector(publisher))
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def observe_decision(self, decision: str, arm: str, version: str | None, unknown: list[str]) -> None:
        self._child(self.decisions, decision, arm, version or "none").inc()
        for field in unknown:
            self._child(self.unknown, field).inc()

    def set_models(self, models: list[tuple[str, str, str]]) -> None:
        self.model_info.clear()
        for alias, version, family in models:
            self.model_info.labels(alias, version, family).set(1)
        self.fallback.set(0 if models else 1)
