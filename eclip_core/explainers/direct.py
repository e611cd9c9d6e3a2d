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

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from ..models import Model, as_model
from ..trace import Trace
from .base import cosine_scores, explained_blocks, per_image, record


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


def default_blocks(model: ClipModel) -> int:
    """The last four blocks (all of a shallower model), as Gandelsman et al. read ViT-B."""
    return min(4, model.depth())


def head_terms(model: ClipModel, tr: Trace, index: int) -> torch.Tensor:
    """(B, H, T, D): what head h of block ``index``, reading token i, adds to the CLS residual,
    ``scale * A^h[CLS, i] W_O^h v^h_i`` (the output projection split by head; no bias)."""
    rec = tr.blocks[index]
    weight, _, scale = model.attention_weights(index)
    w = weight.unflatten(1, (rec.heads, rec.v.shape[-1]))  # (D, H, d)
    terms = torch.einsum("bhid,ehd->bhie", rec.v, w) * rec.attn[:, :, 0, :, None]
    return terms if scale is None else terms * scale


def residual_terms(model: ClipModel, tr: Trace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What wrote the last block's CLS output, term by term (L blocks, H heads, T tokens):
    ``(embedding (B, D), heads (B, L, H, T, D), biases (L, D), mlps (B, L, D))`` with
    ``x_L[CLS] = embedding + sum(heads) + sum(biases) + sum(mlps)`` up to round-off. An MLP's
    term is what its block's output adds to the stream after attention."""
    biases, mlps = [], []
    for i, rec in enumerate(tr.blocks):
        _, bias, scale = model.attention_weights(i)
        bias = bias if bias is not None else torch.zeros_like(rec.x_in[0, 0])
        biases.append(bias if scale is None else bias * scale)
        after_attention = rec.x_in[:, 0] + model.attention_output(rec.attn_out[:, 0], block=i)
        mlps.append(rec.x_out[:, 0] - after_attention)
    heads = torch.stack([head_terms(model, tr, i) for i in range(len(tr.blocks))], 1)
    return tr.blocks[0].x_in[:, 0], heads, torch.stack(biases), torch.stack(mlps, 1)


def direct_terms(model: Model, images: torch.Tensor, departures: Departures = FAITHFUL) -> DirectTerms:
    """Every term of the image embedding, for a completeness check or one's own reading."""
    model = as_model(model)
    with torch.no_grad():
        tr = record(model, images, departures)
        embedding, heads, biases, mlps = residual_terms(model, tr)
        linear, bias = model.frozen_readout(tr.blocks[-1].x_out[:, 0])
        return DirectTerms(linear(embedding), linear(heads), linear(biases.expand(len(images), -1, -1)),
                           linear(mlps), bias, tr.embedding)


SPLITS = ("own_mean", "textspan")


def direct_contributions(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                         departures: Departures = FAITHFUL, n_blocks: int | None = None,
                         split: str = "own_mean") -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_{last n_blocks} sum_h <c_{l,h,i}, t> / |e|`` per patch (default: the last 4 blocks).

    ``split``: how the final LayerNorm's mean and bias are shared among the terms.
    ``"own_mean"`` (default): each term centred on its own mean over channels, the biases
    terms of their own (exact and linear: :func:`direct_terms`). ``"textspan"``: Gandelsman et
    al.'s code -- each block's attention-output bias split equally over its T tokens and H heads,
    and the norm's mean and bias split equally over the (2L + 1) T H terms of the L blocks'
    attention and the L + 1 MLP and embedding terms (each term read through
    :meth:`~eclip_core.clip.ClipModel.split_readout`)."""
    n = explained_blocks(model, n_blocks, default_blocks(model))
    depth = model.depth()
    with torch.no_grad():
        tr = record(model, images, departures)
        x_cls = tr.blocks[-1].x_out[:, 0]
        if split == "textspan":
            tokens, heads_per_block = tr.blocks[-1].v.shape[2], tr.blocks[-1].v.shape[1]
            read = model.split_readout(x_cls, 1 / ((2 * depth + 1) * tokens * heads_per_block))
            per_patch = torch.zeros(())
            for i in range(depth - n, depth):
                _, bias, scale = model.attention_weights(i)
                terms = head_terms(model, tr, i)  # (B, H, T, D)
                if bias is not None:
                    terms = terms + (bias if scale is None else bias * scale) / (tokens * heads_per_block)
                per_patch = per_patch + read(terms[:, :, 1:]).sum(1)  # (B, N, E)
        else:
            linear, _ = model.frozen_readout(x_cls)
            heads = sum(head_terms(model, tr, i).sum(1) for i in range(depth - n, depth))  # (B, T, D)
            assert isinstance(heads, torch.Tensor)
            per_patch = linear(heads[:, 1:])  # (B, N, E)
        t = per_image(targets.to(per_patch.dtype), len(images))
        maps = torch.einsum("bne,bke->bnk", per_patch, t) / tr.embedding.norm(dim=-1)[:, None, None]
    assert tr.grid is not None
    return to_grid(maps.transpose(1, 2), tr.grid), cosine_scores(tr.embedding, targets)
