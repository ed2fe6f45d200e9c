"""The emergency fallback switch: while engaged, every API replica decides with the documented rule-based policy
(``rules-fallback-v1``, see :mod:`decision.policy`); models still score every request (shadow), so monitoring sees
when they are fit to decide again.

The switch is one Redis hash (:meth:`common.keys.Keys.fallback`) that every replica reads every
``BNPL_REGISTRY_POLL_SECONDS``: it works while the registry is down, which is when it may be needed most. Engaging
and releasing it writes an audit record (:mod:`governance.audit`) and raises an alert.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uuid_utils

from common.keys import Keys
from common.settings import Settings
from governance.audit import ModelEvent, actor_of, record
from schemas.alerts import Alert

RUNBOOK = (
    "Every replica decides with the rule-based policy rules-fallback-v1 (deny over the credit limit or on a very high "
    "upstream risk, review high risk or utilisation, approve the rest). Find why the models were taken out "
    "(`bnpl models --history`), fix or promote a model that passes the gate, then `bnpl fallback off`."
)


@dataclass(frozen=True, slots=True)
class FallbackState:
    """Why, by whom and since when the fallback decides."""

    reason: str
    actor: str
    at: str
    event_id: str = ""

    def describe(self) -> str:
        return f"{self.reason} (engaged by {self.actor} at {self.at})"


def _state(raw: dict[bytes, bytes]) -> FallbackState | None:
    if not raw:
        return None
    text = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    return FallbackState(text.get("reason", "?"), text.get("actor", "?"), text.get("at", "?"), text.get("event_id", ""))


async def read_state(redis: Any, keys: Keys) -> FallbackState | None:
    """The switch as Redis holds it (None: models decide)."""
    return _state(await redis.hgetall(keys.fallback()))


def read_state_sync(redis: Any, keys: Keys) -> FallbackState | None:
    return _state(redis.hgetall(keys.fallback()))


def _alert(settings: Settings, event: ModelEvent, engaged: bool) -> Alert:
    return Alert(
        alert_id=str(uuid_utils.uuid7()),
        alert_key=f"governance:{event.action}:{event.event_id}",
        kind="fallback_engaged" if engaged else "fallback_released",
        severity="critical" if engaged else "info",
        model_name=settings.registry.model_name,
        statistic="fallback",
        value=1.0 if engaged else 0.0,
        threshold=1.0,
        window=event.at,
        first_seen=event.at,
        message=f"{'emergency fallback ENGAGED' if engaged else 'emergency fallback released'} by {event.actor}: "
        f"{event.reason or 'no reason given'}",
        runbook=RUNBOOK if engaged else "Models decide again; watch the next performance analyses.",
    )


async def _publish(settings: Settings, alert: Alert) -> None:
    from alerting.channel import raise_alert
    from common.redis_client import redis_for

    redis = redis_for(settings.streams)
    try:
        await raise_alert(redis, settings.keys, alert, None)
    finally:
        await redis.aclose()


def switch(
    client: Any,
    settings: Settings,
    engage: bool,
    reason: str,
    *,
    actor: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> ModelEvent | None:
    """Engage (``engage=True``) or release the fallback; None when it already was in that state. Writes the Redis
    switch first (what the replicas act on), then the audit record, then the alert."""
    from common.redis_client import redis_for_sync

    redis = redis_for_sync(settings.streams)
    try:
        current = read_state_sync(redis, settings.keys)
        if (current is not None) == engage:
            return None
        event = ModelEvent(
            model_name=settings.registry.model_name,
            action="fallback_on" if engage else "fallback_off",
            actor=actor or actor_of(settings.governance),
            reason=reason.strip() or None,
            evidence={**(evidence or {}), **({"was": current.describe()} if current else {})},
        )
        if engage:
            redis.hset(
                settings.keys.fallback(),
                mapping={"reason": reason, "actor": event.actor, "at": event.at, "event_id": event.event_id},
            )
        else:
            redis.delete(settings.keys.fallback())
    finally:
        redis.close()
    record(client, settings, event)
    asyncio.run(_publish(settings, _alert(settings, event, engage)))
    return event
