"""Checks of the paper's two principles (PAPER.md), as measurements with pass criteria.

**P1 -- the original model.** The computation an explanation differentiates must be the
deployed model's own forward pass and must reproduce its output.
:func:`p1_check` compares the scores an explainer differentiated
(``Explanation.scores``) with the original model's scores computed here,
independently, with ``model.encode_image(preprocess(image))`` and ``model.encode_text``.
Pass: max |drift| <= 1e-5 and zero-shot agreement == 1.0.
:func:`p1_departures` measures the published Grad-ECLIP code's two departures (one head
in the last block; keep-size resolution with interpolated positional embeddings)
separately and together (= its reference mode).

**P2 -- alignment with performance.** Explanation quality must move with model quality.
:func:`p2_table` splits localisation (pointing game) and deletion AUC by whether the
model's zero-shot prediction was right or wrong; :func:`p2_randomisation` summarises the
model-randomisation cascade (Adebayo et al. 2018). Criteria: an explainer aligned with
performance localises *less* well when the model is wrong (``pointing_gap`` > 0), and its
maps decorrelate from the trained model's once the top of the model is randomised
(Spearman well below 1 from step 1 on); maps that stay "good" when the model is wrong
or randomised explain something else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import shapes, trace
from .departures import FAITHFUL, PUBLISHED, Departures
from .errors import InputError
from .evaluation import evaluate, method_options
from .explainers import all_specs, explain, parse_spec
from .explainers.base import cosine_scores
from .inputs import (
    as_list,
    check_image_tensor,
    load_image,
    model_dtype_device,
    native_batch,
    prepare_images,
    text_targets,
    unpack,
)
from .metrics import cascade

__all__ = ["P1Report", "P1_DRIFT_TOLERANCE", "SCORE_ONLY_OPTIONS", "certificates", "original_scores", "p1_check",
           "p1_departures", "P1Measure", "p1_measure", "p2_randomisation", "p2_table"]

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


def original_scores(bundle, images, texts) -> torch.Tensor:
    """(B, K) cosines of the original model on its own pipeline, from ``encode_image``/``encode_text``.

    Independent of every explainer: PIL images go through the model's preprocess; a
    tensor must already be the model's native input.
    """
    model, preprocess, tokenizer = unpack(bundle)
    dtype, device = model_dtype_device(model)
    images = _images_list(images)
    if isinstance(images, torch.Tensor):
        x = check_image_tensor(images[None] if images.ndim == 3 else images)
        size = trace.image_size(model)
        if tuple(x.shape[-2:]) != size:
            raise InputError(f"P1 compares with the original pipeline ({size[0]}x{size[1]}); a "
                             f"{tuple(x.shape[-2:])} tensor is not it: pass the PIL images")
    else:
        if preprocess is None:
            raise InputError("PIL images need the model's preprocess")
        x = native_batch(images, preprocess)
    with torch.no_grad():
        f = F.normalize(model.encode_image(x.to(device, dtype)), dim=-1)
        if isinstance(texts, torch.Tensor):
            t = F.normalize(texts.to(device, f.dtype), dim=-1)
        else:
            if tokenizer is None:
                raise InputError("strings need the model's tokenizer")
            texts = [texts] if isinstance(texts, str) else list(texts)
            t = F.normalize(model.encode_text(tokenizer(texts).to(device)), dim=-1)
    return f @ t.T


def p1_check(bundle, method: str, images, texts, *, mode: str = "faithful", **options: Any) -> P1Report:
    """P1 for ``method``: does the forward pass it differentiated reproduce the original model?

    The explainer is run through :func:`eclip_core.explain` (``mode``, ``options``); its
    ``Explanation.scores`` are compared with :func:`original_scores`. Pass criteria:
    max |drift| <= 1e-5 and zero-shot agreement (argmax over the K texts) == 1.0.
    """
    images = _images_list(images)
    e = explain(bundle, images, texts, method=method, mode=mode, **options)
    return _p1_report(method, mode, e.scores, original_scores(bundle, images, texts))


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


def certificates(bundle, images, texts, *, specs: Sequence[str] | None = None, rise_masks: int = 50,
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
    model = unpack(bundle)[0]
    images = _images_list(images)
    original = original_scores(bundle, images, texts).double()
    rows, words = [], {}
    for spec in specs if specs is not None else [str(s) for s in all_specs()]:
        name, mode = parse_spec(spec)
        options = method_options(spec, rise_masks=rise_masks, seed=seed)
        if not full_maps:
            options.update(SCORE_ONLY_OPTIONS.get(name, {}))
        e = explain(bundle, images, texts, name, mode, **options)
        report = _p1_report(name, mode, e.scores, original)
        certified = original if e.scores_original is None else e.scores_original.double()
        words[str(spec)] = e.describe(model)
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


def _departed_scores(bundle, images: list[Any], targets: torch.Tensor,
                     departures: Departures) -> tuple[torch.Tensor, str]:
    """Scores of the forward pass with ``departures`` (keep-size inputs traced per distinct
    size), and the patch grid(s) it used."""
    model, preprocess, _ = bundle
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.size if departures.keep_size else (0, 0), []).append(i)
    scores: list[torch.Tensor | None] = [None] * len(images)
    grids = set()
    for idx in groups.values():
        x, _ = prepare_images(model, preprocess, [images[i] for i in idx], departures)
        if departures.changes_forward:
            tr = trace.trace_vision(model, x, departures, record="last")
            assert tr.grid is not None
            embedding, grid = tr.embedding, tr.grid
        else:  # the original is the model's own forward pass, not a recomputation of it
            embedding, grid = model.encode_image(x), trace.grid_size(model)
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


def p1_measure(bundle, images, texts, *, labels=None) -> P1Measure:
    """:func:`p1_departures` with its per-image measurements (for intervals and histograms)."""
    model, preprocess, tokenizer = unpack(bundle)
    label_sets = _labels(images, texts, labels)
    images = _images_list(images)
    if isinstance(images, torch.Tensor):
        raise InputError("p1_departures needs the images themselves (PIL or paths): the "
                         "keep-size departure resizes them")
    images = [load_image(im) for im in images]
    targets = text_targets(model, tokenizer, texts)
    native, _ = prepare_images(model, preprocess, images)
    with torch.no_grad():
        original = cosine_scores(model.encode_image(native), targets)
        variants = {name: _departed_scores((model, preprocess, tokenizer), images, targets, d)
                    for name, d in DEPARTURE_VARIANTS.items()}
    rows = []
    pred0 = original.argmax(-1)
    drifts, agrees, correct = {}, {}, {}
    for name, (scores, grid) in variants.items():
        drift = (scores.double() - original.double()).abs()
        pred = scores.argmax(-1)
        drifts[name] = drift.numpy()
        agrees[name] = (pred == pred0).numpy()
        row: dict[str, Any] = {
            "variant": name, "last_block_heads": DEPARTURE_VARIANTS[name].heads or trace.heads(model),
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


def p1_departures(bundle, images, texts, *, labels=None) -> pd.DataFrame:
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
    return p1_measure(bundle, images, texts, labels=labels).table


# ============================================================================ P2


def p2_table(bundle, methods: Sequence[str], scenes, *, texts: Sequence[str] | None = None, steps: int = 16,
             rise_masks: int = 500, seed: int = 0, batch_size: int = 50,
             progress: bool = False) -> pd.DataFrame:
    """P2: localisation and deletion split by the model's zero-shot correctness.

    For each scene the target is its first object's prompt (the true prompt) among
    ``texts`` (default: every shapes prompt) and the original model's prediction is the
    top-1 over ``texts``; a prediction is *right* when it is the target (use
    single-object scenes). Per explainer (``"name"`` or
    ``"name:reference"``), on the target's map: pointing-game hit rate and deletion AUC
    (score, uniform baseline, ours protocol) on right and on wrong predictions.

    ``pointing_wrong`` is how often the explainer still "localises" the named object
    when the model got the scene wrong; ``pointing_gap = pointing_right -
    pointing_wrong``. Criterion: an explainer aligned with the model's performance has
    ``pointing_gap`` > 0 (its maps degrade when the model fails); a gap near 0 (maps
    equally good either way) does not reflect the model. Deletion AUC (lower is better)
    is reported for both splits as context, not as a criterion: on wrong predictions
    the target's score starts lower, so its AUC is lower whatever the map. NaN where a
    split is empty.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    result = evaluate(bundle, list(scenes), methods, texts=texts, steps=steps, seed=seed,
                      rise_masks=rise_masks, batch_size=batch_size, curves=("deletion",), timing=False,
                      progress=progress)
    rows = []
    for spec, group in result.per_image.groupby("method", sort=False):
        right = (group["predicted"] == group["target"]).to_numpy(bool)

        def split(column: str, which: np.ndarray, group: pd.DataFrame = group) -> float:
            values = group[column].to_numpy(float)[which]
            return float(values.mean()) if len(values) else float("nan")

        pr, pw = split("pointing_game", right), split("pointing_game", ~right)
        n_right, n_wrong = int(right.sum()), int((~right).sum())
        gap_se = math.sqrt(pr * (1 - pr) / n_right + pw * (1 - pw) / n_wrong) \
            if n_right and n_wrong else float("nan")
        rows.append({"method": spec, "n_right": n_right, "n_wrong": n_wrong,
                     "pointing_right": pr, "pointing_wrong": pw, "pointing_gap": pr - pw,
                     "gap_se": gap_se, "deletion_right": split("deletion_auc", right),
                     "deletion_wrong": split("deletion_auc", ~right)})
    table = pd.DataFrame(rows).set_index("method")
    first = result.per_image[result.per_image["method"] == result.per_image["method"].iloc[0]]
    accuracy = float((first["predicted"] == first["target"]).mean())
    table.attrs["title"] = (f"P2: explanation quality split by zero-shot correctness "
                            f"({result.per_image['item'].nunique()} scenes, accuracy {accuracy:.3f})")
    table.attrs["notes"] = [
        "target = the true prompt; right = the model's top-1 is the target",
        "pointing_gap = pointing_right - pointing_wrong: > 0 means the maps degrade when the "
        "model fails (aligned with performance)",
        "gap_se: standard error of the gap (two independent proportions); a gap within two of "
        "them of 0 is no evidence either way",
        "deletion AUC: lower is better"]
    table.attrs["accuracy"] = accuracy
    return table


def p2_randomisation(bundle, methods: Sequence[str], images, texts, *, seed: int = 0,
                     rise_masks: int = 500, progress: bool = False) -> pd.DataFrame:
    """P2: the model-randomisation cascade per explainer (rank correlation at each step).

    Columns ``s0:trained``, ``s1:proj+ln_post``, ``s2:block{L-1}``, ..., ``embeddings``:
    the mean Spearman correlation between the trained model's maps and the maps after
    randomising the vision tower down to that step (cumulative, top down, on a copy of
    the model; see :func:`eclip_core.metrics.randomisation_cascade`). The last row,
    ``(zero-shot agreement)``, is the fraction of images whose top-1 is unchanged: the
    model's performance collapsing. Criterion: the explainer's correlation falls with
    it; a correlation that stays high while the model is randomised fails P2.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    options = {spec: method_options(spec, rise_masks=rise_masks, seed=seed) for spec in methods}
    images = _images_list(images)
    results = cascade(bundle, methods, images, texts, seed=seed, options=options, progress=progress)
    rows = {spec: {f"s{s.step}:{s.name}": s.spearman for s in steps} for spec, steps in results.items()}
    first = next(iter(results.values()))
    rows["(zero-shot agreement)"] = {f"s{s.step}:{s.name}": s.agreement for s in first}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    table.attrs["title"] = (f"P2: randomisation cascade, Spearman rank correlation with the trained maps "
                            f"({len(images)} images, {len(texts)} texts)")
    table.attrs["notes"] = ["cumulative, top down: s1 randomises proj + ln_post, then one block per "
                            "step, finally the embeddings",
                            "step 0 is 1 by construction; lower afterwards is better"]
    table.attrs["pearson"] = {spec: [s.pearson for s in steps] for spec, steps in results.items()}
    return table
