"""Thin handlers: read the body, decode, call the engine, enqueue the event, encode the response."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.keys import API, BATCH, ENGINE, METRICS, OPENAPI, PUBLISHER, WATCHER
from app.validation import RequestError, decode_request
from decision.policy import FALLBACK_POLICY, THRESHOLD_POLICY
from schemas.response import BatchResponse

_ENCODER = msgspec.json.Encoder()
JSON = "application/json"
_JSON_HEADERS = {"Content-Type": JSON}  # cheaper for aiohttp than content_type=, which parses it per response


async def _body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise RequestError(413, "body_too_large", f"Request body exceeds {limit} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(413, "body_too_large", f"Request body exceeds {limit} bytes") from None


async def assess(request: web.Request) -> web.Response:
    """POST /v1/bnpl/risk-assessment."""
    started = time.perf_counter()
    app = request.app
    decided = decode_request(await _body(request, app[API].max_body_bytes))
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
    items = app[BATCH].decode(await _body(request, app[API].max_body_bytes))
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


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: ``ready`` with models, ``degraded`` on the rule-based fallback (503 only with ``?strict=1``)."""
    app = request.app
    models = app[ENGINE].models
    watcher, publisher = app[WATCHER], app[PUBLISHER]
    status = "ready" if models is not None else "degraded"
    body = {
        "status": status,
        "decision_policy": THRESHOLD_POLICY if models else FALLBACK_POLICY,
        "models": {
            m.alias: {"version": m.version, "family": m.family, "scorer": m.scorer.kind}
            for m in (models.models if models else ())
        },
        "experiment": models.experiment.name if models and models.experiment else None,
        "registry_error": watcher.last_error,
        "redis_ok": publisher.redis_ok,
        "spool_pending_bytes": publisher.spool.pending_bytes,
        "event_queue_depth": publisher.queue_depth,
    }
    code = 503 if status != "ready" and request.query.get("strict") in ("1", "true") else 200
    return web.json_response(body, status=code)


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
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
