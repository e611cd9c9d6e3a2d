"""Grad-CAM on the tokens entering the last block.

Two conventions for the channel weights (the gradient averaged over tokens), as options:
``cls_token="kept"`` (default) averages over every token, the class token included, as the
published Grad-ECLIP code's Grad-CAM baseline does; ``cls_token="dropped"`` averages over the
patch tokens only, as pytorch-grad-cam's ViT recipe does (its ``reshape_transform`` drops the
class token before the gradients are averaged). The map is over the patch tokens either way.
"""

from __future__ import annotations

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from .base import cosine_cotangents, cosine_scores, grad_mode_independent, pullback, record

CLS_TOKEN_CHOICES = ("kept", "dropped")


@grad_mode_independent
def gradcam(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
            departures: Departures = FAITHFUL, cls_token: str = "kept") -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU(sum_c mean_tokens(dS/dx)_c * x_{i,c}) over the last block's input tokens x; the mean
    over every token (``cls_token="kept"``) or over the patch tokens (``"dropped"``)."""
    with torch.no_grad():
        tr = record(model, images, departures, "last")
    x = tr.blocks[-1].x_in
    grad = pullback(lambda tokens: model.cls_embedding_from_tokens(tokens, departures.heads), x,
                    cosine_cotangents(tr.embedding, targets))  # (K, B, T, D)
    weights = (grad if cls_token == "kept" else grad[:, :, 1:]).mean(2)  # (K, B, D)
    maps = torch.einsum("kbd,btd->bkt", weights, x[:, 1:]).clamp_min(0)
    assert tr.grid is not None
    return to_grid(maps, tr.grid), cosine_scores(tr.embedding, targets)
