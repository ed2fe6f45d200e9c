"""Alerts for the alert channel (``<prefix>:alerts`` stream, webhooks): versioned, deduplicated by ``alert_key``."""

from __future__ import annotations

import msgspec

ALERT_VERSION = 1


class Alert(msgspec.Struct, kw_only=True):
    schema_version: int = ALERT_VERSION
    #: Unique id of this alert (UUIDv7); receivers deduplicate on it.
    alert_id: str
    #: Same cause ⇒ same key (dedup and cooldown).
    alert_key: str
    kind: str
    severity: str
    model_name: str | None = None
    model_version: str | None = None
    experiment: str | None = None
    feature: str | None = None
    statistic: str
    value: float
    threshold: float
    window: str
    first_seen: str
    message: str
    runbook: str = ""
