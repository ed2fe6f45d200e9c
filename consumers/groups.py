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


def _mlflow_group(settings: Settings) -> BatchHandler:
    from redis.asyncio import Redis

    from consumers.mlflow_group import MlflowMetricsHandler

    redis = Redis.from_url(settings.redis_url, socket_timeout=10.0, socket_connect_timeout=2.0)
    return MlflowMetricsHandler(
        settings, redis, window_s=settings.mlflow_window_s, lateness_s=settings.mlflow_lateness_s
    )


def _redis(settings: Settings) -> object:
    from redis.asyncio import Redis

    return Redis.from_url(settings.redis_url, socket_timeout=10.0, socket_connect_timeout=2.0)


def _drift_group(settings: Settings) -> BatchHandler:
    import os

    from consumers.drift_group import DriftHandler

    return DriftHandler(settings, _redis(settings), slot=os.environ.get("BNPL_WORKER_INDEX", "0"))


def _alert_sender(settings: Settings) -> BatchHandler:
    from alerting.sender import AlertSender

    if not settings.webhook_urls:
        raise ValueError("the alert sender needs BNPL_WEBHOOK_URLS (and BNPL_WEBHOOK_SECRET)")
    return AlertSender(settings, _redis(settings))


GROUPS: dict[str, Callable[[Settings], BatchHandler]] = {
    "warehouse": _warehouse_group,
    "mlflow": _mlflow_group,
    "drift": _drift_group,
    "alert-sender": _alert_sender,
}
