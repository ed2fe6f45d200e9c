"""The decision core: compiled scorers equal sklearn, reason codes are exact, A/B assignment is stable."""

from __future__ import annotations

from collections import Counter

import mlflow.sklearn
import numpy as np
import pytest

from datagen import NewCategory, generate
from decision.engine import DecisionEngine
from decision.experiment import Experiment
from decision.models import ModelSet
from decision.scorers import VALUE, CalibratedScorer, LinearScorer, TreeEnsembleScorer
from features import featurize_columns
from schemas import parse_request


@pytest.fixture(scope="module")
def requests_10k():
    return generate(10_500, seed=77, drifts=[NewCategory(start_index=8_000, share=0.2)])


def test_engine_scores_equal_sklearn_predict_proba_on_10k_requests(trained_registry, loaded_models, requests_10k):
    from registry import mlflow_client

    mlflow_client(trained_registry[0].registry)  # models:/ URIs resolve against this registry
    engine = DecisionEngine(loaded_models)
    matrix = featurize_columns(requests_10k.columns).matrix
    for model in loaded_models.models:
        sk = mlflow.sklearn.load_model(f"models:/{model.name}/{model.version}")
        expected = sk.predict_proba(matrix)[:, 1]
        got = np.array(
            [
                engine.decide(parse_request(requests_10k.request(i)))[0].all_predictions[model.alias]
                for i in range(len(requests_10k))
            ]
        )
        assert len(got) >= 10_000
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        np.testing.assert_allclose(model.scorer.score_batch(matrix), expected, rtol=0, atol=1e-9)


def test_tree_scorer_sends_missing_values_where_sklearn_does(trained_registry, loaded_models, requests_10k):
    # Requests never carry NaN (every number is range-checked), but the compiled walk is a general scorer: it must
    # follow each split's learned missing-value side exactly as sklearn does.
    from registry import mlflow_client

    mlflow_client(trained_registry[0].registry)
    matrix = featurize_columns(requests_10k.columns).matrix[:2_000].copy()
    rng = np.random.default_rng(5)
    matrix[rng.random(matrix.shape) < 0.15] = np.nan
    trees = [m for m in loaded_models.models if isinstance(_inner(m.scorer), TreeEnsembleScorer)]
    assert trees
    for model in trees:
        sk = mlflow.sklearn.load_model(f"models:/{model.name}/{model.version}")
        expected = sk.predict_proba(matrix)[:, 1]
        np.testing.assert_allclose(model.scorer.score_batch(matrix), expected, rtol=0, atol=1e-9)
        np.testing.assert_allclose([model.scorer.score(row) for row in matrix], expected, rtol=0, atol=1e-9)


def _inner(scorer):
    return scorer.inner if isinstance(scorer, CalibratedScorer) else scorer


def test_compiled_scorers_are_used_for_every_family(loaded_models):
    # A family whose probabilities needed a calibration map is served by its compiled scorer behind the map.
    kinds = {m.family: m.scorer.kind for m in loaded_models.models}
    assert {kind.split("+")[0] for kind in kinds.values()} <= {"linear", "trees"}
    assert all(kind.split("+")[1:] in ([], ["sigmoid"], ["isotonic"]) for kind in kinds.values())
    for model in loaded_models.models:
        assert isinstance(model.scorer, CalibratedScorer) == ("+" in model.scorer.kind)


def test_contributions_explain_the_score_exactly(loaded_models, requests_10k):
    matrix = featurize_columns(requests_10k.columns).matrix[:300]
    for model in loaded_models.models:
        # Contributions explain the model's decision value (log-odds before calibration); the calibration map is
        # increasing, so the order of the reasons is the same on either scale.
        calibrated, scorer = model.scorer, _inner(model.scorer)
        for x in matrix:
            logit = scorer.raw(x)
            c = calibrated.contributions(x)
            if isinstance(scorer, TreeEnsembleScorer):
                base = scorer.baseline + scorer.nodes[scorer.roots, VALUE].sum()
            else:
                assert isinstance(scorer, LinearScorer)
                base = scorer.raw(scorer.mean)
            assert c.sum() + base == pytest.approx(logit, abs=1e-9)


def _two_arm(models: ModelSet, salt: str = "exp-1", share: float = 0.5) -> ModelSet:
    experiment = Experiment("1", "champion-vs-challenger", salt, (("champion", 1 - share), ("challenger", share)))
    return ModelSet(models.models, experiment)


def test_same_customer_same_arm_across_replicas_and_restarts(loaded_models):
    data = generate(3_000, seed=31)
    replica_a = DecisionEngine(_two_arm(loaded_models))
    replica_b = DecisionEngine(_two_arm(loaded_models))
    arms: dict[str, str] = {}
    decided_by = Counter()
    for i in range(len(data)):
        request = parse_request(data.request(i))
        response, event = replica_a.decide(request)
        other, _ = replica_b.decide(request)
        assert response.traffic_segment == other.traffic_segment
        assert arms.setdefault(request.customer_id, response.traffic_segment) == response.traffic_segment
        # Only the arm's model decides; every model is scored.
        assert response.model_alias == response.traffic_segment
        assert response.default_probability == response.all_predictions[response.traffic_segment]
        assert set(event.decision.all_predictions) == {"champion", "challenger"}
        assert event.decision is response  # the event embeds the answer itself
        decided_by[response.traffic_segment] += 1
    share = decided_by["challenger"] / sum(decided_by.values())
    assert 0.45 < share < 0.55
    # A "restart": a new engine and a freshly built experiment with the same salt assign identically.
    restarted = DecisionEngine(_two_arm(loaded_models))
    for customer, arm in list(arms.items())[:500]:
        assert restarted.models.experiment.assign(customer) == arm  # type: ignore[union-attr]


def test_another_salt_reshuffles_customers(loaded_models):
    first = _two_arm(loaded_models, "salt-a").experiment
    second = _two_arm(loaded_models, "salt-b").experiment
    customers = [f"cust_{i}" for i in range(2_000)]
    same = sum(first.assign(c) == second.assign(c) for c in customers)  # type: ignore[union-attr]
    assert 800 < same < 1_200  # independent assignments agree about half the time


def test_allocation_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        Experiment("1", "x", "s", (("champion", 0.7), ("challenger", 0.4)))
