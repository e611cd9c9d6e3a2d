"""Which explainers compute the same function? An equivalence atlas by randomised testing.

For every pair of explainers (a method with a mode and options), their maps are compared
on random inputs -- Gaussian images and random unit targets -- of several models in
float64: small random ViTs of different shapes (:func:`atlas_models`: one head, four
heads, layer scale; every bias and norm parameter perturbed) and the embedded
eclip-shapes model. A pair is

* ``same``: equal on every map to ``1e-10`` of the map's scale (the same function);
* ``monotone``: not the same, but rank correlation 1 on every map (the same up to a
  monotone transform of each map, e.g. a min-max or a positive factor);
* ``different``: otherwise; the median rank correlation over the maps is reported with a
  bootstrap 95% interval (the maps resampled).

Random tests cannot prove an identity (a derivation does: chapter 2 for Grad-ECLIP), but
one random input that disagrees refutes it.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..explainers import explain, explain_text, resolve
from ..models import Model, as_model, load_model, random_clip
from ..stats import bootstrap, relative_gap, spearman

SAME_RTOL = 1e-10  # "same": max |a - b| within this fraction of the map's scale
MONOTONE_TOL = 1e-12  # "monotone": every rank correlation within this of 1

#: Random image towers of the atlas: several shapes, kept small so the atlas is fast.
ATLAS_SHAPES: dict[str, dict[str, Any]] = {
    "vit-1head": dict(image_size=(32, 48), patch_size=8, width=32, layers=2, head_width=32),
    "vit-4heads": dict(image_size=(48, 32), patch_size=8, width=64, layers=3, head_width=16),
    "vit-layerscale": dict(image_size=32, patch_size=8, width=48, layers=2, head_width=12, ls_init_value=0.5),
}

#: label -> (method spec, options): every explainer, and variants worth comparing.
ATLAS_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "grad_eclip": ("grad_eclip", {}),
    "attention_eclip": ("attention_eclip", {}),
    "grad_eclip:reference": ("grad_eclip:reference", {}),
    "attention_gradient": ("attention_eclip", {"loosened": False}),  # ReLU(sum_h dS/dA^h[CLS, i])
    "attention": ("attention", {}),
    "rollout": ("rollout", {}),
    "gae": ("gae", {}),
    "gae_last_block": ("gae", {"last_block_only": True}),
    "gradcam": ("gradcam", {}),
    "maskclip": ("maskclip", {}),
    "rise": ("rise", {"n_masks": 200}),
    "legrad": ("legrad", {}),
    "legrad_last_block": ("legrad", {"n_blocks": 1}),
    "legrad_mean": ("legrad", {"pooling": "mean"}),
    "direct_contributions": ("direct_contributions", {}),
    "direct_last_block": ("direct_contributions", {"n_blocks": 1}),
    "clip_surgery": ("clip_surgery", {}),
    "integrated_gradients": ("integrated_gradients", {}),
    "occlusion": ("occlusion", {}),
}


def atlas_models(*, seed: int = 0, embedded: bool = True) -> dict[str, torch.nn.Module]:
    """The random ViTs of :data:`ATLAS_SHAPES` and (``embedded``) eclip-shapes, in float64."""
    models = {name: random_clip(cfg, seed=seed + i) for i, (name, cfg) in enumerate(ATLAS_SHAPES.items())}
    if embedded:
        models["eclip-shapes"] = copy.deepcopy(load_model().model).double().eval()
    return models


def _methods(methods: Sequence[str] | Mapping[str, tuple[str, dict[str, Any]]] | None):
    if methods is None:
        return dict(ATLAS_METHODS)
    if isinstance(methods, Mapping):
        return {label: (spec, dict(options)) for label, (spec, options) in methods.items()}
    return {str(spec): (str(spec), {}) for spec in methods}


def atlas_maps(models: Mapping[str, torch.nn.Module], methods=None, *, n_images: int = 2, n_targets: int = 3,
               seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``maps[label][model]``: (n_images * n_targets, patches) maps of each method on each model."""
    methods = _methods(methods)
    out: dict[str, dict[str, torch.Tensor]] = {label: {} for label in methods}
    for m, (model_name, model) in enumerate(models.items()):
        g = torch.Generator().manual_seed(seed + 1000 * m)
        clip = as_model(model)
        images = torch.randn(n_images, 3, *clip.image_size, generator=g, dtype=clip.dtype)
        targets = F.normalize(torch.randn(n_targets, clip.embed_dim, generator=g, dtype=clip.dtype), dim=-1)
        for label, (spec, options) in methods.items():
            maps = explain(clip, images, targets, resolve(spec, options=options)).maps
            out[label][model_name] = maps.flatten(2).flatten(0, 1)
    return out


def compare(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], *, n_boot: int = 2000,
            seed: int = 0) -> dict[str, Any]:
    """Verdict, largest relative difference, rank correlations (min, median, bootstrap 95%
    interval of the median) and the models on which the pair is monotone, over every map."""
    rel, rho, monotone_on = [], [], []
    for model_name in a:
        x, y = a[model_name].double(), b[model_name].double()
        scale = torch.maximum(x.abs().amax(-1), y.abs().amax(-1))
        diff = (x - y).abs().amax(-1)
        rel.append(torch.where(scale > 0, diff / scale.clamp_min(1e-300), torch.zeros_like(diff)))
        r = torch.as_tensor(spearman(x, y)).reshape(-1)
        rho.append(r)
        if (r >= 1 - MONOTONE_TOL).all():
            monotone_on.append(model_name)
    rel_all, rho_all = torch.cat(rel), torch.cat(rho).numpy()
    if (rel_all <= SAME_RTOL).all():
        verdict = "same"
    elif (rho_all >= 1 - MONOTONE_TOL).all():
        verdict = "monotone"
    else:
        verdict = "different"
    median = bootstrap(rho_all, np.median, n_boot=n_boot, seed=seed)
    return {"verdict": verdict, "max_rel_diff": float(rel_all.max()), "min_rho": float(rho_all.min()),
            "median_rho": median.estimate, "ci_low": median.low, "ci_high": median.high, "n_maps": len(rho_all),
            "monotone_on": ", ".join(monotone_on)}


def equivalence_atlas(models: Mapping[str, torch.nn.Module] | None = None,
                      methods: Sequence[str] | Mapping[str, tuple[str, dict[str, Any]]] | None = None, *,
                      n_images: int = 2, n_targets: int = 3, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Every pair of ``methods`` judged on ``models``: one row per pair (see the module's doc).

    ``models``: name -> open_clip CLIP (default :func:`atlas_models`; pass float64 models
    for the 1e-10 criterion). ``methods``: specs (``"name"``, ``"name:mode"``) or a
    mapping label -> (spec, options) (default :data:`ATLAS_METHODS`). Columns: ``first``,
    ``second``, ``verdict``, ``max_rel_diff``, ``min_rho``, ``median_rho``, ``ci_low``,
    ``ci_high`` (bootstrap 95% interval of the median rank correlation), ``n_maps``,
    ``monotone_on`` (the models on which the pair is the same up to a monotone map).
    """
    models = atlas_models(seed=seed) if models is None else models
    maps = atlas_maps(models, methods, n_images=n_images, n_targets=n_targets, seed=seed)
    rows = [{"first": a, "second": b, **compare(maps[a], maps[b], n_boot=n_boot, seed=seed)}
            for a, b in itertools.combinations(maps, 2)]
    table = pd.DataFrame(rows)
    table.attrs["title"] = f"Equivalence atlas: {len(maps)} explainers on {len(models)} models"
    table.attrs["notes"] = [f"same: max |a - b| <= {SAME_RTOL:g} of the map's scale on every map",
                            "monotone: rank correlation 1 on every map",
                            f"{n_images} random images x {n_targets} random targets per model; "
                            f"median rank correlation with a bootstrap 95% interval"]
    return table


def route_gap(model: Model, images: Any, texts: Any, *, branch: str = "image",
              modes: Sequence[str] = ("faithful", "reference"), loosened: Sequence[bool] = (True, False),
              **options: Any) -> tuple[float, tuple[int, ...]]:
    """The worst relative gap (:func:`~eclip_core.stats.relative_gap`) between Grad-ECLIP's and
    Attention-ECLIP's maps over ``modes`` and ``loosened`` (the chapter-2 check that the two
    routes are the same function), and the maps' shape. ``branch="text"``: the token maps of
    texts ``images`` against images ``texts``, as :func:`~eclip_core.explain_text` takes them."""
    run = explain if branch == "image" else explain_text
    worst = 0.0
    shape: tuple[int, ...] = ()
    for mode in modes:
        for on in loosened:
            g = run(model, images, texts, "grad_eclip", mode, loosened=on, **options).maps
            a = run(model, images, texts, "attention_eclip", mode, loosened=on, **options).maps
            worst, shape = max(worst, relative_gap(g, a)), tuple(g.shape)
    return worst, shape
