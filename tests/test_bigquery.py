"""The BigQuery sink through the real google-cloud-bigquery client against an HTTP-level fake."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
import redis.asyncio as aioredis

from common.keys import Keys, decode_entry
from common.settings import ConsumerSettings
from consumers.runtime import ConsumerWorker
from consumers.warehouse import WarehouseHandler
from schemas.warehouse import PREDICTION_LOGS
from tests.fakes.bigquery import FakeBigQuery
from tests.streams import add_events, make_events, wait_group_drained
from warehouse.base import event_columns
from warehouse.bigquery_store import RETRY, BigQueryWarehouse, bigquery_client

PROJECT, DATASET = "test-project", "bnpl_test"


@pytest.fixture
def fake():
    server = FakeBigQuery().start()
    yield server
    server.stop()


@pytest.fixture
def bq(fake):
    client = bigquery_client(PROJECT, endpoint=fake.endpoint, anonymous=True)
    warehouse = BigQueryWarehouse(client, DATASET, retry=RETRY.with_timeout(20).with_delay(initial=0.05, maximum=0.2))
    warehouse.ensure_tables()
    yield warehouse
    warehouse.close()


def test_tables_are_created_partitioned_clustered_with_expiry(fake, bq):
    table = fake.tables[(DATASET, "prediction_logs")]
    assert table["timePartitioning"] == {
        "type": "DAY",
        "field": "assessment_timestamp",
        "expirationMs": str(63_072_000_000),
    }
    assert table["clustering"] == {"fields": ["customer_id", "selected_model"]}
    fields = {f["name"]: f for f in table["schema"]["fields"]}
    assert list(fields) == [c.name for c in PREDICTION_LOGS]
    assert fields["prediction_id"]["mode"] == "REQUIRED"
    assert fields["features"] == {"name": "features", "type": "FLOAT64", "mode": "REPEATED"}
    assert fields["all_predictions"]["type"] == "JSON"
    assert fields["assessment_timestamp"]["type"] == "TIMESTAMP"
    assert {(DATASET, "experiments"), (DATASET, "model_metrics"), (DATASET, "prediction_logs_dedup")} <= set(
        fake.tables
    )
    assert (
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY prediction_id"
        in fake.tables[(DATASET, "prediction_logs_dedup")]["view"]["query"]
    )
    bq.ensure_tables()  # idempotent: existing dataset and tables are fine (409 → get)


def test_rows_carry_insert_ids_and_redelivery_does_not_duplicate(fake, bq):
    events = make_events(1_200, seed=11)
    columns = event_columns(events)
    assert bq.insert_predictions(columns).inserted == 1_200
    assert bq.insert_predictions(columns).inserted == 1_200  # a redelivered batch: BigQuery dedups on insertId
    stored = fake.rows[(DATASET, "prediction_logs")]
    assert len(stored) == 1_200
    calls = [body for method, path, body in fake.requests if path.endswith("/prediction_logs/insertAll")]
    assert len(calls) == 6  # 500 rows per request
    first = calls[0]["rows"][0]
    assert first["insertId"] == events[0].prediction_id
    assert first["json"]["prediction_id"] == events[0].prediction_id
    assert json.loads(first["json"]["risk_thresholds"]) == events[0].decision.risk_thresholds
    assert calls[0]["skipInvalidRows"] is True


def test_transient_errors_are_retried(fake, bq):
    fake.fail_next = [503, 429, 500]
    events = make_events(10, seed=12)
    assert bq.insert_predictions(event_columns(events)).inserted == 10
    attempts = [p for m, p, _ in fake.requests if p.endswith("/prediction_logs/insertAll")]
    assert len(attempts) == 4
    assert len(fake.rows[(DATASET, "prediction_logs")]) == 10


async def test_rows_that_can_never_load_are_dead_lettered(fake, bq, redis_server, key_prefix):
    # The fake's table demands model_version; rule-based decisions have none, so those rows are invalid.
    table = fake.tables[(DATASET, "prediction_logs")]
    for field in table["schema"]["fields"]:
        if field["name"] == "model_version":
            field["mode"] = "REQUIRED"
    events = make_events(300, seed=13)
    events = [
        e
        if i in (5, 250)
        else msgspec.structs.replace(e, decision=msgspec.structs.replace(e.decision, model_version="3"))
        for i, e in enumerate(events)
    ]
    redis = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    stream = keys.predictions()
    try:
        await add_events(redis, stream, events)
        config = ConsumerSettings(
            batch_size=500, max_wait_s=0.2, block_ms=100, claim_idle_ms=300, claim_every_s=0.2, max_deliveries=2
        )
        worker = ConsumerWorker(redis, keys, WarehouseHandler(bq, keys), config, name="bq")
        task = asyncio.create_task(worker.run())
        await wait_group_drained(redis, stream, "warehouse", seconds=60)
        worker.request_stop()
        await task
        dead = await redis.xrange(keys.dead_letter(stream))
    finally:
        await redis.aclose()
    assert sorted(decode_entry(f).record_id for _, f in dead) == sorted(
        [events[5].prediction_id, events[250].prediction_id]
    )
    assert all(b"Missing required field: model_version" in f[b"error"] for _, f in dead)
    assert len(fake.rows[(DATASET, "prediction_logs")]) == 298


def test_outcomes_table_is_partitioned_by_outcome_date_and_outcomes_carry_their_id(fake, bq):
    from datagen import generate
    from datagen.outcomes import funded_outcomes
    from producers.outcomes import outcome_events
    from schemas.outcomes import parse_outcome

    table = fake.tables[(DATASET, "outcomes")]
    assert table["timePartitioning"] == {"type": "DAY", "field": "outcome_date"}
    assert table["clustering"] == {"fields": ["customer_id"]}
    assert fake.tables[(DATASET, "model_metrics")]["timePartitioning"] == {"type": "DAY", "field": "analysis_date"}
    view = fake.tables[(DATASET, "outcomes_current")]["view"]["query"]
    assert "PARTITION BY transaction_id" in view
    assert "ORDER BY outcome_date DESC" in view

    data = generate(300, seed=13)
    records = funded_outcomes(data, dict.fromkeys(data.columns["transaction_id"].tolist(), "approve"), 0.5, 13)
    events = outcome_events([parse_outcome(r) for r in records], "api")
    assert bq.insert_outcomes(events).inserted == len(records)
    assert bq.insert_outcomes(events + events[:10]).unchanged == 10  # resent: the same ids, collapsed
    stored = fake.rows[(DATASET, "outcomes")]
    assert sorted(stored) == sorted(e.outcome_id for e in events)  # insertId = outcome_id: one row each
    row = stored[events[0].outcome_id]
    assert row["transaction_id"] == records[0]["transaction_id"]
    assert row["outcome_date"].startswith(records[0]["outcome_date"][:10])


def test_audit_records_land_in_a_partitioned_model_events_table_with_their_ids(fake, bq):
    from governance.audit import ModelEvent

    table = fake.tables[(DATASET, "model_events")]
    assert table["timePartitioning"] == {"type": "DAY", "field": "occurred_at"}
    assert table["clustering"] == {"fields": ["model_name", "alias"]}
    events = [
        ModelEvent("m", "promote", "ops@host", "champion", None, "3", False, "first", {"gate": {"passed": True}}),
        ModelEvent("m", "fallback_on", "guardian", reason="no model passes"),
    ]
    bq.insert_model_events([e.row() for e in events])
    bq.insert_model_events([events[0].row()])  # a catch-up that re-sends one: BigQuery dedups on insertId
    assert len(fake.rows[(DATASET, "model_events")]) == 2
    (call, _) = [body for method, path, body in fake.requests if path.endswith("/model_events/insertAll")]
    assert [r["insertId"] for r in call["rows"]] == [e.event_id for e in events]
    first = call["rows"][0]["json"]
    assert (first["action"], first["alias"], first["to_version"], first["forced"]) == (
        "promote",
        "champion",
        "3",
        False,
    )
    assert json.loads(first["evidence"]) == {"gate": {"passed": True}}
