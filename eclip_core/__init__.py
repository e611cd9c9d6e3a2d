"""eclip: explainers for CLIP vision transformers, and the checks that judge them.

    >>> import eclip_core as ec
    >>> model = ec.load_model()                       # the embedded eclip-shapes CLIP
    >>> result = ec.explain(model, images, ["a red circle", "a blue square"],
    ...                     method="attention_eclip")
    >>> result.maps.shape                             # (B, K, grid_h, grid_w)
"""

from .clip import ClipModel
from .departures import FAITHFUL, PUBLISHED, Departures
from .errors import EclipError, InputError, ModelLoadError, UnsupportedModelError
from .explainers import (
    METHODS,
    Explanation,
    ExplanationBasis,
    Method,
    Request,
    explain,
    explain_text,
    explanation_basis,
    load_basis,
    register,
    resolve,
    text_explanation_basis,
)
from .models import DEFAULT_MODEL, as_model, available_models, load_model, trace_text, trace_vision
from .trace import Trace
from .world import embedded as _embedded  # noqa: F401  (registers the shipped models by name)

__all__ = [
    "ClipModel", "DEFAULT_MODEL", "Departures", "EclipError", "Explanation", "ExplanationBasis", "FAITHFUL",
    "InputError", "METHODS", "Method", "ModelLoadError", "PUBLISHED", "Request", "Trace",
    "UnsupportedModelError", "as_model", "available_models", "explain", "explain_text", "explanation_basis",
    "load_basis", "load_model", "register", "resolve", "text_explanation_basis", "trace_text", "trace_vision",
]
__version__ = "0.1.0"
