"""Chapter 4's comparison: Grad-ECLIP's published-mode maps against its faithful ones, scored on the
deployed model, on held-out scenes (:func:`misalignment_study`) and on photographs
(:func:`photo_study`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..evaluation import evaluate
from ..explainers import explain
from ..inputs import to_model_input
from ..maps import upsample
from ..metrics import perturbation_curves
from ..models import Model, as_model
from ..stats import Interval, bootstrap, paired_difference, spearman
from ..world import shapes
from .photos import photo_texts


def zero_fraction(maps: torch.Tensor) -> float:
    """Fraction of exact zeros in a batch of maps (ReLU maps leave ties that a deletion order must break)."""
    return float((maps == 0).double().mean())



def dips_below_end(curves: np.ndarray, tolerance: float = 1e-6) -> float:
    """The share of deletion curves (n, points) whose lowest point lies below their end point
    (by more than ``tolerance``): a ranking that deletes what props the score up before what
    carries it."""
    curves = np.asarray(curves, dtype=np.float64)
    return float((curves.min(axis=1) < curves[:, -1] - tolerance).mean())


def rank_agreement(table: pd.DataFrame) -> dict[str, float]:
    """Spearman correlation of the explainers' ranks between every pair of columns of ``table``
    (one column per protocol, one row per explainer): do the protocols order them alike?"""
    ranks = table.rank()
    columns = list(table.columns)
    return {f"{a} vs {b}": float(spearman(torch.tensor(ranks[a].values), torch.tensor(ranks[b].values)))
            for i, a in enumerate(columns) for b in columns[i + 1:]}


# ----------------------------------------------------------------------------- held-out scenes


@dataclass
class MisalignmentStudy:
    """Grad-ECLIP's published-mode maps against its faithful ones, scored on the deployed model.

    ``per_image``: the evaluation's rows (both modes, every protocol); ``differences``: per
    protocol and metric, published - faithful over the same scenes with its interval;
    ``correlation``: the rank correlation of the two maps of the true prompt, per scene;
    ``curves``: every scene's deletion and insertion scores per mode, under the first protocol.
    """

    per_image: pd.DataFrame
    differences: pd.DataFrame
    correlation: Interval
    zeros: dict[str, float]
    curves: dict[str, dict[str, np.ndarray]]


#: The protocols chapter 4 compares: ours (ties at random, seeded), the published one, ROAD.
PROTOCOLS: dict[str, dict[str, str]] = {
    "ours": {"protocol": "ours", "ties": "random"}, "published": {"protocol": "published"},
    "road": {"protocol": "ours", "ties": "random", "baseline": "road"}}
MISALIGNMENT_METRICS = ("deletion_auc", "insertion_auc", "pointing_game")


def misalignment_study(model: Model, *, sample: int = 0, n: int = 240, steps: int = 16, n_road: int = 60,
                       protocols: Sequence[str] = ("ours", "published", "road")) -> MisalignmentStudy:
    """Grad-ECLIP in both modes on ``n`` held-out single-object scenes of ``sample``: the
    maps' rank correlation, and each metric's published - faithful difference per protocol
    (ROAD, whose imputation costs most, on the first ``n_road`` scenes)."""
    scenes = shapes.held_out_scenes(n, 1, sample, size=shapes.world_size(model))
    specs = ["grad_eclip", "grad_eclip:reference"]
    frames = []
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name in protocols:
        chosen = scenes[:n_road] if name == "road" else scenes
        settings = PROTOCOLS[name]
        result = evaluate(model, chosen, specs, steps=steps, seed=sample, timing=False,
                          protocol=settings["protocol"], ties=settings.get("ties"),
                          baseline=settings.get("baseline"))
        frames.append(result.per_image.assign(protocol=name))
        curves = curves or result.curves
    per_image = pd.concat(frames, ignore_index=True)
    rows = []
    for (protocol, metric) in [(p, m) for p in protocols for m in MISALIGNMENT_METRICS]:
        part = per_image[per_image["protocol"] == protocol]
        faithful = part.loc[part["method"] == "grad_eclip", metric].to_numpy(float)
        published = part.loc[part["method"] == "grad_eclip:reference", metric].to_numpy(float)
        interval = paired_difference(published, faithful, seed=sample)
        rows.append({"protocol": protocol, "metric": metric, "faithful": faithful.mean(),
                     "published": published.mean(), **interval.columns("difference"),
                     "n": interval.n})
    maps_f = explain(model, [s.image for s in scenes], [[f"a {s.objects[0].phrase}"] for s in scenes],
                     "grad_eclip").maps[:, 0]
    maps_r = explain(model, [s.image for s in scenes], [[f"a {s.objects[0].phrase}"] for s in scenes],
                     "grad_eclip", "reference").maps[:, 0]
    rho = torch.as_tensor(spearman(maps_f.flatten(1).double(), maps_r.flatten(1).double())).numpy()
    zeros = {"faithful": zero_fraction(maps_f), "published": zero_fraction(maps_r)}
    differences = pd.DataFrame(rows).set_index(["protocol", "metric"])
    return MisalignmentStudy(per_image, differences, bootstrap(rho, seed=sample), zeros, curves)


#: Practical-equivalence margin on metrics that range over [0, 1]: 5% of the range.
MARGIN = 0.05


def misalignment_conclusions(study: MisalignmentStudy) -> dict[str, bool]:
    """Chapter 4's claims: the published-mode and faithful maps of the same prompt rank the
    patches differently (mean rank correlation's interval below 0.5), yet the deployed model's
    metrics do not penalise the published ones (published - faithful within the margin in the
    unfavourable direction: deletion below +0.05, insertion and pointing above -0.05), under
    every protocol measured."""
    out = {"maps rank the patches differently (mean rho below 0.5)": study.correlation.high < 0.5}
    for (protocol, metric), row in study.differences.iterrows():
        if metric == "deletion_auc":
            out[f"{protocol}: deletion not worse by {MARGIN}"] = row["difference_high"] < MARGIN
        else:
            out[f"{protocol}: {metric.replace('_', ' ')} not worse by {MARGIN}"] = row["difference_low"] > -MARGIN
    return out


# ----------------------------------------------------------------------------- photographs


@dataclass
class PhotoStudy:
    """Grad-ECLIP in both modes on photographs, scored on the deployed model.

    ``table``: one row per photograph and prompt: the photograph's size, both modes' grids,
    the original model's cosine, the faithful and the published (reference) score, the
    drift, the rank correlation of the two maps on the model's input pixels and, where
    measured, both modes' deletion AUC under the deployed model (``deletion_start``: the
    curves' first point, the original model's cosine for both modes).
    ``faithful``, ``reference``: each photograph's explanations; ``texts``: what was
    explained; ``own_prompts``: whether those are the photographs' own prompts (a model
    that cannot read them explains the shapes prompts it ranks highest instead).
    """

    table: pd.DataFrame
    faithful: list[Any]
    reference: list[Any]
    texts: list[list[str]]
    own_prompts: bool


def photo_study(model: Model, photos: Sequence[Any], *, deletion: bool = True, steps: int = 16,
                seed: int = 0) -> PhotoStudy:
    """:class:`PhotoStudy` of ``photos`` (:class:`~eclip_core.paper.photos.Photo`): each explained
    at the model's input (faithful) and at its keep-size input through the published
    forward pass (reference), as the published code explains photographs."""
    clip = as_model(model)
    texts, own = photo_texts(clip, photos)
    faithful, reference, rows = [], [], []
    seen_maps: list[torch.Tensor] = []    # per (photo, prompt): faithful map on the model's input
    placed_maps: list[torch.Tensor] = []  # the same for the published (keep-size) map
    for photo, prompts in zip(photos, texts):
        f = explain(clip, [photo.image], [prompts], "grad_eclip")
        r = explain(clip, [photo.image], [prompts], "grad_eclip", "reference")
        placed = to_model_input(r.maps[0].double(), photo.image.size, clip.preprocess)
        seen = upsample(f.maps[0].double(), (int(placed.shape[-2]), int(placed.shape[-1])))
        faithful.append(f)
        reference.append(r)
        seen_maps.extend(seen)
        placed_maps.extend(placed)
        original = r.scores_original
        assert original is not None  # reference mode always departs, so it carries the model's cosine
        for k, text in enumerate(prompts):
            rows.append({"photo": photo.name, "prompt": text, "size": "{}x{}".format(*photo.image.size),
                         "grid": "{}x{}".format(*f.maps.shape[-2:]),
                         "grid_reference": "{}x{}".format(*r.maps.shape[-2:]),
                         "original": float(original[0, k]), "faithful": float(f.scores[0, k]),
                         "reference": float(r.scores[0, k]),
                         "drift": float((r.scores[0, k] - original[0, k]).abs()),
                         "spearman": float(spearman(seen[k].flatten(), placed[k].flatten()))})
    table = pd.DataFrame(rows)
    if deletion:  # the maps above, scored on the deployed model (our protocol, ties in a seeded order)
        distinct = list(dict.fromkeys(t for prompts in texts for t in prompts))
        images = clip.native_input([photo.image for photo, prompts in zip(photos, texts) for _ in prompts])
        index = [distinct.index(t) for prompts in texts for t in prompts]
        for column, maps in (("deletion_faithful", seen_maps), ("deletion_published", placed_maps)):
            curves = perturbation_curves(clip, images, maps, distinct, index, kind="deletion", steps=steps,
                                         seed=seed, ties="random")
            table[column] = [c.auc_score for c in curves]
            table[f"{column}_start"] = [float(c.scores[0]) for c in curves]
    return PhotoStudy(table.set_index(["photo", "prompt"]), faithful, reference, texts, own)
