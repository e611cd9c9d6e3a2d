"""What every saliency map goes through: the patch grid, the pixels, the [0, 1] range.

One place for the reshape from patch tokens to the grid (row-major: token ``1 + r * gw + c``
is row ``r``, column ``c``), the bilinear upsampling to pixels, and min-max scaling, so
explainers, metrics and figures agree on orientation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_grid(values: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(..., N) patch values -> (..., gh, gw), row-major."""
    return values.reshape(*values.shape[:-1], int(grid[0]), int(grid[1]))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) maps bilinearly resized (align_corners False) to (..., H, W)."""
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    dtype = flat.dtype if flat.is_floating_point() else torch.float32
    up = F.interpolate(flat.to(dtype), size=size, mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size)


def minmax(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """Rescale to [0, 1] along ``dim``; a constant row becomes all ones."""
    lo = x.amin(dim=dim, keepdim=True)
    span = x.amax(dim=dim, keepdim=True) - lo
    return torch.where(span > eps, (x - lo) / span.clamp_min(eps), torch.ones_like(x))


def masked_minmax(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max over the positions in ``mask`` only (last dim); zero outside it."""
    big = torch.finfo(x.dtype).max
    lo = torch.where(mask, x, big).amin(-1, keepdim=True)
    hi = torch.where(mask, x, -big).amax(-1, keepdim=True)
    span = hi - lo
    scaled = torch.where(span > eps, (x - lo) / span.clamp_min(eps), torch.ones_like(x))
    return scaled * mask
