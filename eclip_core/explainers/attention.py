"""Target-independent anchors: raw last-block attention and attention rollout."""

from __future__ import annotations

import torch

from ..departures import FAITHFUL, Departures
from ..errors import InputError
from ..maps import to_grid
from ..trace import depth, trace_vision
from .base import cosine_scores, grad_mode_independent, n_targets


def _patch_maps(rows: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    """(B, T) CLS rows -> (B, K, gh, gw), the same map for every target."""
    return to_grid(rows[:, None, 1:], grid).expand(-1, k, -1, -1).contiguous()


@grad_mode_independent
def raw_attention(model, images: torch.Tensor, targets: torch.Tensor, *,
                  departures: Departures = FAITHFUL) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS row of the last block's attention probabilities, mean over heads."""
    with torch.no_grad():
        tr = trace_vision(model, images, departures, record="last")
        rows = tr.blocks[-1].attn[:, :, 0].mean(1)
    assert tr.grid is not None
    return _patch_maps(rows, tr.grid, n_targets(targets)), cosine_scores(tr.embedding, targets)


@grad_mode_independent
def attention_rollout(model, images: torch.Tensor, targets: torch.Tensor, *,
                      departures: Departures = FAITHFUL,
                      start_block: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Abnar & Zuidema (2020): product over blocks of (mean_h A + I), rows renormalised."""
    n_blocks = depth(model)
    if isinstance(start_block, bool) or not isinstance(start_block, int) or not 0 <= start_block < n_blocks:
        raise InputError(f"start_block must be an integer in 0..{n_blocks - 1} (the model's vision "
                         f"blocks), got {start_block!r}")
    with torch.no_grad():
        tr = trace_vision(model, images, departures)
        eye = torch.eye(tr.blocks[0].attn.shape[-1], dtype=tr.embedding.dtype)
        joint = eye.expand(len(images), -1, -1)
        for rec in tr.blocks[start_block:]:
            a = rec.attn.mean(1) + eye
            joint = (a / a.sum(-1, keepdim=True)) @ joint
    assert tr.grid is not None
    return _patch_maps(joint[:, 0], tr.grid, n_targets(targets)), cosine_scores(tr.embedding, targets)
