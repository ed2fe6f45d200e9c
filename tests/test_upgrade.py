"""Upgrading from event version 1: old events still decode, old spools replay (test_publisher), old warehouse
tables migrate (DuckDB in place, BigQuery by a rebuild through the real client against the HTTP fake)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio as aioredis

from common.keys import Keys
from common.settings import ConsumerSettings
from consumers.runtime import ConsumerWorker
from consumers.warehouse import WarehouseHandler
from decision.engine import DecisionEngine
from schemas.events import PredictionEvent, decode_event
from schemas.response import ReasonCode
from schemas.warehouse import PREDICTION_LOGS, v1_prediction_log_columns
from tests.streams import add_events, make_events, wait_group_drained
from traffic.events import as_v1
from warehouse.duckdb_store import DuckDBWarehouse, create_table_sql

FAST = ConsumerSettings(batch_size=500, max_wait_s=0.2, block_ms=100, claim_idle_ms=1_000, claim_every_s=0.5)


def _what_v1_kept(event: PredictionEvent) -> PredictionEvent:
    """What a version 1 event can tell of ``event``: no champion_model, reason codes without contributions."""
    reasons = [ReasonCode(r.code, r.field) for r in event.decision.reason_codes]
    decision = msgspec.structs.replace(event.decision, champion_model=None, reason_codes=reasons)
    return msgspec.structs.replace(event, decision=decision)


@pytest.fixture(scope="module")
def events(loaded_models) -> list[PredictionEvent]:
    """Model-decided events: every reason-code kind (policy rules and model contributions) occurs."""
    events = make_events(2_000, seed=61, engine=DecisionEngine(loaded_models))
    assert {r.contribution is None for e in events for r in e.decision.reason_codes} == {True, False}
    return events


def test_version_1_events_decode_into_the_current_record(events):
    for event in events:
        upgraded = decode_event(1, msgspec.json.encode(as_v1(event)))
        assert upgraded == _what_v1_kept(event)
    with pytest.raises(ValueError, match="version 9"):
        decode_event(9, msgspec.json.encode(events[0]))


async def test_warehouse_group_lands_version_1_and_2_entries_alike(tmp_path, redis_server, key_prefix, events):
    keys = Keys(key_prefix)
    stream = keys.predictions()
    redis = aioredis.from_url(redis_server.url)
    path = tmp_path / "wh.duckdb"
    try:
        await add_events(redis, stream, events[:1_000], version=1, encode=lambda e: msgspec.json.encode(as_v1(e)))
        await add_events(redis, stream, events[1_000:])
        worker = ConsumerWorker(redis, keys, WarehouseHandler(DuckDBWarehouse(path), keys), FAST, name="w")
        task = asyncio.create_task(worker.run())
        await wait_group_drained(redis, stream, "warehouse")
        worker.request_stop()
        await task
    finally:
        await redis.aclose()
    rows = DuckDBWarehouse(path).query(
        "SELECT prediction_id, business_decision, traffic_segment, model_version FROM prediction_logs"
    )
    d = {e.prediction_id: e.decision for e in events}
    assert sorted(r[0] for r in rows) == sorted(d)
    assert all(
        (r[1], r[2], r[3]) == (d[r[0]].business_decision, d[r[0]].traffic_segment, d[r[0]].model_version) for r in rows
    )


def _v1_table(path, events: list[PredictionEvent]) -> None:
    """A DuckDB warehouse as the previous version left it: version 1 layout and rows."""
    import duckdb

    columns = v1_prediction_log_columns()
    conn = duckdb.connect(str(path))
    conn.execute(create_table_sql("prediction_logs", columns, "prediction_id"))
    for event in events:
        flat = msgspec.to_builtins(as_v1(event))
        flat.update(flat.pop("request"))
        values = []
        for c in columns:
            value = flat.get(c.name)
            values.append(msgspec.json.encode(value).decode() if c.kind == "JSON" else value)
        values[-1] = "2026-01-01T00:00:00Z"  # ingested_at
        conn.execute(f"INSERT INTO prediction_logs VALUES ({', '.join('?' for _ in columns)})", values)
    conn.close()


def test_duckdb_migrates_a_version_1_table_in_place(tmp_path, events):
    path = tmp_path / "old.duckdb"
    _v1_table(path, events[:300])
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_tables()
    columns_sql = (
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'prediction_logs' "
        "ORDER BY ordinal_position"
    )
    names = [r[0] for r in warehouse.query(columns_sql)]
    assert names == [c.name for c in PREDICTION_LOGS]
    assert warehouse.query("SELECT version FROM schema_versions WHERE table_name = 'prediction_logs'") == [(2,)]
    rows = {
        r[0]: r[1:]
        for r in warehouse.query(
            "SELECT prediction_id, business_decision, traffic_segment, json(all_predictions), champion_model, "
            "json(reason_codes) FROM prediction_logs"
        )
    }
    assert len(rows) == 300
    for event in events[:300]:
        d = _what_v1_kept(event).decision
        business, arm, scores, champion, reasons = rows[event.prediction_id]
        assert (business, arm, champion) == (d.business_decision, d.traffic_segment, None)
        assert msgspec.json.decode(scores) == d.all_predictions
        assert msgspec.json.decode(reasons, type=list[ReasonCode]) == d.reason_codes
    # Current events land beside the migrated rows; a second ensure_tables changes nothing.
    payloads = [msgspec.json.encode(e) for e in events[300:400]]
    result, rejected = warehouse.insert_events(payloads)
    assert (result.inserted, rejected) == (100, {})
    warehouse.ensure_tables()
    assert warehouse.query("SELECT count(*) FROM prediction_logs") == [(400,)]


def test_bigquery_refuses_a_version_1_table_and_migrate_rebuilds_it(events):
    from google.cloud import bigquery

    from tests.fakes.bigquery import FakeBigQuery
    from warehouse.bigquery_store import (
        RETRY,
        BigQueryWarehouse,
        MigrationRequiredError,
        bigquery_client,
        schema_fields,
    )

    fake = FakeBigQuery().start()
    try:
        client = bigquery_client("p", endpoint=fake.endpoint, anonymous=True)
        warehouse = BigQueryWarehouse(client, "d", retry=RETRY.with_timeout(20).with_delay(initial=0.05, maximum=0.2))
        client.create_dataset("p.d")
        old = bigquery.Table("p.d.prediction_logs", schema=schema_fields(v1_prediction_log_columns()))
        old.time_partitioning = bigquery.TimePartitioning(field="event_time")
        client.create_table(old)
        with pytest.raises(MigrationRequiredError, match="bnpl warehouse migrate"):
            warehouse.ensure_tables()
        assert warehouse.layout_version() == 1

        statements = warehouse.migrate()
        assert fake.queries == statements
        create, keep_old, take_name = statements
        assert create.startswith("CREATE TABLE `p.d.prediction_logs_v2` (`prediction_id` STRING NOT NULL, ")
        assert "PARTITION BY DATE(`assessment_timestamp`) CLUSTER BY customer_id, selected_model" in create
        assert "`event_time` AS `assessment_timestamp`" in create
        assert "`arm` AS `traffic_segment`" in create
        assert "WHEN 'HIGH_LIMIT_UTILISATION' THEN 'payment_credit_limit'" in create
        assert keep_old == "ALTER TABLE `p.d.prediction_logs` RENAME TO `prediction_logs_v1`"
        assert take_name == "ALTER TABLE `p.d.prediction_logs_v2` RENAME TO `prediction_logs`"
        table = fake.tables[("d", "prediction_logs")]
        assert [f["name"] for f in table["schema"]["fields"]] == [c.name for c in PREDICTION_LOGS]
        assert ("d", "prediction_logs_v1") in fake.tables
        assert warehouse.layout_version() == 2
        assert warehouse.migrate() == []  # already current
        result, rejected = warehouse.insert_events([msgspec.json.encode(e) for e in events[:50]])
        assert (result.inserted, rejected) == (50, {})
        warehouse.close()
    finally:
        fake.stop()
