"""``bnpl experiment create|start|pause|stop|list``: A/B experiments as MLflow experiments, mirrored to the
warehouse ``experiments`` table."""

from __future__ import annotations

import argparse
import logging

from common.settings import Settings

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
        for info in list_experiments(client, registry.model_name):
            tags = info.tags
            print(
                f"{info.name:<28s} id {info.experiment_id:<4s} {info.status:<8s} "
                f"{tags.get('bnpl.traffic_allocation', '')}  {tags.get('bnpl.arm_models', '')}"
            )
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
