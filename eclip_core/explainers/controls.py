"""A control that explains nothing: the image's edge strength, whatever the model.

It reports the model's own scores, so it passes P1, and its maps never change when the
model does, so it must fail P2: a test of the tests (the randomisation cascade must rank
it last).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from .base import cosine_scores, n_targets, record

EDGES_NOTE = "map from the image's edge strength alone, without the model: a control that explains no forward pass"


def edges_notes(model: ClipModel, options) -> tuple[str, ...]:
    """The control's certificate: its scores are the model's, its map is not from the model."""
    return (EDGES_NOTE,)


def edge_strength(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                  departures: Departures = FAITHFUL) -> tuple[torch.Tensor, torch.Tensor]:
    """|horizontal| + |vertical| difference of the channel-mean image, averaged per patch."""
    model.check_images(images, departures.keep_size)
    gray = images.mean(1, keepdim=True)
    edges = (gray[..., 1:, :-1] - gray[..., :-1, :-1]).abs() + (gray[..., :-1, 1:] - gray[..., :-1, :-1]).abs()
    patch = model.patch_size
    grid = (images.shape[-2] // patch[0], images.shape[-1] // patch[1])
    maps = F.adaptive_avg_pool2d(edges, grid).expand(-1, n_targets(targets), -1, -1).contiguous()
    with torch.no_grad():
        embedding = (record(model, images, departures, "last").embedding
                     if departures.changes_forward else model.encode_image(images))
    return maps, cosine_scores(embedding, targets)
