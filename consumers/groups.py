"""The consumer groups this system runs, by name, and how each is built from settings."""

from __future__ import annotations

from collections.abc import Callable

from common.settings import Settings
from consumers.base import BatchHandler


def make_warehouse(settings: Settings) -> object:
    """The configured warehouse (``BNPL_WAREHOUSE``)."""
    if settings.warehouse == "bigquery":
        from warehouse.bigquery_store import BigQueryWarehouse, bigquery_client

        if not settings.bq_project:
            raise ValueError("BNPL_WAREHOUSE=bigquery needs BNPL_BQ_PROJECT")
        return BigQueryWarehouse(bigquery_client(settings.bq_project), settings.bq_dataset, settings.bq_location)
    if settings.warehouse == "duckdb":
        from warehouse.duckdb_store import DuckDBWarehouse

        assert settings.duckdb_path is not None
        return DuckDBWarehouse(settings.duckdb_path)
    raise ValueError(f"unknown warehouse {settings.warehouse!r} (duckdb or bigquery)")


def _warehouse_group(settings: Settings) -> BatchHandler:
    from consumers.warehouse import WarehouseHandler

    return WarehouseHandler(make_warehouse(settings))  # type: ignore[arg-type]


GROUPS: dict[str, Callable[[Settings], BatchHandler]] = {
    "warehouse": _warehouse_group,
}
