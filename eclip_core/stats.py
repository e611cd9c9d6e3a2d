"""Statistics shared by the metrics and the book: rank and linear correlation."""

from __future__ import annotations

import torch

from .errors import InputError


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

