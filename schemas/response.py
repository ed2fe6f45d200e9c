"""Responses of the decision API, and the decision record they are made of.

:class:`RiskAssessmentResponse` **is the decision record**: the API answers with it, and the prediction event embeds
it unchanged (``schemas.events``), so the API, the warehouse and every consumer group speak one vocabulary: the
original service's field names (``business_decision``, ``traffic_segment``, ``all_predictions`` …).
"""

from __future__ import annotations

from typing import Literal

import msgspec

RESPONSE_SCHEMA_VERSION = 1

Decision = Literal["approve", "manual_review", "deny"]
RiskLevel = Literal["LOW", "MEDIUM", "HIGH"]
DeploymentMode = Literal["ab_test", "champion", "fallback"]


class ReasonCode(msgspec.Struct, frozen=True):
    """Why a request was not simply approved: a policy rule, or a feature that pushed the score up."""

    code: str
    #: Request field the reason is about.
    field: str
    #: Log-odds pushed up by this field for the deciding model (None for policy rules).
    contribution: float | None = None
    #: What the applicant reads (``schemas.reasons.REASON_STATEMENTS``); empty in events of older versions.
    statement: str = ""


class RiskAssessmentResponse(msgspec.Struct, kw_only=True):
    """The decision for one request: the API's answer and the ``decision`` of its prediction event."""

    schema_version: int = RESPONSE_SCHEMA_VERSION
    #: Time-ordered unique id (UUIDv7) of this decision; also the id of its event.
    prediction_id: str
    transaction_id: str
    #: When the decision was made (UTC, ISO-8601).
    assessment_timestamp: str
    business_decision: Decision
    risk_level: RiskLevel
    #: Default probability of the deciding model (null when the rule-based fallback decided).
    default_probability: float | None
    #: Family of the deciding model (e.g. ``hgb``), or ``rules`` for the fallback.
    selected_model: str
    #: Registry version of the deciding model (null for the fallback).
    model_version: str | None
    #: Registry alias of the deciding model (null for the fallback).
    model_alias: str | None
    #: Family of the champion model.
    champion_model: str | None
    #: Score of every loaded model on this request (shadow scoring), by alias.
    all_predictions: dict[str, float]
    #: Registry version of every loaded model, by alias.
    model_versions: dict[str, str]
    experiment_id: str | None
    experiment_name: str | None
    #: A/B arm of this customer (``champion`` without an experiment, ``fallback`` without models).
    traffic_segment: str
    deployment_mode: DeploymentMode
    decision_policy: str
    #: Thresholds of the deciding model on the default-probability scale.
    risk_thresholds: dict[str, float]
    #: Up to 4 reasons for manual_review/deny (policy rules first, then top feature contributions).
    reason_codes: list[ReasonCode]
    #: Categorical fields whose value the models never saw (scored with the explicit unknown encoding).
    unknown_fields: list[str]
    processing_time_ms: float
    model_inference_time_ms: float


class BatchResponse(msgspec.Struct, kw_only=True):
    """Decisions for a batch, in request order."""

    results: list[RiskAssessmentResponse]


class FieldError(msgspec.Struct, frozen=True):
    """One invalid field: a JSON path (``$.amount``, ``$.requests[3].risk_score``) and what is wrong."""

    path: str
    message: str


class ErrorResponse(msgspec.Struct, kw_only=True):
    """Every 4xx/5xx body: a stable machine code, a human message, and the invalid fields (422)."""

    error: str
    message: str
    fields: list[FieldError] = msgspec.field(default_factory=list)
