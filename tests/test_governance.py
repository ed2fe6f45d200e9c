"""Model governance on a real MLflow registry and DuckDB warehouse: training registers without moving aliases,
promotion goes through the gate, every alias change leaves exactly one audit record, experiments are validated,
the API reports an experiment it cannot apply, and model cards agree with the registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.keys import WATCHER as WATCHER_KEY
from bnpl_cli.main import main
from common.settings import Settings
from governance.audit import history
from registry import mlflow_client
from tests.conftest import make_settings
from warehouse.duckdb_store import DuckDBWarehouse


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """logreg and ridge registered by `train` without --promote (logreg is the better one)."""
    from training.train import train_and_register

    root = tmp_path_factory.mktemp("governed")
    settings = make_settings(root)
    report = train_and_register(settings, families=("logreg", "ridge_calibrated"))
    return root, report


@pytest.fixture
def governed(registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A private copy of the registered registry (its SQLite store), so each test may change aliases."""
    root, _ = registered
    monkeypatch.setenv("BNPL_ACTOR", "tester@test")  # what the CLI reads
    shutil.copy(root / "mlflow.db", tmp_path / "mlflow.db")
    return make_settings(tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", actor="tester@test")


def _cli(settings: Settings, *args: str) -> int:
    return main(["--data-dir", str(settings.data_dir), "--tracking-uri", settings.registry.tracking_uri, *args])


def _versions(registered) -> dict[str, str]:
    _, report = registered
    return {m.family: m.version for m in report.models}


def _aliases(settings: Settings) -> dict[str, str]:
    client = mlflow_client(settings.registry)
    return {a: str(v) for a, v in client.get_registered_model(settings.registry.model_name).aliases.items()}


def _warehouse_events(settings: Settings) -> list[tuple]:
    assert settings.warehouse.duckdb_path is not None
    return DuckDBWarehouse(settings.warehouse.duckdb_path).query(
        "SELECT event_id, action, alias, from_version, to_version, forced, reason, actor FROM model_events "
        "ORDER BY occurred_at"
    )


def test_train_registers_versions_and_moves_no_alias(registered, governed):
    _, report = registered
    assert len(report.models) == 2
    assert _aliases(governed) == {}
    assert history(mlflow_client(governed.registry), governed.registry.model_name) == []
    best = max(report.models, key=lambda m: m.metrics["holdout_auc"])
    champion = report.proposals[0]
    assert (champion.alias, champion.candidate, champion.holder, champion.moved) == (
        "champion",
        best.version,
        None,
        False,
    )


def test_promotion_is_gated_and_each_alias_change_is_audited_once(registered, governed, capsys):
    versions = _versions(registered)
    good, worse = versions["logreg"], versions["ridge_calibrated"]

    assert _cli(governed, "promote", "--alias", "champoin", "--version", good) == 2
    assert "unknown alias 'champoin'" in capsys.readouterr().err
    assert _aliases(governed) == {}

    assert _cli(governed, "promote", "--alias", "champion", "--version", good) == 0
    assert _cli(governed, "promote", "--alias", "challenger", "--version", worse) == 0  # no holder: gate vs nobody
    assert _cli(governed, "promote", "--alias", "champion", "--version", good) == 0  # already there: no record
    capsys.readouterr()

    # A worse candidate for the champion: refused, nothing changes, nothing recorded.
    assert _cli(governed, "promote", "--alias", "champion", "--version", worse) == 2
    assert "holdout AUC" in capsys.readouterr().err
    assert _cli(governed, "promote", "--alias", "champion", "--version", worse, "--force") == 2
    assert "--reason" in capsys.readouterr().err
    assert _aliases(governed) == {"champion": good, "challenger": worse}

    assert _cli(governed, "promote", "--alias", "champion", "--version", worse, "--force", "--reason", "drill") == 0
    assert _aliases(governed)["champion"] == worse
    assert _cli(governed, "unalias", "--alias", "champion") == 2  # the champion only with --force
    assert _cli(governed, "unalias", "--alias", "challenger") == 0

    client = mlflow_client(governed.registry)
    trail = history(client, governed.registry.model_name)
    assert [(e.action, e.alias, e.from_version, e.to_version, e.forced) for e in trail] == [
        ("promote", "champion", None, good, False),
        ("promote", "challenger", None, worse, False),
        ("promote", "champion", good, worse, True),
        ("unalias", "challenger", worse, None, False),
    ]
    assert trail[2].reason == "drill"
    assert trail[2].evidence["gate"]["passed"] is False
    assert {e.actor for e in trail} == {"tester@test"}
    # The warehouse holds the same records, each exactly once.
    rows = _warehouse_events(governed)
    assert [r[0] for r in rows] == [e.event_id for e in trail]
    assert [(r[1], r[2], r[5], r[6]) for r in rows] == [(e.action, e.alias, e.forced, e.reason) for e in trail]

    assert _cli(governed, "models", "--history") == 0
    shown = capsys.readouterr().out
    assert "promote (forced)" in shown
    assert "drill" in shown


def test_a_warehouse_outage_delays_the_copy_and_loses_no_record(registered, governed):
    from governance.aliases import promote
    from governance.audit import sync_warehouse

    versions = _versions(registered)
    garbage = governed.data_dir / "garbage.duckdb"
    garbage.write_bytes(b"not a database" * 100)
    broken = governed.replace(duckdb_path=garbage)  # the warehouse cannot be opened
    client = mlflow_client(governed.registry)
    promote(client, broken, "champion", versions["logreg"])
    trail = history(client, governed.registry.model_name)
    assert len(trail) == 1
    assert sync_warehouse(governed, trail) == 1
    assert sync_warehouse(governed, trail) == 0  # idempotent by event id
    assert len(_warehouse_events(governed)) == 1


def test_experiments_are_validated_before_anything_is_created(registered, governed):
    from registry.experiments import ExperimentError, ExperimentSpec, create_experiment, set_status

    versions = _versions(registered)
    client = mlflow_client(governed.registry)
    assert _cli(governed, "promote", "--alias", "champion", "--version", versions["logreg"]) == 0
    bad = [
        ExperimentSpec("bad-arm", "champ:0.5,challenger:0.5"),
        ExperimentSpec("bad-sum", "champion:0.5,challenger:0.3"),
        ExperimentSpec("no-challenger", "champion:0.5,challenger:0.5"),  # challenger points at nothing yet
        ExperimentSpec("bad-metric", "champion:1.0", success_metric="foo"),
        ExperimentSpec("bad-guardrail", "champion:1.0", guardrail_margins="latency:2"),
    ]
    for spec in bad:
        with pytest.raises(ExperimentError):
            create_experiment(client, governed.registry, spec)
        assert client.get_experiment_by_name(spec.name) is None
    assert _cli(governed, "experiment", "create", "bad", "--allocation", "champ:0.5,challenger:0.5") == 2

    assert _cli(governed, "promote", "--alias", "challenger", "--version", versions["ridge_calibrated"]) == 0
    create_experiment(client, governed.registry, ExperimentSpec("running", "champion:0.5,challenger:0.5"))
    set_status(client, governed.registry, "running", "active")
    create_experiment(client, governed.registry, ExperimentSpec("next", "champion:0.5,challenger:0.5"))
    # An alias the running experiment decides with moves only with --force.
    assert _cli(governed, "promote", "--alias", "challenger", "--version", versions["logreg"]) == 2
    assert _cli(governed, "unalias", "--alias", "challenger") == 2
    assert _cli(governed, "unalias", "--alias", "challenger", "--force", "--reason", "retired") == 0
    # Starting an experiment whose arm has no model now is refused, and does not pause the running one.
    with pytest.raises(ExperimentError, match="challenger"):
        set_status(client, governed.registry, "next", "active")
    assert client.get_experiment_by_name("running").tags["bnpl.status"] == "active"


async def test_readyz_is_degraded_while_the_active_experiment_cannot_be_applied(
    registered, governed, tmp_path, redis_server, key_prefix
):
    from registry.experiments import start_experiment
    from tests.conftest import api_settings, start_api

    versions = _versions(registered)
    client = mlflow_client(governed.registry)
    for alias, family in (("champion", "logreg"), ("challenger", "ridge_calibrated")):
        assert _cli(governed, "promote", "--alias", alias, "--version", versions[family]) == 0
    start_experiment(client, governed.registry, "ab", "champion:0.5,challenger:0.5")
    settings = api_settings(
        tmp_path, redis_server.url, key_prefix, tracking_uri=governed.registry.tracking_uri, registry_poll_seconds=60
    )
    api, stop = await start_api(settings, watch_registry=True)
    try:
        async with api.session.get(api.url("/readyz")) as resp:
            assert (await resp.json())["status"] == "ready"
        assert _cli(governed, "unalias", "--alias", "challenger", "--force", "--reason", "test") == 0
        await api.app[WATCHER_KEY].refresh()
        async with api.session.get(api.url("/readyz")) as resp:
            body = await resp.json()
        assert body["status"] == "degraded"
        assert any("experiment ab" in r and "challenger" in r for r in body["reasons"])
        status, decided = await api.assess(example())
        assert status == 200
        assert decided["deployment_mode"] == "champion"
    finally:
        await stop()


def example() -> dict:
    from datagen.examples import ORIGINAL_EXAMPLE

    return dict(ORIGINAL_EXAMPLE)


def test_every_version_has_a_model_card_that_agrees_with_the_registry(trained_registry):
    from governance.cards import read_card
    from registry import list_versions

    settings, _ = trained_registry
    client = mlflow_client(settings.registry)
    versions = list_versions(client, settings.registry.model_name)
    assert len(versions) == 3
    for v in versions:
        card = read_card(client, settings.registry.model_name, v.version)
        assert card.startswith(f"# Model card: {settings.registry.model_name} v{v.version} ({v.family})")
        for tag in (
            "holdout_auc",
            "holdout_auc_approved",
            "threshold_review",
            "threshold_deny",
            "holdout_adverse_impact_ratio",
            "training_run_id",
            "code_commit",
            "calibration",
        ):
            assert v.tags[tag] in card, tag
        assert f"| AUC | {v.tags['holdout_auc']} |" in card
        assert f"{float(v.tags['expected_approve_rate']):.2%}" in card
        assert "customer_age_bracket" in card  # the protected characteristic is named
        html = read_card(client, settings.registry.model_name, v.version, html=True)
        assert html.startswith("<!doctype html>")
        assert v.tags["holdout_auc"] in html
