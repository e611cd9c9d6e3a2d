"""Figures and tables for explanations: heat-map overlays, comparison grids, token bars, and
result tables that fit the book's text column.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: nothing global changes (no backend switch, no open-figure registry), files
are rendered by the Agg canvas (``fig.savefig``), and in a notebook a returned figure
displays as usual.

    >>> fig = overlay(input_image(image, preprocess), result.maps[0, 0], title="a red circle")
    >>> fig.savefig("map.png")
"""

from __future__ import annotations

import hashlib
import math
import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from .errors import InputError
from .inputs import load_image

CMAP = "jet"
ALPHA = 0.5


def as_map(saliency, name: str = "saliency") -> np.ndarray:
    """A finite 2-D float array from a (gh, gw) tensor or array (leading 1-dims dropped)."""
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().cpu().float().numpy()
    arr = np.asarray(saliency, dtype=np.float64)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or 0 in arr.shape:
        raise InputError(f"{name} must be a 2-D (grid_h, grid_w) map, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or Inf values: refusing to draw it")
    return arr


def input_image(image, preprocess=None, *, size: tuple[int, int] | None = None) -> Image.Image:
    """The image as the explained model saw it, for drawing a map over it.

    With ``preprocess`` (faithful mode): its geometric steps (resize, centre crop), so
    the map lines up with the pixels the model used. With ``size`` (height, width),
    e.g. ``Explanation.input_size`` in reference mode: the whole image resized to it.
    """
    image = load_image(image)
    if size is not None:
        return image.resize((int(size[1]), int(size[0])), Image.Resampling.BICUBIC)
    for step in getattr(preprocess, "transforms", []):
        kind = type(step).__name__
        if "ToTensor" in kind or kind == "Normalize":
            break
        out = step(image)
        if not isinstance(out, Image.Image):
            break
        image = out
    return image.convert("RGB")


#: Figures stay within this many inches per side (cells shrink to fit).
MAX_FIGURE_INCHES = 40.0
#: Saved images stay within this many pixels per side and in all (the dpi is lowered to fit).
MAX_PIXELS_PER_SIDE = 12000
MAX_PIXELS = 60_000_000
TITLE_CHARS = 60  # title lines are wrapped at this many characters
_FONT = 9  # points: titles
_TICKS = 7  # points: colour-bar ticks
_BAR_PAD, _BAR_WIDTH, _BAR_LABELS = 0.08, 0.12, 0.45  # inches: gap, bar, tick labels
_MARGIN = 0.1


def _limits(arr: np.ndarray) -> tuple[float, float]:
    """Colour range of a map: its min and max; a constant (or numerically constant) map gets
    the range from 0 to its value ([0, 1] for zeros), so it is drawn as "none" or "all"
    at that value rather than as mid-scale noise."""
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-30):
        value = (lo + hi) / 2
        return (0.0, 1.0) if value == 0 else (min(0.0, value), max(0.0, value))
    return lo, hi


def _text_size(text: str, size: float = _FONT) -> tuple[float, float]:
    """(width, height) in inches of ``text`` (one or more lines) at ``size`` points."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = RendererAgg(10, 10, 72)
    lines = text.split("\n")
    width = max(renderer.get_text_width_height_descent(line or " ", FontProperties(size=size), ismath=False)[0]
                for line in lines)
    return width / 72, len(lines) * size * 1.25 / 72


def _wrapped(title: str | None) -> str | None:
    if not title:
        return None
    return "\n".join(textwrap.fill(line, TITLE_CHARS) if line else line for line in title.split("\n"))


def _picture_inches(width: int, height: int, long: float, short_min: float, long_max: float) -> tuple[float, float]:
    """(w, h) inches of a picture: the longer side ``long``; a very flat or tall picture is
    enlarged so its short side reaches ``short_min``, its long side at most ``long_max``."""
    scale = long / max(width, height)
    if min(width, height) * scale < short_min:
        scale = min(short_min / min(width, height), long_max / max(width, height))
    return width * scale, height * scale


def _draw(ax, cax, picture: np.ndarray, arr: np.ndarray, alpha: float, cmap: str) -> None:
    """The map over the picture in ``ax``, its colour bar in ``cax`` (None: no bar)."""
    height, width = picture.shape[:2]
    extent = (0, width, height, 0)
    ax.imshow(picture, extent=extent, aspect="auto")
    lo, hi = _limits(arr)
    shown = ax.imshow(arr, cmap=cmap, alpha=alpha, extent=extent, interpolation="bilinear",
                      vmin=lo, vmax=hi, aspect="auto")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if cax is None:
        return
    bar = ax.figure.colorbar(shown, cax=cax)
    bar.ax.tick_params(labelsize=_TICKS)
    inches = cax.get_position().height * ax.figure.get_size_inches()[1]
    if inches < 0.6:  # a short bar: its ends only, so the labels do not overlap
        bar.set_ticks([lo, hi])


def _at(fig: Figure, x: float, y: float, w: float, h: float):
    """Axes at (x, y, w, h) inches from the figure's bottom-left corner."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((x / fw, y / fh, w / fw, h / fh))


def overlay(image, saliency, *, title: str | None = None, ax=None, alpha: float = ALPHA,
            cmap: str = CMAP, colorbar: bool = True) -> Figure:
    """The map drawn (bilinearly upsampled) over the image, with a colour bar of the
    picture's height.

    ``image``: a PIL image (or a path), best the one the model saw (:func:`input_image`);
    ``saliency``: a (gh, gw) tensor or array stretched over the whole image. Draws into
    ``ax`` where given, else into a new figure laid out for the picture's aspect ratio
    (panoramas and very tall images keep their title and a bar of their height; the
    figure stays within :data:`MAX_FIGURE_INCHES`); returns the figure (the picture's
    axes is ``fig.axes[0]``). NaN or Inf in the map raise :class:`InputError`.
    """
    arr = as_map(saliency)
    picture = np.asarray(image if isinstance(image, Image.Image) and image.mode == "RGB"
                         else load_image(image))
    title = _wrapped(title)
    if ax is not None:
        cax = ax.inset_axes((1.03, 0.0, 0.05, 1.0)) if colorbar else None  # follows the picture
        _draw(ax, cax, picture, arr, alpha, cmap)
        if title:
            ax.set_title(title, fontsize=_FONT)
        return ax.figure
    height, width = picture.shape[:2]
    pw, ph = _picture_inches(width, height, 3.8, 0.5, 10.0)
    tw, th = _text_size(title) if title else (0.0, 0.0)
    bar = _BAR_PAD + _BAR_WIDTH + _BAR_LABELS if colorbar else 0.0
    x0 = max(_MARGIN, tw / 2 + _MARGIN - pw / 2)  # the title is centred over the picture
    fw = max(x0 + pw + bar + _MARGIN, x0 + pw / 2 + tw / 2 + _MARGIN)
    fh = _MARGIN + ph + (th + 0.15 if title else _MARGIN)
    fig = Figure(figsize=(min(fw, MAX_FIGURE_INCHES), min(fh, MAX_FIGURE_INCHES)))
    ax = _at(fig, x0, _MARGIN, pw, ph)
    cax = _at(fig, x0 + pw + _BAR_PAD, _MARGIN, _BAR_WIDTH, ph) if colorbar else None
    _draw(ax, cax, picture, arr, alpha, cmap)
    if title:
        ax.set_title(title, fontsize=_FONT, pad=4)
    return fig


def comparison_grid(image, maps: Mapping[str, object], texts: Sequence[str], *,
                    scores: Mapping[str, Sequence[float]] | None = None,
                    scores_original: Mapping[str, Sequence[float]] | None = None,
                    title: str | None = None, alpha: float = ALPHA, cmap: str = CMAP) -> Figure:
    """One row per text, one column per method: the maps over the same image.

    ``maps``: method name -> (K, gh, gw) maps (a (1, K, gh, gw) ``Explanation.maps``
    works too) for the K ``texts``; ``scores``: method -> K scores, shown in the cells;
    ``scores_original``: method -> K scores of the original model where the method
    explained another forward pass (reference mode), shown beside them. Each cell has
    a colour bar of the picture's height; cells shrink so that the figure stays within
    :data:`MAX_FIGURE_INCHES`.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not maps:
        raise InputError("no maps to compare")
    if not texts:
        raise InputError("no texts given")
    grids = {}
    for method, value in maps.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().float().numpy()
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 2 and len(texts) == 1:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] != len(texts):
            raise InputError(f"maps of {method!r} must be (K={len(texts)}, grid_h, grid_w), "
                             f"got shape {arr.shape}")
        grids[method] = [as_map(arr[k], f"map of {method!r} for text #{k}") for k in range(len(texts))]
    picture = np.asarray(image if isinstance(image, Image.Image) and image.mode == "RGB" else load_image(image))
    rows, cols = len(texts), len(grids)
    cells = {}
    for method in grids:
        for r in range(rows):
            lines = [method] if r == 0 else []
            if scores is not None and method in scores:
                line = f"cos {float(scores[method][r]):.3f}"
                if scores_original is not None and method in scores_original:
                    line += f" (original {float(scores_original[method][r]):.3f})"
                lines.append(line)
            cells[method, r] = "\n".join(lines)
    title_h = max((_text_size(c)[1] for c in cells.values() if c), default=0.0) + 0.1
    cell_w = max((_text_size(c)[0] for c in cells.values() if c), default=0.0)
    labels = [textwrap.fill(t if len(t) <= 40 else t[:37] + "...", 16) for t in texts]
    label_w = max(_text_size(label)[0] for label in labels) + 0.2  # the row's text, left of it
    bar = _BAR_PAD + _BAR_WIDTH + _BAR_LABELS
    sup_h = _text_size(title, 10)[1] + 0.15 if title else 0.0
    height, width = picture.shape[:2]
    pw, ph = _picture_inches(width, height, 2.0, 0.4, 6.0)

    def size(scale: float) -> tuple[float, float, float]:
        col_w = max(pw * scale + bar, cell_w) + 0.15
        return col_w, label_w + cols * col_w + _MARGIN, sup_h + rows * (ph * scale + title_h + 0.1) + _MARGIN

    scale = 1.0
    col_w, fw, fh = size(scale)
    if max(fw, fh) > MAX_FIGURE_INCHES:  # shrink the pictures (titles keep their size)
        scale = max(0.05, min((MAX_FIGURE_INCHES - label_w - cols * (bar + 0.15) - _MARGIN) / (cols * pw),
                              (MAX_FIGURE_INCHES - sup_h - rows * (title_h + 0.1) - _MARGIN) / (rows * ph)))
        col_w, fw, fh = size(scale)
    fig = Figure(figsize=(min(fw, MAX_FIGURE_INCHES), min(fh, MAX_FIGURE_INCHES)))
    w, h = pw * scale, ph * scale
    for r in range(rows):
        y = fh - sup_h - (r + 1) * (h + title_h + 0.1) + 0.05
        for c, (method, per_text) in enumerate(grids.items()):
            x = label_w + c * col_w + (col_w - w - bar) / 2
            ax = _at(fig, x, y, w, h)
            _draw(ax, _at(fig, x + w + _BAR_PAD, y, _BAR_WIDTH, h), picture, per_text[r], alpha, cmap)
            if cells[method, r]:
                ax.set_title(cells[method, r], fontsize=_FONT, pad=3)
            if c == 0:
                fig.text((label_w - 0.1) / fw, (y + h / 2) / fh, labels[r], fontsize=_FONT, ha="right",
                         va="center")
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / fh, va="top")
    return fig


def save_figure(fig: Figure, path, dpi: float = 120) -> float:
    """Render ``fig`` to ``path`` (PNG) at ``dpi``, lowered (with a warning) so the image stays
    within :data:`MAX_PIXELS_PER_SIDE` and :data:`MAX_PIXELS`; written to a temporary name
    and renamed, so the file is whole or absent. Returns the dpi used."""
    fw, fh = fig.get_size_inches()
    limit = min(MAX_PIXELS_PER_SIDE / max(fw, fh), math.sqrt(MAX_PIXELS / (fw * fh)))
    if dpi > limit:
        warnings.warn(f"{Path(path).name}: {dpi:g} dpi would make a {fw * dpi:.0f}x{fh * dpi:.0f} px image; "
                      f"saved at {limit:.0f} dpi", stacklevel=2)
        dpi = limit
    write_atomically(Path(path), lambda handle: fig.savefig(handle, format="png", dpi=dpi))
    return dpi


def write_atomically(path: Path, write) -> None:
    """``write(handle)`` into a temporary file beside ``path``, then rename it to ``path``:
    a failure leaves no half-written ``path`` (and no temporary file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def token_bar(words: Sequence[str], weights, *, title: str | None = None, ax=None) -> Figure:
    """A bar per word: a text-branch map (weights of the explained tokens)."""
    words = list(words)
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().float().numpy()
    values = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(values) != len(words):
        raise InputError(f"{len(words)} words but {len(values)} weights")
    if not np.isfinite(values).all():
        raise InputError("token weights contain NaN or Inf values: refusing to draw them")
    if ax is None:
        fig = Figure(figsize=(max(3.0, 0.55 * len(words) + 1), 2.6), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    ax.bar(range(len(values)), values, color="tab:red")
    ax.set_xticks(range(len(words)), words, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("weight", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def scene_grid(scenes: Sequence[Any], ncols: int = 6, *, show_masks: bool = False,
               cell_inches: float = 1.6) -> Figure:
    """Scenes (an ``image``, a ``caption``, ``objects`` with a ``mask`` each: the shapes world's)
    with their captions (and, optionally, their masks outlined)."""
    nrows = max(1, -(-len(scenes) // ncols))
    fig = Figure(figsize=(ncols * cell_inches, nrows * cell_inches * 1.15))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, scene in zip(axes.flat, scenes):
        axis.imshow(scene.image)
        if show_masks:
            for obj in scene.objects:
                axis.contour(obj.mask.astype(float), levels=[0.5], colors="black", linewidths=0.6)
        axis.set_title(scene.caption.replace(" and ", "\n"), fontsize=6)
    fig.tight_layout()
    return fig


def _number(value: object, precision: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "–"
        if value != 0 and abs(value) < 10 ** -precision:
            return f"{value:.1e}"
        return f"{value:.{precision}f}"
    return str(value)


class Table:
    """A result table: compact HTML in the book (headers wrap, numbers to ``precision``
    decimals), plain text elsewhere. Build it with :func:`table`."""

    def __init__(self, frame: pd.DataFrame, title: str = "", notes: Sequence[str] = (), precision: int = 3):
        self.frame, self.title, self.notes, self.precision = frame, title, list(notes), precision

    def _shown(self, breakable: bool = False) -> pd.DataFrame:
        """Headers with spaces for underscores; in HTML, row names may break after ``_`` and ``:``
        (a zero-width space), so a long method name wraps instead of widening the table."""
        shown = self.frame.copy()
        shown.columns = [str(c).replace("_", " ").replace(":", ": ") for c in shown.columns]
        shown.index.name = str(shown.index.name).replace("_", " ") if shown.index.name else None
        if breakable:
            shown.index = [str(i).replace("_", "_\u200b").replace(":", ":\u200b") for i in shown.index]
        return shown

    def _repr_html_(self) -> str:
        uuid = hashlib.sha1((self.title + "|".join(map(str, self.frame.columns))).encode()).hexdigest()[:8]
        styler = (self._shown(breakable=True).style.format(lambda v: _number(v, self.precision))
                  .set_uuid(uuid)
                  .set_table_styles([{"selector": "", "props": "font-size: 0.75em; border-collapse: collapse;"},
                                     {"selector": "th", "props": "white-space: normal; padding: 2px 6px;"
                                                               " text-align: right;"},
                                     {"selector": "td", "props": "padding: 2px 6px; text-align: right;"},
                                     {"selector": "caption", "props": "caption-side: top; text-align: left;"
                                                                    " font-weight: bold;"}]))
        if self.title:
            styler = styler.set_caption(self.title)
        notes = "".join(f"<br>{note}" for note in self.notes)
        return styler.to_html() + (f'<p style="font-size: 0.78em; margin-top: 0">{notes[4:]}</p>' if notes else "")

    def __repr__(self) -> str:
        text = self._shown().to_string(float_format=lambda v: _number(v, self.precision))
        return "\n".join(([self.title] if self.title else []) + [text] + [f"  {n}" for n in self.notes])


def table(frame: pd.DataFrame, title: str | None = None, notes: Sequence[str] | None = None,
          precision: int = 3) -> Table:
    """``frame`` as a :class:`Table`; the title and notes default to ``frame.attrs``."""
    return Table(frame, frame.attrs.get("title", "") if title is None else title,
                 frame.attrs.get("notes", []) if notes is None else notes, precision)
