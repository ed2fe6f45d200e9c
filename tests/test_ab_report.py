"""The A/B report with the customer as the unit: clustered variances against references, verdicts, version splits,
CUPED, the sequential test over all decisions, and the once-only alert of its first crossing."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import redis

from analysis.ab_report import Decisions, Plan, build_report, render_text
from analysis.clustered import compare, compare_cuped, customer_sums, ratio_estimate
from bnpl_cli.ab_report import _alert_crossings
from common.keys import decode_entry
from tests.conftest import make_settings

ALLOCATION = {"champion": 0.7, "challenger": 0.3}


def traffic(
    customers: int,
    approve: dict[str, float],
    seed: int,
    shares: dict[str, float] = ALLOCATION,
    visits: float = 3.0,
    spread: float = 2.0,
) -> Decisions:
    """Decisions of returning customers: each customer has a propensity of their own (their decisions are
    correlated), visits a Poisson number of times, and stays in one arm."""
    rng = np.random.default_rng(seed)
    arms_of = rng.choice(list(shares), size=customers, p=list(shares.values()))
    logit = rng.normal(0, spread, customers)
    visits_of = rng.poisson(visits, customers) + 1
    customer = np.repeat(np.arange(customers), visits_of)
    rng.shuffle(customer)  # decisions arrive interleaved in time
    arm = arms_of[customer]
    base = np.array([np.log(approve[a] / (1 - approve[a])) for a in arm])
    p = 1 / (1 + np.exp(-(base + logit[customer])))
    u = rng.random(customer.size)
    decision = np.where(u < p, "approve", np.where(u < p + (1 - p) * 0.6, "manual_review", "deny"))
    score = np.clip(1 - p + rng.normal(0, 0.02, customer.size), 0, 1)
    return Decisions(
        arm.astype(np.str_),
        np.full(customer.size, "1", dtype=np.str_),
        np.char.add("c", customer.astype(str)),
        decision.astype(np.str_),
        score,
        rng.gamma(2.0, 0.5, customer.size),
    )


# --- the clustered variance against references ----------------------------------------------------------------------
def test_clustered_variances_equal_statsmodels_cluster_robust_ols():
    import statsmodels.api as sm

    data = traffic(3_000, {"champion": 0.8, "challenger": 0.8}, seed=1)
    codes = np.unique(data.customer, return_inverse=True)[1].astype(np.int64)
    y = (data.decision == "approve").astype(float)
    treated = data.arm == "challenger"
    ones = np.ones(len(data))
    a = ratio_estimate(customer_sums(codes[~treated], y[~treated], ones[~treated]), ddof=0)
    b = ratio_estimate(customer_sums(codes[treated], y[treated], ones[treated]), ddof=0)
    difference = compare(a, b)
    # OLS of the decision-level indicator on an intercept and the arm, clusters = customers, CR0 (no correction).
    fit = sm.OLS(y, sm.add_constant(treated.astype(float))).fit(
        cov_type="cluster", cov_kwds={"groups": codes, "use_correction": False}
    )
    assert difference.delta == pytest.approx(fit.params[1], abs=1e-12)
    assert difference.variance == pytest.approx(fit.cov_params()[1, 1], rel=1e-9)
    # Intercept-only per arm: the arm's own variance.
    arm_fit = sm.OLS(y[~treated], np.ones(int((~treated).sum()))).fit(
        cov_type="cluster", cov_kwds={"groups": codes[~treated], "use_correction": False}
    )
    assert a.variance == pytest.approx(arm_fit.cov_params()[0, 0], rel=1e-9)


def test_delta_method_matches_the_explicit_formula():
    """Var(R) = [Var(Y) − 2R Cov(Y,N) + R² Var(N)] / (n N̄²), written out independently."""
    rng = np.random.default_rng(2)
    n = rng.poisson(4, 500) + 1
    y = rng.binomial(n, rng.beta(3, 1.5, 500)).astype(float)  # each customer approved at a rate of their own
    estimate = ratio_estimate(customer_sums(np.repeat(np.arange(500), 1), y, n.astype(float)))
    r = y.sum() / n.sum()
    cov = np.cov(y, n, ddof=1)
    expected = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (500 * n.mean() ** 2)
    assert estimate.estimate == pytest.approx(r, rel=1e-12)
    assert estimate.variance == pytest.approx(expected, rel=1e-9)
    assert estimate.design_effect > 1  # customers' decisions are correlated here


# --- verdicts -------------------------------------------------------------------------------------------------------
def test_a_report_on_all_approvals_is_collecting_not_a_traceback():
    first = traffic(40, {"champion": 0.8, "challenger": 0.8}, seed=3).take(np.arange(88))
    data = Decisions(
        first.arm, first.version, first.customer, np.full(88, "approve", dtype=np.str_), first.score, first.latency_ms
    )
    report = build_report("exp", data, Plan(ALLOCATION, minimum_customers=10))
    assert report.verdict == "COLLECTING"
    assert "no variation" in report.reason
    assert "COLLECTING" in render_text(report)


def test_an_empty_arm_is_collecting():
    data = traffic(500, {"champion": 0.8, "challenger": 0.8}, seed=4, shares={"champion": 1.0})
    report = build_report("exp", data, Plan(ALLOCATION, minimum_customers=10))
    assert report.verdict in ("COLLECTING", "INVALID")  # nobody in the challenger arm: also a sample-ratio mismatch


def test_verdicts_ship_breach_invalid_and_no_difference():
    plan = Plan(ALLOCATION, minimum_customers=500)
    same = build_report("exp", traffic(6_000, {"champion": 0.8, "challenger": 0.8}, seed=5), plan)
    assert same.verdict == "NO DIFFERENCE"
    better = build_report("exp", traffic(20_000, {"champion": 0.75, "challenger": 0.85}, seed=6), plan)
    assert better.verdict == "SHIP", better.reason
    (comparison,) = better.comparisons
    assert comparison.success.status == "better"
    assert all(r.status == "ok" for r in comparison.results if r.kind == "guardrail")
    # The same win, but the challenger is slow: the latency guardrail blocks shipping.
    slow = traffic(20_000, {"champion": 0.75, "challenger": 0.85}, seed=6)
    slower = slow.latency_ms + np.where(slow.arm == "challenger", 5.0, 0.0)
    slow = Decisions(slow.arm, slow.version, slow.customer, slow.decision, slow.score, slower)
    breach = build_report("exp", slow, plan)
    assert breach.verdict == "GUARDRAIL BREACH"
    assert "latency" in breach.reason
    lopsided = {"champion": 0.8, "challenger": 0.2}
    skewed = build_report("exp", traffic(6_000, {"champion": 0.8, "challenger": 0.8}, seed=7, shares=lopsided), plan)
    assert skewed.verdict == "INVALID"
    assert "0.001" in skewed.reason
    assert "(mismatch below 0.001)" in render_text(skewed)


def test_sample_ratio_is_checked_on_customers_not_decisions():
    """Heavy users in one arm skew the decision counts, not the customer counts: no false INVALID."""
    data = traffic(6_000, {"champion": 0.8, "challenger": 0.8}, seed=8, visits=6.0, spread=0.5)
    report = build_report("exp", data, Plan(ALLOCATION, minimum_customers=500))
    assert not report.srm.mismatch
    assert sum(report.customers_per_arm.values()) == len(np.unique(data.customer))


# --- model versions -------------------------------------------------------------------------------------------------
def test_an_alias_moved_mid_experiment_shows_two_versions_in_the_arm():
    data = traffic(8_000, {"champion": 0.8, "challenger": 0.8}, seed=9)
    half = len(data) // 2
    version = np.where(
        (data.arm == "challenger") & (np.arange(len(data)) >= half), "4", np.where(data.arm == "challenger", "2", "1")
    ).astype(np.str_)
    moved = Decisions(data.arm, version, data.customer, data.decision, data.score, data.latency_ms)
    report = build_report("exp", moved, Plan(ALLOCATION, minimum_customers=100))
    labels = [s.label for s in report.segments]
    assert labels == ["champion", "challenger@v2", "challenger@v4"]
    first, second = report.comparisons
    assert (first.treatment.version, second.treatment.version) == ("2", "4")
    # Each version is compared with the control's decisions of its own period only.
    assert first.control.decisions + second.control.decisions == pytest.approx(
        int((data.arm == "champion").sum()), rel=0.01
    )
    assert "challenger@v4" in render_text(report)


# --- CUPED ----------------------------------------------------------------------------------------------------------
def test_cuped_with_pre_experiment_history_reduces_the_variance():
    rng = np.random.default_rng(10)
    customers = 4_000
    propensity = rng.normal(0, 2, customers)
    arms = rng.choice(["champion", "challenger"], customers, p=[0.5, 0.5])

    def decisions(visits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        who = np.repeat(np.arange(customers), visits)
        approved = rng.random(who.size) < 1 / (1 + np.exp(-(1.4 + propensity[who])))
        return who, approved.astype(float)

    who, approved = decisions(rng.poisson(3, customers) + 1)
    pre_who, pre_approved = decisions(rng.poisson(3, customers))
    pre = customer_sums(pre_who, pre_approved, np.ones(pre_who.size))
    covariate = np.zeros(customers)
    covariate[pre.codes] = ratio_estimate(pre).influence
    c, t = arms[who] == "champion", arms[who] == "challenger"
    ones = np.ones(who.size)
    a = ratio_estimate(customer_sums(who[c], approved[c], ones[c]))
    b = ratio_estimate(customer_sums(who[t], approved[t], ones[t]))
    plain = compare(a, b)
    adjusted = compare_cuped(a, b, covariate[a.codes], covariate[b.codes])
    assert adjusted.variance_reduction > 0.3
    assert adjusted.variance < plain.variance
    assert abs(adjusted.delta) < 4 * np.sqrt(adjusted.variance)  # still centred on the true difference (0)


# --- the sequential test ---------------------------------------------------------------------------------------------
def test_the_sequential_test_uses_all_decisions_so_far_and_reports_its_crossing():
    data = traffic(20_000, {"champion": 0.75, "challenger": 0.85}, seed=11)
    report = build_report("exp", data, Plan(ALLOCATION, minimum_customers=500))
    (comparison,) = report.comparisons
    looks = comparison.sequential.looks
    assert looks[0].customers >= 400  # burn-in: 200 customers per arm before the first look
    assert looks[-1].decisions <= len(data)
    assert len(data) - looks[-1].decisions < 400  # the last look covers (nearly) everything, both arms
    crossed = comparison.sequential.crossed
    assert crossed is not None
    assert crossed.p_value <= 0.05
    assert crossed.cs_low > 0  # the confidence sequence excludes 0 from then on
    assert "crossed at" in render_text(report)


def test_first_crossing_alerts_once_with_the_p_and_difference_of_that_look(tmp_path, redis_server, key_prefix):
    settings = make_settings(tmp_path, redis_url=redis_server.url, key_prefix=key_prefix)
    data = traffic(20_000, {"champion": 0.75, "challenger": 0.85}, seed=12)
    report = build_report("exp", data, Plan(ALLOCATION, minimum_customers=500))
    look = report.comparisons[0].sequential.crossed
    assert look is not None
    assert _alert_crossings(settings, report) == ["ab:exp:challenger:approval_rate"]
    assert _alert_crossings(settings, report) == []  # same cause: no second alert
    client = redis.Redis.from_url(redis_server.url)
    try:
        (entry,) = client.xrange(settings.keys.alerts())
    finally:
        client.close()
    alert = orjson.loads(decode_entry(entry[1]).payload)
    assert alert["kind"] == "ab_test_significant"
    assert alert["value"] == look.p_value
    assert f"{look.delta:+.2%}" in alert["message"]
    assert f"{look.customers:,} customers" in alert["message"]


def test_outcomes_join_the_guardrails_as_the_default_rate_among_approved():
    import dataclasses

    data = traffic(8_000, {"champion": 0.8, "challenger": 0.8}, seed=12)
    plan = Plan(ALLOCATION, minimum_customers=100)
    without = build_report("exp", data, plan)
    assert any("no outcomes yet" in n for n in without.notes)
    rng = np.random.default_rng(3)
    approved = data.decision == "approve"
    worse = np.where(data.arm == "challenger", 0.08, 0.02)  # the challenger approves loans that default 4× as often
    defaulted = np.where(
        approved & (rng.random(len(data)) < 0.9), (rng.random(len(data)) < worse).astype(float), np.nan
    )
    report = build_report("exp", dataclasses.replace(data, defaulted=defaulted), plan)
    assert not any("no outcomes yet" in n for n in report.notes)
    (comparison,) = report.comparisons
    guard = next(r for r in comparison.results if r.metric == "default_rate_approved")
    assert guard.kind == "guardrail"
    assert guard.status == "breach"
    assert report.verdict == "GUARDRAIL BREACH"


def test_the_report_reads_outcomes_from_the_warehouse(tmp_path):
    from bnpl_cli.ab_report import _load, decisions_of
    from producers.outcomes import outcome_events
    from schemas.outcomes import Outcome
    from traffic.events import make_events
    from warehouse.duckdb_store import DuckDBWarehouse

    settings = make_settings(tmp_path, duckdb_path=tmp_path / "wh.duckdb")
    events = make_events(50, seed=3)
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    wh.ensure_tables()
    wh.insert_events([orjson.dumps(msgspec_to_builtins(e)) for e in events])
    with wh.connect() as conn:  # the fallback decided these: put them in an experiment
        conn.execute("UPDATE prediction_logs SET experiment_id = 'exp'")
    assert len(_load(settings, "exp")) == 50
    assert decisions_of(_load(settings, "exp")).defaulted is None
    first = events[0].decision
    wh.insert_outcomes(
        outcome_events(
            [
                Outcome(
                    transaction_id=first.transaction_id, customer_id="c", outcome="defaulted", outcome_date="2026-02-01"
                )
            ],
            "api",
        )
    )
    rows = _load(settings, "exp")
    defaulted = decisions_of(rows).defaulted
    assert defaulted is not None
    assert np.nansum(defaulted) == 1.0
    assert np.isnan(defaulted).sum() == len(rows) - 1


def msgspec_to_builtins(event):
    import msgspec

    return msgspec.to_builtins(event)
