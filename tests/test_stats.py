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


def test_a_band_is_the_pointwise_interval_of_the_mean_curve():
    """Curves that differ by a constant offset per item: the band at every point is the
    interval of the offsets' mean (the same resamples), shifted by the point's base value;
    and the curves are resampled whole (a point-by-point resample would narrow the band)."""
    from eclip_core.stats import bootstrap_band

    offsets = np.random.default_rng(2).normal(size=300)
    base = np.linspace(0, 1, 5)
    curves = offsets[:, None] + base[None]
    mean, low, high = bootstrap_band(curves, seed=9, level=0.9)
    iv = bootstrap(offsets, seed=9, level=0.9)
    assert mean == pytest.approx(base + offsets.mean(), abs=1e-12)
    assert low == pytest.approx(base + iv.low, abs=1e-12) and high == pytest.approx(base + iv.high, abs=1e-12)
    with pytest.raises(InputError, match="curves"):
        bootstrap_band(offsets)


def test_relative_gap_is_on_the_larger_maps_scale():
    import torch

    from eclip_core.stats import relative_gap

    a, b = torch.tensor([[0.0, 2.0], [1.0, -4.0]]), torch.tensor([[0.0, 2.0], [1.5, -3.0]])
    assert relative_gap(a, b) == pytest.approx(1.0 / 4.0)
    assert relative_gap(b, a) == relative_gap(a, b) and relative_gap(a, a) == 0.0
    assert relative_gap(torch.zeros(3), torch.zeros(3)) == 0.0


def test_holm_by_hand():
    """m = 4: sorted 0.01, 0.02, 0.03, 0.5 become 0.04, 0.06, 0.06 (kept no smaller than the
    previous 0.06), 0.5 -- returned in the given order; Bonferroni would give 0.08 and 0.12."""
    from eclip_core.stats import holm

    got = holm([0.03, 0.5, 0.01, 0.02])
    assert got.tolist() == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.9, 0.8]).tolist() == pytest.approx([1.0, 1.0])  # 0.8 x 2 capped at 1, then kept
    assert holm([0.4]).tolist() == [0.4]
    with pytest.raises(InputError, match="p-values"):
        holm([0.1, 1.5])


def test_one_sided_p_values_count_the_replicates_on_the_other_side():
    from eclip_core.stats import p_above, p_below

    replicates = np.arange(-9.0, 91.0)  # 100 values, 10 of them <= 0
    assert p_above(replicates, 0.0) == pytest.approx(11 / 101)
    assert p_below(replicates, 0.0) == pytest.approx(92 / 101)  # 0..90 are >= 0
    assert p_above(replicates, -100.0) == pytest.approx(1 / 101)  # never 0


def test_equivalence_is_the_90_percent_interval_inside_the_margin():
    """TOST at 5%: the 90% interval (not the 95% one) decides. Values with mean 0.02 and a
    spread whose 90% interval reaches about 0.037 but whose 95% interval reaches about 0.04."""
    from eclip_core.stats import equivalence

    values = np.random.default_rng(4).normal(0.02, 0.1, size=400)
    interval, equal = equivalence(values, 0.05, seed=1)
    wider = bootstrap(values, seed=1, level=0.95)
    assert interval.level == pytest.approx(0.9) and interval.high < wider.high
    assert equal and interval.high < 0.05
    assert not equivalence(values, 0.03, seed=1)[1]  # the same data, a tighter margin: not shown
    with pytest.raises(InputError, match="margin"):
        equivalence(values, 0.0)


def test_a_monotone_trend_is_a_rank_correlation_not_a_line():
    """A quality that rises with x but not linearly has a trend of exactly 1; one that rises then
    falls has none; identical items give a degenerate interval; the items are what is resampled."""
    from eclip_core.stats import monotone_trend

    x = [0.1, 0.2, 0.5, 0.9]
    rising = np.tile([0.0, 0.01, 0.02, 0.9], (30, 1))
    trend, replicates = monotone_trend(x, rising, n_boot=200)
    assert (trend.estimate, trend.low, trend.high) == pytest.approx((1.0, 1.0, 1.0), abs=1e-12)
    assert len(replicates) == 200
    peaked = np.tile([0.0, 0.9, 0.9, 0.0], (30, 1))
    assert monotone_trend(x, peaked, n_boot=50)[0].estimate == pytest.approx(0.0)
    noisy = np.random.default_rng(0).normal(size=(40, 4)) + np.array([0.0, 0.1, 0.2, 0.3])
    got = monotone_trend(x, noisy, n_boot=300, seed=2)[0]
    assert got.low < got.estimate < got.high and got.n == 40
    with pytest.raises(InputError, match="C >= 3"):
        monotone_trend([0.1, 0.2], rising[:, :2])
