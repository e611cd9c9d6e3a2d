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

from . import shapes
from .evaluation import evaluate, method_options, zero_shot_predictions
from .explainers import parse_spec
from .inputs import unpack
from .metrics import cascade
from .stats import Interval, bootstrap, paired_difference


def held_out(n: int, n_objects: int | tuple[int, ...] = 1, sample: int = 0) -> list[shapes.Scene]:
    """``n`` held-out scenes of disjoint sample ``sample`` (0: the book's)."""
    return shapes.eval_set(n, n_objects, seed=shapes.EVAL_SEED + sample)


def _interval_columns(name: str, interval: Interval) -> dict[str, float]:
    return {name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high}


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
    scenes = held_out(pool, 1, sample)
    predicted = zero_shot_predictions((model, preprocess, tokenizer), [s.image for s in scenes], prompts).tolist()
    accuracy = float(np.mean([prompts[p] == f"a {s.objects[0].phrase}" for p, s in zip(predicted, scenes)]))
    pairs = _matched_pairs(scenes, predicted, prompts, seed=sample)
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
        images = [s.image for s in held_out(n_images, (1, 2), sample)]
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


# ----------------------------------------------------------------------------- helpers for the book


def zero_fraction(maps: torch.Tensor) -> float:
    """Fraction of exact zeros in a batch of maps (ReLU maps leave ties that a deletion order must break)."""
    return float((maps == 0).double().mean())
