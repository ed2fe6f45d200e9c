"""The prediction event: everything the consumer groups need, versioned, one JSON object per stream entry.

Stream entry fields: ``v`` (schema version), ``id`` (prediction_id) and ``e`` (this struct as JSON). No PII beyond the
opaque ids the client already sends.
"""

from __future__ import annotations

import msgspec

from schemas.request import RiskAssessmentRequest
from schemas.response import Decision, DeploymentMode, RiskLevel

PREDICTION_EVENT_VERSION = 1


class PredictionEvent(msgspec.Struct, kw_only=True):
    """One decision, as published to the prediction stream."""

    schema_version: int = PREDICTION_EVENT_VERSION
    prediction_id: str
    #: Decision time, UTC ISO-8601 with milliseconds.
    event_time: str
    #: The request exactly as validated.
    request: RiskAssessmentRequest
    #: The 36 features in ``features.spec.FEATURE_NAMES`` order.
    features: list[float]
    unknown_fields: list[str]
    model_name: str | None
    #: Score of every loaded model, by alias (shadow scoring).
    scores: dict[str, float]
    #: Registry version of every loaded model, by alias.
    model_versions: dict[str, str]
    selected_alias: str | None
    selected_version: str | None
    #: Family of the deciding model (e.g. ``hgb``), ``rules`` for the fallback (response: ``selected_model``).
    selected_model: str
    experiment_id: str | None
    experiment_name: str | None
    arm: str
    deployment_mode: DeploymentMode
    decision: Decision
    #: LOW / MEDIUM / HIGH of the decision (the request's own ``risk_level`` is under ``request``).
    decision_risk_level: RiskLevel
    default_probability: float | None
    decision_policy: str
    thresholds: dict[str, float]
    reason_codes: list[str]
    processing_time_ms: float
    inference_time_ms: float
    api_instance: str
