"""The ``bnpl`` command line, in-process, against a real MLflow SQLite store."""

from __future__ import annotations

import json

import pytest

from bnpl_cli.main import main
from registry import mlflow_client, resolve_alias


def test_train_then_demo_skips_training_and_promote_moves_alias(tmp_path, capsys):
    data_dir = str(tmp_path / "data")
    assert main(["--data-dir", data_dir, "train", "--rows", "20000", "--families", "logreg", "hgb"]) == 0
    out = capsys.readouterr().out
    assert "champion" in out
    assert "challenger" in out
    assert "champion AUC − " in out

    assert main(["--data-dir", data_dir, "demo", "--requests", "1500"]) == 0
    out = capsys.readouterr().out
    assert "skipping training" in out
    assert "payment_provider='zip': 36 features, unknown fields: payment_provider" in out
    assert "statuses: {200: 1500}" in out
    assert "decided requests found exactly once: 1,500/1,500 (API exit code 0)" in out
    assert "challenger  n=" in out
    assert "rows in prediction_logs: 1,500 (1,500 distinct prediction ids; 1,500 decided)" in out
    assert "group warehouse: ok; live consumers 1, pending 0, lag 0" in out
    assert "group mlflow: ok; live consumers 1, pending 0, lag 0" in out
    assert "2 arm run(s) (one per arm and model version)" in out
    assert "A/B report — experiment champion-vs-challenger" in out
    assert "sample-ratio check:" in out

    from common.settings import Settings

    settings = Settings.from_env({"BNPL_DATA_DIR": data_dir})
    client = mlflow_client(settings)
    challenger = resolve_alias(client, settings.model_name, "challenger")
    assert main(["--data-dir", data_dir, "promote", "--alias", "champion", "--version", challenger.version]) == 0
    assert resolve_alias(client, settings.model_name, "champion").version == challenger.version
    assert main(["--data-dir", data_dir, "models"]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[3:]}
    assert rows[challenger.version] == "challenger,champion"


def test_generate_writes_requests_with_outcomes(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(["generate", "--rows", "500", "--seed", "4", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 500
    first = json.loads(lines[0])
    assert first["transaction_id"] == "txn_4_00000000"
    assert set(first["outcome"]) == {
        "transaction_id",
        "customer_id",
        "will_default",
        "days_to_first_missed_payment",
        "outcome_known_at",
    }


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
