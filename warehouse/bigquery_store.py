"""BigQuery warehouse (production) through the official ``google-cloud-bigquery`` client.

Tables are created when missing: ``prediction_logs`` partitioned by DAY on ``assessment_timestamp`` with a 2-year
partition expiration and clustered by ``customer_id`` and ``selected_model``; ``experiments``, ``model_metrics`` and
``schema_versions`` beside it; ``outcomes`` (every distinct loan outcome, partitioned by outcome date, clustered by
customer; the view ``outcomes_current`` holds each loan's current one) and ``model_metrics`` (partitioned by
analysis date; the view ``model_metrics_current`` holds the latest value of each metric id). A version 1
``prediction_logs`` is never written to: starting fails with the command that migrates it (``bnpl warehouse
migrate``, see ``warehouse.migrations``).

Loading uses the streaming API (``tabledata.insertAll``) with ``insertId = prediction_id`` and ``skipInvalidRows``.
Guarantee: a batch redelivered by Redis (worker crash, retry after a timeout) is deduplicated by BigQuery on
insertId — best effort, within its de-duplication window (about a minute) — so the common retry cases land once; for
strict exactly-once *reads* whatever the timing, query the view ``prediction_logs_dedup`` (one row per
prediction_id), created beside the table. Rows BigQuery rejects as invalid are reported per row and go to the
dead-letter stream; any other failure raises so the runtime retries the batch. Transient HTTP errors (429, 5xx,
connection errors) are retried by the client with exponential backoff and jitter up to a deadline.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_transient_error
from google.cloud import bigquery

from schemas.events import PredictionEvent
from schemas.outcomes import OutcomeEvent
from schemas.reasons import FIELD_REASON_CODES, POLICY_REASON_CODES
from schemas.warehouse import (
    MODEL_EVENTS_PARTITION_COLUMN,
    MODEL_METRICS_PARTITION_COLUMN,
    OUTCOMES_PARTITION_COLUMN,
    PARTITION_COLUMN,
    TABLES,
    WAREHOUSE_SCHEMA_VERSION,
    Column,
)
from warehouse.base import (
    OUTCOME_COUNTS_SQL,
    Columns,
    InsertResult,
    OutcomeResult,
    event_columns,
    outcome_row,
    performance_sql,
    rows_of,
)
from warehouse.migrations import V1_MARKER, v1_select

log = logging.getLogger(__name__)

BQ_TYPES = {
    "STRING": "STRING",
    "FLOAT": "FLOAT64",
    "INTEGER": "INT64",
    "BOOLEAN": "BOOL",
    "TIMESTAMP": "TIMESTAMP",
    "JSON": "JSON",
    "STRING_ARRAY": "STRING",
    "FLOAT_ARRAY": "FLOAT64",
}
PARTITION_EXPIRATION_MS = 2 * 365 * 24 * 3600 * 1000
ROWS_PER_REQUEST = 500
_EVENTS = msgspec.json.Decoder(PredictionEvent)
#: The current outcome of each loan (see ``warehouse.base.plan_outcomes`` for the precedence).
OUTCOMES_CURRENT_SQL = """
SELECT * FROM `{dataset}.outcomes` WHERE TRUE
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY transaction_id
  ORDER BY outcome_date DESC,
    CASE outcome WHEN 'charged_off' THEN 3 WHEN 'defaulted' THEN 2 WHEN 'partially_paid' THEN 1 ELSE 0 END DESC,
    received_at DESC, outcome_id
) = 1
"""


class MigrationRequiredError(RuntimeError):
    """The dataset holds an older table layout; ``bnpl warehouse migrate`` upgrades it."""


def _transient(exc: Exception) -> bool:
    return if_transient_error(exc) or isinstance(exc, gexc.TooManyRequests | gexc.ServerError)


#: Exponential backoff with jitter (google.api_core adds jitter to every delay), capped, with a deadline.
RETRY = Retry(predicate=_transient, initial=0.2, maximum=10.0, multiplier=2.0, timeout=120.0)


def schema_fields(columns: list[Column]) -> list[bigquery.SchemaField]:
    """BigQuery schema of a table definition from ``schemas.warehouse``."""
    return [
        bigquery.SchemaField(
            c.name,
            BQ_TYPES[c.kind],
            mode="REPEATED" if c.kind.endswith("_ARRAY") else ("NULLABLE" if c.nullable else "REQUIRED"),
        )
        for c in columns
    ]


class BigQueryWarehouse:
    """Idempotent (insertId) streaming inserts into BigQuery."""

    def __init__(self, client: bigquery.Client, dataset: str, location: str = "US", retry: Retry = RETRY) -> None:
        self.client = client
        self.dataset = f"{client.project}.{dataset}"
        self.location = location
        self.retry = retry

    def table_definition(self, name: str) -> bigquery.Table:
        columns, _ = TABLES[name]
        table = bigquery.Table(f"{self.dataset}.{name}", schema=schema_fields(columns))
        if name == "prediction_logs":
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN, expiration_ms=PARTITION_EXPIRATION_MS
            )
            table.clustering_fields = ["customer_id", "selected_model"]
            table.description = (
                f"One row per decision (layout version {WAREHOUSE_SCHEMA_VERSION}, see schemas/warehouse.py); "
                "partitions expire after 2 years."
            )
        elif name == "outcomes":
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=OUTCOMES_PARTITION_COLUMN
            )
            table.clustering_fields = ["customer_id"]
            table.description = "Every distinct loan outcome; the current one per loan: view outcomes_current."
        elif name == "model_metrics":
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=MODEL_METRICS_PARTITION_COLUMN
            )
            table.clustering_fields = ["model_version", "metric"]
            table.description = "Performance metrics per model version, arm and analysis date (performance job)."
        elif name == "model_events":
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=MODEL_EVENTS_PARTITION_COLUMN
            )
            table.clustering_fields = ["model_name", "alias"]
            table.description = "Append-only audit trail: every alias change and fallback switch (governance)."
        return table

    def layout_version(self) -> int | None:
        """Layout version of the existing ``prediction_logs`` (None when there is none)."""
        try:
            table = self.client.get_table(f"{self.dataset}.prediction_logs", retry=self.retry)
        except gexc.NotFound:
            return None
        return 1 if any(f.name == V1_MARKER for f in table.schema) else WAREHOUSE_SCHEMA_VERSION

    def ensure_tables(self) -> None:
        dataset = bigquery.Dataset(self.dataset)
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True, retry=self.retry)
        if self.layout_version() == 1:
            raise MigrationRequiredError(
                f"{self.dataset}.prediction_logs has the version 1 layout: run `bnpl warehouse migrate` "
                "(`--dry-run` shows the SQL) before starting the warehouse group"
            )
        for name in TABLES:
            self.client.create_table(self.table_definition(name), exists_ok=True, retry=self.retry)
        self._record_version()
        view = bigquery.Table(f"{self.dataset}.prediction_logs_dedup")
        view.view_query = (
            f"SELECT * FROM `{self.dataset}.prediction_logs` "  # noqa: S608 - our own dataset name
            "WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY ingested_at) = 1"
        )
        self.client.create_table(view, exists_ok=True, retry=self.retry)
        current = bigquery.Table(f"{self.dataset}.outcomes_current")
        current.view_query = OUTCOMES_CURRENT_SQL.format(dataset=self.dataset)
        self.client.create_table(current, exists_ok=True, retry=self.retry)
        metrics = bigquery.Table(f"{self.dataset}.model_metrics_current")
        metrics.view_query = (
            f"SELECT * FROM `{self.dataset}.model_metrics` "  # noqa: S608 - our own dataset name
            "WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY metric_id ORDER BY computed_at DESC) = 1"
        )
        self.client.create_table(metrics, exists_ok=True, retry=self.retry)

    def migration_sql(self) -> list[str]:
        """The statements that rebuild a version 1 ``prediction_logs`` in the version 2 layout (the old table is
        kept as ``prediction_logs_v1``)."""
        table = f"{self.dataset}.prediction_logs"
        definition = self.table_definition("prediction_logs")
        columns = ", ".join(
            f"`{f.name}` {'ARRAY<' + f.field_type + '>' if f.mode == 'REPEATED' else f.field_type}"
            f"{' NOT NULL' if f.mode == 'REQUIRED' else ''}"
            for f in definition.schema
        )
        codes = sorted({*FIELD_REASON_CODES.values(), *POLICY_REASON_CODES})
        return [
            f"CREATE TABLE `{table}_v2` ({columns}) PARTITION BY DATE(`{PARTITION_COLUMN}`) "
            f"CLUSTER BY customer_id, selected_model "
            f"OPTIONS (partition_expiration_days = {PARTITION_EXPIRATION_MS // 86_400_000}) "
            f"AS {v1_select('bigquery', f'`{table}`', codes)}",
            f"ALTER TABLE `{table}` RENAME TO `prediction_logs_v1`",
            f"ALTER TABLE `{table}_v2` RENAME TO `prediction_logs`",
        ]

    def migrate(self) -> list[str]:
        """Run :meth:`migration_sql` (one query job each, in order) when the table is version 1; record the
        version. Returns the statements run (none when already current)."""
        if self.layout_version() != 1:
            return []
        statements = self.migration_sql()
        for sql in statements:
            self.client.query(sql, location=self.location, retry=self.retry).result()
        self.ensure_tables()
        return statements

    def insert_events(self, payloads: list[bytes]) -> tuple[InsertResult, dict[int, str]]:
        """Decode (msgspec validates every field), insert as columns; undecodable and invalid rows are reported by
        position. The same event twice in one batch is inserted once."""
        events: list[PredictionEvent] = []
        position_of: dict[str, int] = {}
        rejected: dict[int, str] = {}
        for i, payload in enumerate(payloads):
            try:
                event = _EVENTS.decode(payload)
            except msgspec.DecodeError as exc:
                rejected[i] = f"undecodable prediction event: {exc}"
                continue
            if event.prediction_id not in position_of:
                position_of[event.prediction_id] = i
                events.append(event)
        if not events:
            return InsertResult(), rejected
        result = self.insert_predictions(event_columns(events))
        for prediction_id, why in result.rejected.items():
            rejected[position_of[prediction_id]] = why
        return result, rejected

    def insert_predictions(self, columns: Columns) -> InsertResult:
        rows = rows_of(columns)
        ids = columns["prediction_id"]
        result = InsertResult()
        table = f"{self.dataset}.prediction_logs"
        for start in range(0, len(rows), ROWS_PER_REQUEST):
            chunk, chunk_ids = rows[start : start + ROWS_PER_REQUEST], ids[start : start + ROWS_PER_REQUEST]
            errors: list[dict[str, Any]] = list(
                self.client.insert_rows_json(table, chunk, row_ids=chunk_ids, skip_invalid_rows=True, retry=self.retry)
            )
            rejected = {}
            for error in errors:
                reasons = {e.get("reason") for e in error.get("errors", [])}
                message = "; ".join(str(e.get("message", "")) for e in error.get("errors", []))
                if reasons <= {"invalid"}:
                    rejected[chunk_ids[int(error["index"])]] = f"BigQuery rejected the row: {message}"
                else:
                    raise RuntimeError(f"BigQuery insert failed for row {error['index']}: {reasons} {message}")
            result.rejected.update(rejected)
            result.inserted += len(chunk) - len(rejected)
        return result

    def _record_version(self) -> None:
        now = datetime.now(UTC).isoformat()
        self.client.insert_rows_json(
            f"{self.dataset}.schema_versions",
            [{"table_name": "prediction_logs", "version": WAREHOUSE_SCHEMA_VERSION, "applied_at": now}],
            row_ids=[f"prediction_logs@{WAREHOUSE_SCHEMA_VERSION}"],
            retry=self.retry,
        )

    def upsert_experiment(self, row: dict[str, Any]) -> None:
        """Append the experiment's current configuration (the newest ``updated_at`` per experiment is current)."""
        errors = self.client.insert_rows_json(
            f"{self.dataset}.experiments",
            [row],
            row_ids=[f"{row['experiment_id']}@{row['updated_at']}"],
            retry=self.retry,
        )
        if errors:
            raise RuntimeError(f"BigQuery rejected the experiment row: {errors}")

    def insert_outcomes(self, events: list[OutcomeEvent]) -> OutcomeResult:
        """Append each distinct outcome (``insertId = outcome_id``: a re-delivered one is dropped by BigQuery within
        its de-duplication window, and collapsed by ``outcomes_current`` after it). Precedence is the view's: the
        latest outcome date, then the graver outcome, then the later received, per loan."""
        if not events:
            return OutcomeResult()
        distinct = {e.outcome_id: e for e in events}
        now = datetime.now(UTC)
        every = [outcome_row(e, 0, now) for e in distinct.values()]
        json_rows = [_json_row(r) for r in every]
        errors = self.client.insert_rows_json(
            f"{self.dataset}.outcomes", json_rows, row_ids=[r["outcome_id"] for r in every], retry=self.retry
        )
        if errors:
            raise RuntimeError(f"BigQuery rejected outcome rows: {errors[:3]}")
        return OutcomeResult(inserted=len(every), unchanged=len(events) - len(every))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Append ``model_metrics`` rows (``insertId = metric_id``; ``model_metrics_current`` holds the latest)."""
        if not rows:
            return
        json_rows = [_json_row(r) for r in rows]
        errors = self.client.insert_rows_json(
            f"{self.dataset}.model_metrics",
            json_rows,
            row_ids=[f"{r['metric_id']}@{r['computed_at']}" for r in json_rows],
            retry=self.retry,
        )
        if errors:
            raise RuntimeError(f"BigQuery rejected model_metrics rows: {errors[:3]}")

    def insert_model_events(self, rows: list[dict[str, Any]]) -> None:
        """Append audit records (``insertId = event_id``; a record is written again only by the catch-up of
        :func:`governance.audit.sync_warehouse`, which first reads which ids are there)."""
        if not rows:
            return
        json_rows = [_json_row(r) for r in rows]
        errors = self.client.insert_rows_json(
            f"{self.dataset}.model_events", json_rows, row_ids=[r["event_id"] for r in rows], retry=self.retry
        )
        if errors:
            raise RuntimeError(f"BigQuery rejected model_events rows: {errors[:3]}")

    def model_event_ids(self) -> set[str]:
        """Ids of the audit records the table holds."""
        sql = f"SELECT DISTINCT event_id FROM `{self.dataset}.model_events`"  # noqa: S608 - our own dataset name
        rows = self.client.query(sql, location=self.location, retry=self.retry).result()
        return {str(r[0]) for r in rows}

    def performance_rows(self, start: datetime, end: datetime, time_column: str) -> Columns:
        """The performance job's rows (latest decision per transaction, current outcome) via a query job."""
        sql = performance_sql("bigquery", time_column, self.dataset).replace(
            f"`{self.dataset}`.outcomes", f"`{self.dataset}`.outcomes_current"
        )
        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
                bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
            ]
        )
        result = self.client.query(sql, job_config=config, location=self.location, retry=self.retry).result()
        names = [f.name for f in result.schema]
        columns: Columns = {n: [] for n in names}
        for row in result:
            for n in names:
                columns[n].append(row[n])
        return columns

    def outcome_counts(self) -> dict[str, int]:
        sql = OUTCOME_COUNTS_SQL.format(dataset=f"`{self.dataset}`").replace(
            f"`{self.dataset}`.outcomes o", f"`{self.dataset}`.outcomes_current o"
        )
        rows = list(self.client.query(sql, location=self.location, retry=self.retry).result())
        if not rows:
            return {"outcomes": 0, "without_decision": 0, "bad": 0}
        row = rows[0]
        return {"outcomes": int(row[0] or 0), "without_decision": int(row[1] or 0), "bad": int(row[2] or 0)}

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row for ``insert_rows_json``: timestamps as ISO-8601 text."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def bigquery_client(project: str, endpoint: str | None = None, anonymous: bool = False) -> bigquery.Client:
    """A client for ``project``; ``endpoint``/``anonymous`` point it at a test double."""
    options = {"api_endpoint": endpoint} if endpoint else None
    if anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return bigquery.Client(project=project, credentials=credentials, client_options=options)
    return bigquery.Client(project=project, client_options=options)
