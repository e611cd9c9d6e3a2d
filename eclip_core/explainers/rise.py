"""RISE (Petsiuk et al., BMVC 2018): saliency from randomly masked forward passes."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from .base import cosine_scores, grad_mode_independent, per_image, record, unit


def rise_masks(n: int, size: tuple[int, int], cells: int, keep: float,
               generator: torch.Generator) -> torch.Tensor:
    """(n, 1, H, W) smooth masks: a random binary cells x cells grid, upsampled, randomly shifted."""
    h, w = size
    cell_h, cell_w = -(-h // cells), -(-w // cells)
    grid = (torch.rand(n, 1, cells, cells, generator=generator) < keep).float()
    up = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                       align_corners=False)
    dy = torch.randint(0, cell_h, (n,), generator=generator)
    dx = torch.randint(0, cell_w, (n,), generator=generator)
    return torch.stack([up[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def rise_saliency(score_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                  masks: torch.Tensor, keep: float, batch_size: int = 100,
                  done: Callable[[int], object] | None = None) -> torch.Tensor:
    """(K, H, W) = sum_n score_fn(image * M_n) M_n / (n * keep); ``score_fn``: (n,3,H,W) -> (n, K).

    ``done(1)`` is called after each batch of masks (a progress bar's ``update``)."""
    total: torch.Tensor | None = None
    for start in range(0, len(masks), batch_size):
        m = masks[start:start + batch_size]
        part = torch.einsum("nk,nhw->khw", score_fn(image[None] * m), m[:, 0])
        total = part if total is None else total + part
        if done is not None:
            done(1)
    if total is None:
        raise ValueError("RISE needs at least one mask")
    return total / (len(masks) * keep)


@grad_mode_independent
def rise(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *, departures: Departures = FAITHFUL,
         n_masks: int = 500, cells: int = 8, keep: float = 0.5, batch_size: int = 100, seed: int = 0,
         progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """RISE saliency for every target from the same masked passes, pooled to the patch grid.

    Masks multiply the normalised input, so a masked pixel takes the dataset mean colour.
    ``progress``: a progress bar over the batches of masks (on stderr).
    """
    model.check_images(images, departures.keep_size)
    generator = torch.Generator().manual_seed(seed)
    masks = rise_masks(n_masks, (images.shape[-2], images.shape[-1]), cells, keep, generator).to(images)
    patch = model.patch_size
    grid = (images.shape[-2] // patch[0], images.shape[-1] // patch[1])
    t = per_image(targets.to(images.dtype), len(images))

    def embed(batch: torch.Tensor) -> torch.Tensor:
        if departures.changes_forward:
            return record(model, batch, departures, "last").embedding
        return model.encode_image(batch)

    def score(batch: torch.Tensor, image_targets: torch.Tensor) -> torch.Tensor:
        return unit(embed(batch)) @ image_targets.T

    batches = len(images) * -(-n_masks // batch_size)
    with torch.no_grad(), tqdm(total=batches, desc=f"RISE, {n_masks} masks", unit="batch",
                               disable=not progress, leave=False) as bar:
        saliency = [rise_saliency(functools.partial(score, image_targets=tb), image, masks, keep, batch_size,
                                  bar.update)
                    for image, tb in zip(images, t)]
        maps = F.adaptive_avg_pool2d(torch.stack(saliency), grid)
        scores = cosine_scores(embed(images), targets)
    return maps, scores
