"""The book's comparisons as functions of a sample: run on one held-out sample in a chapter,
and on other, disjoint samples by ``tests/test_resampling.py``.

Each study draws its scenes from the held-out stream ``shapes.EVAL_SEED + sample`` (samples
0, 1, 2, ... are disjoint), measures with the library's metrics, and returns pandas tables
whose intervals are bootstrap 95% intervals with the scenes resampled
(:mod:`eclip_core.stats`). Each study's ``conclusions`` function states, as booleans, the
claims the book makes from it; a claim is an interval statement, never a point estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from . import shapes, trace
from .errors import EclipError
from .evaluation import evaluate, method_options, zero_shot_predictions
from .explainers import explain, parse_spec
from .inputs import unpack
from .metrics import cascade
from .principles import DEPARTURE_VARIANTS, P1Measure, p1_measure
from .stats import Interval, bootstrap, paired_difference, spearman


def held_out(n: int, n_objects: int | tuple[int, ...] = 1, sample: int = 0, *,
             size: int = shapes.IMAGE_SIZE) -> list[shapes.Scene]:
    """``n`` held-out scenes of disjoint sample ``sample`` (0: the book's), rendered
    ``size`` pixels square (:func:`world_size`: the model's own input)."""
    return shapes.eval_set(n, n_objects, seed=shapes.EVAL_SEED + sample, size=size)


def world_size(bundle) -> int:
    """The side at which to render the shapes world for a model: its own input size, so
    that its preprocess leaves the scene (and its masks) as drawn and each patch of the
    grid covers the same pixels of image and mask."""
    model, _, _ = unpack(bundle)
    height, width = trace.image_size(model)
    if height != width:
        raise EclipError(f"the shapes world is square; this model's input is {height}x{width}")
    return height


def _interval_columns(name: str, interval: Interval) -> dict[str, float]:
    return {name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high}


# ----------------------------------------------------------------------------- P1: the departures


@dataclass
class P1Study:
    """The published code's departures on held-out single-object scenes, at the model's size
    and enlarged ``upscale`` times (a photo larger than the model's input).

    ``measures``: per size (``"native"``, ``"x2"``, ...) what :func:`~eclip_core.principles.p1_measure`
    measured; ``table``: per size and variant, the mean |score drift| per scene (mean over the
    prompts), the top-1 agreement with the original model, the zero-shot accuracy and its
    change from the original model's on the same scenes, each with its interval.
    """

    measures: dict[str, P1Measure]
    table: pd.DataFrame
    n: int


def p1_study(bundle, *, sample: int = 0, n: int = 300, upscale: int = 2) -> P1Study:
    """:class:`P1Study` on ``n`` held-out single-object scenes of ``sample``."""
    scenes = held_out(n, 1, sample, size=world_size(bundle))
    prompts = shapes.prompts()
    labels = [{prompts.index(f"a {s.objects[0].phrase}")} for s in scenes]
    big = [s.image.resize((s.image.width * upscale, s.image.height * upscale), Image.Resampling.BICUBIC)
           for s in scenes]
    measures = {"native": p1_measure(bundle, [s.image for s in scenes], prompts, labels=labels),
                f"x{upscale}": p1_measure(bundle, big, prompts, labels=labels)}
    rows = []
    for size, m in measures.items():
        assert m.correct is not None
        for variant in DEPARTURE_VARIANTS:
            change = paired_difference(m.correct[variant].astype(float), m.correct["original"].astype(float),
                                       seed=sample)
            rows.append({"size": size, "variant": variant, "grid": m.table.loc[variant, "grid"],
                         **_interval_columns("mean_drift", bootstrap(m.drifts[variant].mean(1), seed=sample)),
                         "max_drift": float(m.drifts[variant].max()),
                         **_interval_columns("agreement", bootstrap(m.agrees[variant].astype(float), seed=sample)),
                         **_interval_columns("accuracy", bootstrap(m.correct[variant].astype(float), seed=sample)),
                         **_interval_columns("accuracy_change", change), "n": len(scenes)})
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


# ----------------------------------------------------------------------------- P2: right vs wrong


@dataclass
class P2Study:
    """Localisation on scenes the model gets wrong against class-matched scenes it gets right.

    ``pairs``: one row per matched pair (the wrong scene, its right twin of the same true
    colour and shape, and how the prediction was wrong); ``per_image``: the evaluation's
    rows; ``table``: per explainer, pointing on right and wrong scenes and the gap
    right - wrong with its interval (pairs resampled), overall and by kind of error.
    """

    pairs: pd.DataFrame
    per_image: pd.DataFrame
    table: pd.DataFrame
    pool: int
    accuracy: float


def _matched_pairs(pool: list[shapes.Scene], predicted: list[int], prompts: list[str],
                   seed: int) -> pd.DataFrame:
    """Every wrongly predicted scene with a rightly predicted scene of the same true class."""
    labels = shapes.prompt_labels()
    truth = [prompts.index(f"a {s.objects[0].phrase}") for s in pool]
    right_by_class: dict[int, list[int]] = {}
    for i, (t, p) in enumerate(zip(truth, predicted)):
        if t == p:
            right_by_class.setdefault(t, []).append(i)
    rng = np.random.default_rng(seed)
    for members in right_by_class.values():
        rng.shuffle(members)
    rows = []
    for i, (t, p) in enumerate(zip(truth, predicted)):
        if t == p or not right_by_class.get(t):
            continue
        kind = "colour" if labels[p][0] != labels[t][0] else "shape"
        rows.append({"wrong": i, "right": right_by_class[t].pop(), "true": prompts[t],
                     "predicted": prompts[p], "kind": kind})
    return pd.DataFrame(rows)


def p2_study(bundle, methods: Sequence[str], *, sample: int = 0, pool: int = 6000,
             options: dict[str, dict[str, Any]] | None = None, rise_masks: int = 100) -> P2Study:
    """P2 on the held-out single-object scenes of ``sample``: every scene the model gets wrong
    among ``pool``, each paired with a scene of the same true class that it gets right.

    For each explainer, the map of the true prompt: pointing game on the right and on the
    wrong scenes, and the paired gap (right - wrong) with its interval, overall and for
    wrong colours and wrong shapes separately. A gap above zero means the maps degrade when
    the model fails, as an explanation of the model must (P2).
    """
    model, preprocess, tokenizer = unpack(bundle)
    prompts = shapes.prompts()
    scenes = held_out(pool, 1, sample, size=world_size(bundle))
    predicted = zero_shot_predictions((model, preprocess, tokenizer), [s.image for s in scenes], prompts).tolist()
    accuracy = float(np.mean([prompts[p] == f"a {s.objects[0].phrase}" for p, s in zip(predicted, scenes)]))
    pairs = _matched_pairs(scenes, predicted, prompts, seed=sample)
    if len(pairs) < 2:
        raise EclipError(f"P2 needs at least 2 wrongly predicted scenes with a rightly predicted twin of the "
                         f"same class; {pool} scenes at accuracy {accuracy:.3f} gave {len(pairs)}: "
                         f"enlarge the pool")
    chosen = [scenes[i] for i in pairs["wrong"]] + [scenes[i] for i in pairs["right"]]
    result = evaluate((model, preprocess, tokenizer), chosen, list(methods), texts=prompts, curves=(),
                      timing=False, options=options, rise_masks=rise_masks, seed=sample)
    n = len(pairs)
    rows = []
    for spec, group in result.per_image.groupby("method", sort=False):
        hits = group["pointing_game"].to_numpy(float)
        wrong, right = hits[:n], hits[n:]
        row: dict[str, Any] = {"method": spec, "pairs": n}
        row.update(_interval_columns("pointing_right", bootstrap(right, seed=sample)))
        row.update(_interval_columns("pointing_wrong", bootstrap(wrong, seed=sample)))
        row.update(_interval_columns("gap", paired_difference(right, wrong, seed=sample)))
        for kind in ("colour", "shape"):
            which = (pairs["kind"] == kind).to_numpy()
            row[f"pairs_{kind}"] = int(which.sum())
            if which.sum() >= 2:
                row.update(_interval_columns(f"gap_{kind}", paired_difference(right[which], wrong[which],
                                                                              seed=sample)))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    table.attrs["title"] = (f"P2: pointing on {n} wrongly predicted scenes and {n} class-matched right ones "
                            f"(sample {sample}; pool of {pool}, accuracy {accuracy:.3f})")
    table.attrs["notes"] = ["gap = pointing_right - pointing_wrong over matched pairs; [low, high]: "
                            "bootstrap 95% interval, pairs resampled",
                            "gap > 0: the maps degrade when the model fails (aligned with performance)"]
    return P2Study(pairs, result.per_image, table, pool, accuracy)


def p2_verdicts(table: pd.DataFrame) -> dict[str, str]:
    """Per explainer: ``"aligned"`` (the gap's interval lies above 0), ``"reversed"`` (below 0)
    or ``"no evidence"`` (the interval holds 0)."""
    return {method: "aligned" if row["gap_low"] > 0 else "reversed" if row["gap_high"] < 0 else "no evidence"
            for method, row in table.iterrows()}


#: What chapter 5 states from :func:`p2_study`, each verdict checked on every disjoint sample
#: by ``tests/test_resampling.py``; the explainers not listed are reported with their spread.
P2_STATED = {"gae": "aligned", "legrad": "aligned", "grad_eclip:reference": "no evidence",
             "rollout": "no evidence", "direct_contributions": "no evidence", "maskclip": "no evidence",
             "clip_surgery": "no evidence", "edges": "no evidence"}


def p2_conclusions(study: P2Study) -> dict[str, bool]:
    """Each stated verdict (:data:`P2_STATED`) for the explainers the study measured."""
    verdicts = p2_verdicts(study.table)
    return {f"{method}: {verdict}": verdicts[method] == verdict for method, verdict in P2_STATED.items()
            if method in verdicts}


# ----------------------------------------------------------------------------- randomisation


def cascade_study(bundle, methods: Sequence[str], *, samples: Sequence[int] = (0, 1, 2), n_images: int = 32,
                  texts: Sequence[str] | None = None, rise_masks: int = 50) -> pd.DataFrame:
    """The randomisation cascade on ``n_images`` held-out scenes of each sample, the weights
    redrawn with that sample's seed; per explainer and step, the mean Spearman correlation
    of each image's maps with the trained model's, with its interval (images of every
    sample resampled), and the model's own zero-shot agreement."""
    texts = list(texts) if texts is not None else shapes.prompts()[::5]
    options = {spec: method_options(parse_spec(spec), rise_masks=rise_masks, seed=0) for spec in methods}
    per_image: dict[tuple[str, int, str], list[float]] = {}
    agreement: dict[tuple[int, str], list[float]] = {}
    for sample in samples:
        images = [s.image for s in held_out(n_images, (1, 2), sample, size=world_size(bundle))]
        steps = cascade(bundle, list(methods), images, texts, seed=sample, options=options)
        for spec, series in steps.items():
            for record in series:
                per_image.setdefault((spec, record.step, record.name), []).extend(record.per_image)
                agreement.setdefault((record.step, record.name), []).append(record.agreement)
    rows = []
    for (spec, step, name), values in per_image.items():
        interval = bootstrap(values, seed=step)
        rows.append({"method": spec, "step": step, "randomised": name, "spearman": interval.estimate,
                     "low": interval.low, "high": interval.high, "n": interval.n,
                     "agreement": float(np.mean(agreement[(step, name)]))})
    table = pd.DataFrame(rows)
    table.attrs["title"] = (f"Randomisation cascade: Spearman correlation with the trained maps "
                            f"({n_images} images x {len(samples)} samples, {len(texts)} texts)")
    return table


#: What chapter 5 states from :func:`cascade_study` (checked on disjoint samples by
#: ``tests/test_resampling.py``): after the projection and the final norm are randomised the
#: model's zero-shot agreement with itself collapses, so maps that explain it must change.
CASCADE_DECORRELATED = ("grad_eclip", "grad_eclip:reference", "legrad", "gradcam")


def cascade_conclusions(table: pd.DataFrame) -> dict[str, bool]:
    """The claims chapter 5 makes from the cascade, as booleans (intervals, not points):
    the control's maps never change; rollout's maps still correlate with the trained model's
    once every weight is random; the listed gradient explainers decorrelate (interval below
    0.5) at the first step."""
    def at(method: str, step: int) -> pd.Series:
        return table[(table["method"] == method) & (table["step"] == step)].iloc[0]

    last = int(table["step"].max())
    out: dict[str, bool] = {}
    methods = set(table["method"])
    if "edges" in methods:
        out["edges: unchanged at every step"] = bool((table.loc[table["method"] == "edges", "low"] > 0.99).all())
    if "rollout" in methods:
        out["rollout: still correlated with every weight random"] = at("rollout", last)["low"] > 0
    for method in CASCADE_DECORRELATED:
        if method in methods:
            out[f"{method}: decorrelated once the head is random"] = at(method, 1)["high"] < 0.5
    return out


def localisation_by_model(models: dict[str, Any], scenes: Sequence[shapes.Scene], methods: Sequence[str], *,
                          seed: int = 0, rise_masks: int = 100) -> pd.DataFrame:
    """The data randomisation test (Adebayo et al., 2018) as a table: every explainer's
    localisation of each scene's true prompt on each model (e.g. the trained one and its
    shuffled-caption twin). One row per method; per model ``name``, the columns
    ``"pointing_{name}"`` and ``"energy_{name}"`` (pointing game, energy in mask: the mean over
    the scenes) with ``_low`` and ``_high``, their 95% bootstrap interval (scenes resampled)."""
    if not models:
        raise EclipError("localisation_by_model needs at least one model")
    rows: dict[str, dict[str, float]] = {}
    for name, bundle in models.items():
        result = evaluate(bundle, list(scenes), list(methods), curves=(), timing=False, seed=seed,
                          rise_masks=rise_masks)
        for method, group in result.per_image.groupby("method", sort=False):
            for metric, short in (("pointing_game", "pointing"), ("energy_in_mask", "energy")):
                interval = bootstrap(group[metric].to_numpy(), seed=seed)
                rows.setdefault(method, {}).update(_interval_columns(f"{short}_{name}", interval))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    table.attrs["n"] = len(scenes)
    return table


def above_chance(table: pd.DataFrame, chance: float, model: str) -> list[str]:
    """The methods of a :func:`localisation_by_model` table whose pointing game or energy in
    mask on ``model`` is above ``chance`` with confidence (its interval's lower end above it)."""
    columns = [f"pointing_{model}_low", f"energy_{model}_low"]
    missing = [c for c in columns if c not in table]
    if missing:
        raise EclipError(f"no model {model!r} in this table (columns {missing} missing)")
    return [m for m in table.index if (table.loc[m, columns] > chance).any()]


# ----------------------------------------------------------------------------- helpers for the book


def zero_fraction(maps: torch.Tensor) -> float:
    """Fraction of exact zeros in a batch of maps (ReLU maps leave ties that a deletion order must break)."""
    return float((maps == 0).double().mean())


# ----------------------------------------------------------------------------- misalignment


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


def misalignment_study(bundle, *, sample: int = 0, n: int = 240, steps: int = 16, n_road: int = 60,
                       protocols: Sequence[str] = ("ours", "published", "road")) -> MisalignmentStudy:
    """Grad-ECLIP in both modes on ``n`` held-out single-object scenes of ``sample``: the
    maps' rank correlation, and each metric's published - faithful difference per protocol
    (ROAD, whose imputation costs most, on the first ``n_road`` scenes)."""
    scenes = held_out(n, 1, sample, size=world_size(bundle))
    specs = ["grad_eclip", "grad_eclip:reference"]
    frames = []
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name in protocols:
        chosen = scenes[:n_road] if name == "road" else scenes
        settings = PROTOCOLS[name]
        result = evaluate(bundle, chosen, specs, steps=steps, seed=sample, timing=False,
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
                     "published": published.mean(), **_interval_columns("difference", interval),
                     "n": interval.n})
    maps_f = explain(bundle, [s.image for s in scenes], [[f"a {s.objects[0].phrase}"] for s in scenes],
                     "grad_eclip").maps[:, 0]
    maps_r = explain(bundle, [s.image for s in scenes], [[f"a {s.objects[0].phrase}"] for s in scenes],
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


def photo_study(bundle, photos: Sequence[Any], *, deletion: bool = True, steps: int = 16,
                seed: int = 0) -> PhotoStudy:
    """:class:`PhotoStudy` of ``photos`` (:class:`~eclip_core.photos.Photo`): each explained
    at the model's input (faithful) and at its keep-size input through the published
    forward pass (reference), as the published code explains photographs."""
    from .inputs import native_batch, to_model_input
    from .maps import upsample
    from .metrics.faithfulness import perturbation_curves
    from .photos import photo_texts

    model, preprocess, _ = unpack(bundle)
    texts, own = photo_texts(bundle, photos)
    faithful, reference, rows = [], [], []
    seen_maps: list[torch.Tensor] = []    # per (photo, prompt): faithful map on the model's input
    placed_maps: list[torch.Tensor] = []  # the same for the published (keep-size) map
    for photo, prompts in zip(photos, texts):
        f = explain(bundle, [photo.image], [prompts], "grad_eclip")
        r = explain(bundle, [photo.image], [prompts], "grad_eclip", "reference")
        placed = to_model_input(r.maps[0].double(), photo.image.size, preprocess)
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
        images = native_batch([photo.image for photo, prompts in zip(photos, texts) for _ in prompts], preprocess)
        index = [distinct.index(t) for prompts in texts for t in prompts]
        for column, maps in (("deletion_faithful", seen_maps), ("deletion_published", placed_maps)):
            curves = perturbation_curves(bundle, images, maps, distinct, index, kind="deletion", steps=steps,
                                         seed=seed, ties="random")
            table[column] = [c.auc_score for c in curves]
            table[f"{column}_start"] = [float(c.scores[0]) for c in curves]
    return PhotoStudy(table.set_index(["photo", "prompt"]), faithful, reference, texts, own)
