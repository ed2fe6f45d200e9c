"""The ``Warehouse`` protocol and the event → column conversion every implementation shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from common.settings import WarehouseSettings
from schemas.events import PredictionEvent
from schemas.warehouse import PREDICTION_LOGS, Column

Columns = dict[str, list[Any]]


@dataclass(slots=True)
class InsertResult:
    """Outcome of one committed insert: new rows, rows already present, rows that can never load (with why)."""

    inserted: int = 0
    duplicates: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # prediction_id -> error


class Warehouse(Protocol):
    """Where prediction events land. Inserts are idempotent on prediction_id and commit before they return; they
    raise on transient failure (the caller retries the whole batch)."""

    def ensure_tables(self) -> None:
        """Create missing tables; refuse (raise) when a table has an older layout that needs a migration."""
        ...

    def insert_events(self, payloads: list[bytes]) -> tuple[InsertResult, dict[int, str]]:
        """Insert prediction events given as published (current version's JSON). Returns the result and, by
        position in ``payloads``, the events that can never load, with why."""
        ...

    def upsert_experiment(self, row: dict[str, Any]) -> None:
        """Mirror an experiment's configuration into ``experiments``."""
        ...

    def close(self) -> None: ...


def _value(event: PredictionEvent, column: Column) -> Any:
    value: Any = event
    for name in column.path:
        value = getattr(value, name)
    return value


def event_columns(events: list[PredictionEvent], ingested_at: datetime | None = None) -> Columns:
    """``prediction_logs`` as columns: fields read by their path, maps and structs as JSON text, timestamps
    ISO-8601 text."""
    now = (ingested_at or datetime.now(UTC)).isoformat()
    columns: Columns = {}
    for column in PREDICTION_LOGS:
        if not column.path:  # ingested_at
            columns[column.name] = [now] * len(events)
        elif column.kind == "JSON":
            columns[column.name] = [msgspec.json.encode(_value(e, column)).decode() for e in events]
        else:
            columns[column.name] = [_value(e, column) for e in events]
    return columns


def rows_of(columns: Columns) -> list[dict[str, Any]]:
    """Columns → row dicts (for APIs that take rows)."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def make_warehouse(settings: WarehouseSettings) -> Warehouse:
    """The configured warehouse (``BNPL_WAREHOUSE``)."""
    if settings.warehouse == "bigquery":
        from warehouse.bigquery_store import BigQueryWarehouse, bigquery_client

        if not settings.bq_project:
            raise ValueError("BNPL_WAREHOUSE=bigquery needs BNPL_BQ_PROJECT")
        return BigQueryWarehouse(bigquery_client(settings.bq_project), settings.bq_dataset, settings.bq_location)
    if settings.warehouse == "duckdb":
        from warehouse.duckdb_store import DuckDBWarehouse

        assert settings.duckdb_path is not None
        return DuckDBWarehouse(settings.duckdb_path)
    raise ValueError(f"unknown warehouse {settings.warehouse!r} (duckdb or bigquery)")
