"""The consumer groups this system runs, by name, and how each is built: settings sections + the worker's Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.keys import Keys
from common.settings import Settings
from consumers.base import BatchHandler
from warehouse.base import make_warehouse


def _warehouse_group(settings: Settings, redis: Any) -> BatchHandler:
    from consumers.warehouse import WarehouseHandler

    wh = settings.warehouse
    load_jobs = wh.warehouse == "bigquery" and wh.bq_mode == "load"
    batching = (wh.bq_batch_rows, wh.bq_batch_max_s) if load_jobs else None
    max_delay = wh.bq_max_delay_s if wh.warehouse == "bigquery" else None
    return WarehouseHandler(make_warehouse(wh, writer=True), settings.keys, redis, settings.alerts, batching, max_delay)


def _mlflow_group(settings: Settings, redis: Any) -> BatchHandler:
    from consumers.mlflow_group import MlflowMetricsHandler

    return MlflowMetricsHandler(settings.registry, settings.consumers, redis, settings.keys)


def _drift_group(settings: Settings, redis: Any) -> BatchHandler:
    from consumers.drift_group import DriftHandler

    return DriftHandler(settings.drift, settings.alerts, settings.registry, redis, settings.keys)


def _alert_sender(settings: Settings, redis: Any) -> BatchHandler:
    from consumers.alert_sender import AlertSender

    return AlertSender(settings.alerts, redis, settings.keys)


def _outcomes_group(settings: Settings, redis: Any) -> BatchHandler:
    from consumers.outcomes import OutcomesHandler

    return OutcomesHandler(make_warehouse(settings.warehouse), settings, redis)


#: Group name → factory(settings, the worker's Redis client).
GROUPS: dict[str, Callable[[Settings, Any], BatchHandler]] = {
    "warehouse": _warehouse_group,
    "mlflow": _mlflow_group,
    "drift": _drift_group,
    "alert-sender": _alert_sender,
    "outcomes": _outcomes_group,
}


def group_streams(keys: Keys) -> dict[str, list[str]]:
    """The streams each group reads (what ``bnpl status`` expects to find)."""
    predictions = keys.prediction_streams()
    return {
        "warehouse": predictions,
        "mlflow": predictions,
        "drift": predictions,
        "alert-sender": [keys.alerts()],
        "outcomes": [keys.outcomes()],
    }
