"""What every explainer shares: the result type, scores and batched gradients."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from .. import maps as maps_
from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..errors import EclipError
from ..trace import Trace

if TYPE_CHECKING:
    from .registry import Request


@dataclass(frozen=True)
class Explanation:
    """Maps for B inputs and K targets, with the scores that were explained.

    ``maps``: (B, K, grid_h, grid_w) for the image branch, (B, K, tokens) for the text
    branch. Together with them every explanation carries its certificate, which forward
    pass it explained: ``scores``, (B, K) the quantity the method differentiated or
    perturbed (a cosine, of the forward pass it used); ``departures``, how that pass
    and the map's computation depart from the deployed model (:meth:`describe` in
    words; :data:`~eclip_core.departures.FAITHFUL`: not at all); and, wherever
    ``departures`` is not empty, ``scores_original``, (B, K) the deployed model's cosine
    for the same images and targets through its own pipeline (``drift`` = the difference).
    """

    maps: torch.Tensor
    scores: torch.Tensor
    request: Request  # the method, mode and options that made it
    departures: Departures = FAITHFUL
    branch: str = "image"
    scores_original: torch.Tensor | None = None
    input_size: tuple[int, int] | None = None
    token_mask: torch.Tensor | None = None  # (B, tokens) positions explained (text branch)
    #: (B, K) which targets are real, where images had lists of texts of different lengths
    #: (the rest are NaN padding); None when every (image, target) entry is real
    target_mask: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The explainer's name."""
        return self.request.name

    def describe(self, model: Any = None) -> list[str]:
        """Everything its forward pass did differently from the deployed model, in words
        (``[]``: it explained the model itself); with ``model`` the words name its own numbers
        (see :meth:`Departures.describe`)."""
        from ..models import as_model  # the door: a bare module is welcome here too

        clip = None if model is None else as_model(model)
        return self.departures.describe(clip, input_size=self.input_size, branch=self.branch)

    @property
    def drift(self) -> torch.Tensor | None:
        """``scores - scores_original`` where both exist."""
        if self.scores_original is None:
            return None
        return self.scores - self.scores_original

    def per_image(self) -> list[torch.Tensor]:
        """The maps of each input, without padding: ``[maps[b, :K_b]]`` (K_b: its own targets)."""
        if self.target_mask is None:
            return list(self.maps)
        return [m[row] for m, row in zip(self.maps, self.target_mask)]

    def upsampled(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, K, H, W) maps bilinearly upsampled to ``size`` (default: the explained input)."""
        if self.branch != "image":
            raise EclipError("only image maps can be upsampled")
        size = size or self.input_size
        if size is None:
            raise EclipError("this explanation does not know its input size: pass size=(H, W)")
        return maps_.upsample(self.maps, size)


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def n_targets(targets: torch.Tensor) -> int:
    """K, for shared (K, E) or per-image (B, K, E) targets."""
    return targets.shape[-2]


def per_image(targets: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, K, E): per-image targets as they are, shared (K, E) targets for every image."""
    return targets if targets.ndim == 3 else targets.expand(batch, -1, -1)


def cosine_scores(embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, K) cosine between B embeddings and unit-norm targets, shared (K, E) or per image (B, K, E)."""
    t = targets.to(embedding.dtype)
    if t.ndim == 3:
        return torch.einsum("be,bke->bk", unit(embedding), t)
    return unit(embedding) @ t.T


def cosine_cotangents(embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(K, B, E): dS_bk/df_b for S = cos(f, t_k), computed in closed form.

    dS/df = (t - S f/|f|) / |f| with t of unit norm: one matrix product for all targets
    instead of one backward pass each.
    """
    norm = embedding.norm(dim=-1, keepdim=True)  # (B, 1)
    f_hat = embedding / norm
    t = targets.to(embedding.dtype)
    if t.ndim == 3:  # per-image targets (B, K, E)
        s = torch.einsum("be,bke->bk", f_hat, t)
    else:
        s, t = f_hat @ t.T, t[None]
    grad = (t - s[..., None] * f_hat[:, None]) / norm[..., None]  # (B, K, E)
    return grad.transpose(0, 1)


# ----------------------------------------------------------------------------- grad mode

FnT = TypeVar("FnT", bound=Callable[..., Any])


@contextmanager
def autograd() -> Iterator[None]:
    """Autograd on, whatever the caller's grad mode (``no_grad``, ``inference_mode``);
    the caller's mode is restored on exit."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def normal_tensor(x: Any) -> Any:
    """``x``, or a normal copy of it where it is an inference tensor (one made under
    ``torch.inference_mode()``, which autograd cannot save)."""
    if isinstance(x, torch.Tensor) and x.is_inference():
        with torch.inference_mode(False):
            return x.clone()
    return x


def grad_leaf(x: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``x`` that requires grad: the tensor to differentiate from.

    Everything computed from it is differentiable even when the model's parameters are
    frozen (``model.requires_grad_(False)``); the parameters' flags are never changed.
    """
    with torch.inference_mode(False):
        return normal_tensor(x).detach().requires_grad_(True)


def grad_mode_independent(fn: FnT) -> FnT:
    """Run an explainer ``fn(model, inputs, targets, ...)`` outside inference mode, on
    normal copies of inference-tensor inputs, so it works under ``torch.no_grad()``,
    ``torch.inference_mode()`` and with frozen parameters alike; the caller's grad mode
    and every ``requires_grad`` flag are left as they were. The signature (and so the
    declared options) is ``fn``'s."""

    @functools.wraps(fn)
    def run(model: ClipModel, inputs, targets, *args, **kwargs):
        with torch.inference_mode(False):
            return fn(model, normal_tensor(inputs), normal_tensor(targets), *args, **kwargs)

    return cast(FnT, run)


def pullback(fn: Callable[[torch.Tensor], torch.Tensor], leaf: torch.Tensor, cotangents: torch.Tensor,
             *, broadcasts: bool = False) -> torch.Tensor:
    """Vector-Jacobian products of ``fn`` at ``leaf`` for K cotangents at once.

    ``fn`` maps ``leaf`` (B, ...) to (B, E); ``cotangents`` is (K, B, E); returns
    (K, B, ...). With more targets than embedding dimensions the Jacobian (E
    products) is formed once and contracted with the K cotangents, so the cost is
    bounded by E small backward passes, never K.

    ``broadcasts=True`` says that ``fn`` also maps (K, B, ...) to (K, B, E): the products
    are then one ordinary backward pass through ``fn`` applied to K copies of ``leaf``
    instead of a batched (vmapped) one. Prefer it where ``fn`` multiplies the leaf by a
    tensor of its own (``A @ v``): the batched backward pass copies that tensor once per
    cotangent.
    """
    k, b, e = cotangents.shape
    vectors = cotangents
    if k > e:  # the Jacobian, one row per embedding dimension
        vectors = torch.eye(e, dtype=cotangents.dtype, device=cotangents.device).unsqueeze(1).expand(e, b, e)
    with autograd():
        if broadcasts:
            copies = grad_leaf(normal_tensor(leaf).expand(vectors.shape[0], *leaf.shape).contiguous())
            out = fn(copies)
            grads = torch.autograd.grad(out, copies, vectors.to(out.dtype))[0]
        else:
            leaf = grad_leaf(leaf)
            out = fn(leaf)
            grads = torch.autograd.grad(out, leaf, vectors.to(out.dtype), is_grads_batched=True)[0]
    if k > e:
        return torch.einsum("kbe,eb...->kb...", cotangents.to(grads.dtype), grads)
    return grads


def pushforward(fn: Callable[[torch.Tensor], torch.Tensor], leaf: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """Jacobian-vector products of ``fn`` at ``leaf`` for N tangents at once (forward mode).

    ``fn`` maps ``leaf`` (B, ...) to (B, E) and must broadcast over one extra leading
    dimension; ``tangents`` is (N, B, ...); returns (N, B, E). The cost grows with N
    (e.g. the patches), not with the number of targets.
    """
    with warnings.catch_warnings():  # torch's first forward-AD call warns about its own jit use
        warnings.simplefilter("ignore", FutureWarning)
        with torch.inference_mode(False), torch.no_grad(), fwAD.dual_level():
            leaf, tangents = normal_tensor(leaf), normal_tensor(tangents)
            dual = fwAD.make_dual(leaf.detach().expand_as(tangents).contiguous(), tangents)
            return fwAD.unpack_dual(fn(dual)).tangent


def check_finite(values: torch.Tensor, method: str, what: str = "map") -> torch.Tensor:
    """``values`` unchanged, or an error: NaN or Inf is never returned as an explanation."""
    if not torch.isfinite(values).all():
        raise EclipError(f"{method} produced NaN or Inf values in its {what}: refusing to return "
                         f"them (check the model's weights and the input)")
    return values


def explained_blocks(model: ClipModel, n_blocks: int | None, default: int) -> int:
    """How many of the last vision blocks a method reads: ``n_blocks`` (checked by the request),
    or ``default``."""
    return default if n_blocks is None else n_blocks


def blocks_in_words(model: ClipModel, n_blocks: int) -> str:
    """The last ``n_blocks`` vision blocks, numbered from 1: ``"block 12"``, ``"blocks 7–12"``."""
    depth = model.depth()
    return f"block {depth}" if n_blocks == 1 else f"blocks {depth - n_blocks + 1}–{depth}"


def record(model: ClipModel, images: torch.Tensor, departures: Departures, record: str = "all") -> Trace:
    """The forward pass an explainer explains: the model's own, or with the departures' heads and
    input size."""
    return model.trace_vision(images, heads=departures.heads, keep_size=departures.keep_size, record=record)
