"""BigQuery warehouse (production) through the official ``google-cloud-bigquery`` client.

Tables are created when missing: ``prediction_logs`` partitioned by DAY on ``assessment_timestamp`` with a 2-year
partition expiration and clustered by ``customer_id`` and ``selected_model``; ``experiments``, ``model_metrics`` and
``schema_versions`` beside it; ``outcomes`` (every distinct loan outcome, partitioned by outcome date, clustered by
customer; the view ``outcomes_current`` holds each loan's current one) and ``model_metrics`` (partitioned by
analysis date; the view ``model_metrics_current`` holds the latest value of each metric id). A version 1
``prediction_logs`` is never written to: starting fails with the command that migrates it (``bnpl warehouse
migrate``, see ``warehouse.migrations``).

Prediction events load one batch at a time (``BNPL_BQ_MODE=load``, the default). Each batch the warehouse group
hands over is written as newline-delimited JSON into its own staging table (``_staging_prediction_logs_<key>``,
created with a one-day expiration, loaded with ``WRITE_TRUNCATE``) by a load job — free, and outside the
streaming buffer — then one ``MERGE`` into ``prediction_logs`` inserts the rows whose ``prediction_id`` is not
there yet; its ``ON`` clause filters the target on the batch's ``assessment_timestamp`` days, so it reads only those
partitions (a prediction's row always lands in its own assessment day). A staging table per batch: concurrent
workers never share one, and no staging table sees more than one load (only the MERGEs count against the
per-table daily quota of ``prediction_logs``). ``<key>`` hashes the dataset and the batch's sorted prediction ids,
and the job ids derive from it (``bnpl_load_<key>_<n>``, ``bnpl_merge_<key>_<n>``): a redelivered batch — after a
worker died, whatever the delay — finds its merge job done and loads nothing; a retried job whose id exists (409)
is fetched and its result used instead of loading twice; a failed job is followed by the next ``n``. The MERGE
itself adds no row for an id already in the table, so exactly-once holds even when a batch comes back with other
companions (another key). Rows are validated against the table schema before loading; those that fail, and those
BigQuery still refuses (``maxBadRecords``, mapped back through the byte position its error names), are reported
per row and go to the dead-letter stream.

Newline-delimited JSON rather than Parquet: the rows are the documents the events already are (no pyarrow
dependency, no list/JSON logical-type mapping for the REPEATED and JSON columns), and BigQuery names a refused
row by its byte position, which maps back to the stream entry; loads are free either way, and a 10,000-row batch
is ≈ 14 MB (one resumable upload).

``BNPL_BQ_MODE=stream`` appends through the Storage Write API instead: one committed write stream per shard,
offsets tied to the consumer-group position (see :mod:`warehouse.bigquery_write`); the legacy ``insertAll``
path is gone (its best-effort ``insertId`` de-duplication lasted about a minute), and the view
``prediction_logs_dedup`` remains only for rows that path wrote. Transient HTTP errors (429, 5xx, connection
errors) are retried by the client with exponential backoff and jitter up to a deadline; a batch whose jobs keep
failing raises :class:`BatchUploadError` (the group raises one alert per batch and the runtime retries it).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import orjson
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
    PREDICTION_LOGS,
    TABLES,
    WAREHOUSE_SCHEMA_VERSION,
    Column,
)
from warehouse.base import (
    OUTCOME_COUNTS_SQL,
    BatchUploadError,
    Columns,
    InsertResult,
    OutcomeResult,
    event_columns,
    outcome_row,
    performance_sql,
    rows_of,
)
from warehouse.bigquery_write import CommittedWriter, write_client
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
MODES = ("load", "stream")
#: Staging tables of batches expire after this (a batch abandoned mid-way leaves nothing behind for long).
STAGING_EXPIRATION = timedelta(days=1)
STAGING_PREFIX = "_staging_prediction_logs_"
#: Fresh job attempts within one call before the batch fails (the runtime retries it later, with the next ids).
JOB_ATTEMPTS = 3
#: Rows BigQuery may still refuse in one load job (beyond the validation before loading): 1 %, at least 10.
BAD_RECORD_SHARE = 0.01
_POSITION = re.compile(r"position (\d+)")
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
    """Exactly-once batch loads (load job + MERGE) into BigQuery, or (``stream``) the rows the warehouse group
    appends through the Storage Write API."""

    def __init__(
        self,
        client: bigquery.Client,
        dataset: str,
        location: str = "US",
        retry: Retry = RETRY,
        mode: str = "load",
        job_retry_delay_s: float = 2.0,
        writer: CommittedWriter | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"BNPL_BQ_MODE must be one of {MODES}, not {mode!r}")
        self.client = client
        self.dataset = f"{client.project}.{dataset}"
        self.location = location
        self.retry = retry
        self.mode = mode
        self.job_retry_delay_s = job_retry_delay_s
        self._writer = writer

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

    def daily_counts(self, start: datetime, end: datetime) -> list[tuple[str, str, int, int]]:
        """(UTC day, API instance, rows, distinct prediction ids) of ``prediction_logs`` with ``start`` ≤
        ``assessment_timestamp`` < ``end`` (what ``bnpl reconcile`` compares with the published ledger); the range
        is a partition filter, so the query reads only those days."""
        select = (
            "SELECT FORMAT_TIMESTAMP('%F', assessment_timestamp, 'UTC') AS day, api_instance, COUNT(*) AS n, "
            "COUNT(DISTINCT prediction_id) AS distinct_ids"
        )
        where = "assessment_timestamp >= @start AND assessment_timestamp < @end"
        sql = f"{select} FROM `{self.dataset}.prediction_logs` WHERE {where} GROUP BY day, api_instance"
        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
                bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
            ]
        )
        rows = self.client.query(sql, job_config=config, location=self.location, retry=self.retry).result()
        return [(str(r["day"]), str(r["api_instance"]), int(r["n"]), int(r["distinct_ids"])) for r in rows]

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
        """Land ``prediction_logs`` rows with a load job + MERGE (``BNPL_BQ_MODE=stream`` appends through the
        warehouse group instead, see :mod:`warehouse.bigquery_write`)."""
        return self.load_predictions(columns) if self.mode == "load" else self.stream_predictions(columns)

    # --- load mode -------------------------------------------------------------------------------------------------
    def load_predictions(self, columns: Columns) -> InsertResult:
        """Validate, load into the batch's staging table, MERGE on prediction_id; see the module docstring."""
        result = InsertResult()
        rows: dict[str, dict[str, Any]] = {}
        for row in rows_of(columns):
            problem = row_problem(row)
            if problem is not None:
                result.rejected[str(row.get("prediction_id"))] = f"invalid for prediction_logs: {problem}"
            else:
                rows.setdefault(row["prediction_id"], load_row(row))
        if not rows:
            return result
        key = batch_key(self.dataset, list(rows))
        staging = f"{self.dataset}.{STAGING_PREFIX}{key}"
        if self._landed(key) is None:
            refused = self._load_staging(key, staging, list(rows.values()))
            result.rejected.update(refused)
            loaded = [r for r in rows.values() if r["prediction_id"] not in refused]
            if loaded:
                merge = self._merge(key, staging, loaded)
                result.inserted = int(merge.num_dml_affected_rows or 0)
            result.duplicates = len(loaded) - result.inserted
        else:
            result.duplicates = len(rows)  # this very batch landed before (redelivered): nothing to do
        self.client.delete_table(staging, not_found_ok=True, retry=self.retry)
        return result

    def _job_id(self, kind: str, key: str, attempt: int) -> str:
        return f"bnpl_{kind}_{key}_{attempt}"

    def _landed(self, key: str) -> bigquery.QueryJob | None:
        """The batch's merge job that succeeded, if any (a redelivery of a landed batch)."""
        for attempt in range(100):
            try:
                job = self.client.get_job(self._job_id("merge", key, attempt), location=self.location, retry=self.retry)
            except gexc.NotFound:
                return None
            if job.state == "DONE" and job.error_result is None:
                return job  # type: ignore[return-value]
        return None

    def _run(self, kind: str, key: str, start: Callable[[str], Any], usable: Callable[[Any], bool]) -> Any:
        """Run the batch's ``kind`` job: ids ``bnpl_<kind>_<key>_<n>`` in turn. A free id starts a job; an id taken
        (409: a retry, or an earlier delivery) is fetched, and its result used when it succeeded and is still
        ``usable``; a failed job moves on to the next id. ``JOB_ATTEMPTS`` fresh failures fail the batch."""
        errors: list[str] = []
        failures = 0
        for attempt in range(100):
            job_id = self._job_id(kind, key, attempt)
            fresh = True
            try:
                job = self.retry(start)(job_id)
            except gexc.Conflict:
                fresh = False
                job = self.client.get_job(job_id, location=self.location, retry=self.retry)
                log.info("BigQuery %s job %s exists (state %s): using its result", kind, job_id, job.state)
            try:
                job.result(retry=self.retry)
            except gexc.GoogleAPICallError as exc:
                found = [str(e.get("message", e)) for e in (job.errors or [])] or [str(exc)]
                if fresh:
                    failures += 1
                    errors += found
                    log.warning("BigQuery %s job %s failed: %s", kind, job_id, "; ".join(found[:3]))
                    if failures >= JOB_ATTEMPTS:
                        raise BatchUploadError(key, errors) from exc
                    time.sleep(self.job_retry_delay_s * failures)
                continue
            if fresh or usable(job):
                return job
        raise BatchUploadError(key, errors or [f"no free {kind} job id"])

    def _load_staging(self, key: str, staging: str, rows: list[dict[str, Any]]) -> dict[str, str]:
        """Load ``rows`` into ``staging``; returns the rows BigQuery refused (by prediction_id, with why)."""
        table = bigquery.Table(staging, schema=schema_fields(list(PREDICTION_LOGS)))
        table.expires = datetime.now(UTC) + STAGING_EXPIRATION
        table.description = f"Staging of one warehouse batch ({key}); dropped after its MERGE."
        self.client.create_table(table, exists_ok=True, retry=self.retry)
        data, offsets = ndjson(rows)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            schema=schema_fields(list(PREDICTION_LOGS)),
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
            max_bad_records=max(10, int(len(rows) * BAD_RECORD_SHARE)),
        )

        def start(job_id: str) -> bigquery.LoadJob:
            return self.client.load_table_from_file(
                io.BytesIO(data), staging, size=len(data), job_id=job_id, job_config=config, location=self.location
            )

        def usable(job: bigquery.LoadJob) -> bool:  # an earlier load of this batch: its staging table must be there
            try:
                self.client.get_table(staging, retry=self.retry)
            except gexc.NotFound:
                return False
            return True

        job: bigquery.LoadJob = self._run("load", key, start, usable)
        refused: dict[str, str] = {}
        unplaced: list[str] = []
        for error in job.errors or []:
            message = str(error.get("message", ""))
            found = _POSITION.search(message)
            row = offsets.get(int(found.group(1))) if found else None
            if row is None:
                unplaced.append(message)
            else:
                refused[rows[row]["prediction_id"]] = f"BigQuery refused the row: {message}"
        loaded = job.output_rows
        if loaded is not None and loaded + len(refused) != len(rows):  # refused rows we cannot name: retry the batch
            counts = f"{len(rows)} rows, {loaded} loaded, {len(refused)} refused"
            raise BatchUploadError(key, [counts, *unplaced])
        return refused

    def _merge(self, key: str, staging: str, rows: list[dict[str, Any]]) -> bigquery.QueryJob:
        days = [_timestamp(r[PARTITION_COLUMN]).date() for r in rows]
        sql = merge_sql(f"{self.dataset}.prediction_logs", staging, min(days), max(days))

        def start(job_id: str) -> bigquery.QueryJob:
            return self.client.query(sql, job_id=job_id, location=self.location, job_retry=None)

        job: bigquery.QueryJob = self._run("merge", key, start, lambda _job: True)
        return job

    # --- stream mode -----------------------------------------------------------------------------------------------
    def stream_predictions(self, columns: Columns) -> InsertResult:
        raise RuntimeError(
            "BNPL_BQ_MODE=stream appends through the warehouse group (its offsets live in Redis beside the stream "
            "entries): see warehouse.bigquery_write"
        )

    @property
    def writer(self) -> CommittedWriter:
        """The Storage Write API writer of ``prediction_logs`` (created on first use)."""
        if self._writer is None:
            project, dataset = self.dataset.split(".", 1)
            table = f"projects/{project}/datasets/{dataset}/tables/prediction_logs"
            self._writer = CommittedWriter(write_client(), table, list(PREDICTION_LOGS))
        return self._writer

    def stream_rows(self, payloads: list[bytes]) -> tuple[list[bytes | None], dict[int, str]]:
        """Each payload's ``prediction_logs`` row as a serialized protobuf row (None: rejected, or the same
        prediction earlier in the batch), and the rejected positions with why (the checks of ``load`` mode)."""
        encoder = self.writer.encoder
        rows: list[bytes | None] = []
        rejected: dict[int, str] = {}
        seen: set[str] = set()
        now = datetime.now(UTC)
        for i, payload in enumerate(payloads):
            rows.append(None)
            try:
                event = _EVENTS.decode(payload)
            except msgspec.DecodeError as exc:
                rejected[i] = f"undecodable prediction event: {exc}"
                continue
            if event.prediction_id in seen:
                continue
            seen.add(event.prediction_id)
            row = rows_of(event_columns([event], now))[0]
            problem = row_problem(row)
            if problem is not None:
                rejected[i] = f"invalid for prediction_logs: {problem}"
                continue
            rows[i] = encoder.encode(row)
        return rows, rejected

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

    def release_idle(self) -> None:
        """Nothing is held between batches."""

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def batch_key(dataset: str, prediction_ids: list[str]) -> str:
    """The batch's key (its job ids and staging table derive from it): a hash of the dataset (job ids are unique
    per project, and two datasets may load the same events) and the batch's sorted prediction ids."""
    return hashlib.sha256("\n".join([dataset, *sorted(prediction_ids)]).encode()).hexdigest()[:32]


def merge_sql(target: str, staging: str, first_day: date, last_day: date) -> str:
    """Insert the staged rows whose prediction_id is not in ``target``; the target is read only in the batch's
    assessment days (partition pruning: a prediction's row is always in its assessment day)."""
    names = ", ".join(f"`{c.name}`" for c in PREDICTION_LOGS)
    end = last_day + timedelta(days=1)
    lines = [
        f"MERGE `{target}` T",
        f"USING `{staging}` S",
        "ON T.prediction_id = S.prediction_id",
        f"  AND T.{PARTITION_COLUMN} >= TIMESTAMP '{first_day.isoformat()}'"
        f" AND T.{PARTITION_COLUMN} < TIMESTAMP '{end.isoformat()}'",
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({names})",  # noqa: S608 - our own names
    ]
    return "\n".join(lines)


def _timestamp(value: Any) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace(" ", "T"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "STRING": lambda v: isinstance(v, str),
    "FLOAT": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "INTEGER": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "BOOLEAN": lambda v: isinstance(v, bool),
    "JSON": lambda v: isinstance(v, str),
}


def _value_ok(kind: str, value: Any) -> bool:
    if kind == "TIMESTAMP":
        try:
            _timestamp(value)
        except (TypeError, ValueError):
            return False
        return True
    return _CHECKS[kind.removesuffix("_ARRAY")](value)


def row_problem(row: dict[str, Any]) -> str | None:
    """Why a ``prediction_logs`` row (as :func:`warehouse.base.event_columns` makes it) cannot load, or None: what
    BigQuery checks — required values present, values of the column's type, finite floats, parseable timestamps."""
    for column in PREDICTION_LOGS:
        value = row.get(column.name)
        if column.kind.endswith("_ARRAY"):
            if value is None:
                continue
            if not isinstance(value, list | tuple) or not all(_value_ok(column.kind, v) for v in value):
                return f"{column.name}: expected an array of {column.kind.removesuffix('_ARRAY')}"
        elif value is None:
            if not column.nullable:
                return f"{column.name}: required, missing"
        elif not _value_ok(column.kind, value):
            return f"{column.name}: not a valid {column.kind} ({str(value)[:40]!r})"
    return None


def load_row(row: dict[str, Any]) -> dict[str, Any]:
    """A validated row for a JSON load: JSON columns as the document itself (a load stores text as a JSON string),
    timestamps as ISO-8601 text."""
    out = {}
    for column in PREDICTION_LOGS:
        value = row.get(column.name)
        if column.kind == "JSON" and isinstance(value, str):
            value = orjson.loads(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        out[column.name] = value
    return out


def ndjson(rows: list[dict[str, Any]]) -> tuple[bytes, dict[int, int]]:
    """Newline-delimited JSON of ``rows`` and each line's byte position → row index (BigQuery names a refused
    row by the position it starts at)."""
    buffer = io.BytesIO()
    offsets: dict[int, int] = {}
    for i, row in enumerate(rows):
        offsets[buffer.tell()] = i
        buffer.write(orjson.dumps(row))
        buffer.write(b"\n")
    return buffer.getvalue(), offsets


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
