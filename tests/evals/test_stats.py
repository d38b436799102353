"""Statistics for evaluation scores: checked against scipy, hand-computed values and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from llmgen.errors import LlmgenError
from llmgen.evals.stats import (
    bootstrap_ci,
    bootstrap_statistic_ci,
    is_binary,
    mcnemar,
    mcnemar_counts,
    paired_bootstrap,
    standard_error,
    summarize,
)


def test_standard_error_matches_scipy_sem():
    x = np.random.default_rng(0).normal(size=37)
    assert standard_error(x) == pytest.approx(float(sps.sem(x)))
    assert math.isnan(standard_error([1.0]))
    # 0/1 outcomes: sqrt(p(1-p)/(n-1)) with the ddof=1 variance
    assert standard_error([1, 0, 1, 1]) == pytest.approx(math.sqrt(0.75 * 0.25 / 3))


def test_bootstrap_ci_is_seeded_and_configurable():
    x = np.random.default_rng(1).exponential(size=60)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    low, high = bootstrap_ci(x, n_resamples=5000, seed=0)
    assert low < x.mean() < high
    narrow = bootstrap_ci(x, confidence=0.5, n_resamples=5000, seed=0)
    assert low < narrow[0] < narrow[1] < high
    with pytest.raises(LlmgenError):
        bootstrap_ci(x, confidence=1.5)
    with pytest.raises(LlmgenError):
        bootstrap_ci([], seed=0)


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=80)
    ours = bootstrap_ci(x, n_resamples=20_000, seed=0)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", random_state=0).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.05)
    assert ours[1] == pytest.approx(ref.high, abs=0.05)


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    """2000 synthetic data sets of 50 draws from N(0.3, 1): a 90% interval covers 0.3 about 90% of the time.

    With 2000 replicates the binomial sd of the rate is ~0.0067, so the band [0.87, 0.92] excludes
    the neighbouring levels: the same seeds give 0.84 for an 85% interval and 0.95 for a 95% one
    (an interval of the wrong level, e.g. quantiles at alpha instead of alpha/2, fails here).
    """
    rng = np.random.default_rng(123)
    reps, true_mean = 2000, 0.3
    covered = 0
    for rep in range(reps):
        x = rng.normal(true_mean, 1.0, size=50)
        low, high = bootstrap_ci(x, confidence=0.90, n_resamples=1000, seed=rep)
        covered += low <= true_mean <= high
    rate = covered / reps
    # the percentile bootstrap runs slightly narrow at n=50 (0.8915 here), hence the lower margin
    assert 0.87 <= rate <= 0.92, rate


def test_summarize_shape_and_nan_handling():
    s = summarize([1, 0, 1, 1, float("nan")], seed=0, n_resamples=500)
    assert set(s) == {"mean", "stderr", "ci_low", "ci_high", "n"}
    assert s["n"] == 4 and s["mean"] == pytest.approx(0.75)
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    empty = summarize([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_mcnemar_exact_hand_value_and_scipy_binomtest():
    # b=3, c=10: p = 2 * sum_{k<=3} C(13,k) / 2^13 = 2 * 378 / 8192
    r = mcnemar_counts(3, 10)
    assert r.method == "exact"
    assert r.p_value == pytest.approx(756 / 8192)
    assert r.p_value == pytest.approx(sps.binomtest(3, 13, 0.5).pvalue)
    assert mcnemar_counts(5, 5).p_value == pytest.approx(1.0)
    assert mcnemar_counts(0, 0).p_value == 1.0


def test_mcnemar_chi2_hand_value():
    # b=10, c=30: (|10-30| - 1)^2 / 40 = 9.025; chi2(1) survival = erfc(sqrt(x/2))
    r = mcnemar_counts(10, 30)
    assert r.method == "chi2"
    assert r.statistic == pytest.approx(9.025)
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert r.p_value == pytest.approx(float(sps.chi2.sf(9.025, 1)))
    # forcing the exact test on large counts agrees with scipy's binomial test
    assert mcnemar_counts(10, 30, exact=True).p_value == pytest.approx(sps.binomtest(10, 40, 0.5).pvalue)


def test_mcnemar_from_outcomes_counts_discordant_pairs():
    a = [1, 1, 1, 0, 0, 1, 0, 1]
    b = [1, 0, 0, 0, 1, 1, 0, 0]
    r = mcnemar(a, b)
    assert (r.b, r.c) == (3, 1)
    assert r.p_value == pytest.approx(sps.binomtest(1, 4, 0.5).pvalue)
    with pytest.raises(LlmgenError):
        mcnemar([0.5, 1], [0, 1])
    with pytest.raises(LlmgenError):
        mcnemar([1, 0], [1])
    assert is_binary([0, 1, 1.0]) and not is_binary([0, 0.5])


def _paired_scores(shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Two runs on 200 shared examples: a common per-example difficulty, noise, and A ahead by ``shift``."""
    rng = np.random.default_rng(7)
    difficulty = rng.normal(size=200)
    a = difficulty + rng.normal(0.0, 0.3, size=200) + shift
    b = difficulty + rng.normal(0.0, 0.3, size=200)
    return a, b


def test_paired_bootstrap_against_scipy_and_paired_t():
    # a small effect, so that p (~0.016) is far from both 0 and the resampling floor 1/(n+1)
    a, b = _paired_scores(0.04)
    r = paired_bootstrap(a, b, n_resamples=20_000, seed=0)
    assert r.diff == pytest.approx(float(np.mean(a - b)))
    assert (r.mean_a, r.mean_b, r.n) == (pytest.approx(a.mean()), pytest.approx(b.mean()), 200)
    ref = sps.bootstrap((a - b,), np.mean, n_resamples=20_000, method="percentile", random_state=0).confidence_interval
    width = ref.high - ref.low
    assert r.ci_low == pytest.approx(ref.low, abs=0.05 * width)
    assert r.ci_high == pytest.approx(ref.high, abs=0.05 * width)
    # the two-sided shift-method p-value tracks the paired t-test for a roughly normal mean difference:
    # a relative tolerance, so a one-sided p (half) or a p without the shift (near 1) fails
    t_p = sps.ttest_rel(a, b).pvalue
    assert 0.01 < t_p < 0.03
    assert r.p_value == pytest.approx(t_p, rel=0.15)
    # an unpaired view of the same data misses the effect that the paired one finds
    assert sps.ttest_ind(a, b).pvalue > 0.3 > 0.03 > r.p_value
    # a large effect: no resampled difference is as extreme, so p sits at its floor 1/(n+1)
    a, b = _paired_scores(0.1)
    big = paired_bootstrap(a, b, n_resamples=20_000, seed=0)
    assert big.p_value == pytest.approx(1 / 20_001)
    assert sps.ttest_rel(a, b).pvalue < 1e-4


def test_paired_bootstrap_edge_cases():
    same = paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0], n_resamples=200)
    assert same.diff == 0 and same.p_value == 1.0
    sure = paired_bootstrap([1] * 30, [0] * 30, n_resamples=999)
    assert sure.diff == 1 and (sure.ci_low, sure.ci_high) == (1.0, 1.0)
    assert sure.p_value == pytest.approx(1 / 1000)
    with pytest.raises(LlmgenError):
        paired_bootstrap([1, 2], [1, 2, 3])


def test_bootstrap_statistic_ci_generalises_the_mean_bootstrap():
    """One group and the mean as the statistic: exactly ``bootstrap_ci`` (same seed, same draws);
    several groups keep their sizes in every replicate (stratified), and NaN replicates are dropped."""
    x = np.random.default_rng(1).random(50)
    assert bootstrap_statistic_ci([range(50)], lambda i: [x[i].mean()], seed=3) == [bootstrap_ci(x, seed=3)]
    sizes = []
    bootstrap_statistic_ci([range(0, 3), range(3, 10)], lambda i: sizes.append(
        (int((i < 3).sum()), int((i >= 3).sum()))) or [0.0], n_resamples=20)
    assert set(sizes) == {(3, 7)}
    (lo, hi), (nlo, nhi) = bootstrap_statistic_ci([range(50)], lambda i: [x[i].max(), float("nan")], n_resamples=200)
    assert lo <= hi <= x.max() and math.isnan(nlo) and math.isnan(nhi)
    with pytest.raises(LlmgenError, match="at least one example"):
        bootstrap_statistic_ci([[]], lambda i: [0.0])
