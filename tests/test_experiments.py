"""Experiments as MLflow experiment tags: lifecycle, one active per model, warehouse mirror, arm → model mapping."""

from __future__ import annotations

import msgspec
import orjson

from bnpl_cli.main import main
from decision.engine import DecisionEngine
from decision.models import ModelSet
from registry import mlflow_client
from registry.experiments import active_experiment, get_experiment, list_experiments
from schemas import parse_request
from tests.conftest import make_settings
from traffic.events import make_events
from warehouse.duckdb_store import DuckDBWarehouse


def test_lifecycle_one_active_per_model_and_warehouse_mirror(registry_copy, tmp_path, capsys):
    data_dir = str(registry_copy.data_dir)
    base = ["--data-dir", data_dir, "experiment"]
    assert (
        main(
            [
                *base,
                "create",
                "exp-a",
                "--allocation",
                "control:0.5,treatment:0.5",
                "--arm-models",
                "control=champion,treatment=challenger",
                "--min-samples",
                "5000",
            ]
        )
        == 0
    )
    assert main([*base, "create", "exp-b", "--allocation", "champion:0.9,challenger:0.1"]) == 0
    assert main([*base, "start", "exp-a"]) == 0
    assert main([*base, "start", "exp-b"]) == 0  # pauses exp-a
    settings = make_settings(tmp_path / "data")
    client = mlflow_client(settings.registry)
    statuses = {i.name: i.status for i in list_experiments(client, settings.registry.model_name)}
    assert statuses == {"exp-a": "paused", "exp-b": "active"}
    assert active_experiment(client, settings.registry.model_name).name == "exp-b"
    assert main([*base, "stop", "exp-b"]) == 0
    assert active_experiment(client, settings.registry.model_name) is None
    assert main([*base, "start", "exp-b"]) == 2
    assert "stopped" in capsys.readouterr().err
    assert main([*base, "create", "exp-c", "--allocation", "champion:0.5,challenger:0.6"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    exp_a = get_experiment(client, settings.registry.model_name, "exp-a").experiment_id
    events = make_events(30, seed=4)
    warehouse = DuckDBWarehouse(settings.warehouse.duckdb_path)
    warehouse.ensure_tables()
    warehouse.insert_events([orjson.dumps(msgspec.to_builtins(e)) for e in events])
    with warehouse.connect() as conn:  # decided under exp-a: 10 by control, 20 by treatment
        conn.execute("UPDATE prediction_logs SET experiment_id = ?, traffic_segment = 'treatment'", [exp_a])
        first = sorted(e.prediction_id for e in events)[:10]
        conn.execute(
            "UPDATE prediction_logs SET traffic_segment = 'control' WHERE list_contains(?, prediction_id)", [first]
        )
    assert main([*base, "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "EXPERIMENT",
        "ID",
        "STATUS",
        "CREATED",
        "PLANNED",
        "ARM",
        "SHARE",
        "ALIAS",
        "VERSION",
        "DECISIONS",
    ]
    table = [r.split() for r in rows]
    aliases = {a: str(v) for a, v in client.get_registered_model(settings.registry.model_name).aliases.items()}
    control = next(r for r in table if "control" in r)
    treatment = next(r for r in table if "treatment" in r)
    assert control[0] == "exp-a"
    assert "paused" in control
    assert control[-3:] == ["champion", aliases["champion"], "10"]
    assert treatment[-4:] == ["50%", "challenger", aliases["challenger"], "20"]

    rows = DuckDBWarehouse(settings.warehouse.duckdb_path).query(
        "SELECT name, status, traffic_allocation->>'$.control', arm_models->>'$.treatment', minimum_sample_size "
        "FROM experiments ORDER BY name"
    )
    assert rows == [("exp-a", "paused", "0.5", "challenger", 5000), ("exp-b", "stopped", None, None, 1000)]
    assert get_experiment(client, settings.registry.model_name, "exp-a").tags["bnpl.arm_models"].startswith("control=")


def test_arms_decide_with_their_mapped_models(loaded_models):
    from decision.experiment import Experiment

    experiment = Experiment(
        "9",
        "mapped",
        "s",
        (("control", 0.5), ("treatment", 0.5)),
        (("control", "champion"), ("treatment", "challenger")),
    )
    engine = DecisionEngine(ModelSet(loaded_models.models, experiment))
    from datagen import generate

    data = generate(200, seed=1)
    seen = set()
    for i in range(200):
        response, _ = engine.decide(parse_request(data.request(i)))
        expected_alias = {"control": "champion", "treatment": "challenger"}[response.traffic_segment]
        assert response.model_alias == expected_alias
        seen.add(response.traffic_segment)
    assert seen == {"control", "treatment"}
