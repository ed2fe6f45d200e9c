"""Synthetic prediction events straight onto a stream (benchmarks, tests): the same entries the API publishes."""

from __future__ import annotations

from typing import Any

import msgspec

from common.keys import encode_entry
from datagen import generate
from decision.engine import DecisionEngine
from schemas import PREDICTION_EVENT_VERSION, PredictionEvent, parse_request
from schemas.codec import EVENT_CODEC, compress
from schemas.events import PredictionEventV1


def make_events(n: int, seed: int = 0, engine: DecisionEngine | None = None) -> list[PredictionEvent]:
    """``n`` real prediction events (the rule-based fallback decides unless an engine with models is given)."""
    engine = engine or DecisionEngine(None)
    data = generate(n, seed=seed)
    return [engine.decide(parse_request(data.request(i)))[1] for i in range(n)]


async def add_events(
    redis: Any,
    stream: str,
    events: list[PredictionEvent],
    poison_at: set[int] | None = None,
    version: int = PREDICTION_EVENT_VERSION,
    encode: Any = None,
    codec: str = EVENT_CODEC,
) -> list[str]:
    """XADD the events with the publisher's entry layout (compressed with ``codec``; ``""``: plain JSON); entries
    at ``poison_at`` get malformed JSON. ``version``/``encode`` write events of another schema version."""
    encode = encode or msgspec.json.Encoder().encode
    ids: list[str] = []
    for start in range(0, len(events), 1_000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1_000, len(events))):
                poison = poison_at is not None and i in poison_at
                document = b'{"prediction_id": 42, "broken": ' if poison else encode(events[i])
                payload = compress(document) if codec else document
                pipe.xadd(stream, encode_entry(events[i].prediction_id, payload, version, codec))
            ids += [x.decode() for x in await pipe.execute()]
    return ids


def as_v1(event: PredictionEvent) -> PredictionEventV1:
    """``event`` as the previous version of the API published it."""
    d = event.decision
    return PredictionEventV1(
        prediction_id=d.prediction_id,
        event_time=d.assessment_timestamp,
        request=event.request,
        features=event.features,
        unknown_fields=d.unknown_fields,
        model_name=event.model_name,
        scores=d.all_predictions,
        model_versions=d.model_versions,
        selected_alias=d.model_alias,
        selected_version=d.model_version,
        selected_model=d.selected_model,
        experiment_id=d.experiment_id,
        experiment_name=d.experiment_name,
        arm=d.traffic_segment,
        deployment_mode=d.deployment_mode,
        decision=d.business_decision,
        decision_risk_level=d.risk_level,
        default_probability=d.default_probability,
        decision_policy=d.decision_policy,
        thresholds=d.risk_thresholds,
        reason_codes=[r.code for r in d.reason_codes],
        processing_time_ms=d.processing_time_ms,
        inference_time_ms=d.model_inference_time_ms,
        api_instance=event.api_instance,
    )
