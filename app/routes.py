"""Thin handlers: read the body, decode, call the engine, enqueue the event, encode the response."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from app.auth import key_matches, presented_key
from app.keys import API, API_KEYS, BATCH, ENGINE, KEYS, METRICS, OPENAPI, OUTCOMES, PUBLISHER, REDIS, WATCHER
from app.validation import RequestError, decode_request
from common.settings import ApiSettings
from decision.policy import FALLBACK_POLICY, THRESHOLD_POLICY
from producers.errors import classify
from producers.outcomes import outcome_events, publish_outcomes
from schemas.outcomes import OutcomeAccepted
from schemas.response import BatchResponse

_ENCODER = msgspec.json.Encoder()
JSON = "application/json"
_JSON_HEADERS = {"Content-Type": JSON}  # cheaper for aiohttp than content_type=, which parses it per response


def _check_content_type(request: web.Request) -> None:
    """JSON bodies only: ``application/json`` or ``application/*+json`` (UTF-8), or no Content-Type at all."""
    given = request.headers.get("Content-Type")
    if given is None or given == JSON:  # the common cases, without parsing the header
        return
    media = request.content_type
    charset = (request.charset or "").lower() or None
    if (media == JSON or (media.startswith("application/") and media.endswith("+json"))) and charset in (
        None,
        "utf-8",
        "utf8",
    ):
        return
    raise RequestError(
        415, "unsupported_media_type", "Send the body as application/json (UTF-8)", headers={"Accept": JSON}
    )


async def _body(request: web.Request, api: ApiSettings) -> bytes:
    """The whole body, within ``max_body_bytes`` (413) and ``read_timeout_s`` (408, connection closed)."""
    _check_content_type(request)
    limit = api.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise RequestError(413, "body_too_large", f"Request body exceeds {limit} bytes")
    try:
        if request.content.is_eof():  # the whole body is here already (the common case): no timer needed
            return await request.read()
        async with asyncio.timeout(api.read_timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(413, "body_too_large", f"Request body exceeds {limit} bytes") from None
    except TimeoutError:
        raise RequestError(
            408, "request_timeout", f"Request body not received within {api.read_timeout_s:g}s", close=True
        ) from None


async def assess(request: web.Request) -> web.Response:
    """POST /v1/bnpl/risk-assessment."""
    started = time.perf_counter()
    app = request.app
    api = app[API]
    decided = decode_request(await _body(request, api), api.max_json_depth)
    response, event = app[ENGINE].decide(decided, started)
    app[PUBLISHER].publish(event)
    app[METRICS].observe_decision(
        response.business_decision, response.traffic_segment, response.model_version, response.unknown_fields
    )
    return web.Response(body=_ENCODER.encode(response), headers=_JSON_HEADERS)


async def assess_batch(request: web.Request) -> web.Response:
    """POST /v1/bnpl/risk-assessment/batch: up to ``batch_max`` requests, decided in order."""
    started = time.perf_counter()
    app = request.app
    items = app[BATCH].decode(await _body(request, app[API]))
    engine, publisher, metrics = app[ENGINE], app[PUBLISHER], app[METRICS]
    results = []
    for item in items:
        response, event = engine.decide(item, started)
        publisher.publish(event)
        metrics.observe_decision(
            response.business_decision, response.traffic_segment, response.model_version, response.unknown_fields
        )
        results.append(response)
    return web.Response(body=_ENCODER.encode(BatchResponse(results=results)), headers=_JSON_HEADERS)


async def outcomes(request: web.Request) -> web.Response:
    """POST /v1/bnpl/outcomes: up to ``outcomes_batch_max`` loan outcomes; 202 once all are in the outcome stream,
    503 (retry) when Redis cannot take them. Re-sending is safe: the same outcome lands once."""
    app = request.app
    items = app[OUTCOMES].decode(await _body(request, app[API]))
    events = outcome_events(items, "api")
    try:
        await publish_outcomes(app[REDIS], app[KEYS], events)
    except (RedisError, OSError) as exc:
        raise RequestError(
            503,
            "outcomes_unavailable",
            f"Outcomes could not be stored ({classify(exc)}: {type(exc).__name__}); nothing was kept, send them again",
            headers={"Retry-After": "5"},
        ) from None
    body = OutcomeAccepted(accepted=len(events), outcome_ids=[e.outcome_id for e in events])
    return web.Response(status=202, body=_ENCODER.encode(body), headers=_JSON_HEADERS)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: ``ready``, or ``degraded`` with reasons — the rule-based fallback decides (no model loaded, or
    the emergency switch is on: ``fallback: …``), the active experiment cannot be applied, or events are not
    reaching Redis (spooled, queued too deep, stalled). 200 either way; 503 when degraded and ``?strict=1``.

    Without a valid API key the answer holds states only; with one it adds the details (which API process answered,
    errors with credentials redacted, queue and spool sizes)."""
    app = request.app
    models = app[ENGINE].models
    watcher, publisher = app[WATCHER], app[PUBLISHER]
    publishing = publisher.health()
    reasons = [] if models is not None else ["no model could be loaded: the rule-based fallback decides"]
    if watcher.fallback is not None:
        reasons.append(f"fallback: {watcher.fallback.describe()}")
    if models is not None and models.experiment_problem:
        reasons.append(models.experiment_problem)
    reasons += publishing.reasons
    body: dict[str, Any] = {
        "status": "degraded" if reasons else "ready",
        "reasons": reasons,
        "decision_policy": THRESHOLD_POLICY if models and watcher.fallback is None else FALLBACK_POLICY,
        "models": {
            m.alias: {"version": m.version, "family": m.family, "scorer": m.scorer.kind}
            for m in (models.models if models else ())
        },
        "registry": "error" if watcher.last_error else "ok",
        "events": "ok" if publishing.ok else "degraded",
    }
    if key_matches(presented_key(request), app[API_KEYS]):
        body["detail"] = {
            "instance": app[ENGINE].instance_id,
            "experiment": models.experiment.name if models and models.experiment else None,
            "registry_error": watcher.last_error,
            "redis_ok": publisher.redis_ok,
            "publish_error": publisher.last_error,
            "seconds_since_publish": round(publishing.seconds_since_success, 3),
            "spool_pending_bytes": publisher.spool.pending_bytes,
            "event_queue_depth": publisher.queue_depth,
        }
    strict = request.query.get("strict") in ("1", "true")
    return web.json_response(body, status=503 if reasons and strict else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    return web.Response(
        body=generate_latest(request.app[METRICS].registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/bnpl/risk-assessment", assess)
    app.router.add_post("/v1/bnpl/risk-assessment/batch", assess_batch)
    app.router.add_post("/v1/bnpl/outcomes", outcomes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
