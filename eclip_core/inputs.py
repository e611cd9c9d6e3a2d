"""User input in one place: images read once, texts tokenized, both turned into tensors.

Images (paths or PIL) are decoded once by :func:`load_image`; texts are checked and
tokenized by :func:`tokenize`; the model's own operations
(:meth:`eclip_core.clip.ClipModel.prepare`, :meth:`~eclip_core.clip.ClipModel.text_embeddings`)
turn them into what an explainer takes.

Two pipelines matter for the paper: the model's **native** preprocess (open_clip's
resize + centre crop + normalise), which every prediction and every metric uses, and
the published Grad-ECLIP code's **keep-size** preprocess (aspect ratio kept, short
side capped at 640, sides rounded to the patch size, bicubic, no crop), which only its
reference mode uses. One rule is ours, not the published code's: the long side is also
capped, at 1280 px (twice the short-side cap), with a one-line warning where it applies.
The published code caps only the short side, so a 4096x640 panorama became 41,000
tokens on a patch-8 model (a 27 GB attention matrix in the first block) and 10,000 on
ViT-B-16; with the cap every keep-size input has at most (640/p) x (1280/p) patches
(12,800 at patch 8, 3,200 at patch 16), and images up to 2:1 -- nearly every
photograph -- are resized exactly as the published code resizes them.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize
from torchvision.transforms import functional as TF

from . import maps as maps_
from .errors import InputError, one_line

#: What ``explain`` accepts as images: paths, PIL images, or a preprocessed tensor.
Images = Any

#: Images whose larger side exceeds this are downscaled (with a warning) before anything
#: else: explanations are computed on a few hundred pixels, so memory stays bounded.
MAX_SIDE = 4096
#: The published keep-size rule: the short side shrunk to at most this many pixels.
KEEP_SIZE_SHORT_SIDE = 640
#: Ours, on top of it: the long side at most this many pixels (bounds the token count).
KEEP_SIZE_LONG_SIDE = 2 * KEEP_SIZE_SHORT_SIDE


def load_image(image) -> Image.Image:
    """An RGB PIL image from a path or a PIL image; a clear error for anything unreadable.

    The EXIF orientation is applied; images whose larger side exceeds :data:`MAX_SIDE`
    are downscaled with a warning (JPEGs are decoded at reduced size, so memory stays
    bounded); grayscale, palette, alpha, 16-bit and float images become RGB (alpha on
    white, 16-bit scaled by its range rather than clipped).
    """
    original_size = None
    if isinstance(image, (str, Path)):
        image, original_size = _read(Path(image))
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image or a path, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"image has no pixels ({image.width}x{image.height})")
    try:
        try:
            image = ImageOps.exif_transpose(image)
        except (KeyError, TypeError, ValueError, SyntaxError, struct.error) as err:  # broken EXIF
            warnings.warn(f"ignoring the image's unreadable EXIF orientation ({err})", stacklevel=2)
        return _to_rgb(_bounded(image, original_size))
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError) as err:
        raise InputError(f"cannot decode image: {one_line(err)}") from None


def _read(path: Path) -> tuple[Image.Image, tuple[int, int] | None]:
    """Decode a file fully (so truncation shows here), JPEGs at reduced size when huge."""
    if path.is_dir():
        raise InputError(f"cannot read image {str(path)!r}: it is a directory")
    if not path.is_file():
        raise InputError(f"cannot read image {str(path)!r}: no such file")
    try:
        with Image.open(path) as opened:
            original_size = opened.size
            if max(opened.size) > MAX_SIDE and opened.format == "JPEG":
                # decode at 1/2, 1/4 or 1/8 scale, never below the bounded size
                opened.draft(opened.mode, _target_size(*opened.size))
            opened.load()
            image = opened.copy()
            if _orientation(opened) in (5, 6, 7, 8):  # rotated by 90 degrees once transposed
                original_size = original_size[::-1]
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {str(path)!r}: not an image file "
                         f"(or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as err:
        raise InputError(f"cannot read image {str(path)!r}: too large to decode safely "
                         f"({one_line(err)})") from None
    except PermissionError:
        raise InputError(f"cannot read image {str(path)!r}: permission denied") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError) as err:
        reason = one_line(err)
        if "truncated" in reason:
            reason = f"the file is truncated or corrupt ({reason})"
        raise InputError(f"cannot read image {str(path)!r}: {reason}") from None
    return image, original_size


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # a broken EXIF block is ignored here and reported by exif_transpose
        return None


def _target_size(width: int, height: int) -> tuple[int, int]:
    scale = MAX_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _bounded(image: Image.Image, original_size: tuple[int, int] | None = None) -> Image.Image:
    """The image with its larger side at most MAX_SIDE (a warning names both sizes)."""
    width, height = original_size or image.size
    if max(width, height) <= MAX_SIDE:
        return image
    size = _target_size(width, height)
    warnings.warn(f"image of {width}x{height} downscaled to {size[0]}x{size[1]} "
                  f"(larger side capped at {MAX_SIDE})", stacklevel=3)
    if image.size == size:
        return image
    if image.mode in ("P", "1"):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.resize(size, Image.Resampling.BICUBIC)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale as 8-bit L, scaled by the type's range."""
    arr = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if image.mode.startswith("I;16"):
        arr = arr / 65535 * 255
    elif image.mode == "F" and lo >= 0 and hi <= 1:
        arr = arr * 255
    elif lo >= 0 and hi <= 255:
        pass
    elif image.mode == "I" and lo >= 0 and hi <= 65535:
        arr = arr / 65535 * 255
    else:
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with 16-bit and float images rescaled rather than clipped, alpha on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _to_8bit(image)
    if image.mode in ("La", "RGBa"):  # premultiplied alpha
        image = image.convert("RGBA") if image.mode == "RGBa" else image.convert("LA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def normalization(preprocess) -> Normalize:
    """The Normalize step of an open_clip preprocess."""
    for step in getattr(preprocess, "transforms", []):
        if isinstance(step, Normalize):
            return step
    raise InputError("the preprocess has no Normalize step; pass the model's open_clip preprocess")


def native_batch(images, preprocess) -> torch.Tensor:
    """(B, 3, H, W) through the model's own preprocess."""
    return torch.stack([preprocess(load_image(im)) for im in images])


def keep_size_scaled(width: int, height: int) -> tuple[int, int]:
    """(width, height) after the keep-size shrink: short side <= 640 (the published
    rule), long side <= 1280 (ours); ``int()`` truncation as in the published code."""
    if long_side_capped(width, height):  # exact integer arithmetic: the long side is 1280
        long = max(width, height)
        return max(1, width * KEEP_SIZE_LONG_SIDE // long), max(1, height * KEEP_SIZE_LONG_SIDE // long)
    if min(width, height) > KEEP_SIZE_SHORT_SIDE:
        scale = min(width, height) / KEEP_SIZE_SHORT_SIDE
        return int(width / scale), int(height / scale)
    return width, height


def long_side_capped(width: int, height: int) -> bool:
    """Whether the keep-size shrink of this image is set by our long-side cap (an image
    longer than 1280 px and more elongated than 2:1), not by the published rule."""
    short, long = min(width, height), max(width, height)
    return (long > KEEP_SIZE_LONG_SIDE
            and long * KEEP_SIZE_SHORT_SIDE > max(short, KEEP_SIZE_SHORT_SIDE) * KEEP_SIZE_LONG_SIDE)


def keep_size_shape(width: int, height: int, patch: int) -> tuple[int, int]:
    """(height, width) of the keep-size input of a ``width`` x ``height`` image."""
    width, height = keep_size_scaled(width, height)
    return (max(1, int(height / patch + 0.5)) * patch, max(1, int(width / patch + 0.5)) * patch)


def keep_size_tensor(image, preprocess, patch: int) -> torch.Tensor:
    """(3, H, W): aspect kept, short side <= 640, long side <= 1280, sides rounded to the
    patch, bicubic, no crop."""
    image = load_image(image)
    scaled = keep_size_scaled(*image.size)
    if long_side_capped(*image.size):
        warnings.warn(f"keep-size input: the {image.width}x{image.height} image is shrunk to "
                      f"{scaled[0]}x{scaled[1]} (long side capped at {KEEP_SIZE_LONG_SIDE} px to bound "
                      f"the token count; the published code caps only the short side, at "
                      f"{KEEP_SIZE_SHORT_SIDE})", stacklevel=3)
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BICUBIC)
    size = keep_size_shape(image.width, image.height, patch)
    resized = TF.resize(image, list(size), interpolation=InterpolationMode.BICUBIC)
    return normalization(preprocess)(TF.to_tensor(resized))


# ----------------------------------------------------------------------------- geometry


def _resized(size: tuple[int, int], step: Resize) -> tuple[int, int]:
    """(height, width) of a ``size`` (height, width) picture after torchvision's ``Resize``."""
    h, w = size
    requested = [step.size] if isinstance(step.size, int) else list(step.size)
    if len(requested) == 2:
        return int(requested[0]), int(requested[1])
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(requested[0]), int(requested[0] * long / short)
    if step.max_size is not None and new_long > step.max_size:
        new_short, new_long = int(step.max_size * new_short / new_long), int(step.max_size)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def to_model_input(saliency: torch.Tensor, image_size: tuple[int, int], preprocess) -> torch.Tensor:
    """(..., H, W): maps that cover a whole ``image_size`` (width, height) image, on the
    pixels of the model's own input.

    A keep-size (reference-mode) map covers the whole image, while the model -- and
    every metric -- sees the image through its preprocess: the short side resized, then
    a centre crop. This reproduces that geometry on the map: it is upsampled
    bilinearly to the image's size after the preprocess's ``Resize``, then cropped (or
    zero-padded) as its ``CenterCrop`` does, so each value lands on the pixel it
    explains and the parts of the image the model never sees are dropped. Steps of the
    preprocess that do not move pixels (mode conversion, ``ToTensor``, ``Normalize``)
    are skipped; any other step is refused.
    """
    width, height = image_size
    canvas, out, at_pixels = (int(height), int(width)), saliency, False
    for step in getattr(preprocess, "transforms", None) or []:
        if isinstance(step, Resize):
            canvas = _resized(canvas, step)
            out, at_pixels = maps_.upsample(out, canvas), True
        elif isinstance(step, CenterCrop):
            if not at_pixels:
                out, at_pixels = maps_.upsample(out, canvas), True
            out = TF.center_crop(out, list(step.size))
            canvas = (int(step.size[0]), int(step.size[1]))
        elif isinstance(step, Normalize) or "ToTensor" in type(step).__name__:
            break
        elif "convert" not in (getattr(step, "__name__", "") + type(step).__name__).lower():
            raise InputError(f"cannot place a map on the model's input: the preprocess step {step!r} is "
                             f"neither a Resize nor a CenterCrop")
    return out if at_pixels else maps_.upsample(out, canvas)


# ----------------------------------------------------------------------------- images


def as_list(images) -> list:
    """One image or a sequence of them, as a non-empty list."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("no images given")
        return list(images)
    return [images]


def check_image_tensor(images: torch.Tensor) -> torch.Tensor:
    """``images`` unchanged if it is a float tensor, else a clear error saying what to pass.

    A tensor is taken as the model's preprocessed input (normalised floats); integer,
    bool and complex tensors are not that (a uint8 photograph is not normalised), so
    they are refused rather than explained as they are.
    """
    if images.is_complex() or not images.is_floating_point():
        raise InputError(f"an image tensor must be float and already preprocessed with the model's "
                         f"preprocess, got dtype {images.dtype}; pass PIL images or paths instead")
    return images


# ----------------------------------------------------------------------------- texts


def check_targets(targets: torch.Tensor, embed_dim: int | None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """(K, E) unit-norm targets in ``dtype`` (default: their own), or a clear error.

    Refused: another shape (E unchecked where the model declares none), no rows, a
    dtype other than float, NaN or Inf, and a row whose norm overflows or vanishes in
    its dtype (it would silently become a zero or NaN direction). Rows are normalised
    in their own dtype, then converted.
    """
    return (targets / target_norms(targets, embed_dim)[:, None]).to(dtype or targets.dtype)


def target_norms(targets: torch.Tensor, embed_dim: int | None) -> torch.Tensor:
    """(K,) the norms of (K, E) target embeddings after :func:`check_targets`' checks, for a
    caller that divides by them later (the explanation basis scales its maps instead)."""
    if targets.ndim != 2 or (embed_dim is not None and targets.shape[1] != embed_dim):
        raise InputError(f"target embeddings must be (K, {embed_dim or 'E'}), got {tuple(targets.shape)}")
    if targets.shape[0] == 0:
        raise InputError("no targets to explain (K = 0)")
    if targets.is_complex() or not targets.is_floating_point():
        raise InputError(f"target embeddings must be a float tensor (e.g. model.encode_text's output), "
                         f"got dtype {targets.dtype}")
    norms = targets.norm(dim=-1)  # NaN or Inf anywhere makes its row's norm so: one pass over the targets
    if not torch.isfinite(norms).all() and not torch.isfinite(targets).all():
        raise InputError("target embeddings contain NaN or Inf")
    bad = (~torch.isfinite(norms)) | (norms == 0)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        what = ("is a zero vector" if not targets[row].any()
                else f"has a norm that over- or underflows in {targets.dtype}")
        raise InputError(f"target embedding #{row} {what} (largest |value| "
                         f"{float(targets[row].abs().max()):.3g}); pass unit-norm embeddings")
    return norms


def is_paired(texts) -> bool:
    """Whether ``texts`` gives each image its own list of texts (a list of lists)."""
    return isinstance(texts, (list, tuple)) and bool(texts) and all(isinstance(t, (list, tuple)) for t in texts)


def tokenize(tokenizer, texts: str | Sequence[str]) -> torch.Tensor:
    """Token ids of K non-empty strings, or a clear error; over-long texts are cut with a warning."""
    if not isinstance(texts, (str, list, tuple)):
        raise InputError(f"texts must be a string, a list of strings or a (K, E) float tensor of "
                         f"embeddings, got {type(texts).__name__}")
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
    _check_vocabulary(tokenizer, texts)
    tokens = tokenizer(texts)
    _warn_truncated(tokenizer, texts, tokens)
    return tokens


def _excerpt(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_vocabulary(tokenizer, texts: list[str]) -> None:
    """Word-level tokenizers (the embedded model's) read words outside their vocabulary as
    ``<unk>`` and drop symbols such as emoji: "a cat" and "a dog" would be the same text.
    One warning per text names its unknown words; a text with no known word is refused.
    Byte-level BPE tokenizers (open_clip's) represent any text and are not checked."""
    split = getattr(tokenizer, "split_known", None)
    if not callable(split):
        return
    vocabulary = getattr(tokenizer, "vocab", ())
    listed = ", ".join(w for w in vocabulary if not (w.startswith("<") and w.endswith(">")))
    for i, text in enumerate(texts):
        known, unknown = split(text)
        if not known:
            raise InputError(f"text #{i} {_excerpt(text)!r} has no word the model's tokenizer knows; its "
                             f"vocabulary: {listed}")
        if unknown:
            warnings.warn(f"text #{i} {_excerpt(text)!r}: {', '.join(map(repr, unknown))} "
                          f"{'is' if len(unknown) == 1 else 'are'} not in the model's vocabulary and "
                          f"cannot change the explanation (read as <unk> or dropped; 'eclip methods' "
                          f"lists the vocabulary)", stacklevel=4)


def _warn_truncated(tokenizer, texts: list[str], tokens: torch.Tensor) -> None:
    """Over-long texts are truncated by every open_clip-style tokenizer (end-of-text kept
    last): say so. Tokenize again with room to spare; the last non-padding position, the
    end-of-text token, gives each text's length."""
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
            warnings.warn(f"text #{i} {_excerpt(text)!r} is longer than the model's context length of "
                          f"{ctx} tokens{needed[i]}: it is truncated to its first {ctx} tokens",
                          stacklevel=4)


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Readable strings of token ids, for open_clip's BPE tokenizer and word-level ones."""
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, (list, tuple)):
        return [vocab[i] for i in ids]
    decoder = getattr(tokenizer, "decoder", None)
    if isinstance(decoder, dict):
        return [decoder.get(i, "?").replace("</w>", "") for i in ids]
    return [str(i) for i in ids]
