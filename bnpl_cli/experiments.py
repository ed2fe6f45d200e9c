"""``bnpl experiment create|start|pause|stop|list``: A/B experiments as MLflow experiments, mirrored to the
warehouse ``experiments`` table."""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from typing import Any

from common.settings import Settings
from decision.experiment import parse_allocation, parse_arm_models
from registry.experiments import ALLOCATION_TAG, ARM_MODELS_TAG, ExperimentInfo

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    exp = sub.add_parser("experiment", help="create, start, pause, stop or list A/B experiments")
    actions = exp.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create (or reconfigure) an experiment as a draft")
    create.add_argument("name", help="experiment name (an MLflow experiment of that name holds it)")
    create.add_argument(
        "--allocation", required=True, help="arm:share pairs summing to 1, e.g. champion:0.7,challenger:0.3"
    )
    create.add_argument("--arm-models", default="", help="arm=alias pairs when arms are not aliases themselves")
    create.add_argument(
        "--success-metric", default="approval_rate", help="the metric the verdict is about (approval_rate)"
    )
    create.add_argument("--min-samples", type=int, default=1_000, help="minimum customers per arm before a verdict")
    create.add_argument("--confidence", type=float, default=0.95, help="confidence level of intervals and tests")
    create.add_argument("--min-effect", type=float, default=0.02, help="approval change to plan the sample size for")
    create.add_argument(
        "--margins", default="", help="guardrail non-inferiority margins, e.g. deny_rate:0.01,latency_ms:2"
    )
    create.add_argument("--cuped", action="store_true", help="adjust with the customers' pre-experiment decisions")
    create.add_argument("--start", default="", help="planned start (ISO-8601)")
    create.add_argument("--end", default="", help="planned end (ISO-8601)")
    for action in ("start", "pause", "stop"):
        actions.add_parser(action, help=f"{action} an experiment").add_argument("name", help="experiment name")
    actions.add_parser("list", help="list the experiments of the registered model")


def _mirror(settings: Settings, rows: list[dict[str, object]]) -> None:
    from warehouse import make_warehouse

    try:
        warehouse = make_warehouse(settings.warehouse)
        warehouse.ensure_tables()
        for row in rows:
            warehouse.upsert_experiment(row)
        warehouse.close()
    except Exception as exc:  # the MLflow tags are the source of truth; the mirror catches up on the next change
        log.warning("could not mirror the experiment to the warehouse: %s", exc)
        print(f"warning: warehouse mirror failed ({exc}); MLflow holds the configuration")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from registry import mlflow_client
    from registry.experiments import ExperimentSpec, create_experiment, list_experiments, set_status

    registry = settings.registry
    client = mlflow_client(registry)
    if args.action == "list":
        experiments = list_experiments(client, registry.model_name)
        counts, note = _decisions_per_arm(settings, [e.experiment_id for e in experiments])
        print(experiment_table(experiments, _alias_versions(client, registry.model_name), counts))
        if note:
            print(note)
        return 0
    if args.action == "create":
        spec = ExperimentSpec(
            args.name,
            args.allocation,
            args.arm_models,
            args.success_metric,
            args.min_samples,
            args.confidence,
            args.min_effect,
            args.margins,
            args.cuped,
            args.start,
            args.end,
        )
        info = create_experiment(client, registry, spec)
    else:
        status = {"start": "active", "pause": "paused", "stop": "stopped"}[args.action]
        info = set_status(client, registry, args.name, status)
    # Starting one experiment may pause another: mirror every experiment of the model.
    _mirror(settings, [i.warehouse_row(registry.model_name) for i in list_experiments(client, registry.model_name)])
    print(
        f"experiment {info.name} (id {info.experiment_id}): {info.status}, "
        f"allocation {info.tags.get('bnpl.traffic_allocation')}"
    )
    return 0


def _alias_versions(client: Any, model_name: str) -> dict[str, str]:
    """Alias → the version it points at now."""
    try:
        found = client.get_registered_model(model_name)
    except Exception:  # no registered model yet: no aliases
        return {}
    return {alias: str(version) for alias, version in dict(found.aliases or {}).items()}


def _decisions_per_arm(settings: Settings, experiment_ids: list[str]) -> tuple[dict[tuple[str, str], int], str]:
    """Decisions in the warehouse per (experiment id, arm), and a note when they could not be counted."""
    if not experiment_ids:
        return {}, ""
    warehouse = settings.warehouse
    if warehouse.warehouse != "duckdb" or warehouse.duckdb_path is None:
        return {}, "(decisions per arm are counted from the DuckDB warehouse; with BigQuery run bnpl ab-report)"
    if not warehouse.duckdb_path.exists():
        return {}, f"(no warehouse at {warehouse.duckdb_path} yet: no decisions counted)"
    from warehouse.duckdb_store import DuckDBWarehouse

    marks = ", ".join("?" for _ in experiment_ids)
    try:
        rows = DuckDBWarehouse(warehouse.duckdb_path).query(
            "SELECT experiment_id, traffic_segment, count(*) FROM prediction_logs "  # noqa: S608 - placeholders only
            f"WHERE experiment_id IN ({marks}) GROUP BY ALL",
            list(experiment_ids),
        )
    except Exception as exc:  # e.g. a warehouse worker holds the file; the table stays useful without counts
        return {}, f"(decisions per arm not counted: {str(exc).splitlines()[0][:160]})"
    return {(str(e), str(arm)): int(n) for e, arm, n in rows}, ""


def _date(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def experiment_table(
    experiments: list[ExperimentInfo], aliases: dict[str, str], decisions: dict[tuple[str, str], int]
) -> str:
    """One block per experiment: status, dates, and per arm its share, alias, the version the alias points at now
    and the decisions the warehouse holds.

    >>> info = ExperimentInfo("7", "cvc", {"bnpl.status": "active", "bnpl.traffic_allocation": "champion:0.7,"
    ...     "challenger:0.3", "bnpl.start_date": "2026-11-01"}, 1_790_000_000_000, None)
    >>> print(experiment_table([info], {"champion": "3", "challenger": "4"}, {("7", "champion"): 700}))
    EXPERIMENT  ID  STATUS  CREATED           PLANNED            ARM         SHARE  ALIAS       VERSION  DECISIONS
    cvc         7   active  2026-09-21 14:13  2026-11-01 → open  champion    70%    champion    3        700
                                                                 challenger  30%    challenger  4        0
    """
    if not experiments:
        return "no A/B experiments yet: bnpl experiment create NAME --allocation champion:0.9,challenger:0.1"
    header = ("EXPERIMENT", "ID", "STATUS", "CREATED", "PLANNED", "ARM", "SHARE", "ALIAS", "VERSION", "DECISIONS")
    rows: list[tuple[str, ...]] = []
    for info in experiments:
        allocation = parse_allocation(info.tags.get(ALLOCATION_TAG, "")) if info.tags.get(ALLOCATION_TAG) else ()
        arm_models = dict(parse_arm_models(info.tags.get(ARM_MODELS_TAG, "")))
        planned = f"{info.tags.get('bnpl.start_date') or '-'} → {info.tags.get('bnpl.end_date') or 'open'}"
        first = (info.name, info.experiment_id, info.status, _date(info.created_ms), planned)
        for i, (arm, share) in enumerate(allocation or (("-", 0.0),)):
            alias = arm_models.get(arm, arm)
            lead = first if i == 0 else ("",) * len(first)
            count = decisions.get((info.experiment_id, arm), 0)
            rows.append((*lead, arm, f"{share:.0%}", alias, aliases.get(alias, "none"), f"{count:,}"))
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])
