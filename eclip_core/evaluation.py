"""One evaluation loop: explain every item's target, then score the map with the metrics.

Used by the command line, the principles and the book. Items are images with the text
to explain, and where known the target's ground-truth mask and the texts that count as
a right zero-shot answer: :func:`folder_items` makes them from a folder of photographs and
a labels file, and a data set of its own (the shapes world's scenes) from anything with an
``evaluation_item(index)`` method. Results are pandas
DataFrames: :attr:`Evaluation.per_image` (one row per method and item) and
:meth:`Evaluation.table` (one row per method, the metrics' means).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .clip import ClipModel
from .errors import InputError, one_line
from .explainers import Request, all_requests, explain, resolve
from .inputs import check_image_tensor, load_image, to_model_input
from .metrics import DEFAULT_STEPS, direction, energy_in_mask, perturbation_curves, pointing_game
from .models import Model, as_model
from .stats import bootstrap
from .timing import median_seconds


@dataclass(frozen=True)
class Item:
    """An image to evaluate on: the text to explain, its mask where known, the right answers.

    ``mask``: (H, W) booleans over the image as the model sees it (shapes scenes: the
    target object); ``answers``: the texts whose zero-shot top-1 counts as right
    (default: the target alone); ``name``: for reports; ``classes``: the zero-shot classes of
    the data set the item comes from (the default texts of an evaluation of such items).
    """

    image: Any
    target: str
    mask: np.ndarray | None = None
    answers: frozenset[str] = frozenset()
    name: str = ""
    classes: tuple[str, ...] = ()

    @property
    def right_answers(self) -> frozenset[str]:
        return self.answers or frozenset({self.target})


def as_items(items: Sequence[Any]) -> list[Item]:
    """:class:`Item` objects as they are; anything else through its own ``evaluation_item(index)``
    (a shapes scene makes its item: its first object's prompt, mask and right answers)."""
    given = list(items)
    if not given:
        raise InputError("nothing to evaluate: no items")
    out = [it if isinstance(it, Item) else it.evaluation_item(i) if hasattr(it, "evaluation_item") else None
           for i, it in enumerate(given)]
    if any(it is None for it in out):
        raise InputError("evaluate takes Item objects, or objects with an evaluation_item(index) method "
                         "(shapes scenes)")
    return out  # type: ignore[return-value]


def folder_items(images_dir: Path, labels: Path) -> list[Item]:
    """``filename,label text`` rows (a header row and ``#`` comments allowed) -> items.

    Each image is read once, here; it has no mask, so no localisation metric.
    """
    images_dir, labels = Path(images_dir), Path(labels)
    if not images_dir.is_dir():
        raise InputError(f"--images {str(images_dir)!r} is not a directory")
    if not labels.is_file():
        raise InputError(f"labels file {str(labels)!r}: no such file")
    try:
        lines = labels.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read labels file {str(labels)!r}: {one_line(err)}") from None
    items = []
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if number == 1 and row[0].strip().lower() in ("filename", "file", "image", "path"):
            continue
        if len(row) < 2 or not ",".join(row[1:]).strip():
            raise InputError(f"{labels.name} line {number}: expected 'filename,label text', "
                             f"got {','.join(row)!r}")
        name, text = row[0].strip(), ",".join(row[1:]).strip()
        path = images_dir / name
        if not path.is_file():
            raise InputError(f"{labels.name} line {number}: no image {name!r} in {str(images_dir)!r}")
        items.append(Item(load_image(path), text, name=name))
    if not items:
        raise InputError(f"labels file {str(labels)!r} lists no images")
    return items


def method_options(spec: str | Request, *, rise_masks: int = 500, seed: int = 0) -> dict[str, Any]:
    """What an evaluation sets for a method, among the options it declares: RISE's mask
    count and the seed of anything random."""
    wanted = {"n_masks": rise_masks, "seed": seed}
    declared = resolve(spec).method.options
    return {name: value for name, value in wanted.items() if name in declared}


def evaluation_request(spec: str | Request, *, rise_masks: int = 500, seed: int = 0) -> Request:
    """``spec`` with what an evaluation sets for it (:func:`method_options`) under its own options."""
    return resolve(spec, options={**method_options(spec, rise_masks=rise_masks, seed=seed),
                                  **(spec.options if isinstance(spec, Request) else {})})


def zero_shot_predictions(model: Model, images, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
    """(B,) index of the original model's top-1 text for each image, on its own pipeline."""
    return zero_shot_scores(model, images, texts).argmax(-1)


#: Images per forward pass in :func:`zero_shot_scores`: thousands at once run slower than
#: chunks (the activations leave the cache), and each image's embedding is its own either way.
ZERO_SHOT_BATCH = 256


def zero_shot_scores(model: Model, images, texts: Sequence[str] | torch.Tensor, *,
                     batch_size: int = ZERO_SHOT_BATCH) -> torch.Tensor:
    """(B, K) the original model's cosine of each image with each text, on its own pipeline
    (:meth:`ClipModel.cosine`); the images go through the model ``batch_size`` at a time."""
    clip = as_model(model)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(images, torch.Tensor):
        images = check_image_tensor(images)
        if images.ndim != 4:
            raise InputError(f"an image tensor must be a preprocessed batch (N, 3, H, W), "
                             f"got shape {tuple(images.shape)}")
    elif clip.preprocess is None:
        raise InputError("PIL images need the model's preprocess")
    else:
        images = list(images)
    targets = clip.text_embeddings(texts)
    scores = [clip.cosine(images[start:start + batch_size], targets) for start in range(0, len(images), batch_size)]
    if not scores:
        raise InputError("no images to score")
    return torch.cat(scores)


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    ``per_image``: one row per method and item (``method``, ``item``, ``target``,
    ``predicted``, ``right``, the metrics' columns); ``curves``: per method, the
    fractions perturbed and every item's deletion (and insertion) scores;
    ``seconds``: the ``explain`` time per method; ``forward_seconds``: one forward pass
    of the same items, measured in the same run.
    """

    per_image: pd.DataFrame
    curves: dict[str, dict[str, np.ndarray]]
    seconds: dict[str, float]
    forward_seconds: float
    texts: list[str]
    notes: list[str] = field(default_factory=list)
    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # with keep_maps=True

    METRIC_COLUMNS = ("deletion_auc", "insertion_auc", "deletion_acc_auc", "insertion_acc_auc",
                      "pointing_game", "energy_in_mask")

    def table(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per method (in evaluation order): the metrics' means, the cost."""
        metrics = [c for c in (columns or self.METRIC_COLUMNS) if c in self.per_image]
        order = list(dict.fromkeys(self.per_image["method"]))
        means = self.per_image.groupby("method", sort=False)[metrics].mean().reindex(order)
        n = self.per_image.groupby("method", sort=False).size().reindex(order)
        table = means.assign(n=n)[["n", *metrics]]
        if self.seconds and columns is None:
            seconds = pd.Series(self.seconds).reindex(order)
            table["ms_per_image"] = 1000 * seconds / n
            table["cost_ratio"] = seconds / self.forward_seconds
        table.index.name = "method"
        table.attrs["notes"] = self.notes
        return table

    def intervals(self, column: str, *, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
        """Per method (in evaluation order), the mean of ``column`` over its items with the
        bootstrap percentile interval at ``level`` (items resampled: each item is one image and
        its target) and the number of items; an item without a value (NaN) is left out, as
        :meth:`table`'s mean leaves it out."""
        if column not in self.per_image:
            metrics = [c for c in self.METRIC_COLUMNS if c in self.per_image]
            raise InputError(f"this evaluation has no column {column!r}; it has {metrics}")
        rows = {}
        for method, values in self.per_image.groupby("method", sort=False)[column]:
            interval = bootstrap(values.dropna().to_numpy(dtype=np.float64), seed=seed, level=level)
            rows[method] = {**interval.columns(column), "n": interval.n}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "method"
        return table

    def mean_curves(self, spec: str) -> dict[str, np.ndarray]:
        """Mean deletion (and insertion) score at each fraction, for plotting."""
        curves = self.curves[spec]
        return {k: (v if k == "fractions" else v.mean(0)) for k, v in curves.items()}


def _forward_seconds(model: ClipModel, images: torch.Tensor, batch_size: int) -> float:
    """Median time of one ``encode_image`` per batch, summed over the batches."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            total += median_seconds(functools.partial(model.encode_image, images[start:start + batch_size]))
    return total


def _batches(items: Sequence[Item], batch_size: int, keep_size: bool) -> list[tuple[int, int]]:
    """Consecutive index ranges; with the keep-size input only images of one size share a batch."""
    out: list[tuple[int, int]] = []
    start = 0
    while start < len(items):
        stop = min(len(items), start + batch_size)
        if keep_size:
            size = items[start].image.size
            stop = next((i for i in range(start + 1, stop) if items[i].image.size != size), stop)
        out.append((start, stop))
        start = stop
    return out


def _target_maps(model: ClipModel, request: Request, items: Sequence[Item], images: torch.Tensor,
                 targets: torch.Tensor, target_idx: list[int], batch_size: int,
                 timing: bool, progress: bool) -> tuple[list[torch.Tensor], float]:
    """Each item's map of its own target on the model's own input: the targets are paired with
    the images, so each image costs its own target only (a method whose maps depend on the set
    of prompts is given every text, and each image's map of its own target is kept). Keep-size
    maps cover the whole image: they are placed on the model's input (resized and centre-cropped
    like the image) by ``to_model_input``."""
    prompt_set = request.method.prompt_set
    keep_size = request.departures.keep_size
    own = targets if prompt_set else targets[target_idx][:, None]  # (K, E) or (N, 1, E)
    if timing:  # untimed warm-up: one-time costs are not the method's cost per image
        explain(model, [items[0].image] if keep_size else images[:1], own[:1], request)
    maps: list[torch.Tensor] = []
    seconds = 0.0
    for start, stop in tqdm(_batches(items, batch_size, keep_size), desc=f"{request} maps",
                            disable=not progress, leave=False):
        x = [it.image for it in items[start:stop]] if keep_size else images[start:stop]
        began = time.perf_counter()
        e = explain(model, x, own if prompt_set else own[start:stop], request)
        seconds += time.perf_counter() - began
        batch = e.maps.detach().cpu()
        for i in range(stop - start):
            one = batch[i, target_idx[start + i] if prompt_set else 0]
            # in float64, as the metrics upsample: a square image's map is scored exactly as before
            maps.append(to_model_input(one.double(), items[start + i].image.size, model.preprocess)
                        if keep_size else one)
    return maps, seconds


def evaluate(model: Model, items: Sequence[Any], methods: Sequence[str | Request] | None = None,
             *, texts: Sequence[str] | None = None, options: dict[str, dict[str, Any]] | None = None,
             steps: int = DEFAULT_STEPS, protocol: str = "ours", baseline: str | None = None,
             ties: str | None = None,
             seed: int = 0, rise_masks: int = 500, batch_size: int = 50, curve_batch: int | None = None,
             curves: Sequence[str] = ("deletion", "insertion"), timing: bool = True,
             keep_maps: bool = False, maps: dict[str, Sequence[torch.Tensor]] | None = None,
             progress: bool = False) -> Evaluation:
    """Explain every item's target with each method and score the maps; see :class:`Evaluation`.

    ``items``: :class:`Item` objects, or objects that make one (``evaluation_item(index)``:
    shapes scenes). ``methods``: ``"name"``, ``"name:mode"`` or requests (default: every
    registered method, every mode). ``texts``: the zero-shot classes (default: the items'
    ``classes`` where they name them, else the distinct targets); every target must be among
    them. ``options``: per method label, options for ``explain`` (default:
    :func:`method_options` with ``rise_masks`` and ``seed``). Deletion / insertion follow ``protocol`` and ``baseline``
    and ``ties`` (:func:`~eclip_core.metrics.perturbation_curves`) on the original model's own input;
    pointing game and energy need a mask. ``curves``: which perturbation curves to measure
    (``()``: localisation only, no forward pass per perturbation). ``timing``: measure the
    cost against one forward pass of the same items. ``keep_maps``: keep each method's map
    of every item's target, on the model's input grid (``Evaluation.maps``). ``maps``: such
    kept maps of an earlier evaluation of the same items, per method spec, scored again
    (e.g. under another protocol) instead of explaining anew; a spec they lack is explained.
    """
    given = as_items(items)
    # decoded once: the keep-size input and the placement of its maps need the image
    cases: list[Item] = [it if isinstance(it.image, Image.Image)
                         else dataclasses.replace(it, image=load_image(it.image)) for it in given]
    clip = as_model(model)
    if clip.preprocess is None or clip.tokenizer is None:
        raise InputError("evaluate needs the model's preprocess and tokenizer (a load_model() result)")
    classes = {it.classes for it in cases}
    if texts is None:
        texts = list(classes.pop()) if len(classes) == 1 and () not in classes \
            else list(dict.fromkeys(it.target for it in cases))
    texts = list(texts)
    missing = sorted({it.target for it in cases} - set(texts))
    if missing:
        raise InputError(f"targets not among the texts: {', '.join(map(repr, missing[:5]))}")
    requests = [resolve(m) for m in methods] if methods else all_requests()
    images = clip.native_input([it.image for it in cases])
    targets = clip.text_embeddings(texts)
    target_idx = [texts.index(it.target) for it in cases]
    with torch.no_grad():
        predicted = (F.normalize(clip.encode_image(images), dim=-1) @ targets.T).argmax(-1).tolist()
    right = [texts[p] in it.right_answers for p, it in zip(predicted, cases)]
    curve_batch = curve_batch or (64 if images.shape[-1] * images.shape[-2] <= 128 * 128 else 32)
    forward = _forward_seconds(clip, images, batch_size) if timing else float("nan")
    unknown = set(curves) - {"deletion", "insertion"}
    if unknown:
        raise InputError(f"curves must be among 'deletion', 'insertion'; got {sorted(unknown)}")
    rows: list[dict[str, Any]] = []
    measured: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    kept: dict[str, list[torch.Tensor]] = {}
    for request in tqdm(requests, desc="evaluate", disable=not progress):
        name = str(request)
        request = resolve(request, options=(options or {}).get(name)) if options and name in options \
            else evaluation_request(request, rise_masks=rise_masks, seed=seed)
        if maps is not None and name in maps:
            if len(maps[name]) != len(cases):
                raise InputError(f"{len(maps[name])} maps given for {name!r}, for {len(cases)} items")
            spec_maps, seconds[name] = list(maps[name]), float("nan")
        else:
            spec_maps, seconds[name] = _target_maps(clip, request, cases, images, targets, target_idx,
                                                    batch_size, timing, progress)
        if keep_maps:
            kept[name] = spec_maps
        results = {kind: perturbation_curves(clip, images, spec_maps, targets, target_idx, kind=kind,
                                             steps=steps, protocol=protocol, seed=seed,
                                             batch_size=curve_batch, baseline=baseline, ties=ties)
                   for kind in curves}
        if results:
            first = next(iter(results.values()))
            measured[name] = {"fractions": first[0].fractions,
                              **{kind: np.stack([c.scores for c in res]) for kind, res in results.items()}}
        for i, it in enumerate(cases):
            row = {"method": name, "item": i, "target": it.target, "predicted": texts[predicted[i]],
                   "right": right[i]}
            for kind, res in results.items():
                row[f"{kind}_auc"] = res[i].auc_score
                row[f"{kind}_acc_auc"] = res[i].auc_correct
            if it.mask is not None:
                row["pointing_game"] = float(pointing_game(spec_maps[i], it.mask))
                row["energy_in_mask"] = energy_in_mask(spec_maps[i], it.mask)
            rows.append(row)
    notes = [f"deletion: {direction('deletion_auc')}; insertion: {direction('insertion_auc')}",
             f"pointing_game, energy_in_mask: {direction('pointing_game')}"]
    if results:
        curve = next(iter(results.values()))[0]
        order = ties or ("raster" if protocol == "ours" else "random")
        notes.append(f"curves: protocol={protocol}, baseline={curve.baseline}, {len(curve.fractions)} points, "
                     f"ties in {order} order (seed {seed}), original model on its own input")
    notes.append(f"zero-shot top-1 over {len(texts)} texts")
    if timing:
        notes.append(f"cost_ratio: explain time / one forward pass of the same images "
                     f"({1000 * forward / len(cases):.3f} ms per image)")
    return Evaluation(pd.DataFrame(rows), measured, seconds if timing else {}, forward, texts, notes, kept)
