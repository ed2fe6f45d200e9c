"""Warehouse table schemas, derived from the event schema (one definition: ``schemas.events.PredictionEvent``).

``prediction_logs`` (version 2) has one column per field of the decision record, named as in the API response,
then one per request field, then the event's own fields, and ``ingested_at``. Each column knows its path in the
event JSON, so loaders read it from there. Two decision fields are not columns of their own: ``transaction_id``
(the request's column holds it) and ``schema_version`` (the response version follows from the event's); the
decision's ``risk_level`` (LOW/MEDIUM/HIGH) is ``decision_risk_level``, because ``risk_level`` is the request's.
Maps (scores, versions, thresholds) and reason codes are JSON; lists of strings/floats are arrays.
``experiments`` and ``model_metrics`` are defined here for the experiment and performance jobs; ``outcomes`` holds
the current outcome of every loan (the outcomes group writes it).

Version 1 of ``prediction_logs`` had the event's version 1 names; :data:`V1_RENAMES` maps them (upgrade:
``bnpl warehouse migrate``).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args, get_origin

import msgspec

from schemas.events import PredictionEvent, PredictionEventV1
from schemas.request import RiskAssessmentRequest
from schemas.response import RiskAssessmentResponse

Kind = Literal["STRING", "FLOAT", "INTEGER", "BOOLEAN", "TIMESTAMP", "JSON", "STRING_ARRAY", "FLOAT_ARRAY"]

#: Version of the warehouse table layouts (recorded in the ``schema_versions`` table).
WAREHOUSE_SCHEMA_VERSION: Final = 2


@dataclass(frozen=True, slots=True)
class Column:
    """A warehouse column: name, logical kind, whether it may be NULL, and where it is in the event JSON."""

    name: str
    kind: Kind
    nullable: bool
    path: tuple[str, ...] = ()


#: Decision fields stored with a more specific kind than their wire type.
TIMESTAMP_FIELDS: Final = {"assessment_timestamp"}
#: Decision fields that are not columns of their own (see the module docstring).
SKIPPED_DECISION_FIELDS: Final = {"transaction_id", "schema_version"}
RENAMED_DECISION_FIELDS: Final = {"risk_level": "decision_risk_level"}
#: The timestamp ``prediction_logs`` is partitioned on.
PARTITION_COLUMN: Final = "assessment_timestamp"


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
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            return "JSON", nullable
        return ("FLOAT_ARRAY" if inner is float else "STRING_ARRAY"), nullable
    if origin is dict:
        return "JSON", nullable
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "JSON", nullable
    simple: dict[Any, Kind] = {str: "STRING", float: "FLOAT", int: "INTEGER", bool: "BOOLEAN"}
    return simple[tp], nullable


def _struct_columns(struct: type[msgspec.Struct], path: tuple[str, ...]) -> list[Column]:
    hints = typing.get_type_hints(struct, include_extras=True)
    columns = []
    for field in msgspec.structs.fields(struct):
        kind, nullable = _kind(hints[field.name])
        columns.append(Column(field.name, kind, nullable, (*path, field.name)))
    return columns


def prediction_log_columns() -> list[Column]:
    """Columns of ``prediction_logs`` in order: decision, request, event, ``ingested_at``."""
    columns: list[Column] = []
    for column in _struct_columns(RiskAssessmentResponse, ("decision",)):
        if column.name in SKIPPED_DECISION_FIELDS:
            continue
        name = RENAMED_DECISION_FIELDS.get(column.name, column.name)
        kind: Kind = "TIMESTAMP" if column.name in TIMESTAMP_FIELDS else column.kind
        columns.append(Column(name, kind, column.nullable, column.path))
    columns += _struct_columns(RiskAssessmentRequest, ("request",))
    columns += [c for c in _struct_columns(PredictionEvent, ()) if c.name not in ("decision", "request")]
    columns.append(Column("ingested_at", "TIMESTAMP", False))
    names = [c.name for c in columns]
    assert len(names) == len(set(names)), "prediction_logs column names must be unique"
    return columns


PREDICTION_LOGS: list[Column] = prediction_log_columns()

#: Version 1 column → version 2 column (the rest kept their names; ``champion_model`` is new, NULL for old rows;
#: ``reason_codes`` changed from a list of codes to JSON objects ``{"code", "field", "contribution"}``).
V1_RENAMES: Final[dict[str, str]] = {
    "event_time": "assessment_timestamp",
    "decision": "business_decision",
    "arm": "traffic_segment",
    "scores": "all_predictions",
    "thresholds": "risk_thresholds",
    "selected_alias": "model_alias",
    "selected_version": "model_version",
    "inference_time_ms": "model_inference_time_ms",
}


def v1_prediction_log_columns() -> list[Column]:
    """The version 1 layout of ``prediction_logs`` (what a migration starts from): the version 1 event's fields,
    its request flattened, ``event_time`` as TIMESTAMP, and ``ingested_at``."""
    columns: list[Column] = []
    for column in _struct_columns(PredictionEventV1, ()):
        if column.name == "request":
            columns += _struct_columns(RiskAssessmentRequest, ("request",))
        elif column.name == "event_time":
            columns.append(Column(column.name, "TIMESTAMP", column.nullable, column.path))
        else:
            columns.append(column)
    columns.append(Column("ingested_at", "TIMESTAMP", False))
    return columns


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
    #: The analysis date (BigQuery partitions on it), what the figure is measured on, and its interval if any.
    Column("analysis_date", "TIMESTAMP", True),
    Column("population", "STRING", True),
    Column("ci_low", "FLOAT", True),
    Column("ci_high", "FLOAT", True),
    Column("sample_size", "INTEGER", True),
]
#: The timestamp ``model_metrics`` is partitioned on (BigQuery).
MODEL_METRICS_PARTITION_COLUMN: Final = "analysis_date"

#: One row per loan: its current outcome (a later one supersedes, see ``schemas.outcomes``). Outcomes for
#: transactions the warehouse has no decision for are kept (they may arrive before their decision).
OUTCOMES: list[Column] = [
    Column("transaction_id", "STRING", False),
    Column("customer_id", "STRING", False),
    Column("outcome", "STRING", False),
    Column("bad", "BOOLEAN", False),
    Column("amount_recovered", "FLOAT", False),
    Column("outcome_date", "TIMESTAMP", False),
    Column("source", "STRING", False),
    Column("outcome_id", "STRING", False),
    Column("received_at", "TIMESTAMP", False),
    Column("received_via", "STRING", False),
    #: How many earlier outcomes of this loan this one replaced.
    Column("superseded", "INTEGER", False),
    Column("ingested_at", "TIMESTAMP", False),
]
#: The timestamp ``outcomes`` is partitioned on (BigQuery), and its clustering.
OUTCOMES_PARTITION_COLUMN: Final = "outcome_date"

#: The append-only audit trail of the registry: every alias change and fallback switch, by a person or the guardian.
MODEL_EVENTS: list[Column] = [
    Column("event_id", "STRING", False),
    Column("occurred_at", "TIMESTAMP", False),
    Column("model_name", "STRING", False),
    Column("action", "STRING", False),
    Column("actor", "STRING", False),
    Column("alias", "STRING", True),
    Column("from_version", "STRING", True),
    Column("to_version", "STRING", True),
    Column("forced", "BOOLEAN", False),
    Column("reason", "STRING", True),
    Column("evidence", "JSON", True),
]
#: The timestamp ``model_events`` is partitioned on (BigQuery).
MODEL_EVENTS_PARTITION_COLUMN: Final = "occurred_at"

SCHEMA_VERSIONS: list[Column] = [
    Column("table_name", "STRING", False),
    Column("version", "INTEGER", False),
    Column("applied_at", "TIMESTAMP", False),
]

TABLES: dict[str, tuple[list[Column], str]] = {
    "prediction_logs": (PREDICTION_LOGS, "prediction_id"),
    "experiments": (EXPERIMENTS, "experiment_id"),
    "model_metrics": (MODEL_METRICS, "metric_id"),
    "outcomes": (OUTCOMES, "transaction_id"),
    "model_events": (MODEL_EVENTS, "event_id"),
    "schema_versions": (SCHEMA_VERSIONS, "table_name"),
}
