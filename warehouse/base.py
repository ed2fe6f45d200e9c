"""The ``Warehouse`` protocol and the event → column conversion every implementation shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from schemas.events import PredictionEvent
from schemas.warehouse import PREDICTION_LOGS

Columns = dict[str, list[Any]]
_EVENT_FIELDS = set(PredictionEvent.__struct_fields__)


@dataclass(slots=True)
class InsertResult:
    """Outcome of one committed insert: new rows, rows already present, rows that can never load (with why)."""

    inserted: int = 0
    duplicates: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # prediction_id -> error


class Warehouse(Protocol):
    """Where prediction events land. ``insert_predictions`` is idempotent on prediction_id and commits before it
    returns; it raises on transient failure (the caller retries the whole batch)."""

    def ensure_tables(self) -> None: ...

    def insert_predictions(self, columns: Columns) -> InsertResult: ...

    def upsert_experiment(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def event_columns(events: list[PredictionEvent], ingested_at: datetime | None = None) -> Columns:
    """``prediction_logs`` as columns: request flattened, maps as JSON text, timestamps ISO-8601 text."""
    now = (ingested_at or datetime.now(UTC)).isoformat()
    columns: Columns = {}
    requests = [e.request for e in events]
    for column in PREDICTION_LOGS:
        name = column.name
        if name == "ingested_at":
            columns[name] = [now] * len(events)
        elif name not in _EVENT_FIELDS:
            columns[name] = [getattr(r, name) for r in requests]
        elif column.kind == "JSON":
            columns[name] = [orjson.dumps(getattr(e, name)).decode() for e in events]
        else:
            columns[name] = [getattr(e, name) for e in events]
    return columns


def rows_of(columns: Columns) -> list[dict[str, Any]]:
    """Columns → row dicts (for APIs that take rows)."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
