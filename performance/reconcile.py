"""Reconciliation: does each sink hold exactly what the API published? The comparison behind ``bnpl reconcile``
(which documents it) and the check the performance job runs before analysing a period.

The reference is the published ledger (``common.keys.Keys.ledger``), which the publish script adds to for every
block it writes. Per UTC day it is compared with the warehouse (DuckDB ``prediction_logs``: rows and distinct
prediction ids per API instance) and with MLflow (the arm runs' ``requests`` per experiment and arm, windows mapped
to the day of their end minus one ms). A shortfall while the sink's group has lag or pending entries (or, for MLflow,
the shortfall is exactly what its not-yet-logged windows hold) is *in flight*; a day without a ledger is not judged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from common.keys import LEDGER_LIVE, Keys
from common.redis_client import text
from common.settings import Settings

WAREHOUSE = "warehouse"
MLFLOW = "mlflow"
SINKS = (WAREHOUSE, MLFLOW)
#: MLflow experiment of traffic outside any experiment (the MLflow group's).
LIVE_EXPERIMENT = "bnpl-live"

OK, MISMATCH, IN_FLIGHT, NO_LEDGER = "ok", "mismatch", "in flight", "no ledger"


@dataclass(slots=True)
class Row:
    """One (day, sink, instance or experiment/arm) compared with the ledger."""

    day: str
    sink: str
    #: API instance (warehouse) or ``<experiment>/<arm>`` (MLflow; ``live`` outside experiments)
    key: str
    published: int
    landed: int
    #: distinct prediction ids among the landed rows (warehouse only)
    distinct: int | None = None
    #: events the MLflow group counted into windows it has not logged yet (MLflow only)
    open: int = 0
    status: str = OK

    @property
    def diff(self) -> int:
        return self.landed - self.published

    @property
    def duplicates(self) -> int:
        return 0 if self.distinct is None else self.landed - self.distinct


@dataclass(slots=True)
class Reconciliation:
    days: list[str]
    sinks: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    #: days some shard has a ledger of (the others are not judged)
    recorded: list[str] = field(default_factory=list)
    #: sink → why its groups still have work (empty: drained)
    in_flight: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> list[Row]:
        return [r for r in self.rows if r.status == MISMATCH]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> bytes:
        rows = [{**asdict(r), "diff": r.diff, "duplicates": r.duplicates} for r in self.rows]
        return orjson.dumps(
            {
                "days": self.days,
                "sinks": list(self.sinks),
                "ok": self.ok,
                "mismatches": len(self.mismatches),
                "in_flight": self.in_flight,
                "rows": rows,
                "notes": self.notes,
            },
            option=orjson.OPT_INDENT_2,
        )


# --- the comparison ------------------------------------------------------------------------------------------------
def reconcile(
    settings: Settings, days: Sequence[date], sinks: Iterable[str] = SINKS, warehouse: Any = None
) -> Reconciliation:
    """Compare the ledger of ``days`` with ``sinks`` (``warehouse``: the DuckDB store to read, default the
    configured one)."""
    from common.redis_client import redis_for_sync

    wanted = tuple(s for s in SINKS if s in set(sinks))
    names = [d.isoformat() for d in sorted(set(days))]
    result = Reconciliation(names, wanted)
    keys = settings.keys
    client = redis_for_sync(settings.streams)
    try:
        by_instance, by_arm, recorded = _ledger(client, keys, names)
        in_flight = _in_flight(client, keys, wanted)
        unlogged, late = _mlflow_open(client, keys) if MLFLOW in wanted else (Counter[tuple[str, str]](), 0)
        dead = sum(int(client.xlen(keys.dead_letter(stream))) for stream in keys.prediction_streams())
    finally:
        client.close()
    result.in_flight = in_flight
    result.recorded = sorted(recorded)
    if dead:
        result.notes.append(f"{dead:,} prediction event(s) in dead letters (a group failed them too often; not landed)")
    if late:
        result.notes.append(f"{late:,} event(s) reached the MLflow group after their window was logged (not in MLflow)")
    if WAREHOUSE in wanted:
        landed = _warehouse_counts(settings, names, warehouse)
        for day, instance in sorted(set(by_instance) | set(landed)):
            rows, distinct = landed.get((day, instance), (0, 0))
            row = Row(day, WAREHOUSE, instance, by_instance.get((day, instance), 0), rows, distinct)
            row.status = _status(row, day in recorded, WAREHOUSE in in_flight)
            result.rows.append(row)
    if MLFLOW in wanted:
        logged = _mlflow_counts(settings, names)
        for day, arm_key in sorted(set(by_arm) | set(logged) | set(unlogged)):
            row = Row(day, MLFLOW, arm_key, by_arm.get((day, arm_key), 0), logged.get((day, arm_key), 0))
            row.open = unlogged.get((day, arm_key), 0)
            row.status = _status(row, day in recorded, MLFLOW in in_flight)
            result.rows.append(row)
    unrecorded = [d for d in names if d not in recorded]
    if unrecorded:
        result.notes.append(
            f"no published ledger for {', '.join(unrecorded)} (before the ledger existed, past its retention, or "
            "nothing published): not judged"
        )
    return result


def _status(row: Row, recorded: bool, flowing: bool) -> str:
    if not recorded:
        return OK if not row.landed else NO_LEDGER
    if row.diff == 0 and row.duplicates == 0:
        return OK
    if row.duplicates:
        return MISMATCH
    if flowing and row.diff < 0:  # the group has not read (or acked) everything yet
        return IN_FLIGHT
    if row.open and row.landed + row.open == row.published:  # counted, in windows not logged yet
        return IN_FLIGHT
    return MISMATCH


def _ledger(
    client: Any, keys: Keys, days: list[str]
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]], set[str]]:
    """Published events per (day, instance) and per (day, experiment/arm), and the days any shard has a ledger of."""
    by_instance: Counter[tuple[str, str]] = Counter()
    by_arm: Counter[tuple[str, str]] = Counter()
    recorded: set[str] = set()
    for stream in keys.prediction_streams():
        for day in days:
            found = client.hgetall(keys.ledger(stream, day))
            if found:
                recorded.add(day)
            for raw_field, count in found.items():
                instance, experiment, arm = keys.parse_ledger_field(text(raw_field))
                by_instance[(day, instance)] += int(count)
                by_arm[(day, f"{experiment}/{arm}")] += int(count)
    return by_instance, by_arm, recorded


def _in_flight(client: Any, keys: Keys, sinks: tuple[str, ...]) -> dict[str, str]:
    """Per sink whose group still has work on a prediction stream: what (lag, pending, or not created yet) — the
    numbers ``bnpl status`` shows."""
    flowing: dict[str, list[str]] = {}
    for stream in keys.prediction_streams():
        if not client.exists(stream):
            continue
        info = client.xinfo_stream(stream)
        head = text(info.get("last-generated-id", "0-0"))
        length = int(info.get("length", 0))
        groups = {text(g["name"]): g for g in client.xinfo_groups(stream)}
        for sink in sinks:
            group = groups.get(sink)
            if group is None:
                if length:
                    flowing.setdefault(sink, []).append(f"{stream}: group not created")
                continue
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            # Delivered up to the stream's last id: nothing is unread, whatever the lag counter says (Redis does not
            # keep it exact across restarts and deletions; ``consumers.status.wait_drained`` reads it the same way).
            behind = text(group.get("last-delivered-id", "0-0")) != head
            if pending or behind:
                lag_text = "?" if lag is None else f"{int(lag):,}"
                flowing.setdefault(sink, []).append(f"{stream}: lag {lag_text}, pending {pending:,}")
    return {sink: "; ".join(parts) for sink, parts in flowing.items()}


def _window_day(end_ms: float) -> str:
    """The UTC day a window ending at ``end_ms`` belongs to (its last millisecond's)."""
    return datetime.fromtimestamp((end_ms - 1) / 1000, UTC).date().isoformat()


def _mlflow_open(client: Any, keys: Keys) -> tuple[Counter[tuple[str, str]], int]:
    """Events the MLflow group counted into windows it has not logged yet, per (day, ``<experiment>/<arm>``); and
    events it counted as late (after their window was logged: never in MLflow), all shards."""
    unlogged: Counter[tuple[str, str]] = Counter()
    late = 0
    for shard in range(keys.shards):
        for raw, end_s in client.zrange(keys.mlflow_open(shard), 0, -1, withscores=True):
            key = text(raw)
            experiment, arm, _, _ = keys.parse_mlflow_agg(key)
            unlogged[(_window_day(float(end_s) * 1000), f"{experiment}/{arm}")] += int(client.hget(key, "n") or 0)
        late += int(client.get(keys.mlflow_late(shard)) or 0)
    return unlogged, late


def _warehouse_counts(
    settings: Settings, days: list[str], warehouse: Any = None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(rows, distinct prediction ids) per (UTC day, API instance) of ``prediction_logs``."""
    import duckdb

    from warehouse.duckdb_store import DuckDBWarehouse

    if warehouse is None and settings.warehouse.warehouse == "bigquery":
        from warehouse import make_warehouse

        bigquery = make_warehouse(settings.warehouse)
        try:
            first = datetime.combine(date.fromisoformat(days[0]), datetime.min.time(), UTC)
            last = datetime.combine(date.fromisoformat(days[-1]) + timedelta(days=1), datetime.min.time(), UTC)
            counted = bigquery.daily_counts(first, last)  # type: ignore[attr-defined]
        finally:
            bigquery.close()
        wanted = set(days)
        return {(d, i): (n, u) for d, i, n, u in counted if d in wanted}
    if warehouse is None:
        path = settings.warehouse.duckdb_path
        assert path is not None, "checked by the caller"
        if not path.exists():
            return {}
        warehouse = DuckDBWarehouse(path)
    start = f"{days[0]} 00:00:00+00"
    end = f"{(date.fromisoformat(days[-1]) + timedelta(days=1)).isoformat()} 00:00:00+00"
    sql = (
        "SELECT strftime(timezone('UTC', assessment_timestamp), '%Y-%m-%d') AS day, api_instance, count(*), "
        "count(DISTINCT prediction_id) FROM prediction_logs "
        "WHERE assessment_timestamp >= CAST(? AS TIMESTAMPTZ) AND assessment_timestamp < CAST(? AS TIMESTAMPTZ) "
        "GROUP BY ALL"
    )
    try:
        found = warehouse.query(sql, [start, end])
    except duckdb.CatalogException:  # no prediction_logs yet: nothing landed
        return {}
    wanted = set(days)
    return {(str(d), str(i)): (int(n), int(u)) for d, i, n, u in found if str(d) in wanted}


def _mlflow_counts(settings: Settings, days: list[str]) -> Counter[tuple[str, str]]:
    """Sum of the arm runs' ``requests`` per (day, ``<experiment>/<arm>``) over the windows ending in ``days``."""
    from mlflow.entities import ViewType

    from registry.store import mlflow_client

    client = mlflow_client(settings.registry)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    names = {
        str(e.experiment_id): (LEDGER_LIVE if e.name == LIVE_EXPERIMENT else str(e.experiment_id)) for e in experiments
    }
    wanted = set(days)
    counts: Counter[tuple[str, str]] = Counter()
    if not names:
        return counts
    ids = list(names)
    token = None
    while True:
        page = client.search_runs(
            ids,
            filter_string="tags.`bnpl.kind` = 'arm-metrics'",
            run_view_type=ViewType.ALL,
            max_results=1_000,
            page_token=token,
        )
        for run in page:
            arm = run.data.tags.get("bnpl.arm", "?")
            experiment = names.get(str(run.info.experiment_id), str(run.info.experiment_id))
            for point in client.get_metric_history(run.info.run_id, "requests"):
                day = _window_day(point.timestamp)
                if day in wanted:
                    counts[(day, f"{experiment}/{arm}")] += round(point.value)
        token = page.token
        if not token:
            return counts


def warnings(result: Reconciliation, limit: int = 5) -> list[str]:
    """One line per mismatch (at most ``limit``, then how many more), for reports that go on regardless."""
    out = [
        f"{r.day} {r.sink} {r.key}: published {r.published:,}, landed {r.landed:,} ({r.diff:+,}"
        + (f", {r.duplicates:,} duplicate(s)" if r.duplicates else "")
        + ")"
        for r in result.mismatches[:limit]
    ]
    if len(result.mismatches) > limit:
        out.append(f"… and {len(result.mismatches) - limit} more (`bnpl reconcile`)")
    return out
