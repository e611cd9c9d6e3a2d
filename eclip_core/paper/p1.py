"""P1, the original model: the computation an explanation differentiates must be the deployed
model's own forward pass, and must reproduce its output (PAPER.md).

:func:`p1_check` compares the scores an explainer differentiated (``Explanation.scores``) with
the deployed model's own cosine (:meth:`eclip_core.clip.ClipModel.cosine`, independent of every
explainer). Pass: max |drift| <= 1e-5 and zero-shot agreement == 1.0. :func:`certificates` does
it for the whole zoo. :func:`p1_departures` measures the published Grad-ECLIP code's two
departures (one head in the last block; keep-size resolution with interpolated positional
embeddings) separately and together (its reference mode); :func:`p1_study` on held-out scenes
of a sample, with the claims chapter 3 makes from it (:func:`p1_conclusions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..clip import ClipModel
from ..departures import FAITHFUL, PUBLISHED, Departures
from ..errors import InputError
from ..evaluation import evaluation_request
from ..explainers import all_requests, explain, resolve
from ..explainers.base import cosine_scores
from ..inputs import as_list, load_image
from ..models import Model, as_model
from ..stats import bootstrap, paired_difference
from ..world import shapes

__all__ = ["DEPARTURE_VARIANTS", "P1Measure", "P1Report", "P1Study", "P1_DRIFT_TOLERANCE", "SCORE_ONLY_OPTIONS",
           "certificates", "original_scores", "p1_check", "p1_conclusions", "p1_departures", "p1_invariants",
           "p1_measure", "p1_study"]

P1_DRIFT_TOLERANCE = 1e-5
P1_AGREEMENT_REQUIRED = 1.0


# ============================================================================ P1


@dataclass
class P1Report:
    """P1 for one explainer: the explained scores versus the original model's.

    ``max_drift`` / ``median_drift``: max and median of |scores - original| over images
    and texts; ``agreement``: fraction of images whose zero-shot top-1 over the texts is
    the same in the explainer's forward pass and in the original model.
    ``passed``: ``max_drift <= 1e-5 and agreement == 1.0``.
    """

    method: str
    mode: str
    max_drift: float
    median_drift: float
    agreement: float
    scores: torch.Tensor  # (B, K) the scores the explainer differentiated
    scores_original: torch.Tensor  # (B, K) the original model's, computed independently
    tolerance: float = P1_DRIFT_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_drift <= self.tolerance and self.agreement >= P1_AGREEMENT_REQUIRED

    def row(self) -> dict:
        return {"method": self.method, "mode": self.mode, "max_drift": self.max_drift,
                "median_drift": self.median_drift, "agreement": self.agreement,
                "passed": self.passed}

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"P1 {verdict} {self.method} ({self.mode}): max |drift| {self.max_drift:.3e}, "
                f"median {self.median_drift:.3e}, zero-shot agreement {self.agreement:.3f} "
                f"(criteria: drift <= {self.tolerance:g}, agreement == 1)")


def _images_list(images) -> list[Any] | torch.Tensor:
    """A tensor as it is; images, paths or shapes scenes as a list of images."""
    if isinstance(images, torch.Tensor):
        return images
    return [im.image if isinstance(im, shapes.Scene) else im for im in as_list(images)]


def original_scores(model: Model, images, texts) -> torch.Tensor:
    """(B, K) cosines of the original model on its own pipeline (:meth:`ClipModel.cosine`:
    ``encode_image`` / ``encode_text``), independent of every explainer: PIL images go through
    the model's preprocess; a tensor must already be the model's native input."""
    clip = as_model(model)
    images = _images_list(images)
    if isinstance(images, torch.Tensor) and tuple(images.shape[-2:]) != clip.image_size:
        size = clip.image_size
        raise InputError(f"P1 compares with the original pipeline ({size[0]}x{size[1]}); a "
                         f"{tuple(images.shape[-2:])} tensor is not it: pass the PIL images")
    return clip.cosine(images, texts)


def p1_check(model: Model, method: str, images, texts, *, mode: str | None = None, **options: Any) -> P1Report:
    """P1 for ``method``: does the forward pass it differentiated reproduce the original model?

    The explainer is run through :func:`eclip_core.explain` (``mode``, ``options``); its
    ``Explanation.scores`` are compared with :func:`original_scores`. Pass criteria:
    max |drift| <= 1e-5 and zero-shot agreement (argmax over the K texts) == 1.0.
    """
    images = _images_list(images)
    request = resolve(method, mode, options)
    e = explain(model, images, texts, request)
    return _p1_report(request.name, request.mode, e.scores, original_scores(model, images, texts))


def _p1_report(method: str, mode: str, scores: torch.Tensor, original: torch.Tensor) -> P1Report:
    """P1 of ``scores`` against the original model's ``original`` (both (B, K))."""
    drift = (scores.double() - original.double()).abs()
    agreement = (scores.argmax(-1) == original.argmax(-1)).double().mean()
    return P1Report(method, mode, float(drift.max()), float(drift.median()), float(agreement),
                    scores.detach(), original.detach())


def _labels(images, texts: Sequence[str], labels) -> list[set[int]] | None:
    if labels is None:
        if isinstance(images, (list, tuple)) and images and all(isinstance(s, shapes.Scene) for s in images):
            return [{list(texts).index(f"a {o.phrase}") for o in s.objects if f"a {o.phrase}" in texts}
                    for s in images]
        return None
    out = []
    for label in labels:
        items = label if isinstance(label, (set, frozenset, list, tuple)) else [label]
        out.append({list(texts).index(i) if isinstance(i, str) else int(i) for i in items})
    return out


#: Options that shape only a perturbation method's map, never its scores (the unperturbed model's
#: cosine): :func:`certificates` sets them to their cheapest unless asked for the full maps.
SCORE_ONLY_OPTIONS: dict[str, dict[str, Any]] = {
    "rise": {"n_masks": 8}, "integrated_gradients": {"steps": 1}, "occlusion": {"window": 4}}


def certificates(model: Model, images, texts, *, specs: Sequence[str] | None = None, rise_masks: int = 50,
                 seed: int = 0, full_maps: bool = False) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """P1 for the whole zoo: every method in every mode (``specs``, default all), its certificate
    checked against the original model (:func:`original_scores`, independent of every explainer).

    Returns a table, one row per spec: ``departures`` (how many things ran differently, in
    the explanation's own words), ``max_drift`` / ``median_drift`` (|scores - the model's
    cosine|: what the method differentiated or perturbed), ``original_drift`` (the same for
    ``scores_original``, which a departing explanation carries; 0 where it carries none),
    ``P1`` (max drift <= 1e-5 and the same top-1 as the model), and the words per spec.
    The scores do not depend on the options in :data:`SCORE_ONLY_OPTIONS`, which are set to
    their cheapest unless ``full_maps`` (then RISE gets ``rise_masks``).
    """
    clip = as_model(model)
    images = _images_list(images)
    original = original_scores(clip, images, texts).double()
    rows, words = [], {}
    for spec in specs if specs is not None else [str(r) for r in all_requests()]:
        request = evaluation_request(spec, rise_masks=rise_masks, seed=seed)
        if not full_maps:
            request = resolve(request, options=SCORE_ONLY_OPTIONS.get(request.name, {}))
        e = explain(clip, images, texts, request)
        report = _p1_report(request.name, request.mode, e.scores, original)
        certified = original if e.scores_original is None else e.scores_original.double()
        words[str(spec)] = e.describe(clip)
        rows.append({"explainer": str(spec), "departures": len(words[str(spec)]),
                     "max_drift": report.max_drift, "median_drift": report.median_drift,
                     "original_drift": float((certified - original).abs().max()), "P1": report.passed})
    table = pd.DataFrame(rows).set_index("explainer")
    table.attrs["title"] = f"certificates on {len(images)} images, {original.shape[1]} texts"
    table.attrs["notes"] = ["drift: |scores - the model's own cosine| (encode_image on its pipeline)",
                            "original_drift: the same for scores_original",
                            "P1: max drift <= 1e-5 and the model's top-1"]
    return table, words


#: The published code's departures, one at a time and together.
DEPARTURE_VARIANTS = {"original": FAITHFUL, "one_head": Departures(heads=1),
                      "keep_size": Departures(keep_size=True), "reference": PUBLISHED}


def _departed_scores(model: ClipModel, images: list[Any], targets: torch.Tensor,
                     departures: Departures) -> tuple[torch.Tensor, str]:
    """Scores of the forward pass with ``departures`` (keep-size inputs traced per distinct
    size), and the patch grid(s) it used."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.size if departures.keep_size else (0, 0), []).append(i)
    scores: list[torch.Tensor | None] = [None] * len(images)
    grids = set()
    for idx in groups.values():
        x, _ = model.prepare([images[i] for i in idx], keep_size=departures.keep_size)
        if departures.changes_forward:
            tr = model.trace_vision(x, heads=departures.heads, keep_size=departures.keep_size, record="last")
            assert tr.grid is not None
            embedding, grid = tr.embedding, tr.grid
        else:  # the original is the model's own forward pass, not a recomputation of it
            embedding, grid = model.encode_image(x), model.grid_size
        grids.add("x".join(map(str, grid)))
        group_scores = cosine_scores(embedding, targets)
        for j, i in enumerate(idx):
            scores[i] = group_scores[j]
    return torch.stack(scores), grids.pop() if len(grids) == 1 else "mixed"  # type: ignore[arg-type]


@dataclass
class P1Measure:
    """What :func:`p1_departures` measured, image by image.

    ``table``: one row per variant (see :func:`p1_departures`); ``drifts``: per variant,
    the |score drift| of every image and text, shape (B, K); ``agrees``: per variant and
    image, whether the top-1 is the original model's; ``correct``: per variant and image,
    whether the top-1 is right (``None`` without labels).
    """

    table: pd.DataFrame
    drifts: dict[str, np.ndarray]
    agrees: dict[str, np.ndarray]
    correct: dict[str, np.ndarray] | None


def p1_measure(model: Model, images, texts, *, labels=None) -> P1Measure:
    """:func:`p1_departures` with its per-image measurements (for intervals and histograms)."""
    clip = as_model(model)
    label_sets = _labels(images, texts, labels)
    images = _images_list(images)
    if isinstance(images, torch.Tensor):
        raise InputError("p1_departures needs the images themselves (PIL or paths): the "
                         "keep-size departure resizes them")
    images = [load_image(im) for im in images]
    targets = clip.text_embeddings(texts)
    with torch.no_grad():
        original = cosine_scores(clip.encode_image(clip.native_input(images)), targets)
        variants = {name: _departed_scores(clip, images, targets, d) for name, d in DEPARTURE_VARIANTS.items()}
    rows = []
    pred0 = original.argmax(-1)
    drifts, agrees, correct = {}, {}, {}
    for name, (scores, grid) in variants.items():
        drift = (scores.double() - original.double()).abs()
        pred = scores.argmax(-1)
        drifts[name] = drift.numpy()
        agrees[name] = (pred == pred0).numpy()
        row: dict[str, Any] = {
            "variant": name, "last_block_heads": DEPARTURE_VARIANTS[name].heads or clip.heads(),
            "grid": grid, "max_drift": float(drift.max()), "median_drift": float(drift.median()),
            "agreement": float(agrees[name].mean())}
        if label_sets is not None:
            correct[name] = np.array([int(p_) in ls for p_, ls in zip(pred.tolist(), label_sets)])
            row["accuracy"] = float(correct[name].mean())
        row["p1_passed"] = row["max_drift"] <= P1_DRIFT_TOLERANCE and row["agreement"] >= 1.0
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant")
    table.attrs["title"] = f"P1 departures on {len(images)} images, {targets.shape[0]} texts"
    table.attrs["notes"] = ["drift and agreement against model.encode_image on the native pipeline",
                            "P1 criteria: max drift <= 1e-5 and agreement == 1"]
    return P1Measure(table, drifts, agrees, correct if label_sets is not None else None)


def p1_departures(model: Model, images, texts, *, labels=None) -> pd.DataFrame:
    """The published Grad-ECLIP code's departures from the original model, one at a time.

    Rows (:data:`DEPARTURE_VARIANTS`): ``original`` (the model's own forward pass on its
    own pipeline), ``one_head`` (the last block recomputed with one head over the full
    width, native resolution), ``keep_size`` (the keep-size input with interpolated
    positional embeddings and the model's own heads) and ``reference`` (both, and the
    published text normalisation: what Grad-ECLIP's reference mode differentiates).
    Columns: the last block's heads, the grid, max / median |score drift| against
    ``model.encode_image`` on the native pipeline, zero-shot agreement with its top-1,
    zero-shot accuracy (``labels``: per image an index, a prompt or a set of them;
    derived from shapes scenes, where a prediction is right when it names an object of
    the scene), and the P1 verdict (drift <= 1e-5 and agreement == 1).
    :func:`p1_measure` returns the per-image measurements too.
    """
    return p1_measure(model, images, texts, labels=labels).table



# ============================================================================ chapter 3's study


@dataclass
class P1Study:
    """The published code's departures on held-out single-object scenes, at the model's size
    and enlarged ``upscale`` times (a photo larger than the model's input).

    ``measures``: per size (``"native"``, ``"x2"``, ...) what :func:`p1_measure`
    measured; ``table``: per size and variant, the mean |score drift| per scene (mean over the
    prompts), the top-1 agreement with the original model, the zero-shot accuracy and its
    change from the original model's on the same scenes, each with its interval.
    """

    measures: dict[str, P1Measure]
    table: pd.DataFrame
    n: int


def p1_study(model: Model, *, sample: int = 0, n: int = 300, upscale: int = 2) -> P1Study:
    """:class:`P1Study` on ``n`` held-out single-object scenes of ``sample``."""
    scenes = shapes.held_out_scenes(n, 1, sample, size=shapes.world_size(model))
    prompts = shapes.prompts()
    labels = [{prompts.index(f"a {s.objects[0].phrase}")} for s in scenes]
    big = [s.image.resize((s.image.width * upscale, s.image.height * upscale), Image.Resampling.BICUBIC)
           for s in scenes]
    measures = {"native": p1_measure(model, [s.image for s in scenes], prompts, labels=labels),
                f"x{upscale}": p1_measure(model, big, prompts, labels=labels)}
    rows = []
    for size, m in measures.items():
        assert m.correct is not None
        for variant in DEPARTURE_VARIANTS:
            change = paired_difference(m.correct[variant].astype(float), m.correct["original"].astype(float),
                                       seed=sample)
            rows.append({"size": size, "variant": variant, "grid": m.table.loc[variant, "grid"],
                         **bootstrap(m.drifts[variant].mean(1), seed=sample).columns("mean_drift"),
                         "max_drift": float(m.drifts[variant].max()),
                         **bootstrap(m.agrees[variant].astype(float), seed=sample).columns("agreement"),
                         **bootstrap(m.correct[variant].astype(float), seed=sample).columns("accuracy"),
                         **change.columns("accuracy_change"), "n": len(scenes)})
    return P1Study(measures, pd.DataFrame(rows).set_index(["size", "variant"]), len(scenes))


#: A score drift the book calls a departure: a thousandth of the cosine's range, stated before measuring.
DRIFT_MOVES = 1e-3


def p1_conclusions(study: P1Study) -> dict[str, bool]:
    """Chapter 3's claims. At the model's size the keep-size input is the same image (no drift
    beyond round-off) and one head moves the scores (mean drift's interval above
    :data:`DRIFT_MOVES`); on enlarged scenes the keep-size input moves them too, and the
    published forward pass (both departures) changes the top-1 of some scenes (agreement's
    interval below 1) and loses accuracy (the change's interval below 0)."""
    t = study.table
    enlarged = [size for size in t.index.get_level_values("size").unique() if size != "native"]
    out = {"native: keep-size is the same forward pass (max drift <= 1e-5)":
           bool(t.loc[("native", "keep_size"), "max_drift"] <= 1e-5),
           f"native: one head moves the scores (mean drift above {DRIFT_MOVES})":
           bool(t.loc[("native", "one_head"), "mean_drift_low"] > DRIFT_MOVES)}
    for size in enlarged:
        out[f"{size}: keep-size moves the scores (mean drift above {DRIFT_MOVES})"] = \
            bool(t.loc[(size, "keep_size"), "mean_drift_low"] > DRIFT_MOVES)
        out[f"{size}: the published pass changes some top-1 (agreement below 1)"] = \
            bool(t.loc[(size, "reference"), "agreement_high"] < 1)
        out[f"{size}: the published pass loses accuracy (change below 0)"] = \
            bool(t.loc[(size, "reference"), "accuracy_change_high"] < 0)
    return out


def p1_invariants(study: P1Study, heads: int) -> dict[str, bool]:
    """What chapter 3 asserts on every model (``heads``: its last block's): at the model's
    own size the keep-size input is the same forward pass (max drift <= 1e-5); with more
    than one head, the one-head recompute is another model at that size; on enlarged scenes
    the published pass is another model (max drift above 1e-5). How large the drifts and
    the accuracy changes are depends on the weights: :func:`p1_conclusions` states them
    for the book's model."""
    t = study.table
    enlarged = [size for size in t.index.get_level_values("size").unique() if size != "native"]
    out = {"native: keep-size is the same forward pass (max drift <= 1e-5)":
           bool(t.loc[("native", "keep_size"), "max_drift"] <= 1e-5)}
    if heads > 1:
        out[f"native: one head instead of {heads} is another model (max drift > 1e-5)"] = \
            bool(t.loc[("native", "one_head"), "max_drift"] > 1e-5)
    for size in enlarged:
        out[f"{size}: the published pass is another model (max drift > 1e-5)"] = \
            bool(t.loc[(size, "reference"), "max_drift"] > 1e-5)
    return out


