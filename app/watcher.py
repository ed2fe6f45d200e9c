"""Keeps the engine's models in step with the registry: polls aliases and the active experiment, swaps atomically.

Everything touching MLflow runs in a worker thread; the event loop only awaits it. A new version is loaded,
verified and warmed up *before* the swap, so no request ever waits for or fails during a change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.metrics import ApiMetrics
from common.keys import Keys
from common.redact import redact_text
from common.settings import RegistrySettings
from decision.engine import DecisionEngine
from governance.fallback import FallbackState, read_state
from registry.loader import build_model_set, registry_pointers

log = logging.getLogger(__name__)


class RegistryWatcher:
    """Polls ``settings.model_aliases`` and the active experiment every ``registry_poll_seconds``."""

    def __init__(self, settings: RegistrySettings, engine: DecisionEngine, metrics: ApiMetrics) -> None:
        self._settings = settings
        self._engine = engine
        self._metrics = metrics
        self._client: Any = None
        self.last_error: str | None = None
        self.last_refresh: float | None = None
        self.swaps = 0
        #: What the served set was built from (aliases, experiment, problem): unchanged ⇒ nothing to do.
        self._inputs: tuple[Any, ...] | None = None
        #: The emergency fallback switch as last read from Redis (None: off).
        self.fallback: FallbackState | None = None
        self.control_error: str | None = None

    def _poll(self) -> bool:
        from registry.store import mlflow_client

        if self._client is None:
            self._client = mlflow_client(self._settings)
        pointers, experiment, problem = registry_pointers(self._client, self._settings)
        current = self._engine.models
        wanted = {alias: v.version for alias, v in pointers.items()}
        inputs = (wanted, experiment, problem)
        if current is not None and inputs == self._inputs:
            return False
        model_set = build_model_set(pointers, experiment, problem, loaded=current.by_alias if current else None)
        if model_set is not None and model_set.experiment_problem:
            log.error("%s", model_set.experiment_problem)
        self._engine.swap(model_set)
        self._inputs = inputs
        self._metrics.set_models([(m.alias, m.version, m.family) for m in model_set.models] if model_set else [])
        log.info(
            "serving %s, experiment %s", wanted or "the rule-based fallback", experiment.name if experiment else "none"
        )
        return True

    async def refresh(self) -> bool:
        """One poll; True when the served models or experiment changed. Errors keep the current models."""
        try:
            changed = await asyncio.to_thread(self._poll)
        except Exception as exc:  # registry down, network, corrupt artifact: keep serving what we have
            self.last_error = f"{exc.__class__.__name__}: {redact_text(str(exc))[:500]}"
            log.warning(
                "registry poll failed (%s); keeping %s",
                self.last_error,
                "current models" if self._engine.models else "the rule-based fallback",
            )
            if self._engine.models is None:
                self._metrics.set_models([])
            return False
        self.last_error = None
        self.last_refresh = time.time()
        self.swaps += int(changed)
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.registry_poll_seconds)
            await self.refresh()

    async def refresh_control(self, redis: Any, keys: Keys) -> None:
        """Read the emergency fallback switch; an unreadable Redis keeps the last state read."""
        try:
            state = await read_state(redis, keys)
        except Exception as exc:  # Redis down: keep what we know (the publisher reports Redis health)
            self.control_error = f"{exc.__class__.__name__}: {redact_text(str(exc))[:200]}"
            return
        self.control_error = None
        if state != self.fallback:
            if state is not None:
                log.error("emergency fallback engaged: %s; rules decide", state.describe())
            else:
                log.warning("emergency fallback released; models decide")
        self.fallback = state
        self._engine.fallback_reason = state.describe() if state else None
        self._metrics.set_fallback_engaged(state is not None)

    async def run_control(self, redis: Any, keys: Keys) -> None:
        """Poll the switch every ``registry_poll_seconds`` (independently of the registry, which may be down)."""
        while True:
            await self.refresh_control(redis, keys)
            await asyncio.sleep(self._settings.registry_poll_seconds)
