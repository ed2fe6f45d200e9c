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
