"""The prediction event: the decision record exactly as answered, plus what the consumer groups need besides.

Version 2 embeds the decision (:class:`schemas.response.RiskAssessmentResponse`, the response's own names) with the
validated request, the 36 features, the registered model name and the API instance. Stream entries carry the
version in their ``v`` field (``common.keys``); version 1 events (flat, with other names) still decode:
:func:`decode_event` upgrades them. No PII beyond the opaque ids the client already sends.

Groups decode only what they read: :func:`projection` builds a struct of some fields from these definitions (types
included), which msgspec decodes without touching the rest.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from schemas.reasons import field_of_code
from schemas.request import RiskAssessmentRequest
from schemas.response import Decision, DeploymentMode, ReasonCode, RiskAssessmentResponse, RiskLevel

PREDICTION_EVENT_VERSION: Final = 2


class PredictionEvent(msgspec.Struct, kw_only=True):
    """One decision, as published to the prediction stream (version 2)."""

    schema_version: int = PREDICTION_EVENT_VERSION
    #: The decision exactly as the API answered it.
    decision: RiskAssessmentResponse
    #: The request exactly as validated.
    request: RiskAssessmentRequest
    #: The 36 features in ``features.spec.FEATURE_NAMES`` order.
    features: list[float]
    #: Registered model the versions in ``decision.model_versions`` belong to (None: rule-based fallback).
    model_name: str | None
    api_instance: str

    @property
    def prediction_id(self) -> str:
        return self.decision.prediction_id


class PredictionEventV1(msgspec.Struct, kw_only=True):
    """Version 1 of the event (flat, with names of its own); decoded only to be upgraded."""

    schema_version: int = 1
    prediction_id: str
    event_time: str
    request: RiskAssessmentRequest
    features: list[float]
    unknown_fields: list[str]
    model_name: str | None
    scores: dict[str, float]
    model_versions: dict[str, str]
    selected_alias: str | None
    selected_version: str | None
    selected_model: str
    experiment_id: str | None
    experiment_name: str | None
    arm: str
    deployment_mode: DeploymentMode
    decision: Decision
    decision_risk_level: RiskLevel
    default_probability: float | None
    decision_policy: str
    thresholds: dict[str, float]
    reason_codes: list[str]
    processing_time_ms: float
    inference_time_ms: float
    api_instance: str


def upgrade_v1(old: PredictionEventV1) -> PredictionEvent:
    """The version 2 event of a version 1 event (``champion_model`` was not recorded: None; reason codes get
    their field from the catalogue, without contributions)."""
    return PredictionEvent(
        decision=RiskAssessmentResponse(
            prediction_id=old.prediction_id,
            transaction_id=old.request.transaction_id,
            assessment_timestamp=old.event_time,
            business_decision=old.decision,
            risk_level=old.decision_risk_level,
            default_probability=old.default_probability,
            selected_model=old.selected_model,
            model_version=old.selected_version,
            model_alias=old.selected_alias,
            champion_model=None,
            all_predictions=old.scores,
            model_versions=old.model_versions,
            experiment_id=old.experiment_id,
            experiment_name=old.experiment_name,
            traffic_segment=old.arm,
            deployment_mode=old.deployment_mode,
            decision_policy=old.decision_policy,
            risk_thresholds=old.thresholds,
            reason_codes=[ReasonCode(code, field_of_code(code)) for code in old.reason_codes],
            unknown_fields=old.unknown_fields,
            processing_time_ms=old.processing_time_ms,
            model_inference_time_ms=old.inference_time_ms,
        ),
        request=old.request,
        features=old.features,
        model_name=old.model_name,
        api_instance=old.api_instance,
    )


_V1: Final = msgspec.json.Decoder(PredictionEventV1)
_ENCODER: Final = msgspec.json.Encoder()


def upgrade_payload(version: int, payload: bytes) -> bytes:
    """A payload in the current version's layout (version 1 payloads are decoded, upgraded, re-encoded)."""
    if version == 1:
        return _ENCODER.encode(upgrade_v1(_V1.decode(payload)))
    return payload


class EventDecoder:
    """Decodes prediction-event payloads of any supported version into ``type_`` (the full event or a
    :func:`projection`). Raises ``ValueError`` for what cannot be decoded (msgspec errors are ValueErrors)."""

    def __init__(self, type_: type[Any] = PredictionEvent) -> None:
        self._decode: Callable[[bytes], Any] = msgspec.json.Decoder(type_).decode

    def decode(self, version: int, payload: bytes) -> Any:
        if version == PREDICTION_EVENT_VERSION:
            return self._decode(payload)
        if version != 1:
            raise ValueError(f"prediction event version {version} is not supported")
        return self._decode(upgrade_payload(version, payload))


def decode_event(version: int, payload: bytes) -> PredictionEvent:
    """The full event of a payload of any supported version."""
    event: PredictionEvent = EventDecoder().decode(version, payload)
    return event


def _sub(name: str, struct: type[msgspec.Struct], names: Sequence[str]) -> type[msgspec.Struct]:
    hints = typing.get_type_hints(struct, include_extras=True)
    unknown = set(names) - set(hints)
    if unknown:
        raise ValueError(f"{struct.__name__} has no field(s) {sorted(unknown)}")
    return msgspec.defstruct(name, [(n, hints[n]) for n in names], kw_only=True, gc=False)


def projection(
    name: str, *, decision: Sequence[str] = (), request: Sequence[str] = (), event: Sequence[str] = ()
) -> type[msgspec.Struct]:
    """A struct reading only some fields of a prediction event, with the types these definitions give them.

    >>> Slim = projection("Slim", decision=["business_decision"], request=["amount"])
    >>> slim = msgspec.json.decode(b'{"decision": {"business_decision": "deny", "x": 1}, "request": {"amount": 5.0}}',
    ...                            type=Slim)
    >>> slim.decision.business_decision, slim.request.amount
    ('deny', 5.0)
    """
    fields: list[tuple[str, Any]] = []
    if decision:
        fields.append(("decision", _sub(f"{name}Decision", RiskAssessmentResponse, decision)))
    if request:
        fields.append(("request", _sub(f"{name}Request", RiskAssessmentRequest, request)))
    hints = typing.get_type_hints(PredictionEvent, include_extras=True)
    fields += [(n, hints[n]) for n in event]
    # gc=False: a consumer holds thousands of decoded events per batch; they hold no cycles, so the cyclic
    # collector need not track (and re-scan) them.
    return msgspec.defstruct(name, fields, kw_only=True, gc=False)
