"""The two entries: ``explain`` (image maps) and ``explain_text`` (token maps).

They turn user input (paths, PIL images, strings, embeddings) into tensors once, check
the method, mode and options up front, run the explainer, and wrap its output in an
:class:`Explanation` that says which forward pass was explained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import trace
from ..errors import InputError
from ..inputs import (
    Images,
    image_targets,
    is_paired,
    paired_text_targets,
    prepare_images,
    text_targets,
    token_strings,
    tokenize,
    unpack,
)
from .base import Explanation, check_finite, cosine_scores, grad_mode_independent
from .eclip import text_eclip
from .registry import METHODS, get_method

Texts = str | Sequence[str] | Sequence[Sequence[str]] | torch.Tensor


def explain(model, images: Images, texts: Texts, method: str = "attention_eclip",
            mode: str = "faithful", *, preprocess=None, tokenizer=None, **options: Any) -> Explanation:
    """Explain B images for K texts (or K target embeddings) in one call.

    ``model``: a ``load_model()`` result or an open_clip CLIP (then pass ``preprocess``
    and, for strings, ``tokenizer``). ``images``: paths or PIL images (run through the
    model's preprocess; ``mode="reference"`` also prepares the published keep-size
    input), or a preprocessed (B, 3, H, W) float tensor. ``texts``: K strings or a (K, E)
    tensor of embeddings, explained for every image; or, per image, its own list of
    strings (a list of B lists, of any lengths): then each image costs only its own
    targets (``maps[b, k]`` explains ``texts[b][k]``; K is the longest list, and where lists
    differ in length ``target_mask`` marks the real entries, the others being NaN). ``options``: the method's own (see
    ``METHODS[method].options``); an unknown one is refused.

    Works under ``torch.no_grad()``, ``torch.inference_mode()`` and with frozen
    parameters; the caller's grad mode and ``requires_grad`` flags are left unchanged.
    """
    model, preprocess, tokenizer = unpack(model, preprocess, tokenizer)
    spec = get_method(method, mode)
    spec.check(mode, options)
    trace.vision_tower(model)
    departures = spec.departures(model, mode, options)  # the mode's and the method's own
    x, original = prepare_images(model, preprocess, images, departures)
    lengths = None
    if is_paired(texts):
        targets, lengths = paired_text_targets(model, tokenizer, texts, len(x))  # type: ignore[arg-type]
    else:
        targets = text_targets(model, tokenizer, texts)
    if targets.ndim == 3 and len(targets) != len(x):
        raise InputError(f"per-image targets for {len(targets)} images, but {len(x)} images were given")
    # any explainer, the registered ones included, runs whatever the caller's grad mode
    fn = grad_mode_independent(spec.fn)
    mask = None
    if lengths is None or len(set(lengths)) == 1:
        maps, scores = fn(model, x, targets, departures=departures, **options)
    else:  # lists of different lengths: one call per length, so each image costs its own texts
        maps, scores, mask = _by_length(fn, model, x, targets, lengths, departures=departures, **options)
    scores_original = None
    if departures.any and original is not None:  # the certificate: the deployed model's own score
        with torch.no_grad():
            scores_original = cosine_scores(model.encode_image(original), targets)
        if mask is not None:
            scores_original = scores_original.masked_fill(~mask, float("nan"))
    real = (slice(None),) if mask is None else (mask,)
    check_finite(maps.detach()[real], method)
    check_finite(scores.detach()[real], method, "scores")
    return Explanation(maps.detach(), scores.detach(), method, mode, departures,
                       scores_original=scores_original, input_size=(x.shape[-2], x.shape[-1]),
                       target_mask=mask)


def _by_length(fn, model, x: torch.Tensor, targets: torch.Tensor, lengths: list[int],
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maps and scores (B, K, ...) of per-image targets padded to K = the longest list, by one
    call per distinct length; padded entries are NaN, ``mask`` (B, K) marks the real ones."""
    batch, k = targets.shape[:2]
    mask = torch.arange(k, device=targets.device)[None] < torch.tensor(lengths, device=targets.device)[:, None]
    maps = scores = None
    for length in sorted(set(lengths)):
        index = torch.tensor([b for b, n in enumerate(lengths) if n == length], device=x.device)
        m, s = fn(model, x[index], targets[index, :length], **kwargs)
        if maps is None or scores is None:
            maps = m.new_full((batch, k, *m.shape[2:]), float("nan"))
            scores = s.new_full((batch, k), float("nan"))
        maps[index, :length] = m
        scores[index, :length] = s
    assert maps is not None and scores is not None
    return maps, scores, mask


def explain_text(model, texts: str | Sequence[str], images: Images, method: str = "attention_eclip",
                 mode: str = "faithful", *, preprocess=None, tokenizer=None, **options: Any) -> Explanation:
    """Token maps (B, K, context_length) for B texts against K images (or image embeddings).

    ``options``: ``loosened``, ``qk`` and ``n_blocks`` (the text blocks summed).
    """
    model, preprocess, tokenizer = unpack(model, preprocess, tokenizer)
    spec = get_method(method, mode)
    departures = spec.check(mode, options, text=True)
    trace.text_tower(model)
    tokens = tokenize(tokenizer, texts).to(next(model.parameters()).device)
    targets = image_targets(model, preprocess, images)
    assert spec.text_route is not None
    maps, scores, mask = text_eclip(model, tokens, targets, route=spec.text_route,
                                    departures=departures, **options)
    scores_original = None
    if departures.any:
        with torch.no_grad():
            scores_original = cosine_scores(model.encode_text(tokens), targets)
    words = [token_strings(tokenizer, row[m].tolist()) for row, m in zip(tokens, mask)]
    return Explanation(check_finite(maps, method), check_finite(scores, method, "scores"),
                       method, mode, departures, branch="text", token_mask=mask,
                       scores_original=scores_original, extras={"tokens": tokens, "words": words})


__all__ = ["METHODS", "explain", "explain_text"]
