"""Metrics that judge explanations, each a function with explicit parameters and a direction.

Every metric is measured with the **original** model on its **own** preprocessed input
(a (3, H, W) tensor at the model's native size), never with the forward pass an
explainer may have modified. Directions:

=========================  ===========================================================
metric                     direction
=========================  ===========================================================
deletion AUC               lower is better (removing the top pixels destroys the score)
insertion AUC              higher is better (adding the top pixels restores the score)
pointing game              higher is better (hit rate: map maximum inside the object)
energy in mask             higher is better (fraction of positive map mass on the object)
randomisation correlation  lower is better (maps must change when the weights do)
=========================  ===========================================================

Deletion / insertion (Petsiuk et al. 2018), two protocols:

* ``protocol="ours"`` (default): the map is upsampled bilinearly (align_corners False)
  to the model's own input, pixels are ranked by decreasing saliency and **ties are
  broken in raster order** (a stable sort on the map, so equal values -- such as the
  many zeros of a ReLU map -- are removed top row first, left to right: deterministic).
  ``steps`` equal steps cover the whole image (``steps + 1`` points from 0 to 1).
  Deletion replaces the removed pixels with ``baseline``; insertion starts from
  ``baseline`` and restores the top pixels.
* ``protocol="published"``: the schedule of the public Grad-ECLIP evaluation code:
  ``area // 200`` pixels per step, deletion with uniform random colours, insertion
  starting from black, scored every 10th step up to half of the image (11 points,
  fractions 0 to ~0.5). Pixels are still ranked on the model's own input (the public
  code ranks on the full image and crops afterwards, which hides perturbed pixels
  outside the crop from the classifier); ties are ordered by a seeded random
  permutation, standing for the arbitrary order of an unstable sort.

Perturbation happens in pixel space: the input is un-normalised with the preprocess
mean/std, perturbed, and re-normalised. The scores tracked are the cosine of the image
with the target text and whether the zero-shot top-1 over all targets is the target;
the AUCs are trapezoids over the fractions actually perturbed.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .explainers import unpack
from .images import load_image, native_batch, normalization

DELETION_DIRECTION = "deletion: lower is better"
INSERTION_DIRECTION = "insertion: higher is better"
BASELINES = ("uniform", "blur", "mean", "black")
PROTOCOLS = ("ours", "published")
DEFAULT_STEPS = 16  # "ours": 17 points, 1/16 of the input's pixels per step
PUBLISHED_PIXELS_DIVISOR = 200  # area / 200 pixels per step
PUBLISHED_SCORE_EVERY = 10  # score every 10th step ...
PUBLISHED_LAST_STEP = 100  # ... up to 100 steps = half of the image

__all__ = [
    "BASELINES", "CascadeStep", "CurveResult", "DEFAULT_STEPS", "DELETION_DIRECTION",
    "EvaluationTable", "INSERTION_DIRECTION", "PROTOCOLS", "average_ranks", "cascade",
    "cascade_groups", "deletion_curve", "energy_in_mask", "evaluate", "insertion_curve",
    "method_options", "pearson", "perturbation_curves", "pointing_game",
    "randomisation_cascade", "scene_labels", "scene_target", "spearman", "upsample",
]


# ============================================================================ tables


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.4f}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


@dataclass
class EvaluationTable:
    """Rows of numbers (one dict per row, usually one per explainer).

    ``str(table)`` is a fixed-width table followed by the notes (directions, protocol);
    ``to_csv`` writes the rows; ``to_json`` writes rows, columns, notes and meta
    (NaN becomes null).
    """

    rows: list[dict[str, Any]]
    title: str = ""
    columns: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.columns is None:
            columns: list[str] = []
            for row in self.rows:
                columns += [key for key in row if key not in columns]
            self.columns = columns

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]

    def row(self, key: str, by: str | None = None) -> dict[str, Any]:
        """The row whose first column (or ``by``) equals ``key``."""
        by = by or self.columns[0]
        for row in self.rows:
            if row.get(by) == key:
                return row
        raise KeyError(key)

    def __str__(self) -> str:
        cells = [[_fmt(row.get(col, "")) for col in self.columns] for row in self.rows]
        widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(self.columns)]

        def line(values):
            first = values[0].ljust(widths[0])
            return "  ".join([first] + [v.rjust(w) for v, w in zip(values[1:], widths[1:])])

        out = [self.title] if self.title else []
        out += [line(self.columns), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in cells]
        out += [f"  {note}" for note in self.notes]
        return "\n".join(out)

    def to_csv(self, path) -> Path:
        path = Path(path)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: (v if not isinstance(v, float) or math.isfinite(v) else "")
                                 for k, v in row.items()})
        return path

    def to_json(self, path) -> Path:
        path = Path(path)
        payload = {"title": self.title, "columns": self.columns, "rows": self.rows,
                   "notes": self.notes, "meta": self.meta}
        path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
        return path


# ============================================================================ helpers


def _mean_std(model, preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,) mean and std of the preprocess's Normalize (or of the model's preprocess_cfg)."""
    if preprocess is not None:
        norm = normalization(preprocess)
        mean, std = norm.mean, norm.std
    else:
        cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
        if "mean" not in cfg or "std" not in cfg:
            raise InputError("cannot un-normalise the input: pass the model's preprocess "
                             "(or a load_model() result)")
        mean, std = cfg["mean"], cfg["std"]
    return (torch.as_tensor(mean, dtype=torch.float64).reshape(3),
            torch.as_tensor(std, dtype=torch.float64).reshape(3))


def _dtype_device(model):
    try:
        p = next(model.parameters())
        return p.dtype, p.device
    except (AttributeError, StopIteration):
        return torch.float32, torch.device("cpu")


def _targets(model, tokenizer, targets) -> torch.Tensor:
    """(K, E) unit-norm text embeddings from strings or a tensor."""
    if isinstance(targets, torch.Tensor):
        if targets.ndim != 2 or targets.shape[0] == 0:
            raise InputError(f"targets must be a (K, E) tensor, got {tuple(targets.shape)}")
        return F.normalize(targets.float() if not targets.is_floating_point() else targets, dim=-1)
    from .explainers import text_targets

    return text_targets(model, tokenizer, targets)


def _target_index(target_index, texts, k: int) -> int:
    if isinstance(target_index, str):
        if isinstance(texts, torch.Tensor) or target_index not in list(texts):
            raise InputError(f"target {target_index!r} is not one of the texts")
        return list(texts).index(target_index)
    index = int(target_index)
    if not 0 <= index < k:
        raise InputError(f"target_index {index} is outside 0..{k - 1}")
    return index


def _as_input(model, preprocess, image) -> torch.Tensor:
    """A (3, H, W) preprocessed tensor at the model's native size."""
    if isinstance(image, torch.Tensor):
        x = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"image must be a (3, H, W) preprocessed tensor, got {tuple(image.shape)}")
    else:
        if preprocess is None:
            raise InputError("PIL images need the model's preprocess")
        x = preprocess(load_image(image))
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise InputError(f"image is {tuple(x.shape[-2:])} but the model's input is {tuple(size)}: "
                         f"metrics are measured on the model's own preprocessed input")
    return x


def _saliency(saliency) -> torch.Tensor:
    s = torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, torch.Tensor) else saliency)
    s = s.detach().cpu().to(torch.float64)
    while s.ndim > 2 and s.shape[0] == 1:
        s = s[0]
    if s.ndim != 2:
        raise InputError(f"a saliency map must be 2-D (h, w), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise InputError("saliency map contains NaN or Inf")
    return s


def upsample(saliency, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) float64: a (h, w) map bilinearly upsampled (align_corners False) to ``size``."""
    s = _saliency(saliency)
    if tuple(s.shape) == tuple(size):
        return s
    return F.interpolate(s[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def _mask(mask) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    m = m.detach().cpu()
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise InputError(f"a mask must be 2-D (H, W), got shape {tuple(m.shape)}")
    return m.bool()


# ============================================================================ perturbation curves


@dataclass
class CurveResult:
    """One deletion or insertion curve.

    ``fractions`` (S,): fraction of the input's pixels perturbed at each point;
    ``scores`` (S,): cosine of the perturbed image with the target text;
    ``correct`` (S,): whether the zero-shot top-1 over all targets is the target;
    ``auc_score`` / ``auc_correct``: trapezoids of those over ``fractions``.
    Direction: ``deletion: lower is better; insertion: higher is better``.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    correct: np.ndarray
    auc_score: float
    auc_correct: float
    target_index: int
    protocol: str
    baseline: str
    forward_passes: int = 0

    @property
    def direction(self) -> str:
        return DELETION_DIRECTION if self.kind == "deletion" else INSERTION_DIRECTION

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "insertion"


def _schedule(n_pixels: int, steps: int, protocol: str) -> np.ndarray:
    """Number of perturbed pixels at each scored point."""
    if protocol == "ours":
        if steps < 1:
            raise InputError("steps must be >= 1")
        return np.round(np.linspace(0, n_pixels, steps + 1)).astype(np.int64)
    per_step = max(1, n_pixels // PUBLISHED_PIXELS_DIVISOR)
    scored = np.arange(0, PUBLISHED_LAST_STEP + 1, PUBLISHED_SCORE_EVERY)
    return np.minimum(scored * per_step, n_pixels).astype(np.int64)


def _ranks(saliency: torch.Tensor, tie: str, seed: int) -> torch.Tensor:
    """(N, P) position of every pixel in the perturbation order (0 = perturbed first).

    Order: decreasing saliency; ties in raster order (``tie="raster"``, a stable sort)
    or in a seeded random order (``tie="random"``).
    """
    n, p = saliency.shape
    if tie == "random":
        perm = torch.randperm(p, generator=torch.Generator().manual_seed(seed + 7919))
        _, o = torch.sort(-saliency[:, perm], dim=1, stable=True)
        order = perm[o]
    else:
        _, order = torch.sort(-saliency, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(p).expand(n, p).contiguous())
    return ranks


def _baseline_pixels(kind: str, pixels: torch.Tensor, mean: torch.Tensor, seed: int,
                     blur_sigma: float | None = None) -> torch.Tensor:
    """(N, 3, H, W) replacement pixels, in pixel space ([0, 1] colours)."""
    n, c, h, w = pixels.shape
    if kind == "uniform":
        noise = torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return noise.to(pixels.dtype).expand(n, c, h, w)
    if kind == "black":
        return torch.zeros_like(pixels)
    if kind == "mean":
        return mean.to(pixels.dtype).reshape(1, 3, 1, 1).expand(n, c, h, w)
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        sigma = blur_sigma or 5.0 * min(h, w) / 224  # Petsiuk et al.: sigma 5 at 224 px
        ksize = min(2 * math.ceil(2 * sigma) + 1, 2 * min(h, w) - 1)  # reflect padding < side
        return gaussian_blur(pixels, [ksize, ksize], [sigma, sigma])
    raise InputError(f"baseline must be one of {BASELINES}, got {kind!r}")


def perturbation_curves(model, images: torch.Tensor, saliencies, targets, target_indices, *,
                        kind: str = "deletion", preprocess=None, tokenizer=None,
                        steps: int = DEFAULT_STEPS,
                        baseline: str | None = None, protocol: str = "ours", seed: int = 0,
                        batch_size: int = 64, blur_sigma: float | None = None) -> list[CurveResult]:
    """Deletion or insertion curves of N images at once (the batched form of :func:`deletion_curve`).

    ``images``: (N, 3, H, W) preprocessed at the model's native size; ``saliencies``:
    N maps (N, h, w) (upsampled bilinearly to (H, W)); ``targets``: K strings or a
    (K, E) tensor; ``target_indices``: N indices into the targets. All perturbed images
    of all N curves go through ``model.encode_image`` in batches of ``batch_size``
    (the forward pass is the unit of cost; ``CurveResult.forward_passes`` counts them).
    """
    if kind not in ("deletion", "insertion"):
        raise InputError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    model, preprocess, tokenizer = unpack(model, preprocess, tokenizer)
    if baseline is None:
        baseline = "black" if (protocol == "published" and kind == "insertion") else "uniform"
    if baseline not in BASELINES:
        raise InputError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    dtype, device = _dtype_device(model)
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    images = torch.stack([_as_input(model, preprocess, im) for im in images]).to(torch.float64).cpu()
    n, _, h, w = images.shape
    sal = saliencies if isinstance(saliencies, (list, tuple)) else list(saliencies)
    if len(sal) != n:
        raise InputError(f"{len(sal)} saliency maps for {n} images")
    sal = torch.stack([upsample(s, (h, w)) for s in sal]).reshape(n, h * w)
    tgt = _targets(model, tokenizer, targets)
    idx = [_target_index(t, targets, tgt.shape[0]) for t in
           (target_indices if isinstance(target_indices, (list, tuple, np.ndarray, torch.Tensor))
            else [target_indices])]
    if len(idx) != n:
        raise InputError(f"{len(idx)} target indices for {n} images")
    idx_t = torch.tensor(idx)

    mean, std = _mean_std(model, preprocess)
    m4, s4 = mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)
    pixels = images * s4 + m4  # un-normalise
    # the replacement pixels, re-normalised
    base = (_baseline_pixels(baseline, pixels, mean, seed, blur_sigma) - m4) / s4
    images, base = images.to(dtype), base.to(dtype).contiguous()  # the model's dtype from here on
    ranks = _ranks(sal, "random" if protocol == "published" else "raster", seed).reshape(n, 1, h, w)
    counts = torch.from_numpy(_schedule(h * w, steps, protocol))
    n_points = len(counts)

    scores = torch.empty(n, n_points, dtype=torch.float64)
    correct = torch.empty(n, n_points, dtype=torch.bool)
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n_points))
    passes = 0
    tgt_d = tgt.to(device, dtype)
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            ci, si = pairs[start:start + batch_size].unbind(1)
            perturbed = ranks[ci] < counts[si].reshape(-1, 1, 1, 1)
            if kind == "deletion":
                x = torch.where(perturbed, base[ci], images[ci])
            else:
                x = torch.where(perturbed, images[ci], base[ci])
            emb = F.normalize(model.encode_image(x.to(device)), dim=-1)
            cos = (emb @ tgt_d.T).double().cpu()
            scores[ci, si] = cos[torch.arange(len(ci)), idx_t[ci]]
            correct[ci, si] = cos.argmax(-1) == idx_t[ci]
            passes += 1
    fractions = (counts.double() / (h * w)).numpy()
    results = []
    for i in range(n):
        sc, co = scores[i].numpy(), correct[i].numpy()
        results.append(CurveResult(kind, fractions.copy(), sc, co,
                                   float(np.trapezoid(sc, fractions)),
                                   float(np.trapezoid(co.astype(np.float64), fractions)),
                                   int(idx[i]), protocol, baseline, passes))
    return results


def deletion_curve(model, image, saliency, targets, target_index, *, preprocess=None,
                   tokenizer=None, steps: int = DEFAULT_STEPS, baseline: str | None = None,
                   protocol: str = "ours", seed: int = 0, batch_size: int = 64,
                   blur_sigma: float | None = None) -> CurveResult:
    """Deletion curve: remove pixels most-salient first and track score and top-1. Lower AUC is better.

    ``model``: an open_clip CLIP or a ``load_model()`` bundle (the preprocess supplies
    the mean/std to un-normalise with). ``image``: the model's own preprocessed (3, H, W)
    input (or a PIL image, run through the preprocess). ``saliency``: (h, w) map,
    upsampled bilinearly to (H, W). ``targets``: K strings or (K, E) embeddings; the
    top-1 is taken over them. ``target_index``: the explained target (index or string).

    ``protocol="ours"``: ``steps`` equal steps over the whole image, ranking on the
    model's input with ties broken in raster order (stable sort); ``baseline`` defaults
    to ``"uniform"`` (random colours, the same seeded noise image for every curve).
    ``protocol="published"``: area/200 pixels per step, uniform random colours, scored
    every 10th step up to half the image; ``steps`` is ignored. Other baselines:
    ``"blur"`` (Gaussian blur of the image; ``blur_sigma`` pixels, default Petsiuk et
    al.'s 5 px at 224 scaled to the input), ``"mean"`` (the normalisation mean
    colour), ``"black"``.
    """
    return perturbation_curves(model, _one(image), [saliency], targets, [target_index],
                               kind="deletion", preprocess=preprocess, tokenizer=tokenizer,
                               steps=steps, baseline=baseline, protocol=protocol, seed=seed,
                               batch_size=batch_size, blur_sigma=blur_sigma)[0]


def insertion_curve(model, image, saliency, targets, target_index, *, preprocess=None,
                    tokenizer=None, steps: int = DEFAULT_STEPS, baseline: str | None = None,
                    protocol: str = "ours", seed: int = 0, batch_size: int = 64,
                   blur_sigma: float | None = None) -> CurveResult:
    """Insertion curve: start from ``baseline``, restore pixels most-salient first. Higher AUC is better.

    Same parameters as :func:`deletion_curve`; the published protocol starts from black.
    """
    return perturbation_curves(model, _one(image), [saliency], targets, [target_index],
                               kind="insertion", preprocess=preprocess, tokenizer=tokenizer,
                               steps=steps, baseline=baseline, protocol=protocol, seed=seed,
                               batch_size=batch_size, blur_sigma=blur_sigma)[0]


def _one(image):
    if isinstance(image, torch.Tensor):
        return image[None] if image.ndim == 3 else image
    return [image]


# ============================================================================ localisation


def pointing_game(saliency, mask, *, tolerance: int = 0) -> bool:
    """Whether the map's maximum falls inside the ground-truth mask. Higher hit rate is better.

    A map at patch-grid resolution is first upsampled bilinearly (align_corners False)
    to the mask's size. Ties: the **first maximum in raster order** (top row first,
    left to right) is the one that points -- so a constant map points at the top-left
    pixel. ``tolerance`` > 0 counts a hit when a mask pixel lies within that many pixels
    (Chebyshev distance) of the maximum.
    """
    m = _mask(mask)
    s = upsample(saliency, tuple(m.shape))
    flat = int(torch.argmax(s.flatten()))  # torch returns the first maximal index
    y, x = divmod(flat, m.shape[1])
    if tolerance <= 0:
        return bool(m[y, x])
    t = int(tolerance)
    return bool(m[max(0, y - t):y + t + 1, max(0, x - t):x + t + 1].any())


def energy_in_mask(saliency, mask) -> float:
    """Fraction of the map's positive mass inside the mask (0..1). Higher is better.

    The map is upsampled bilinearly to the mask's size; negative values are dropped
    (ReLU). A map with no positive mass puts no energy in the mask: 0.0.
    """
    m = _mask(mask)
    s = upsample(saliency, tuple(m.shape)).clamp_min(0)
    total = float(s.sum())
    return float(s[m].sum()) / total if total > 0 else 0.0


# ============================================================================ rank correlation


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1..n) along the last dim, ties given the average of their positions."""
    x = torch.as_tensor(x)
    shape = x.shape
    x = x.reshape(-1, shape[-1]).to(torch.float64)
    m, n = x.shape
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    new_group = torch.ones_like(sorted_x, dtype=torch.bool)
    new_group[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = new_group.long().cumsum(1) - 1
    position = torch.arange(1, n + 1, dtype=torch.float64).expand(m, n)
    sums = torch.zeros(m, n, dtype=torch.float64).scatter_add_(1, group, position)
    ones = torch.ones(m, n, dtype=torch.float64)
    counts = torch.zeros(m, n, dtype=torch.float64).scatter_add_(1, group, ones)
    averaged = (sums / counts.clamp_min(1)).gather(1, group)
    ranks = torch.empty_like(averaged).scatter_(1, order, averaged)
    return ranks.reshape(shape)


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson r. Convention: two constant rows -> 1 if equal else 0; one constant -> 0."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    scale = torch.maximum(na, nb).clamp_min(1e-300)
    const_a, const_b = na <= 1e-12 * scale, nb <= 1e-12 * scale
    r = (a * b).sum(-1) / (na * nb).clamp_min(1e-300)
    r = torch.where(const_a | const_b, torch.zeros_like(r), r.clamp(-1, 1))
    return torch.where(const_a & const_b, torch.ones_like(r), r)


def spearman(a, b) -> torch.Tensor | float:
    """Spearman rank correlation (Pearson r of average ranks) along the last dimension.

    Two 1-D inputs give a float; (..., n) inputs give a tensor of shape (...).
    Convention for degenerate maps: two constant inputs correlate 1, a constant against
    a varying input 0.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise InputError(f"spearman needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    r = _pearson_rows(average_ranks(a).reshape(-1, a.shape[-1]), average_ranks(b).reshape(-1, b.shape[-1]))
    return float(r[0]) if a.ndim == 1 else r.reshape(a.shape[:-1])


def pearson(a, b) -> torch.Tensor | float:
    """Pearson correlation along the last dimension (same conventions as :func:`spearman`)."""
    a = torch.as_tensor(a).to(torch.float64)
    b = torch.as_tensor(b).to(torch.float64)
    r = _pearson_rows(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
    return float(r[0]) if a.ndim == 1 else r.reshape(a.shape[:-1])


# ============================================================================ randomisation


@dataclass
class CascadeStep:
    """One step of the model-randomisation cascade (Adebayo et al. 2018).

    ``spearman`` / ``pearson``: mean over images and targets of the correlation between
    the trained model's maps and this step's maps (step 0, nothing randomised, is 1 by
    construction). ``agreement``: fraction of images whose zero-shot top-1 over the
    texts (the randomised model's ``encode_image`` on its own input) is unchanged: the
    model's performance, independent of the explainer. A faithful explainer's correlation falls as layers are
    randomised (lower is better after step 0).
    """

    step: int
    name: str
    parameters: tuple[str, ...]
    spearman: float
    pearson: float
    agreement: float


def cascade_groups(model) -> list[tuple[str, list[str]]]:
    """The vision tower's parameter names in randomisation order, top down.

    proj + ln_post, then the last block, ..., the first block, then the embeddings
    (conv1, class and positional embeddings, ln_pre and anything else left).
    """
    from .trace import vision_tower

    visual = vision_tower(model)
    names = [n for n, _ in visual.named_parameters()]
    groups: list[tuple[str, list[str]]] = []
    head = [n for n in names if n == "proj" or n.startswith("ln_post.")]
    groups.append(("proj+ln_post", head))
    depth = len(visual.transformer.resblocks)
    for i in reversed(range(depth)):
        prefix = f"transformer.resblocks.{i}."
        groups.append((f"block{i}", [n for n in names if n.startswith(prefix)]))
    used = {n for _, g in groups for n in g}
    groups.append(("embeddings", [n for n in names if n not in used]))
    return [(name, g) for name, g in groups if g]


def _randomise_(visual, names: Iterable[str], generator: torch.Generator) -> None:
    """Redraw each named parameter from a Gaussian with the tensor's own mean and std."""
    params = dict(visual.named_parameters())
    with torch.no_grad():
        for name in names:
            p = params[name]
            flat = p.detach().double().flatten()
            mu = float(flat.mean())
            sd = float(flat.std()) if flat.numel() > 1 else abs(mu)
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.copy_((noise * sd + mu).to(p.dtype))


def _explain_maps(bundle, spec, images, targets, options) -> tuple[torch.Tensor, torch.Tensor]:
    from .explainers import explain

    name, mode = _split_method(spec)
    e = explain(bundle, images, targets, method=name, **{"mode": mode, **options})
    return e.maps.detach().double(), e.scores.detach()


def cascade(bundle, methods: Sequence[str], images, texts, *, seed: int = 0,
            options: dict[str, dict] | None = None, progress: bool = False) -> dict[str, list[CascadeStep]]:
    """The randomisation cascade for several methods on the same randomised models.

    ``methods``: names, or ``"name:reference"`` specs; ``options``: per-method keyword
    arguments for ``explain``. Returns the steps per method (see :func:`randomisation_cascade`).
    """
    from tqdm.auto import tqdm

    from .explainers import prepare_images, text_targets, unpack

    model, preprocess, tokenizer = unpack(bundle)
    options = options or {}
    targets = text_targets(model, tokenizer, texts)
    twin = copy.deepcopy(model).eval()  # never touch the user's model
    twin_bundle = (twin, preprocess, tokenizer)
    native, _ = prepare_images(twin, preprocess, images, "faithful")

    def predictions():  # the (randomised) original model's zero-shot top-1 on its own input
        with torch.no_grad():
            return (F.normalize(twin.encode_image(native), dim=-1) @ targets.T).argmax(-1)

    pred0 = predictions()
    trained = {m: _explain_maps(twin_bundle, m, images, targets, options.get(m, {})) for m in methods}
    generator = torch.Generator().manual_seed(seed)
    groups = [("trained", [])] + cascade_groups(model)
    out: dict[str, list[CascadeStep]] = {m: [] for m in methods}
    for step, (name, names) in enumerate(tqdm(groups, desc="randomisation", disable=not progress,
                                              leave=False)):
        _randomise_(twin.visual, names, generator)
        agreement = float((predictions() == pred0).double().mean())
        for m in methods:
            maps0, _ = trained[m]
            maps, _ = _explain_maps(twin_bundle, m, images, targets, options.get(m, {})) \
                if step else trained[m]
            a, b = maps0.flatten(2), maps.flatten(2)
            out[m].append(CascadeStep(step, name, tuple(names), float(spearman(a, b).mean()),
                                      float(pearson(a, b).mean()), agreement))
    return out


def randomisation_cascade(bundle, method: str, images, texts, *, seed: int = 0,
                          **explain_options) -> list[CascadeStep]:
    """Model-randomisation test (Adebayo et al. 2018) for one explainer.

    On a deep copy of the model (the user's model is never modified), the vision
    tower's parameters are randomised cumulatively from the top down -- projection +
    ``ln_post``, then the last block, the block below, ..., down to the embeddings --
    each parameter tensor redrawn from a Gaussian with its own mean and standard
    deviation (scale kept, learned structure destroyed; seeded by ``seed``). At every
    step the same images and texts are explained (``explain_options`` are passed to
    :func:`eclip_core.explain`, e.g. ``mode="reference"``) and compared with the
    trained model's maps: mean Spearman rank correlation (average ranks for ties) and
    Pearson correlation over images and targets. Step 0 is the trained model itself
    (correlation 1). Pass criterion (P2): the correlation falls well below 1 once the
    top is randomised; maps that survive randomisation do not explain the model.
    """
    return cascade(bundle, [method], images, texts, seed=seed,
                   options={method: explain_options})[method]


# ============================================================================ evaluate


def _split_method(spec: str) -> tuple[str, str]:
    """``"grad_eclip:reference"`` -> ("grad_eclip", "reference"); a bare name is faithful."""
    name, _, mode = spec.partition(":")
    return name, mode or "faithful"


def method_options(name: str, rise_masks: int = 500, seed: int = 0, progress: bool = False) -> dict:
    """Options for ``explain`` that a method accepts (RISE's mask count, seeds)."""
    import inspect

    from .explainers import get_method

    fn = get_method(name).fn
    params = inspect.signature(fn).parameters
    options = {}
    for key in ("n_masks", "num_masks", "masks"):
        if key in params:
            options[key] = rise_masks
            break
    if "seed" in params:
        options["seed"] = seed
    if "progress" in params:
        options["progress"] = progress
    return options


def zero_shot_predictions(bundle, images, texts) -> torch.Tensor:
    """(B,) index of the original model's top-1 text for each image, on its own pipeline."""
    from .explainers import prepare_images, text_targets, unpack

    model, preprocess, tokenizer = unpack(bundle)
    x, _ = prepare_images(model, preprocess, images, "faithful")
    with torch.no_grad():
        return (F.normalize(model.encode_image(x), dim=-1) @ text_targets(model, tokenizer, texts).T).argmax(-1)


def scene_target(scene, texts: Sequence[str]) -> int:
    """Index of the scene's first object's prompt ("a red circle") among ``texts``."""
    prompt = f"a {scene.objects[0].phrase}"
    if prompt not in texts:
        raise InputError(f"prompt {prompt!r} is not among the texts")
    return list(texts).index(prompt)


def scene_labels(scene, texts: Sequence[str]) -> set[int]:
    """Indices of the prompts of every object of the scene (the right zero-shot answers)."""
    return {list(texts).index(f"a {o.phrase}") for o in scene.objects if f"a {o.phrase}" in texts}


def median_seconds(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@dataclass
class _MethodRun:
    """Per-image measurements of one method on a set of scenes (shared by evaluate and P2)."""

    deletion: list[CurveResult]
    insertion: list[CurveResult] | None
    pointing: np.ndarray
    energy: np.ndarray
    seconds: float
    forward_seconds: float

    def mean_curves(self) -> dict[str, list[float]]:
        """Mean deletion (and insertion) scores at each fraction, for plotting."""
        out = {"fractions": self.deletion[0].fractions.tolist(),
               "deletion": np.mean([c.scores for c in self.deletion], axis=0).tolist()}
        if self.insertion:
            out["insertion"] = np.mean([c.scores for c in self.insertion], axis=0).tolist()
        return out


def _run_method(bundle, spec: str, scenes, images: torch.Tensor, texts, targets, target_idx,
                *, steps, rise_masks, seed, batch_size, curve_batch, insertion=True, progress=False,
                forward_seconds=None, protocol="ours", baseline=None) -> _MethodRun:
    from tqdm.auto import tqdm

    from .explainers import explain

    model, preprocess, _ = bundle
    name, mode = _split_method(spec)
    options = method_options(name, rise_masks=rise_masks, seed=seed)
    n = len(scenes)
    target_maps, seconds = [], 0.0
    batches = list(range(0, n, batch_size))
    # untimed warm-up on one image: one-time costs (lazy imports, autograd set-up) are not
    # the method's cost per image
    explain(bundle, images[:1] if mode == "faithful" else [scenes[0].image], targets[:1],
            method=name, mode=mode, **options)
    for start in tqdm(batches, desc=f"{spec} maps", disable=not progress, leave=False):
        stop = min(n, start + batch_size)
        x = images[start:stop] if mode == "faithful" else [s.image for s in scenes[start:stop]]
        wanted = sorted(set(target_idx[start:stop]))  # only the targets this batch needs
        t = time.perf_counter()
        e = explain(bundle, x, targets[wanted], method=name, mode=mode, **options)
        seconds += time.perf_counter() - t
        maps = e.maps.detach().cpu()
        target_maps += [maps[i, wanted.index(target_idx[start + i])] for i in range(stop - start)]
    deletion, inserted = [], [] if insertion else None
    for start in tqdm(range(0, n, batch_size), desc=f"{spec} curves", disable=not progress, leave=False):
        stop = min(n, start + batch_size)
        common = dict(preprocess=preprocess, steps=steps, protocol=protocol, seed=seed,
                      batch_size=curve_batch, baseline=baseline)
        deletion += perturbation_curves(model, images[start:stop], target_maps[start:stop], targets,
                                        target_idx[start:stop], kind="deletion", **common)
        if insertion:
            inserted += perturbation_curves(model, images[start:stop], target_maps[start:stop], targets,
                                            target_idx[start:stop], kind="insertion", **common)
    masks = [s.objects[0].mask for s in scenes]
    pointing = np.array([pointing_game(m, k) for m, k in zip(target_maps, masks)])
    energy = np.array([energy_in_mask(m, k) for m, k in zip(target_maps, masks)])
    return _MethodRun(deletion, inserted, pointing, energy, seconds, forward_seconds or float("nan"))


def _prepare(bundle, scenes, texts):
    from .explainers import text_targets, unpack
    from . import shapes

    model, preprocess, tokenizer = unpack(bundle)
    if preprocess is None or tokenizer is None:
        raise InputError("evaluate needs a (model, preprocess, tokenizer) bundle")
    texts = list(texts) if texts is not None else shapes.prompts()
    scenes = list(scenes)
    if not scenes:
        raise InputError("no scenes to evaluate")
    dtype, device = _dtype_device(model)
    images = native_batch([s.image for s in scenes], preprocess).to(device, dtype)
    targets = text_targets(model, tokenizer, texts)
    target_idx = [scene_target(s, texts) for s in scenes]
    return (model, preprocess, tokenizer), scenes, texts, images, targets, target_idx


def _forward_seconds(model, images, batch_size) -> float:
    """Median time of one ``encode_image`` per batch, summed over the batches."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            total += median_seconds(lambda: model.encode_image(x))
    return total


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def evaluate(bundle, scenes, methods, *, texts=None, steps: int = DEFAULT_STEPS,
             rise_masks: int = 500, progress: bool = True, seed: int = 0, batch_size: int = 50,
             curve_batch: int | None = None, protocol: str = "ours", baseline: str | None = None) -> EvaluationTable:
    """Evaluate explainers on shapes-world scenes; one row per method.

    ``bundle``: ``load_model()`` result. ``scenes``: :class:`eclip_core.shapes.Scene`
    objects; the target of a scene is its first object's prompt ("a red circle") among
    ``texts`` (default: every prompt of :func:`eclip_core.shapes.prompts`), and the
    ground-truth mask is that object's mask. ``methods``: registered method names;
    ``"name:reference"`` explains in the published reference mode. Each method's maps
    come from one ``explain`` call per batch of ``batch_size`` images (all texts);
    curves use the target's map on the model's own input.

    Columns: ``deletion_auc`` (score, lower is better), ``insertion_auc`` (higher),
    ``deletion_acc_auc`` / ``insertion_acc_auc`` (zero-shot top-1 curves, same
    directions), ``pointing_game`` and ``energy_in_mask`` (higher), ``ms_per_image``
    and ``cost_ratio`` = time of the ``explain`` calls / time of one forward pass
    (``encode_image``) of the same batches, measured in the same run (median of 3; each
    method gets one untimed warm-up call on one image first).
    """
    from tqdm.auto import tqdm

    bundle, scenes, texts, images, targets, target_idx = _prepare(bundle, scenes, texts)
    model = bundle[0]
    methods = [methods] if isinstance(methods, str) else list(methods)
    if curve_batch is None:  # small inputs: big batches; 224 px ViTs: memory-friendly ones
        curve_batch = 64 if images.shape[-1] * images.shape[-2] <= 128 * 128 else 32
    forward = _forward_seconds(model, images, batch_size)
    rows, curves = [], {}
    for spec in tqdm(methods, desc="evaluate", disable=not progress):
        run = _run_method(bundle, spec, scenes, images, texts, targets, target_idx, steps=steps,
                          rise_masks=rise_masks, seed=seed, batch_size=batch_size,
                          curve_batch=curve_batch, progress=progress, forward_seconds=forward,
                          protocol=protocol, baseline=baseline)
        rows.append({
            "method": spec,
            "n": len(scenes),
            "deletion_auc": _mean(c.auc_score for c in run.deletion),
            "insertion_auc": _mean(c.auc_score for c in run.insertion),
            "deletion_acc_auc": _mean(c.auc_correct for c in run.deletion),
            "insertion_acc_auc": _mean(c.auc_correct for c in run.insertion),
            "pointing_game": float(run.pointing.mean()),
            "energy_in_mask": float(run.energy.mean()),
            "ms_per_image": 1000 * run.seconds / len(scenes),
            "cost_ratio": run.seconds / forward,
        })
        curves[spec] = run.mean_curves()
    curve = run.deletion[0] if rows else None
    notes = [DELETION_DIRECTION + "; " + INSERTION_DIRECTION,
             "pointing_game, energy_in_mask: higher is better",
             f"curves: protocol={protocol}, baseline={curve.baseline if curve else baseline}, "
             f"{len(curve.fractions) if curve else '?'} points, ties in "
             f"{'raster' if protocol == 'ours' else 'random'} order, original model on its own input",
             f"cost_ratio: explain time / one forward pass of the same batches "
             f"({1000 * forward / len(scenes):.3f} ms per image)"]
    return EvaluationTable(rows, title=f"Evaluation on {len(scenes)} scenes, {len(texts)} prompts",
                           notes=notes, meta={"forward_seconds": forward, "steps": steps, "curves": curves,
                                              "protocol": protocol, "seed": seed,
                                              "rise_masks": rise_masks, "texts": texts})
