"""eclip: explainers for CLIP vision transformers, and the checks that judge them.

    >>> import eclip_core as ec
    >>> bundle = ec.load_model()                      # the embedded eclip-shapes CLIP
    >>> result = ec.explain(bundle, images, ["a red circle", "a blue square"],
    ...                     method="attention_eclip")
    >>> result.maps.shape                             # (B, K, grid_h, grid_w)
"""

from .departures import FAITHFUL, PUBLISHED, Departures
from .errors import EclipError, InputError, ModelLoadError, UnsupportedModelError
from .explainers import METHODS, Explanation, Method, explain, explain_text, register
from .models import DEFAULT_MODEL, LoadedModel, available_models, load_model
from .trace import Trace, trace_text, trace_vision

__all__ = [
    "DEFAULT_MODEL", "Departures", "EclipError", "Explanation", "FAITHFUL", "InputError",
    "LoadedModel", "METHODS", "Method", "ModelLoadError", "PUBLISHED", "Trace",
    "UnsupportedModelError", "available_models", "explain", "explain_text", "load_model",
    "register", "trace_text", "trace_vision",
]
__version__ = "0.1.0"
