"""The statistics behind every interval the book states, pinned by cases computed another way:
by hand (every resample of a tiny sample enumerated) and by the normal approximation on a
large sample, for the interval's level, its centre and what is resampled."""

import itertools

import numpy as np
import pytest

from eclip_core.errors import InputError
from eclip_core.stats import Interval, bootstrap, paired_difference, percentile_interval


def exact_quantile(values, q):
    """The q-quantile of the mean's exact bootstrap distribution: every one of the n^n equally
    likely resamples enumerated; the smallest mean whose cumulative probability reaches q,
    with how far q lies from a jump of the distribution (an estimate from draws lands on the
    same atom when that margin is many times its Monte Carlo error)."""
    means, counts = np.unique([np.mean(c) for c in itertools.product(values, repeat=len(values))],
                              return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    i = int(np.searchsorted(cdf, q))
    return means[i], min(cdf[i] - q, q - (cdf[i - 1] if i else 0.0))


@pytest.mark.parametrize("level,expected", [(0.95, (0.5, 5.5)), (0.5, (1.25, 3.5))])
def test_a_tiny_sample_gives_the_enumerated_interval(level, expected):
    """[0, 1, 2, 7]: 256 resamples. 100,000 bootstrap draws land on the exact quantiles (their
    Monte Carlo error, at most 0.0014 in probability, is a fifth of the margin to the next
    atom or less); the 90% interval would end at 5.25, not 5.5."""
    values = [0.0, 1.0, 2.0, 7.0]
    got = bootstrap(values, n_boot=100_000, seed=1, level=level)
    for bound, q in zip(expected, ((1 - level) / 2, (1 + level) / 2)):
        atom, margin = exact_quantile(values, q)
        assert atom == bound and margin > 5 * np.sqrt(q * (1 - q) / 100_000)
    assert (got.low, got.high) == expected
    assert got.estimate == 2.5 and got.n == 4 and got.level == level
    assert exact_quantile(values, 0.95)[0] == 5.25  # the 90% interval's upper end differs


def test_two_values_by_hand():
    """[0, 1]: the resampled mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4, so the 95%
    interval is [0, 1] and the 40% interval (the 30% and 70% quantiles) is the single point 1/2."""
    wide = bootstrap([0.0, 1.0], n_boot=20_000, seed=0, level=0.95)
    narrow = bootstrap([0.0, 1.0], n_boot=20_000, seed=0, level=0.4)
    assert (wide.low, wide.high) == (0.0, 1.0)
    assert (narrow.low, narrow.high) == (0.5, 0.5)
    assert wide.estimate == narrow.estimate == 0.5


@pytest.mark.parametrize("level,z", [(0.95, 1.959964), (0.8, 1.281552)])
def test_a_large_sample_meets_the_normal_approximation(level, z):
    """n = 2000 draws of N(3, 2^2): the percentile interval of the mean is mean +- z s / sqrt(n)
    to within its Monte Carlo error (4% of the half-width here); a 90% interval would be
    16% narrower than a 95% one, a 95% one 53% wider than an 80% one."""
    values = np.random.default_rng(7).normal(3.0, 2.0, size=2000)
    got = bootstrap(values, level=level, seed=3)
    half = z * values.std(ddof=1) / np.sqrt(len(values))
    assert got.estimate == pytest.approx(values.mean(), abs=1e-12)
    assert (got.high - got.low) / (2 * half) == pytest.approx(1.0, abs=0.04)
    assert (got.low + got.high) / 2 == pytest.approx(values.mean(), abs=0.1 * half)


def test_the_estimate_is_the_statistic_of_the_whole_sample_not_of_the_resamples():
    values = np.array([0.0, 0.0, 0.0, 10.0])
    got = bootstrap(values, np.median, n_boot=500)
    assert got.estimate == 0.0 and got.high == 10.0


def test_rows_are_resampled_together():
    """A 2-D sample keeps its columns together: resampling the rows of [x, x] never parts them,
    so the statistic 'column 0 minus column 1' is exactly 0 on every resample."""
    x = np.random.default_rng(0).normal(size=50)
    got = bootstrap(np.stack([x, x], 1), lambda rows: float(np.mean(rows[:, 0] - rows[:, 1])), n_boot=300)
    assert (got.estimate, got.low, got.high) == (0.0, 0.0, 0.0)


def test_the_paired_difference_resamples_pairs():
    """Two measurements of the same 400 items that differ by 0.1 + small noise, where the items
    vary a lot (sd 5): resampling pairs gives an interval as narrow as the noise allows (about
    0.1 +- 1.96 * 0.01 / sqrt(400)); resampling each sample on its own would give one about
    5 * sqrt(2) / 0.01 = 700 times wider, which would hold 0."""
    rng = np.random.default_rng(5)
    items = rng.normal(0, 5, size=400)
    a, b = items + 0.1 + rng.normal(0, 0.01, size=400), items
    got = paired_difference(a, b, seed=2)
    half = 1.96 * 0.01 / np.sqrt(400)
    assert got.estimate == pytest.approx(np.mean(a - b), abs=1e-12)
    assert got.low > 0.1 - 2 * half and got.high < 0.1 + 2 * half
    assert got.high - got.low == pytest.approx(2 * half, rel=0.15)
    with pytest.raises(InputError, match="equal shapes"):
        paired_difference(a, b[:-1])


def test_the_sign_of_the_paired_difference_is_a_minus_b():
    got = paired_difference([2.0, 3.0, 4.0], [1.0, 1.0, 1.0], n_boot=200)
    assert got.estimate == 2.0 and got.low >= 1.0


def test_the_interval_is_seeded():
    values = np.random.default_rng(1).normal(size=30)
    assert bootstrap(values, seed=4) == bootstrap(values, seed=4)
    assert bootstrap(values, seed=4) != bootstrap(values, seed=5)


def test_percentile_interval_cuts_the_central_level():
    replicates = np.arange(1001, dtype=float)  # the q-quantile is 1000 q exactly
    assert percentile_interval(replicates, 0.95) == pytest.approx((25.0, 975.0), abs=1e-9)
    assert percentile_interval(replicates, 0.5) == pytest.approx((250.0, 750.0), abs=1e-9)
    low, high = percentile_interval(np.stack([replicates, 2 * replicates]), 0.9, axis=-1)
    assert low == pytest.approx([50.0, 100.0], abs=1e-9) and high == pytest.approx([950.0, 1900.0], abs=1e-9)
    for level in (0, 1, 1.5):
        with pytest.raises(InputError, match="level"):
            percentile_interval(replicates, level)


def test_an_interval_prints_its_estimate_bounds_and_n():
    assert str(Interval(0.25, -0.125, 0.5, 40)) == "+0.250 [-0.125, +0.500] (n=40)"
    with pytest.raises(InputError, match="at least one value"):
        bootstrap([])
