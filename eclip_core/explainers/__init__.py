"""One entry for every explainer: ``explain(model, images, texts, method=..., mode=...)``.

Every method has the same signature ``fn(model, images, targets, mode=..., **options)``
on a preprocessed (B, 3, H, W) tensor and (K, E) unit-norm targets, and returns
``(maps (B, K, gh, gw), scores (B, K))``; ``explain`` turns user input (PIL images,
paths, strings, embeddings) into those and wraps the result in an :class:`Explanation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import InputError
from ..images import keep_size_tensor, native_batch
from ..trace import check_images, text_tower, vision_tower
from .base import Explanation, check_finite, check_targets, cosine_scores, unit
from .attention import attention_rollout, raw_attention
from .eclip import attention_eclip, grad_eclip, text_eclip
from .gae import gae
from .gradcam import gradcam
from .maskclip import maskclip
from .rise import rise

MODES = ("faithful", "reference")


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable
    description: str
    modes: tuple[str, ...] = ("faithful",)
    text_route: str | None = None  # route of the text branch, where the method has one


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(Method("grad_eclip", grad_eclip, "Grad-ECLIP: dS/d(attention output) applied to the values",
                MODES, text_route="grad"))
register(Method("attention_eclip", attention_eclip,
                "Attention-ECLIP: dS/d(attention probabilities), summed over heads",
                MODES, text_route="attention"))
register(Method("attention", raw_attention, "raw self-attention of the last block (CLS row, mean over heads)"))
register(Method("rollout", attention_rollout, "attention rollout (Abnar & Zuidema 2020)"))
register(Method("gae", gae, "Generic Attention Explainability (Chefer et al. 2021), rollout over blocks"))
register(Method("gradcam", gradcam, "Grad-CAM on the tokens entering the last block"))
register(Method("maskclip", maskclip, "MaskCLIP-style dense similarity of value-path patch embeddings"))
register(Method("rise", rise, "RISE: saliency from randomly masked forward passes"))


def get_method(name: str, mode: str = "faithful") -> Method:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    method = METHODS[name]
    if mode not in method.modes:
        raise InputError(f"method {name!r} has no mode {mode!r}; its modes: {', '.join(method.modes)}")
    return method


# ----------------------------------------------------------------------------- inputs


def unpack(model, preprocess=None, tokenizer=None):
    """Accept a ``load_model`` result (model, preprocess, tokenizer) or a bare model."""
    if isinstance(model, tuple):
        model, pre, tok = model[:3]
        preprocess, tokenizer = preprocess or pre, tokenizer or tok
    return model, preprocess, tokenizer


def _param(model) -> torch.Tensor:
    return next(model.parameters())


def embed_dim(model) -> int:
    return vision_tower(model).output_dim


def text_targets(model, tokenizer, texts) -> torch.Tensor:
    """(K, E) unit-norm text embeddings of the original model, from strings or embeddings."""
    if isinstance(texts, torch.Tensor):
        return check_targets(texts.to(_param(model).device), embed_dim(model)).to(_param(model).dtype)
    tokens = tokenize(tokenizer, texts).to(_param(model).device)
    with torch.no_grad():
        return check_finite(unit(model.encode_text(tokens)), "the text tower", "text embeddings")


def tokenize(tokenizer, texts) -> torch.Tensor:
    """Token ids of K non-empty strings, or a clear error."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InputError("no targets to explain: the list of texts is empty")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text #{i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"text #{i} is empty")
    if tokenizer is None:
        raise InputError("strings need the model's tokenizer: pass tokenizer= or a load_model() result")
    tokens = tokenizer(texts)
    # Over-long texts are truncated by every open_clip-style tokenizer (the end-of-text
    # token kept last): say so. Tokenize again with room to spare and compare lengths
    # (the last non-padding position, the end-of-text token, gives the length).
    import warnings

    ctx = tokens.shape[-1]
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    try:
        full = tokenizer(texts, context_length=max(2 * ctx, ctx + 64))
        positions = torch.arange(1, full.shape[-1] + 1)
        lengths = ((full != pad) * positions).amax(dim=-1).tolist()
        needed = [f" ({n}{'+' if n == full.shape[-1] else ''} tokens)" for n in lengths]
    except Exception:  # a tokenizer without context_length=: a full last position may be cut
        lengths = [ctx + 1 if row[-1] != pad else ctx for row in tokens.tolist()]
        needed = [""] * len(lengths)
    for i, (text, length) in enumerate(zip(texts, lengths)):
        if length > ctx:
            excerpt = text if len(text) <= 60 else text[:57] + "..."
            warnings.warn(f"text #{i} {excerpt!r} is longer than the model's context length of "
                          f"{ctx} tokens{needed[i]}: it is truncated to its first {ctx} tokens",
                          stacklevel=3)
    return tokens


def _as_list(images):
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("no images given")
        return list(images)
    return [images]


def prepare_images(model, preprocess, images, mode: str):
    """(tensor to explain, tensor for the original model's pipeline or None)."""
    visual = vision_tower(model)
    p = _param(model)
    if isinstance(images, torch.Tensor):
        x = images.to(p.device, p.dtype)
        if x.ndim == 3:
            x = x[None]
        check_images(visual, x, any_size=mode == "reference")
        native = tuple(x.shape[-2:]) == tuple(visual.image_size)
        return x, (x if native else None)
    if preprocess is None:
        raise InputError("PIL images need the model's preprocess: pass preprocess= or a load_model() result")
    images = _as_list(images)
    original = native_batch(images, preprocess).to(p.device, p.dtype)
    if mode == "faithful":
        return original, original
    keep = [keep_size_tensor(im, preprocess, visual.patch_size[0]) for im in images]
    if len({tuple(t.shape) for t in keep}) > 1:
        raise InputError("reference mode explains each image at its own keep-size resolution; "
                         "these images have different sizes: explain them one call each")
    return torch.stack(keep).to(p.device, p.dtype), original


# ----------------------------------------------------------------------------- entries


def explain(model, images, texts, method: str = "attention_eclip", mode: str = "faithful", *,
            preprocess=None, tokenizer=None, **options) -> Explanation:
    """Explain B images for K texts (or K target embeddings) in one call.

    ``images``: PIL images or paths (run through the model's preprocess; reference
    mode also prepares the published keep-size input), or a preprocessed (B, 3, H, W)
    tensor. ``texts``: K strings, or a (K, E) tensor of embeddings.
    """
    model, preprocess, tokenizer = unpack(model, preprocess, tokenizer)
    spec = get_method(method, mode)
    vision_tower(model)
    targets = text_targets(model, tokenizer, texts)
    x, original = prepare_images(model, preprocess, images, mode)
    maps, scores = spec.fn(model, x, targets, mode=mode, **options) if len(spec.modes) > 1 \
        else spec.fn(model, x, targets, **options)
    result = Explanation(check_finite(maps.detach(), method),
                         check_finite(scores.detach(), method, "scores"), method, mode,
                         input_size=tuple(x.shape[-2:]))
    if mode == "reference" and original is not None:
        with torch.no_grad():
            result.scores_original = cosine_scores(model.encode_image(original), targets)
    return result


def image_targets(model, preprocess, images) -> torch.Tensor:
    """(K, E) unit-norm image embeddings from images, a preprocessed batch, or embeddings."""
    if isinstance(images, torch.Tensor) and images.ndim == 2:
        return check_targets(images, embed_dim(model)).to(_param(model).dtype)
    x, _ = prepare_images(model, preprocess, images, "faithful")
    with torch.no_grad():
        return unit(model.encode_image(x))


def explain_text(model, texts, images, method: str = "attention_eclip", mode: str = "faithful", *,
                 preprocess=None, tokenizer=None, n_blocks: int | None = None,
                 **options) -> Explanation:
    """Token maps (B, K, context_length) for B texts against K images (or image embeddings)."""
    model, preprocess, tokenizer = unpack(model, preprocess, tokenizer)
    spec = get_method(method, mode)
    if spec.text_route is None:
        raise InputError(f"method {method!r} has no text branch")
    text_tower(model)
    tokens = tokenize(tokenizer, texts).to(_param(model).device)
    targets = image_targets(model, preprocess, images)
    maps, scores, mask = text_eclip(model, tokens, targets, route=spec.text_route, mode=mode,
                                    n_blocks=n_blocks, **options)
    words = [token_strings(tokenizer, row[m].tolist()) for row, m in zip(tokens, mask)]
    return Explanation(check_finite(maps, method), check_finite(scores, method, "scores"),
                       method, mode, branch="text",
                       token_mask=mask, extras={"tokens": tokens, "words": words})


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Readable strings of token ids, for open_clip's BPE tokenizer and word-level ones."""
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, (list, tuple)):
        return [vocab[i] for i in ids]
    decoder = getattr(tokenizer, "decoder", None)
    if isinstance(decoder, dict):
        return [decoder.get(i, "?").replace("</w>", "") for i in ids]
    return [str(i) for i in ids]
