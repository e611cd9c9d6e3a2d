"""The recorded forward pass: what every family of models produces for the explainers.

A family of models is one module of this package (:mod:`eclip_core.trace.open_clip`: open_clip's
class-token ViTs), the only module that reads its library's internals
(``tests/test_layout.py``): a subclass of :class:`eclip_core.clip.ClipModel` that re-runs the
model from its own parameters, without hooks or patched modules, so that queries, keys,
values, attention probabilities and attention outputs exist as tensors gradients can flow
through, and that is tested to reproduce the model's own embeddings. Here: the records
themselves and the arithmetic of heads that every family shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class BlockRecord:
    """What one transformer block computed. Shapes: B batch, H heads, T tokens, D width."""

    x_in: torch.Tensor  # (B, T, D) block input
    q: torch.Tensor  # (B, H, T, D/H) queries, before the 1/sqrt(d) scale
    k: torch.Tensor  # (B, H, T, D/H)
    v: torch.Tensor  # (B, H, T, D/H)
    attn: torch.Tensor  # (B, H, T, T) attention probabilities
    attn_out: torch.Tensor  # (B, T, D) concat_h A^h v^h, before the output projection
    x_out: torch.Tensor  # (B, T, D) block output

    @property
    def heads(self) -> int:
        return self.q.shape[1]


@dataclass
class Trace:
    """A recorded forward pass of one tower."""

    blocks: list[BlockRecord]
    embedding: torch.Tensor  # (B, E) final embedding, not normalised
    pool_index: torch.Tensor  # (B,) the token the embedding is read from (0 = CLS)
    grid: tuple[int, int] | None = None  # patch grid (vision only)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    return t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d)."""
    return t.transpose(1, 2).flatten(2)


def attention_probs(q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask), per head."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        logits = logits + attn_mask
    return logits.softmax(dim=-1)


__all__ = ["BlockRecord", "Trace", "attention_probs", "merge_heads", "split_heads"]
