"""The text branch against a truth: what each word of a caption is worth to the model's score.

A shapes caption ("a red star and a yellow cross") names objects by a colour word and a shape
word. Each such **content word** is replaced, one at a time, by every other word of its kind
(another colour, another shape): the captions stay sentences of the world, in distribution.
The word's **effect** is the caption's cosine with its image minus the mean cosine over those
substitutions: how much the model's score owes to that word being what it is.

A token map (:func:`~eclip_core.explainers.explain_text`) is held against it per caption: the
Spearman correlation, over the caption's content words, of the map's weight on each word with
the word's effect (:func:`text_agreement`). Two baselines blind to the model: a **uniform** map
(equal weights: ranks nothing, correlation 0) and a **position** map (weights growing along the
caption, a recency prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..evaluation import zero_shot_scores
from ..explainers import explain_text
from ..models import Model, as_model
from ..stats import Interval, bootstrap, spearman
from ..world import shapes

KINDS = {"colour": tuple(shapes.COLOURS), "shape": tuple(shapes.SHAPES)}


def content_words(caption: str) -> list[tuple[int, str, str]]:
    """(index in the caption's words, word, kind) of every colour and shape word."""
    out = []
    for i, word in enumerate(caption.split()):
        for kind, words in KINDS.items():
            if word in words:
                out.append((i, word, kind))
    return out


def substitution_effects(model: Model, caption: str, image: Any) -> list[tuple[int, str, float]]:
    """(word index, word, effect) per content word of ``caption`` on ``image``: the cosine of
    the caption minus the mean cosine of the captions with that word replaced by each other
    word of its kind."""
    words = caption.split()
    found = content_words(caption)
    if not found:
        raise InputError(f"the caption {caption!r} has no colour or shape word to substitute")
    variants, owners = [caption], []
    for index, word, kind in found:
        for other in KINDS[kind]:
            if other != word:
                variants.append(" ".join(words[:index] + [other] + words[index + 1:]))
                owners.append(index)
    scores = zero_shot_scores(model, [image], variants)[0].double().cpu().numpy()
    owners_arr = np.asarray(owners)
    return [(index, word, float(scores[0] - scores[1:][owners_arr == index].mean())) for index, word, _ in found]


def word_weights(words: Sequence[str], weights: torch.Tensor, caption: str) -> np.ndarray | None:
    """The map's weight on each word of ``caption`` from its tokens' ``words`` and ``weights``
    (the explained tokens, in order); None where the tokenizer does not give one token per word."""
    said = caption.split()
    if [w.lower() for w in words] != [w.lower() for w in said]:
        return None
    return weights.detach().double().cpu().numpy()


def text_agreement(model: Model, captions: Sequence[str], images: Sequence[Any],
                   method: str = "attention_eclip", **options: Any) -> pd.DataFrame:
    """One row per caption (each against its own image): the Spearman correlation over its
    content words of the token map's weights (``method`` with ``options``) with the words'
    substitution effects (``map``), and of the two baselines' (``uniform``, ``position``);
    ``content_share``: the map's mass on the content words; ``colour_weight``, ``shape_weight``,
    ``colour_effect``, ``shape_effect``: per kind of word, the map's mean weight and the words'
    mean effect. Captions whose tokens are not one
    per word are left out (``skipped`` in the frame's attrs)."""
    clip = as_model(model)
    if len(captions) != len(images) or not captions:
        raise InputError(f"one image per caption, please: {len(captions)} captions, {len(images)} images")
    result = explain_text(clip, list(captions), list(images), method=method, **options)
    rows, skipped = [], 0
    for i, (caption, image) in enumerate(zip(captions, images)):
        mask = result.token_mask
        assert mask is not None  # a text explanation always carries its token mask
        weights = word_weights(result.extras["words"][i], result.maps[i, i][mask[i]], caption)
        if weights is None:
            skipped += 1
            continue
        effects = substitution_effects(clip, caption, image)
        index = [e[0] for e in effects]
        truth = torch.tensor([e[2] for e in effects], dtype=torch.float64)
        mine = torch.from_numpy(weights[index])
        position = torch.tensor(index, dtype=torch.float64)
        kinds = [kind for _, _, kind in content_words(caption)]
        row = {"caption": caption, "map": float(spearman(mine, truth)),
               "uniform": float(spearman(torch.ones_like(truth), truth)),
               "position": float(spearman(position, truth)),
               "content_share": float(weights[index].sum())}
        for kind in KINDS:  # per kind of word: the map's mean weight and the words' mean effect
            chosen = [j for j, k in enumerate(kinds) if k == kind]
            row[f"{kind}_weight"] = float(mine[chosen].mean())
            row[f"{kind}_effect"] = float(truth[chosen].mean())
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["skipped"] = skipped
    return frame


def agreement_intervals(frame: pd.DataFrame, seed: int = 0) -> dict[str, Interval]:
    """Mean agreement of the map and of each baseline with its 95% interval (captions resampled)."""
    if frame.empty:
        raise InputError("no caption was measured")
    return {column: bootstrap(frame[column].to_numpy(dtype=np.float64), seed=seed)
            for column in ("map", "uniform", "position")}
