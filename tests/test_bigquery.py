"""The BigQuery sink through the real google-cloud-bigquery client against an HTTP-level fake."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import msgspec
import pytest
import redis.asyncio as aioredis

from common.keys import Keys, decode_entry
from common.settings import ConsumerSettings
from consumers.base import Entry
from consumers.runtime import ConsumerWorker
from consumers.warehouse import WarehouseHandler
from schemas.warehouse import PREDICTION_LOGS
from tests.fakes.bigquery import FakeBigQuery
from tests.streams import add_events, kill_workers_mid_batch, make_events, wait_group_drained, worker_env
from warehouse.base import event_columns
from warehouse.bigquery_store import RETRY, STAGING_PREFIX, BigQueryWarehouse, batch_key, bigquery_client

PROJECT, DATASET = "test-project", "bnpl_test"
FAST_RETRY = RETRY.with_timeout(20).with_delay(initial=0.05, maximum=0.2)


@pytest.fixture
def fake():
    server = FakeBigQuery().start()
    yield server
    assert server.violations == []  # no request BigQuery would refuse
    server.stop()


def _warehouse(fake: FakeBigQuery, mode: str = "load") -> BigQueryWarehouse:
    client = bigquery_client(PROJECT, endpoint=fake.endpoint, anonymous=True)
    return BigQueryWarehouse(client, DATASET, retry=FAST_RETRY, mode=mode, job_retry_delay_s=0.01)


@pytest.fixture
def bq(fake):
    warehouse = _warehouse(fake)
    warehouse.ensure_tables()
    yield warehouse
    warehouse.close()


def _landed_ids(fake: FakeBigQuery) -> Counter[str]:
    return Counter(r["prediction_id"] for r in fake.rows[(DATASET, "prediction_logs")].values())


async def _alerts(redis, keys: Keys) -> list[dict]:
    return [json.loads(decode_entry(f).payload) for _, f in await redis.xrange(keys.alerts())]


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


# --- load mode (the default): load job into a staging table, then MERGE on prediction_id ---------------------------
def _load_jobs(fake: FakeBigQuery) -> dict[str, dict]:
    return {k: j for k, j in fake.jobs.items() if "load" in j["configuration"]}


def test_a_batch_is_a_load_job_then_a_merge_with_deterministic_ids(fake, bq):
    events = make_events(300, seed=21)
    assert bq.insert_predictions(event_columns(events)).inserted == 300
    key = batch_key(f"{PROJECT}.{DATASET}", [e.prediction_id for e in events])
    staging = f"{STAGING_PREFIX}{key}"
    (load_id,) = _load_jobs(fake)
    assert load_id == f"bnpl_load_{key}_0"
    load = fake.jobs[load_id]["configuration"]["load"]
    assert load["sourceFormat"] == "NEWLINE_DELIMITED_JSON"
    assert (load["writeDisposition"], load["createDisposition"]) == ("WRITE_TRUNCATE", "CREATE_NEVER")
    assert load["destinationTable"]["tableId"] == staging
    assert load["maxBadRecords"] == 10
    assert [f["name"] for f in load["schema"]["fields"]] == [c.name for c in PREDICTION_LOGS]
    assert fake.uploads == ["multipart"]  # under 5 MB; larger batches upload resumably (below)
    # The staging table was created with an expiry (a crashed batch leaves nothing for long), then dropped.
    created = [b for m, p, b in fake.requests if m == "POST" and p.endswith("/tables") and staging in json.dumps(b)]
    assert len(created) == 1
    assert "expirationTime" in created[0]
    assert ("DELETE", f"/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}/tables/{staging}", 204) in fake.statuses
    assert (DATASET, staging) not in fake.tables
    merge = fake.jobs[f"bnpl_merge_{key}_0"]["configuration"]["query"]["query"]
    day = events[0].decision.assessment_timestamp[:10]
    assert f"T.assessment_timestamp >= TIMESTAMP '{day}'" in merge  # the partition filter of the batch's days
    assert fake.merges[0]["inserted"] == 300
    # JSON columns hold the documents (a load would store text as a JSON string)
    row = next(iter(fake.rows[(DATASET, "prediction_logs")].values()))
    assert isinstance(row["risk_thresholds"], dict)

    # The same batch again (a redelivery, whenever): its merge job is found done; nothing is loaded again.
    fake.clock = lambda: time.time() + 3_600
    result = bq.insert_predictions(event_columns(events))
    assert (result.inserted, result.duplicates) == (0, 300)
    assert len(_load_jobs(fake)) == 1
    assert len(fake.merges) == 1
    # With other companions (another key): loaded and merged, and only the new rows are added.
    more = make_events(20, seed=22)
    result = bq.insert_predictions(event_columns(events[:50] + more))
    assert (result.inserted, result.duplicates) == (20, 50)
    assert sorted(_landed_ids(fake).values()) == [1] * 320


def test_a_large_batch_uploads_resumably(fake, bq):
    events = make_events(4_000, seed=23)
    assert bq.insert_predictions(event_columns(events)).inserted == 4_000
    assert fake.uploads == ["resumable"]
    assert [s for m, p, s in fake.statuses if m == "PUT"] == [200]
    assert len(_landed_ids(fake)) == 4_000


def test_a_retried_load_whose_job_id_exists_uses_that_job(fake, bq, monkeypatch):
    events = make_events(200, seed=24)
    merge = bq._merge

    def crash(*args):  # the worker dies between the load and the MERGE
        raise ConnectionError("worker died")

    monkeypatch.setattr(bq, "_merge", crash)
    with pytest.raises(ConnectionError):
        bq.insert_predictions(event_columns(events))
    monkeypatch.setattr(bq, "_merge", merge)
    assert bq.insert_predictions(event_columns(events)).inserted == 200
    conflicts = [(m, p) for m, p, s in fake.statuses if s == 409 and "/jobs" in p]
    assert conflicts == [("POST", f"/upload/bigquery/v2/projects/{PROJECT}/jobs")]  # the id was taken: 409
    assert len(_load_jobs(fake)) == 1  # fetched and reused, not loaded twice
    assert sorted(_landed_ids(fake).values()) == [1] * 200


async def _run_handler(bq, redis, keys, stream, *, max_deliveries=2):
    config = ConsumerSettings(
        max_wait_s=0.2, block_ms=100, claim_idle_ms=300, claim_every_s=0.2, max_deliveries=max_deliveries
    )
    handler = WarehouseHandler(bq, keys, redis, batching=(1_000, 0.3))
    worker = ConsumerWorker(redis, keys, handler, config, name="bq")
    assert worker.config.batch_size == 1_000  # the handler's batching replaces the group's
    task = asyncio.create_task(worker.run())
    await wait_group_drained(redis, stream, "warehouse", seconds=60)
    worker.request_stop()
    await task
    return worker


async def test_invalid_rows_are_dead_lettered_with_one_critical_data_quality_alert(fake, bq, redis_server, key_prefix):
    events = make_events(300, seed=25)
    bad_time = msgspec.structs.replace(
        events[7], decision=msgspec.structs.replace(events[7].decision, assessment_timestamp="yesterday-ish")
    )
    events[7] = bad_time  # refused before loading (the schema check)
    fake.reject_ids = {events[120].prediction_id: "No such field: surprise."}  # refused by BigQuery (maxBadRecords)
    redis = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    stream = keys.predictions()
    try:
        await add_events(redis, stream, events)
        await _run_handler(bq, redis, keys, stream)
        dead = await redis.xrange(keys.dead_letter(stream))
        alerts = await _alerts(redis, keys)
    finally:
        await redis.aclose()
    by_id = {decode_entry(f).record_id: f[b"error"].decode() for _, f in dead}
    assert sorted(by_id) == sorted([events[7].prediction_id, events[120].prediction_id])
    assert "assessment_timestamp: not a valid TIMESTAMP" in by_id[events[7].prediction_id]
    assert "No such field: surprise." in by_id[events[120].prediction_id]
    assert sorted(_landed_ids(fake).values()) == [1] * 298
    quality = [a for a in alerts if a["kind"] == "warehouse_data_quality"]
    assert len(quality) == 1  # rejected again at the redelivery: the same cause alerts once
    assert quality[0]["severity"] == "critical"
    assert quality[0]["value"] == 2
    assert "No such field: surprise." in quality[0]["message"] or "not a valid TIMESTAMP" in quality[0]["message"]


async def test_a_failing_upload_raises_one_critical_alert_and_lands_once_it_recovers(
    fake, bq, redis_server, key_prefix
):
    fake.fail_loads = 7  # 3 attempts per call: the batch fails twice, then lands at its third delivery
    events = make_events(500, seed=26)
    redis = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    stream = keys.predictions()
    try:
        await add_events(redis, stream, events)
        worker = await _run_handler(bq, redis, keys, stream)
        alerts = await _alerts(redis, keys)
    finally:
        await redis.aclose()
    assert worker.stats.retries == 2
    upload = [a for a in alerts if a["kind"] == "warehouse_upload_failed"]
    assert len(upload) == 1  # once for the batch, not once per retry
    assert upload[0]["severity"] == "critical"
    assert "injected load failure" in upload[0]["message"]
    assert sorted(_landed_ids(fake).values()) == [1] * 500
    assert len(_load_jobs(fake)) == 8  # 7 failed attempts, each under the next id, then the one that landed


async def test_20k_events_three_sigkills_and_a_late_redelivery_land_every_prediction_once(
    fake, bq, tmp_path, redis_server, key_prefix
):
    """Worker processes on the fake: SIGKILLed mid-batch 3 times; then batches that already landed come again 10
    minutes later (past any insertId window): the MERGE on prediction_id adds nothing."""
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(20_000, seed=27)
    redis = aioredis.from_url(redis_server.url)
    try:
        await add_events(redis, stream, events)
        env = worker_env(
            redis_server.url,
            key_prefix,
            tmp_path / "unused.duckdb",
            tmp_path / "data",
            BNPL_WAREHOUSE="bigquery",
            BNPL_BQ_PROJECT=PROJECT,
            BNPL_BQ_DATASET=DATASET,
            BNPL_BQ_ENDPOINT=fake.endpoint,
            BNPL_BQ_BATCH_ROWS="1000",
            BNPL_BQ_BATCH_MAX_S="0.5",
            BNPL_METRICS_PORT="0",
        )
        await kill_workers_mid_batch(redis, stream, "warehouse", env, kills=3)
        landed = _landed_ids(fake)
        assert len(landed) == 20_000
        assert set(landed.values()) == {1}

        # A late redelivery (10 minutes on): one batch exactly as it landed, and one of other companions.
        fake.clock = lambda: time.time() + 600
        entries = {decode_entry(f).record_id: Entry(stream, i.decode(), f) for i, f in await redis.xrange(stream)}
        loads = len(_load_jobs(fake))
        first_load = next(ids for job_id, ids in fake.loaded.items())
        handler = WarehouseHandler(bq, keys, redis)
        result = await handler.handle([entries[pid] for pid in first_load])
        assert result.failed == {}
        assert len(_load_jobs(fake)) == loads  # its merge job is found done: nothing loaded again
        mixed = [entries[e.prediction_id] for e in events[500:1_700]]
        assert (await handler.handle(mixed)).failed == {}
        assert fake.merges[-1]["inserted"] == 0
    finally:
        await redis.aclose()
    landed = _landed_ids(fake)
    assert len(landed) == 20_000
    assert set(landed.values()) == {1}
    assert set(landed) == {e.prediction_id for e in events}


async def test_events_waiting_longer_than_the_max_delay_raise_a_warning(bq, redis_server, key_prefix):
    redis = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    stream = keys.predictions()
    try:
        await add_events(redis, stream, make_events(5, seed=28))
        await redis.xgroup_create(stream, "warehouse", id="0")
        handler = WarehouseHandler(bq, keys, redis, max_delay_s=0.5)
        await handler.tick()
        assert await _alerts(redis, keys) == []  # not late yet
        await asyncio.sleep(0.6)
        handler._last_delay_check = 0.0
        await handler.tick()
        (alert,) = await _alerts(redis, keys)
    finally:
        await redis.aclose()
    assert (alert["kind"], alert["severity"]) == ("warehouse_delay", "warning")
    assert stream in alert["message"]


def test_daily_counts_are_what_reconcile_compares_and_show_a_duplicate(fake, bq):
    """Rows and distinct prediction ids per (UTC day, API instance), through a parameterised query with the
    partition filter; a row landed twice (the table has no key) shows as one more row than ids."""
    from datetime import UTC, datetime, timedelta

    events = make_events(200, seed=31)
    assert bq.insert_predictions(event_columns(events)).inserted == 200
    day = datetime.fromisoformat(events[0].decision.assessment_timestamp).astimezone(UTC).date()
    start = datetime.combine(day, datetime.min.time(), UTC)
    expected = Counter(
        datetime.fromisoformat(e.decision.assessment_timestamp).astimezone(UTC).strftime("%Y-%m-%d") for e in events
    )
    counted = bq.daily_counts(start - timedelta(days=1), start + timedelta(days=2))
    assert {d: n for d, _, n, _ in counted} == dict(expected)
    assert all(n == distinct for _, _, n, distinct in counted)
    assert {i for _, i, _, _ in counted} == {events[0].api_instance}
    table = fake.rows[(DATASET, "prediction_logs")]
    key, row = next(iter(table.items()))
    table[f"{key}-again"] = dict(row)  # landed twice
    again = {(d, i): (n, distinct) for d, i, n, distinct in bq.daily_counts(start, start + timedelta(days=1))}
    n, distinct = again[(day.isoformat(), events[0].api_instance)]
    assert n == distinct + 1
    query = next(q for q in fake.queries if q.startswith("SELECT FORMAT_TIMESTAMP"))
    assert "WHERE assessment_timestamp >= @start AND assessment_timestamp < @end" in query
    assert not fake.violations
