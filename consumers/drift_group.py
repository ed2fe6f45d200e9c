"""The drift group: per model version, a :class:`DriftMonitor` against the version's reference profile.

Every score of every loaded version (shadow scores included) feeds that version's score detectors; requests feed the
detectors of the version that decided them. Findings become alerts on ``<prefix>:alerts``, at most one per cause
(``drift:<version>:<kind>:<feature>``) per cooldown: ``SET NX`` with a TTL, so several workers and restarts never
double-alert. Detector state is pickled to Redis per worker slot (``BNPL_WORKER_INDEX``) every few seconds and on
stop, so a restarted worker resumes where it was.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import uuid_utils

from common.settings import Settings
from consumers.base import BatchResult, Entry, decode_entries
from drift.monitor import DriftConfig, DriftMonitor, Finding
from features.spec import CATEGORICAL_FIELDS, normalize_category
from schemas.alerts import Alert

log = logging.getLogger(__name__)

RUNBOOKS = {
    "score_change": "Score distribution moved: compare feature drift alerts, check upstream data, consider retraining.",
    "score_psi": "Score distribution moved: compare feature drift alerts, check upstream data, consider retraining.",
    "feature_psi": "An input's distribution moved: check the upstream source and the traffic mix.",
    "categorical_psi": "Category mix moved: check marketing/traffic changes; retrain if it persists.",
    "unknown_category_rate": "A value the models never saw is frequent: add it to training data and retrain.",
    "approval_rate": "Approval rate moved: check the policy thresholds and the score alerts before acting.",
}


class _SlimRequest(msgspec.Struct):
    amount: float
    customer_tenure_days: int
    device_is_trusted: bool
    risk_score: float
    installment_count: int
    payment_credit_limit: float
    price_comparison_time: float
    customer_credit_score_range: str
    customer_age_bracket: str
    customer_income_bracket: str
    customer_verification_level: str
    product_risk_category: str
    risk_level: str
    device_type: str
    payment_provider: str
    product_category: str
    purchase_context: str
    risk_scenario: str


class _SlimEvent(msgspec.Struct):
    """Only what the detectors read: the 36-feature array is skipped (the watched numbers are in the request),
    which makes decoding about twice as cheap."""

    request: _SlimRequest
    unknown_fields: list[str]
    model_name: str | None
    scores: dict[str, float]
    model_versions: dict[str, str]
    selected_version: str | None
    arm: str
    decision: str


_DECODER = msgspec.json.Decoder(_SlimEvent)
_NORMALIZED: dict[str, str] = {}


def _normalized(value: str) -> str:
    """``normalize_category`` with a cache (the same few values repeat millions of times)."""
    found = _NORMALIZED.get(value)
    if found is None:
        found = normalize_category(value)
        if len(_NORMALIZED) < 10_000:
            _NORMALIZED[value] = found
    return found


class DriftHandler:
    group = "drift"

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        config: DriftConfig | None = None,
        slot: str = "0",
        checkpoint_every_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.config = config or DriftConfig(
            window=settings.drift_window,
            feature_psi=settings.drift_psi,
            categorical_psi=settings.drift_psi,
            score_psi=settings.drift_psi,
            unknown_rate=settings.drift_unknown_rate,
            approval_z=settings.drift_approval_z,
            adwin_delta=settings.drift_adwin_delta,
        )
        self.slot = slot
        self.checkpoint_every_s = checkpoint_every_s
        self.monitors: dict[str, DriftMonitor] = {}
        self.alerts_sent: list[str] = []
        self._last_checkpoint = 0.0
        self._client: Any = None

    @property
    def _state_key(self) -> str:
        return f"{self.settings.key_prefix}:drift:state:{self.slot}"

    async def start(self) -> None:
        raw = await self.redis.get(self._state_key)
        if raw:
            self.monitors = pickle.loads(raw)  # noqa: S301 - written by this group
            log.info("drift slot %s resumed %d monitor(s) from its checkpoint", self.slot, len(self.monitors))

    async def close(self) -> None:
        await self.checkpoint()

    async def checkpoint(self) -> None:
        await self.redis.set(self._state_key, pickle.dumps(self.monitors), ex=30 * 86_400)
        self._last_checkpoint = time.monotonic()

    def _load_profile(self, model_name: str, version: str) -> dict[str, Any]:
        from registry.store import _as_registered, mlflow_client, read_profile

        if self._client is None:
            self._client = mlflow_client(self.settings)
        return read_profile(_as_registered(self._client.get_model_version(model_name, version), None))

    async def _monitor(self, model_name: str | None, version: str) -> DriftMonitor | None:
        monitor = self.monitors.get(version)
        if monitor is None and model_name:
            profile = await asyncio.to_thread(self._load_profile, model_name, version)
            monitor = self.monitors[version] = DriftMonitor(version, profile, self.config)
        return monitor

    async def handle(self, entries: list[Entry]) -> BatchResult:
        decoded, failed = decode_entries(entries, _DECODER.decode)
        scores: dict[str, list[float]] = {}
        requests: dict[str, list[_SlimEvent]] = {}
        names: dict[str, str | None] = {}
        for _, event in decoded:
            for alias, score in event.scores.items():
                version = event.model_versions[alias]
                scores.setdefault(version, []).append(score)
                names[version] = event.model_name
            if event.selected_version is not None:
                requests.setdefault(event.selected_version, []).append(event)
        findings: list[tuple[str, Finding]] = []
        for version in sorted(set(scores) | set(requests)):
            monitor = await self._monitor(names.get(version), version)
            if monitor is None:
                continue
            findings += [(version, f) for f in monitor.observe_scores(scores.get(version, []))]
            decided = requests.get(version, [])
            if decided:
                findings += [
                    (version, f)
                    for f in monitor.observe_requests(
                        [[float(getattr(e.request, n)) for n in self.config.numeric_features] for e in decided],
                        [{n: _normalized(getattr(e.request, n)) for n in CATEGORICAL_FIELDS} for e in decided],
                        [e.unknown_fields for e in decided],
                        [e.arm for e in decided],
                        [e.decision == "approve" for e in decided],
                    )
                ]
        for version, finding in findings:
            await self._alert(version, finding)
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_every_s:
            await self.checkpoint()
        return BatchResult(failed)

    async def _alert(self, version: str, finding: Finding) -> None:
        key = f"drift:{version}:{finding.key}"
        fresh = await self.redis.set(
            f"{self.settings.key_prefix}:alerted:{key}", 1, nx=True, ex=self.settings.alert_cooldown_s
        )
        if not fresh:
            return  # same cause already alerted (by this or another worker) within the cooldown
        severity = "critical" if finding.kind in ("score_change", "approval_rate") else "warning"
        alert = Alert(
            alert_id=str(uuid_utils.uuid7()),
            alert_key=key,
            kind=finding.kind,
            severity=severity,
            model_name=self.settings.model_name,
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
        await self.redis.xadd(
            self.settings.keys.alerts(), {"v": 1, "id": alert.alert_id, "e": msgspec.json.encode(alert)}
        )
        self.alerts_sent.append(key)
        log.warning("ALERT %s", alert.message)
