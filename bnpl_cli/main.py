"""``bnpl <command>``: every process of the system starts here.

Commands: ``serve`` (the decision API), ``train`` (fit + register candidates), ``promote`` (move an alias),
``models`` (list the registry), ``generate`` (write synthetic requests as JSON lines), ``demo`` (the whole system on
embedded defaults).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from common.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=Path(args.data_dir) if args.data_dir else None,
        mlflow_tracking_uri=args.tracking_uri,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from bnpl_cli.report import training_summary
    from training.train import train_and_register

    settings = _settings(args)
    report = train_and_register(settings, families=args.families, rows=args.rows)
    print(training_summary(report))
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from registry import mlflow_client

    settings = _settings(args)
    client = mlflow_client(settings)
    client.set_registered_model_alias(settings.model_name, args.alias, str(args.version))
    print(f"{settings.model_name}@{args.alias} -> version {args.version}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from bnpl_cli.report import registry_table
    from registry import list_versions, mlflow_client

    settings = _settings(args)
    print(registry_table(list_versions(mlflow_client(settings), settings.model_name)))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from datagen import generate

    data = generate(args.rows, seed=args.seed)
    data.write_jsonl(Path(args.out))
    print(f"wrote {len(data):,} requests with outcomes to {args.out} (default rate {data.will_default.mean():.2%})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from aiohttp import web

    from app.factory import create_app
    from common.redis_server import RedisServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(args)
    settings = dataclasses.replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    embedded = None
    if not settings.redis_url:
        embedded = RedisServer(settings.data_dir / "redis").start()
        settings = dataclasses.replace(settings, redis_url=embedded.url)
        print(f"embedded redis-server at {embedded.url} (set BNPL_REDIS_URL to use your own)", flush=True)
    try:
        if args.workers > 1:
            return _serve_workers(settings, args.workers)
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            shutdown_timeout=10.0,
            reuse_port=os.environ.get("BNPL_REUSE_PORT") == "1",
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def _serve_workers(settings: Settings, workers: int) -> int:
    """N API processes on one port (SO_REUSEPORT); each has its own instance id, spool and publish sequence."""
    from common.processes import bnpl_command, run_children

    return run_children(
        [
            (
                bnpl_command(settings, "serve", "--host", settings.host, "--port", str(settings.port)),
                {
                    "BNPL_REUSE_PORT": "1",
                    "BNPL_REDIS_URL": settings.redis_url,
                    "BNPL_INSTANCE_ID": f"{settings.instance_id}-w{i}",
                },
            )
            for i in range(workers)
        ]
    )


def _cmd_consume(args: argparse.Namespace) -> int:
    import asyncio

    from consumers.cli import check, consume

    settings = _settings(args)
    if args.check:
        return asyncio.run(check(settings, args.group))
    return consume(settings, args.group, args.workers)


def _cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from consumers.cli import status

    return asyncio.run(status(_settings(args)))


def _cmd_experiment(args: argparse.Namespace) -> int:
    from bnpl_cli.experiments import run

    return run(_settings(args), args)


def _cmd_ab_report(args: argparse.Namespace) -> int:
    from bnpl_cli.ab_report import run

    return run(_settings(args), args.experiment, args.html)


def _cmd_webhook_receiver(args: argparse.Namespace) -> int:
    from aiohttp import web

    from alerting.receiver import create_receiver

    settings = _settings(args)
    secret = args.secret or settings.webhook_secret
    if not secret:
        raise SystemExit("give --secret or BNPL_WEBHOOK_SECRET")
    web.run_app(create_receiver(secret), host=args.host, port=args.port, access_log=None)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bnpl_cli.demo import run_demo

    return run_demo(_settings(args), retrain=args.retrain, requests=args.requests)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and ``--help``)."""
    from training.models import FAMILIES

    parser = argparse.ArgumentParser(prog="bnpl", description="Streaming BNPL credit-risk decision service.")
    parser.add_argument("--data-dir", help="directory for embedded stores (env BNPL_DATA_DIR, default .bnpl)")
    parser.add_argument("--tracking-uri", help="MLflow tracking/registry URI (env MLFLOW_TRACKING_URI)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train every model family and register them in MLflow")
    train.add_argument("--rows", type=int, help="synthetic rows (env BNPL_TRAIN_ROWS, default 200000)")
    train.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    train.set_defaults(func=_cmd_train)

    promote = sub.add_parser("promote", help="point a registry alias (champion, challenger, …) at a version")
    promote.add_argument("--alias", required=True)
    promote.add_argument("--version", required=True, type=int)
    promote.set_defaults(func=_cmd_promote)

    models = sub.add_parser("models", help="list registered versions, aliases, AUCs and thresholds")
    models.set_defaults(func=_cmd_models)

    gen = sub.add_parser("generate", help="write synthetic requests (+ outcomes) as JSON lines")
    gen.add_argument("--rows", type=int, default=10_000)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", default="requests.jsonl")
    gen.set_defaults(func=_cmd_generate)

    serve = sub.add_parser("serve", help="run the decision API (aiohttp)")
    serve.add_argument("--host", help="listen address (env BNPL_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env BNPL_PORT, default 8080)")
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes sharing the port (SO_REUSEPORT), one per core"
    )
    serve.set_defaults(func=_cmd_serve)

    consume = sub.add_parser("consume", help="run workers of a consumer group (warehouse, …)")
    consume.add_argument("group")
    consume.add_argument("--workers", type=int, default=1, help="worker processes in this group")
    consume.add_argument("--check", action="store_true", help="exit 0 if a worker of the group is alive")
    consume.set_defaults(func=_cmd_consume)

    status = sub.add_parser("status", help="streams, groups, consumers, lag; exit 1 when a group is stuck")
    status.set_defaults(func=_cmd_status)

    from bnpl_cli.experiments import add_parser

    add_parser(sub)
    sub.choices["experiment"].set_defaults(func=_cmd_experiment)

    report = sub.add_parser("ab-report", help="A/B report of an experiment (terminal + HTML + MLflow run)")
    report.add_argument("experiment")
    report.add_argument("--html", help="where to write the HTML report (default: a temp file)")
    report.set_defaults(func=_cmd_ab_report)

    receiver = sub.add_parser("webhook-receiver", help="local webhook receiver: verifies signatures, prints alerts")
    receiver.add_argument("--host", default="127.0.0.1")
    receiver.add_argument("--port", type=int, default=9099)
    receiver.add_argument("--secret", help="shared secret (env BNPL_WEBHOOK_SECRET)")
    receiver.set_defaults(func=_cmd_webhook_receiver)

    demo = sub.add_parser("demo", help="run the whole system on embedded defaults and print a report")
    demo.add_argument("--retrain", action="store_true", help="train even when the registry already has models")
    demo.add_argument("--requests", type=int, default=20_000, help="simulated requests sent through the API")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnpl`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
