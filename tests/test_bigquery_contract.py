"""Contract test against real BigQuery; runs only when BNPL_BQ_CONTRACT_PROJECT (and credentials) are set."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from tests.streams import make_events
from warehouse.base import event_columns

PROJECT = os.environ.get("BNPL_BQ_CONTRACT_PROJECT")
pytestmark = pytest.mark.skipif(not PROJECT, reason="set BNPL_BQ_CONTRACT_PROJECT and Google credentials")


def test_real_bigquery_tables_and_idempotent_inserts():
    from warehouse.bigquery_store import BigQueryWarehouse, bigquery_client

    client = bigquery_client(str(PROJECT))
    dataset = f"bnpl_contract_{uuid.uuid4().hex[:8]}"
    warehouse = BigQueryWarehouse(client, dataset)
    try:
        warehouse.ensure_tables()
        table = client.get_table(f"{PROJECT}.{dataset}.prediction_logs")
        assert table.time_partitioning.field == "assessment_timestamp"
        assert table.clustering_fields == ["customer_id", "selected_model"]
        columns = event_columns(make_events(20, seed=1))
        assert warehouse.insert_predictions(columns).rejected == {}
        warehouse.insert_predictions(columns)  # redelivery
        time.sleep(5)
        rows = list(client.query(f"SELECT count(*) AS n FROM `{PROJECT}.{dataset}.prediction_logs_dedup`").result())
        assert rows[0]["n"] == 20
    finally:
        client.delete_dataset(f"{PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
