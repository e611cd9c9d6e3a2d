"""What an explanation's forward pass changes relative to the deployed model: one value.

The published Grad-ECLIP code departs from the original model in three ways (PAPER.md,
"Where the public code departs"). They are built once, from the ``mode`` a user asks
for, passed down to the inputs, the trace and the explainers, and reported on every
:class:`~eclip_core.explainers.Explanation`:

>>> PUBLISHED.describe().split("; ")
['one head over the full width in the explained blocks',
 'keep-size input with interpolated positional embeddings',
 'text: loosened term min-max over every position']
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

MODES = ("faithful", "reference")


@dataclass(frozen=True)
class Departures:
    """The departures of a forward pass; the default, :data:`FAITHFUL`, has none.

    ``heads``: the explained blocks (the last vision block; the explained text blocks)
    are recomputed with this many heads over the full width, scale ``1/sqrt(D/heads)``;
    ``None`` keeps the model's own. ``keep_size``: the image is explained at the
    keep-size resolution (aspect kept, sides rounded to the patch) with bicubically
    interpolated positional embeddings, not through the model's preprocess.
    ``minmax_all_tokens``: the text branch min-max normalises the loosened term over every
    position of the sequence rather than over the explained tokens.
    """

    heads: int | None = None
    keep_size: bool = False
    minmax_all_tokens: bool = False

    def __post_init__(self) -> None:
        if self.heads is not None and (not isinstance(self.heads, int) or self.heads < 1):
            raise InputError(f"departures.heads must be a positive integer or None, got {self.heads!r}")

    @property
    def any(self) -> bool:
        """Whether the forward pass differs from the deployed model's at all."""
        return self != FAITHFUL

    def describe(self) -> str:
        """One line naming each departure ('none' for the original model)."""
        parts = []
        if self.heads is not None:
            parts.append(f"{'one head' if self.heads == 1 else f'{self.heads} heads'} over the full "
                         f"width in the explained blocks")
        if self.keep_size:
            parts.append("keep-size input with interpolated positional embeddings")
        if self.minmax_all_tokens:
            parts.append("text: loosened term min-max over every position")
        return "; ".join(parts) or "none"


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
