"""``create_app(settings)``: the aiohttp application. No I/O at import; every resource in its own cleanup context."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from app.auth import key_matches, presented_key
from app.keys import API, API_KEYS, BATCH, ENGINE, KEYS, METRICS, OPENAPI, OUTCOMES, PUBLISHER, REDIS, SETTINGS, WATCHER
from app.metrics import ApiMetrics
from app.openapi import openapi_document
from app.routes import JSON, add_routes
from app.validation import BatchDecoder, RequestError
from app.watcher import RegistryWatcher
from common.aio import cancel_and_wait
from common.redis_client import redis_for
from common.settings import Settings
from decision.engine import DecisionEngine
from producers.publisher import EventPublisher
from schemas.response import ErrorResponse

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ENCODER = msgspec.json.Encoder()


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = _ENCODER.encode(ErrorResponse(error=error, message=message))
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


@web.middleware
async def _front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, error mapping and request metrics in one middleware (each extra one costs a coroutine per request)."""
    started = time.perf_counter()
    app = request.app
    settings = app[API]
    resource = request.match_info.route.resource
    route = resource.canonical if resource else "unmatched"
    if (
        settings.auth_disabled
        or request.path in settings.open_paths
        or key_matches(presented_key(request), app[API_KEYS])
    ):
        try:
            response = await handler(request)
        except RequestError as exc:
            response = web.Response(
                status=exc.status, body=_ENCODER.encode(exc.body), content_type=JSON, headers=exc.headers
            )
            if exc.close:
                response.force_close()
        except web.HTTPException as exc:  # 404, 405 (with its Allow header) from the router
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, allow)
        except Exception:
            log.exception("unhandled error on %s", request.path)
            response = _error(500, "internal_error", "Internal error; the request was not decided")
    else:
        response = _error(
            401,
            "unauthorized",
            "A valid API key is required (X-API-Key or Authorization: Bearer)",
            {"WWW-Authenticate": 'Bearer realm="bnpl"'},
        )
    app[METRICS].observe_request(route, response.status, time.perf_counter() - started)
    return response


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    client = redis_for(app[SETTINGS].streams, role="api")
    app[REDIS] = client
    yield
    await client.aclose()


async def _publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    publisher = EventPublisher(app[REDIS], settings.keys, settings.publisher, settings.api.instance_id)
    app[PUBLISHER] = publisher
    publisher.start()
    yield
    await publisher.stop()


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    watcher = app[WATCHER]
    if app[ENGINE].models is None:
        await watcher.refresh()
    # Everything loaded so far (models, MLflow, numpy) lives for the whole process: keep it out of the cyclic
    # GC's generations, so collections triggered on the request path stay short (fewer latency spikes).
    gc.collect()
    gc.freeze()
    task = asyncio.create_task(watcher.run(), name="registry-watcher")
    yield
    await cancel_and_wait([task])


async def _control_ctx(app: web.Application) -> AsyncIterator[None]:
    """The emergency fallback switch: read before the first request, then every poll period."""
    watcher = app[WATCHER]
    await watcher.refresh_control(app[REDIS], app[KEYS])
    task = asyncio.create_task(watcher.run_control(app[REDIS], app[KEYS]), name="fallback-switch")
    yield
    await cancel_and_wait([task])


def create_app(
    settings: Settings, engine: DecisionEngine | None = None, watch_registry: bool = True
) -> web.Application:
    """Build the app. ``engine`` may come pre-loaded (tests, benchmarks); ``watch_registry`` polls MLflow."""
    api = settings.api
    if not api.auth_disabled and not api.api_keys:
        raise ValueError("no API keys configured: set BNPL_API_KEYS (or BNPL_AUTH_DISABLED=true for local use)")
    # lingering_time=0: a body left unread (401, 413, 408) is not drained for seconds afterwards; the
    # connection closes right after the answer, so stalled or oversized bodies hold nothing open.
    app = web.Application(
        middlewares=[_front_door], client_max_size=api.max_body_bytes, handler_args={"lingering_time": 0.0}
    )
    app[SETTINGS] = settings
    app[API] = api
    app[BATCH] = BatchDecoder(api.batch_max, api.max_json_depth)
    app[OUTCOMES] = BatchDecoder.for_outcomes(settings.performance.outcomes_batch_max, api.max_json_depth)
    app[KEYS] = settings.keys
    app[API_KEYS] = tuple(key.encode() for key in api.api_keys)
    app[ENGINE] = engine or DecisionEngine(instance_id=api.instance_id)
    app[METRICS] = ApiMetrics(lambda: app.get(PUBLISHER))
    app[WATCHER] = RegistryWatcher(settings.registry, app[ENGINE], app[METRICS])
    app[OPENAPI] = openapi_document(api.batch_max, settings.performance.outcomes_batch_max)
    models = app[ENGINE].models
    app[METRICS].set_models([(m.alias, m.version, m.family) for m in models.models] if models else [])
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_publisher_ctx)
    app.cleanup_ctx.append(_control_ctx)
    if watch_registry:
        app.cleanup_ctx.append(_registry_ctx)
    add_routes(app)
    return app
