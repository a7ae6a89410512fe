import math

import numpy as np
import pytest

from peftbench.scoring import stats


def test_wilson_interval_matches_the_textbook_value():
    # 50 of 100: centre 0.5, half-width 1.96*sqrt(0.25/100 + 1.96^2/40000)/(1 + 1.96^2/100)
    lo, hi = stats.wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4)
    assert hi == pytest.approx(0.5962, abs=1e-4)


def test_wilson_interval_at_zero_accuracy_has_a_positive_upper_end():
    lo, hi = stats.wilson_interval(0.0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(stats.Z_95**2 / (10 + stats.Z_95**2))


def test_wilson_interval_narrows_with_more_items_and_stays_in_unit_range():
    small, large = stats.wilson_interval(0.478, 100), stats.wilson_interval(0.478, 1319)
    assert large[1] - large[0] < small[1] - small[0]
    assert all(0 <= x <= 1 for x in stats.wilson_interval(1.0, 3))


@pytest.mark.parametrize("acc, n", [(0.5, 0), (1.5, 10), (-0.1, 10)])
def test_wilson_interval_rejects_impossible_inputs(acc, n):
    with pytest.raises(ValueError):
        stats.wilson_interval(acc, n)


@pytest.mark.parametrize("only_a, only_b, expected", [
    (0, 0, 1.0),
    (0, 6, 2 / 64),  # all six discordant items one way: 2 * 0.5^6
    (1, 9, 2 * (1 + 10) / 1024),
    (5, 5, 1.0),
])
def test_mcnemar_exact_p_values(only_a, only_b, expected):
    assert stats.mcnemar_exact(only_a, only_b) == pytest.approx(expected)
    assert stats.mcnemar_exact(only_b, only_a) == pytest.approx(expected)


def test_mcnemar_exact_handles_large_counts_without_overflow():
    p = stats.mcnemar_exact(400, 520)
    assert 0 < p < 0.001


def test_two_proportion_z_test_known_value():
    # z = 0.1 / sqrt(0.55 * 0.45 * (1/100 + 1/100)) = 1.4213 -> two-sided p = 0.1552
    assert stats.two_proportion_z(0.5, 100, 0.6, 100) == pytest.approx(0.1552, abs=1e-4)
    assert stats.two_proportion_z(0.4, 50, 0.4, 80) == pytest.approx(1.0)


def test_paired_bootstrap_is_deterministic_and_brackets_the_difference():
    rng = np.random.default_rng(1)
    a = rng.random(500) < 0.55
    b = rng.random(500) < 0.45
    first = stats.compare_paired(a, b, n_bootstrap=2000, seed=3)
    second = stats.compare_paired(a, b, n_bootstrap=2000, seed=3)
    assert first == second
    assert first.diff_lo < first.diff < first.diff_hi
    assert first.only_a + first.only_b + first.both + first.neither == 500
    assert first.diff == pytest.approx((first.only_a - first.only_b) / 500)


def test_paired_bootstrap_agrees_with_resampling_items_directly():
    # the multinomial shortcut must give the interval of the plain index bootstrap
    rng = np.random.default_rng(7)
    a = rng.random(300) < 0.6
    b = a.copy()
    b[rng.choice(300, 60, replace=False)] ^= True
    diffs = a.astype(float) - b.astype(float)
    lo, hi = stats.paired_bootstrap(diffs, n_bootstrap=20_000, seed=0)
    idx = np.random.default_rng(1).integers(0, 300, size=(20_000, 300))
    naive_lo, naive_hi = np.percentile(diffs[idx].mean(axis=1), [2.5, 97.5])
    assert lo == pytest.approx(naive_lo, abs=0.006)
    assert hi == pytest.approx(naive_hi, abs=0.006)


def test_identical_runs_differ_by_exactly_zero():
    a = [True, False, True, True]
    result = stats.compare_paired(a, a, n_bootstrap=500)
    assert (result.diff, result.diff_lo, result.diff_hi, result.p_mcnemar) == (0.0, 0.0, 0.0, 1.0)


def test_compare_paired_refuses_unaligned_vectors():
    with pytest.raises(ValueError, match="aligned"):
        stats.compare_paired([True, False], [True])


def test_best_tier_uses_mcnemar_when_both_have_the_same_items():
    best = stats.Candidate(0.6, 10, {str(i): i < 6 for i in range(10)})
    close = stats.Candidate(0.5, 10, {str(i): i < 5 for i in range(10)})
    marks = stats.indistinguishable_from_best([close, best, None])
    assert marks[1] == (True, 1.0, "best")
    assert marks[0] == (True, 1.0, "mcnemar")  # one discordant item: p = 1
    assert marks[2] == (False, None, None)


def test_best_tier_falls_back_to_the_z_test_and_drops_clearly_worse_runs():
    best = stats.Candidate(0.52, 1319)
    tied = stats.Candidate(0.50, 1319)
    worse = stats.Candidate(0.40, 1319)
    marks = stats.indistinguishable_from_best([best, tied, worse])
    assert [m[0] for m in marks] == [True, True, False]
    assert marks[1][2] == "z-test"
    assert marks[2][1] < 0.001


def test_best_tier_of_nothing_is_empty_marks():
    assert stats.indistinguishable_from_best([None, None]) == [(False, None, None)] * 2


def test_binomial_cdf_half_sums_to_one():
    assert stats.binomial_cdf_half(10, 10) == 1.0
    assert stats.binomial_cdf_half(-1, 10) == 0.0
    assert math.isclose(stats.binomial_cdf_half(2, 4), (1 + 4 + 6) / 16)
