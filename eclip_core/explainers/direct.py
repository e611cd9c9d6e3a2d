"""Direct contributions (after Gandelsman, Efros & Steinhardt, ICLR 2024).

With the final LayerNorm's mean and standard deviation taken from the forward pass as
constants, the image embedding ``e = proj(gamma * (x - mu) / sigma + beta)`` is linear in
the CLS residual stream ``x = x_0 + sum_l (a_l + m_l)``, and the attention output of block
l at CLS is ``a_l = sum_h sum_i A_l^h[CLS, i] W_O^h v^h_{l,i} + b_O``. So ``e`` splits
exactly into per-(block, head, token) terms ``c_{l,h,i}``, plus the MLP terms, the
embedding (class token and position after ``ln_pre``) and the bias terms
(:func:`direct_terms`; they sum to ``e``).

The map of patch i is ``sum_{l in last n_blocks} sum_h <c_{l,h,i}, t> / |e|`` with ``t`` of
unit norm: cosine-consistent, since the same sum over *every* term is
``<e, t> / |e| = cos(e, t)``, the model's score. The map is the part of the cosine
written directly by the chosen blocks' heads reading each patch (the CLS token's own
terms, the MLPs, earlier blocks, the embedding and the biases make up the rest); it can
be negative. It reads the unmodified model's own forward pass: no departure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import trace
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from .base import cosine_scores, explained_blocks, per_image


@dataclass
class DirectTerms:
    """The image embedding split into terms, in embedding space (E):
    ``embedding + heads.sum((1, 2, 3)) + biases.sum(1) + mlps.sum(1) + final_bias == e``."""

    embedding: torch.Tensor  # (B, E) class token and position, after ln_pre
    heads: torch.Tensor  # (B, L, H, T, E) c_{l,h,i}
    biases: torch.Tensor  # (B, L, E) the attention output biases b_O
    mlps: torch.Tensor  # (B, L, E) the MLPs' outputs at CLS
    final_bias: torch.Tensor  # (E,) proj(beta) of ln_post
    e: torch.Tensor  # (B, E) the image embedding of the forward pass

    def total(self) -> torch.Tensor:
        """(B, E) the sum of every term: ``e`` up to round-off."""
        return self.embedding + self.heads.sum((1, 2, 3)) + self.biases.sum(1) + self.mlps.sum(1) + self.final_bias


def default_blocks(model) -> int:
    """The last four blocks (all of a shallower model), as Gandelsman et al. read ViT-B."""
    return min(4, trace.depth(model))


def direct_terms(model, images: torch.Tensor, departures: Departures = FAITHFUL) -> DirectTerms:
    """Every term of the image embedding, for a completeness check or one's own reading."""
    with torch.no_grad():
        tr = trace.trace_vision(model, images, departures)
        terms = trace.cls_residual_terms(model, tr)
        linear, bias = trace.frozen_readout(model, tr.blocks[-1].x_out[:, 0])
        biases = terms.biases.expand(len(images), -1, -1)
        return DirectTerms(linear(terms.embedding), linear(terms.heads), linear(biases), linear(terms.mlps),
                           bias, tr.embedding)


def direct_contributions(model, images: torch.Tensor, targets: torch.Tensor, *,
                         departures: Departures = FAITHFUL,
                         n_blocks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_{last n_blocks} sum_h <c_{l,h,i}, t> / |e|`` per patch (default: the last 4 blocks)."""
    n = explained_blocks(model, n_blocks, default_blocks(model))
    depth = trace.depth(model)
    with torch.no_grad():
        tr = trace.trace_vision(model, images, departures)
        linear, _ = trace.frozen_readout(model, tr.blocks[-1].x_out[:, 0])
        heads = sum(trace.cls_head_terms(model, tr, i).sum(1) for i in range(depth - n, depth))  # (B, T, D)
        assert isinstance(heads, torch.Tensor)
        per_patch = linear(heads[:, 1:])  # (B, N, E)
        t = per_image(targets.to(per_patch.dtype), len(images))
        maps = torch.einsum("bne,bke->bnk", per_patch, t) / tr.embedding.norm(dim=-1)[:, None, None]
    assert tr.grid is not None
    return to_grid(maps.transpose(1, 2), tr.grid), cosine_scores(tr.embedding, targets)
