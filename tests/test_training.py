"""Training against a real MLflow SQLite store: registry aliases, thresholds, reference profiles, model quality."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import mlflow.sklearn
import numpy as np
import pytest

from common.settings import TrainingSettings
from datagen import generate
from features import FEATURE_NAMES, featurize_columns
from registry import has_aliases, list_versions, mlflow_client, read_profile, resolve_alias
from registry.store import POLICY_FILE, read_extra_file
from training.thresholds import choose_thresholds, decide, decision_rates
from training.train import objective_of

DEFAULT_OBJECTIVE = objective_of(TrainingSettings())


def test_aliases_resolve_through_models_uris(trained_registry):
    settings, _ = trained_registry
    client = mlflow_client(settings.registry)
    assert has_aliases(client, settings.registry.model_name)
    data = generate(2_000, seed=99)
    x = featurize_columns(data.columns).matrix
    for alias in ("champion", "challenger"):
        model = mlflow.sklearn.load_model(f"models:/{settings.registry.model_name}@{alias}")
        scores = model.predict_proba(x)[:, 1]
        assert scores.shape == (2_000,)
        assert ((scores > 0) & (scores < 1)).all()
    champion = resolve_alias(client, settings.registry.model_name, "champion")
    challenger = resolve_alias(client, settings.registry.model_name, "challenger")
    assert champion.version != challenger.version
    assert float(champion.tags["holdout_auc"]) >= float(challenger.tags["holdout_auc"])


def test_best_model_is_good_and_models_differ(trained_registry):
    _, report = trained_registry
    aucs = sorted((m.metrics["holdout_auc"] for m in report.models), reverse=True)
    assert len(aucs) == 3
    assert aucs[0] >= 0.75
    assert aucs[0] - aucs[-1] >= 0.005
    # The champion's margin over the weakest model is measurable: its bootstrap interval excludes zero.
    worst = min(report.models, key=lambda m: m.metrics["holdout_auc"])
    _, low, _ = report.auc_margins[worst.family]
    assert low > 0


def test_every_version_carries_thresholds_and_reference_profile(trained_registry):
    settings, _ = trained_registry
    versions = list_versions(mlflow_client(settings.registry), settings.registry.model_name)
    assert {v.family for v in versions} == {"logreg", "ridge_calibrated", "hgb"}
    for version in versions:
        assert 0 < version.threshold_review < version.threshold_deny < 1
        policy = read_extra_file(version, POLICY_FILE)
        assert policy["thresholds"] == {"review": version.threshold_review, "deny": version.threshold_deny}
        assert policy["feature_names"] == list(FEATURE_NAMES)
        profile = read_profile(version)
        assert set(profile["features"]) == set(FEATURE_NAMES)
        for summary in (*profile["features"].values(), profile["score"]):
            assert sum(summary["bin_fractions"]) == pytest.approx(1.0)
            assert len(summary["bin_fractions"]) == len(summary["bin_edges"]) + 1
        providers = profile["categorical"]["payment_provider"]["frequencies"]
        assert set(providers) == {"affirm", "afterpay", "klarna", "sezzle"}
        assert sum(providers.values()) == pytest.approx(1.0)
        # Quantile edges of the scores (fewer than 19 when an isotonic map gives many applications the same score).
        assert len(profile["score"]["bin_edges"]) >= 10


def test_thresholds_meet_the_default_rate_objective(trained_registry):
    settings, report = trained_registry
    target = settings.training.target_default_rate
    for model in report.models:
        # On the policy year the cut-off was set on, the expected default rate among approved is the target …
        assert model.metrics["expected_approve_default_rate"] == pytest.approx(target, abs=0.002)
        # … and the holdout's realized rate (outcomes the thresholds never saw) is close to it.
        assert model.metrics["holdout_approved_default_rate"] == pytest.approx(target, abs=0.01)
        assert model.metrics["holdout_approve_rate"] > 0.6
        assert model.metrics["expected_review_default_rate"] > target
        assert model.metrics["expected_deny_default_rate"] > model.metrics["expected_review_default_rate"]


def test_every_version_records_its_objective_calibration_and_seasons(trained_registry):
    settings, _ = trained_registry
    for version in list_versions(mlflow_client(settings.registry), settings.registry.model_name):
        policy = read_extra_file(version, POLICY_FILE)
        assert policy["objective"]["kind"] == "default_rate"
        assert policy["objective"]["target_default_rate"] == settings.training.target_default_rate
        assert "2.0%" in version.tags["policy_objective"]
        assert set(policy["expected"]) >= {"approve_rate", "review_rate", "deny_rate", "approve_default_rate"}
        calibration = policy["calibration"]
        assert calibration["method"] == version.tags["calibration"]
        assert calibration["method"] in ("none", "sigmoid", "isotonic")
        assert calibration["method"] != "none" or version.family != "ridge_calibrated"
        deciles = calibration["holdout"]["deciles"]
        assert len(deciles) == 10
        assert sum(d["loans"] for d in deciles) == calibration["holdout"]["overall"]["loans"]
        # The predicted rate rises decile by decile; the holdout covers the second half of the last year.
        assert [d["expected"] for d in deciles] == sorted(d["expected"] for d in deciles)
        assert {s["label"] for s in calibration["holdout"]["seasons"]} == {"summer", "autumn", "holiday"}
        assert {s["label"] for s in calibration["validation_seasons"]} == {"winter", "spring", "summer"}
        assert 0.8 < calibration["holdout"]["overall"]["ratio"] < 1.2


def test_the_models_learn_the_holiday_season(trained_registry):
    # Training covers a full year of every season, so the holiday flag is not constant in training; the generator
    # adds +0.25 log-odds in Nov–Dec.
    _, report = trained_registry
    champion = next(m for m in report.models if "champion" in m.aliases)
    assert 0.1 < champion.metrics["holiday_log_odds"] < 0.45


def test_training_runs_are_logged_with_metrics(trained_registry):
    settings, report = trained_registry
    client = mlflow_client(settings.registry)
    for model in report.models:
        run = client.get_run(model.run_id)
        assert run.data.params["family"] == model.family
        assert run.data.metrics["holdout_auc"] == pytest.approx(model.metrics["holdout_auc"])
        for key in ("holdout_log_loss", "holdout_brier", "holdout_approve_rate", "holdout_deny_rate"):
            assert key in run.data.metrics
        # Readable in the MLflow UI: a name saying what it made, its datasets, a described version.
        assert run.info.run_name == f"{model.family} → {settings.registry.model_name} v{model.version}"
        contexts = {_context(i): i.dataset.name for i in run.inputs.dataset_inputs}
        assert sorted(contexts) == ["fit", "holdout", "validation"]
        assert all(name.startswith(f"bnpl-{context} (") for context, name in contexts.items())
        described = client.get_model_version(settings.registry.model_name, model.version).description
        assert described.startswith(f"{model.family} on synthetic BNPL applications")
        assert f"holdout AUC {model.metrics['holdout_auc']:.4f}" in described
        assert model.run_id in described
    parents = {client.get_run(m.run_id).data.tags["mlflow.parentRunId"] for m in report.models}
    (parent,) = parents
    assert client.get_run(parent).info.run_name.startswith("training logreg+")


def _context(dataset_input) -> str:
    """The ``mlflow.data.context`` tag of a run's dataset input."""
    return next(t.value for t in dataset_input.tags if t.key == "mlflow.data.context")


def test_target_cutoff_is_the_largest_meeting_the_target():
    p = np.random.default_rng(0).beta(1, 12, 50_000)
    objective = replace(DEFAULT_OBJECTIVE, target_default_rate=0.03)
    thresholds = choose_thresholds(p, objective)
    approved = p < thresholds.review
    assert p[approved].mean() <= 0.03
    # A few more applications would break the target (the cut-off is rounded down to six decimals).
    assert np.sort(p)[: approved.sum() + 3].mean() > 0.03
    assert thresholds.deny == pytest.approx(objective.cost_cutoffs()[1], abs=1e-6)
    rates = decision_rates(p, np.random.default_rng(1).random(50_000) < p, thresholds)
    assert rates.approve + rates.review + rates.deny == pytest.approx(1.0)


def test_profit_cutoffs_maximise_expected_profit():
    objective = replace(DEFAULT_OBJECTIVE, kind="profit")
    thresholds = choose_thresholds(np.linspace(0, 1, 1001), objective)
    grid = np.linspace(0, 1, 2001)
    best = np.argmax(np.stack([objective.profit(grid, np.full(grid.size, d, np.int8)) for d in (0, 1, 2)]), axis=0)
    np.testing.assert_array_equal(decide(grid, thresholds), best)
    # Without a review that pays (review costs more than it saves anywhere), one break-even cut-off.
    dear = replace(DEFAULT_OBJECTIVE, kind="profit", review_cost=0.2)
    review, deny = dear.cost_cutoffs()
    assert review == deny == pytest.approx(dear.margin / (dear.margin + dear.loss_given_default))


def test_objective_rejects_impossible_settings():
    for bad in ({"kind": "volume"}, {"target_default_rate": 0.0}, {"review_catch": 1.5}, {"margin": -0.01}):
        with pytest.raises(ValueError):
            replace(DEFAULT_OBJECTIVE, **bad)
