"""MaskCLIP-style dense similarity (Zhou et al., ECCV 2022)."""

from __future__ import annotations

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from ..trace import merge_heads
from .base import cosine_scores, grad_mode_independent, record, unit


@grad_mode_independent
def maskclip(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
             departures: Departures = FAITHFUL) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine between each patch's value-path embedding and the text.

    The last block's value of patch i goes through the output projection, the final
    norm and the projection, skipping the query-key attention (as in MaskCLIP); the map
    is that patch embedding's cosine with each target, so it can be negative.
    """
    with torch.no_grad():
        tr = record(model, images, departures, "last")
        # the values through the output projection (no residual, no MLP), then the read-out
        dense = model.readout(model.attention_projection(merge_heads(tr.blocks[-1].v)[:, 1:]))
        t = targets.to(dense.dtype)
        maps = torch.einsum("bne,bke->bnk", unit(dense), t) if t.ndim == 3 else unit(dense) @ t.T  # (B, N, K)
    assert tr.grid is not None
    return to_grid(maps.transpose(1, 2), tr.grid), cosine_scores(tr.embedding, targets)
