"""Contract test against real BigQuery; runs only when BNPL_BQ_CONTRACT_PROJECT (and credentials) are set."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.streams import make_events
from warehouse.base import event_columns

PROJECT = os.environ.get("BNPL_BQ_CONTRACT_PROJECT")
pytestmark = pytest.mark.skipif(not PROJECT, reason="set BNPL_BQ_CONTRACT_PROJECT and Google credentials")


def test_real_bigquery_tables_and_exactly_once_batch_loads():
    from warehouse.bigquery_store import BigQueryWarehouse, bigquery_client

    client = bigquery_client(str(PROJECT))
    dataset = f"bnpl_contract_{uuid.uuid4().hex[:8]}"
    warehouse = BigQueryWarehouse(client, dataset)
    try:
        warehouse.ensure_tables()
        table = client.get_table(f"{PROJECT}.{dataset}.prediction_logs")
        assert table.time_partitioning.field == "assessment_timestamp"
        assert table.clustering_fields == ["customer_id", "selected_model"]
        events = make_events(20, seed=1)
        columns = event_columns(events)
        assert warehouse.insert_predictions(columns).inserted == 20  # load job + MERGE (the default mode)
        assert warehouse.insert_predictions(columns).duplicates == 20  # redelivery: its merge job is found done
        assert warehouse.insert_predictions(event_columns(events[:5] + make_events(3, seed=2))).inserted == 3
        rows = list(client.query(f"SELECT count(*) AS n FROM `{PROJECT}.{dataset}.prediction_logs`").result())
        assert rows[0]["n"] == 23  # no streaming buffer: every row is there at once, each once
        staging = [t.table_id for t in client.list_tables(f"{PROJECT}.{dataset}") if t.table_id.startswith("_")]
        assert staging == []  # staging tables dropped after their MERGE
    finally:
        client.delete_dataset(f"{PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)


async def test_real_bigquery_stream_mode_appends_each_event_once_across_a_replayed_intent(
    redis_server, key_prefix, monkeypatch
):
    """Storage Write API: a batch appended, its XACK lost (the worker died), then redelivered with other
    companions: the intent is replayed at its offsets (ALREADY_EXISTS) and every prediction_id is there once."""
    import redis.asyncio as aioredis

    from common.keys import Keys
    from consumers.base import Entry
    from consumers.warehouse import WarehouseHandler
    from consumers.warehouse_stream import StreamAppender
    from tests.streams import add_events
    from warehouse.bigquery_store import BigQueryWarehouse, bigquery_client

    client = bigquery_client(str(PROJECT))
    dataset = f"bnpl_contract_{uuid.uuid4().hex[:8]}"
    warehouse = BigQueryWarehouse(client, dataset, mode="stream")
    redis = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    stream = keys.predictions()
    try:
        warehouse.ensure_tables()
        events = make_events(1_200, seed=3)
        await add_events(redis, stream, events)
        await redis.xgroup_create(stream, "warehouse", id="0")
        response = await redis.xreadgroup("warehouse", "c", {stream: ">"})
        entries = [Entry(stream, i.decode(), f) for i, f in response[0][1]]
        handler = WarehouseHandler(warehouse, keys, redis)

        async def crash(self, *args):
            raise RuntimeError("worker died after the append")

        with monkeypatch.context() as patch:
            patch.setattr(StreamAppender, "_resolve", crash)
            with pytest.raises(RuntimeError):
                await handler.handle(entries[:700])
        assert (await handler.handle(entries[400:])).failed == {}
        assert (await redis.xpending(stream, "warehouse"))["pending"] == 0
        sql = f"SELECT count(*) AS n, count(DISTINCT prediction_id) AS d FROM `{PROJECT}.{dataset}.prediction_logs`"
        row = next(iter(client.query(sql).result()))
        assert (row["n"], row["d"]) == (1_200, 1_200)  # committed stream: visible at once, each once
    finally:
        await redis.aclose()
        client.delete_dataset(f"{PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
