"""Controls that explain nothing: maps made without the model.

``edges`` (the image's edge strength), ``centre`` (a centre prior) and ``random`` (a random map,
the same for the same image) report the model's own scores, so they pass P1, and their maps
never change when the model does, so every test of P2 must fail them: tests of the tests.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from .base import cosine_scores, n_targets, record

CONTROL_NOTE = "a control that explains no forward pass"

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


def _own_scores(model: ClipModel, images: torch.Tensor, targets: torch.Tensor,
                departures: Departures) -> torch.Tensor:
    with torch.no_grad():
        embedding = (record(model, images, departures, "last").embedding
                     if departures.changes_forward else model.encode_image(images))
    return cosine_scores(embedding, targets)


def centre_prior(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                 departures: Departures = FAITHFUL) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(-r^2 / 0.5) of each patch's distance r from the image's centre (r = 1 at the middle
    of a side): where objects tend to be, whatever the image and the model."""
    model.check_images(images, departures.keep_size)
    patch = model.patch_size
    gh, gw = images.shape[-2] // patch[0], images.shape[-1] // patch[1]
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, gh, dtype=images.dtype),
                                torch.linspace(-1, 1, gw, dtype=images.dtype), indexing="ij")
    blob = torch.exp(-(rows ** 2 + cols ** 2) / 0.5).to(images.device)
    return blob.expand(len(images), n_targets(targets), gh, gw).contiguous(), _own_scores(model, images, targets,
                                                                                         departures)


def random_map(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
               departures: Departures = FAITHFUL, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise per patch, drawn from ``seed`` and the image's own bytes: the same map for
    the same image under any model and for any text."""
    model.check_images(images, departures.keep_size)
    patch = model.patch_size
    gh, gw = images.shape[-2] // patch[0], images.shape[-1] // patch[1]
    maps = []
    for image in images:
        key = zlib.crc32(image.detach().to("cpu", torch.float32).numpy().tobytes())
        generator = torch.Generator().manual_seed(seed * 1_000_003 + key)
        maps.append(torch.rand(gh, gw, generator=generator, dtype=torch.float64).to(images.dtype))
    stacked = torch.stack(maps)[:, None].expand(-1, n_targets(targets), -1, -1).contiguous()
    return stacked.to(images.device), _own_scores(model, images, targets, departures)


def control_notes(model: ClipModel, options) -> tuple[str, ...]:
    """Every control's certificate: its scores are the model's, its map is not from the model."""
    return (CONTROL_NOTE,)
