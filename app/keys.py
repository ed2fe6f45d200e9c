"""Typed application keys for the resources shared by handlers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from app.metrics import ApiMetrics
from app.validation import BatchDecoder
from app.watcher import RegistryWatcher
from common.keys import Keys
from common.settings import ApiSettings, Settings
from decision.engine import DecisionEngine
from producers.publisher import EventPublisher

#: The whole configuration: read only by the cleanup contexts that build resources (each takes its section).
SETTINGS = web.AppKey("settings", Settings)
#: What the handlers read on every request.
API = web.AppKey("api", ApiSettings)
BATCH = web.AppKey("batch", BatchDecoder)
OUTCOMES = web.AppKey("outcomes", BatchDecoder)
KEYS = web.AppKey("keys", Keys)
ENGINE = web.AppKey("engine", DecisionEngine)
PUBLISHER = web.AppKey("publisher", EventPublisher)
METRICS = web.AppKey("metrics", ApiMetrics)
WATCHER = web.AppKey("watcher", RegistryWatcher)
REDIS: web.AppKey[Redis] = web.AppKey("redis")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
#: The configured API keys, encoded once for constant-time comparison.
API_KEYS: web.AppKey[tuple[bytes, ...]] = web.AppKey("api_keys")
