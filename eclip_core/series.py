"""P2 as a curve: explanation quality across the embedded model's training series.

The embedded model's training run was caught at several steps, from chance level to the
final model (:data:`eclip_core.models.SERIES_MODELS`). On each checkpoint, on the same
held-out scenes, this module measures

* the checkpoint's zero-shot top-1 on single-object scenes (its *accuracy*);
* each explainer's pointing game and energy in the object's mask, on the map of the true
  prompt of every single-object scene;
* each explainer's counterfactual correlation (:mod:`eclip_core.counterfactual`) on
  three-object scenes, against *that checkpoint's* own removal effects.

An explainer explains the model only if the quality of its maps moves with the model's
accuracy. :meth:`SeriesStudy.slopes` gives, per explainer, the least-squares slope of
quality against accuracy across the checkpoints, with a bootstrap interval in which the
scenes are resampled (the same resample for every checkpoint, the accuracy recomputed from
it): **aligned** when the interval lies above 0, **reversed** below 0, **no evidence** when it
holds 0 (the verdicts of :func:`eclip_core.studies.p2_verdicts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import shapes
from .counterfactual import ground_truth_study
from .errors import InputError
from .evaluation import evaluate
from .stats import N_BOOT, percentile_interval

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
    """Measure every method on every checkpoint ``(name, step, bundle)`` (in training order),
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
    for name, step, bundle in checkpoints:
        result = evaluate(bundle, list(single), list(methods), curves=(), timing=False,
                          rise_masks=rise_masks, seed=seed, progress=progress)
        frame = result.per_image[["method", "item", "right", "pointing_game", "energy_in_mask"]]
        singles.append(frame.rename(columns={"item": "scene"}).assign(checkpoint=name, step=step))
        truth = ground_truth_study(bundle, multi, methods, curves=(), road=False, rise_masks=rise_masks,
                                   seed=seed, progress=progress)
        counterfactuals.append(truth.per_item[["method", "scene", "target_object", "cf_correlation"]]
                               .assign(checkpoint=name, step=step))
    return SeriesStudy(pd.concat(singles, ignore_index=True), pd.concat(counterfactuals, ignore_index=True),
                       [c[0] for c in checkpoints], [int(c[1]) for c in checkpoints],
                       list(result.per_image["method"].drop_duplicates()), seed,
                       notes=[f"{len(single)} single-object scenes, {len(multi)} multi-object scenes, "
                              f"{len(checkpoints)} checkpoints",
                              "slopes: quality per unit of accuracy; 95% bootstrap over scenes"])
