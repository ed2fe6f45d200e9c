"""Warehouse table schemas, derived from the event schema (one definition: ``schemas.events.PredictionEvent``).

``prediction_logs`` has one column per event field, the nested request flattened into its own columns, and
``ingested_at``. Maps (scores, versions,
thresholds) are JSON; lists of strings/floats are arrays. ``experiments`` and ``model_metrics`` are defined here
for the experiment and performance groups.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import msgspec

from schemas.events import PredictionEvent
from schemas.request import RiskAssessmentRequest

Kind = Literal["STRING", "FLOAT", "INTEGER", "BOOLEAN", "TIMESTAMP", "JSON", "STRING_ARRAY", "FLOAT_ARRAY"]


@dataclass(frozen=True, slots=True)
class Column:
    """A warehouse column: name, logical kind, and whether it may be NULL."""

    name: str
    kind: Kind
    nullable: bool


#: Event fields stored with a more specific kind than their wire type.
TIMESTAMP_FIELDS = {"event_time"}


def _kind(tp: Any) -> tuple[Kind, bool]:
    nullable = False
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        nullable = len(args) < len(get_args(tp))
        tp = args[0]
        origin = get_origin(tp)
    if origin is typing.Annotated:
        tp = get_args(tp)[0]
        origin = get_origin(tp)
    if origin is Literal:
        return "STRING", nullable
    if origin is list:
        (inner,) = get_args(tp)
        return ("FLOAT_ARRAY" if inner is float else "STRING_ARRAY"), nullable
    if origin is dict:
        return "JSON", nullable
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "JSON", nullable  # nested structs are flattened by the caller
    simple: dict[Any, Kind] = {str: "STRING", float: "FLOAT", int: "INTEGER", bool: "BOOLEAN"}
    return simple[tp], nullable


def _struct_columns(struct: type[msgspec.Struct]) -> list[Column]:
    hints = typing.get_type_hints(struct, include_extras=True)
    columns = []
    for field in msgspec.structs.fields(struct):
        kind, nullable = _kind(hints[field.name])
        columns.append(Column(field.name, kind, nullable))
    return columns


def prediction_log_columns() -> list[Column]:
    """Columns of ``prediction_logs`` in order."""
    columns: list[Column] = []
    for column in _struct_columns(PredictionEvent):
        if column.name == "request":
            columns += _struct_columns(RiskAssessmentRequest)
        elif column.name in TIMESTAMP_FIELDS:
            columns.append(Column(column.name, "TIMESTAMP", column.nullable))
        else:
            columns.append(column)
    columns.append(Column("ingested_at", "TIMESTAMP", False))
    return columns


PREDICTION_LOGS: list[Column] = prediction_log_columns()

EXPERIMENTS: list[Column] = [
    Column("experiment_id", "STRING", False),
    Column("name", "STRING", False),
    Column("model_name", "STRING", False),
    Column("status", "STRING", False),
    Column("traffic_allocation", "JSON", False),
    Column("arm_models", "JSON", True),
    Column("success_metric", "STRING", True),
    Column("minimum_sample_size", "INTEGER", True),
    Column("confidence_level", "FLOAT", True),
    Column("start_date", "TIMESTAMP", True),
    Column("end_date", "TIMESTAMP", True),
    Column("updated_at", "TIMESTAMP", False),
]

MODEL_METRICS: list[Column] = [
    Column("metric_id", "STRING", False),
    Column("model_name", "STRING", False),
    Column("model_version", "STRING", False),
    Column("arm", "STRING", True),
    Column("metric", "STRING", False),
    Column("value", "FLOAT", False),
    Column("window_start", "TIMESTAMP", False),
    Column("window_end", "TIMESTAMP", False),
    Column("computed_at", "TIMESTAMP", False),
]

TABLES: dict[str, tuple[list[Column], str]] = {
    "prediction_logs": (PREDICTION_LOGS, "prediction_id"),
    "experiments": (EXPERIMENTS, "experiment_id"),
    "model_metrics": (MODEL_METRICS, "metric_id"),
}
