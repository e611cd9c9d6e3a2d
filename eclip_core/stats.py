"""Statistics shared by the metrics and the book: rank and linear correlation, and bootstrap
intervals (the scenes resampled) for every comparison the book draws."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from .errors import InputError

#: Bootstrap resamples behind every interval the book states.
N_BOOT = 2000


class Interval(NamedTuple):
    """An estimate with its bootstrap percentile interval and the sample size behind it."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"

    def columns(self, name: str) -> dict[str, float]:
        """The interval as three table columns: ``name``, ``name_low``, ``name_high``."""
        return {name: self.estimate, f"{name}_low": self.low, f"{name}_high": self.high}


def bootstrap(values: Sequence[float] | np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean, *,
              n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> Interval:
    """``statistic`` of ``values`` (rows resampled with replacement; a 2-D array keeps its columns
    together, e.g. paired measurements) with its percentile interval."""
    estimate, replicates = bootstrap_replicates(values, statistic, n_boot=n_boot, seed=seed)
    low, high = percentile_interval(replicates, level)
    return Interval(estimate, float(low), float(high), len(np.asarray(values)), level)


def bootstrap_replicates(values: Sequence[float] | np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                         *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, np.ndarray]:
    """``statistic`` of ``values`` and its ``n_boot`` bootstrap replicates (rows resampled with
    replacement, a 2-D array's columns kept together): what intervals and p-values are cut from."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        raise InputError("bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(data), size=(n_boot, len(data)))
    replicates = np.array([statistic(data[i]) for i in index], dtype=np.float64)
    return float(statistic(data)), replicates


def p_above(replicates: np.ndarray, threshold: float) -> float:
    """One-sided bootstrap p-value for "the statistic is above ``threshold``" (the null: at or
    below it): the share of replicates at or below ``threshold``, counted with the estimate's
    own +1 so that it is never 0."""
    replicates = np.asarray(replicates, dtype=np.float64)
    return float((1 + np.sum(replicates <= threshold)) / (1 + len(replicates)))


def p_below(replicates: np.ndarray, threshold: float) -> float:
    """One-sided bootstrap p-value for "the statistic is below ``threshold``"."""
    replicates = np.asarray(replicates, dtype=np.float64)
    return float((1 + np.sum(replicates >= threshold)) / (1 + len(replicates)))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (1979) of m p-values: the i-th smallest is multiplied by
    m - i + 1, capped at 1, and kept no smaller than the one before it. Rejecting where the
    adjusted value is below alpha controls the family-wise error rate at alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise InputError(f"holm needs p-values in [0, 1], got {pvalues!r}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def equivalence(values: Sequence[float] | np.ndarray, margin: float, *, alpha: float = 0.05,
                n_boot: int = N_BOOT, seed: int = 0) -> tuple[Interval, bool]:
    """Two one-sided tests (TOST) that the mean of ``values`` lies within ``±margin``: both hold
    at ``alpha`` exactly when the (1 - 2 alpha) percentile interval lies inside the margin.
    Returns that interval and the verdict. The margin is fixed before measuring; without
    equivalence shown, "no difference" is not a finding."""
    if margin <= 0:
        raise InputError(f"an equivalence margin must be positive, got {margin!r}")
    interval = bootstrap(values, n_boot=n_boot, seed=seed, level=1 - 2 * alpha)
    return interval, bool(-margin < interval.low and interval.high < margin)


def monotone_trend(x: Sequence[float], values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                   level: float = 0.95) -> tuple[Interval, np.ndarray]:
    """How monotonically a quality follows ``x`` (C checkpoints' accuracies, say): the Spearman
    rank correlation of ``x`` with the mean over items of ``values`` (n items, C columns), with
    its interval and replicates from resampling the items (rows) -- not a straight line through
    means that rise and fall. A constant mean has no trend (0)."""
    data = np.asarray(values, dtype=np.float64)
    points = np.asarray(x, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(points) or len(points) < 3:
        raise InputError(f"monotone_trend needs (n, C) values for C >= 3 points of x, got {data.shape} "
                         f"and {len(points)} points")

    def rho(rows: np.ndarray) -> float:
        return float(spearman(torch.from_numpy(points), torch.from_numpy(rows.mean(axis=0))))

    estimate, replicates = bootstrap_replicates(data, rho, n_boot=n_boot, seed=seed)
    low, high = percentile_interval(replicates, level)
    return Interval(estimate, float(low), float(high), len(data), level), replicates


def percentile_interval(replicates: np.ndarray, level: float = 0.95, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` percentile interval of bootstrap ``replicates`` along ``axis``:
    the (1 - level)/2 and (1 + level)/2 quantiles (numpy's linear interpolation). Every
    interval the book states is cut here."""
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}")
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=axis)
    return low, high


def bootstrap_band(values: Sequence[Sequence[float]] | np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A band around a mean curve: (mean, low, high) at each point of (n, points) curves, the
    percentile interval of the pointwise mean with whole curves (the items) resampled."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2 or len(data) == 0:
        raise InputError(f"bootstrap_band needs (n, points) curves with n >= 1, got shape {data.shape}")
    index = np.random.default_rng(seed).integers(0, len(data), size=(n_boot, len(data)))
    low, high = percentile_interval(data[index].mean(axis=1), level, axis=0)
    return data.mean(axis=0), low, high


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over the larger of max |a| and max |b|: how far two maps differ on the maps'
    own scale (0 when both are zero)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    scale = max(float(a.abs().max()), float(b.abs().max()))
    return float((a - b).abs().max()) / scale if scale > 0 else 0.0


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                      n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean of ``a - b`` over paired items (the same scenes measured twice), with its interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired samples must have equal shapes, got {a.shape} and {b.shape}")
    return bootstrap(a - b, n_boot=n_boot, seed=seed, level=level)


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1..n) along the last dim, ties given the average of their positions."""
    x = torch.as_tensor(x)
    shape = x.shape
    x = x.reshape(-1, shape[-1]).to(torch.float64)
    m, n = x.shape
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    new_group = torch.ones_like(sorted_x, dtype=torch.bool)
    new_group[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = new_group.long().cumsum(1) - 1
    position = torch.arange(1, n + 1, dtype=torch.float64).expand(m, n)
    sums = torch.zeros(m, n, dtype=torch.float64).scatter_add_(1, group, position)
    ones = torch.ones(m, n, dtype=torch.float64)
    counts = torch.zeros(m, n, dtype=torch.float64).scatter_add_(1, group, ones)
    averaged = (sums / counts.clamp_min(1)).gather(1, group)
    ranks = torch.empty_like(averaged).scatter_(1, order, averaged)
    return ranks.reshape(shape)


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson r. Convention: two constant rows -> 1 if equal else 0; one constant -> 0."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    scale = torch.maximum(na, nb).clamp_min(1e-300)
    const_a, const_b = na <= 1e-12 * scale, nb <= 1e-12 * scale
    r = (a * b).sum(-1) / (na * nb).clamp_min(1e-300)
    r = torch.where(const_a | const_b, torch.zeros_like(r), r.clamp(-1, 1))
    return torch.where(const_a & const_b, torch.ones_like(r), r)


def spearman(a, b) -> torch.Tensor | float:
    """Spearman rank correlation (Pearson r of average ranks) along the last dimension.

    Two 1-D inputs give a float; (..., n) inputs give a tensor of shape (...).
    Convention for degenerate maps: two constant inputs correlate 1, a constant against
    a varying input 0.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise InputError(f"spearman needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    r = _pearson_rows(average_ranks(a).reshape(-1, a.shape[-1]), average_ranks(b).reshape(-1, b.shape[-1]))
    return float(r[0]) if a.ndim == 1 else r.reshape(a.shape[:-1])


def pearson(a, b) -> torch.Tensor | float:
    """Pearson correlation along the last dimension (same conventions as :func:`spearman`)."""
    a = torch.as_tensor(a).to(torch.float64)
    b = torch.as_tensor(b).to(torch.float64)
    r = _pearson_rows(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
    return float(r[0]) if a.ndim == 1 else r.reshape(a.shape[:-1])

