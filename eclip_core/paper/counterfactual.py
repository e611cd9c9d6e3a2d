"""Ground truth by construction: what each object of a scene is worth to the model's score.

A shapes scene is drawn from a description (:class:`~eclip_core.world.shapes.Drawing`), so it
can be drawn again with any of its objects removed, the background as it was beneath
them (:func:`~eclip_core.world.shapes.edit`). Every subset of a scene's objects is removed once
(2^n scenes for n objects; :func:`truth`), in distribution, with no pasted colour, blur or
imputation. From those scores, for each prompt:

* each object's **Shapley value** (:func:`shapley_values`): its contribution to the score
  averaged over the orders in which the objects could be put back -- the truth every map is
  held against, since objects that stand in for each other share it, where
* the **single-removal effect** (the drop when the object alone is removed) sees nothing of
  either.

For every explanation of a prompt this module compares the share of the map's mass on each
object (:func:`~eclip_core.metrics.energy_in_mask` of its visible mask) with them:

* ``shapley_correlation``: Spearman correlation, over the scene's objects, of mass share and
  Shapley value (a map that ranks nothing, with equal shares, correlates 0);
* ``cf_correlation``: the same with the single-removal effects;
* ``cf_top``: whether the object with the largest share has the largest single-removal effect;
* ``cf_regret``: the counterfactual deletion curve -- remove the objects in the order
  the map ranks them, scoring the scene after each removal -- its area (trapezoid over
  the removed fraction of objects, lower is better) minus the area of the best order
  (objects with equal shares: the mean over their orders, so a map that ranks nothing
  has a random order's regret; a random order's is ``cf_regret_random``);
* ``contrast``: the map's mean on the named objects minus its mean on the background, in the
  map's own units (what P2's shuffled-model test reads, :mod:`eclip_core.paper.p2`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..evaluation import Item, evaluate, zero_shot_scores
from ..metrics import declare, direction, energy_in_mask, higher_is_better, perturbation_curves, upsample
from ..models import Model, as_model
from ..stats import Interval, bootstrap, bootstrap_replicates, percentile_interval, spearman
from ..world import shapes

#: The perturbation metrics :meth:`GroundTruthStudy.ranks` sets against the truth: name -> column.
RANKED_METRICS = {"deletion": "deletion_auc", "insertion": "insertion_auc", "ROAD": "road_deletion_auc"}

# The measures of this module, each with its direction (read by every ranking and sign below).
declare("cf_correlation", "higher", "rank correlation of the map's share per object with its true removal effect")
declare("shapley_correlation", "higher", "rank correlation of the map's share per object with its Shapley value")
declare("cf_top", "higher", "the map's largest share is on the object whose removal drops the score most")
declare("cf_regret", "lower", "area lost by removing objects in the map's order rather than the best one")
declare("cf_regret_random", "lower", "the same for a random order")
declare("road_deletion_auc", "lower", "deletion AUC with ROAD's noisy linear imputation", "perturbation_curves")
declare("contrast", "higher", "the map's mean on the named objects minus its mean on the background, in its units")


def removal_scores(model: Model, scene: shapes.Scene, texts: Sequence[str]) -> dict[frozenset[int], np.ndarray]:
    """The original model's cosine with each text, for the scene with every subset of its
    objects removed: ``{removed: (K,) scores}``, ``frozenset()`` being the scene itself."""
    return removal_scores_many(model, [scene], [texts])[0]


def removal_scores_many(model: Model, scenes: Sequence[shapes.Scene], texts: Sequence[Sequence[str]],
                        batch_size: int = 256) -> list[dict[frozenset[int], np.ndarray]]:
    """:func:`removal_scores` for many scenes, each with its own texts, all removals of all
    scenes going through the model in batches of ``batch_size``."""
    if len(scenes) != len(texts):
        raise InputError(f"{len(texts)} lists of texts for {len(scenes)} scenes")
    subsets: list[tuple[int, frozenset[int]]] = []
    images = []
    for s, scene in enumerate(scenes):
        n = len(scene.objects)
        for size in range(n + 1):
            for removed in itertools.combinations(range(n), size):
                subsets.append((s, frozenset(removed)))
                images.append(shapes.edit(scene, remove=removed).image if removed else scene.image)
    distinct = list(dict.fromkeys(t for per in texts for t in per))
    scores = torch.cat([zero_shot_scores(model, images[i:i + batch_size], distinct)
                        for i in range(0, len(images), batch_size)]).double().cpu().numpy()
    columns = [[distinct.index(t) for t in per] for per in texts]
    out: list[dict[frozenset[int], np.ndarray]] = [{} for _ in scenes]
    for (s, subset), row in zip(subsets, scores):
        out[s][subset] = row[columns[s]]
    return out


def true_effects(scores: dict[frozenset[int], np.ndarray], n_objects: int) -> np.ndarray:
    """(n, K) the drop of each text's score when object ``i`` alone is removed."""
    full = scores[frozenset()]
    return np.stack([full - scores[frozenset({i})] for i in range(n_objects)])


def shapley_values(scores: dict[frozenset[int], np.ndarray], n_objects: int, k: int = 0) -> np.ndarray:
    """(n,) each object's Shapley value for text ``k``'s score: its marginal contribution (the
    score with it minus without it, the others of a coalition present and the rest removed),
    averaged over the coalitions with the Shapley weights |S|! (n - |S| - 1)! / n!. They sum to
    the score of the scene minus that of its background alone, and share the credit of objects
    that stand in for each other -- where a single removal sees no effect of either."""
    everything = frozenset(range(n_objects))

    def value(present: frozenset[int]) -> float:
        return float(scores[everything - present][k])

    phi = np.zeros(n_objects)
    for o in range(n_objects):
        others = [i for i in range(n_objects) if i != o]
        for size in range(n_objects):
            weight = math.factorial(size) * math.factorial(n_objects - size - 1) / math.factorial(n_objects)
            for coalition in itertools.combinations(others, size):
                present = frozenset(coalition)
                phi[o] += weight * (value(present | {o}) - value(present))
    return phi


def removal_curve(scores: dict[frozenset[int], np.ndarray], order: Sequence[int], k: int = 0) -> np.ndarray:
    """(n + 1,) text ``k``'s score as the objects are removed one by one in ``order``."""
    removed: set[int] = set()
    points = [scores[frozenset()][k]]
    for i in order:
        removed.add(int(i))
        points.append(scores[frozenset(removed)][k])
    return np.asarray(points)


def curve_area(points: np.ndarray) -> float:
    """Trapezoid area under a curve sampled at evenly spaced fractions 0..1."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 2:
        raise InputError("a curve needs at least two points")
    return float(np.trapezoid(points, np.linspace(0, 1, len(points))))


def share_orders(shares: np.ndarray, decimals: int = 12) -> list[tuple[int, ...]]:
    """Every removal order the map supports: objects by decreasing share, equal shares (to
    ``decimals``) in every order among themselves."""
    rounded = np.round(np.asarray(shares, dtype=np.float64), decimals)
    return [order for order in itertools.permutations(range(len(rounded)))
            if all(rounded[a] >= rounded[b] for a, b in zip(order, order[1:]))]


def item_measures(shares: np.ndarray, effects: np.ndarray,
                  scores: dict[frozenset[int], np.ndarray], k: int) -> dict[str, float]:
    """The counterfactual measures of one map (``shares``, one per object) of text ``k``."""
    shares, effects = np.asarray(shares, dtype=np.float64), np.asarray(effects, dtype=np.float64)
    n = len(shares)
    areas = {order: curve_area(removal_curve(scores, order, k)) for order in itertools.permutations(range(n))}
    best = min(areas.values())
    mine = float(np.mean([areas[order] for order in share_orders(shares)]))  # ties: their mean
    top = bool(shares.max() > shares.min() and np.argmax(shares) == np.argmax(effects))
    return {"cf_correlation": float(spearman(torch.from_numpy(shares), torch.from_numpy(effects))),
            "cf_top": float(top), "cf_regret": mine - best,
            "cf_regret_random": float(np.mean(list(areas.values()))) - best}


@dataclass(frozen=True)
class Target:
    """A prompt explained on a scene: the objects it names (one, or two for a caption "a ... and
    a ..."), its place among the scene's prompts (``k``), and the evaluation item."""

    scene: int
    k: int
    named: tuple[int, ...]
    item: Item

    @property
    def prompt(self) -> str:
        return self.item.target


def scene_targets(scenes: Sequence[shapes.Scene], pairs: bool = False,
                  prompts: Sequence[Sequence[tuple[str, tuple[int, ...]]]] | None = None) -> list[Target]:
    """Every object's prompt on every scene, with the object's visible mask; with ``pairs``, also
    the caption naming the first two objects ("a red circle and a red square"), with the union
    of their masks. ``prompts``: instead, per scene, its own (text, objects it names) pairs. Any
    object's prompt is a right answer."""
    targets = []
    for s, scene in enumerate(scenes):
        answers = frozenset(f"a {o.phrase}" for o in scene.objects)
        if prompts is not None:
            chosen = [(text, tuple(named)) for text, named in prompts[s]]
        else:
            named_sets: list[tuple[int, ...]] = [(i,) for i in range(len(scene.objects))]
            if pairs and len(scene.objects) >= 2:
                named_sets.append((0, 1))
            chosen = [(" and ".join(f"a {scene.objects[i].phrase}" for i in named), named) for named in named_sets]
        for k, (prompt, objects) in enumerate(chosen):
            if not objects:
                raise InputError(f"scene {s}: the prompt {prompt!r} names no object of the scene")
            mask = np.any([scene.objects[i].mask for i in objects], axis=0)
            name = f"scene {s} object{'s' if len(objects) > 1 else ''} {'+'.join(map(str, objects))}"
            targets.append(Target(s, k, objects, Item(scene.image, prompt, mask, answers, name)))
    return targets


def described(scene: shapes.Scene, prompt: str) -> tuple[int, ...]:
    """The objects of ``scene`` that share the colour or the shape of a one-object ``prompt``
    ("a red cross" on a red square and a blue cross: both): where the model can have found it."""
    words = set(prompt.split())
    return tuple(i for i, o in enumerate(scene.objects) if o.colour in words or o.shape in words)


def contrast(saliency: Any, named: np.ndarray, objects: np.ndarray) -> float:
    """The map's mean over the named objects' pixels minus its mean over the background (the
    pixels of no object), in the map's own units: how much it says about what is named."""
    values = upsample(saliency, named.shape).numpy()
    background = ~objects
    if not named.any() or not background.any():
        raise InputError("a contrast needs named pixels and background pixels")
    return float(values[named].mean() - values[background].mean())


#: The row painted with the truth (each object's pixels with its Shapley value): the counterfactual
#: truth as a map, faithful by construction (``measure(truth_row=True)``).
TRUTH = "counterfactual"


@dataclass
class GroundTruthStudy:
    """Every explainer against the counterfactual truth, and the pixel perturbation metrics.

    ``per_item``: one row per method and target (:func:`scene_targets`): ``scene``,
    ``target_index``, ``target_object`` (-1 for a prompt naming several), ``named``,
    ``evidence_on_named`` (the largest Shapley value lies on a named object), ``single`` and
    ``shapley`` (each object's single-removal effect and Shapley value), ``shares`` (the map's),
    the counterfactual measures (see the module) and the pixel metrics (``deletion_auc``,
    ``insertion_auc``, ``road_deletion_auc`` where measured, ``pointing_game``,
    ``energy_in_mask``). ``effects``: per scene, (n, K) the drop of each of its K prompts'
    scores (columns) when each object (rows) alone is removed.
    """

    per_item: pd.DataFrame
    effects: list[np.ndarray]
    methods: list[str]
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def intervals(self, column: str) -> dict[str, Interval]:
        """Per method, the mean of ``column`` over items with its bootstrap interval
        (items resampled by scene: a scene's items are not independent)."""
        out = {}
        for method in self.methods:
            out[method] = self._by_scene(method, column)
        return out

    def _by_scene(self, method: str, column: str) -> Interval:
        """Mean of ``column`` over ``method``'s items, resampling whole scenes."""
        rows = self.per_item[self.per_item["method"] == method]
        by_scene = rows.groupby("scene")[column].agg(["sum", "count"]).to_numpy()
        return bootstrap(by_scene, lambda a: a[:, 0].sum() / a[:, 1].sum(), seed=self.seed)

    def table(self) -> pd.DataFrame:
        """One row per method: counterfactual measures with intervals, pixel metrics' means."""
        rows: dict[str, dict[str, float]] = {}
        pixel = [c for c in ("deletion_auc", "insertion_auc", "road_deletion_auc", "pointing_game",
                             "energy_in_mask") if c in self.per_item]
        for column in (c for c in ("shapley_correlation", "cf_correlation", "cf_top", "cf_regret")
                       if c in self.per_item):
            for method, iv in self.intervals(column).items():
                rows.setdefault(method, {}).update({column: iv.estimate, f"{column}_low": iv.low,
                                                    f"{column}_high": iv.high})
        means = self.per_item.groupby("method", sort=False)[pixel].mean()
        for method in self.methods:
            rows[method].update(means.loc[method].to_dict())
            rows[method]["n"] = int((self.per_item["method"] == method).sum())
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "method"
        return table

    def ranks(self, truth: str = "shapley_correlation") -> pd.DataFrame:
        """Per method, its rank (1 = best) by its agreement with the truth (``truth``: the
        Shapley values' correlation, or ``"cf_correlation"`` with the single removals) and by
        each perturbation metric measured (``deletion``, ``insertion``, ``ROAD`` deletion), and
        the ``largest gap`` between a metric's rank and the truth's. Means equal to 9 decimals
        (e.g. the two ECLIP routes' maps) share their rank."""
        exact = self.table().round(9)
        ranks = pd.DataFrame({"truth": exact[truth].rank(ascending=False)})
        for name, column in RANKED_METRICS.items():
            if column in exact:
                ranks[name] = exact[column].rank(ascending=not higher_is_better(column))
        metrics = [name for name in RANKED_METRICS if name in ranks]
        if not metrics:
            raise InputError("no perturbation metric was measured: nothing to rank against the truth")
        ranks["largest gap"] = ranks[metrics].sub(ranks["truth"], axis=0).abs().max(axis=1)
        return ranks

    def agreement(self, metric: str, truth: str = "shapley_correlation", n_boot: int = 1000) -> Interval:
        """Spearman correlation, across methods, between their mean ``truth`` and their mean
        pixel ``metric`` (each signed so that higher is better, :func:`~eclip_core.metrics.higher_is_better`;
        means equal to 9 decimals tie), with an interval from resampling scenes."""
        sign_truth, sign = (1.0 if higher_is_better(name) else -1.0 for name in (truth, metric))
        pivot_truth = self.per_item.pivot_table(index="scene", columns="method", values=truth, aggfunc="sum")
        pivot_metric = self.per_item.pivot_table(index="scene", columns="method", values=metric, aggfunc="sum")
        counts = self.per_item.pivot_table(index="scene", columns="method", values=truth, aggfunc="count")
        t, m, c = (p[self.methods].to_numpy() for p in (pivot_truth, pivot_metric, counts))

        def rank_corr(rows: np.ndarray) -> float:
            a, b, n = rows[:, 0], rows[:, 1], rows[:, 2]
            # rounded: methods equal up to round-off (the two ECLIP routes) rank as equal
            return float(spearman(torch.from_numpy(np.round(sign_truth * a.sum(0) / n.sum(0), 9)),
                                  torch.from_numpy(np.round(sign * b.sum(0) / n.sum(0), 9))))

        stacked = np.stack([t, m, c], axis=1)  # (scenes, 3, methods)
        return bootstrap(stacked, rank_corr, n_boot=n_boot, seed=self.seed)

    def redundancy(self) -> Interval:
        """How often the object whose single removal drops the score most is not the object of
        largest Shapley value: where objects stand in for each other, so that removing one alone
        shows less than it is worth (intervals over scenes)."""
        rows = self.per_item[self.per_item["method"] == self.methods[0]]
        differs = [float(np.argmax(single) != np.argmax(phi)) for single, phi in zip(rows["single"], rows["shapley"])]
        by_scene = pd.DataFrame({"scene": rows["scene"].to_numpy(), "d": differs}).groupby("scene")["d"]
        return bootstrap(by_scene.agg(["sum", "count"]).to_numpy(), lambda a: a[:, 0].sum() / a[:, 1].sum(),
                         seed=self.seed)

    def evidence_on_named(self, objects: int | None = None) -> Interval:
        """How often the object of largest Shapley value for a prompt is one the prompt names
        (``objects``: only the prompts naming that many objects; for one-object prompts on
        n-object scenes, chance is 1/n), with its interval over scenes."""
        rows = self.per_item[self.per_item["method"] == self.methods[0]]  # the same for every method
        if objects is not None:
            rows = rows[rows["named"].str.count(r"\+") + 1 == objects]
            if rows.empty:
                raise InputError(f"no prompt names {objects} object(s) in this study")
        by_scene = rows.groupby("scene")["evidence_on_named"].agg(["sum", "count"]).to_numpy()
        return bootstrap(by_scene, lambda a: a[:, 0].sum() / a[:, 1].sum(), seed=self.seed)

    def paired(self, a: str, b: str, column: str = "shapley_correlation", *,
               margin: float | None = None) -> tuple[Interval, bool | None]:
        """Method ``a``'s mean ``column`` minus method ``b``'s, paired on the same items and
        resampled by scene, with its 95% interval; with ``margin``, also whether the two are
        equivalent within it (two one-sided tests at 5%: the 90% interval inside ``±margin``)."""
        rows = self.per_item.set_index(["method", "target_index"])[column]
        if a not in self.methods or b not in self.methods:
            raise InputError(f"both methods must be in the study: {a!r}, {b!r}; it has {self.methods}")
        diff = (rows.loc[a] - rows.loc[b]).rename("d").to_frame()
        scenes = self.per_item[self.per_item["method"] == a].set_index("target_index")["scene"]
        diff["scene"] = scenes.loc[diff.index].to_numpy()
        by_scene = diff.groupby("scene")["d"].agg(["sum", "count"]).to_numpy()

        def mean(rows: np.ndarray) -> float:
            return float(rows[:, 0].sum() / rows[:, 1].sum())

        estimate, replicates = bootstrap_replicates(by_scene, mean, seed=self.seed)
        low, high = percentile_interval(replicates, 0.95)
        wide = Interval(estimate, float(low), float(high), len(by_scene), 0.95)
        if margin is None:
            return wide, None
        low, high = percentile_interval(replicates, 0.90)
        return wide, bool(-margin < low and high < margin)


@dataclass
class Truth:
    """A model's counterfactual truth on scenes: every subset of each scene's objects removed once.

    ``targets``: the prompts explained (:func:`scene_targets`); ``scores``: per scene, each
    subset of removed objects -> the scene's prompts' scores; ``effects``: per scene, (n, K) the
    drop of each prompt's score when each object alone is removed; ``shapley``: per target, (n,)
    the objects' Shapley values (:func:`shapley_values`) -- the truth every map is held against.
    """

    scenes: list[shapes.Scene]
    targets: list[Target]
    scores: list[dict[frozenset[int], np.ndarray]]
    effects: list[np.ndarray]
    shapley: list[np.ndarray]

    def evidence_on_named(self) -> np.ndarray:
        """(targets,) whether the object of largest Shapley value is one the prompt names: where
        it is not, the model's evidence for the prompt lies on another object."""
        return np.array([int(np.argmax(phi)) in t.named for t, phi in zip(self.targets, self.shapley)])


def truth(model: Model, scenes: Sequence[shapes.Scene], *, pairs: bool = False,
          prompts: Sequence[Sequence[tuple[str, tuple[int, ...]]]] | None = None) -> Truth:
    """:class:`Truth` of ``model`` on multi-object ``scenes`` (with ``pairs``: the two-object
    captions too; ``prompts``: per scene its own, see :func:`scene_targets`): 2^n
    in-distribution removals per scene, one batch of forward passes."""
    scenes = list(scenes)
    if not scenes or any(len(s.objects) < 2 for s in scenes):
        raise InputError("the ground-truth study needs multi-object scenes (2 or more objects each)")
    targets = scene_targets(scenes, pairs, prompts)
    texts: list[list[str]] = [[] for _ in scenes]
    for t in targets:
        texts[t.scene].append(t.prompt)
    scores = removal_scores_many(model, scenes, texts)
    effects = [true_effects(sc, len(s.objects)) for sc, s in zip(scores, scenes)]
    shapley = [shapley_values(scores[t.scene], len(scenes[t.scene].objects), t.k) for t in targets]
    return Truth(scenes, targets, scores, effects, shapley)


def measure(model: Model, known: Truth, methods: Sequence[str], *, which: Sequence[int] | None = None,
            steps: int = 16, rise_masks: int = 100, road: bool = True, road_steps: int = 8,
            curves: Sequence[str] = ("deletion", "insertion"), seed: int = 0, truth_row: bool = False,
            options: dict[str, dict[str, Any]] | None = None, progress: bool = False) -> pd.DataFrame:
    """Explain the targets of ``known`` (``which``: their indices; default all) with every method
    and score each map against the truth (one row per method and target; see
    :class:`GroundTruthStudy`), and with the pixel perturbation metrics (``curves``: deletion
    and insertion at ``steps`` points, ``()`` for none; ROAD deletion at ``road_steps`` if
    ``road``). ``truth_row``: add the rows of :data:`TRUTH`, the Shapley values painted as a map."""
    if len(set(methods)) != len(list(methods)):
        raise InputError(f"each method once, please: {list(methods)} names one twice")
    chosen = list(range(len(known.targets))) if which is None else list(which)
    if not chosen:
        raise InputError("no targets to measure")
    targets = [known.targets[j] for j in chosen]
    items = [t.item for t in targets]
    texts = list(dict.fromkeys(shapes.prompts() + [t.prompt for t in targets]))
    result = evaluate(model, items, list(methods), texts=texts, steps=steps,
                      rise_masks=rise_masks, seed=seed, ties="random", timing=False, keep_maps=True, curves=curves,
                      progress=progress, options=options)
    road_auc: dict[str, list[float]] = {}
    if road:
        images = as_model(model).native_input([it.image for it in items])
        target_idx = [texts.index(it.target) for it in items]
        for method, maps in result.maps.items():
            road_curves = perturbation_curves(model, images, maps, texts, target_idx, kind="deletion",
                                              steps=road_steps, baseline="road", ties="random", seed=seed)
            road_auc[method] = [c.auc_score for c in road_curves]
    occupied = [np.any([o.mask for o in scene.objects], axis=0) for scene in known.scenes]
    extra: list[dict[str, Any]] = []
    for method in result.maps:
        for j, m in enumerate(result.maps[method]):
            t, phi = targets[j], known.shapley[chosen[j]]
            objects = known.scenes[t.scene].objects
            shares = np.array([energy_in_mask(m, o.mask) for o in objects])
            extra.append({**_target_columns(t, chosen[j], phi), "single": _single(known, t),
                          **item_measures(shares, known.effects[t.scene][:, t.k], known.scores[t.scene], t.k),
                          **_shapley_columns(shares, phi), "contrast": contrast(m, _mask(t), occupied[t.scene]),
                          **({"road_deletion_auc": road_auc[method][j]} if road else {})})
    per_item = pd.concat([result.per_image.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
    if truth_row:
        rows = [_truth_row(known, j, position, occupied) for position, j in enumerate(chosen)]
        per_item = pd.concat([per_item, pd.DataFrame(rows)], ignore_index=True)
    return per_item


def ground_truth_study(model: Model, scenes: Sequence[shapes.Scene], methods: Sequence[str], *,
                       steps: int = 16, rise_masks: int = 100, road: bool = True, road_steps: int = 8,
                       curves: Sequence[str] = ("deletion", "insertion"), seed: int = 0, pairs: bool = False,
                       truth_row: bool = False, options: dict[str, dict[str, Any]] | None = None,
                       progress: bool = False) -> GroundTruthStudy:
    """Explain each object's prompt (and, with ``pairs``, the caption naming the first two
    objects) on each multi-object scene with every method, and score the maps against the
    counterfactual truth (:func:`truth`, :func:`measure`). See :class:`GroundTruthStudy`."""
    known = truth(model, scenes, pairs=pairs)
    per_item = measure(model, known, methods, steps=steps, rise_masks=rise_masks, road=road, road_steps=road_steps,
                       curves=curves, seed=seed, truth_row=truth_row, options=options, progress=progress)
    kind = "(scene, prompt)" if pairs else "(scene, object)"
    return GroundTruthStudy(per_item, known.effects, list(dict.fromkeys(per_item["method"])), seed,
                            notes=[f"{len(known.scenes)} scenes, {len(known.targets)} {kind} items",
                                   f"shapley_correlation, cf_correlation, cf_top: {direction('cf_correlation')}; "
                                   f"cf_regret: {direction('cf_regret')}",
                                   "intervals: 95% bootstrap over scenes"])


def _mask(t: Target) -> np.ndarray:
    assert t.item.mask is not None  # every target is made with the mask of what it names
    return t.item.mask


def _target_columns(t: Target, index: int, phi: np.ndarray) -> dict[str, Any]:
    """Where a target is, and whether the model's evidence for it (its largest Shapley value)
    lies on what it names."""
    return {"scene": t.scene, "target_index": index,
            "target_object": t.named[0] if len(t.named) == 1 else -1, "named": "+".join(map(str, t.named)),
            "evidence_on_named": float(int(np.argmax(phi)) in t.named)}


def _single(known: Truth, t: Target) -> tuple[float, ...]:
    """Each object's single-removal effect on the target's prompt."""
    return tuple(float(x) for x in known.effects[t.scene][:, t.k])


def _shapley_columns(shares: np.ndarray, phi: np.ndarray) -> dict[str, Any]:
    """The map's shares and the objects' Shapley values, and their rank correlation."""
    return {"shares": tuple(float(x) for x in shares), "shapley": tuple(float(x) for x in phi),
            "shapley_correlation": float(spearman(torch.from_numpy(np.asarray(shares, dtype=np.float64)),
                                                  torch.from_numpy(np.asarray(phi, dtype=np.float64))))}


def _truth_row(known: Truth, index: int, position: int, occupied: list[np.ndarray]) -> dict[str, Any]:
    """A row of :data:`TRUTH`: each object's pixels painted with its Shapley value."""
    t, phi = known.targets[index], known.shapley[index]
    scene = known.scenes[t.scene]
    painted = np.zeros(scene.objects[0].mask.shape)
    for o, value in zip(scene.objects, phi):
        painted[o.mask] = value
    return {"method": TRUTH, "item": position, "target": t.prompt, **_target_columns(t, index, phi),
            "single": _single(known, t),
            **item_measures(phi, known.effects[t.scene][:, t.k], known.scores[t.scene], t.k),
            **_shapley_columns(phi, phi),
            "contrast": float(painted[_mask(t)].mean() - painted[~occupied[t.scene]].mean())}
