"""Training against a real MLflow SQLite store: registry aliases, thresholds, reference profiles, model quality."""

from __future__ import annotations

import mlflow
import mlflow.sklearn
import numpy as np
import pytest

from datagen import generate
from features import FEATURE_NAMES, featurize_columns
from registry import has_aliases, list_versions, mlflow_client, read_profile, resolve_alias
from registry.store import POLICY_FILE, read_extra_file
from training.thresholds import choose_thresholds, decision_rates


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
        assert len(profile["score"]["bin_edges"]) >= 15


def test_thresholds_give_a_sensible_decision_mix_on_the_holdout(trained_registry):
    _, report = trained_registry
    for model in report.models:
        assert model.metrics["holdout_approve_rate"] == pytest.approx(0.80, abs=0.04)
        assert model.metrics["holdout_deny_rate"] == pytest.approx(0.08, abs=0.03)
        # Approving the low scores must leave fewer defaults among the approved than overall.
        assert model.metrics["holdout_approved_default_rate"] < model.metrics["holdout_default_rate"] / 2


def test_training_runs_are_logged_with_metrics(trained_registry):
    settings, report = trained_registry
    client = mlflow_client(settings.registry)
    for model in report.models:
        run = client.get_run(model.run_id)
        assert run.data.params["family"] == model.family
        assert run.data.metrics["holdout_auc"] == pytest.approx(model.metrics["holdout_auc"])
        for key in ("holdout_log_loss", "holdout_brier", "holdout_approve_rate", "holdout_deny_rate"):
            assert key in run.data.metrics


def test_choose_thresholds_and_rates_are_consistent():
    scores = np.random.default_rng(0).beta(1, 12, 50_000)
    labels = np.random.default_rng(1).random(50_000) < scores
    thresholds = choose_thresholds(scores)
    rates = decision_rates(scores, labels, thresholds)
    assert rates.approve == pytest.approx(0.80, abs=0.002)
    assert rates.deny == pytest.approx(0.08, abs=0.002)
    assert rates.approve + rates.review + rates.deny == pytest.approx(1.0)
