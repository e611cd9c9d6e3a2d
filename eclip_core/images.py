"""Reading images and turning them into the tensors a model's pipeline expects.

Two pipelines matter for the paper: the model's **native** preprocess (open_clip's
resize + centre crop + normalise), which every prediction and every metric uses, and
the published Grad-ECLIP code's **keep-size** preprocess (aspect ratio kept, short
side capped at 640, sides rounded to the patch size, bicubic, no crop), which only its
reference mode uses.
"""

from __future__ import annotations

import struct
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
        raise InputError(f"cannot decode image: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


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
                         f"({_one_line(err)})") from None
    except PermissionError:
        raise InputError(f"cannot read image {str(path)!r}: permission denied") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError) as err:
        reason = _one_line(err)
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
