"""``BNPL_BQ_MODE=stream``: the real Storage Write client against an in-process gRPC fake of ``BigQueryWrite``."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime

import msgspec
import pytest
import redis.asyncio as aioredis
from google.protobuf import descriptor_pb2

from common.keys import Keys, decode_entry
from common.settings import ConsumerSettings
from consumers.base import Entry
from consumers.runtime import ConsumerWorker
from consumers.warehouse import WarehouseHandler
from consumers.warehouse_stream import StreamAppender
from schemas.warehouse import PREDICTION_LOGS
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.bigquery_write import FakeBigQueryWrite
from tests.streams import add_events, make_events, wait_group_drained
from warehouse.base import BatchUploadError
from warehouse.bigquery_store import RETRY, BigQueryWarehouse, bigquery_client
from warehouse.bigquery_write import CommittedWriter, micros, row_descriptor, write_client

PROJECT, DATASET = "test-project", "bnpl_test"
TABLE = f"projects/{PROJECT}/datasets/{DATASET}/tables/prediction_logs"
FAST_RETRY = RETRY.with_timeout(20).with_delay(initial=0.05, maximum=0.2)
CONFIG = ConsumerSettings(
    batch_size=1_000, max_wait_s=0.2, block_ms=100, claim_idle_ms=300, claim_every_s=0.2, max_deliveries=2
)


@pytest.fixture
def fakes():
    http, grpc_fake = FakeBigQuery().start(), FakeBigQueryWrite().start()
    yield http, grpc_fake
    grpc_fake.stop()
    http.stop()


@pytest.fixture
def bq(fakes):
    http, grpc_fake = fakes
    client = bigquery_client(PROJECT, endpoint=http.endpoint, anonymous=True)
    writer = CommittedWriter(write_client(grpc_fake.endpoint), TABLE, list(PREDICTION_LOGS))
    warehouse = BigQueryWarehouse(client, DATASET, retry=FAST_RETRY, mode="stream", writer=writer)
    warehouse.ensure_tables()
    yield warehouse
    warehouse.close()


@pytest.fixture
async def redis(redis_server):
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _ids(fake: FakeBigQueryWrite) -> Counter[str]:
    return Counter(r["prediction_id"] for r in fake.rows())


async def _pending(redis, stream: str) -> list[Entry]:
    """Deliver every entry of ``stream`` to consumer ``c`` of the warehouse group (as a worker would)."""
    await redis.xgroup_create(stream, "warehouse", id="0", mkstream=True)
    response = await redis.xreadgroup("warehouse", "c", {stream: ">"})
    return [Entry(stream, i.decode(), f) for i, f in response[0][1]]


def test_row_descriptor_follows_the_documented_type_mapping():
    fields = {f.name: f for f in row_descriptor(list(PREDICTION_LOGS)).field}
    f = descriptor_pb2.FieldDescriptorProto
    assert fields["prediction_id"].type == f.TYPE_STRING
    assert fields["prediction_id"].label == f.LABEL_REQUIRED
    assert fields["assessment_timestamp"].type == f.TYPE_INT64  # TIMESTAMP: microseconds since the epoch
    assert fields["features"].type == f.TYPE_DOUBLE
    assert fields["features"].label == f.LABEL_REPEATED
    assert fields["all_predictions"].type == f.TYPE_STRING  # JSON as its text
    assert fields["model_version"].label == f.LABEL_OPTIONAL
    assert [x.number for x in fields.values()] == list(range(1, len(PREDICTION_LOGS) + 1))
    assert micros("2026-11-27T10:00:00.000123+00:00") == micros(datetime(2026, 11, 27, 10, 0, 0, 123, tzinfo=UTC))
    assert micros("1970-01-01T00:00:01") == 1_000_000


async def _pending_batch(bq, redis, key_prefix: str, events) -> tuple[Keys, str, list[Entry], WarehouseHandler]:
    """``events`` on a fresh prediction stream, read by the warehouse group (pending), and a handler for them."""
    keys = Keys(key_prefix)
    stream = keys.predictions()
    await add_events(redis, stream, events)
    return keys, stream, await _pending(redis, stream), WarehouseHandler(bq, keys, redis)


async def _crash_after_append(handler, entries, monkeypatch) -> None:
    """Handle ``entries`` with the worker dying right after BigQuery appended them, before the ack."""

    async def crash(self, *args):
        raise RuntimeError("worker died after the append")

    with monkeypatch.context() as patch:
        patch.setattr(StreamAppender, "_resolve", crash)
        with pytest.raises(RuntimeError):
            await handler.handle(entries)


async def test_5000_events_land_once_though_a_batch_is_redelivered_after_its_append(
    fakes, bq, redis, key_prefix, monkeypatch
):
    _, fake = fakes
    keys = Keys(key_prefix)
    stream = keys.predictions()
    events = make_events(5_000, seed=41)
    resolve = StreamAppender._resolve
    crashes = {"after append": 1}

    async def crash_once(self, *args):  # the worker "dies" between the append and the XACK, once
        if crashes["after append"]:
            crashes["after append"] -= 1
            raise RuntimeError("worker died after the append")
        await resolve(self, *args)

    monkeypatch.setattr(StreamAppender, "_resolve", crash_once)
    await add_events(redis, stream, events)
    worker = ConsumerWorker(redis, keys, WarehouseHandler(bq, keys, redis), CONFIG, name="bq")
    task = asyncio.create_task(worker.run())
    await wait_group_drained(redis, stream, "warehouse", seconds=60)
    worker.request_stop()
    await task
    landed = _ids(fake)
    assert sorted(landed) == sorted(e.prediction_id for e in events)
    assert set(landed.values()) == {1}  # each prediction once
    statuses = Counter(status for _, _, status in fake.answers)
    assert statuses["ALREADY_EXISTS"] == 2  # the redelivered batch (1,000 rows, 2 requests) met its own rows
    state = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.bq_write_state(stream))).items()}
    assert state["next"] == "5000"
    assert "intent" not in state


async def test_a_redelivery_with_other_companions_replays_the_intent_at_its_offset(
    fakes, bq, redis, key_prefix, monkeypatch
):
    _, fake = fakes
    events = make_events(900, seed=42)
    _, stream, entries, handler = await _pending_batch(bq, redis, key_prefix, events)

    await _crash_after_append(handler, entries[:600], monkeypatch)
    assert len(fake.rows()) == 600  # appended, nothing acked
    result = await handler.handle(entries[300:900])  # half of it again, with new companions; 0-299 read back
    assert result.failed == {}
    assert result.acked
    landed = _ids(fake)
    assert len(landed) == 900
    assert set(landed.values()) == {1}
    assert (await redis.xpending(stream, "warehouse"))["pending"] == 0
    assert Counter(s for _, _, s in fake.answers)["ALREADY_EXISTS"] == 2  # the intent's 600 rows, replayed


async def test_a_gap_offset_fails_the_batch_with_an_alert_and_writes_nothing(fakes, bq, redis, key_prefix):
    _, fake = fakes
    keys, stream, entries, handler = await _pending_batch(bq, redis, key_prefix, make_events(200, seed=43))
    await handler.handle(entries[:100])
    await redis.hset(keys.bq_write_state(stream), "next", 5_000)  # ahead of the write stream's end
    with pytest.raises(BatchUploadError, match="OffsetGapError"):
        await handler.handle(entries[100:])
    assert len(fake.rows()) == 100
    assert (await redis.xpending(stream, "warehouse"))["pending"] == 100  # nothing acked: retried later
    assert "OUT_OF_RANGE" in {s for _, _, s in fake.answers}
    alerts = [json.loads(decode_entry(f).payload) for _, f in await redis.xrange(keys.alerts())]
    assert [a["kind"] for a in alerts] == ["warehouse_upload_failed"]


async def test_rows_bigquery_refuses_are_dead_lettered_and_the_rest_appended(fakes, bq, redis, key_prefix):
    _, fake = fakes
    fake.required = {"model_version"}  # rule-based decisions have none: BigQuery refuses those rows
    events = make_events(300, seed=13)
    events = [
        e
        if i in (5, 250)
        else msgspec.structs.replace(e, decision=msgspec.structs.replace(e.decision, model_version="3"))
        for i, e in enumerate(events)
    ]
    keys = Keys(key_prefix)
    stream = keys.predictions()
    await add_events(redis, stream, events)
    worker = ConsumerWorker(redis, keys, WarehouseHandler(bq, keys, redis), CONFIG, name="bq")
    task = asyncio.create_task(worker.run())
    await wait_group_drained(redis, stream, "warehouse", seconds=60)
    worker.request_stop()
    await task
    dead = await redis.xrange(keys.dead_letter(stream))
    assert sorted(decode_entry(f).record_id for _, f in dead) == sorted(
        [events[5].prediction_id, events[250].prediction_id]
    )
    assert all(b"Missing required field: model_version" in f[b"error"] for _, f in dead)
    assert len(fake.rows()) == 298
    assert set(_ids(fake).values()) == {1}


def test_stream_mode_needs_the_warehouse_group(bq):
    with pytest.raises(RuntimeError, match="warehouse group"):
        bq.insert_predictions({"prediction_id": []})


async def test_an_intent_recorded_before_a_crash_is_written_by_the_redelivery(fakes, bq, redis, key_prefix):
    _, fake = fakes
    keys, stream, entries, handler = await _pending_batch(bq, redis, key_prefix, make_events(400, seed=44))
    real = bq.writer.append
    calls = {"n": 0}

    def die_before_sending(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker died before the append")
        return real(*args)

    bq.writer.append = die_before_sending
    with pytest.raises(RuntimeError):
        await handler.handle(entries[:300])
    assert fake.rows() == []
    assert "intent" in {k.decode() for k in await redis.hkeys(keys.bq_write_state(stream))}
    await handler.handle(entries[200:])  # the intent (0-299) written at offset 0, then 300-399 at 300
    landed = _ids(fake)
    assert len(landed) == 400
    assert set(landed.values()) == {1}
    assert [(o, s) for _, o, s in fake.answers] == [(0, "OK"), (300, "OK")]
    assert (await redis.xpending(stream, "warehouse"))["pending"] == 0


async def test_trimmed_intent_entries_finalize_the_write_stream_and_land_nothing_twice(
    fakes, bq, redis, key_prefix, monkeypatch
):
    _, fake = fakes
    _, stream, entries, handler = await _pending_batch(bq, redis, key_prefix, make_events(300, seed=45))

    await _crash_after_append(handler, entries[:200], monkeypatch)
    await redis.xdel(stream, *[e.id for e in entries[:50]])  # trimmed away meanwhile
    await handler.handle(entries[100:])
    assert len(fake.finalized) == 1  # its row count (200) said the intent had landed
    landed = _ids(fake)
    assert len(landed) == 300
    assert set(landed.values()) == {1}
    assert len(fake.streams) == 2  # 0-199 stay in the finalized write stream, 200-299 go to a new one


async def test_rows_at_a_fresh_offset_mean_redis_lost_writes_and_nothing_is_appended(fakes, bq, redis, key_prefix):
    _, fake = fakes
    keys, stream, entries, handler = await _pending_batch(bq, redis, key_prefix, make_events(200, seed=46))
    await handler.handle(entries[:100])
    await redis.hset(keys.bq_write_state(stream), "next", 0)  # Redis behind the write stream (a lost commit)
    with pytest.raises(BatchUploadError, match="lost acknowledged writes"):
        await handler.handle(entries[100:])
    assert len(fake.rows()) == 100
    state = {k.decode() for k in await redis.hkeys(keys.bq_write_state(stream))}
    assert "intent" not in state  # dropped: a retry does not take the foreign rows for its own
