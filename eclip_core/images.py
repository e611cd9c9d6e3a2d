"""Reading images and turning them into the tensors a model's pipeline expects.

Two pipelines matter for the paper: the model's **native** preprocess (open_clip's
resize + centre crop + normalise), which every prediction and every metric uses, and
the published Grad-ECLIP code's **keep-size** preprocess (aspect ratio kept, short
side capped at 640, sides rounded to the patch size, bicubic, no crop), which only its
reference mode uses.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode, Normalize
from torchvision.transforms import functional as TF

from .errors import InputError

#: Images whose larger side exceeds this are downscaled (with a warning) before anything
#: else: explanations are computed on a few hundred pixels, so memory stays bounded.
MAX_SIDE = 4096
KEEP_SIZE_SHORT_SIDE = 640


def load_image(image) -> Image.Image:
    """An RGB PIL image from a path or a PIL image; a clear error for anything unreadable."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"cannot read image {str(path)!r}: no such file")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise InputError(f"cannot read image {str(path)!r}: {err}") from None
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image or a path, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"image has no pixels ({image.width}x{image.height})")
    return _to_rgb(_bounded(ImageOps.exif_transpose(image)))


def _bounded(image: Image.Image) -> Image.Image:
    side = max(image.size)
    if side <= MAX_SIDE:
        return image
    scale = MAX_SIDE / side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    warnings.warn(f"image of {image.width}x{image.height} downscaled to {size[0]}x{size[1]} "
                  f"(larger side capped at {MAX_SIDE})", stacklevel=3)
    return image.resize(size, Image.Resampling.BICUBIC)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with 16-bit and float images rescaled rather than clipped, alpha on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
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


def keep_size_shape(width: int, height: int, patch: int) -> tuple[int, int]:
    """(height, width) of the published code's keep-size input."""
    if min(width, height) > KEEP_SIZE_SHORT_SIDE:
        scale = min(width, height) / KEEP_SIZE_SHORT_SIDE
        width, height = int(width / scale), int(height / scale)
    return (max(1, int(height / patch + 0.5)) * patch, max(1, int(width / patch + 0.5)) * patch)


def keep_size_tensor(image, preprocess, patch: int) -> torch.Tensor:
    """(3, H, W): aspect kept, short side <= 640, sides rounded to the patch, bicubic, no crop."""
    image = load_image(image)
    if min(image.size) > KEEP_SIZE_SHORT_SIDE:
        scale = min(image.size) / KEEP_SIZE_SHORT_SIDE
        image = image.resize((int(image.width / scale), int(image.height / scale)),
                             Image.Resampling.BICUBIC)
    size = keep_size_shape(image.width, image.height, patch)
    resized = TF.resize(image, list(size), interpolation=InterpolationMode.BICUBIC)
    return normalization(preprocess)(TF.to_tensor(resized))
