"""Ground truth by construction: what each object of a scene is worth to the model's score.

A shapes scene is drawn from a description (:class:`~eclip_core.world.shapes.Drawing`), so it
can be drawn again with any of its objects removed, the background as it was beneath
them (:func:`~eclip_core.world.shapes.edit`). The drop of the original model's score when
object ``i`` is removed is that object's *true effect*: measured in distribution, with
no pasted colour, blur or imputation. For every explanation of a scene's target this
module compares the share of the map's mass on each object
(:func:`~eclip_core.metrics.energy_in_mask` of its visible mask) with the true effects:

* ``cf_correlation``: Spearman correlation, over the scene's objects, of mass share and
  true effect (a map that ranks nothing, with equal shares, correlates 0);
* ``cf_top``: whether the object with the largest share has the largest effect;
* ``cf_regret``: the counterfactual deletion curve -- remove the objects in the order
  the map ranks them, scoring the scene after each removal -- its area (trapezoid over
  the removed fraction of objects, lower is better) minus the area of the best order
  (objects with equal shares: the mean over their orders, so a map that ranks nothing
  has a random order's regret).
  Objects interact, so even the order of the true single-removal effects can leave some
  regret; a random order's (``cf_regret_random``) is the reference.

Every subset of a scene's objects is removed once (2^n scenes for n objects), so any
order's curve is read from those scores.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..evaluation import Item, evaluate, zero_shot_scores
from ..metrics import declare, direction, energy_in_mask, higher_is_better, perturbation_curves
from ..models import Model, as_model
from ..stats import Interval, bootstrap, spearman
from ..world import shapes

#: The perturbation metrics :meth:`GroundTruthStudy.ranks` sets against the truth: name -> column.
RANKED_METRICS = {"deletion": "deletion_auc", "insertion": "insertion_auc", "ROAD": "road_deletion_auc"}

# The measures of this module, each with its direction (read by every ranking and sign below).
declare("cf_correlation", "higher", "rank correlation of the map's share per object with its true removal effect")
declare("cf_top", "higher", "the map's largest share is on the object whose removal drops the score most")
declare("cf_regret", "lower", "area lost by removing objects in the map's order rather than the best one")
declare("cf_regret_random", "lower", "the same for a random order")
declare("road_deletion_auc", "lower", "deletion AUC with ROAD's noisy linear imputation", "perturbation_curves")


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


def scene_targets(scenes: Sequence[shapes.Scene]) -> list[Item]:
    """One item per (scene, object): the object's prompt explained on the scene, its visible
    mask, and any object's prompt a right answer."""
    items = []
    for s, scene in enumerate(scenes):
        answers = frozenset(f"a {o.phrase}" for o in scene.objects)
        for i, obj in enumerate(scene.objects):
            items.append(Item(scene.image, f"a {obj.phrase}", obj.mask, answers, f"scene {s} object {i}"))
    return items


@dataclass
class GroundTruthStudy:
    """Every explainer against the counterfactual truth, and the pixel perturbation metrics.

    ``per_item``: one row per method and (scene, object as target) item: ``scene``,
    ``target_object``, ``target_effect_largest`` (the target's own removal drops its
    score most), the counterfactual measures (see the module) and the pixel metrics
    (``deletion_auc``, ``insertion_auc``, ``road_deletion_auc`` where measured,
    ``pointing_game``, ``energy_in_mask``). ``effects``: per scene, (n, n) the drop of
    each object's prompt (columns) when each object (rows) is removed.
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
        for column in ("cf_correlation", "cf_top", "cf_regret"):
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

    def ranks(self) -> pd.DataFrame:
        """Per method, its rank (1 = best) by the counterfactual correlation (``truth``) and by
        each perturbation metric measured (``deletion``, ``insertion``, ``ROAD`` deletion), and
        the ``largest gap`` between a metric's rank and the truth's. Means equal to 9 decimals
        (e.g. the two ECLIP routes' maps) share their rank."""
        exact = self.table().round(9)
        ranks = pd.DataFrame({"truth": exact["cf_correlation"].rank(ascending=False)})
        for name, column in RANKED_METRICS.items():
            if column in exact:
                ranks[name] = exact[column].rank(ascending=not higher_is_better(column))
        metrics = [name for name in RANKED_METRICS if name in ranks]
        if not metrics:
            raise InputError("no perturbation metric was measured: nothing to rank against the truth")
        ranks["largest gap"] = ranks[metrics].sub(ranks["truth"], axis=0).abs().max(axis=1)
        return ranks

    def agreement(self, metric: str, truth: str = "cf_correlation", n_boot: int = 1000) -> Interval:
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

    def target_effect_largest(self) -> Interval:
        """How often the target object's own removal drops its score most (chance: 1/n)."""
        return self._by_scene(self.methods[0], "target_effect_largest")  # the same for every method


def ground_truth_study(model: Model, scenes: Sequence[shapes.Scene], methods: Sequence[str], *,
                       steps: int = 16, rise_masks: int = 100, road: bool = True, road_steps: int = 8,
                       curves: Sequence[str] = ("deletion", "insertion"), seed: int = 0,
                       options: dict[str, dict[str, Any]] | None = None,
                       progress: bool = False) -> GroundTruthStudy:
    """Explain each object's prompt on each multi-object scene with every method, and score
    the maps against the counterfactual truth and with the pixel perturbation metrics
    (``curves``: deletion and insertion at ``steps`` points, ``()`` for none; ROAD deletion,
    whose imputation costs most, at ``road_steps`` if ``road``). See :class:`GroundTruthStudy`."""
    scenes = list(scenes)
    if not scenes or any(len(s.objects) < 2 for s in scenes):
        raise InputError("the ground-truth study needs multi-object scenes (2 or more objects each)")
    if len(set(methods)) != len(list(methods)):
        raise InputError(f"each method once, please: {list(methods)} names one twice")
    prompts = [[f"a {o.phrase}" for o in s.objects] for s in scenes]
    scores = removal_scores_many(model, scenes, prompts)
    effects = [true_effects(sc, len(s.objects)) for sc, s in zip(scores, scenes)]
    items = scene_targets(scenes)
    where = [(s, i) for s, scene in enumerate(scenes) for i in range(len(scene.objects))]
    result = evaluate(model, items, list(methods), texts=shapes.prompts(), steps=steps,
                      rise_masks=rise_masks, seed=seed, ties="random", timing=False, keep_maps=True, curves=curves,
                      progress=progress, options=options)
    per_item = result.per_image.copy()
    extra: list[dict[str, float]] = []
    road_auc: dict[str, list[float]] = {}
    if road:
        images = as_model(model).native_input([it.image for it in items])
        target_idx = [shapes.prompts().index(it.target) for it in items]
        for method, maps in result.maps.items():
            road_curves = perturbation_curves(model, images, maps, shapes.prompts(), target_idx, kind="deletion",
                                         steps=road_steps, baseline="road", ties="random", seed=seed)
            road_auc[method] = [c.auc_score for c in road_curves]
    for method in result.maps:
        for j, m in enumerate(result.maps[method]):
            s, target = where[j]
            scene = scenes[s]
            shares = np.array([energy_in_mask(m, o.mask) for o in scene.objects])
            eff = effects[s][:, target]
            row = {"scene": s, "target_object": target,
                   "target_effect_largest": float(np.argmax(eff) == target),
                   **item_measures(shares, eff, scores[s], target)}
            if road:
                row["road_deletion_auc"] = road_auc[method][j]
            extra.append(row)
    per_item = pd.concat([per_item.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
    return GroundTruthStudy(per_item, effects, list(result.maps), seed,
                            notes=[f"{len(scenes)} scenes, {len(items)} (scene, object) items",
                                   f"cf_correlation, cf_top: {direction('cf_correlation')}; "
                                   f"cf_regret: {direction('cf_regret')}",
                                   "intervals: 95% bootstrap over scenes"])
