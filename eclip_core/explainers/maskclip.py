"""MaskCLIP-style dense similarity (Zhou et al., ECCV 2022)."""

from __future__ import annotations

import torch

from ..trace import merge_heads, trace_vision, vision_tower
from .base import cosine_scores, unit


def maskclip(model, images, targets):
    """Cosine between each patch's value-path embedding and the text.

    The last block's value of patch i goes through the output projection, the final
    norm and the projection, skipping the query-key attention (as in MaskCLIP); the map
    is that patch embedding's cosine with each target, so it can be negative.
    """
    visual = vision_tower(model)
    block = visual.transformer.resblocks[-1]
    with torch.no_grad():
        tr = trace_vision(model, images, record="last")
        values = block.attn.out_proj(merge_heads(tr.blocks[-1].v)[:, 1:])
        dense = visual.ln_post(values) @ visual.proj
        maps = unit(dense) @ targets.to(dense.dtype).T  # (B, N, K)
    return maps.transpose(1, 2).reshape(len(images), len(targets), *tr.grid), \
        cosine_scores(tr.embedding, targets)
