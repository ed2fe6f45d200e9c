"""Fair lending: age is not a model input by default, a model allowed to use age may never penalise the elderly,
and the performance job's fairness monitor alerts on adverse impact by age bracket (four-fifths rule)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from datagen import generate
from decision.engine import DecisionEngine
from features import featurize_columns
from features.spec import AGE_BRACKETS, feature_columns
from performance.job import run_analysis
from schemas import parse_request
from tests.conftest import make_settings
from traffic.landing import decide_into
from warehouse.duckdb_store import DuckDBWarehouse

ANALYSIS = date(2026, 3, 2)


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def test_swapping_only_the_age_bracket_moves_no_registered_model(loaded_models):
    data = generate(100_000, seed=41)
    matrix = featurize_columns(data.columns).matrix
    (column,) = feature_columns("customer_age_bracket")
    for model in loaded_models.models:
        base = None
        for ordinal, _ in enumerate(AGE_BRACKETS):
            swapped = matrix.copy()
            swapped[:, column] = ordinal
            odds = _log_odds(model.scorer.score_batch(swapped))
            base = odds if base is None else base
            assert float(np.max(np.abs(odds - base))) < 0.01


def test_reasons_are_specific_statements_never_age_time_or_calendar(loaded_models):
    import re

    from schemas.reasons import NEVER_REASON_FIELDS, REASON_STATEMENTS

    data = generate(100_000, seed=42)
    engine = DecisionEngine(loaded_models)
    words = re.compile(r"\b(age|old|young|time|night|day|weekend|month|holiday|season|hour)\b", re.I)
    adverse = 0
    for i in range(len(data)):
        request = parse_request(data.request(i))
        response, _ = engine.decide(request)
        reasons = response.reason_codes
        assert all(r.field not in NEVER_REASON_FIELDS for r in reasons)
        assert all(r.statement == REASON_STATEMENTS[r.code][0] and not words.search(r.statement) for r in reasons)
        if response.business_decision != "approve":
            adverse += 1
            assert 1 <= len(reasons) <= 4  # every deny and review says why, at most four principal reasons
            model = [r.contribution for r in reasons if r.contribution is not None]
            assert model == sorted(model, reverse=True)  # ordered by contribution
            if i % 1_000 == 0:  # deterministic for a request and a model version
                assert engine.decide(request)[0].reason_codes == reasons
        else:
            assert reasons == []
    assert adverse > 10_000


def test_a_family_that_penalises_the_elderly_is_not_registered(tmp_path):
    from training.train import FairLendingError, train_and_register

    settings = make_settings(tmp_path, protected_fields=())
    elderly_penalty = generate(40_000, seed=7, age_effect=[0.45, 0.1, 0.0, 0.05, 0.9])
    with pytest.raises(FairLendingError, match="55\\+"):
        train_and_register(settings, families=["hgb"], data=elderly_penalty)


def _decide_into(path, models, start: datetime, n: int = 8_000) -> None:
    wh = DuckDBWarehouse(path)
    wh.ensure_tables()
    decide_into(wh, DecisionEngine(models), generate(n, seed=43, start=start, days=7))


def test_adverse_impact_alerts_for_a_biased_candidate_and_not_for_the_default_models(tmp_path, loaded_models):
    from governance.aliases import GovernanceError, promote
    from registry import mlflow_client
    from registry.loader import build_model_set, registry_pointers
    from training.train import train_and_register

    start = datetime(ANALYSIS.year, ANALYSIS.month, ANALYSIS.day, tzinfo=UTC) - timedelta(days=7)
    fair_db = tmp_path / "fair.duckdb"
    _decide_into(fair_db, loaded_models, start)
    settings = make_settings(tmp_path / "fair", time_column="transaction", duckdb_path=fair_db)
    fair = run_analysis(settings, ANALYSIS, log_mlflow=False, send_alerts=False, write_html=False)
    assert fair.report.fairness
    assert [a for a in fair.alerts if a.kind == "fairness_adverse_impact"] == []
    assert min(b.impact_ratio for f in fair.report.fairness for b in f.brackets) > 0.8

    # A candidate trained with age as an input on data where the young default far more (and the elderly less):
    # it passes the elderly check and approves 18-24 far less often.
    biased_settings = make_settings(tmp_path / "biased", protected_fields=())
    young_penalty = generate(60_000, seed=7, age_effect=[2.5, 0.1, 0.0, 0.05, -0.3])
    report = train_and_register(biased_settings, families=["logreg"], data=young_penalty, aliases=("champion",))
    assert report.models[0].metrics["age_log_odds_18_to_24"] > 1.0
    # The promotion gate refuses it on adverse impact; only a recorded override makes it decide.
    (proposal,) = report.proposals
    assert "adverse impact" in proposal.failed_checks
    assert not proposal.moved
    client = mlflow_client(biased_settings.registry)
    with pytest.raises(GovernanceError, match="adverse impact"):
        promote(client, biased_settings, "champion", proposal.candidate)
    promote(client, biased_settings, "champion", proposal.candidate, force=True, reason="fairness monitor test")
    pointers, _, _ = registry_pointers(client, biased_settings.registry)
    biased_db = tmp_path / "biased.duckdb"
    _decide_into(biased_db, build_model_set(pointers, None), start)
    settings = make_settings(tmp_path / "biased", time_column="transaction", duckdb_path=biased_db)
    biased = run_analysis(settings, ANALYSIS, log_mlflow=False, send_alerts=False, write_html=False)
    alerts = [a for a in biased.alerts if a.kind == "fairness_adverse_impact"]
    assert len(alerts) == 1
    assert alerts[0].feature == "customer_age_bracket=18-24"
    assert alerts[0].value < 0.8
