"""DuckDB warehouse (embedded default): one file under the data dir, PRIMARY KEY on prediction_id.

DuckDB lets one process write a file at a time. Most callers (reports, the outcomes group, the audit trail) open the
file, write or read, and close; a caller that finds the file locked by another process waits briefly and retries
(a transient error after ``lock_timeout_s``). The warehouse group, which writes all the time, **holds** its
connection across batches for ``hold_s`` (``BNPL_DUCKDB_HOLD_S``) and then lets the others in: it releases the
file after that long, or once idle, and leaves a short gap before taking it again.

The write path avoids what made batches stall as the table grew (measured on DuckDB 2.0): every close of a
connection checkpoints, every checkpoint writes the new rows as a small row group, and the checkpoint's vacuum then
merged small row groups into full ones, rewriting up to three older row groups and remapping their primary-key
entries — a stall every ~122,880 rows, longer each time (1 → 2.4 → 4.3 s at 1,600 rows a batch) and memory that
kept growing. So a writing connection runs with vacuum off (``max_vacuum_tasks = 0``: checkpoints stay flat, a few
hundred ms, inside the 16 MB WAL auto-checkpoint), and a release checkpoints only when the WAL holds more than
``RELEASE_CHECKPOINT_BYTES`` (otherwise the WAL carries over to the next open). The cost is more, smaller row groups
(one per checkpoint, thousands of rows each instead of 122,880): a maintenance job may merge them with
``SET max_vacuum_tasks = 100; CHECKPOINT`` (seconds), never the hot path.

Events are inserted as published: DuckDB parses the JSON itself (vectorized C++), Python only moves bytes. A batch
is a plain ``INSERT``, whose primary-key index checks each id; only when that fails on an id the table already
holds (a redelivery) or one the batch repeats is it redone as ``INSERT OR IGNORE``. DuckDB plans the latter as a
MERGE — a hash join against a scan of the whole ``prediction_id`` column — so on every batch it cost time and
memory that grew with the table (measured: 32 → 19 ms of CPU per 80-row batch, flat up to 320,000 rows). A
version 1 ``prediction_logs`` is migrated in place when the tables are ensured (``warehouse.migrations``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from schemas.outcomes import OutcomeEvent
from schemas.reasons import FIELD_REASON_CODES, POLICY_REASON_CODES
from schemas.warehouse import TABLES, WAREHOUSE_SCHEMA_VERSION, Column
from warehouse.base import (
    OUTCOME_COUNTS_SQL,
    Columns,
    CurrentOutcome,
    InsertResult,
    OutcomeResult,
    as_utc,
    outcome_columns,
    performance_sql,
    plan_outcomes,
)
from warehouse.migrations import V1_MARKER, v1_select

log = logging.getLogger(__name__)

DUCKDB_TYPES = {
    "STRING": "VARCHAR",
    "FLOAT": "DOUBLE",
    "INTEGER": "BIGINT",
    "BOOLEAN": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ",
    "JSON": "JSON",
    "STRING_ARRAY": "VARCHAR[]",
    "FLOAT_ARRAY": "DOUBLE[]",
}


def _json_structure(columns: list[Column]) -> str:
    """json_transform structure of a prediction event: every column at its path (timestamps read as text)."""
    event: dict[str, Any] = {}
    for c in columns:
        if not c.path:
            continue
        node = event
        for part in c.path[:-1]:
            node = node.setdefault(part, {})
        node[c.path[-1]] = "VARCHAR" if c.kind == "TIMESTAMP" else DUCKDB_TYPES[c.kind]
    return orjson.dumps(event).decode()


def _json_ref(column: Column) -> str:
    return "j." + ".".join(f'"{part}"' for part in column.path)


def _arrow_strings(payloads: list[bytes]) -> pa.Array:
    """Zero-copy-ish Arrow string array over the raw payloads (one join, one offsets array)."""
    offsets = np.zeros(len(payloads) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in payloads], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_string(), len(payloads), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(payloads))]
    )


def _columns_of(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [table]
    ).fetchall()
    return [str(r[0]) for r in rows]


def _counted_insert(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    """Run an ``INSERT OR IGNORE`` into prediction_logs and return how many rows it added."""
    before = conn.execute("SELECT count(*) FROM prediction_logs").fetchone()
    conn.execute(sql)
    after = conn.execute("SELECT count(*) FROM prediction_logs").fetchone()
    assert before is not None
    assert after is not None
    return int(after[0]) - int(before[0])


def arrow_columns(table: pa.Table) -> Columns:
    """An Arrow table as columns: timestamps as numpy ``datetime64[us]`` in UTC (NaT for NULL), the rest as lists."""
    out: Columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            out[name] = column.cast(pa.timestamp("us")).to_numpy()
        else:
            out[name] = column.to_pylist()
    return out


def create_table_sql(table: str, columns: list[Column], key: str) -> str:
    cols = ",\n  ".join(f'"{c.name}" {DUCKDB_TYPES[c.kind]}{"" if c.nullable else " NOT NULL"}' for c in columns)
    return f'CREATE TABLE IF NOT EXISTS {table} (\n  {cols},\n  PRIMARY KEY ("{key}")\n)'


#: A writer that releases the file checkpoints first when its WAL is larger (else the WAL carries over).
RELEASE_CHECKPOINT_BYTES = 4 * 2**20
#: How long a holding writer stays away after a release, so a process waiting for the file (retrying every 20 ms)
#: gets it.
RELEASE_GAP_S = 0.2
#: A holding writer idle this long releases the file (``release_idle``).
IDLE_RELEASE_S = 1.0


class DuckDBWarehouse:
    """Idempotent inserts into a DuckDB file; with ``hold_s`` > 0 the event inserts keep one connection for that
    long (the warehouse group)."""

    def __init__(self, path: Path, lock_timeout_s: float = 30.0, hold_s: float = 0.0) -> None:
        self.path = path
        self.lock_timeout_s = lock_timeout_s
        self.hold_s = hold_s
        self._held: duckdb.DuckDBPyConnection | None = None
        self._held_since = 0.0
        self._last_write = 0.0
        self._released_at = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        columns, _ = TABLES["prediction_logs"]
        self._columns = columns
        names = ", ".join(f'"{c.name}"' for c in columns)  # by name: a migrated table may order columns otherwise
        exprs = []
        for c in columns:
            if not c.path:  # ingested_at
                exprs.append("now()")
                continue
            ref = _json_ref(c)
            exprs.append(f"CAST({ref} AS {DUCKDB_TYPES[c.kind]})" if c.kind == "TIMESTAMP" else ref)
        required = " OR ".join(
            f"({e}) IS NULL" for c, e in zip(columns, exprs, strict=True) if not c.nullable and c.name != "ingested_at"
        )
        structure = _json_structure(columns).replace("'", "''")
        self._stage_raw = (  # structure and names are our own constants
            "CREATE OR REPLACE TEMP TABLE staged AS SELECT i, json_valid(e) AS ok, "  # noqa: S608
            f"CASE WHEN json_valid(e) THEN json_transform(e, '{structure}') END AS j FROM raw"
        )
        self._invalid_raw = f"SELECT i, ok FROM staged WHERE NOT ok OR {required}"  # noqa: S608 - constants
        self._insert_raw = (
            f"INSERT OR IGNORE INTO prediction_logs ({names}) SELECT {', '.join(exprs)} FROM staged "  # noqa: S608
            f"WHERE ok AND NOT ({required})"
        )
        self._append_raw = self._insert_raw.replace("INSERT OR IGNORE", "INSERT", 1)

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A connection, waiting while another process holds the file; a writing one runs with vacuum off."""
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                conn = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.ConnectionException as exc:
                if not read_only or "different configuration" not in str(exc):
                    raise
                read_only = False  # this process holds the file for writing: a reader shares its database
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if not read_only:
            conn.execute("SET max_vacuum_tasks = 0")
        return conn

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one piece of work, closed after it (this instance's held connection, if it has one)."""
        if self._held is not None:
            yield self._held
            return
        conn = self._open(read_only)
        try:
            yield conn
        finally:
            conn.close()

    def _writer(self) -> duckdb.DuckDBPyConnection:
        """The held connection: opened when there is none (after the gap that follows a release), released and
        opened again once held for ``hold_s``."""
        if self._held is not None and time.monotonic() - self._held_since >= self.hold_s:
            self.release()
        if self._held is None:
            gap = RELEASE_GAP_S - (time.monotonic() - self._released_at)
            if gap > 0:
                time.sleep(gap)
            self._held = self._open(read_only=False)
            self._held.execute("SET threads = 1")  # batches of tens to thousands of rows: more threads only cost CPU
            self._held_since = time.monotonic()
        return self._held

    def release(self) -> None:
        """Close the held connection (checkpointing first only when the WAL has grown past
        ``RELEASE_CHECKPOINT_BYTES``), so other processes can open the file."""
        conn, self._held = self._held, None
        if conn is None:
            return
        try:
            wal = self.path.with_name(self.path.name + ".wal")
            big = wal.exists() and wal.stat().st_size > RELEASE_CHECKPOINT_BYTES
            conn.execute("CHECKPOINT" if big else "PRAGMA disable_checkpoint_on_shutdown")
        finally:
            conn.close()
            self._released_at = time.monotonic()

    def release_idle(self) -> None:
        """Release the held connection once no batch came for ``IDLE_RELEASE_S``."""
        if self._held is not None and time.monotonic() - self._last_write >= IDLE_RELEASE_S:
            self.release()

    def ensure_tables(self) -> None:
        """Create missing tables; migrate a version 1 ``prediction_logs`` in one transaction."""
        with self.connect() as conn:
            conn.execute("BEGIN")
            if V1_MARKER in _columns_of(conn, "prediction_logs"):
                self._migrate_v1(conn)
            for table, (columns, key) in TABLES.items():
                conn.execute(create_table_sql(table, columns, key))
                present = set(_columns_of(conn, table))
                for c in columns:  # nullable columns added by a later layout (e.g. model_metrics.analysis_date)
                    if c.name not in present and c.nullable:
                        conn.execute(f'ALTER TABLE {table} ADD COLUMN "{c.name}" {DUCKDB_TYPES[c.kind]}')
            conn.execute(
                "INSERT OR REPLACE INTO schema_versions VALUES ('prediction_logs', ?, now())",
                [WAREHOUSE_SCHEMA_VERSION],
            )
            conn.execute("COMMIT")

    def _migrate_v1(self, conn: duckdb.DuckDBPyConnection) -> None:
        columns, key = TABLES["prediction_logs"]
        codes = sorted({*FIELD_REASON_CODES.values(), *POLICY_REASON_CODES})
        rows = conn.execute("SELECT count(*) FROM prediction_logs").fetchone()
        log.warning("migrating prediction_logs from version 1 to %d (%s rows)", WAREHOUSE_SCHEMA_VERSION, rows)
        conn.execute(create_table_sql("prediction_logs_v2", columns, key))
        names = ", ".join(f'"{c.name}"' for c in columns)
        conn.execute(f"INSERT INTO prediction_logs_v2 ({names}) {v1_select('duckdb', 'prediction_logs', codes)}")
        conn.execute("DROP TABLE prediction_logs")
        conn.execute("ALTER TABLE prediction_logs_v2 RENAME TO prediction_logs")

    def insert_events(self, payloads: list[bytes]) -> tuple[InsertResult, dict[int, str]]:
        """Insert event JSON as published; returns the result and the rejected positions with reasons."""
        if not payloads:
            return InsertResult(), {}
        raw = pa.table({"i": pa.array(range(len(payloads)), pa.int64()), "e": _arrow_strings(payloads)})
        if self.hold_s <= 0:
            with self.connect() as conn:
                return self._insert_raw_table(conn, raw, len(payloads))
        conn = self._writer()
        try:
            return self._insert_raw_table(conn, raw, len(payloads))
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            self._held = None  # a failed write: start again on a fresh connection
            conn.close()
            raise
        finally:
            self._last_write = time.monotonic()

    def _insert_raw_table(
        self, conn: duckdb.DuckDBPyConnection, raw: pa.Table, n: int
    ) -> tuple[InsertResult, dict[int, str]]:
        conn.register("raw", raw)
        try:
            conn.execute("BEGIN")
            conn.execute(self._stage_raw)
            rejected = {
                int(i): "malformed JSON" if not ok else "missing or mistyped required field(s)"
                for i, ok in conn.execute(self._invalid_raw).fetchall()
            }
            try:  # a plain INSERT: the primary key's index checks each id
                (inserted,) = conn.execute(self._append_raw).fetchone() or (0,)
            except duckdb.ConstraintException:  # a redelivered or repeated id: the slow path skips it
                conn.execute("ROLLBACK")
                conn.execute("BEGIN")
                conn.execute(self._stage_raw)
                inserted = _counted_insert(conn, self._insert_raw)
            conn.execute("COMMIT")
        finally:
            conn.unregister("raw")
        return InsertResult(inserted=inserted, duplicates=n - len(rejected) - inserted), rejected

    def _write_rows(self, table: str, rows: list[dict[str, Any]], verb: str) -> None:
        """``verb`` (``INSERT OR REPLACE`` / ``INSERT OR IGNORE``) ``rows`` into ``table`` by its declared columns."""
        columns, _ = TABLES[table]
        names = ", ".join(f'"{c.name}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        with self.connect() as conn:
            conn.executemany(
                f"{verb} INTO {table} ({names}) VALUES ({marks})",
                [[row.get(c.name) for c in columns] for row in rows],
            )

    def upsert_experiment(self, row: dict[str, Any]) -> None:
        """Mirror an experiment's configuration (one row per experiment, replaced on change)."""
        self._write_rows("experiments", [row], "INSERT OR REPLACE")

    def insert_outcomes(self, events: list[OutcomeEvent]) -> OutcomeResult:
        """Land outcomes: new loans are inserted, a later outcome supersedes the current one, the same outcome again
        changes nothing (see :func:`warehouse.base.plan_outcomes`). One transaction."""
        if not events:
            return OutcomeResult()
        ids = sorted({e.outcome.transaction_id for e in events})
        columns, _ = TABLES["outcomes"]
        names = ", ".join(f'"{c.name}"' for c in columns)
        with self.connect() as conn:
            conn.execute("BEGIN")
            wanted = pa.table({"transaction_id": pa.array(ids, pa.string())})  # noqa: F841 - read by DuckDB
            current = {
                str(row[0]): CurrentOutcome(str(row[1]), as_utc(row[2]), as_utc(row[3]), str(row[4]), int(row[5]))
                for row in conn.execute(
                    "SELECT o.transaction_id, o.outcome_id, o.outcome_date, o.received_at, o.outcome, o.superseded "
                    "FROM outcomes o JOIN wanted w USING (transaction_id)"
                ).fetchall()
            }
            rows, result = plan_outcomes(events, current)
            if rows:
                staged = pa.table(outcome_columns(rows))  # noqa: F841 - read by DuckDB
                conn.execute(f"INSERT OR REPLACE INTO outcomes ({names}) SELECT {names} FROM staged")  # noqa: S608
            conn.execute("COMMIT")
        return result

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Insert or replace ``model_metrics`` rows (ids are deterministic: re-running an analysis replaces)."""
        if not rows:
            return
        columns, _ = TABLES["model_metrics"]
        names = ", ".join(f'"{c.name}"' for c in columns)
        staged = pa.table({c.name: [r.get(c.name) for r in rows] for c in columns})  # noqa: F841
        with self.connect() as conn:
            conn.execute(f"INSERT OR REPLACE INTO model_metrics ({names}) SELECT {names} FROM staged")  # noqa: S608

    def insert_model_events(self, rows: list[dict[str, Any]]) -> None:
        """Append audit records; a record already there (same ``event_id``) is left as it is."""
        if rows:
            self._write_rows("model_events", rows, "INSERT OR IGNORE")

    def model_event_ids(self) -> set[str]:
        """Ids of the audit records the table holds."""
        with self.connect(read_only=True) as conn:
            return {str(r[0]) for r in conn.execute("SELECT event_id FROM model_events").fetchall()}

    def performance_rows(self, start: datetime, end: datetime, time_column: str) -> Columns:
        """Decisions made in [start, end) with their current outcome (NULL when none is known)."""
        with self.connect(read_only=True) as conn:
            table = conn.sql(performance_sql("duckdb", time_column), params=[start, end]).to_arrow_table()
        return arrow_columns(table)

    def outcome_counts(self) -> dict[str, int]:
        """Outcomes landed, and how many have no decision in the warehouse (yet)."""
        with self.connect(read_only=True) as conn:
            row = conn.execute(OUTCOME_COUNTS_SQL.format(dataset="main")).fetchone()
        assert row is not None
        return {"outcomes": int(row[0]), "without_decision": int(row[1] or 0), "bad": int(row[2] or 0)}

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read-only query (reports, tests)."""
        with self.connect(read_only=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def close(self) -> None:
        """Release the held connection, if any."""
        self.release()
