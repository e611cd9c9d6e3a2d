"""The model-agnostic references: integrated gradients and occlusion; both explain the original model.

The baseline colour is ``"black"`` (pixel value 0 before the model's normalisation, so
``(0 - mean) / std`` per channel of the normalised input; the normalisation is the
model's declared preprocess, else open_clip's default) or ``"mean"`` (0 in the normalised
input: the dataset mean colour, what RISE's masked pixels take).
"""

from __future__ import annotations

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import to_grid
from .base import cosine_scores, n_targets, per_image, pullback, unit

BASELINES = ("black", "mean")


def baseline_colour(model: ClipModel, images: torch.Tensor, baseline: str = "black") -> torch.Tensor:
    """(1, 3, 1, 1) the baseline colour (one of :data:`BASELINES`) in the model's normalised input space."""
    mean, std = (torch.tensor(v, dtype=images.dtype, device=images.device) for v in model.input_normalisation())
    colour = -mean / std if baseline == "black" else torch.zeros_like(mean)
    return colour.view(1, 3, 1, 1)


def integrated_gradients(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                         departures: Departures = FAITHFUL, steps: int = 32, baseline: str = "black",
                         batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients (Sundararajan et al. 2017) of the cosine on the patch embeddings.

    ``p`` = the patch embeddings (``conv1``) of the image, ``p0`` those of the baseline
    image; map of patch i = ``sum_c (p - p0)_ic * (1/m) sum_{k=1..m} dS/dp_ic(p0 + k/m (p - p0))``
    (right Riemann sum, ``m = steps``). ``conv1`` is linear and its patches do not
    overlap, so this equals pixel-space IG from the baseline image summed over the
    channels and pixels of each patch. Completeness: the map sums to
    ``S(image) - S(baseline)`` as ``m`` grows. ``batch_size``: path points per pass.
    Cost: ``steps`` forward passes, and per path point one backward pass through the whole
    tower for every target (batched over the targets): unlike the last-block methods, many
    targets cost many full backward passes.
    """
    model.check_images(images, departures.keep_size)
    t = per_image(targets.to(images.dtype), len(images)).transpose(0, 1)  # (K, B, E)
    with torch.no_grad():
        p = model.patch_embeddings(images)
        p0 = model.patch_embeddings(baseline_colour(model, images, baseline).expand_as(images).contiguous())
        scores = cosine_scores(model.encode_image(images), targets)
    delta = p - p0
    total = torch.zeros(n_targets(targets), *p.shape, dtype=p.dtype, device=p.device)
    alphas = torch.arange(1, steps + 1, dtype=p.dtype, device=p.device) / steps
    for chunk in alphas.split(max(1, batch_size // len(images))):
        path = (p0 + chunk[:, None, None, None] * delta).flatten(0, 1)  # (s * B, N, D)
        grads = pullback(lambda q: unit(model.embedding_from_patches(q)), path,
                         t.repeat(1, len(chunk), 1))  # (K, s * B, N, D)
        total += grads.unflatten(1, (len(chunk), len(images))).sum(1)
    maps = (total / steps * delta).sum(-1)  # (K, B, N)
    return to_grid(maps.transpose(0, 1), model.grid_size), scores


def occlusion(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *, departures: Departures = FAITHFUL,
              baseline: str = "black", window: int = 1, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Score drop ``S(image) - S(image with the patch replaced by the baseline colour)``.

    One patch at a time (``window=1``) through the model's own ``encode_image``; a larger
    ``window`` occludes non-overlapping squares of ``window x window`` patches, each
    patch getting its square's drop. ``batch_size``: occluded images per pass.
    """
    model.check_images(images, departures.keep_size)
    (ph, pw), (gh, gw) = model.patch_size, model.grid_size
    colour = baseline_colour(model, images, baseline)
    cells = [(r, c) for r in range(0, gh, window) for c in range(0, gw, window)]
    masks = torch.zeros(len(cells), 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
    for j, (r, c) in enumerate(cells):
        masks[j, :, r * ph:(r + window) * ph, c * pw:(c + window) * pw] = True
    maps = torch.zeros(len(images), n_targets(targets), gh, gw, dtype=images.dtype, device=images.device)
    with torch.no_grad():
        scores = cosine_scores(model.encode_image(images), targets)
        for b, image in enumerate(images):
            own = targets[b] if targets.ndim == 3 else targets
            drops = torch.cat([scores[b] - cosine_scores(model.encode_image(torch.where(m, colour, image)), own)
                               for m in masks.split(batch_size)])  # (cells, K)
            for (r, c), drop in zip(cells, drops):
                maps[b, :, r:r + window, c:c + window] = drop[:, None, None]
    return maps, scores
