"""The ``Warehouse`` protocol and the event → column conversion every implementation shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from common.settings import WarehouseSettings
from schemas.events import PredictionEvent
from schemas.outcomes import OUTCOME_RANK, OutcomeEvent
from schemas.warehouse import PREDICTION_LOGS, Column

#: Column name → values (a list, or a numpy array: timestamps may come as ``datetime64`` in UTC).
Columns = dict[str, Any]


@dataclass(slots=True)
class InsertResult:
    """Outcome of one committed insert: new rows, rows already present, rows that can never load (with why)."""

    inserted: int = 0
    duplicates: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # prediction_id -> error


class BatchUploadError(RuntimeError):
    """A batch could not be landed after the sink's retries (``batch``: its key; ``errors``: the first errors)."""

    def __init__(self, batch: str, errors: list[str]) -> None:
        super().__init__(f"batch {batch} not landed in the warehouse: {'; '.join(errors[:3])}")
        self.batch = batch
        self.errors = errors


@dataclass(slots=True)
class OutcomeResult:
    """What landing a batch of outcomes did: loans new to the table, loans whose outcome a later one replaced, and
    outcomes that changed nothing (the same outcome again, or one older than the loan's current outcome)."""

    inserted: int = 0
    superseded: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class CurrentOutcome:
    """A loan's current outcome, as far as precedence needs it."""

    outcome_id: str
    outcome_date: datetime
    received_at: datetime
    outcome: str
    superseded: int


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC (a naive value is taken as UTC)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _utc_of(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))


def _precedence(outcome_date: datetime, outcome: str, received_at: datetime) -> tuple[datetime, int, datetime]:
    return outcome_date, OUTCOME_RANK[outcome], received_at


def plan_outcomes(
    events: list[OutcomeEvent], current: dict[str, CurrentOutcome]
) -> tuple[list[dict[str, Any]], OutcomeResult]:
    """The rows to write for ``events`` given the loans' ``current`` outcomes, and what that does.

    Per loan the winner is the outcome with the latest ``outcome_date``; on the same date the graver outcome
    (``charged_off`` > ``defaulted`` > ``partially_paid`` > ``paid``), then the later received. An outcome whose
    id is already the loan's current one changes nothing, so re-delivery and re-sent files are no-ops.
    """
    result = OutcomeResult()
    best: dict[str, tuple[tuple[datetime, int, datetime], OutcomeEvent]] = {}
    for event in events:
        o = event.outcome
        key = _precedence(_utc_of(o.outcome_date), o.outcome, _utc_of(event.received_at))
        held = current.get(o.transaction_id)
        if held is not None and (
            held.outcome_id == event.outcome_id or key <= _precedence(held.outcome_date, held.outcome, held.received_at)
        ):
            result.unchanged += 1
            continue
        seen = best.get(o.transaction_id)
        if seen is None or (seen[1].outcome_id != event.outcome_id and key > seen[0]):
            if seen is not None:
                result.unchanged += 1  # an earlier outcome of the same batch, superseded before it landed
            best[o.transaction_id] = (key, event)
        else:
            result.unchanged += 1
    now = datetime.now(UTC)
    rows = []
    for transaction_id, (_, event) in best.items():
        held = current.get(transaction_id)
        if held is None:
            result.inserted += 1
        else:
            result.superseded += 1
        rows.append(outcome_row(event, 0 if held is None else held.superseded + 1, now))
    return rows, result


def outcome_row(event: OutcomeEvent, superseded: int, ingested_at: datetime) -> dict[str, Any]:
    """The ``outcomes`` row of one outcome event (timestamps as UTC datetimes)."""
    o = event.outcome
    return {
        "transaction_id": o.transaction_id,
        "customer_id": o.customer_id,
        "outcome": o.outcome,
        "bad": o.bad,
        "amount_recovered": o.amount_recovered,
        "outcome_date": _utc_of(o.outcome_date),
        "source": o.source,
        "outcome_id": event.outcome_id,
        "received_at": _utc_of(event.received_at),
        "received_via": event.received_via,
        "superseded": superseded,
        "ingested_at": ingested_at,
    }


def outcome_columns(rows: list[dict[str, Any]]) -> Columns:
    """``outcomes`` rows as columns."""
    from schemas.warehouse import OUTCOMES

    return {c.name: [r[c.name] for r in rows] for c in OUTCOMES}


#: What the performance job reads: the latest decision per transaction in a time range, with its current outcome.
_PERFORMANCE_SQL = """
SELECT p.prediction_id, p.transaction_id, p.customer_id, {time} AS decided_at, p.business_decision,
       p.traffic_segment, p.model_version, p.model_alias, p.experiment_name, p.model_name,
       {preds} AS all_predictions, {versions} AS model_versions,
       p.default_probability, p.customer_income_bracket, p.customer_age_bracket, p.amount, o.outcome, o.bad,
       o.outcome_date
FROM {t}prediction_logs p LEFT JOIN {t}outcomes o ON o.transaction_id = p.transaction_id
WHERE {time} >= {start} AND {time} < {end}
QUALIFY ROW_NUMBER() OVER (PARTITION BY p.transaction_id ORDER BY p.assessment_timestamp DESC) = 1
"""
#: Outcomes landed, outcomes with no decision, bad outcomes.
OUTCOME_COUNTS_SQL = """
SELECT count(*), SUM(CASE WHEN d.transaction_id IS NULL THEN 1 ELSE 0 END), SUM(CASE WHEN o.bad THEN 1 ELSE 0 END)
FROM {dataset}.outcomes o LEFT JOIN (SELECT DISTINCT transaction_id FROM {dataset}.prediction_logs) d
  ON d.transaction_id = o.transaction_id
"""
#: Which time a decision's cohort is cut on: when it was assessed, or the transaction time the client sent.
TIME_COLUMNS = ("assessment", "transaction")


def performance_sql(dialect: str, time_column: str, dataset: str = "") -> str:
    """The performance job's query for ``duckdb`` (parameters ``?``, ``?``) or ``bigquery`` (``@start``, ``@end``)."""
    if time_column not in TIME_COLUMNS:
        raise ValueError(f"time column must be one of {TIME_COLUMNS}")
    if dialect == "duckdb":
        cast = "CAST(p.transaction_timestamp AS TIMESTAMPTZ)"
        time = "p.assessment_timestamp" if time_column == "assessment" else cast
        return _PERFORMANCE_SQL.format(
            time=time,
            preds="CAST(p.all_predictions AS VARCHAR)",
            versions="CAST(p.model_versions AS VARCHAR)",
            t="",
            start="?",
            end="?",
        )
    time = "p.assessment_timestamp" if time_column == "assessment" else "TIMESTAMP(p.transaction_timestamp)"
    return _PERFORMANCE_SQL.format(
        time=time,
        preds="TO_JSON_STRING(p.all_predictions)",
        versions="TO_JSON_STRING(p.model_versions)",
        t=f"`{dataset}`.",
        start="@start",
        end="@end",
    )


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

    def insert_outcomes(self, events: list[OutcomeEvent]) -> OutcomeResult:
        """Land outcomes idempotently by transaction (a later outcome supersedes; the same again is a no-op)."""
        ...

    def insert_model_events(self, rows: list[dict[str, Any]]) -> None:
        """Append audit records of the model registry (idempotent by ``event_id``)."""
        ...

    def model_event_ids(self) -> set[str]:
        """Ids of the audit records already in the table."""
        ...

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Insert or replace ``model_metrics`` rows by ``metric_id``."""
        ...

    def performance_rows(self, start: datetime, end: datetime, time_column: str) -> Columns:
        """Decisions in [start, end) (latest per transaction) joined with their current outcome."""
        ...

    def outcome_counts(self) -> dict[str, int]:
        """``outcomes``, ``without_decision``, ``bad``."""
        ...

    def release_idle(self) -> None:
        """Hand back what is held between batches once the writer has been idle a while (called between batches)."""
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


def make_warehouse(settings: WarehouseSettings, writer: bool = False) -> Warehouse:
    """The configured warehouse (``BNPL_WAREHOUSE``); ``writer``: the warehouse group's, which may hold its DuckDB
    connection between batches (``BNPL_DUCKDB_HOLD_S``)."""
    if settings.warehouse == "bigquery":
        from warehouse.bigquery_store import BigQueryWarehouse, bigquery_client

        if not settings.bq_project:
            raise ValueError("BNPL_WAREHOUSE=bigquery needs BNPL_BQ_PROJECT")
        endpoint = settings.bq_endpoint or None
        client = bigquery_client(settings.bq_project, endpoint=endpoint, anonymous=endpoint is not None)
        return BigQueryWarehouse(client, settings.bq_dataset, settings.bq_location, mode=settings.bq_mode)
    if settings.warehouse == "duckdb":
        from warehouse.duckdb_store import DuckDBWarehouse

        assert settings.duckdb_path is not None
        return DuckDBWarehouse(settings.duckdb_path, hold_s=settings.duckdb_hold_s if writer else 0.0)
    raise ValueError(f"unknown warehouse {settings.warehouse!r} (duckdb or bigquery)")
