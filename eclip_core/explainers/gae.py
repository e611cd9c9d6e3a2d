"""Generic Attention Explainability (Chefer et al., ICCV 2021) for the image tower."""

from __future__ import annotations

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from .base import autograd, cosine_cotangents, cosine_scores, grad_leaf, grad_mode_independent, n_targets, record

#: Targets differentiated together in one batched backward pass (bounds memory).
TARGET_CHUNK = 16


@grad_mode_independent
def gae(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *, departures: Departures = FAITHFUL,
        last_block_only: bool = False, logit_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """R <- R + mean_h ReLU(dS/dA^h * A^h) R from R = I over all blocks; map = CLS row.

    ``last_block_only=True`` is the published Grad-ECLIP code's GAE baseline (no rollout
    over blocks); ``logit_scale=100`` explains 100 * cos, the logit, as that code does.
    """
    with autograd():  # from a leaf copy of the images: frozen parameters work too
        tr = record(model, grad_leaf(images), departures)
        blocks = tr.blocks[-1:] if last_block_only else tr.blocks
        attns = [b.attn for b in blocks]
        cot = cosine_cotangents(tr.embedding, targets) * logit_scale  # (K, B, E)
        grads: list[list[torch.Tensor]] = [[] for _ in blocks]
        for start in range(0, cot.shape[0], TARGET_CHUNK):
            chunk = torch.autograd.grad(tr.embedding, attns, cot[start:start + TARGET_CHUNK],
                                        retain_graph=True, is_grads_batched=True)
            for store, g in zip(grads, chunk):
                store.append(g)
    b, _, t, _ = attns[0].shape
    relevance = torch.eye(t, dtype=tr.embedding.dtype).expand(n_targets(targets), b, t, t)
    for attn, grad in zip(attns, grads):
        cam = (torch.cat(grad) * attn.detach()).clamp_min(0).mean(2)  # (K, B, T, T)
        relevance = relevance + cam @ relevance
    assert tr.grid is not None
    maps = to_grid(relevance[:, :, 0, 1:].transpose(0, 1), tr.grid)
    return maps, cosine_scores(tr.embedding.detach(), targets)
