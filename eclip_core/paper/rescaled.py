"""A case built to mislead: the same deployed function, written with other weights, gets another
Grad-ECLIP map.

Multiply channel ``c`` of the last block's queries by ``s_c > 0`` and divide its keys by it
(:meth:`~eclip_core.clip.ClipModel.rescaled_query_key`). Every head's ``q^h . k^h`` is a sum of
``q_c k_c`` over its channels, so every attention map, the forward pass, every score -- and
with them the truth of every scene, and every explainer that reads only the function (the
gradient map ``ReLU(sum_h dS/dA^h_{0,i})``, occlusion, Shapley values) -- stay as they were.
The published one-head recompute too: its logits are the sum of the heads'. The loosened term
``lambda_i = cos(W_out q_0 + b, W_out k_i + b)`` is not a function of those products: it moves,
and Grad-ECLIP's map ``ReLU(lambda_i * sum_c w_c v_ic)`` with it, in both modes.

:func:`fit_scales` finds scales (each within ``[1/bound, bound]``) that move each given map's
mass off the object worth most to the model (its largest Shapley value) and onto the object
worth least, by gradient descent on ``log s`` through the loosened term alone (the rest of the
map does not depend on ``s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..clip import ClipModel
from ..errors import InputError
from ..explainers.eclip import image_eclip_parts, loosened_attention
from ..maps import minmax
from ..models import Model, as_model
from ..trace import merge_heads
from . import counterfactual as cf


def loosened_under(model: ClipModel, q: torch.Tensor, k: torch.Tensor, log_scales: torch.Tensor,
                   qk: str = "out_proj") -> torch.Tensor:
    """(B, N) the min-max normalised loosened term of the model whose last block's query
    channels are multiplied by ``exp(log_scales)`` and key channels divided by it, from the
    original model's CLS query ``q`` (B, D) and patch keys ``k`` (B, N, D); differentiable in
    ``log_scales``."""
    s = torch.exp(log_scales).to(q.dtype)
    return minmax(loosened_attention(model, q * s, k / s, qk))


@dataclass
class Pieces:
    """What a fit needs of the original model, per item: the CLS query and patch keys of its
    image (``q`` (B, D), ``k`` (B, N, D)), its map before the loosened term (``contribution``
    (items, N), the same for every rescaling), and the patch share of the objects worth most and
    least (``top``, ``bottom``: (items, N)); ``image``: each item's image."""

    q: torch.Tensor
    k: torch.Tensor
    contribution: torch.Tensor
    top: torch.Tensor
    bottom: torch.Tensor
    image: torch.Tensor


def pieces(model: Model, known: cf.Truth, which: Sequence[int] | None = None) -> Pieces:
    """:class:`Pieces` of the targets ``which`` (default all) of ``known`` on ``model``."""
    clip = as_model(model)
    chosen = list(range(len(known.targets))) if which is None else list(which)
    if not chosen:
        raise InputError("no items to fit on")
    x = clip.native_input([s.image for s in known.scenes])
    texts: list[list[str]] = [[] for _ in known.scenes]
    for t in known.targets:
        texts[t.scene].append(t.prompt)
    targets, _ = clip.paired_text_embeddings(texts, len(known.scenes))
    parts = image_eclip_parts(clip, x, targets, route="grad", loosened=False)
    last = parts.trace.blocks[-1]
    q, k = merge_heads(last.q)[:, 0].detach(), merge_heads(last.k)[:, 1:].detach()
    grid = clip.grid_size
    rows, top, bottom, image = [], [], [], []
    for j in chosen:
        t, phi = known.targets[j], known.shapley[j]
        objects = known.scenes[t.scene].objects
        rows.append(parts.contribution[t.k, t.scene].detach())
        top.append(_patch_share(objects[int(np.argmax(phi))].mask, grid))
        bottom.append(_patch_share(objects[int(np.argmin(phi))].mask, grid))
        image.append(t.scene)
    index = torch.tensor(image)
    return Pieces(q, k, torch.stack(rows), torch.stack(top).to(q.dtype), torch.stack(bottom).to(q.dtype), index)


def _patch_share(mask: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """(N,) the share of each patch covered by ``mask``."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float64)[None, None]
    return F.adaptive_avg_pool2d(m, grid).flatten()


def objective(model: ClipModel, p: Pieces, log_scales: torch.Tensor, qk: str = "out_proj") -> torch.Tensor:
    """The mean over items of the map's mass share on the object worth most minus its share on
    the object worth least (a map that follows the truth scores high; the fit drives it down)."""
    lam = loosened_under(model, p.q, p.k, log_scales, qk)[p.image]
    maps = torch.relu(lam * p.contribution)
    total = maps.sum(-1).clamp_min(1e-12)
    return (((maps * p.top).sum(-1) - (maps * p.bottom).sum(-1)) / total).mean()


def fit_scales(model: Model, known: cf.Truth, which: Sequence[int] | None = None, *, bound: float = 100.0,
               steps: int = 300, lr: float = 0.1, qk: str = "out_proj") -> tuple[torch.Tensor, list[float]]:
    """Scales (D,), each in ``[1/bound, bound]``, that drive :func:`objective` down on the items
    ``which`` of ``known`` (Adam on ``log s`` from 1, ``steps`` steps), and the objective before
    and after."""
    clip = as_model(model)
    if not bound > 1 or not math.isfinite(bound):
        raise InputError(f"bound must be a finite number above 1, got {bound!r}")
    p = pieces(clip, known, which)
    log_scales = torch.zeros(p.q.shape[-1], dtype=p.q.dtype, requires_grad=True)
    optimiser = torch.optim.Adam([log_scales], lr=lr)
    limit = math.log(bound)
    with torch.enable_grad():
        start = float(objective(clip, p, log_scales, qk).detach())
        for _ in range(steps):
            loss = objective(clip, p, log_scales, qk)
            # the scales' gradient only: nothing accumulates in the model's parameters
            (log_scales.grad,) = torch.autograd.grad(loss, [log_scales])
            optimiser.step()
            with torch.no_grad():
                log_scales.clamp_(-limit, limit)
        end = float(objective(clip, p, log_scales, qk).detach())
    return torch.exp(log_scales.detach()).double(), [start, end]
