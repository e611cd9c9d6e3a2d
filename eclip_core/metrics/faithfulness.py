"""Faithfulness: deletion and insertion curves (Petsiuk et al. 2018), lower / higher is better.

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

* ``protocol="ours"`` (default): the map -- which must cover the model's own input
  (a keep-size map goes through :func:`eclip_core.inputs.to_model_input` first;
  one of another shape is refused) -- is upsampled bilinearly (align_corners False)
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

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from .. import maps
from ..clip import ClipModel
from ..errors import InputError
from ..inputs import check_image_tensor, load_image, normalization
from ..models import Model, as_model
from .registry import direction, metric

BASELINES = ("uniform", "blur", "mean", "black", "road")
TIES = ("raster", "random")
#: ROAD's imputation weights: direct neighbours 1/6, diagonal ones 1/12 (Rong et al. 2022).
ROAD_KERNEL = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
ROAD_ITERATIONS = 24
ROAD_NOISE = 0.01  # std of the Gaussian noise added to imputed pixels, in [0, 1] colour units
PROTOCOLS = ("ours", "published")
DEFAULT_STEPS = 16  # "ours": 17 points, 1/16 of the input's pixels per step
PUBLISHED_PIXELS_DIVISOR = 200  # area / 200 pixels per step
PUBLISHED_SCORE_EVERY = 10  # score every 10th step ...
PUBLISHED_LAST_STEP = 100  # ... up to 100 steps = half of the image


def _mean_std(model: ClipModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,) mean and std of the preprocess's Normalize (else the model's declared normalisation)."""
    if model.preprocess is not None:
        norm = normalization(model.preprocess)
        mean, std = norm.mean, norm.std
    else:
        mean, std = model.input_normalisation()
    return (torch.as_tensor(mean, dtype=torch.float64).reshape(3),
            torch.as_tensor(std, dtype=torch.float64).reshape(3))


def _target_index(target_index, texts, k: int) -> int:
    if isinstance(target_index, str):
        if isinstance(texts, torch.Tensor) or target_index not in list(texts):
            raise InputError(f"target {target_index!r} is not one of the texts")
        return list(texts).index(target_index)
    index = int(target_index)
    if not 0 <= index < k:
        raise InputError(f"target_index {index} is outside 0..{k - 1}")
    return index


def _as_input(model: ClipModel, image) -> torch.Tensor:
    """A (3, H, W) preprocessed tensor at the model's native size."""
    if isinstance(image, torch.Tensor):
        x = check_image_tensor(image[0] if image.ndim == 4 and image.shape[0] == 1 else image)
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"image must be a (3, H, W) preprocessed tensor, got {tuple(image.shape)}")
    else:
        if model.preprocess is None:
            raise InputError("PIL images need the model's preprocess")
        x = model.preprocess(load_image(image))
    size = model.image_size if model.traced else None
    if size is not None and tuple(x.shape[-2:]) != size:
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
    """(H, W) float64: a (h, w) map bilinearly upsampled (align_corners False) to ``size``.

    The map must have the shape of ``size`` (h * W == w * H): one that does not covers
    other pixels -- a keep-size (reference-mode) map covers the whole image, not the
    model's centre crop -- and stretching it would score it on the wrong pixels. Place
    such a map first with :func:`eclip_core.inputs.to_model_input`.
    """
    s = _saliency(saliency)
    h, w = s.shape
    if h * int(size[1]) != w * int(size[0]):
        raise InputError(f"a {h}x{w} map does not have the shape of the {size[0]}x{size[1]} input it is "
                         f"scored on: stretching it would score it on other pixels (a keep-size map "
                         f"covers the whole image; place it with eclip_core.inputs.to_model_input)")
    return maps.upsample(s, size)


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
        """``"deletion: lower is better"`` or ``"insertion: higher is better"``."""
        return f"{self.kind}: {direction(f'{self.kind}_auc')}"

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
        sigma = blur_sigma or 5.0 * min(h, w) / 224  # Petsiuk et al.: sigma 5 at 224 px
        ksize = min(2 * math.ceil(2 * sigma) + 1, 2 * min(h, w) - 1)  # reflect padding < side
        return gaussian_blur(pixels, [ksize, ksize], [sigma, sigma])
    raise InputError(f"baseline must be one of {BASELINES}, got {kind!r}")


def _coarse_fill(pixels: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """A first guess for the removed pixels: the mean of the kept pixels in the finest
    power-of-two cell (up to the whole image) that holds any, so Jacobi starts close."""
    h, w = pixels.shape[-2:]
    fill = (pixels * kept).sum((2, 3), keepdim=True) / kept.sum((2, 3), keepdim=True).clamp_min(1)
    fill = fill.expand_as(pixels)
    cell = 1 << max(0, (min(h, w) - 1).bit_length() - 1)
    while cell >= 2:
        total = F.avg_pool2d(pixels * kept, cell, ceil_mode=True)
        count = F.avg_pool2d(kept, cell, ceil_mode=True)
        local = F.interpolate(total / count.clamp_min(1e-12), size=(h, w), mode="nearest")
        has = F.interpolate(count, size=(h, w), mode="nearest") > 0
        fill = torch.where(has, local, fill)
        cell //= 2
    return fill


def road_impute(pixels: torch.Tensor, removed: torch.Tensor, seed: int = 0,
                iterations: int = ROAD_ITERATIONS, noise: float = ROAD_NOISE) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022): every removed pixel becomes the
    weighted mean of its 8 neighbours (:data:`ROAD_KERNEL`), the kept pixels fixed, plus Gaussian
    noise. ``pixels``: (N, 3, H, W) in [0, 1]; ``removed``: (N, 1, H, W) booleans. The linear
    system is solved approximately: ``iterations`` Jacobi sweeps from a coarse-to-fine fill."""
    dtype = pixels.dtype
    work = pixels.float()  # the stencil in float32: the noise dwarfs its round-off
    removed = removed.expand_as(work).contiguous()
    h, w = work.shape[-2:]
    x = torch.where(removed, _coarse_fill(work, (~removed).float()), work)
    taps = [(float(ROAD_KERNEL[dy, dx]), dy, dx) for dy in range(3) for dx in range(3) if ROAD_KERNEL[dy, dx]]
    (first, y0, x0), *rest = taps
    for _ in range(iterations):
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        # each distinct weight times the padded image once (a product does not depend on where it
        # is read), the shifted products summed in raster order of the taps
        scaled = {weight: padded * weight for weight in {tap[0] for tap in taps}}
        smooth = scaled[first][..., y0:y0 + h, x0:x0 + w].clone()
        for weight, dy, dx in rest:
            smooth.add_(scaled[weight][..., dy:dy + h, dx:dx + w])
        x = torch.where(removed, smooth, work)
    x = x.to(dtype)
    generator = torch.Generator().manual_seed(seed + 104729)
    jitter = torch.randn(pixels.shape, generator=generator, dtype=torch.float64).to(pixels.dtype) * noise
    return torch.where(removed, (x + jitter).clamp(0, 1), pixels)


def perturbation_curves(model: Model, images: torch.Tensor, saliencies, targets, target_indices, *,
                        kind: str = "deletion", preprocess=None, tokenizer=None,
                        steps: int = DEFAULT_STEPS,
                        baseline: str | None = None, protocol: str = "ours", seed: int = 0,
                        batch_size: int = 64, blur_sigma: float | None = None,
                        ties: str | None = None) -> list[CurveResult]:
    """Deletion or insertion curves of N images at once (the batched form of :func:`deletion_curve`).

    ``images``: (N, 3, H, W) preprocessed at the model's native size; ``saliencies``:
    N maps (N, h, w) (upsampled bilinearly to (H, W)); ``targets``: K strings or a
    (K, E) tensor; ``target_indices``: N indices into the targets. All perturbed images
    of all N curves go through ``model.encode_image`` in batches of ``batch_size``
    (the forward pass is the unit of cost; ``CurveResult.forward_passes`` counts them).
    ``baseline="road"`` imputes the removed pixels from the kept ones (:func:`road_impute`)
    instead of pasting a colour. ``ties``: the order of equal saliencies, ``"raster"`` or a
    seeded ``"random"`` one (default: raster for ``ours``, random for ``published``).
    """
    if kind not in ("deletion", "insertion"):
        raise InputError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    clip = as_model(model, preprocess, tokenizer)
    if baseline is None:
        baseline = "black" if (protocol == "published" and kind == "insertion") else "uniform"
    if baseline not in BASELINES:
        raise InputError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    dtype, device = clip.dtype, clip.device
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    images = torch.stack([_as_input(clip, im) for im in images]).to(torch.float64).cpu()
    n, _, h, w = images.shape
    given = saliencies if isinstance(saliencies, (list, tuple)) else list(saliencies)
    if len(given) != n:
        raise InputError(f"{len(given)} saliency maps for {n} images")
    sal = torch.stack([upsample(s, (h, w)) for s in given]).reshape(n, h * w)
    tgt = clip.text_embeddings(targets)
    idx = [_target_index(t, targets, tgt.shape[0]) for t in
           (target_indices if isinstance(target_indices, (list, tuple, np.ndarray, torch.Tensor))
            else [target_indices])]
    if len(idx) != n:
        raise InputError(f"{len(idx)} target indices for {n} images")
    idx_t = torch.tensor(idx)

    mean, std = _mean_std(clip)
    m4, s4 = mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)
    pixels = images * s4 + m4  # un-normalise
    ties = ties or ("random" if protocol == "published" else "raster")
    if ties not in TIES:
        raise InputError(f"ties must be one of {TIES}, got {ties!r}")
    road = baseline == "road"
    # the replacement pixels, re-normalised (ROAD imputes per perturbation instead)
    base = images if road else (_baseline_pixels(baseline, pixels, mean, seed, blur_sigma) - m4) / s4
    images, base = images.to(dtype), base.to(dtype).contiguous()  # the model's dtype from here on
    ranks = _ranks(sal, ties, seed).reshape(n, 1, h, w)
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
            if road:  # deletion removes the perturbed pixels; insertion all but them
                removed = perturbed if kind == "deletion" else ~perturbed
                x = ((road_impute(pixels[ci], removed, seed + start) - m4) / s4).to(dtype)
            elif kind == "deletion":
                x = torch.where(perturbed, base[ci], images[ci])
            else:
                x = torch.where(perturbed, images[ci], base[ci])
            emb = F.normalize(clip.encode_image(x.to(device)), dim=-1)
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


@metric("lower", deletion_auc="area under the cosine-with-the-target deletion curve",
        deletion_acc_auc="area under the zero-shot top-1 deletion curve")
def deletion_curve(model: Model, image, saliency, targets, target_index, *, preprocess=None,
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


@metric("higher", insertion_auc="area under the cosine-with-the-target insertion curve",
        insertion_acc_auc="area under the zero-shot top-1 insertion curve")
def insertion_curve(model: Model, image, saliency, targets, target_index, *, preprocess=None,
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

