"""CLIP Surgery (Li et al., 2023, arXiv 2304.05653): a modified network, prompt-relative maps.

*Architecture surgery*: in the last ``n_blocks`` blocks (default half of them: blocks
7-12 of ViT-B, as the public code does) a second path runs beside the original, with
value-value self-attention ``softmax(v v^T / sqrt(d)) v`` per head (no q, k; the values
the original path computes there), no MLP, and its own residual stream
(:func:`surgery_patch_embeddings`); the original path still yields the
CLS embedding, so ``scores`` are the deployed model's cosines. The surgery path's patch
tokens go through ``ln_post`` and the projection and are normalised.

*Feature surgery*: for patch i and prompt k, the element-wise product ``f_i * t_k``
minus its mean over the K prompts given, summed over channels:
``M[k, i] = <f_i, t_k - mean_k' t_k'>`` (no min-max). ``weighted=True`` weights the
prompts first by ``softmax(2 cos(f_CLS, t_k))`` over their mean, as the public code does.

The map therefore explains a network the model is not (the surgery path), and each
prompt's map depends on the other prompts given -- with one prompt it is zero. Both are
reported as departures on every explanation.
"""

from __future__ import annotations

from typing import Any

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from ..trace import Trace, attention_probs, merge_heads
from .base import blocks_in_words, cosine_scores, explained_blocks, per_image, record, unit


def default_blocks(model: ClipModel) -> int:
    """Half of the blocks (the last 6 of 12, as the public code), at least one."""
    return max(1, model.depth() // 2)


def surgery_patch_embeddings(model: ClipModel, tr: Trace, n_blocks: int) -> torch.Tensor:
    """(B, N, E) patch tokens of CLIP Surgery's second path, read out.

    From the input of the first of the last ``n_blocks`` blocks a second residual stream
    runs beside the model's: in each of those blocks it adds the attention output (projection,
    bias, layer scale) of value-value attention ``softmax(v v^T / sqrt(d)) v`` per head, with
    the values the original path computes there, and no MLP. Its patch tokens then go through
    the model's read-out. ``tr`` records every block.
    """
    depth = len(tr.blocks)
    x = tr.blocks[-n_blocks].x_in
    for index in range(depth - n_blocks, depth):
        v = tr.blocks[index].v
        x = x + model.attention_output(merge_heads(attention_probs(v, v) @ v), block=index)
    return model.readout(x[:, 1:])


def clip_surgery(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                 departures: Departures = FAITHFUL, n_blocks: int | None = None,
                 weighted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature surgery on the patch tokens of the v-v path through the last ``n_blocks`` blocks."""
    n = explained_blocks(model, n_blocks, default_blocks(model))
    with torch.no_grad():
        tr = record(model, images, departures)
        dense = unit(surgery_patch_embeddings(model, tr, n))  # (B, N, E)
        scores = cosine_scores(tr.embedding, targets)
        t = per_image(targets.to(dense.dtype), len(images))  # (B, K, E)
        if weighted:
            w = (2 * scores).softmax(-1)
            t = t * (w / w.mean(-1, keepdim=True))[..., None]
        maps = torch.einsum("bne,bke->bkn", dense, t - t.mean(1, keepdim=True))
    assert tr.grid is not None
    return to_grid(maps, tr.grid), scores


def surgery_notes(model: ClipModel, options: dict[str, Any]) -> tuple[str, ...]:
    """CLIP Surgery's departures, in words."""
    n = explained_blocks(model, options["n_blocks"], default_blocks(model))
    mean = "softmax(2 cos)-weighted mean" if options["weighted"] else "mean"
    return (f"v-v attention in {blocks_in_words(model, n)}: a second path beside the model's (no MLP, its own "
            f"residual) whose patch tokens make the map",
            f"each map relative to the prompts given: its prompt minus the {mean} over all K (another "
            f"set of prompts gives another map; one prompt gives zero)")
