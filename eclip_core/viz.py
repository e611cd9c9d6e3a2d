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
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from .errors import InputError
from .inputs import load_image
from .shapes import Scene

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


def _limits(arr: np.ndarray) -> tuple[float, float]:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:  # a constant map: still draw it, with a unit-wide scale
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _overlay_size(width: int, height: int, titled: bool, colorbar: bool) -> tuple[float, float]:
    """Inches: the picture's longer side ~3.8 in, plus room for the title and colour bar."""
    scale = 3.8 / max(width, height)
    w, h = max(width * scale, 1.2), max(height * scale, 1.2)
    return w + (0.9 if colorbar else 0.2), h + (0.7 if titled else 0.2)


def overlay(image, saliency, *, title: str | None = None, ax=None, alpha: float = ALPHA,
            cmap: str = CMAP, colorbar: bool = True) -> Figure:
    """The map drawn (bilinearly upsampled) over the image, with a colour bar.

    ``image``: a PIL image (or a path), best the one the model saw (:func:`input_image`);
    ``saliency``: a (gh, gw) tensor or array stretched over the whole image. Draws into
    ``ax`` where given, else into a new figure; returns the figure (the axes is
    ``fig.axes[0]`` for a new figure). NaN or Inf in the map raise :class:`InputError`.
    """
    arr = as_map(saliency)
    picture = np.asarray(image if isinstance(image, Image.Image) and image.mode == "RGB"
                         else load_image(image))
    height, width = picture.shape[:2]
    if ax is None:
        fig = Figure(figsize=_overlay_size(width, height, bool(title), colorbar), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    extent = (0, width, height, 0)
    ax.imshow(picture, extent=extent)
    lo, hi = _limits(arr)
    shown = ax.imshow(arr, cmap=cmap, alpha=alpha, extent=extent, interpolation="bilinear",
                      vmin=lo, vmax=hi)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=7)
    return fig


def comparison_grid(image, maps: Mapping[str, object], texts: Sequence[str], *,
                    scores: Mapping[str, Sequence[float]] | None = None,
                    title: str | None = None, alpha: float = ALPHA, cmap: str = CMAP) -> Figure:
    """One row per text, one column per method: the maps over the same image.

    ``maps``: method name -> (K, gh, gw) maps (a (1, K, gh, gw) ``Explanation.maps``
    works too) for the K ``texts``; ``scores``: method -> K scores, shown in the cells.
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
    picture = image if isinstance(image, Image.Image) and image.mode == "RGB" else load_image(image)
    rows, cols = len(texts), len(grids)
    fig = Figure(figsize=(2.5 * cols + 0.6, 2.3 * rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for r, text in enumerate(texts):
        for c, (method, per_text) in enumerate(grids.items()):
            cell = method if r == 0 else ""
            if scores is not None and method in scores:
                cell = f"{cell}\ncos {float(scores[method][r]):.3f}".strip()
            overlay(picture, per_text[r], title=cell or None, ax=axes[r, c], alpha=alpha, cmap=cmap)
        label = text if len(text) <= 28 else text[:25] + "..."
        axes[r, 0].set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


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


def scene_grid(scenes: Sequence[Scene], ncols: int = 6, *, show_masks: bool = False,
               cell_inches: float = 1.6) -> Figure:
    """Shapes scenes with their captions (and, optionally, their masks outlined)."""
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
