"""Grad-CAM on the tokens entering the last block (the published baseline)."""

from __future__ import annotations

import torch

from ..trace import attention_probs, merge_heads, qkv, trace_vision, vision_readout, vision_tower
from .base import cosine_cotangents, cosine_scores, pullback


def gradcam(model, images, targets):
    """ReLU(sum_c mean_tokens(dS/dx)_c * x_{i,c}) over the last block's input tokens x."""
    visual = vision_tower(model)
    block = visual.transformer.resblocks[-1]
    with torch.no_grad():
        tr = trace_vision(model, images, record="last")
    x = tr.blocks[-1].x_in
    heads = block.attn.num_heads

    def embedding_from_tokens(tokens):  # only the CLS path of the last block
        q, k, v = qkv(block, tokens, heads)
        cls_out = merge_heads(attention_probs(q[:, :, :1], k) @ v)[:, 0]
        return vision_readout(visual, block, tokens[:, 0], cls_out)

    grad = pullback(embedding_from_tokens, x, cosine_cotangents(tr.embedding, targets))  # (K,B,T,D)
    weights = grad.mean(2)  # (K, B, D)
    maps = torch.einsum("kbd,btd->bkt", weights, x[:, 1:]).clamp_min(0)
    return maps.reshape(*maps.shape[:2], *tr.grid), cosine_scores(tr.embedding, targets)
