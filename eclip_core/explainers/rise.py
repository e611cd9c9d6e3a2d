"""RISE (Petsiuk et al., BMVC 2018): saliency from randomly masked forward passes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..trace import vision_tower
from .base import cosine_scores, unit


def rise_masks(n: int, size: tuple[int, int], cells: int, keep: float, generator) -> torch.Tensor:
    """(n, 1, H, W) smooth masks: a random binary cells x cells grid, upsampled, randomly shifted."""
    h, w = size
    cell_h, cell_w = -(-h // cells), -(-w // cells)
    grid = (torch.rand(n, 1, cells, cells, generator=generator) < keep).float()
    up = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                       align_corners=False)
    dy = torch.randint(0, cell_h, (n,), generator=generator)
    dx = torch.randint(0, cell_w, (n,), generator=generator)
    return torch.stack([up[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def rise_saliency(score_fn, image: torch.Tensor, masks: torch.Tensor, keep: float,
                  batch_size: int = 100) -> torch.Tensor:
    """(K, H, W) = sum_n score_fn(image * M_n) M_n / (n * keep); ``score_fn``: (n,3,H,W) -> (n, K)."""
    total = 0
    for start in range(0, len(masks), batch_size):
        m = masks[start:start + batch_size]
        total = total + torch.einsum("nk,nhw->khw", score_fn(image[None] * m), m[:, 0])
    return total / (len(masks) * keep)


def rise(model, images, targets, *, n_masks: int = 500, cells: int = 8, keep: float = 0.5,
         batch_size: int = 100, seed: int = 0, progress: bool = False):
    """RISE saliency for every target from the same masked passes, pooled to the patch grid.

    Masks multiply the normalised input, so a masked pixel takes the dataset mean colour.
    """
    visual = vision_tower(model)
    generator = torch.Generator().manual_seed(seed)
    masks = rise_masks(n_masks, tuple(images.shape[-2:]), cells, keep, generator).to(images)
    grid = tuple(s // p for s, p in zip(images.shape[-2:], visual.patch_size))
    t = targets.to(images.dtype)

    def score(batch):
        return unit(model.encode_image(batch)) @ t.T

    with torch.no_grad():
        saliency = [rise_saliency(score, image, masks, keep, batch_size)
                    for image in tqdm(images, desc="RISE", disable=not progress, leave=False)]
        maps = F.adaptive_avg_pool2d(torch.stack(saliency), grid)
        scores = cosine_scores(model.encode_image(images), targets)
    return maps, scores
