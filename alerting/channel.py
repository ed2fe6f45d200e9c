"""Raising an alert: at most once per cause per cooldown, appended to the alert stream for audit and delivery.

Dedup is ``SET NX`` with the cooldown as TTL on the cause's marker (``common.keys``), so several workers, restarts
and repeated reports never double-alert. Delivery is the alert sender's job (``consumers.alert_sender``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from common.keys import Keys, decode_entry, encode_entry
from schemas.alerts import ALERT_VERSION, Alert


async def raise_alert(redis: Any, keys: Keys, alert: Alert, cooldown_s: int | None) -> bool:
    """Append ``alert`` unless its ``alert_key`` alerted within ``cooldown_s`` (None: once, ever). True if raised."""
    fresh = await redis.set(keys.alerted(alert.alert_key), 1, nx=True, ex=cooldown_s)
    if not fresh:
        return False
    await redis.xadd(keys.alerts(), encode_entry(alert.alert_id, msgspec.json.encode(alert), ALERT_VERSION))
    return True


def alert_of(fields: dict[Any, Any]) -> Alert | None:
    """The alert an alert-stream entry carries (None for an entry that is not a readable alert)."""
    try:
        return msgspec.json.decode(decode_entry(fields).payload, type=Alert)
    except (ValueError, msgspec.DecodeError):
        return None
