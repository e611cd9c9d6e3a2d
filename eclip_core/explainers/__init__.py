"""Explainers for CLIP vision transformers: ``explain``, ``explain_text`` and the registry."""

from .base import Explanation
from .basis import ExplanationBasis, explanation_basis, load_basis, text_explanation_basis
from .entry import explain, explain_text
from .registry import METHODS, Method, Request, all_requests, register, resolve, unregister

__all__ = ["METHODS", "Explanation", "ExplanationBasis", "Method", "Request", "all_requests", "explain",
           "explain_text", "explanation_basis", "load_basis", "register", "resolve", "text_explanation_basis",
           "unregister"]
