"""Exceptions raised for bad input, each with a message that names the problem.

All derive from :class:`EclipError`, itself a ``ValueError``, so callers can catch
one type; the command line turns them into a one-line message and exit code 1.
"""


class EclipError(ValueError):
    """Base class of every error eclip raises on purpose."""


class UnsupportedModelError(EclipError):
    """The model is not an open_clip CLIP whose towers eclip can trace."""


class InputError(EclipError):
    """An image, text, tensor or target that cannot be explained as given."""


class ModelLoadError(EclipError, RuntimeError):
    """A model name, checkpoint or checksum that cannot be loaded."""
