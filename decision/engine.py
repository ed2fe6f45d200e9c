"""The decision engine: validated request → features → every model (shadow) → arm → policy → decision record.

The record is the API's response; the prediction event embeds the same object (no second copy of its fields).

Pure CPU, no I/O: the API handlers, benchmarks, simulator and demo call it directly.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import uuid_utils

from decision.models import ModelSet
from decision.policy import FALLBACK_POLICY, RISK_LEVEL_OF, THRESHOLD_POLICY, fallback_policy, threshold_policy
from decision.reasons import top_reasons
from features import featurize
from schemas.events import PredictionEvent
from schemas.request import RiskAssessmentRequest
from schemas.response import DeploymentMode, ReasonCode, RiskAssessmentResponse

MAX_REASONS = 4


class _UtcClock:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for now; the part up to the second is formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now_iso(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._second = second
        return f"{self._prefix}{int((now - second) * 1000):03d}Z"


_now_iso = _UtcClock().now_iso


class DecisionEngine:
    """Decides requests with the current :class:`ModelSet`; :meth:`swap` replaces it atomically."""

    def __init__(self, models: ModelSet | None = None, instance_id: str = "api-1") -> None:
        self._models = models
        self.instance_id = instance_id
        #: Why the emergency fallback decides although models are loaded (None: models decide).
        self.fallback_reason: str | None = None

    @property
    def models(self) -> ModelSet | None:
        return self._models

    def swap(self, models: ModelSet | None) -> None:
        """Install a new snapshot; requests already running finish with the old one."""
        self._models = models

    def decide(
        self, request: RiskAssessmentRequest, started: float | None = None
    ) -> tuple[RiskAssessmentResponse, PredictionEvent]:
        """Decide one request. ``started`` is the ``perf_counter()`` when the request arrived (for timings)."""
        started = time.perf_counter() if started is None else started
        models = self._models  # one snapshot for the whole request
        feats = featurize(request)
        x = feats.vector
        scores: dict[str, float] = {}
        versions: dict[str, str] = {}
        reasons: list[ReasonCode]
        inference_start = time.perf_counter()
        if models is not None:  # every model scores, also while the emergency fallback decides (shadow)
            for model in models.models:
                scores[model.alias] = model.scorer.score(x)
            versions = models.versions
        inference_ms = (time.perf_counter() - inference_start) * 1000.0
        if models is None or self.fallback_reason is not None:
            outcome = fallback_policy(request)
            probability = None
            family, alias, version, arm, policy = "rules", None, None, "fallback", FALLBACK_POLICY
            thresholds: dict[str, float] = {}
            mode: DeploymentMode = "fallback"
            reasons = list(outcome.rules)
            champion_family = None
            experiment = None
        else:
            experiment = models.experiment
            champion = models.models[0]
            arm = experiment.assign(request.customer_id) if experiment else champion.alias
            deciding = models.by_alias.get(experiment.model_for(arm) if experiment else arm, champion)
            mode = "ab_test" if experiment else "champion"
            probability = scores[deciding.alias]
            outcome = threshold_policy(probability, deciding.review, deciding.deny, request)
            reasons = list(outcome.rules)
            if outcome.decision != "approve" and len(reasons) < MAX_REASONS:
                contributions = deciding.scorer.contributions(x)
                if contributions is not None:
                    reasons += top_reasons(contributions, MAX_REASONS - len(reasons), at_least_one=not reasons)
            family, alias, version = deciding.family, deciding.alias, deciding.version
            thresholds, policy = deciding.thresholds, THRESHOLD_POLICY
            champion_family = champion.family
        decision = outcome.decision
        prediction_id = str(uuid_utils.uuid7())
        timestamp = _now_iso()
        processing_ms = (time.perf_counter() - started) * 1000.0
        response = RiskAssessmentResponse(
            prediction_id=prediction_id,
            transaction_id=request.transaction_id,
            assessment_timestamp=timestamp,
            business_decision=decision,
            risk_level=RISK_LEVEL_OF[decision],
            default_probability=probability,
            selected_model=family,
            model_version=version,
            model_alias=alias,
            champion_model=champion_family,
            all_predictions=scores,
            model_versions=versions,
            experiment_id=experiment.experiment_id if experiment else None,
            experiment_name=experiment.name if experiment else None,
            traffic_segment=arm,
            deployment_mode=mode,
            decision_policy=policy,
            risk_thresholds=thresholds,
            reason_codes=reasons,
            unknown_fields=list(feats.unknown_fields),
            processing_time_ms=round(processing_ms, 4),
            model_inference_time_ms=round(inference_ms, 4),
        )
        event = PredictionEvent(
            decision=response,
            request=request,
            features=feats.values,
            model_name=models.champion.name if models else None,
            api_instance=self.instance_id,
        )
        return response, event
