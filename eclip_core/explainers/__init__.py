"""Explainers for CLIP vision transformers: ``explain``, ``explain_text`` and the registry."""

from .base import Explanation
from .entry import explain, explain_text
from .registry import METHODS, Method, Spec, all_specs, get_method, parse_spec, register, unregister

__all__ = ["METHODS", "Explanation", "Method", "Spec", "all_specs", "explain", "explain_text",
           "get_method", "parse_spec", "register", "unregister"]
