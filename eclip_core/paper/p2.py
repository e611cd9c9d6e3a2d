"""P2, alignment with performance: explanation quality must move with model quality (PAPER.md).

Four tests of it, each a function of a sample so that ``tests/test_resampling.py`` can rerun it
on disjoint samples:

* right against wrong (:func:`p2_study`): localisation on scenes the model gets wrong against
  class-matched scenes it gets right (:func:`p2_table`: the same split on any scenes);
* model randomisation (:func:`cascade_study`, :func:`p2_randomisation`): maps must change when
  the weights are redrawn from the top down;
* data randomisation (:func:`localisation_by_model`): localisation on the trained model and on
  its twin trained on shuffled captions;
* the training series (:func:`series_study`): quality across the embedded model's own training
  run, against the checkpoints' accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import EclipError, InputError
from ..evaluation import evaluate, method_options, zero_shot_predictions
from ..metrics import direction
from ..models import Model
from ..randomisation import cascade
from ..stats import N_BOOT, bootstrap, paired_difference, percentile_interval
from ..world import shapes
from .counterfactual import ground_truth_study

# ----------------------------------------------------------------------------- right vs wrong, on any scenes


def p2_table(model: Model, methods: Sequence[str], scenes, *, texts: Sequence[str] | None = None, steps: int = 16,
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
    result = evaluate(model, list(scenes), methods, texts=texts, steps=steps, seed=seed,
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
        f"deletion AUC: {direction('deletion_auc')}"]
    table.attrs["accuracy"] = accuracy
    return table


def p2_randomisation(model: Model, methods: Sequence[str], images, texts, *, seed: int = 0,
                     rise_masks: int = 500, progress: bool = False) -> pd.DataFrame:
    """P2: the model-randomisation cascade per explainer (rank correlation at each step).

    Columns ``s0:trained``, ``s1:proj+ln_post``, ``s2:block{L-1}``, ..., ``embeddings``:
    the mean Spearman correlation between the trained model's maps and the maps after
    randomising the vision tower down to that step (cumulative, top down, on a copy of
    the model; see :func:`eclip_core.randomisation.randomisation_cascade`). The last row,
    ``(zero-shot agreement)``, is the fraction of images whose top-1 is unchanged: the
    model's performance collapsing. Criterion: the explainer's correlation falls with
    it; a correlation that stays high while the model is randomised fails P2.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    options = {spec: method_options(spec, rise_masks=rise_masks, seed=seed) for spec in methods}
    images = images if hasattr(images, "shape") else [getattr(im, "image", im) for im in images]  # scenes
    results = cascade(model, methods, images, texts, seed=seed, options=options, progress=progress)
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


def p2_study(model: Model, methods: Sequence[str], *, sample: int = 0, pool: int = 6000,
             options: dict[str, dict[str, Any]] | None = None, rise_masks: int = 100) -> P2Study:
    """P2 on the held-out single-object scenes of ``sample``: every scene the model gets wrong
    among ``pool``, each paired with a scene of the same true class that it gets right.

    For each explainer, the map of the true prompt: pointing game on the right and on the
    wrong scenes, and the paired gap (right - wrong) with its interval, overall and for
    wrong colours and wrong shapes separately. A gap above zero means the maps degrade when
    the model fails, as an explanation of the model must (P2).
    """
    prompts = shapes.prompts()
    scenes = shapes.held_out_scenes(pool, 1, sample, size=shapes.world_size(model))
    predicted = zero_shot_predictions(model, [s.image for s in scenes], prompts).tolist()
    accuracy = float(np.mean([prompts[p] == f"a {s.objects[0].phrase}" for p, s in zip(predicted, scenes)]))
    pairs = _matched_pairs(scenes, predicted, prompts, seed=sample)
    if len(pairs) < 2:
        raise EclipError(f"P2 needs at least 2 wrongly predicted scenes with a rightly predicted twin of the "
                         f"same class; {pool} scenes at accuracy {accuracy:.3f} gave {len(pairs)}: "
                         f"enlarge the pool")
    chosen = [scenes[i] for i in pairs["wrong"]] + [scenes[i] for i in pairs["right"]]
    result = evaluate(model, chosen, list(methods), texts=prompts, curves=(),
                      timing=False, options=options, rise_masks=rise_masks, seed=sample)
    n = len(pairs)
    rows = []
    for spec, group in result.per_image.groupby("method", sort=False):
        hits = group["pointing_game"].to_numpy(float)
        wrong, right = hits[:n], hits[n:]
        row: dict[str, Any] = {"method": spec, "pairs": n}
        row.update(bootstrap(right, seed=sample).columns("pointing_right"))
        row.update(bootstrap(wrong, seed=sample).columns("pointing_wrong"))
        row.update(paired_difference(right, wrong, seed=sample).columns("gap"))
        for kind in ("colour", "shape"):
            which = (pairs["kind"] == kind).to_numpy()
            row[f"pairs_{kind}"] = int(which.sum())
            if which.sum() >= 2:
                row.update(paired_difference(right[which], wrong[which], seed=sample).columns(f"gap_{kind}"))
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


def cascade_study(model: Model, methods: Sequence[str], *, samples: Sequence[int] = (0, 1, 2), n_images: int = 32,
                  texts: Sequence[str] | None = None, rise_masks: int = 50) -> pd.DataFrame:
    """The randomisation cascade on ``n_images`` held-out scenes of each sample, the weights
    redrawn with that sample's seed; per explainer and step, the mean Spearman correlation
    of each image's maps with the trained model's, with its interval (images of every
    sample resampled), and the model's own zero-shot agreement."""
    texts = list(texts) if texts is not None else shapes.prompts()[::5]
    options = {spec: method_options(spec, rise_masks=rise_masks, seed=0) for spec in methods}
    per_image: dict[tuple[str, int, str], list[float]] = {}
    agreement: dict[tuple[int, str], list[float]] = {}
    for sample in samples:
        images = [s.image for s in shapes.held_out_scenes(n_images, (1, 2), sample, size=shapes.world_size(model))]
        steps = cascade(model, list(methods), images, texts, seed=sample, options=options)
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
    for name, model in models.items():
        result = evaluate(model, list(scenes), list(methods), curves=(), timing=False, seed=seed,
                          rise_masks=rise_masks)
        for method, group in result.per_image.groupby("method", sort=False):
            for metric, short in (("pointing_game", "pointing"), ("energy_in_mask", "energy")):
                interval = bootstrap(group[metric].to_numpy(), seed=seed)
                rows.setdefault(method, {}).update(interval.columns(f"{short}_{name}"))
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



# ----------------------------------------------------------------------------- the training series


#: The quality measures of a series study; all higher-is-better.
QUALITY = ("pointing_game", "energy_in_mask", "cf_correlation")


@dataclass
class SeriesStudy:
    """Explanation quality on every checkpoint of a training series.

    ``single``: one row per checkpoint, method and single-object scene (``scene``,
    ``right``: the checkpoint's zero-shot top-1 is the true prompt, ``pointing_game``,
    ``energy_in_mask``). ``counterfactual``: one row per checkpoint, method and
    (three-object scene, object) item (``scene``, ``cf_correlation``). ``checkpoints``
    in training order, with their ``steps``.
    """

    single: pd.DataFrame
    counterfactual: pd.DataFrame
    checkpoints: list[str]
    steps: list[int]
    methods: list[str]
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for what, names in (("checkpoint", self.checkpoints), ("method", self.methods)):
            if len(set(names)) != len(names):
                raise InputError(f"each {what} once, please: {list(names)} names one twice")
        expected = {(c, m) for c in self.checkpoints for m in self.methods}
        for what, frame, key in (("single-object", self.single, ["scene"]),
                                 ("multi-object", self.counterfactual, ["scene", "target_object"])):
            if frame.duplicated(["checkpoint", "method", *key]).any():
                raise InputError(f"the {what} rows hold an item twice for one checkpoint and method")
            scenes = frame.groupby(["checkpoint", "method"])["scene"].apply(lambda s: tuple(sorted(s)))
            if set(scenes.index) != expected or scenes.nunique() != 1:
                raise InputError(f"the {what} rows must cover the same scenes for every checkpoint and method")

    def _right(self) -> np.ndarray:
        """(C, n) whether each checkpoint's top-1 is right on each single-object scene."""
        rows = self.single[self.single["method"] == self.methods[0]]
        return np.stack([rows[rows["checkpoint"] == c].sort_values("scene")["right"].to_numpy(np.float64)
                         for c in self.checkpoints])

    def _values(self, column: str) -> np.ndarray:
        """(C, M, n) per-scene mean ``column``, scenes in sorted order."""
        frame = self.single if column != "cf_correlation" else self.counterfactual
        per_scene = frame.groupby(["checkpoint", "method", "scene"])[column].mean()  # sorted index
        return np.stack([np.stack([per_scene.loc[(c, m)].to_numpy(dtype=np.float64) for m in self.methods])
                         for c in self.checkpoints])

    def curves(self) -> pd.DataFrame:
        """One row per checkpoint and method: its step, the checkpoint's accuracy and the
        method's mean quality (:data:`QUALITY`)."""
        rows = []
        accuracy = self.accuracy()
        for column in QUALITY:
            values = self._values(column)
            for c, checkpoint in enumerate(self.checkpoints):
                for m, method in enumerate(self.methods):
                    rows.append({"checkpoint": checkpoint, "step": self.steps[c], "method": method,
                                 "accuracy": accuracy[c], "measure": column, "value": values[c, m].mean()})
        frame = pd.DataFrame(rows)
        return frame.pivot_table(index=["checkpoint", "step", "method", "accuracy"], columns="measure",
                                 values="value", sort=False).reset_index()[
            ["checkpoint", "step", "method", "accuracy", *QUALITY]]

    def accuracy(self) -> np.ndarray:
        """(C,) each checkpoint's zero-shot top-1 on the single-object scenes."""
        right = self._right()
        return right.mean(axis=1)

    def slopes(self, column: str, n_boot: int = N_BOOT, level: float = 0.95) -> pd.DataFrame:
        """Per method: the least-squares slope of mean ``column`` against accuracy across the
        checkpoints, its bootstrap interval (scenes resampled: the single-object scenes, and
        for ``cf_correlation`` the three-object scenes independently), the correlation of
        quality with accuracy, and the verdict."""
        if column not in QUALITY:
            raise InputError(f"column must be one of {QUALITY}, not {column!r}")
        right, values = self._right(), self._values(column)
        acc = right.mean(axis=1)
        if np.ptp(acc) == 0:
            raise InputError("the checkpoints' accuracies are all equal: no slope against accuracy")
        rng = np.random.default_rng(self.seed)
        index_right = rng.integers(0, right.shape[1], size=(n_boot, right.shape[1]))
        index_values = index_right if column != "cf_correlation" else \
            rng.integers(0, values.shape[2], size=(n_boot, values.shape[2]))
        accuracy = right[:, index_right].mean(axis=2)  # (C, B)
        quality = values[:, :, index_values].mean(axis=3)  # (C, M, B)
        estimate = _slope(acc[:, None], values.mean(axis=2))  # (M,)
        replicates = _slope(accuracy[:, None, :], quality)  # (M, B)
        low, high = percentile_interval(replicates, level)
        rows = {}
        for m, method in enumerate(self.methods):
            q = values[:, m].mean(axis=1)
            verdict = "aligned" if low[m] > 0 else "reversed" if high[m] < 0 else "no evidence"
            rows[method] = {"slope": estimate[m], "slope_low": low[m], "slope_high": high[m],
                            "correlation": float(np.corrcoef(acc, q)[0, 1]) if q.std() > 0 else 0.0,  # acc varies
                            "first": q[0], "last": q[-1], "verdict": verdict}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "method"
        table.attrs["n"] = right.shape[1] if column != "cf_correlation" else values.shape[2]
        return table


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``y`` on ``x`` along axis 0 (checkpoints); broadcasts. ``y`` is
    taken from its first value, not its mean (the same slope, since the centred ``x`` sums
    to 0), so that a constant ``y`` has a slope of exactly 0."""
    dx = x - x.mean(axis=0, keepdims=True)
    dy = y - y[:1]
    return (dx * dy).sum(axis=0) / np.maximum((dx * dx).sum(axis=0), 1e-12)


def series_study(checkpoints: Sequence[tuple[str, int, Any]], methods: Sequence[str],
                 single: Sequence[shapes.Scene], multi: Sequence[shapes.Scene], *,
                 rise_masks: int = 100, seed: int = 0, progress: bool = False) -> SeriesStudy:
    """Measure every method on every checkpoint ``(name, step, model)`` (in training order),
    on the same single-object scenes ``single`` (accuracy, pointing game, energy) and
    multi-object scenes ``multi`` (counterfactual correlation). See :class:`SeriesStudy`."""
    checkpoints = list(checkpoints)
    if len(checkpoints) < 2:
        raise InputError("a training series needs at least two checkpoints")
    for what, names in (("checkpoint", [c[0] for c in checkpoints]), ("method", list(methods))):
        if len(set(names)) != len(names):
            raise InputError(f"each {what} once, please: {names} names one twice")
    if any(len(s.objects) != 1 for s in single):
        raise InputError("the accuracy and localisation scenes must hold one object each")
    if not single or not multi:
        raise InputError("a series study needs single-object and multi-object scenes")
    singles, counterfactuals = [], []
    for name, step, model in checkpoints:
        result = evaluate(model, list(single), list(methods), curves=(), timing=False,
                          rise_masks=rise_masks, seed=seed, progress=progress)
        frame = result.per_image[["method", "item", "right", "pointing_game", "energy_in_mask"]]
        singles.append(frame.rename(columns={"item": "scene"}).assign(checkpoint=name, step=step))
        truth = ground_truth_study(model, multi, methods, curves=(), road=False, rise_masks=rise_masks,
                                   seed=seed, progress=progress)
        counterfactuals.append(truth.per_item[["method", "scene", "target_object", "cf_correlation"]]
                               .assign(checkpoint=name, step=step))
    return SeriesStudy(pd.concat(singles, ignore_index=True), pd.concat(counterfactuals, ignore_index=True),
                       [c[0] for c in checkpoints], [int(c[1]) for c in checkpoints],
                       list(result.per_image["method"].drop_duplicates()), seed,
                       notes=[f"{len(single)} single-object scenes, {len(multi)} multi-object scenes, "
                              f"{len(checkpoints)} checkpoints",
                              "slopes: quality per unit of accuracy; 95% bootstrap over scenes"])
