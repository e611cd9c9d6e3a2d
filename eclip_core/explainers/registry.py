"""The explainers by name, each with its modes and options declared and checked up front.

Every explainer has one signature::

    fn(model, images, targets, *, departures=FAITHFUL, **options) -> (maps, scores)

on a preprocessed (B, 3, H, W) tensor and (K, E) unit-norm targets, returning maps
(B, K, gh, gw) and the (B, K) cosines of the forward pass it explained. Its options are
its keyword-only parameters (besides ``departures``); a method declares the modes it
supports (``"reference"`` asks it to honour the published code's departures), the
allowed values of enumerated options and the interval of numeric ones. Every option
value is also checked against its default's type (a flag must be ``True`` or
``False``, a count an integer), and bounds that depend on the model (a number of blocks)
against the model explained.

What to run is decided once, by :func:`resolve`: a method (by name, or ``"name:mode"``), its
mode and its options become one checked :class:`Request`, which ``explain``, the evaluation
loop, the randomisation cascade and the command line all run; nothing downstream checks
them again.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..clip import ClipModel
from ..departures import MODES, Departures, departures_for
from ..errors import InputError, UnsupportedModelError
from .attention import attention_rollout, raw_attention
from .controls import centre_prior, control_notes, edge_strength, edges_notes, random_map
from .direct import SPLITS, direct_contributions
from .eclip import QK_CHOICES, attention_eclip, grad_eclip, text_eclip
from .gae import gae
from .gradcam import CLS_TOKEN_CHOICES, gradcam
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
    """The interval a numeric option must lie in: ``Bound(0, 1, low_open=True)`` is (0, 1].

    ``high`` may depend on the model explained: a function of the :class:`ClipModel`
    (``Bound(1, depth)``: at most the model's number of blocks), checked only where a model
    is given."""

    low: float | None = None
    high: float | Callable[[ClipModel], float] | None = None
    low_open: bool = False
    integer: bool = False  # for options whose default (None) says nothing of their type
    what: str = ""  # what the range counts, for the message ("the model's vision blocks")

    def upper(self, model: ClipModel | None) -> float | None:
        """The upper end for ``model`` (None: unbounded, or it depends on a model not given)."""
        if callable(self.high):
            return None if model is None else self.high(model)
        return self.high

    def admits(self, value: float, model: ClipModel | None = None) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        high = self.upper(model)
        return high is None or value <= high

    def describe(self, model: ClipModel | None = None) -> str:
        high = self.upper(model)
        what = f" ({self.what})" if self.what else ""
        if self.integer and self.low is not None and high is not None and not self.low_open:
            return f"an integer in {self.low:g}..{high:g}{what}"
        low = None if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        if high is None:
            kind = "an integer " if self.integer else ""
            return f"{kind}{'>' if self.low_open else '>='} {self.low:g}{what}" if self.low is not None else "any"
        return f"in {low or '(-inf'}, {high:g}]{what}"

    def __str__(self) -> str:
        return self.describe()


def depth(model: ClipModel) -> int:
    """The model's number of vision blocks (an option's upper bound)."""
    return model.depth("vision")


def last_block(model: ClipModel) -> int:
    """The index of the model's last vision block (an option's upper bound)."""
    return model.depth("vision") - 1


def text_depth(model: ClipModel) -> int:
    """The model's number of text blocks (an option's upper bound)."""
    return model.depth("text")


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
                  choices: Mapping[str, tuple[Any, ...]], bounds: Mapping[str, Bound] | None = None,
                  model: ClipModel | None = None) -> None:
    """Refuse an option ``owner`` does not declare, a value of another type than its
    default's, outside its choices (exact match; the message lists them) or its bounds
    (those that depend on the model only where ``model`` is given)."""
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
        if bound is not None and value is not None and bound.integer and \
                (isinstance(value, bool) or not isinstance(value, int)):
            raise InputError(f"{owner}: {name} must be {bound.describe(model)}, got {value!r}")
        if bound is not None and value is not None and not bound.admits(value, model):
            raise InputError(f"{owner}: {name} must be {bound.describe(model)}, got {value!r}")


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
    #: the image towers' poolings it is defined for (see :attr:`ClipModel.pooling`); others are refused
    poolings: tuple[str, ...] = ("cls",)

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

    def notes_for(self, model: ClipModel, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The method's own departures for ``model`` and ``options`` (defaults filled in), in words."""
        return self.notes(model, {**self.options, **options}) if self.notes is not None else ()


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


def _method(name: str) -> Method:
    """The registered method ``name``, or an error naming the closest."""
    if name not in METHODS:
        close = difflib.get_close_matches(str(name).lower().replace("-", "_"), list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}{hint}")
    return METHODS[name]


@dataclass(frozen=True)
class Request:
    """A method, its mode and its options, checked once by :func:`resolve`.

    ``str(request)`` is its label in tables: ``"grad_eclip"``, ``"grad_eclip:reference"``.
    ``departures`` are the mode's; :meth:`departures_for` adds the method's own for a model.
    """

    method: Method
    mode: str = "faithful"
    options: Mapping[str, Any] = field(default_factory=dict)
    text: bool = False

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def departures(self) -> Departures:
        """The mode's departures (the published code's in ``"reference"``)."""
        return departures_for(self.mode)

    def departures_for(self, model: ClipModel) -> Departures:
        """Everything an explanation of ``model`` departs by: the mode's and the method's own."""
        return self.departures.with_notes(*self.method.notes_for(model, self.options))

    def __str__(self) -> str:
        return self.name if self.mode == "faithful" else f"{self.name}:{self.mode}"


def resolve(method: str | Method | Request, mode: str | None = None, options: Mapping[str, Any] | None = None,
            *, text: bool = False, model: ClipModel | None = None) -> Request:
    """The one place a request is decided: the method (a name, ``"name:mode"``, a
    :class:`Method` or a :class:`Request`), its mode (default: the one in the name, else
    ``"faithful"``; a different one given twice is refused) and its options (merged over a
    request's own), checked against the registry -- the mode among the method's, a text
    branch where ``text``, every option declared, of its default's type, within its choices
    and bounds; with ``model``, the bounds that depend on it too."""
    given = dict(options or {})
    if isinstance(method, Request):
        if mode is not None and mode != method.mode:
            raise InputError(f"{method} is already in mode {method.mode!r}; mode={mode!r} contradicts it")
        base, mode, given = method.method, method.mode, {**method.options, **given}
        text = text or method.text
    elif isinstance(method, Method):
        base = method
    elif isinstance(method, str):
        name, colon, named_mode = method.partition(":")
        if colon and mode is not None and mode != named_mode:
            raise InputError(f"{method!r} names mode {named_mode!r} but mode={mode!r} was given: name it once")
        base = _method(name)
        mode = named_mode if colon else mode
    else:
        raise InputError(f"method must be a name such as 'grad_eclip' or 'grad_eclip:reference', "
                         f"got {type(method).__name__}")
    mode = mode or "faithful"
    if mode not in base.modes:
        raise InputError(f"method {base.name!r} has no mode {mode!r}; its modes: {', '.join(base.modes)}")
    if text and base.text_route is None:
        raise InputError(f"method {base.name!r} has no text branch")
    declared = base.text_options if text else base.options
    bounds = TEXT_BOUNDS if text else base.bounds
    check_options(f"method {base.name!r}", declared, given, base.choices, bounds, model)
    if model is not None and model.traced and model.pooling != "cls":
        check_pooling(base, mode, text, model)
    return Request(base, mode, given, text)


POOLING_WORDS = {"cls": "a class token", "map": "an attention probe over the patch tokens (no class token)"}


def check_pooling(base: Method, mode: str, text: bool, model: ClipModel) -> None:
    """Refuse, in one line, a method or mode not defined for the model's pooling."""
    how = POOLING_WORDS.get(model.pooling, model.pooling)
    if model.pooling not in base.poolings:
        usable = ", ".join(m.name for m in METHODS.values() if model.pooling in m.poolings)
        raise UnsupportedModelError(f"method {base.name!r} reads a class token; {model.name} pools with {how}. "
                                    f"Methods defined for it: {usable}")
    if mode != "faithful":
        raise UnsupportedModelError(f"mode {mode!r} (the published Grad-ECLIP recipe: one head in the last block, "
                                    f"keep-size input) is defined for class-token ViTs; {model.name} pools with "
                                    f"{how}: use mode='faithful'")
    if text and not model.text_explainable:
        raise UnsupportedModelError(f"{model.name}'s text tower is not explained by eclip yet "
                                    f"(image maps only)")


def all_requests() -> list[Request]:
    """Every registered method in every mode it supports, with its default options."""
    return [Request(m, mode) for m in METHODS.values() for mode in m.modes]


ECLIP_CHOICES = {"qk": QK_CHOICES}
#: A number of the last vision blocks: 1 to the model's depth.
BLOCKS = Bound(1, depth, integer=True, what="the model's vision blocks")
#: The text branch's options' bounds (its blocks summed: 1 to the text tower's depth).
TEXT_BOUNDS = {"n_blocks": Bound(1, text_depth, integer=True, what="the text blocks summed")}
#: defined for class-token and attention-probe pooling alike (the probe's row takes the CLS row's place)
ANY_POOLING = ("cls", "map")
register(Method("grad_eclip", grad_eclip, "Grad-ECLIP: dS/d(attention output) applied to the values",
                MODES, text_route="grad", choices=ECLIP_CHOICES, poolings=ANY_POOLING))
register(Method("attention_eclip", attention_eclip,
                "Attention-ECLIP: dS/d(attention probabilities), summed over heads",
                MODES, text_route="attention", choices=ECLIP_CHOICES, poolings=ANY_POOLING))
register(Method("attention", raw_attention, "raw self-attention of the last block (CLS row, mean over heads)",
                poolings=ANY_POOLING))
register(Method("rollout", attention_rollout, "attention rollout (Abnar & Zuidema 2020)",
                bounds={"start_block": Bound(0, last_block, integer=True, what="the model's vision blocks")}))
register(Method("gae", gae, "Generic Attention Explainability (Chefer et al. 2021), rollout over blocks",
                bounds={"logit_scale": Bound(0, low_open=True)}))
register(Method("gradcam", gradcam, "Grad-CAM on the tokens entering the last block",
                choices={"cls_token": CLS_TOKEN_CHOICES}))
register(Method("maskclip", maskclip, "MaskCLIP-style dense similarity of value-path patch embeddings"))
register(Method("rise", rise, "RISE: saliency from randomly masked forward passes",
                bounds={"n_masks": Bound(1), "cells": Bound(1), "batch_size": Bound(1),
                        "keep": Bound(0, 1, low_open=True)}, poolings=ANY_POOLING))
register(Method("legrad", legrad, "LeGrad: positive gradients of per-block scores w.r.t. the attention, "
                "last blocks summed, min-max", choices={"pooling": POOLINGS}, notes=legrad_notes,
                bounds={"n_blocks": BLOCKS}))
register(Method("direct_contributions", direct_contributions,
                "direct contributions: each patch's head terms of the embedding (final norm frozen), last blocks",
                choices={"split": SPLITS}, bounds={"n_blocks": BLOCKS}))
register(Method("clip_surgery", clip_surgery, "CLIP Surgery: v-v attention path and feature surgery "
                "(a modified network; maps relative to the prompts)", notes=surgery_notes, prompt_set=True,
                bounds={"n_blocks": BLOCKS}))
register(Method("integrated_gradients", integrated_gradients,
                "integrated gradients on the patch embeddings from a black image", choices={"baseline": BASELINES},
                bounds={"steps": Bound(1), "batch_size": Bound(1)}, poolings=ANY_POOLING))
register(Method("occlusion", occlusion, "occlusion: score drop with one patch replaced by black",
                choices={"baseline": BASELINES}, bounds={"window": Bound(1), "batch_size": Bound(1)},
                poolings=ANY_POOLING))
register(Method("edges", edge_strength, "control: the image's edge strength per patch, blind to the model "
                "(it must fail P2)", notes=edges_notes, poolings=ANY_POOLING))
register(Method("centre", centre_prior, "control: a centre prior, blind to the image and the model (it must fail P2)",
                notes=control_notes, poolings=ANY_POOLING))
register(Method("random", random_map, "control: a random map, the same for the same image, blind to the model "
                "(it must fail P2)", notes=control_notes, poolings=ANY_POOLING))
