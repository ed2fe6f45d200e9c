"""Prometheus metrics of one API process (its own registry: several apps can live in one test process).

The request path only bumps plain dict counters and a bucket array (the event loop is single-threaded, so no
locks); a collector turns them into Prometheus families at scrape time. Same for the publisher's counters.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from producers.publisher import EventPublisher

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _Latency:
    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


class ApiMetrics:
    """Request, decision, model and publisher metrics."""

    def __init__(self, publisher: Callable[[], EventPublisher | None]) -> None:
        self.registry = CollectorRegistry()
        self._publisher = publisher
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, _Latency] = {}
        self.decisions: dict[tuple[str, str, str], int] = {}
        self.unknown: dict[str, int] = {}
        self.model_info = Gauge(
            "bnpl_model_info",
            "Loaded model versions (1 = loaded)",
            ["alias", "version", "family"],
            registry=self.registry,
        )
        self.fallback = Gauge("bnpl_fallback_mode", "1 while the rule-based fallback decides", registry=self.registry)
        self.fallback_engaged = Gauge(
            "bnpl_fallback_engaged",
            "1 while the emergency fallback switch is on (bnpl fallback on, or the guardian)",
            registry=self.registry,
        )
        self._no_models = True
        self._engaged = False
        self.registry.register(self)

    # --- request path ---------------------------------------------------------------------------------------------
    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = _Latency()
        hist.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist.total += seconds

    def observe_decision(self, decision: str, arm: str, version: str | None, unknown: list[str]) -> None:
        key = (decision, arm, version or "none")
        self.decisions[key] = self.decisions.get(key, 0) + 1
        for field in unknown:
            self.unknown[field] = self.unknown.get(field, 0) + 1

    def set_models(self, models: list[tuple[str, str, str]]) -> None:
        self.model_info.clear()
        for alias, version, family in models:
            self.model_info.labels(alias, version, family).set(1)
        self._no_models = not models
        self.fallback.set(int(self._no_models or self._engaged))

    def set_fallback_engaged(self, engaged: bool) -> None:
        """The emergency fallback switch (operator or guardian) is on: rules decide although models are loaded."""
        self._engaged = engaged
        self.fallback_engaged.set(int(engaged))
        self.fallback.set(int(self._no_models or self._engaged))

    # --- scrape time ----------------------------------------------------------------------------------------------
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily("bnpl_http_requests", "HTTP requests", labels=["route", "status"])
        for (route, status), count in self.requests.items():
            requests.add_metric([route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily("bnpl_request_latency_seconds", "Request latency", labels=["route"])
        for route, hist in self.latency.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), hist.buckets, strict=True):
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            latency.add_metric([route], buckets, hist.total)
        yield latency
        decisions = CounterMetricFamily("bnpl_decisions", "Decisions", labels=["decision", "arm", "model_version"])
        for decision_labels, count in self.decisions.items():
            decisions.add_metric(list(decision_labels), count)
        yield decisions
        unknown = CounterMetricFamily(
            "bnpl_unknown_category", "Requests with an unknown category value", labels=["field"]
        )
        for field, count in self.unknown.items():
            unknown.add_metric([field], count)
        yield unknown
        yield from self._publisher_families()

    def _publisher_families(self) -> Iterator[Any]:
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
            (
                "bnpl_publisher_task_restarts",
                stats.task_restarts,
                "Publisher background tasks restarted after a failure",
            ),
            ("bnpl_event_spool_errors", stats.spool_errors, "Events that could not be spooled (kept in memory)"),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        health = pub.health()
        for name, gauge_value, doc in (
            ("bnpl_event_queue_depth", pub.queue_depth, "Events waiting in memory"),
            ("bnpl_spool_pending_bytes", pub.spool.pending_bytes, "Spool bytes not yet in Redis"),
            ("bnpl_redis_ok", int(pub.redis_ok), "1 while events go straight to Redis"),
            ("bnpl_spooled_shards", pub.spooled_streams, "Stream shards whose events wait in the spool"),
            ("bnpl_publish_degraded", int(not health.ok), "1 while events are not reaching Redis (see /readyz)"),
            ("bnpl_publish_seconds_since_success", health.seconds_since_success, "Seconds since a write to Redis"),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], gauge_value)
            yield gauge
