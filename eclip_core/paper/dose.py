"""What each of the published code's departures costs, dose by dose, against the truth.

The published Grad-ECLIP code departs from the deployed model in three ways (PAPER.md): the
last block recomputed with **one head** over the full width, the image explained at its
**keep-size** resolution with interpolated positional embeddings, and the **loosened term**
lambda (a cosine of projected query and keys) in place of anything the model computes. Each is
applied here alone, and all three together, to one reference: the deployed model's own
gradient map ``ReLU(sum_h dS/dA^h_{0,i})`` (Grad-ECLIP's formula without lambda, on the model's
own pass; PAPER.md's identity makes it the same for either route). The keep-size departure has
a dose: a scene enlarged m times (bicubic), as a photograph larger than the model's input, is
explained on its (m g) x (m g) grid, while the deployed model sees it through its preprocess at
its own size; at m = 1 nothing departs (a control: its difference is exactly 0).

Every map is placed on the pixels the deployed model sees and judged there, paired with the
reference map of the same scene, prompt and dose:

* how far it moved: the rank correlation of its pixels with the reference's;
* how well it explains the deployed model: the Shapley correlation of its mass share per object
  with the objects' Shapley values (:mod:`~eclip_core.paper.counterfactual`'s truth), and the
  deletion, insertion and ROAD deletion AUCs on the deployed model.

Differences (arm - reference, signed so that positive is better) carry 95% intervals over
scenes (a scene's prompts resampled together) and a verdict in fixed words against margins
fixed before measuring (:data:`MARGINS`): ``worse`` (``better``) where the 95% interval lies
below (above) 0 -- ``slightly worse`` (``slightly better``) where, in addition, the 90% interval
lies inside the margin, so that the difference is shown and shown to be small (two one-sided
tests at 5%); ``equivalent`` where the 95% interval holds 0 and the 90% interval lies inside the
margin; ``not shown`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..departures import Departures
from ..errors import InputError
from ..explainers.eclip import grad_eclip
from ..inputs import to_model_input
from ..maps import upsample
from ..metrics import energy_in_mask, higher_is_better, perturbation_curves
from ..models import Model, as_model
from ..stats import Interval, bootstrap_replicates, monotone_trend, percentile_interval, spearman
from ..world import shapes
from . import counterfactual as cf

#: The departures, each applied alone, and the published recipe (all three); ``"none"`` is the
#: reference.
DEPARTURES = ("none", "one head", "keep-size", "lambda", "all three")
#: The keep-size doses: the scene's side as a multiple of the model's input side.
DOSES = (1, 2, 3, 4)
#: Equivalence margins, fixed before any measurement: the Shapley correlation's is P2's
#: (chapter 5), the perturbation AUCs' chapter 4's (5% of their [0, 1] range).
MARGINS = {"shapley_correlation": 0.1, "deletion_auc": 0.05, "insertion_auc": 0.05, "road_deletion_auc": 0.05}
#: What each measure is called in tables.
MEASURES = {"shapley_correlation": "truth", "deletion_auc": "deletion", "insertion_auc": "insertion",
            "road_deletion_auc": "ROAD"}
VERDICTS = ("worse", "slightly worse", "equivalent", "slightly better", "better", "not shown")


@dataclass(frozen=True)
class Arm:
    """One departure at one dose: ``departure`` one of :data:`DEPARTURES`; ``dose`` the scene's
    side as a multiple of the model's input side (the keep-size departure's dose, and the
    reference's, ``"none"``, which sees the enlarged scene through the model's preprocess; the
    others run at 1)."""

    departure: str
    dose: int = 1

    def __post_init__(self) -> None:
        if self.departure not in DEPARTURES:
            raise InputError(f"departure must be one of {', '.join(DEPARTURES)}, got {self.departure!r}")
        if not isinstance(self.dose, int) or self.dose < 1:
            raise InputError(f"a dose is a positive integer multiple of the model's input side, got {self.dose!r}")
        if self.dose != 1 and not (self.keep_size or self.departure == "none"):
            raise InputError(f"{self.departure!r} has no dose: only the keep-size input is enlarged")

    @property
    def heads(self) -> int | None:
        return 1 if self.departure in ("one head", "all three") else None

    @property
    def keep_size(self) -> bool:
        return self.departure in ("keep-size", "all three")

    @property
    def loosened(self) -> bool:
        return self.departure in ("lambda", "all three")

    @property
    def departures(self) -> Departures:
        return Departures(heads=self.heads, keep_size=self.keep_size)

    @property
    def label(self) -> str:
        if self.departure == "none":
            return "reference"
        return f"{self.departure} x{self.dose}" if self.keep_size else self.departure


def default_arms(doses: Sequence[int] = DOSES) -> list[Arm]:
    """One head, lambda, and the keep-size input and all three at every dose."""
    return ([Arm("one head"), Arm("lambda")] + [Arm("keep-size", m) for m in doses]
            + [Arm("all three", m) for m in doses])


def enlarge(image: Image.Image, dose: int) -> Image.Image:
    """The image ``dose`` times larger on each side (bicubic); itself at dose 1."""
    return image if dose == 1 else image.resize((image.width * dose, image.height * dose), Image.Resampling.BICUBIC)


def arm_maps(model: Model, images: Sequence[Image.Image], texts: Sequence[Sequence[str]], arm: Arm) -> torch.Tensor:
    """(B, K, H, W) maps of each image's own ``texts`` by ``arm`` (``Arm("none", dose)``: the
    reference, no departure and no lambda), each image enlarged by the arm's dose first, on the
    pixels the deployed model sees."""
    clip = as_model(model)
    big = [enlarge(im, arm.dose) for im in images]
    departures = arm.departures
    x, native = clip.prepare(big, keep_size=departures.keep_size)
    assert native is not None  # PIL images always have their native twin
    targets, lengths = clip.paired_text_embeddings(texts, len(big))
    if len(set(lengths)) != 1:
        raise InputError("every image needs the same number of prompts in a dose study")
    maps, _ = grad_eclip(clip, x, targets, departures=departures, loosened=arm.loosened)
    maps = maps.detach().double().cpu()
    height, width = native.shape[-2:]
    if departures.keep_size:  # each value to the pixel of the model's input it explains
        return torch.stack([to_model_input(m, im.size, clip.preprocess) for m, im in zip(maps, big)])
    return upsample(maps, (int(height), int(width)))


@dataclass
class DoseStudy:
    """Every arm against the reference on the same (scene, prompt) items.

    ``per_item``: one row per arm (``"reference"`` at each dose too) and item: ``arm``,
    ``departure``, ``dose``, ``scene``, ``item``, ``rho`` (the map's rank correlation with the
    reference map of the same dose), ``shapley_correlation`` and the AUCs measured.
    ``arms``: the arms, in order; ``seed``: of every resample.
    """

    per_item: pd.DataFrame
    arms: list[Arm]
    seed: int = 0

    def signed(self, arm: Arm, column: str) -> pd.DataFrame:
        """Per item (index), its ``scene`` and ``value``: arm - reference of the same dose on
        ``column``, signed so that positive is better (for ``rho``, the arm's own value)."""
        rows = self.per_item
        mine = rows[rows["arm"] == arm.label].set_index("item")
        if column == "rho":
            values = mine["rho"]
        else:
            reference = rows[(rows["arm"] == "reference") & (rows["dose"] == arm.dose)].set_index("item")
            sign = 1.0 if higher_is_better(column) else -1.0
            values = sign * (mine[column] - reference.loc[mine.index, column])
        return pd.DataFrame({"scene": mine["scene"], "value": values})

    def _paired(self, arm: Arm, column: str) -> np.ndarray:
        """(scenes, 2): per scene, the sum of :meth:`signed` over its items and the item count."""
        return self.signed(arm, column).groupby("scene")["value"].agg(["sum", "count"]).to_numpy()

    def difference(self, arm: Arm, column: str, level: float = 0.95) -> tuple[Interval, np.ndarray]:
        """Arm - reference on ``column`` (positive: the departure explains better), with its
        interval at ``level`` and the bootstrap replicates (scenes resampled)."""
        by_scene = self._paired(arm, column)

        def mean(a: np.ndarray) -> float:
            return float(a[:, 0].sum() / a[:, 1].sum())

        estimate, replicates = bootstrap_replicates(by_scene, mean, seed=self.seed)
        low, high = percentile_interval(replicates, level)
        return Interval(estimate, float(low), float(high), len(by_scene), level), replicates

    def verdict(self, arm: Arm, column: str) -> str:
        """One of :data:`VERDICTS` for arm - reference on ``column`` (see the module)."""
        return _verdict(*self.difference(arm, column), column)


    def table(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per arm: the maps' rank correlation with the reference, and per measure the
        difference from the reference (positive: better) with its 95% interval and verdict."""
        measured = [c for c in (columns or MARGINS) if c in self.per_item]
        rows = []
        for arm in self.arms:
            rho = self.difference(arm, "rho")[0]
            row: dict[str, object] = {"arm": arm.label, "dose": arm.dose, "rho": rho.estimate}
            for column in measured:
                interval, replicates = self.difference(arm, column)
                name = MEASURES[column]
                row.update({name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high,
                            f"{name}_verdict": _verdict(interval, replicates, column)})
            row["n"] = rho.n
            rows.append(row)
        return pd.DataFrame(rows).set_index("arm")


def _verdict(wide: Interval, replicates: np.ndarray, column: str) -> str:
    """The words for a difference on ``column`` with its 95% interval ``wide`` and bootstrap
    ``replicates``: shown (95% interval off 0) and small (90% interval inside the column's
    margin, :data:`MARGINS`; TOST) or not."""
    margin = MARGINS[column]
    low, high = percentile_interval(replicates, 0.90)
    small = bool(-margin < low and high < margin)
    if wide.high < 0:
        return "slightly worse" if small else "worse"
    if wide.low > 0:
        return "slightly better" if small else "better"
    return "equivalent" if small else "not shown"


def dose_study(model: Model, scenes: Sequence[shapes.Scene], *, arms: Sequence[Arm] | None = None,
               known: cf.Truth | None = None, steps: int = 16, road: bool = True, road_steps: int = 8,
               seed: int = 0) -> DoseStudy:
    """:class:`DoseStudy` of ``arms`` (default :func:`default_arms`) on multi-object ``scenes``,
    each object's prompt and the caption naming the first two (``known``: their counterfactual
    truth, :func:`~eclip_core.paper.counterfactual.truth` with ``pairs=True``, computed if not
    given). Each dose's reference and arms are scored on the deployed model's input of the
    enlarged scene; the truth is the scenes' own."""
    clip = as_model(model)
    chosen = list(default_arms() if arms is None else arms)
    if not chosen or any(a.departure == "none" for a in chosen):
        raise InputError("a dose study needs at least one arm that departs (the reference is always measured)")
    if len({a.label for a in chosen}) != len(chosen):
        raise InputError("each arm once, please")
    scenes = list(scenes)
    known = cf.truth(clip, scenes, pairs=True) if known is None else known
    if len(known.scenes) != len(scenes):
        raise InputError(f"the truth covers {len(known.scenes)} scenes, the study {len(scenes)}")
    per_scene: list[list[cf.Target]] = [[] for _ in scenes]
    for target in known.targets:
        per_scene[target.scene].append(target)
    if any([t.k for t in ts] != list(range(len(ts))) for ts in per_scene):
        raise InputError("the truth's prompts must come scene by scene, in their order")
    texts = [[t.prompt for t in ts] for ts in per_scene]
    items = [(index, t) for index, t in enumerate(known.targets)]
    distinct = list(dict.fromkeys(t.prompt for _, t in items))
    target_index = [distinct.index(t.prompt) for _, t in items]
    images = [s.image for s in scenes]
    frames = []
    for dose in sorted({a.dose for a in chosen}):
        native = clip.native_input([enlarge(im, dose) for im in images])
        inputs = native[[t.scene for _, t in items]]
        reference = _flatten(arm_maps(clip, images, texts, Arm("none", dose)), items)
        for arm in [Arm("none", dose)] + [a for a in chosen if a.dose == dose]:
            maps = reference if arm.departure == "none" else _flatten(arm_maps(clip, images, texts, arm), items)
            frames.append(_measure(clip, known, items, maps, reference, inputs, distinct, target_index,
                                   arm.label, arm.departure, dose, steps, road, road_steps, seed))
    return DoseStudy(pd.concat(frames, ignore_index=True), chosen, seed)


def _flatten(maps: torch.Tensor, items: list[tuple[int, cf.Target]]) -> torch.Tensor:
    """(items, H, W) in the truth's target order from (scenes, K, H, W)."""
    return torch.stack([maps[t.scene, t.k] for _, t in items])


def _measure(clip, known: cf.Truth, items, maps: torch.Tensor, reference: torch.Tensor, inputs: torch.Tensor,
             distinct: list[str], target_index: list[int], label: str, departure: str, dose: int, steps: int,
             road: bool, road_steps: int, seed: int) -> pd.DataFrame:
    """The measures of one arm's maps (items, H, W), one row per item."""
    rho = torch.as_tensor(spearman(maps.flatten(1), reference.flatten(1)))
    columns: dict[str, list[float]] = {}
    for kind, column in (("deletion", "deletion_auc"), ("insertion", "insertion_auc")):
        curves = perturbation_curves(clip, inputs, maps, distinct, target_index, kind=kind, steps=steps,
                                     ties="random", seed=seed)
        columns[column] = [c.auc_score for c in curves]
    if road:
        curves = perturbation_curves(clip, inputs, maps, distinct, target_index, kind="deletion", steps=road_steps,
                                     baseline="road", ties="random", seed=seed)
        columns["road_deletion_auc"] = [c.auc_score for c in curves]
    rows = []
    for j, (index, target) in enumerate(items):
        scene = known.scenes[target.scene]
        shares = np.array([energy_in_mask(maps[j], o.mask) for o in scene.objects])
        truth = spearman(torch.from_numpy(shares), torch.from_numpy(np.asarray(known.shapley[index])))
        rows.append({"arm": label, "departure": departure, "dose": dose, "scene": target.scene, "item": index,
                     "rho": float(rho[j]), "shapley_correlation": float(truth),
                     **{column: values[j] for column, values in columns.items()}})
    return pd.DataFrame(rows)


def trend(study: DoseStudy, departure: str, column: str = "shapley_correlation") -> Interval:
    """Does the cost grow with the dose? The Spearman correlation of the doses of
    ``departure``'s arms with their mean difference from the reference on ``column`` (signed so
    that positive is better: a cost growing with the dose correlates negatively), with its
    interval from resampling the scenes (each scene's mean over its prompts;
    :func:`~eclip_core.stats.monotone_trend`)."""
    chosen = sorted((a for a in study.arms if a.departure == departure), key=lambda a: a.dose)
    if len(chosen) < 3:
        raise InputError(f"a trend needs {departure!r} at 3 doses or more; the study has {len(chosen)}")
    columns = [study.signed(arm, column).groupby("scene")["value"].mean().sort_index().to_numpy() for arm in chosen]
    return monotone_trend([a.dose for a in chosen], np.stack(columns, axis=1), seed=study.seed)[0]
