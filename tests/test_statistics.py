"""Statistics against reference implementations (scipy, statsmodels) and by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

from analysis.means import welch_test
from analysis.multiple import benjamini_hochberg, holm
from analysis.paired import mcnemar
from analysis.power import minimum_detectable_effect, power_two_proportions, sample_size_two_proportions
from analysis.proportions import chi2_arms, compare_proportions, wilson_interval
from analysis.sequential import confidence_sequence, difference_of_rates
from analysis.simulation import peeking
from analysis.srm import sample_ratio_mismatch

CASES = [(80, 100, 90, 110), (8_000, 10_000, 7_850, 10_000), (3, 40, 11, 45), (700, 1_000, 2_150, 3_000)]


@pytest.mark.parametrize(("s1", "n1", "s2", "n2"), CASES)
def test_proportions_match_statsmodels(s1, n1, s2, n2):
    for s, n in ((s1, n1), (s2, n2)):
        np.testing.assert_allclose(wilson_interval(s, n), proportion_confint(s, n, method="wilson"), atol=1e-12)
        np.testing.assert_allclose(
            wilson_interval(s, n), stats.binomtest(s, n).proportion_ci(method="wilson"), atol=1e-12
        )
    result = compare_proportions(s1, n1, s2, n2)
    ref = confint_proportions_2indep(s2, n2, s1, n1, method="newcomb", compare="diff")
    np.testing.assert_allclose((result.ci_low, result.ci_high), ref, atol=1e-12)
    z, p = proportions_ztest([s2, s1], [n2, n1])
    assert result.chi2 == pytest.approx(z * z, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.cohens_h == pytest.approx(proportion_effectsize(s2 / n2, s1 / n1), rel=1e-12)


def test_chi2_across_arms_matches_scipy():
    chi2, p = chi2_arms([700, 310, 290], [1_000, 400, 400])
    ref = stats.chi2_contingency(np.array([[700, 300], [310, 90], [290, 110]]), correction=False)
    assert (chi2, p) == pytest.approx((ref[0], ref[1]))


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.05, 0.02, 500), rng.normal(0.052, 0.03, 700)
    result = welch_test(a, b)
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert result.t == pytest.approx(ref.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert result.df == pytest.approx(ref.df, rel=1e-10)
    np.testing.assert_allclose((result.ci_low, result.ci_high), tuple(ref.confidence_interval()), rtol=1e-10)


@pytest.mark.parametrize(("p1", "p2", "n", "ratio"), [(0.8, 0.82, 5_000, 1.0), (0.05, 0.06, 20_000, 0.43)])
def test_power_and_sample_size_match_statsmodels(p1, p2, n, ratio):
    effect = proportion_effectsize(p2, p1)
    ref = NormalIndPower().power(effect_size=effect, nobs1=n, alpha=0.05, ratio=ratio)
    assert power_two_proportions(p1, p2, n, ratio=ratio) == pytest.approx(ref, rel=1e-9)
    ref_n = NormalIndPower().solve_power(effect_size=effect, power=0.8, alpha=0.05, ratio=ratio)
    assert sample_size_two_proportions(p1, p2, ratio=ratio) == int(np.ceil(ref_n))
    mde = minimum_detectable_effect(p1, n, ratio=ratio)
    assert power_two_proportions(p1, p1 + mde, n, ratio=ratio) == pytest.approx(0.8, abs=1e-6)


def test_srm_flags_a_broken_split():
    ok = sample_ratio_mismatch([7_030, 2_970], [0.7, 0.3])
    assert not ok.mismatch
    assert ok.p_value == pytest.approx(stats.chisquare([7_030, 2_970], [7_000, 3_000]).pvalue)
    assert sample_ratio_mismatch([7_300, 2_700], [0.7, 0.3]).mismatch


def test_multiple_comparisons_match_statsmodels():
    p = [0.001, 0.02, 0.03, 0.04, 0.2, 0.011]
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])


@pytest.mark.parametrize("discordant", [(5, 12), (120, 80)])
def test_mcnemar_matches_statsmodels(discordant):
    only_a, only_b = discordant
    a = [True] * only_a + [False] * only_b + [True] * 300 + [False] * 200
    b = [False] * only_a + [True] * only_b + [True] * 300 + [False] * 200
    result = mcnemar(a, b)
    table = [[300, only_a], [only_b, 200]]
    ref = sm_mcnemar(table, exact=result.exact, correction=True)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert result.disagreement_rate == pytest.approx((only_a + only_b) / len(a))


def test_sequential_test_controls_false_positives_under_continuous_peeking():
    result = peeking(0.8, 0.8, experiments=300, looks=30, step=100, seed=1)
    assert result.sequential_rate <= 0.05
    assert result.naive_rate > 0.10  # peeking at a fixed-horizon test inflates false positives


def test_confidence_sequence_covers_the_truth():
    rng = np.random.default_rng(3)
    misses = 0
    for _ in range(200):
        a, b = rng.random(3_000) < 0.8, rng.random(3_000) < 0.83
        covered = True
        for n in range(100, 3_001, 100):
            est, var = difference_of_rates(int(a[:n].sum()), n, int(b[:n].sum()), n)
            low, high = confidence_sequence(est, var, 0.02**2)
            covered &= low <= 0.03 <= high
        misses += not covered
    assert misses / 200 <= 0.05


def test_simulated_power_matches_the_power_calculation():
    p1, p2 = 0.80, 0.82
    n = sample_size_two_proportions(p1, p2, power=0.8)
    rng = np.random.default_rng(4)
    sims = 1_000
    s1, s2 = rng.binomial(n, p1, sims), rng.binomial(n, p2, sims)
    significant = [compare_proportions(int(x), n, int(y), n).p_value < 0.05 for x, y in zip(s1, s2, strict=True)]
    assert np.mean(significant) == pytest.approx(0.80, abs=0.04)
