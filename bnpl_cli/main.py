"""``bnpl <command>``: every process of the system starts here.

Commands: ``serve`` (the decision API), ``consume`` (a consumer group), ``status``, ``train`` (fit + register
candidates), ``promote`` / ``unalias`` (move or remove an alias, gated and audited), ``models`` (the registry, its
audit trail, model cards), ``fallback`` (the emergency switch), ``experiment``, ``ab-report``,
``warehouse migrate``, ``outcomes load|simulate``, ``performance``, ``config`` (the effective settings),
``generate`` (synthetic requests as JSON lines), ``send`` (requests to a running API at a fixed rate),
``webhook-receiver`` and ``demo`` (the whole system on embedded defaults).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from common.settings import Settings


def _settings(args: argparse.Namespace, reads_registry: bool = False) -> Settings:
    """The effective settings; ``reads_registry``: the command only reads MLflow, so a SQLite store that does not
    exist is a mistake (a mistyped path or data dir), not something to create empty."""
    settings = Settings.from_env(
        data_dir=Path(args.data_dir) if args.data_dir else None,
        tracking_uri=args.tracking_uri,
    )
    uri = settings.registry.tracking_uri
    if reads_registry and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise CliError(
            f"no MLflow registry at {uri.removeprefix('sqlite:///')}: run `bnpl train` (or `make demo`) first, or "
            "point --data-dir / --tracking-uri at an existing one"
        )
    return settings


@contextmanager
def _redis(settings: Settings, start_embedded: bool = True) -> Iterator[Settings]:
    """Settings with a Redis to talk to: ``BNPL_REDIS_URL``; without it, the private redis-server of the data dir
    (``bnpl serve``'s or the demo's): reused while it runs, else started on its saved data for this command."""
    if settings.streams.redis_url:
        yield settings
        return
    from common.redis_server import RedisServer, running_embedded

    directory = settings.data_dir / "redis"
    url = running_embedded(directory)
    if url is not None:
        yield settings.replace(redis_url=url)
        return
    if not start_embedded or not directory.exists():
        raise CliError(
            f"no Redis: BNPL_REDIS_URL is not set and {directory} holds no embedded one yet "
            "(`bnpl serve` or `make demo` create it)",
            code=3,
        )
    server = RedisServer(directory).start()
    try:
        yield settings.replace(redis_url=server.url)
    finally:
        server.stop()


def _cmd_train(args: argparse.Namespace) -> int:
    from bnpl_cli.report import training_summary
    from training.train import train_and_register

    settings = _settings(args)
    report = train_and_register(settings, families=args.families, rows=args.rows, promote=args.promote)
    print(training_summary(report))
    return 2 if any(p.refusal for p in report.proposals) else 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from bnpl_cli.report import alias_change_text
    from governance.aliases import check_promotion, promote
    from registry import mlflow_client

    settings = _settings(args)
    client = mlflow_client(settings.registry)
    if args.dry_run:
        change = check_promotion(client, settings, args.alias, str(args.version))
        print(alias_change_text(settings.registry.model_name, change))
        return 0 if change.gate.passed and not change.experiments else 2
    change = promote(client, settings, args.alias, str(args.version), force=args.force, reason=args.reason)
    print(alias_change_text(settings.registry.model_name, change))
    return 0


def _cmd_unalias(args: argparse.Namespace) -> int:
    from governance.aliases import unalias
    from registry import mlflow_client

    settings = _settings(args)
    event = unalias(mlflow_client(settings.registry), settings, args.alias, force=args.force, reason=args.reason)
    print(f"{settings.registry.model_name}: {event.summary()} (audit {event.event_id})")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from bnpl_cli.report import history_table, registry_table
    from registry import list_versions, mlflow_client

    settings = _settings(args, reads_registry=True)
    registry = settings.registry
    client = mlflow_client(registry)
    if args.card:
        from governance.cards import read_card

        print(read_card(client, registry.model_name, str(args.card), html=args.html))
        return 0
    if args.history:
        from governance.audit import history, sync_warehouse

        events = history(client, registry.model_name)
        print(history_table(events))
        try:
            copied = sync_warehouse(settings, events)
            if copied:
                print(f"({copied} record(s) copied to the warehouse table model_events, which had missed them)")
        except Exception as exc:  # the registry holds the trail; say the warehouse copy lags
            print(f"warning: the warehouse table model_events could not be brought up to date ({exc})")
        return 0
    print(registry_table(list_versions(client, registry.model_name)))
    return 0


def _cmd_fallback(args: argparse.Namespace) -> int:
    from governance.fallback import read_state_sync, switch
    from registry import mlflow_client

    settings = _settings(args)
    if args.state == "status":
        from common.redis_client import redis_for_sync

        with _redis(settings) as settings:
            redis = redis_for_sync(settings.streams)
            try:
                state = read_state_sync(redis, settings.keys)
            finally:
                redis.close()
        print(f"fallback ON: {state.describe()}" if state else "fallback off: models decide")
        return 0
    if args.state == "on" and not args.reason.strip():
        raise GovernanceUsage("bnpl fallback on needs --reason: the audit record and the alert say why")
    event = switch(mlflow_client(settings.registry), settings, args.state == "on", args.reason)
    if event is None:
        print(f"fallback already {args.state}; nothing changed")
        return 0
    print(
        f"{event.summary()} (audit {event.event_id}); every API replica follows within "
        f"{settings.registry.registry_poll_seconds:g} s (BNPL_REGISTRY_POLL_SECONDS)"
    )
    return 0


class GovernanceUsage(Exception):
    """A governance command used without what it needs (exit 2)."""


def _cmd_generate(args: argparse.Namespace) -> int:
    from bnpl_cli.generate import run

    return run(args)


def _cmd_send(args: argparse.Namespace) -> int:
    from bnpl_cli.send import run

    return run(_settings(args), args)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from aiohttp import web

    from app.factory import create_app
    from common.redis_server import RedisServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(args).replace(host=args.host, port=args.port)
    embedded = None
    if not settings.streams.redis_url:
        from common.redis_server import running_embedded

        directory = settings.data_dir / "redis"
        url = running_embedded(directory)  # another `bnpl serve` on this data dir started it: share it
        if url is None:
            embedded = RedisServer(directory).start()
            url = embedded.url
            what = embedded.binary.describe() if embedded.binary else "server"
        else:
            what = "server (already running)"
        settings = settings.replace(redis_url=url)
        print(f"embedded Redis-compatible {what} at {url} (set BNPL_REDIS_URL to use your own)", flush=True)
    try:
        if args.workers > 1:
            return _serve_workers(settings, args.workers)
        web.run_app(
            create_app(settings),
            host=settings.api.host,
            port=settings.api.port,
            access_log=None,
            shutdown_timeout=10.0,
            reuse_port=settings.api.reuse_port,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def _serve_workers(settings: Settings, workers: int) -> int:
    """N API processes on one port (SO_REUSEPORT); each has its own instance id, spool and publish sequence."""
    from common.processes import bnpl_command, supervise

    api = settings.api
    return supervise(
        [
            (
                bnpl_command(settings, "serve", "--host", api.host, "--port", str(api.port)),
                {
                    "BNPL_REUSE_PORT": "1",
                    "BNPL_REDIS_URL": settings.streams.redis_url,
                    "BNPL_INSTANCE_ID": f"{api.instance_id}-w{i}",
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

    if args.schema:
        return asyncio.run(status(_settings(args), schema=True))
    with _redis(_settings(args)) as settings:
        return asyncio.run(status(settings, as_json=args.json))


def _cmd_experiment(args: argparse.Namespace) -> int:
    from bnpl_cli.experiments import run

    return run(_settings(args), args)


def _cmd_ab_report(args: argparse.Namespace) -> int:
    from bnpl_cli.ab_report import run

    return run(_settings(args, reads_registry=True), args.experiment, args.html)


def _cmd_webhook_receiver(args: argparse.Namespace) -> int:
    from aiohttp import web

    from alerting.receiver import create_receiver

    secret = args.secret or _settings(args).alerts.webhook_secret
    if not secret:
        raise SystemExit("give --secret or BNPL_WEBHOOK_SECRET")
    web.run_app(create_receiver(secret), host=args.host, port=args.port, access_log=None)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from common.settings import configuration_table

    if args.markdown:
        print(configuration_table())
        return 0
    for env, value, section in _settings(args).describe():
        print(f"{env:<30s} {section:<10s} {value}")
    return 0


def _cmd_warehouse(args: argparse.Namespace) -> int:
    from warehouse import make_warehouse
    from warehouse.bigquery_store import BigQueryWarehouse

    warehouse = make_warehouse(_settings(args).warehouse)
    try:
        if isinstance(warehouse, BigQueryWarehouse):
            if warehouse.layout_version() != 1:
                print("prediction_logs is current; nothing to migrate")
            elif args.dry_run:
                print(";\n\n".join(warehouse.migration_sql()) + ";")
            else:
                for sql in warehouse.migrate():
                    print(f"ran: {sql[:120]}…")
                print("prediction_logs migrated; the version 1 table is kept as prediction_logs_v1")
            return 0
        if args.dry_run:
            print("DuckDB migrates in place, in one transaction, when the tables are ensured")
            return 0
        warehouse.ensure_tables()  # DuckDB: migrates in place
        print("warehouse tables are current")
        return 0
    finally:
        warehouse.close()


def _cmd_outcomes(args: argparse.Namespace) -> int:
    from bnpl_cli.outcomes import run_outcomes

    return run_outcomes(_settings(args), args)


def _cmd_performance(args: argparse.Namespace) -> int:
    from bnpl_cli.outcomes import run_performance

    return run_performance(_settings(args), args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from bnpl_cli.demo import run_demo

    return run_demo(
        _settings(args), retrain=args.retrain, requests=args.requests, performance_requests=args.performance_requests
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and ``--help``)."""
    from training.models import FAMILIES

    parser = argparse.ArgumentParser(
        prog="bnpl",
        description="Streaming BNPL credit-risk decision service.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_flags(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train every model family and register them in MLflow")
    train.add_argument("--rows", type=int, help="synthetic rows (env BNPL_TRAIN_ROWS, default 200000)")
    train.add_argument(
        "--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES), help="model families to train"
    )
    train.add_argument(
        "--promote",
        action="store_true",
        help="also move each alias to its best new version when the promotion gate passes (default: register only)",
    )
    train.set_defaults(func=_cmd_train)

    promote = sub.add_parser(
        "promote", help="point a configured alias at a version, through the promotion gate (audited)"
    )
    promote.add_argument("--alias", required=True, help="a configured alias (BNPL_MODEL_ALIASES)")
    promote.add_argument("--version", required=True, type=int, help="registered version to point it at")
    promote.add_argument("--force", action="store_true", help="override a failed gate or an active experiment")
    promote.add_argument("--reason", default="", help="why (required with --force; recorded in the audit trail)")
    promote.add_argument("--dry-run", action="store_true", help="show the evidence and the gate, change nothing")
    promote.set_defaults(func=_cmd_promote)

    unalias = sub.add_parser("unalias", help="remove a configured alias (audited)")
    unalias.add_argument("--alias", required=True, help="a configured alias (BNPL_MODEL_ALIASES)")
    unalias.add_argument("--force", action="store_true", help="remove the champion or an alias in an experiment")
    unalias.add_argument("--reason", default="", help="why (required with --force)")
    unalias.set_defaults(func=_cmd_unalias)

    models = sub.add_parser("models", help="list registered versions, aliases, AUCs and thresholds")
    models.add_argument("--history", action="store_true", help="the audit trail: every alias change and fallback")
    models.add_argument("--card", metavar="VERSION", type=int, help="print the model card of a version")
    models.add_argument("--html", action="store_true", help="with --card: the HTML card instead of Markdown")
    models.set_defaults(func=_cmd_models)

    fallback = sub.add_parser(
        "fallback", help="emergency switch: every API replica decides with the rule-based policy (audited, alerted)"
    )
    fallback.add_argument(
        "state", choices=("on", "off", "status"), help="on: rule-based decisions everywhere; off: models; status"
    )
    fallback.add_argument("--reason", default="", help="why (required with on)")
    fallback.set_defaults(func=_cmd_fallback)

    gen = sub.add_parser("generate", help="write synthetic requests as JSON lines (outcomes to a file of their own)")
    gen.add_argument("--rows", type=int, default=10_000, help="requests to generate")
    gen.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same requests)")
    gen.add_argument(
        "--out", default="requests.jsonl", help="JSON lines file of requests, as an application sends them"
    )
    gen.add_argument(
        "--outcomes-out",
        metavar="FILE",
        help="also write every request's outcome here (.jsonl or .csv, as `bnpl outcomes load` reads)",
    )
    from bnpl_cli.generate import add_drift_arguments

    add_drift_arguments(gen)
    gen.set_defaults(func=_cmd_generate)

    from bnpl_cli import send as send_command

    send_command.add_parser(sub)
    sub.choices["send"].set_defaults(func=_cmd_send)

    serve = sub.add_parser("serve", help="run the decision API (aiohttp)")
    serve.add_argument("--host", help="listen address (env BNPL_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env BNPL_PORT, default 8080)")
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes sharing the port (SO_REUSEPORT), one per core"
    )
    serve.set_defaults(func=_cmd_serve)

    from consumers.groups import GROUPS

    consume = sub.add_parser("consume", help=f"run workers of a consumer group ({', '.join(GROUPS)})")
    consume.add_argument("group", choices=list(GROUPS), help="the consumer group: " + ", ".join(GROUPS))
    consume.add_argument("--workers", type=int, default=1, help="worker processes in this group")
    consume.add_argument("--check", action="store_true", help="exit 0 if a worker of the group is alive")
    consume.set_defaults(func=_cmd_consume)

    status = sub.add_parser("status", help="streams, groups, consumers, lag; exit 1 when a group is stuck")
    status.add_argument(
        "--json", action="store_true", help="as JSON: per stream and (group, shard): lag, pending, rate, holder"
    )
    status.add_argument("--schema", action="store_true", help="print the JSON Schema of --json and exit")
    status.set_defaults(func=_cmd_status)

    from bnpl_cli.experiments import add_parser

    add_parser(sub)
    sub.choices["experiment"].set_defaults(func=_cmd_experiment)

    from bnpl_cli import drift_report

    drift_report.add_parser(sub)
    sub.choices["drift-report"].set_defaults(
        func=lambda args: drift_report.run(_settings(args, reads_registry=True), args, _redis)
    )

    from bnpl_cli import reconcile

    reconcile.add_parser(sub)
    sub.choices["reconcile"].set_defaults(
        func=lambda args: reconcile.run(_settings(args, reads_registry=True), args, _redis)
    )

    report = sub.add_parser("ab-report", help="A/B report of an experiment (terminal + HTML + MLflow run)")
    report.add_argument("experiment", help="experiment name (bnpl experiment list)")
    report.add_argument("--html", help="where to write the HTML report (default: a temp file)")
    report.set_defaults(func=_cmd_ab_report)

    config = sub.add_parser("config", help="print the effective settings (secrets hidden)")
    config.add_argument("--markdown", action="store_true", help="print the configuration table of the README")
    config.set_defaults(func=_cmd_config)

    warehouse = sub.add_parser("warehouse", help="warehouse maintenance")
    warehouse_actions = warehouse.add_subparsers(dest="action", required=True)
    migrate = warehouse_actions.add_parser("migrate", help="upgrade warehouse tables to the current layout")
    migrate.add_argument("--dry-run", action="store_true", help="print what would run (BigQuery: the SQL)")
    warehouse.set_defaults(func=_cmd_warehouse)

    from bnpl_cli.outcomes import add_parsers

    add_parsers(sub)
    sub.choices["outcomes"].set_defaults(func=_cmd_outcomes)
    sub.choices["performance"].set_defaults(func=_cmd_performance)

    receiver = sub.add_parser("webhook-receiver", help="local webhook receiver: verifies signatures, prints alerts")
    receiver.add_argument("--host", default="127.0.0.1", help="listen address")
    receiver.add_argument("--port", type=int, default=9099, help="listen port")
    receiver.add_argument("--secret", help="shared secret (env BNPL_WEBHOOK_SECRET)")
    receiver.set_defaults(func=_cmd_webhook_receiver)

    demo = sub.add_parser("demo", help="run the whole system on embedded defaults and print a report")
    demo.add_argument("--retrain", action="store_true", help="train even when the registry already has models")
    demo.add_argument("--requests", type=int, default=20_000, help="simulated requests sent through the API")
    demo.add_argument(
        "--performance-requests",
        type=int,
        default=100_000,
        help="requests of the weeks decided for the performance loop (outcomes, concept shift)",
    )
    demo.set_defaults(func=_cmd_demo)
    for command in _subcommands(parser):  # global flags after the subcommand too; every default in --help
        _global_flags(command, argparse.SUPPRESS)
        command.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    return parser


#: What ``bnpl`` exits with (also in ``bnpl --help``).
EXIT_CODES = """exit codes:
  0  done
  1  failed (one line says why; --debug shows the traceback)
  2  usage error, or a change refused (promotion gate, experiment validation, a missing reason)
  3  a dependency is unreachable (Redis, the MLflow server)"""


def _global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """``--data-dir``, ``--tracking-uri`` and ``--debug``: on the top parser (defaults) and on every subcommand
    (``SUPPRESS``: given there, they override; not given, the top parser's value stands)."""
    parser.add_argument(
        "--data-dir", default=default, help="directory for embedded stores (env BNPL_DATA_DIR; default .bnpl)"
    )
    parser.add_argument(
        "--tracking-uri", default=default, help="MLflow tracking/registry URI (env MLFLOW_TRACKING_URI)"
    )
    parser.add_argument(
        "--debug", action="store_true", default=False if default is None else default, help="show tracebacks"
    )


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand parser, nested ones included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += [child, *_subcommands(child)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnpl`` console script. A refused change (promotion gate, experiment validation,
    missing reason) prints one line and exits 2."""
    from governance.aliases import GovernanceError
    from registry.experiments import ExperimentError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (GovernanceError, ExperimentError, GovernanceUsage) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        code, message = explain(exc)
        print(f"error: {message}", file=sys.stderr)
        return code
    return code


class CliError(Exception):
    """A command cannot do what was asked; the message says how to fix it."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def explain(exc: Exception) -> tuple[int, str]:
    r"""Exit code and one line for a failed command (see :data:`EXIT_CODES`).

    >>> from redis.exceptions import ConnectionError
    >>> explain(ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."))[0]
    3
    >>> explain(ValueError("bad\nthings"))
    (1, 'ValueError: bad (--debug shows the traceback)')
    """
    from redis import exceptions as redis_errors

    from common.redact import redact_text

    first = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")[:300]
    if isinstance(exc, CliError):
        return exc.code, first
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return 3, f"cannot reach Redis ({exc.__class__.__name__}: {first}); is it running, is BNPL_REDIS_URL right?"
    if _unreachable_mlflow(exc):
        return 3, f"cannot reach the MLflow server ({first}); is it running, is MLFLOW_TRACKING_URI right?"
    return 1, f"{exc.__class__.__name__}: {first} (--debug shows the traceback)"


def _unreachable_mlflow(exc: BaseException) -> bool:
    """An MLflow client call that failed because the server did not answer (refused, timed out, retries spent)."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        text = str(seen)
        if "Max retries exceeded" in text or "Failed to establish a new connection" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


if __name__ == "__main__":  # `python -m bnpl_cli.main`: run the imported module, so CliError is one class
    from bnpl_cli.main import main as entry_point

    sys.exit(entry_point())
