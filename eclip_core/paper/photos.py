"""Photographs to explain: a reader's folder, or the sample photographs scikit-image ships.

A folder of photographs comes with a prompts file, ``prompts.txt``, that names the images
to explain and the texts to explain them against, one image per line::

    # lines starting with '#' and blank lines are ignored
    dog.jpg: a dog | a ball
    street.png: a bicycle | a car | a traffic light

The part before the first ``:`` is a file name in the folder; after it, one or more
prompts separated by ``|``. Only the images listed are read, in the file's order.

Without a folder, :func:`load_photos` returns four of scikit-image's sample photographs
(an astronaut, a cup of coffee, a cat, a rocket; all in the public domain or CC0), each
with two prompts: the object it shows and another.

:func:`at_published_scale` shrinks photographs to the enlargement the published code works at
for ViT-B/16 (a keep-size input at most 640/224 times the model's input), so that a model with a
smaller input is not shown maps stretched from a grid many times finer than that.

The embedded model reads only the 20 words of the shapes world, so it cannot read a
photograph's prompts; :func:`photo_texts` then explains, for each photograph, the shapes
prompts the model itself ranks highest on it, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import InputError
from ..evaluation import zero_shot_scores
from ..inputs import KEEP_SIZE_SHORT_SIDE, load_image
from ..models import Model, as_model
from ..world import shapes

PROMPTS_FILE = "prompts.txt"

#: scikit-image's sample photographs (``skimage.data``) and their prompts: what the photograph
#: shows first, then another object (present in the photograph or not).
SAMPLE_PHOTOS: dict[str, tuple[str, ...]] = {
    "astronaut": ("an astronaut", "a flag"),
    "coffee": ("a cup of coffee", "a spoon"),
    "chelsea": ("a cat", "a dog"),
    "rocket": ("a rocket", "a tree"),
}


@dataclass(frozen=True)
class Photo:
    """One photograph to explain: its name, the RGB image, and its prompts."""

    name: str
    image: Image.Image
    prompts: tuple[str, ...]


def parse_prompts(text: str, source: str = PROMPTS_FILE) -> dict[str, tuple[str, ...]]:
    """``{file name: prompts}`` from the text of a prompts file (format: module docstring)."""
    entries: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, rest = line.partition(":")
        prompts = tuple(p.strip() for p in rest.split("|"))
        where = f"{source}, line {number}"
        if not colon or not name.strip():
            raise InputError(f"{where}: expected 'image file: prompt | prompt', got {line!r}")
        if not all(prompts):
            raise InputError(f"{where}: every prompt must be non-empty text (prompts are separated by '|')")
        if name.strip() in entries:
            raise InputError(f"{where}: {name.strip()!r} is listed twice")
        entries[name.strip()] = prompts
    if not entries:
        raise InputError(f"{source} lists no image (expected lines 'image file: prompt | prompt')")
    return entries


def sample_photos() -> list[Photo]:
    """scikit-image's sample photographs with :data:`SAMPLE_PHOTOS`' prompts."""
    try:
        from skimage import data
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("the sample photographs need scikit-image: pip install scikit-image") from None
    return [Photo(name, Image.fromarray(getattr(data, name)()).convert("RGB"), prompts)
            for name, prompts in SAMPLE_PHOTOS.items()]


def load_photos(folder: str | Path | None = None) -> list[Photo]:
    """The photographs of ``folder`` listed in its ``prompts.txt``, or the sample photographs."""
    if folder is None or str(folder) == "":
        return sample_photos()
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"photos: {str(folder)!r} is not a folder")
    listing = folder / PROMPTS_FILE
    if not listing.is_file():
        raise InputError(f"photos: {str(folder)!r} has no {PROMPTS_FILE}; write one line per image, "
                         f"'dog.jpg: a dog | a ball'")
    photos = []
    for name, prompts in parse_prompts(listing.read_text(encoding="utf-8-sig"), str(listing)).items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{listing}: {name!r} is not a file in {str(folder)!r}")
        try:
            image = load_image(path)
        except InputError as err:
            raise InputError(f"{name}: {err}") from None
        photos.append(Photo(name, image, prompts))
    return photos


#: The published code's scale for ViT-B/16: its keep-size input's short side (640) over the
#: model's input side (224), about 2.9.
PUBLISHED_SCALE = KEEP_SIZE_SHORT_SIDE / 224


def at_published_scale(photos: Sequence[Photo], model: Model, scale: float = PUBLISHED_SCALE) -> list[Photo]:
    """The photographs shrunk (aspect kept, bicubic) so that the short side is at most ``scale``
    times the model's input side: the published code explains a photograph for ViT-B/16 at most
    640/224 times its input, so a model with a smaller input is shown its maps at the same
    enlargement rather than stretched from a grid many times finer. Smaller photographs are
    kept as they are."""
    if not scale >= 1:
        raise InputError(f"scale must be at least 1 (the model's own input), got {scale!r}")
    side = round(scale * min(as_model(model).image_size))
    out = []
    for photo in photos:
        width, height = photo.image.size
        short = min(width, height)
        if short <= side:
            out.append(photo)
            continue
        size = (max(1, round(width * side / short)), max(1, round(height * side / short)))
        out.append(Photo(photo.name, photo.image.resize(size, Image.Resampling.BICUBIC), photo.prompts))
    return out


def reads_prompts(model: Model, prompts: Sequence[str]) -> bool:
    """Whether the model's tokenizer reads every prompt whole (a word-level tokenizer such as
    the embedded model's must know each word; open_clip's byte-level BPE reads any text)."""
    split = getattr(as_model(model).tokenizer, "split_known", None)
    return not callable(split) or not any(split(p)[1] for p in prompts)


def photo_texts(model: Model, photos: Sequence[Photo], *, fallback: Sequence[str] | None = None,
                top: int = 2) -> tuple[list[list[str]], bool]:
    """The texts to explain on each photograph, and whether they are the photographs' own.

    A model that reads the prompts explains each photograph's own; one that cannot (the
    embedded model) explains the ``top`` texts of ``fallback`` (default: every shapes
    prompt) that it ranks highest on each photograph."""
    if all(reads_prompts(model, p.prompts) for p in photos):
        return [list(p.prompts) for p in photos], True
    candidates = list(fallback) if fallback is not None else shapes.prompts()
    scores = zero_shot_scores(model, [p.image for p in photos], candidates)
    best = scores.topk(min(top, len(candidates)), dim=-1).indices.tolist()
    return [[candidates[i] for i in row] for row in best], False
