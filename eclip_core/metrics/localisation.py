"""Localisation against ground-truth masks: pointing game and energy in the mask (higher is better)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .faithfulness import upsample
from .registry import metric


def _mask(mask) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    m = m.detach().cpu()
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise InputError(f"a mask must be 2-D (H, W), got shape {tuple(m.shape)}")
    return m.bool()


@metric("higher", pointing_game="hit rate: the map's maximum inside the target's mask")
def pointing_game(saliency, mask, *, tolerance: int = 0) -> bool:
    """Whether the map's maximum falls inside the ground-truth mask. Higher hit rate is better.

    A map at patch-grid resolution is first upsampled bilinearly (align_corners False)
    to the mask's size. Ties: the **first maximum in raster order** (top row first,
    left to right) is the one that points -- so a constant map points at the top-left
    pixel. ``tolerance`` > 0 counts a hit when a mask pixel lies within that many pixels
    (Chebyshev distance) of the maximum.
    """
    m = _mask(mask)
    s = upsample(saliency, (m.shape[0], m.shape[1]))
    flat = int(torch.argmax(s.flatten()))  # torch returns the first maximal index
    y, x = divmod(flat, m.shape[1])
    if tolerance <= 0:
        return bool(m[y, x])
    t = int(tolerance)
    return bool(m[max(0, y - t):y + t + 1, max(0, x - t):x + t + 1].any())


@metric("higher", energy_in_mask="fraction of the map's positive mass inside the mask")
def energy_in_mask(saliency, mask) -> float:
    """Fraction of the map's positive mass inside the mask (0..1). Higher is better.

    The map is upsampled bilinearly to the mask's size; negative values are dropped
    (ReLU). A map with no positive mass puts no energy in the mask: 0.0.
    """
    m = _mask(mask)
    s = upsample(saliency, (m.shape[0], m.shape[1])).clamp_min(0)
    total = float(s.sum())
    return float(s[m].sum()) / total if total > 0 else 0.0

