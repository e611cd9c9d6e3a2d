"""Target-independent anchors: raw last-block attention and attention rollout."""

from __future__ import annotations

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from .base import cosine_scores, grad_mode_independent, n_targets, record


def _patch_maps(rows: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    """(B, T) CLS rows -> (B, K, gh, gw), the same map for every target."""
    return to_grid(rows[:, None, 1:], grid).expand(-1, k, -1, -1).contiguous()


def cls_attention(model: ClipModel, images: torch.Tensor,
                  departures: Departures = FAITHFUL) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, gh, gw) the CLS row of the last block's attention probabilities over the patches, mean
    over heads; (B, E) the embedding of the same pass)."""
    with torch.no_grad():
        tr = record(model, images, departures, "last")
        rows = tr.blocks[-1].attn[:, :, 0].mean(1)
    assert tr.grid is not None
    return to_grid(rows[:, 1:], tr.grid), tr.embedding


@grad_mode_independent
def raw_attention(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                  departures: Departures = FAITHFUL) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS row of the last block's attention probabilities, mean over heads."""
    maps, embedding = cls_attention(model, images, departures)
    return maps[:, None].expand(-1, n_targets(targets), -1, -1).contiguous(), cosine_scores(embedding, targets)


@grad_mode_independent
def attention_rollout(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                      departures: Departures = FAITHFUL,
                      start_block: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Abnar & Zuidema (2020): product over blocks of (mean_h A + I), rows renormalised."""
    with torch.no_grad():
        tr = record(model, images, departures)
        eye = torch.eye(tr.blocks[0].attn.shape[-1], dtype=tr.embedding.dtype)
        joint = eye.expand(len(images), -1, -1)
        for rec in tr.blocks[start_block:]:
            a = rec.attn.mean(1) + eye
            joint = (a / a.sum(-1, keepdim=True)) @ joint
    assert tr.grid is not None
    return _patch_maps(joint[:, 0], tr.grid, n_targets(targets)), cosine_scores(tr.embedding, targets)
