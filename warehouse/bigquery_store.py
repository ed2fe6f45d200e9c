"""BigQuery warehouse (production) through the official ``google-cloud-bigquery`` client.

Tables are created when missing: ``prediction_logs`` partitioned by DAY on ``event_time`` with a 2-year partition
expiration and clustered by ``customer_id`` and ``selected_model``; ``experiments`` and ``model_metrics`` beside it.

Loading uses the streaming API (``tabledata.insertAll``) with ``insertId = prediction_id`` and
``skipInvalidRows``. Guarantee: a batch redelivered by Redis (worker crash, retry after a timeout) is deduplicated
by BigQuery on insertId — best effort, within its de-duplication window (about a minute) — so the common retry
cases land once; for strict exactly-once *reads* whatever the timing, query the view ``prediction_logs_dedup``
(one row per prediction_id), created beside the table. Rows BigQuery rejects as invalid are reported per row and
go to the dead-letter stream; any other failure raises so the runtime retries the batch. Transient HTTP errors
(429, 5xx, connection errors) are retried by the client with exponential backoff and jitter up to a deadline.
"""

from __future__ import annotations

import logging
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_transient_error
from google.cloud import bigquery

from schemas.warehouse import TABLES, Column
from warehouse.base import Columns, InsertResult, rows_of

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
                type_=bigquery.TimePartitioningType.DAY, field="event_time", expiration_ms=PARTITION_EXPIRATION_MS
            )
            table.clustering_fields = ["customer_id", "selected_model"]
            table.description = "One row per decision (see schemas/events.py); partitions expire after 2 years."
        return table

    def ensure_tables(self) -> None:
        dataset = bigquery.Dataset(self.dataset)
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True, retry=self.retry)
        for name in TABLES:
            self.client.create_table(self.table_definition(name), exists_ok=True, retry=self.retry)
        view = bigquery.Table(f"{self.dataset}.prediction_logs_dedup")
        view.view_query = (
            f"SELECT * FROM `{self.dataset}.prediction_logs` "  # noqa: S608 - our own dataset name
            "WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id ORDER BY ingested_at) = 1"
        )
        self.client.create_table(view, exists_ok=True, retry=self.retry)

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

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def bigquery_client(project: str, endpoint: str | None = None, anonymous: bool = False) -> bigquery.Client:
    """A client for ``project``; ``endpoint``/``anonymous`` point it at a test double."""
    options = {"api_endpoint": endpoint} if endpoint else None
    if anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return bigquery.Client(project=project, credentials=credentials, client_options=options)
    return bigquery.Client(project=project, client_options=options)
