"""Explainers for CLIP vision transformers: ``explain``, ``explain_text`` and the registry."""

from .base import Explanation
from .entry import explain, explain_text
from .registry import METHODS, Method, Request, all_requests, register, resolve, unregister

__all__ = ["METHODS", "Explanation", "Method", "Request", "all_requests", "explain", "explain_text",
           "register", "resolve", "unregister"]
