"""A procedural world of coloured shapes, with ground-truth masks and captions.

Every scene is an RGB image (64x64 by default) holding one to three objects on a
low-contrast textured background (a tinted grey with a gradient, smooth blotches
and pixel noise).  An object is a shape (``SHAPES``) painted in a colour
(``COLOURS``) at a random size, position and rotation.  Objects overlap little:
a placement is rejected when it would cover more than ``MAX_OVERLAP`` of either
object's area.  For each object the scene keeps

* its phrase, e.g. ``"red circle"``;
* its ground-truth mask: the pixels where the object is *visible*, i.e. its
  silhouette minus whatever later objects were drawn over it.

The caption joins the phrases: ``"a red circle and a blue square"``.  The
zero-shot prompts are ``"a {colour} {shape}"`` for every colour and shape,
colour-major.

Splits
------
Randomness always comes from :class:`numpy.random.SeedSequence` so that every
scene or batch has its own independent stream:

* training (:func:`train_stream`): batch ``b`` is drawn from
  ``SeedSequence(TRAIN_SEED, spawn_key=(TRAIN_KEY, b))``;
* evaluation (:func:`eval_set`): scene ``i`` is drawn from
  ``SeedSequence(EVAL_SEED, spawn_key=(EVAL_KEY, n_objects_key, i))``.

The entropies differ and so do the spawn keys, so the training stream and the
held-out evaluation set never share a random stream.  Two evaluation sets are
used: single-object scenes (class-balanced, cycling through every
colour x shape pair) and multi-object scenes (two or three objects).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan")

# Reference RGB of each colour; hues far apart so colour names are unambiguous.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 175, 50),
    "blue": (40, 70, 230),
    "yellow": (240, 225, 40),
    "purple": (150, 50, 190),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (40, 215, 225),
}

TRAIN_SEED = 20240611
EVAL_SEED = 77001
TRAIN_KEY = 0
EVAL_KEY = 1

IMAGE_SIZE = 64  # the side of the world as the embedded model sees it
MAX_OVERLAP = 0.08  # largest fraction of either object's area that may be covered
MIN_RADIUS_FRAC = 0.11  # object radius range, as a fraction of the image side
MAX_RADIUS_FRAC = 0.19
_PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: its shape, colour and visible mask (bool, H x W)."""

    shape: str
    colour: str
    mask: np.ndarray

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True, eq=False)
class Layer:
    """One drawn object: where it is painted and with which pixel values."""

    shape: str
    colour: str
    silhouette: np.ndarray  # bool (H, W): every pixel it covers, whatever is drawn later
    tint: np.ndarray  # (3,) its colour, jittered
    shading: np.ndarray  # (n, 1) per covered pixel, in raster order


@dataclass(frozen=True, eq=False)
class Drawing:
    """What a scene is made of: its background and its objects' layers, in drawing order.

    :func:`compose` turns it into the scene, pixel for pixel; editing it (:func:`edit`)
    gives counterfactual scenes: the same background and the same other objects.
    """

    background: np.ndarray  # float32 (H, W, 3), before any object
    layers: tuple[Layer, ...]
    blur: float = 0.0  # Gaussian blur radius (pixels) over the whole image, after the objects
    grain: np.ndarray | None = None  # float32 (H, W, 3) pixel noise added last


@dataclass(frozen=True)
class Scene:
    """A rendered image and its objects, in drawing order."""

    image: Image.Image
    objects: tuple[ShapeObject, ...]
    named: tuple[int, ...] | None = None  # objects the caption names (default: all)
    drawing: Drawing | None = field(default=None, compare=False, repr=False)

    @property
    def caption(self) -> str:
        named = range(len(self.objects)) if self.named is None else self.named
        return " and ".join(f"a {self.objects[i].phrase}" for i in named)

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        """(colour, shape) of every object."""
        return tuple((obj.colour, obj.shape) for obj in self.objects)

    def evaluation_item(self, index: int = 0):
        """This scene as an item of :func:`eclip_core.evaluation.evaluate`: the first object's
        prompt ("a red circle") is the target, its mask the ground truth, any object's prompt a
        right answer, and the zero-shot classes every prompt of the world."""
        from ..evaluation import Item

        return Item(self.image, f"a {self.objects[0].phrase}", self.objects[0].mask,
                    frozenset(f"a {o.phrase}" for o in self.objects), f"scene {index}", tuple(prompts()))


def scene_items(scenes: Sequence[Scene]) -> list:
    """Scenes as evaluation items (:meth:`Scene.evaluation_item`)."""
    return [scene.evaluation_item(i) for i, scene in enumerate(scenes)]


def prompts() -> list[str]:
    """Every zero-shot prompt ``"a {colour} {shape}"``, colour-major."""
    return [f"a {colour} {shape}" for colour, shape in prompt_labels()]


def prompt_labels() -> list[tuple[str, str]]:
    """(colour, shape) of each prompt of :func:`prompts`, in the same order."""
    return [(colour, shape) for colour in COLOURS for shape in SHAPES]


def caption_key(caption: str) -> frozenset[str]:
    """Order-free identity of a caption: the set of its object phrases."""
    parts = caption.split(" and ")
    return frozenset(part[2:] if part.startswith("a ") else part for part in parts)


# ----------------------------------------------------------------------------- geometry


def _regular_polygon(n: int, radius: float, angle: float) -> np.ndarray:
    theta = angle + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _star(radius: float, angle: float) -> np.ndarray:
    outer = _regular_polygon(5, radius * 1.25, angle)
    inner = _regular_polygon(5, radius * 0.52, angle + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


def _cross(radius: float, angle: float) -> np.ndarray:
    arm, half = radius * 1.1, radius * 0.38
    corners = np.array(
        [(half, -half), (arm, -half), (arm, half), (half, half), (half, arm), (-half, arm),
         (-half, half), (-arm, half), (-arm, -half), (-half, -half), (-half, -arm), (half, -arm)]
    )
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return corners @ rotation.T


def shape_outline(shape: str, radius: float, angle: float) -> np.ndarray:
    """Vertices (k, 2) of a shape centred at the origin; areas roughly comparable."""
    if shape == "circle":
        return _regular_polygon(40, radius, angle)
    if shape == "square":
        return _regular_polygon(4, radius * 1.2, angle + math.pi / 4)
    if shape == "triangle":
        return _regular_polygon(3, radius * 1.4, angle - math.pi / 2)
    if shape == "star":
        return _star(radius, angle)
    if shape == "cross":
        return _cross(radius, angle)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _silhouette(vertices: np.ndarray, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices], fill=255)
    return np.asarray(canvas) > 127


# ----------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class Style:
    """How a scene is drawn, apart from what it holds.

    The default style is the world every chapter draws (a low-contrast textured grey,
    filled objects, radii ``MIN_RADIUS_FRAC``-``MAX_RADIUS_FRAC`` of the side, no blur, no
    grain). Other styles vary what a second renderer of the same words would: the
    background (``BACKGROUNDS``), outlined instead of filled objects, the size range, a
    Gaussian blur (radius in pixels of the 64-pixel world) and pixel grain (its standard
    deviation in grey levels). The colours a background is painted in are drawn per scene,
    never close to the colour of an object in it (:data:`MIN_CONTRAST`). An outlined object's
    mask is its ring, the pixels drawn in its colour, as a filled object's is its visible area.
    """

    background: str = "textured"
    fill: str = "filled"  # or "outline": a ring of width ``line`` pixels (of the 64-pixel world)
    radius: tuple[float, float] = (MIN_RADIUS_FRAC, MAX_RADIUS_FRAC)
    blur: float = 0.0
    grain: float = 0.0
    line: float = 2.0

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {BACKGROUNDS}")
        if self.fill not in ("filled", "outline"):
            raise ValueError(f"fill must be 'filled' or 'outline', not {self.fill!r}")
        low, high = self.radius
        if not 0 < low <= high <= 0.3:
            raise ValueError(f"radius range {self.radius} must satisfy 0 < low <= high <= 0.3")
        if self.blur < 0 or self.grain < 0 or self.line < 1:
            raise ValueError("blur and grain must be >= 0 and line >= 1")


BACKGROUNDS: tuple[str, ...] = ("textured", "flat", "gradient", "blotches", "stripes", "checker")
DEFAULT_STYLE = Style()
#: Backgrounds the training styles draw from; "checker" is never seen in training.
TRAIN_BACKGROUNDS: tuple[str, ...] = ("textured", "flat", "gradient", "blotches", "stripes")
TRAIN_RADIUS = (0.08, 0.26)  # the training styles' widest size range
TRAIN_BLUR = 1.0  # largest blur radius in training
TRAIN_GRAIN = 10.0  # largest grain in training
#: Styles held out from training, each in a way of its own: a background family never seen
#: (checker), a combination never seen (outlines on stripes: both seen, never together)
#: and blur and grain beyond the training ranges.
HELD_OUT_STYLES: dict[str, Style] = {
    "checker": Style(background="checker"),
    "outline-stripes": Style(background="stripes", fill="outline"),
    "soft": Style(background="flat", blur=1.4, grain=14.0),
}


#: Training styles beside the held-out ones, each what a held-out style is built from with its
#: held-out part taken away: a model's score on a held-out style read against these says whether
#: it failed to generalise or failed to learn the seen parts at all (for a model trained with
#: ``random_style``; to eclip-shapes, trained on the default style, they are as new as the others).
SEEN_STYLES: dict[str, Style] = {
    "stripes": Style(background="stripes"),  # outline-stripes' background, filled; a patterned one, as checker
    "flat-outline": Style(background="flat", fill="outline"),  # outline-stripes' outlines, on a plain ground
    "soft-edge": Style(background="flat", blur=TRAIN_BLUR, grain=TRAIN_GRAIN),  # soft, at training's limit
}


def is_held_out_style(style: Style) -> bool:
    """Whether training may never draw ``style`` (see :data:`HELD_OUT_STYLES`)."""
    return style.background == "checker" or (style.background == "stripes" and style.fill == "outline") \
        or style.blur > TRAIN_BLUR or style.grain > TRAIN_GRAIN


def random_style(rng: np.random.Generator) -> Style:
    """A training style: background, fill, size range, blur and grain drawn at random,
    never one that :func:`is_held_out_style` reserves for evaluation."""
    while True:
        background = TRAIN_BACKGROUNDS[rng.integers(len(TRAIN_BACKGROUNDS))]
        fill = "outline" if rng.random() < 0.3 else "filled"
        low = rng.uniform(TRAIN_RADIUS[0], MIN_RADIUS_FRAC)
        radius = (float(low), float(rng.uniform(max(low, MAX_RADIUS_FRAC), TRAIN_RADIUS[1])))
        blur = float(rng.uniform(0.3, TRAIN_BLUR)) if rng.random() < 0.3 else 0.0
        grain = float(rng.uniform(2.0, TRAIN_GRAIN)) if rng.random() < 0.3 else 0.0
        style = Style(background, fill, radius, blur, grain, float(rng.uniform(1.5, 3.0)))
        if not is_held_out_style(style):
            return style


#: Least RGB distance between a styled background's colours and its objects' colours.
MIN_CONTRAST = 110.0


def _paints(rng: np.random.Generator, avoid: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A background's two colours (3,) each: any lightness, muted, the second 20-60 grey
    levels from the first on every channel, both at least ``MIN_CONTRAST`` from every
    colour in ``avoid``."""
    references = np.asarray([COLOUR_RGB[c] for c in avoid], dtype=float).reshape(-1, 3)

    def far(colour: np.ndarray) -> bool:
        return not len(references) or bool(np.linalg.norm(references - colour, axis=1).min() >= MIN_CONTRAST)

    for _ in range(1000):
        first = np.clip(rng.uniform(15, 240) + rng.uniform(-45, 45, size=3), 0, 255)
        second = np.clip(first + rng.choice((-1, 1)) * rng.uniform(20, 60, size=3), 0, 255)
        if far(first) and far(second):
            return first, second
    raise RuntimeError(f"no background colours far enough from {list(avoid)}")  # not met in practice


def _styled_background(rng: np.random.Generator, size: int, style: Style,
                       avoid: Sequence[str]) -> np.ndarray:
    if style.background == "textured":
        return _background(rng, size)
    first, second = _paints(rng, avoid)
    ramp = np.linspace(0, 1, size)
    y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    if style.background == "flat":
        weight = np.zeros((size, size))
    elif style.background == "gradient":
        direction = rng.uniform(0, 2 * math.pi)
        weight = (math.cos(direction) * ramp[None, :] + math.sin(direction) * ramp[:, None] + 1) / 2
        weight = (weight - weight.min()) / max(float(np.ptp(weight)), 1e-9)
    elif style.background == "blotches":
        coarse = rng.uniform(0, 1, size=(5, 5)).astype(np.float32)
        weight = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
        weight = np.clip(weight, 0, 1)
    elif style.background == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 16) * size / IMAGE_SIZE
        phase = (math.cos(angle) * x + math.sin(angle) * y) / period + rng.uniform(0, 1)
        weight = (np.floor(phase * 2) % 2).astype(float)
    else:  # checker
        cell = rng.uniform(4, 10) * size / IMAGE_SIZE
        offset = rng.uniform(0, cell, size=2)
        weight = ((np.floor((y + offset[0]) / cell) + np.floor((x + offset[1]) / cell)) % 2).astype(float)
    pixels = first + weight[..., None] * (second - first)
    return pixels.astype(np.float32)


def _ring(silhouette: np.ndarray, width: float) -> np.ndarray:
    """The pixels of ``silhouette`` within ``width`` pixels of its edge (4-neighbour steps)."""
    inner = silhouette.copy()
    for _ in range(max(1, int(round(width)))):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return silhouette & ~inner


# ----------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-contrast, slightly tinted textured background, float (H, W, 3)."""
    base = rng.uniform(55, 135) + rng.uniform(-10, 10, size=3)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1, 1, size)
    gradient = math.cos(direction) * ramp[None, :] + math.sin(direction) * ramp[:, None]
    gradient *= rng.uniform(5, 20)
    coarse = rng.normal(0, 7, size=(4, 4)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    noise = rng.standard_normal(size=(size, size, 3), dtype=np.float32) * 4
    return (base + (gradient + blotches)[..., None]).astype(np.float32) + noise


def _place(rng: np.random.Generator, shape: str, size: int, occupied: list[np.ndarray],
           radii: tuple[float, float] = (MIN_RADIUS_FRAC, MAX_RADIUS_FRAC)) -> np.ndarray:
    """A silhouette for ``shape`` that overlaps the already placed ones little."""
    radius_range = (radii[0] * size, radii[1] * size)
    for attempt in range(_PLACEMENT_TRIES):
        shrink = 1.0 - 0.4 * attempt / _PLACEMENT_TRIES  # crowded scenes get smaller objects
        radius = rng.uniform(*radius_range) * shrink
        outline = shape_outline(shape, radius, rng.uniform(0, 2 * math.pi))
        low = 1 - outline.min(axis=0)  # keep the whole shape inside the image
        high = size - 2 - outline.max(axis=0)
        silhouette = _silhouette(outline + rng.uniform(low, high), size)
        area = silhouette.sum()
        if area == 0:
            continue
        if all((silhouette & other).sum() <= MAX_OVERLAP * min(area, other.sum())
               for other in occupied):
            return silhouette
    raise RuntimeError("could not place an object without overlap; use fewer objects")


def render_objects(rng: np.random.Generator, labels: Sequence[tuple[str, str]],
                   size: int = IMAGE_SIZE, style: Style | None = None) -> Scene:
    """Render a scene holding exactly the given (colour, shape) objects, in that order,
    in ``style`` (default: :data:`DEFAULT_STYLE`, the world of the chapters)."""
    for colour, _ in labels:
        if colour not in COLOUR_RGB:
            raise ValueError(f"unknown colour {colour!r}; expected one of {COLOURS}")
    if style is not None and style != DEFAULT_STYLE:
        return _render_styled(rng, labels, size, style)
    background = _background(rng, size)
    layers: list[Layer] = []
    for colour, shape in labels:
        silhouette = _place(rng, shape, size, [layer.silhouette for layer in layers])
        layers.append(_painted(rng, shape, colour, silhouette))
    return compose(Drawing(background, tuple(layers)))


def _painted(rng: np.random.Generator, shape: str, colour: str, pixels: np.ndarray) -> Layer:
    """The layer painting ``pixels`` in ``colour``, jittered, with per-pixel shading."""
    tint = np.asarray(COLOUR_RGB[colour], dtype=float) + rng.uniform(-12, 12, size=3)
    shading = rng.normal(0, 3, size=(int(pixels.sum()), 1))
    return Layer(shape, colour, pixels, tint, shading)


def _render_styled(rng: np.random.Generator, labels: Sequence[tuple[str, str]], size: int,
                   style: Style) -> Scene:
    scale = size / IMAGE_SIZE
    background = _styled_background(rng, size, style, [colour for colour, _ in labels])
    low, high = style.radius
    if len(labels) > 1:  # room for several objects
        high = max(low, min(high, MAX_RADIUS_FRAC + 0.02))
    occupied: list[np.ndarray] = []
    layers: list[Layer] = []
    for colour, shape in labels:
        silhouette = _place(rng, shape, size, occupied, (low, high))
        occupied.append(silhouette)
        painted = _ring(silhouette, style.line * scale) if style.fill == "outline" else silhouette
        layers.append(_painted(rng, shape, colour, painted))
    grain = rng.normal(0, style.grain, size=(size, size, 3)).astype(np.float32) if style.grain else None
    return compose(Drawing(background, tuple(layers), blur=style.blur * scale, grain=grain))


def compose(drawing: Drawing, named: tuple[int, ...] | None = None) -> Scene:
    """The scene a drawing makes: each layer painted over the background in order; each
    object's mask is what of it stays visible."""
    pixels = drawing.background.copy()
    for layer in drawing.layers:
        pixels[layer.silhouette] = layer.tint + layer.shading
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    if drawing.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(drawing.blur))
    if drawing.grain is not None:
        grained = np.asarray(image, dtype=np.float32) + drawing.grain
        image = Image.fromarray(np.clip(grained, 0, 255).round().astype(np.uint8), "RGB")
    objects = []
    for index, layer in enumerate(drawing.layers):
        visible = layer.silhouette.copy()
        for later in drawing.layers[index + 1:]:
            visible &= ~later.silhouette
        objects.append(ShapeObject(shape=layer.shape, colour=layer.colour, mask=visible))
    return Scene(image=image, objects=tuple(objects), named=named, drawing=drawing)


def edit(scene: Scene, *, remove: Sequence[int] = (), recolour: dict[int, str] | None = None,
         move: dict[int, tuple[int, int]] | None = None) -> Scene:
    """A counterfactual of ``scene``: objects removed (the background as it was beneath
    them), recoloured (the same jitter and shading in another colour) or moved by
    ``(dy, dx)`` pixels (they must stay inside the image); nothing else changes.

    Indices refer to ``scene.objects``; the result keeps the other objects in their
    order, and its caption names the named objects that remain.
    """
    if scene.drawing is None:
        raise ValueError("this scene was not drawn by the shapes world (no drawing to edit)")
    n = len(scene.objects)
    if isinstance(remove, (int, np.integer, str)) or not isinstance(remove, Sequence):
        raise ValueError(f"remove takes a sequence of object indices, got {remove!r}")
    recolour, move = dict(recolour or {}), dict(move or {})
    for index in (*remove, *recolour, *move):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise ValueError(f"object index {index!r} out of range: the scene has {n} objects")
    layers = []
    for index, layer in enumerate(scene.drawing.layers):
        if index in recolour:
            colour = recolour[index]
            if colour not in COLOUR_RGB:
                raise ValueError(f"unknown colour {colour!r}; expected one of {COLOURS}")
            jitter = layer.tint - np.asarray(COLOUR_RGB[layer.colour], dtype=float)
            layer = replace(layer, colour=colour, tint=np.asarray(COLOUR_RGB[colour], dtype=float) + jitter)
        if index in move:
            layer = replace(layer, silhouette=_shifted(layer.silhouette, *move[index]))
        layers.append(layer)
    kept = [i for i in range(n) if i not in set(remove)]
    named = None  # the caption names the objects it named that remain (none: an empty caption)
    if scene.named is not None:
        named = tuple(kept.index(i) for i in scene.named if i in kept)
    return compose(replace(scene.drawing, layers=tuple(layers[i] for i in kept)), named)


def _shifted(silhouette: np.ndarray, dy: int, dx: int) -> np.ndarray:
    rows, cols = np.nonzero(silhouette)
    h, w = silhouette.shape
    if rows.min() + dy < 0 or rows.max() + dy >= h or cols.min() + dx < 0 or cols.max() + dx >= w:
        raise ValueError(f"moving the object by ({dy}, {dx}) would take it out of the image")
    out = np.zeros_like(silhouette)
    out[rows + dy, cols + dx] = True  # raster order is kept, so the shading still lines up
    return out


def sample_labels(rng: np.random.Generator, n_objects: int, *,
                  colours: Sequence[str] | None = None,
                  shapes: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Draw ``n_objects`` distinct (colour, shape) pairs from the allowed pools."""
    colour_pool = tuple(colours) if colours is not None else COLOURS
    shape_pool = tuple(shapes) if shapes is not None else SHAPES
    if n_objects > len(colour_pool) * len(shape_pool):
        raise ValueError("more objects requested than distinct colour/shape pairs")
    chosen: list[tuple[str, str]] = []
    while len(chosen) < n_objects:
        pair = (colour_pool[rng.integers(len(colour_pool))], shape_pool[rng.integers(len(shape_pool))])
        if pair not in chosen:
            chosen.append(pair)
    return chosen


def render_scene(rng: np.random.Generator, n_objects: int, size: int = IMAGE_SIZE, *,
                 colours: Sequence[str] | None = None,
                 shapes: Sequence[str] | None = None, style: Style | None = None) -> Scene:
    """Render a scene of ``n_objects`` random, distinct objects.

    ``colours`` / ``shapes`` restrict the pools the objects are drawn from.
    """
    if not 1 <= n_objects <= 3:
        raise ValueError("scenes hold 1 to 3 objects")
    return render_objects(rng, sample_labels(rng, n_objects, colours=colours, shapes=shapes), size, style)


# ----------------------------------------------------------------------------- splits


def _scene_rng(entropy: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))


def as_style(style: Style | str | None) -> Style:
    """A :class:`Style`, from itself, ``None`` (the default) or a name: ``"default"`` or one
    of :data:`HELD_OUT_STYLES` or :data:`SEEN_STYLES`."""
    if style is None or style == "default":
        return DEFAULT_STYLE
    if isinstance(style, Style):
        return style
    named = {**HELD_OUT_STYLES, **SEEN_STYLES}
    if isinstance(style, str) and style in named:
        return named[style]
    raise ValueError(f"unknown style {style!r}; expected a Style, 'default' or one of "
                     f"{', '.join(named)}")


def style_name(style: Style | str | None) -> str:
    """The name a style is reported under: its name among ``"default"``, :data:`HELD_OUT_STYLES`
    and :data:`SEEN_STYLES`, else its ``repr`` (a style of one's own)."""
    drawn = as_style(style)  # refuses an unknown name
    named = {"default": DEFAULT_STYLE, **HELD_OUT_STYLES, **SEEN_STYLES}
    return next((name for name, known in named.items() if known == drawn), repr(drawn))


def eval_set(n: int, n_objects: int | tuple[int, ...] = 1, seed: int = EVAL_SEED,
             size: int = IMAGE_SIZE, style: Style | str | None = None) -> list[Scene]:
    """The held-out evaluation scenes.

    With ``n_objects == 1`` the scenes cycle through every (colour, shape) pair,
    so the set is class-balanced.  With a tuple, each scene draws its object
    count from the tuple. ``style`` (:func:`as_style`): scenes drawn in another style
    come from a stream of their own.
    """
    counts = (n_objects,) if isinstance(n_objects, int) else tuple(n_objects)
    counts_key = int("".join(str(c) for c in sorted(counts)))  # separate stream per set kind
    drawn = as_style(style)
    style_key = () if drawn == DEFAULT_STYLE else (zlib.crc32(repr(drawn).encode()),)
    labels = prompt_labels()
    scenes = []
    for index in range(n):
        rng = _scene_rng(seed, EVAL_KEY, counts_key, index, *style_key)
        if counts == (1,):
            scenes.append(render_objects(rng, [labels[index % len(labels)]], size, drawn))
        else:
            count = int(counts[rng.integers(len(counts))])
            scenes.append(render_scene(rng, count, size, style=drawn))
    return scenes


def binding_twins(rng: np.random.Generator, n_objects: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Two label lists with the same colours and shapes but bound differently.

    Colours and shapes are all distinct; the twin passes each colour on to the
    next object, so every object of the twin differs from every original object.
    """
    colours = [str(c) for c in rng.choice(COLOURS, size=n_objects, replace=False)]
    shape_names = [str(s) for s in rng.choice(SHAPES, size=n_objects, replace=False)]
    original = list(zip(colours, shape_names))
    twin = list(zip(colours[1:] + colours[:1], shape_names))
    return original, twin


def train_batch(rng: np.random.Generator, batch_size: int, size: int = IMAGE_SIZE, *,
                multi_fraction: float = 0.25, hard_fraction: float = 0.5,
                hard_pool: int = 2, twin_fraction: float = 0.0,
                partial_fraction: float = 0.0, style_fraction: float = 0.0) -> list[Scene]:
    """One training batch, with hard negatives.

    * ``multi_fraction`` of the scenes hold 2-3 objects (captions name them all);
      ``twin_fraction`` of those come as binding twins (:func:`binding_twins`):
      two scenes with the same colours and shapes, differently paired;
    * of the single-object scenes, ``hard_fraction`` come from a small pool of
      ``hard_pool`` colours (any shape) or ``hard_pool`` shapes (any colour), so
      many captions in the batch differ only in shape, or only in colour;
    * the remaining single-object scenes are class-balanced over all pairs;
    * ``partial_fraction`` of the multi-object scenes are captioned by one of their
      objects only, so that each object's own prompt is drawn towards the scene;
    * ``style_fraction`` of all scenes are drawn in a random training style
      (:func:`random_style`), the others in the default style.
    """

    if not 0 <= style_fraction <= 1:
        raise ValueError(f"style_fraction must be within [0, 1], not {style_fraction}")

    def styled() -> Style | None:
        return random_style(rng) if style_fraction and rng.random() < style_fraction else None

    n_multi = int(round(batch_size * multi_fraction))
    n_twin_pairs = int(round(n_multi * twin_fraction)) // 2
    n_single = batch_size - n_multi
    n_hard = int(round(n_single * hard_fraction))
    n_colour_hard = n_hard // 2
    labels = prompt_labels()
    balanced = rng.permutation(np.resize(rng.permutation(len(labels)), n_single - n_hard))
    few_colours = tuple(str(c) for c in rng.choice(COLOURS, size=hard_pool, replace=False))
    few_shapes = tuple(str(s) for s in rng.choice(SHAPES, size=hard_pool, replace=False))

    scenes = [render_objects(rng, [labels[i]], size, styled()) for i in balanced]
    scenes += [render_scene(rng, 1, size, colours=few_colours, style=styled()) for _ in range(n_colour_hard)]
    scenes += [render_scene(rng, 1, size, shapes=few_shapes, style=styled())
               for _ in range(n_hard - n_colour_hard)]
    for _ in range(n_twin_pairs):
        twins, pair_style = binding_twins(rng, int(rng.integers(2, 4))), styled()  # one style for both
        for twin_labels in twins:
            scenes.append(render_objects(rng, twin_labels, size, pair_style))
    scenes += [render_scene(rng, int(rng.integers(2, 4)), size, style=styled())
               for _ in range(n_multi - 2 * n_twin_pairs)]
    scenes = [replace(sc, named=(int(rng.integers(len(sc.objects))),))
              if len(sc.objects) > 1 and rng.random() < partial_fraction else sc for sc in scenes]
    order = rng.permutation(len(scenes))
    return [scenes[i] for i in order]


def style_share(index: int, style_fraction: float, style_ramp: tuple[int, int] = (0, 0)) -> float:
    """The share of batch ``index`` drawn in training styles: none before ``style_ramp[0]``,
    rising linearly to ``style_fraction`` at ``style_ramp[1]`` and staying there (a
    curriculum: the objects first, then the styles). ``(0, 0)``: ``style_fraction`` throughout."""
    first, full = style_ramp
    if not 0 <= style_fraction <= 1:
        raise ValueError(f"style_fraction must be within [0, 1], not {style_fraction}")
    if not 0 <= first <= full:
        raise ValueError(f"style_ramp must be two steps 0 <= first <= full, not {style_ramp}")
    if index < first:
        return 0.0
    if index >= full:
        return style_fraction
    return style_fraction * (index - first) / (full - first)


def train_stream(seed: int = TRAIN_SEED, batch_size: int = 128, size: int = IMAGE_SIZE, *,
                 start: int = 0, stride: int = 1, style_fraction: float = 0.0,
                 style_ramp: tuple[int, int] = (0, 0), **batch_options) -> Iterator[list[Scene]]:
    """Endless training batches ``start, start + stride, ...``; batch ``b`` depends only on
    ``seed`` and ``b``; its share of styled scenes is :func:`style_share` of ``b``."""
    if stride < 1:
        raise ValueError("stride must be at least 1")
    style_share(0, style_fraction, style_ramp)  # refuse a malformed share or ramp before any batch
    index = start
    while True:
        yield train_batch(_scene_rng(seed, TRAIN_KEY, index), batch_size, size,
                          style_fraction=style_share(index, style_fraction, style_ramp), **batch_options)
        index += stride


def held_out_scenes(n: int, n_objects: int | tuple[int, ...] = 1, sample: int = 0, *,
                    size: int = IMAGE_SIZE) -> list[Scene]:
    """``n`` held-out scenes of disjoint sample ``sample`` (0: the book's), rendered ``size``
    pixels square (:func:`world_size`: the model's own input)."""
    return eval_set(n, n_objects, seed=EVAL_SEED + sample, size=size)


#: Stream key of :func:`distractor_scenes` (apart from the evaluation sets' streams).
DISTRACTOR_KEY = 3


def distractor_scenes(n: int, sample: int = 0, *, size: int = IMAGE_SIZE) -> list[Scene]:
    """``n`` held-out three-object scenes in which several objects matter to a prompt: a target
    (colour c, shape s), a distractor of its colour (c, s') and one of its shape (c', s), with
    c' != c and s' != s, in random places. The targets cycle through every (colour, shape) pair;
    each ``sample`` is a disjoint stream (0: the book's)."""
    labels = prompt_labels()
    scenes = []
    for index in range(n):
        rng = _scene_rng(EVAL_SEED + sample, DISTRACTOR_KEY, index)
        colour, shape = labels[index % len(labels)]
        other_shape = str(rng.choice([s for s in SHAPES if s != shape]))
        other_colour = str(rng.choice([c for c in COLOURS if c != colour]))
        scenes.append(render_objects(rng, [(colour, shape), (colour, other_shape), (other_colour, shape)], size))
    return scenes


def world_size(model: Any) -> int:
    """The side at which to draw the world for a model (a :class:`~eclip_core.clip.ClipModel`
    or anything the door accepts): its own input size, so that its preprocess leaves the scene
    (and its masks) as drawn and each patch of the grid covers the same pixels of image and mask."""
    from ..errors import EclipError
    from ..models import as_model

    height, width = as_model(model).image_size
    if height != width:
        raise EclipError(f"the shapes world is square; this model's input is {height}x{width}")
    return height
