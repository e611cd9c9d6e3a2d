"""The explainers by name, each with its modes and options declared and checked up front.

Every explainer has one signature::

    fn(model, images, targets, *, departures=FAITHFUL, **options) -> (maps, scores)

on a preprocessed (B, 3, H, W) tensor and (K, E) unit-norm targets, returning maps
(B, K, gh, gw) and the (B, K) cosines of the forward pass it explained. Its options are
its keyword-only parameters (besides ``departures``); a method declares the modes it
supports (``"reference"`` asks it to honour the published code's departures), the
allowed values of enumerated options and the interval of numeric ones. Every option
value is also checked against its default's type (a flag must be ``True`` or
``False``, a count an integer). A method is named ``"name"`` or ``"name:mode"``
(:func:`parse_spec`).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..departures import MODES, Departures, departures_for
from ..errors import InputError
from .attention import attention_rollout, raw_attention
from .controls import edge_strength, edges_notes
from .direct import direct_contributions
from .eclip import QK_CHOICES, attention_eclip, grad_eclip, text_eclip
from .gae import gae
from .gradcam import gradcam
from .legrad import POOLINGS, legrad, legrad_notes
from .maskclip import maskclip
from .perturbation import BASELINES, integrated_gradients, occlusion
from .rise import rise
from .surgery import clip_surgery, surgery_notes

ExplainerFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
#: A method's own departures in words, from the model and its options (defaults filled in).
NotesFn = Callable[[Any, dict[str, Any]], tuple[str, ...]]


def keyword_options(fn: Callable[..., Any], skip: tuple[str, ...] = ("departures",)) -> dict[str, Any]:
    """A function's keyword-only parameters and their defaults (``skip`` left out)."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip}


@dataclass(frozen=True)
class Bound:
    """The interval a numeric option must lie in: ``Bound(0, 1, low_open=True)`` is (0, 1]."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        low = None if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "any"
        return f"in {low or '(-inf'}, {self.high:g}]"


def _type_problem(value: Any, default: Any) -> str | None:
    """What is wrong with ``value`` for an option whose default is ``default`` (None: nothing)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "True or False"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None


def check_options(owner: str, declared: Mapping[str, Any], options: Mapping[str, Any],
                  choices: Mapping[str, tuple[Any, ...]], bounds: Mapping[str, Bound] | None = None) -> None:
    """Refuse an option ``owner`` does not declare, a value of another type than its
    default's, outside its choices (exact match; the message lists them) or its bounds."""
    for name, value in options.items():
        if name not in declared:
            valid = ", ".join(sorted(declared)) or "none"
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{owner} has no option {name!r}{hint}; its options: {valid}")
        if name in choices:
            if value not in choices[name] or type(value) is not type(choices[name][0]):
                close = [c for c in choices[name] if str(c).lower() == str(value).lower()]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(f"{owner}: {name} must be one of {', '.join(map(repr, choices[name]))}, "
                                 f"got {value!r}{hint}")
            continue
        problem = _type_problem(value, declared[name])
        if problem:
            raise InputError(f"{owner}: {name} must be {problem}, got {value!r}")
        bound = (bounds or {}).get(name)
        if bound is not None and value is not None and not bound.admits(value):
            raise InputError(f"{owner}: {name} must be {bound}, got {value!r}")


@dataclass(frozen=True)
class Method:
    """An explainer: its function, what it is, its modes, its text route and option choices.

    ``notes``: where the method itself departs from the deployed model (for some options
    or always), a function ``(model, options) -> words`` whose sentences are added to the
    :class:`~eclip_core.departures.Departures` of every explanation it makes.
    ``prompt_set``: its map of one text depends on the other texts given with it (CLIP
    Surgery): an evaluation then gives it every text, never only each image's own.
    """

    name: str
    fn: ExplainerFn
    description: str
    modes: tuple[str, ...] = ("faithful",)
    text_route: str | None = None  # route of the text branch, where the method has one
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    notes: NotesFn | None = None
    prompt_set: bool = False
    bounds: Mapping[str, Bound] = field(default_factory=dict)

    def __post_init__(self) -> None:
        params = inspect.signature(self.fn).parameters
        if "departures" not in params:
            raise InputError(f"explainer {self.name!r}: its function must take a keyword parameter "
                             f"'departures' (the forward pass to explain; FAITHFUL: the model's own)")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or "faithful" not in self.modes:
            raise InputError(f"explainer {self.name!r}: modes must include 'faithful' and be among "
                             f"{', '.join(MODES)}, got {self.modes}")

    @property
    def options(self) -> dict[str, Any]:
        """The options ``explain`` accepts for this method, with their defaults."""
        return keyword_options(self.fn)

    @property
    def text_options(self) -> dict[str, Any]:
        """The options ``explain_text`` accepts (empty without a text branch)."""
        return keyword_options(text_eclip, ("departures", "route")) if self.text_route else {}

    def check(self, mode: str, options: Mapping[str, Any], *, text: bool = False) -> Departures:
        """The departures of ``mode``, after refusing an unknown mode or option."""
        if mode not in self.modes:
            raise InputError(f"method {self.name!r} has no mode {mode!r}; its modes: {', '.join(self.modes)}")
        if text and self.text_route is None:
            raise InputError(f"method {self.name!r} has no text branch")
        declared = self.text_options if text else self.options
        check_options(f"method {self.name!r}", declared, options, self.choices, self.bounds)
        return departures_for(mode)

    def departures(self, model, mode: str, options: Mapping[str, Any]) -> Departures:
        """Everything an explanation of ``model`` in ``mode`` with ``options`` departs by:
        the mode's (:meth:`check`) and the method's own (:attr:`notes`)."""
        departures = self.check(mode, options)
        if self.notes is None:
            return departures
        return departures.with_notes(*self.notes(model, {**self.options, **options}))


METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Make ``method`` available to ``explain``, the metrics and the checks.

    A name already registered is refused unless ``replace=True``.
    """
    if method.name in METHODS and not replace:
        raise InputError(f"an explainer named {method.name!r} is already registered; "
                         f"pass replace=True to replace it")
    if ":" in method.name:
        raise InputError(f"explainer names cannot contain ':' (it separates the mode): {method.name!r}")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove a registered method (for one registered in a session)."""
    if name not in METHODS:
        raise InputError(f"no explainer named {name!r} is registered")
    return METHODS.pop(name)


def get_method(name: str, mode: str = "faithful") -> Method:
    """The registered method ``name``, checked to support ``mode``."""
    if name not in METHODS:
        close = difflib.get_close_matches(str(name).lower().replace("-", "_"), list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}{hint}")
    method = METHODS[name]
    if mode not in method.modes:
        raise InputError(f"method {name!r} has no mode {mode!r}; its modes: {', '.join(method.modes)}")
    return method


class Spec(NamedTuple):
    """A method and a mode: ``"grad_eclip:reference"``; a bare name is faithful."""

    name: str
    mode: str = "faithful"

    def __str__(self) -> str:
        return self.name if self.mode == "faithful" else f"{self.name}:{self.mode}"


def parse_spec(spec: str | Spec) -> Spec:
    """``"grad_eclip:reference"`` -> ``Spec("grad_eclip", "reference")``, checked against the registry."""
    if isinstance(spec, Spec):
        name, mode = spec
    else:
        name, _, mode = str(spec).partition(":")
    result = Spec(name, mode or "faithful")
    get_method(*result)
    return result


def all_specs() -> list[Spec]:
    """Every registered method in every mode it supports."""
    return [Spec(m.name, mode) for m in METHODS.values() for mode in m.modes]


ECLIP_CHOICES = {"qk": QK_CHOICES}
register(Method("grad_eclip", grad_eclip, "Grad-ECLIP: dS/d(attention output) applied to the values",
                MODES, text_route="grad", choices=ECLIP_CHOICES))
register(Method("attention_eclip", attention_eclip,
                "Attention-ECLIP: dS/d(attention probabilities), summed over heads",
                MODES, text_route="attention", choices=ECLIP_CHOICES))
register(Method("attention", raw_attention, "raw self-attention of the last block (CLS row, mean over heads)"))
register(Method("rollout", attention_rollout, "attention rollout (Abnar & Zuidema 2020)",
                bounds={"start_block": Bound(0)}))
register(Method("gae", gae, "Generic Attention Explainability (Chefer et al. 2021), rollout over blocks",
                bounds={"logit_scale": Bound(0, low_open=True)}))
register(Method("gradcam", gradcam, "Grad-CAM on the tokens entering the last block"))
register(Method("maskclip", maskclip, "MaskCLIP-style dense similarity of value-path patch embeddings"))
register(Method("rise", rise, "RISE: saliency from randomly masked forward passes",
                bounds={"n_masks": Bound(1), "cells": Bound(1), "batch_size": Bound(1),
                        "keep": Bound(0, 1, low_open=True)}))
register(Method("legrad", legrad, "LeGrad: positive gradients of per-block scores w.r.t. the attention, "
                "last blocks summed, min-max", choices={"pooling": POOLINGS}, notes=legrad_notes,
                bounds={"n_blocks": Bound(1)}))
register(Method("direct_contributions", direct_contributions,
                "direct contributions: each patch's head terms of the embedding (final norm frozen), last blocks"))
register(Method("clip_surgery", clip_surgery, "CLIP Surgery: v-v attention path and feature surgery "
                "(a modified network; maps relative to the prompts)", notes=surgery_notes, prompt_set=True))
register(Method("integrated_gradients", integrated_gradients,
                "integrated gradients on the patch embeddings from a black image", choices={"baseline": BASELINES},
                bounds={"steps": Bound(1), "batch_size": Bound(1)}))
register(Method("occlusion", occlusion, "occlusion: score drop with one patch replaced by black",
                choices={"baseline": BASELINES}, bounds={"window": Bound(1), "batch_size": Bound(1)}))
register(Method("edges", edge_strength, "control: the image's edge strength per patch, blind to the model "
                "(it must fail P2)", notes=edges_notes))
