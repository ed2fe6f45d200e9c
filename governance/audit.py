"""The audit trail of the model registry: one append-only record per alias change or fallback switch.

Every record is written twice: as a tag of the registered model (``audit.<event_id>``, written first — the registry
is where the change happens, so the change and its record live together) and as a row of the warehouse table
``model_events``. A warehouse that cannot be reached does not block the change: the next record written (or
``bnpl models --history``) copies every record the table is missing (:func:`sync_warehouse`), by ``event_id``, so
each record lands exactly once.
"""

from __future__ import annotations

import getpass
import logging
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import uuid_utils

from common.settings import GovernanceSettings, Settings

log = logging.getLogger(__name__)

TAG_PREFIX: Final = "audit."
#: What a record can say happened.
ACTIONS: Final = (
    "promote",  # a person moved an alias (bnpl promote, bnpl train --promote)
    "unalias",  # a person removed an alias
    "auto_switch",  # the guardian moved an alias
    "rollback",  # the guardian moved an alias back after a breach on probation
    "fallback_on",  # the emergency fallback was engaged (alias: none)
    "fallback_off",
)
GUARDIAN: Final = "guardian"


def actor_of(settings: GovernanceSettings) -> str:
    """``BNPL_ACTOR``, or ``<user>@<host>`` of this process."""
    if settings.actor:
        return settings.actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with an arbitrary uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """One audit record."""

    model_name: str
    action: str
    actor: str
    alias: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    forced: bool = False
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: str(uuid_utils.uuid7()))
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}")

    def row(self) -> dict[str, Any]:
        """The ``model_events`` row (evidence as JSON text)."""
        row = asdict(self)
        row["occurred_at"] = datetime.fromisoformat(row.pop("at"))
        row["evidence"] = orjson.dumps(self.evidence, option=orjson.OPT_SORT_KEYS).decode()
        return row

    def tag(self) -> tuple[str, str]:
        return f"{TAG_PREFIX}{self.event_id}", orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_tag(cls, value: str) -> ModelEvent:
        return cls(**orjson.loads(value))

    def summary(self) -> str:
        """One line for terminals and alerts."""
        moved = {
            "unalias": f"@{self.alias} removed (was v{self.from_version})",
            "fallback_on": "emergency fallback engaged",
            "fallback_off": "emergency fallback released",
        }.get(self.action, f"@{self.alias}: v{self.from_version or '-'} → v{self.to_version}")
        forced = " (forced)" if self.forced else ""
        return f"{self.action}{forced}: {moved} by {self.actor}" + (f" — {self.reason}" if self.reason else "")


def history(client: Any, model_name: str) -> list[ModelEvent]:
    """Every audit record of ``model_name`` from the registry, oldest first (ids are time-ordered UUIDv7)."""
    tags = client.get_registered_model(model_name).tags
    events = [ModelEvent.from_tag(v) for k, v in tags.items() if k.startswith(TAG_PREFIX)]
    return sorted(events, key=lambda e: e.event_id)


def sync_warehouse(settings: Settings, events: list[ModelEvent]) -> int:
    """Copy the records the warehouse table is missing; returns how many were written. Raises when the warehouse
    cannot be reached (the caller decides whether that matters)."""
    from warehouse import make_warehouse

    warehouse = make_warehouse(settings.warehouse)
    try:
        warehouse.ensure_tables()
        present = warehouse.model_event_ids()
        missing = [e.row() for e in events if e.event_id not in present]
        warehouse.insert_model_events(missing)
        return len(missing)
    finally:
        warehouse.close()


def record(client: Any, settings: Settings, event: ModelEvent) -> ModelEvent:
    """Write ``event`` to the registry, then bring the warehouse table up to date (a failure there is logged: the
    registry holds the record and the next write copies it)."""
    key, value = event.tag()
    client.set_registered_model_tag(event.model_name, key, value)
    try:
        sync_warehouse(settings, history(client, event.model_name))
    except Exception as exc:  # the registry holds it; the next record or `bnpl models --history` copies it
        log.warning("audit record %s is in the registry; the warehouse copy waits (%s)", event.event_id, exc)
    return event
