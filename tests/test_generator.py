"""The synthetic data generator: determinism, realistic shares, a learnable signal, drift knobs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from datagen import ConceptShift, CovariateShift, NewCategory, generate
from features import featurize_columns
from schemas import parse_request


@pytest.fixture(scope="module")
def data():
    return generate(100_000, seed=11)


def _same(a, b) -> None:
    assert a.columns.keys() == b.columns.keys()
    for key in a.columns:
        np.testing.assert_array_equal(a.columns[key], b.columns[key], err_msg=key)
    np.testing.assert_array_equal(a.will_default, b.will_default)
    np.testing.assert_array_equal(a.days_to_first_missed_payment, b.days_to_first_missed_payment)
    np.testing.assert_array_equal(a.outcome_known_at, b.outcome_known_at)


def test_same_seed_same_output_and_other_seed_differs():
    _same(generate(20_000, seed=5), generate(20_000, seed=5))
    other = generate(20_000, seed=6)
    assert not np.array_equal(generate(20_000, seed=5).columns["amount"], other.columns["amount"])


def test_default_rate_repeat_customers_and_business_hours(data):
    assert 0.04 <= data.will_default.mean() <= 0.08
    # At a launch (no customers yet) ~70 % of rows come from a customer already seen in the data.
    ids = generate(20_000, seed=3, history_days=0).columns["customer_id"]
    repeat_share = 1 - len(set(ids.tolist())) / len(ids)
    assert 0.65 <= repeat_share <= 0.75
    hours = np.array([int(ts[11:13]) for ts in data.columns["transaction_timestamp"]])
    assert 0.65 <= ((hours >= 9) & (hours <= 17)).mean() <= 0.75


def test_rows_are_valid_original_requests_in_time_order(data):
    for i in range(0, len(data), 997):
        parse_request(data.request(i))
    stamps = data.columns["transaction_timestamp"].astype(str)
    assert (stamps[1:] >= stamps[:-1]).all()


def test_outcomes_arrive_two_to_six_weeks_later(data):
    bought = np.array([s.rstrip("Z") for s in data.columns["transaction_timestamp"]], dtype="datetime64[s]")
    known = np.array([s.rstrip("Z") for s in data.outcome_known_at], dtype="datetime64[s]")
    delay_days = (known - bought).astype(np.int64) / 86_400
    assert delay_days.min() >= 14
    assert delay_days.max() <= 42
    missed = data.days_to_first_missed_payment
    assert ((missed > 0) == data.will_default).all()
    outcome = data.outcome(int(np.flatnonzero(data.will_default)[0]))
    assert outcome["will_default"] is True
    assert outcome["days_to_first_missed_payment"] in (14, 28, 42)


def test_label_depends_on_more_than_risk_score(data):
    x = StandardScaler().fit_transform(featurize_columns(data.columns).matrix)
    y = data.will_default
    half = len(y) // 2
    risk_only = LogisticRegression(max_iter=1000).fit(x[:half, [3]], y[:half])
    auc_risk = roc_auc_score(y[half:], risk_only.predict_proba(x[half:, [3]])[:, 1])
    full = LogisticRegression(max_iter=5000).fit(x[:half], y[:half])
    auc_full = roc_auc_score(y[half:], full.predict_proba(x[half:])[:, 1])
    assert auc_full > auc_risk + 0.08, (auc_risk, auc_full)
    # Within the same risk_score band the default rate still depends on affordability.
    band = (data.columns["risk_score"] > 0.3) & (data.columns["risk_score"] < 0.4)
    afford = data.columns["amount"] / data.columns["payment_credit_limit"]
    stretched = y[band & (afford > 0.45)].mean()
    comfortable = y[band & (afford < 0.1)].mean()
    assert stretched > 2 * comfortable, (stretched, comfortable)


def test_drift_prefix_is_identical_to_no_drift():
    base = generate(30_000, seed=2)
    drifted = generate(
        30_000,
        seed=2,
        drifts=[NewCategory(start_index=20_000, share=0.2), CovariateShift(start_index=20_000)],
    )
    _same(base.slice(0, 20_000), drifted.slice(0, 20_000))


def test_new_category_appears_only_after_start():
    data = generate(40_000, seed=3, drifts=[NewCategory(start_index=25_000, share=0.1)])
    zip_rows = data.columns["payment_provider"] == "zip"
    assert not zip_rows[:25_000].any()
    assert 0.08 <= zip_rows[25_000:].mean() <= 0.12


def test_new_category_start_time_resolves_to_index():
    start = datetime(2025, 7, 1, tzinfo=UTC)
    data = generate(40_000, seed=3, drifts=[NewCategory(start_time=start, share=0.5)])
    stamps = data.columns["transaction_timestamp"].astype(str)
    zip_rows = data.columns["payment_provider"] == "zip"
    assert not zip_rows[stamps < "2025-07-01"].any()
    assert zip_rows[stamps >= "2025-07-01"].mean() > 0.4


def test_covariate_shift_moves_income_mix_and_risk():
    base = generate(60_000, seed=4)
    shifted = generate(60_000, seed=4, drifts=[CovariateShift(start_index=30_000, share=0.6)])
    low_income = ("<25k", "25k-50k")
    before = np.isin(base.columns["customer_income_bracket"][30_000:], low_income).mean()
    after = np.isin(shifted.columns["customer_income_bracket"][30_000:], low_income).mean()
    assert after > before + 0.1
    assert shifted.true_probability[30_000:].mean() > base.true_probability[30_000:].mean() * 1.2


def test_concept_shift_multiplies_segment_default_probability():
    base = generate(40_000, seed=8)
    shifted = generate(40_000, seed=8, drifts=[ConceptShift(start_index=20_000, factor=3.0)])
    segment = base.columns["product_category"] == "electronics"
    after = np.arange(40_000) >= 20_000
    np.testing.assert_allclose(
        shifted.true_probability[segment & after], np.minimum(1, 3 * base.true_probability[segment & after])
    )
    np.testing.assert_array_equal(
        shifted.true_probability[~(segment & after)], base.true_probability[~(segment & after)]
    )


def test_drift_needs_exactly_one_start():
    with pytest.raises(ValueError, match="exactly one"):
        NewCategory()


def test_a_running_business_looks_the_same_in_every_window():
    # Customers come back for a while and then drift away, and every dataset starts a year into the business: the
    # first and the last quarter of a year have the same account ages and repeat rates (a drift reference taken
    # from one period fits traffic from the next).
    year = generate(80_000, seed=12)
    quarters = [slice(0, 20_000), slice(60_000, 80_000)]
    tenure = [np.median(year.columns["customer_tenure_days"][q]) for q in quarters]
    per_customer = [20_000 / len(set(year.columns["customer_id"][q].tolist())) for q in quarters]
    assert tenure[0] == pytest.approx(tenure[1], rel=0.08)
    assert per_customer[0] == pytest.approx(per_customer[1], rel=0.05)
    launch = generate(80_000, seed=12, history_days=0)
    # At a launch the pool is young: short account ages early on.
    assert np.median(launch.columns["customer_tenure_days"][:20_000]) < tenure[0] * 0.9
