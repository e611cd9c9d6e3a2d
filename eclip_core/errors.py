"""Exceptions raised for bad input, each with a message that names the problem.

All derive from :class:`EclipError`, itself a ``ValueError``, so callers can catch
one type; the command line turns them into a one-line message and exit code 1.
"""

import re


class EclipError(ValueError):
    """Base class of every error eclip raises on purpose."""


class UnsupportedModelError(EclipError):
    """The model is not an open_clip CLIP whose towers eclip can trace."""


class InputError(EclipError):
    """An image, text, tensor or target that cannot be explained as given."""


class ModelLoadError(EclipError, RuntimeError):
    """A model name, checkpoint or checksum that cannot be loaded."""


def one_line(err: object, limit: int = 300) -> str:
    """A message on one line: terminal colour codes dropped, whitespace collapsed, cut to ``limit``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    text = " ".join(text.split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
