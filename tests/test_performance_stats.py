"""Performance statistics against independent references: sklearn's AUC, a pairwise DeLong written from the paper,
Monte Carlo for the expected AUC, and calibration checks on calibrated vs shifted outcomes of the real generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from analysis.performance import auc, calibration, delong, estimate, expected_auc, paired_test


def _reference_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong, DeLong & Clarke-Pearson (1988) as written: structural components from every (bad, good) pair,
    ψ = 1 if the bad loan scores higher, ½ on a tie; S = S10/m + S01/n."""
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    k = scores.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    aucs = np.empty(k)
    for r in range(k):
        psi = (pos[r][:, None] > neg[r][None, :]) + 0.5 * (pos[r][:, None] == neg[r][None, :])
        v10[r] = psi.mean(axis=1)
        v01[r] = psi.mean(axis=0)
        aucs[r] = psi.mean()
    s10 = np.array([[((v10[a] - aucs[a]) * (v10[b] - aucs[b])).sum() / (m - 1) for b in range(k)] for a in range(k)])
    s01 = np.array([[((v01[a] - aucs[a]) * (v01[b] - aucs[b])).sum() / (n - 1) for b in range(k)] for a in range(k)])
    return aucs, s10 / m + s01 / n


def _scored(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.08
    a = rng.normal(0, 1, n) + 1.2 * y
    b = 0.7 * a + rng.normal(0, 0.8, n) + 0.3 * y
    s = np.vstack([a, b])
    return y, (np.round(s, 1) if ties else s)


@pytest.mark.parametrize(("n", "seed", "ties"), [(50, 1, True), (2_000, 2, False), (3_000, 3, True), (40_000, 4, True)])
def test_auc_equals_sklearn_to_1e9(n, seed, ties):
    y, s = _scored(n, seed, ties)
    assert abs(auc(y, s[0]) - roc_auc_score(y, s[0])) < 1e-9
    assert abs(delong(y, s).aucs[1] - roc_auc_score(y, s[1])) < 1e-9


@pytest.mark.parametrize(("n", "seed", "ties"), [(60, 5, True), (1_500, 6, False), (2_500, 7, True)])
def test_delong_ci_and_paired_test_equal_the_pairwise_reference_to_1e6(n, seed, ties):
    y, s = _scored(n, seed, ties)
    ours = delong(y, s)
    ref_aucs, ref_cov = _reference_delong(y, s)
    assert np.max(np.abs(ours.aucs - ref_aucs)) < 1e-9
    assert np.max(np.abs(ours.covariance - ref_cov)) < 1e-6 * max(1.0, float(np.max(np.abs(ref_cov))))
    z = stats.norm.ppf(0.975)
    low, high = ours.ci(0)
    assert abs(low - max(0.0, ref_aucs[0] - z * math.sqrt(ref_cov[0, 0]))) < 1e-6
    assert abs(high - min(1.0, ref_aucs[0] + z * math.sqrt(ref_cov[0, 0]))) < 1e-6
    test = paired_test(ours, 0, 1)
    ref_var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    ref_z = (ref_aucs[0] - ref_aucs[1]) / math.sqrt(ref_var)
    assert abs(test.z - ref_z) < 1e-6
    assert abs(test.p_value - 2 * stats.norm.sf(abs(ref_z))) < 1e-6


def test_the_paired_test_of_a_version_with_itself_is_no_difference():
    y, s = _scored(500, 8, True)
    same = paired_test(delong(y, np.vstack([s[0], s[0]])))
    assert same.delta == 0
    assert same.p_value == 1.0


def test_expected_auc_is_the_mean_auc_of_outcomes_drawn_from_the_scores():
    rng = np.random.default_rng(9)
    p = np.clip(rng.beta(0.6, 12, 3_000), 1e-4, 0.9)
    draws = [roc_auc_score(y, p) for y in (rng.random((300, p.size)) < p) if y.any() and not y.all()]
    assert abs(expected_auc(p) - float(np.mean(draws))) < 0.005


def test_expected_auc_counts_ties_half():
    assert expected_auc(np.array([0.2, 0.2, 0.2])) == pytest.approx(0.5)


def test_estimated_default_rate_interval_covers_realized_rates_of_calibrated_scores():
    rng = np.random.default_rng(10)
    p = np.clip(rng.beta(0.8, 30, 5_000), 1e-4, 0.5)
    e = estimate(p)
    realized = (rng.random((400, p.size)) < p).mean(axis=1)
    covered = np.mean((realized >= e.default_rate_low) & (realized <= e.default_rate_high))
    assert 0.92 <= covered <= 0.98  # a 95 % interval


def _generator_loans(n: int, seed: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real generator rows: the true probability as a perfectly calibrated score, customers as clusters, outcomes
    drawn from ``factor`` × the probability for the <25k income bracket."""
    from datagen import generate

    data = generate(n, seed=seed)
    p = data.true_probability
    low_income = data.columns["customer_income_bracket"] == "<25k"
    rng = np.random.default_rng(seed)
    y = rng.random(n) < np.where(low_income, np.minimum(1, p * factor), p)
    _, customer = np.unique(data.columns["customer_id"].astype(str), return_inverse=True)
    return y, p, customer.astype(np.int64), low_income


def test_calibrated_scores_of_repeat_customers_pass_and_a_segment_shift_fails():
    y, p, customer, _low_income = _generator_loans(60_000, 11, factor=1.0)
    ok = calibration(y, p, customer, bands=10, confidence=1 - 0.001 / 11)
    assert ok.failed_bands == []
    assert ok.citl_low <= 0 <= ok.citl_high
    y2, p2, customer2, low2 = _generator_loans(60_000, 11, factor=2.0)
    shifted = calibration(y2[low2], p2[low2], customer2[low2], bands=1, confidence=1 - 0.001 / 11)
    assert shifted.overall.outside
    assert shifted.overall.ratio > 1.5
