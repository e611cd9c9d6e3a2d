"""The two entries: ``explain`` (image maps) and ``explain_text`` (token maps).

They turn user input (paths, PIL images, strings, embeddings) into tensors once, check
the method, mode and options up front, run the explainer, and wrap its output in an
:class:`Explanation` that says which forward pass was explained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..clip import ClipModel
from ..errors import InputError
from ..inputs import Images, is_paired, token_strings
from ..models import Model, as_model
from .base import Explanation, check_finite, cosine_scores, grad_mode_independent
from .eclip import text_eclip
from .registry import METHODS, Method, Request, resolve

Texts = str | Sequence[str] | Sequence[Sequence[str]] | torch.Tensor


def explain(model: Model, images: Images, texts: Texts, method: str | Method | Request = "attention_eclip",
            mode: str | None = None, *, preprocess: Callable | None = None, tokenizer: Callable | None = None,
            **options: Any) -> Explanation:
    """Explain B images for K texts (or K target embeddings) in one call.

    ``model``: a ``load_model()`` result, or a CLIP (then pass ``preprocess`` and, for
    strings, ``tokenizer``). ``images``: paths or PIL images (run through the model's
    preprocess; ``mode="reference"`` also prepares the published keep-size input), or a
    preprocessed (B, 3, H, W) float tensor. ``texts``: K strings or a (K, E) tensor of
    embeddings, explained for every image; or, per image, its own list of strings (a list of
    B lists, of any lengths): then each image costs only its own targets (``maps[b, k]``
    explains ``texts[b][k]``; K is the longest list, and where lists differ in length
    ``target_mask`` marks the real entries, the others being NaN). ``method``: a name,
    ``"name:mode"`` or a :class:`Request`; ``mode``: ``"faithful"`` (default) or
    ``"reference"``. ``options``: the method's own (see ``METHODS[method].options``); an
    unknown one is refused.

    Works under ``torch.no_grad()``, ``torch.inference_mode()`` and with frozen
    parameters; the caller's grad mode and ``requires_grad`` flags are left unchanged.
    """
    clip = as_model(model, preprocess, tokenizer)
    request = resolve(method, mode, options, model=clip)
    departures = request.departures_for(clip)  # the mode's and the method's own
    x, original = clip.prepare(images, keep_size=departures.keep_size)
    lengths = None
    if is_paired(texts):
        targets, lengths = clip.paired_text_embeddings(texts, len(x))  # type: ignore[arg-type]
    else:
        targets = clip.text_embeddings(texts)
    if targets.ndim == 3 and len(targets) != len(x):
        raise InputError(f"per-image targets for {len(targets)} images, but {len(x)} images were given")
    # any explainer, the registered ones included, runs whatever the caller's grad mode
    fn = grad_mode_independent(request.method.fn)
    mask = None
    if lengths is None or len(set(lengths)) == 1:
        maps, scores = fn(clip, x, targets, departures=departures, **request.options)
    else:  # lists of different lengths: one call per length, so each image costs its own texts
        maps, scores, mask = _by_length(fn, clip, x, targets, lengths, departures=departures, **request.options)
    scores_original = None
    if departures.any and original is not None:  # the certificate: the deployed model's own score
        with torch.no_grad():
            scores_original = cosine_scores(clip.encode_image(original), targets)
        if mask is not None:
            scores_original = scores_original.masked_fill(~mask, float("nan"))
    real = (slice(None),) if mask is None else (mask,)
    check_finite(maps.detach()[real], request.name)
    check_finite(scores.detach()[real], request.name, "scores")
    return Explanation(maps.detach(), scores.detach(), request, departures,
                       scores_original=scores_original, input_size=(x.shape[-2], x.shape[-1]),
                       target_mask=mask)


def _by_length(fn, model: ClipModel, x: torch.Tensor, targets: torch.Tensor, lengths: list[int],
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


def explain_text(model: Model, texts: str | Sequence[str], images: Images,
                 method: str | Method | Request = "attention_eclip", mode: str | None = None, *,
                 preprocess: Callable | None = None, tokenizer: Callable | None = None,
                 **options: Any) -> Explanation:
    """Token maps (B, K, context_length) for B texts against K images (or image embeddings).

    ``options``: ``loosened``, ``qk`` and ``n_blocks`` (the text blocks summed).
    """
    clip = as_model(model, preprocess, tokenizer)
    request = resolve(method, mode, options, text=True, model=clip)
    departures = request.departures
    tokens = clip.tokenize(texts)
    targets = clip.image_embeddings(images)
    assert request.method.text_route is not None
    maps, scores, mask = text_eclip(clip, tokens, targets, route=request.method.text_route,
                                    departures=departures, **request.options)
    scores_original = None
    if departures.any:
        with torch.no_grad():
            scores_original = cosine_scores(clip.encode_text(tokens), targets)
    words = [token_strings(clip.tokenizer, row[m].tolist()) for row, m in zip(tokens, mask)]
    return Explanation(check_finite(maps, request.name), check_finite(scores, request.name, "scores"),
                       request, departures, branch="text", token_mask=mask,
                       scores_original=scores_original, extras={"tokens": tokens, "words": words})


__all__ = ["METHODS", "explain", "explain_text"]
