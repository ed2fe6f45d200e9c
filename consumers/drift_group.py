"""The drift group: per model version, a :class:`DriftMonitor` against the version's reference profile.

Every score of every loaded version (shadow scores included) feeds that version's score detectors; requests feed the
detectors of the version that decided them. Findings become alerts on ``<prefix>:alerts``, at most one per cause
(``drift:<version>:<kind>:<feature>``) per cooldown: ``SET NX`` with a TTL, so several workers and restarts never
double-alert. Detectors are kept per stream shard (a worker reads the shards it holds the lease of, see
``consumers.leases``) and pickled to Redis per shard every few seconds, when the shard is handed to another worker and
on stop: whoever reads a shard next resumes its detectors where they were (a checkpoint that no longer loads is
logged and dropped).

Every closed request window's statistics (alerting or not) also go to MLflow, one run per model version and day of
the request timestamps (``consumers.drift_runs``), from a thread of their own: MLflow being slow or down never
holds the detectors up.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from datetime import UTC, datetime
from typing import Any

import uuid_utils

from alerting.channel import raise_alert
from common.keys import Keys
from common.settings import AlertSettings, DriftSettings, RegistrySettings
from consumers.base import BatchResult, Entry, decode_entries
from consumers.drift_runs import DriftRuns
from drift.monitor import DriftMonitor, Finding, event_time
from features.spec import CATEGORICAL_FIELDS, NUMERIC_FIELDS, normalize_category, time_categories
from schemas.alerts import Alert
from schemas.events import EventDecoder, projection

log = logging.getLogger(__name__)

RUNBOOKS = {
    "score_change": "Score distribution moved: compare feature drift alerts, check upstream data, consider retraining.",
    "score_psi": "Score distribution moved: compare feature drift alerts, check upstream data, consider retraining.",
    "feature_psi": "An input's distribution moved: check the upstream source and the traffic mix.",
    "categorical_psi": "Category mix moved: check marketing/traffic changes; retrain if it persists.",
    "unknown_category_rate": "A value the models never saw is frequent: add it to training data and retrain.",
    "approval_rate": "Approval rate moved: check the policy thresholds and the score alerts before acting.",
    "new_category": "A value the models never saw keeps arriving: check the upstream source; add it to training data.",
    "time_pattern_psi": "Traffic arrives at unusual times: check for bots, a campaign or a clock/time-zone change.",
}


#: Only what the detectors read: the 36-feature array is skipped (the watched numbers are in the request), which
#: makes decoding about twice as cheap.
_DECODER = EventDecoder(
    projection(
        "DriftView",
        decision=[
            "unknown_fields",
            "all_predictions",
            "model_versions",
            "model_version",
            "traffic_segment",
            "business_decision",
            "default_probability",
        ],
        request=[*NUMERIC_FIELDS, *CATEGORICAL_FIELDS, "transaction_timestamp", "customer_id"],
        event=["model_name"],
    )
)
_NORMALIZED: dict[str, str] = {}
#: How long a stopping worker waits for MLflow to take the drift windows still queued (s).
RUNS_STOP_WAIT_S = 5.0


def _normalized(value: str) -> str:
    """``normalize_category`` with a cache (the same few values repeat millions of times)."""
    found = _NORMALIZED.get(value)
    if found is None:
        found = normalize_category(value)
        if len(_NORMALIZED) < 10_000:
            _NORMALIZED[value] = found
    return found


#: The longest a starting worker waits for the served versions' profiles before it reads anyway.
PRELOAD_TIMEOUT_S = 15.0


class DriftHandler:
    group = "drift"

    def __init__(
        self,
        settings: DriftSettings,
        alerts: AlertSettings,
        registry: RegistrySettings,
        redis: Any,
        keys: Keys,
    ) -> None:
        self.config = settings
        self.alert_settings = alerts
        self.registry = registry
        self.redis = redis
        self.keys = keys
        #: stream → model version → its detectors (the streams this worker reads now)
        self.shards: dict[str, dict[str, DriftMonitor]] = {}
        self.alerts_sent: list[str] = []
        self._last_checkpoint = 0.0
        self._client: Any = None
        self.profiles: dict[tuple[str, str], dict[str, Any]] = {}  # (model, version) → its reference profile
        #: Closed windows → MLflow (None: BNPL_DRIFT_MLFLOW=false).
        self.runs = DriftRuns(registry, settings) if settings.mlflow_runs else None
        self._shard_of = {stream: i for i, stream in enumerate(keys.prediction_streams())}

    @property
    def streams(self) -> list[str]:
        return self.keys.prediction_streams()

    @property
    def monitors(self) -> dict[str, DriftMonitor]:
        """Model version → detectors, over every shard held (with one shard: that shard's)."""
        return {v: m for monitors in self.shards.values() for v, m in monitors.items()}

    async def start(self) -> None:
        """Warm up before reading: the MLflow client and the profiles of the versions the aliases serve now.
        Loaded at the first event instead (importing MLflow, the first registry query), they held the first batch
        up for seconds. A registry that cannot be read now (or within ``PRELOAD_TIMEOUT_S``) is no reason not to
        start: the profiles then load with the events."""
        try:
            async with asyncio.timeout(PRELOAD_TIMEOUT_S):
                await asyncio.to_thread(self._preload)
        except Exception as exc:
            log.warning("drift: could not preload the served versions' profiles (%s); loading them on demand", exc)

    def _preload(self) -> None:
        from registry.store import resolve_alias

        client = self._mlflow()
        for alias in self.registry.model_aliases:
            try:
                version = resolve_alias(client, self.registry.model_name, alias).version
            except Exception:  # noqa: S112 - an alias not set (no challenger): nothing to preload
                continue
            self._load_profile(self.registry.model_name, version)

    async def resume(self, stream: str) -> dict[str, DriftMonitor]:
        """``stream``'s detectors: in memory, or from its checkpoint, or new."""
        monitors = self.shards.get(stream)
        if monitors is not None:
            return monitors
        monitors = {}
        raw = await self.redis.get(self.keys.drift_state(stream))
        if raw:
            try:
                monitors = pickle.loads(raw)  # noqa: S301 - written by this group
            except Exception as exc:  # written by an older version: detectors start over rather than not at all
                log.warning("drift %s: checkpoint does not load (%s); starting fresh", stream, exc)
            else:
                log.info("drift %s: resumed %d monitor(s) from its checkpoint", stream, len(monitors))
        self.shards[stream] = monitors
        return monitors

    async def tick(self) -> None:
        return None

    async def released(self, stream: str, lost: bool) -> None:
        if not lost:
            await self.checkpoint([stream])
        self.shards.pop(stream, None)

    async def close(self) -> None:
        await self.checkpoint()
        if self.runs is not None:
            await asyncio.to_thread(self.runs.stop, RUNS_STOP_WAIT_S)

    async def checkpoint(self, streams: list[str] | None = None) -> None:
        for stream in self.shards if streams is None else streams:
            if stream in self.shards:
                await self.redis.set(self.keys.drift_state(stream), pickle.dumps(self.shards[stream]), ex=30 * 86_400)
        self._last_checkpoint = time.monotonic()

    def _mlflow(self) -> Any:
        from registry.store import mlflow_client

        if self._client is None:
            self._client = mlflow_client(self.registry)
        return self._client

    def _load_profile(self, model_name: str, version: str) -> dict[str, Any]:
        """A version's reference profile (read once per worker: a version's profile never changes)."""
        from registry.store import get_version, read_profile

        profile = self.profiles.get((model_name, version))
        if profile is None:
            profile = self.profiles[model_name, version] = read_profile(
                get_version(self._mlflow(), model_name, version)
            )
        return profile

    async def _monitor(self, stream: str, model_name: str | None, version: str) -> DriftMonitor | None:
        monitors = await self.resume(stream)
        monitor = monitors.get(version)
        if monitor is None and model_name:
            profile = await asyncio.to_thread(self._load_profile, model_name, version)
            monitor = monitors[version] = DriftMonitor(version, profile, self.config)
        return monitor

    async def handle(self, entries: list[Entry]) -> BatchResult:
        decoded, failed = decode_entries(entries, _DECODER.decode)
        by_stream: dict[str, list[Any]] = {}
        for entry, event in decoded:
            by_stream.setdefault(entry.stream, []).append(event)
        findings: list[tuple[str, Finding]] = []
        for stream, events in by_stream.items():
            findings += await self._observe(stream, events)
        for version, finding in findings:
            await self._alert(version, finding)
        if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_every_s:
            await self.checkpoint()
        return BatchResult(failed)

    async def _observe(self, stream: str, events: list[Any]) -> list[tuple[str, Finding]]:
        scores: dict[str, list[float]] = {}
        requests: dict[str, list[Any]] = {}
        names: dict[str, str | None] = {}
        for event in events:
            d = event.decision
            for alias, score in d.all_predictions.items():
                version = d.model_versions[alias]
                scores.setdefault(version, []).append(score)
                names[version] = event.model_name
            if d.model_version is not None:
                requests.setdefault(d.model_version, []).append(event)
        findings: list[tuple[str, Finding]] = []
        newest: float | None = None
        for version in sorted(set(scores) | set(requests)):
            monitor = await self._monitor(stream, names.get(version), version)
            if monitor is None:
                continue
            findings += [(version, f) for f in monitor.observe_scores(scores.get(version, []))]
            decided = requests.get(version, [])
            if decided:
                times = [event_time(e.request.transaction_timestamp) for e in decided]
                newest = max([newest or 0.0, *(t for t in times if t is not None)])
                findings += [
                    (version, f)
                    for f in monitor.observe_requests(
                        [[float(getattr(e.request, n)) for n in NUMERIC_FIELDS] for e in decided],
                        [
                            {
                                **{n: _normalized(getattr(e.request, n)) for n in CATEGORICAL_FIELDS},
                                **time_categories(e.request.transaction_timestamp),
                                "customer_id": e.request.customer_id,
                            }
                            for e in decided
                        ],
                        [e.decision.unknown_fields for e in decided],
                        [e.decision.traffic_segment for e in decided],
                        [e.decision.business_decision == "approve" for e in decided],
                        scores=[e.decision.default_probability for e in decided],
                        times=times,
                    )
                ]
            self._log_windows(stream, version, monitor)
        if self.runs is not None and newest:
            self.runs.advance(newest)
        return findings

    def _log_windows(self, stream: str, version: str, monitor: DriftMonitor) -> None:
        """Hand the windows ``monitor`` closed to the MLflow runs (or drop them when those are off)."""
        closed = monitor.take_windows()
        if self.runs is None:
            return
        shards = len(self._shard_of)
        shard = self._shard_of.get(stream, 0)
        for stats in closed:
            self.runs.submit(version, stats.index * shards + shard, stats)

    async def _alert(self, version: str, finding: Finding) -> None:
        severity = "critical" if finding.kind in ("score_change", "approval_rate") else "warning"
        alert = Alert(
            alert_id=str(uuid_utils.uuid7()),
            alert_key=f"drift:{version}:{finding.key}",
            kind=finding.kind,
            severity=severity,
            model_name=self.registry.model_name,
            model_version=version,
            feature=finding.feature,
            statistic=finding.statistic,
            value=finding.value,
            threshold=finding.threshold,
            window=finding.window,
            first_seen=datetime.now(UTC).isoformat(),
            message=f"{finding.kind} on {finding.feature or 'the score'} of v{version}: {finding.statistic} "
            f"{finding.value:.4g} (threshold {finding.threshold:.4g}) {finding.detail}".strip(),
            runbook=RUNBOOKS.get(finding.kind, ""),
        )
        if not await raise_alert(self.redis, self.keys, alert, self.alert_settings.alert_cooldown_s):
            return  # same cause already alerted (by this or another worker) within the cooldown
        self.alerts_sent.append(alert.alert_key)
        log.warning("ALERT %s", alert.message)
