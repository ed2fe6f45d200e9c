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
from common.redact import redact_text
from common.settings import RegistrySettings
from decision.engine import DecisionEngine
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

    def _poll(self) -> bool:
        from registry.store import mlflow_client

        if self._client is None:
            self._client = mlflow_client(self._settings)
        pointers, experiment = registry_pointers(self._client, self._settings)
        current = self._engine.models
        wanted = {alias: v.version for alias, v in pointers.items()}
        if current is not None and current.versions == wanted and current.experiment == experiment:
            return False
        model_set = build_model_set(pointers, experiment, current.by_alias if current else None)
        self._engine.swap(model_set)
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
