"""``bnpl reconcile`` with real components: decisions published through the real publisher (ledger in a real
redis-server), landed by the real warehouse (DuckDB) and MLflow (SQLite store) groups, then compared."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import duckdb
import msgspec
import orjson
import pytest
import redis.asyncio as aioredis

from bnpl_cli import reconcile
from bnpl_cli.main import main
from common.settings import ConsumerSettings, Settings
from consumers.mlflow_group import MlflowMetricsHandler
from consumers.runtime import ConsumerWorker
from consumers.warehouse import WarehouseHandler
from decision.engine import DecisionEngine
from decision.models import ModelSet
from producers.publisher import EventPublisher, block_ledger
from registry import mlflow_client
from registry.experiments import start_experiment
from schemas.events import PredictionEvent
from tests.streams import make_events, wait_group_drained
from warehouse.duckdb_store import DuckDBWarehouse

CONFIG = ConsumerSettings(batch_size=1_000, max_wait_s=0.2, block_ms=100, claim_idle_ms=1_000, claim_every_s=0.5)
# Lateness of 3 days: yesterday's windows stay open while both instances' events land (else those landing after a
# window was logged count as late, and reconcile rightly reports MLflow short of them).
WINDOWS = ConsumerSettings(mlflow_window_s=3_600, mlflow_lateness_s=3 * 86_400)
TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)


@contextmanager
def _same(settings: Settings) -> Iterator[Settings]:
    yield settings


def _args(days: int = 2, as_json: bool = True) -> argparse.Namespace:
    return argparse.Namespace(date=TODAY.isoformat(), days=days, json=as_json)


def _run(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = reconcile.run(settings, _args(), _same)
    return code, orjson.loads(capsys.readouterr().out)


def _yesterday(events: list[PredictionEvent]) -> None:
    for e in events:
        stamp = datetime.fromisoformat(e.decision.assessment_timestamp) - timedelta(days=1)
        e.decision.assessment_timestamp = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _publish(settings: Settings, redis: aioredis.Redis, instance: str, events: list[PredictionEvent]) -> None:
    """Half through the publisher's own path (queue → flusher → script), half as explicit blocks, one of them sent
    twice with its sequence number (an outcome-unknown retry): Redis skips it, the ledger does not count it again."""
    publisher = EventPublisher(redis, settings.keys, settings.publisher, instance)
    publisher.start()
    half = len(events) // 2
    for e in events[:half]:
        publisher.publish(e)
    for _ in range(400):
        await asyncio.sleep(0.05)
        if publisher.stats.published == half:
            break
    assert publisher.stats.published == half
    stream = settings.keys.predictions()
    rest = events[half:]
    encoder = msgspec.json.Encoder()
    blocks = [rest[i : i + 100] for i in range(0, len(rest), 100)]
    sent = []
    for block in blocks:
        entry = (
            publisher._seq.take(),
            "".join(f"{e.prediction_id}\n" for e in block),
            [encoder.encode(e) for e in block],
        )
        assert await publisher._append_blocks(stream, [entry], [block_ledger(block)]) == (len(block), 0)
        sent.append((entry, block))
    entry, block = sent[1]
    assert await publisher._append_blocks(stream, [entry], [block_ledger(block)]) == (0, len(block))
    await publisher.stop()


async def _land(settings: Settings, redis: aioredis.Redis) -> None:
    keys = settings.keys
    assert settings.warehouse.duckdb_path is not None
    mlflow = MlflowMetricsHandler(settings.registry, WINDOWS, redis, keys)
    workers = [
        ConsumerWorker(
            redis, keys, WarehouseHandler(DuckDBWarehouse(settings.warehouse.duckdb_path), keys), CONFIG, name="w1"
        ),
        ConsumerWorker(redis, keys, mlflow, CONFIG, name="m1"),
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    for group in ("warehouse", "mlflow"):
        await wait_group_drained(redis, keys.predictions(), group)
    for w in workers:
        w.request_stop()
    await asyncio.gather(*tasks)
    assert await mlflow.flush_closed_windows(now=time.time() + 4 * 86_400) > 0


def _rows(doc: dict[str, object], status: str | None = None) -> list[dict[str, object]]:
    rows = doc["rows"]
    assert isinstance(rows, list)
    return [r for r in rows if status is None or r["status"] == status]


async def test_ledger_matches_warehouse_and_mlflow_then_every_difference_is_reported(
    registry_copy, redis_server, key_prefix, loaded_models, capsys, monkeypatch
):
    settings = registry_copy.replace(key_prefix=key_prefix, redis_url=redis_server.url)
    client = mlflow_client(settings.registry)
    experiment = start_experiment(client, settings.registry, "ab-test", "champion:0.7,challenger:0.3")
    by_instance: dict[str, list[PredictionEvent]] = {}
    for instance, seed in (("api-a", 3), ("api-b", 4)):
        engine = DecisionEngine(ModelSet(loaded_models.models, experiment), instance_id=instance)
        events = make_events(1_200, seed=seed, engine=engine)
        _yesterday(events[:500])  # two UTC days, each with its own ledger hash
        by_instance[instance] = events
    redis = aioredis.from_url(redis_server.url)
    try:
        for instance, events in by_instance.items():
            await _publish(settings, redis, instance, events)
        assert await redis.xlen(settings.keys.predictions()) == 2_400  # the redelivered blocks were skipped
        await _land(settings, redis)
    finally:
        await redis.aclose()

    # 1. Everything landed once: no difference, exit 0; the ledger counted the re-sent blocks once.
    code, doc = _run(settings, capsys)
    assert code == 0, reconcile.render(_result(settings))
    assert doc["ok"] is True
    assert not _rows(doc, "mismatch")
    assert not _rows(doc, "in flight")
    warehouse = {(r["day"], r["key"]): r for r in _rows(doc) if r["sink"] == "warehouse"}
    assert {k: (r["published"], r["landed"]) for k, r in warehouse.items()} == {
        (YESTERDAY.isoformat(), "api-a"): (500, 500),
        (YESTERDAY.isoformat(), "api-b"): (500, 500),
        (TODAY.isoformat(), "api-a"): (700, 700),
        (TODAY.isoformat(), "api-b"): (700, 700),
    }
    arms = {(r["day"], r["key"]): r["published"] for r in _rows(doc) if r["sink"] == "mlflow"}
    exp = experiment.experiment_id
    assert {k for k in arms} == {
        (d.isoformat(), f"{exp}/{a}") for d in (YESTERDAY, TODAY) for a in ("champion", "challenger")
    }
    assert sum(arms.values()) == 2_400

    # 2. Five rows of (yesterday, api-b) deleted: exactly that (day, instance, -5); MLflow still matches; exit 1.
    path = settings.warehouse.duckdb_path
    assert path is not None
    day_sql = "strftime(timezone('UTC', assessment_timestamp), '%Y-%m-%d')"
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            f"DELETE FROM prediction_logs WHERE prediction_id IN (SELECT prediction_id FROM prediction_logs "
            f"WHERE api_instance = 'api-b' AND {day_sql} = ? ORDER BY prediction_id LIMIT 5)",
            [YESTERDAY.isoformat()],
        )
    code, doc = _run(settings, capsys)
    assert code == 1
    assert [(r["day"], r["sink"], r["key"], r["diff"], r["duplicates"]) for r in _rows(doc, "mismatch")] == [
        (YESTERDAY.isoformat(), "warehouse", "api-b", -5, 0)
    ]
    assert reconcile.warnings(_result(settings)) == [f"{YESTERDAY} warehouse api-b: published 500, landed 495 (-5)"]

    # 3. A duplicated row (a warehouse without a key on prediction_id, as BigQuery is): reported as one more row and
    #    one duplicate.
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE keyless AS SELECT * FROM prediction_logs")
        conn.execute("DROP TABLE prediction_logs")
        conn.execute("ALTER TABLE keyless RENAME TO prediction_logs")
        conn.execute(
            f"INSERT INTO prediction_logs SELECT * FROM prediction_logs WHERE api_instance = 'api-a' "
            f"AND {day_sql} = ? ORDER BY prediction_id LIMIT 1",
            [TODAY.isoformat()],
        )
    code, doc = _run(settings, capsys)
    assert code == 1
    assert sorted((r["day"], r["key"], r["diff"], r["duplicates"]) for r in _rows(doc, "mismatch")) == [
        (YESTERDAY.isoformat(), "api-b", -5, 0),
        (TODAY.isoformat(), "api-a", 1, 1),
    ]

    # 4. The table, through the command line (embedded Redis not needed: BNPL_REDIS_URL is set).
    monkeypatch.setenv("BNPL_REDIS_URL", redis_server.url)
    monkeypatch.setenv("BNPL_KEY_PREFIX", key_prefix)
    data_dir = str(path.parent)
    assert main(["--data-dir", data_dir, "reconcile", "--date", TODAY.isoformat(), "--days", "2"]) == 1
    out = capsys.readouterr().out
    assert "api-b" in out
    assert "-5" in out
    assert "mismatch" in out
    assert "MISMATCH: 2 difference(s)" in out


def _result(settings: Settings) -> reconcile.Reconciliation:
    return reconcile.reconcile(settings, [YESTERDAY, TODAY])


async def test_events_not_landed_yet_are_in_flight_not_a_mismatch(
    registry_copy, redis_server, key_prefix, loaded_models, capsys
):
    settings = registry_copy.replace(key_prefix=key_prefix, redis_url=redis_server.url)
    events = make_events(300, seed=9, engine=DecisionEngine(loaded_models, instance_id="api-c"))
    redis = aioredis.from_url(redis_server.url)
    try:
        await redis.xgroup_create(settings.keys.predictions(), "warehouse", id="0", mkstream=True)
        await redis.xgroup_create(settings.keys.predictions(), "mlflow", id="0", mkstream=True)
        await _publish(settings, redis, "api-c", events)  # published; no group has read anything yet
    finally:
        await redis.aclose()
    code, doc = _run(settings, capsys)
    assert code == 0
    assert {(r["sink"], r["key"], r["published"], r["landed"]) for r in _rows(doc, "in flight")} == {
        ("warehouse", "api-c", 300, 0),
        ("mlflow", "live/champion", 300, 0),
    }
    assert set(doc["in_flight"]) == {"warehouse", "mlflow"}  # type: ignore[arg-type]


def test_a_day_without_a_ledger_is_not_judged(registry_copy, redis_server, key_prefix, capsys):
    settings = registry_copy.replace(key_prefix=key_prefix, redis_url=redis_server.url)
    code, doc = _run(settings, capsys)
    assert code == 0
    assert doc["rows"] == []
    assert any("no published ledger" in str(n) for n in doc["notes"])  # type: ignore[union-attr]


def test_with_bigquery_the_warehouse_side_is_counted_there(registry_copy, tmp_path):
    """BNPL_WAREHOUSE=bigquery: the warehouse counts come from a query on prediction_logs (through the real client
    against the HTTP-level fake), per UTC day and API instance."""
    from datetime import UTC, datetime

    from performance.reconcile import _warehouse_counts
    from tests.fakes.bigquery import FakeBigQuery
    from traffic.events import make_events
    from warehouse import make_warehouse
    from warehouse.base import event_columns

    fake = FakeBigQuery().start()
    try:
        settings = registry_copy.replace(
            warehouse="bigquery", bq_project="p", bq_dataset="reconcile", bq_endpoint=fake.endpoint
        )
        events = make_events(120, seed=41)
        store = make_warehouse(settings.warehouse)
        store.ensure_tables()
        assert store.insert_predictions(event_columns(events)).inserted == 120  # type: ignore[attr-defined]
        store.close()
        day = datetime.fromisoformat(events[0].decision.assessment_timestamp).astimezone(UTC).date().isoformat()
        counted = _warehouse_counts(settings, [day])
    finally:
        fake.stop()
    on_day = [e for e in events if e.decision.assessment_timestamp.startswith(day)]
    assert counted == {(day, events[0].api_instance): (len(on_day), len(on_day))}
