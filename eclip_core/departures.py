"""What an explanation's forward pass changes relative to the deployed model: one value.

The published Grad-ECLIP code departs from the original model in three ways (PAPER.md,
"Where the public code departs"); other methods depart in their own ways (LeGrad's
mean-pooled score, CLIP Surgery's second path, ...). Both are carried by one frozen
value, built once from the ``mode`` and the method's options, passed down to the inputs,
the trace and the explainers, and reported on every
:class:`~eclip_core.explainers.Explanation`. :meth:`Departures.describe` lists in words
everything that ran differently; a faithful explanation's list is empty:

>>> PUBLISHED.describe()
['last vision block recomputed with 1 head over the full width',
 'keep-size input (aspect kept, sides rounded to the patch) with interpolated positional embeddings']
>>> FAITHFUL.describe()
[]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # the words name the model's own numbers; nothing here reads a model's internals
    from .clip import ClipModel

MODES = ("faithful", "reference")
BRANCHES = ("image", "text")


@dataclass(frozen=True)
class Departures:
    """The departures of a forward pass; the default, :data:`FAITHFUL`, has none.

    ``heads``: the explained blocks (the last vision block; the explained text blocks)
    are recomputed with this many heads over the full width, scale ``1/sqrt(D/heads)``;
    ``None`` keeps the model's own. ``keep_size``: the image is explained at the
    keep-size resolution (aspect kept, sides rounded to the patch) with bicubically
    interpolated positional embeddings, not through the model's preprocess.
    ``minmax_all_tokens``: the text branch min-max normalises the loosened term over every
    position of the sequence rather than over the explained tokens. ``notes``: a method's
    own departures, in words (e.g. ``"score from the mean of all tokens"``), set by the
    method from its options (:attr:`~eclip_core.explainers.Method.notes`).
    """

    heads: int | None = None
    keep_size: bool = False
    minmax_all_tokens: bool = False
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.heads is not None and (not isinstance(self.heads, int) or self.heads < 1):
            raise InputError(f"departures.heads must be a positive integer or None, got {self.heads!r}")
        if not isinstance(self.notes, tuple) or not all(isinstance(n, str) and n for n in self.notes):
            raise InputError(f"departures.notes must be a tuple of non-empty strings, got {self.notes!r}")

    @property
    def any(self) -> bool:
        """Whether anything differs from the deployed model's explanation at all (notes included)."""
        return self != FAITHFUL

    @property
    def changes_forward(self) -> bool:
        """Whether the image forward pass itself differs (heads or input), so that it must be
        recomputed from the trace rather than taken from ``model.encode_image``."""
        return self.heads is not None or self.keep_size

    def with_notes(self, *notes: str) -> Departures:
        """The same departures with ``notes`` added (itself when there are none)."""
        return replace(self, notes=self.notes + tuple(notes)) if notes else self

    def describe(self, model: ClipModel | None = None, *, input_size: tuple[int, int] | None = None,
                 branch: str = "image") -> list[str]:
        """Everything that ran differently from the deployed model, in words ([] for none).

        With ``model`` (a :class:`~eclip_core.clip.ClipModel`) the words name its own numbers
        ("1 head instead of 12", "instead of 224x224"); ``input_size`` is the (H, W) that was
        explained (keep-size input); ``branch`` picks the image branch's departures or the
        text branch's.
        """
        if branch not in BRANCHES:
            raise InputError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
        out = []
        if self.heads is not None:
            where = "last vision block" if branch == "image" else "explained text blocks"
            own = f" instead of {model.heads('vision' if branch == 'image' else 'text')}" if model else ""
            out.append(f"{where} recomputed with {self.heads} head{'s' if self.heads > 1 else ''} "
                       f"over the full width{own}")
        native = tuple(model.image_size) if model is not None else None
        if self.keep_size and branch == "image" and not (input_size is not None and tuple(input_size) == native):
            # (a keep-size input of the model's own size is the model's input: nothing departed)
            if input_size is None:
                size = "keep-size input (aspect kept, sides rounded to the patch)"
            else:
                size = f"input {input_size[0]}\u00d7{input_size[1]}"
            own = "\u00d7".join(map(str, native)) if native else ""
            out.append(f"{size} with interpolated positional embeddings" + (f" instead of {own}" if own else ""))
        if self.minmax_all_tokens and branch == "text":
            out.append("loosened term min-max normalised over every position, not the explained tokens")
        return out + list(self.notes)

    def summary(self, model: ClipModel | None = None, **kwargs) -> str:
        """:meth:`describe` on one line ('none' for the original model)."""
        return "; ".join(self.describe(model, **kwargs)) or "none"


#: The deployed model's own forward pass.
FAITHFUL = Departures()
#: The published Grad-ECLIP code: one-head recompute, keep-size input, its text normalisation.
PUBLISHED = Departures(heads=1, keep_size=True, minmax_all_tokens=True)


def departures_for(mode: str) -> Departures:
    """``"faithful"`` -> :data:`FAITHFUL`; ``"reference"`` -> :data:`PUBLISHED`."""
    if mode == "faithful":
        return FAITHFUL
    if mode == "reference":
        return PUBLISHED
    raise InputError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
