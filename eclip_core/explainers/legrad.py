"""LeGrad (Bousselham et al., 2024, arXiv 2404.03214) for the image tower.

For each of the last ``n_blocks`` blocks l, an image embedding is read from that block's
output tokens through ``ln_post`` and the projection and scored against the target,
``s_l = cos(f_l, t)``; the map is

    E = minmax( sum_l  mean_h mean_q  ReLU(d s_l / d A_l^h[q, i]) ),   i = patches

(all heads and query rows of block l's attention probabilities; the CLS column dropped).

How each block's score relates to the model's output: with ``pooling="cls"`` the
embedding of block l is ``proj(ln_post(x_l[CLS]))``; at the last block that *is* the
model's embedding, so ``s_L`` is exactly the deployed model's cosine (the returned
``scores``), while ``s_l`` for an earlier block is a read-out the model never makes
(it is reported as a departure). With ``pooling="mean"`` -- what the public code does
(``ln_post(feat_post_mlp.mean(dim=0)) @ proj``: the mean over all tokens, CLS included,
of every chosen block's output) -- no score, not even the last block's, is the model's
output; the returned ``scores`` are then the mean-pooled ``s_L`` and ``scores_original``
shows the drift. The public code's default reads the last 2 blocks (``layer_index=-2``),
our default too. With CLS pooling only the CLS row of the last block's attention reaches
``s_L``, so with ``n_blocks=1`` the map is min-max of ``mean_h ReLU(dS/dA^h[CLS, i]) / T``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import minmax, to_grid
from .base import autograd, blocks_in_words, cosine_cotangents, cosine_scores, explained_blocks, grad_leaf, record

POOLINGS = ("cls", "mean")
#: Targets differentiated together in one batched backward pass (bounds memory).
TARGET_CHUNK = 16


def default_blocks(model: ClipModel) -> int:
    """The public code's default: the last two blocks (one for a one-block model)."""
    return min(2, model.depth())


def legrad(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *, departures: Departures = FAITHFUL,
           n_blocks: int | None = None, pooling: str = "cls") -> tuple[torch.Tensor, torch.Tensor]:
    """LeGrad over the last ``n_blocks`` blocks (default 2), each block's embedding pooled by
    its CLS token (``"cls"``) or by the mean of all its tokens (``"mean"``, the public code)."""
    n = explained_blocks(model, n_blocks, default_blocks(model))
    with autograd():  # from a leaf copy of the images: frozen parameters work too
        tr = record(model, grad_leaf(images), departures)
        total = torch.zeros(())
        for rec in tr.blocks[-n:]:
            embedding = model.readout(rec.x_out[:, 0] if pooling == "cls" else rec.x_out.mean(1))
            cot = cosine_cotangents(embedding, targets)  # (K, B, E)
            parts = [torch.autograd.grad(embedding, rec.attn, cot[start:start + TARGET_CHUNK], retain_graph=True,
                                         is_grads_batched=True)[0].clamp_min(0).mean((2, 3))[..., 1:]
                     for start in range(0, cot.shape[0], TARGET_CHUNK)]  # (k, B, N): mean over heads, rows
            total = total + torch.cat(parts)
    assert tr.grid is not None
    return to_grid(minmax(total.transpose(0, 1)), tr.grid), cosine_scores(embedding.detach(), targets)


def legrad_notes(model: ClipModel, options: dict[str, Any]) -> tuple[str, ...]:
    """LeGrad's own departures, in words, for its options."""
    n = explained_blocks(model, options["n_blocks"], default_blocks(model))
    blocks = blocks_in_words(model, n)
    if options["pooling"] == "mean":
        return (f"score from the mean of all tokens (CLS included) before ln_post and proj, not the CLS token "
                f"({blocks}): not the model's output, even at the last block",)
    if n > 1:
        return (f"{blocks} each scored from its own CLS output through ln_post and proj: only block "
                f"{model.depth()}'s score is the model's output",)
    return ()
