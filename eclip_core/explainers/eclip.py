"""Grad-ECLIP and its exact equivalent, Attention-ECLIP (image and text branches).

Image branch, for the last block (PAPER.md):

    Grad-ECLIP       G_i = ReLU( lambda_i * sum_c w_c v_{i,c} ),   w = dS/do_0
    Attention-ECLIP  G_i = ReLU( lambda_i * sum_h dS/dA^h_{0,i} )

Both routes are computed here from independent autograd leaves (the CLS attention
output for one, the CLS row of the attention probabilities for the other), so their
agreement is a measurement, not a shared line of code.

With :data:`~eclip_core.departures.FAITHFUL` they differentiate the original
multi-head model at its native resolution; with
:data:`~eclip_core.departures.PUBLISHED` (``mode="reference"``) they reproduce the
published code: the explained blocks recomputed with one head over the full width, and
the input at keep-size resolution with interpolated positional embeddings (the caller
prepares that input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..clip import ClipModel
from ..departures import FAITHFUL, Departures
from ..maps import masked_minmax, minmax, to_grid
from ..trace import BlockRecord, Trace, merge_heads
from .base import (
    autograd,
    cosine_cotangents,
    cosine_scores,
    grad_mode_independent,
    pullback,
    pushforward,
    record,
    unit,
)

QK_CHOICES = ("out_proj", "raw")
ROUTES = ("grad", "attention")
#: Attention-ECLIP differentiates in reverse mode, at a cost growing with min(K, E) (K targets;
#: beyond the E embedding dimensions the Jacobian is formed once), unless min(K, E) exceeds both
#: REVERSE_MODE_TARGETS and FORWARD_MODE_RATIO x the T tokens; then in forward mode (cost growing
#: with T). Measured (2 CPU threads, the route alone as a share of one encode_image of 2 images):
#: ViT-B-16 (T = 197, E = 512), K = 300: reverse 0.13, forward 0.15; K = 500: 0.19 and 0.12;
#: K = 1000: 0.29 and 0.15. Embedded model (T = 65, E = 64): reverse 0.2-1.3, forward 0.9-1.5
#: at every K from 1 to 1000.
REVERSE_MODE_TARGETS = 16
FORWARD_MODE_RATIO = 2


def uses_forward_mode(targets: int, tokens: int, width: int) -> bool:
    """Whether Attention-ECLIP takes forward mode for ``targets`` targets over ``tokens``
    tokens of a model whose embedding has ``width`` dimensions."""
    rows = min(targets, width)
    return rows > REVERSE_MODE_TARGETS and rows > FORWARD_MODE_RATIO * tokens


def loosened_attention(model: ClipModel, q: torch.Tensor, k: torch.Tensor, qk: str = "out_proj", *,
                       tower: str = "vision", block: int = -1) -> torch.Tensor:
    """cos(q, k_i) over the full width (all heads together), before min-max.

    ``q``: (B, D) the query position; ``k``: (B, N, D) the keys. ``qk="out_proj"``
    first passes both through the block's output projection, as the published
    evaluation code does; ``qk="raw"`` uses them as they are (the demo notebook).
    """
    if qk == "out_proj":
        q = model.attention_projection(q, tower=tower, block=block)
        k = model.attention_projection(k, tower=tower, block=block)
    return (unit(q)[:, None] * unit(k)).sum(-1)


# ----------------------------------------------------------------------------- image


@dataclass
class EclipParts:
    """The pieces of the image-branch formula, before they are combined into a map."""

    trace: Trace  # the forward pass that was differentiated
    gradient: torch.Tensor  # (K, B, D) dS/do_0 ("grad") or (K, B, T) sum_h dS/dA^h_0t ("attention")
    contribution: torch.Tensor  # (K, B, N) sum_c w_c v_ic = sum_h dS/dA^h_0i, per patch
    loosened: torch.Tensor | None  # (B, N) lambda, min-max normalised; None when dropped
    scores: torch.Tensor  # (B, K) the cosines that were differentiated

    def maps(self) -> torch.Tensor:
        """(B, K, gh, gw) = ReLU(lambda * contribution)."""
        c = self.contribution if self.loosened is None else self.loosened[None] * self.contribution
        assert self.trace.grid is not None
        return to_grid(c.clamp_min(0).transpose(0, 1), self.trace.grid)


def _attention_route(model: ClipModel, last: BlockRecord, cot: torch.Tensor) -> torch.Tensor:
    """(K, B, T) sum_h dS/dA^h_{0,t}: the CLS row of the attention probabilities as the leaf."""
    x_cls, v = last.x_in[:, 0], last.v  # v: (B, H, T, d)

    def from_attn_row(row):  # row: (..., B, H, T), the CLS row of A; einsum, not a broadcast
        # matmul, so that extra leading dimensions never copy v
        return model.cls_readout(x_cls, torch.einsum("...bht,bhtd->...bhd", row, v).flatten(-2))

    row = last.attn[:, :, 0]
    if not uses_forward_mode(cot.shape[0], row.shape[-1], cot.shape[-1]):  # few targets: reverse mode, cost ~ K
        return pullback(from_attn_row, row, cot, broadcasts=True).sum(2)
    # many: forward mode, d f / d A^h_{0,t} summed over heads for every token t at once;
    # the K targets then cost one (K, E) x (E, T) product
    tangents = torch.eye(row.shape[-1], dtype=row.dtype, device=row.device)[:, None, None, :].expand(-1, *row.shape)
    return torch.einsum("kbe,tbe->kbt", cot, pushforward(from_attn_row, row, tangents))


@grad_mode_independent
def image_eclip_parts(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *, route: str,
                      departures: Departures = FAITHFUL, loosened: bool = True,
                      qk: str = "out_proj") -> EclipParts:
    """Either route on the last vision block, kept in pieces (see :class:`EclipParts`)."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}")
    with torch.no_grad():
        tr = record(model, images, departures, "last")
    last = tr.blocks[-1]
    cot = cosine_cotangents(tr.embedding, targets)  # (K, B, E)
    if route == "attention":
        grad = _attention_route(model, last, cot)
        contrib = grad[..., 1:]
    else:
        x_cls = last.x_in[:, 0]
        grad = pullback(lambda o: model.cls_readout(x_cls, o), last.attn_out[:, 0], cot)
        contrib = torch.einsum("kbd,bnd->kbn", grad, merge_heads(last.v)[:, 1:])
    lam = None
    if loosened:
        with torch.no_grad():
            lam = minmax(loosened_attention(model, merge_heads(last.q)[:, 0], merge_heads(last.k)[:, 1:], qk))
    return EclipParts(tr, grad, contrib, lam, cosine_scores(tr.embedding, targets))


@grad_mode_independent
def grad_eclip(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
               departures: Departures = FAITHFUL, loosened: bool = True,
               qk: str = "out_proj") -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-ECLIP: channel weights dS/do_0 applied to the values (the published route)."""
    parts = image_eclip_parts(model, images, targets, route="grad", departures=departures,
                              loosened=loosened, qk=qk)
    return parts.maps(), parts.scores


@grad_mode_independent
def attention_eclip(model: ClipModel, images: torch.Tensor, targets: torch.Tensor, *,
                    departures: Departures = FAITHFUL, loosened: bool = True,
                    qk: str = "out_proj") -> tuple[torch.Tensor, torch.Tensor]:
    """Attention-ECLIP: gradient of the score w.r.t. the CLS row of the attention probabilities."""
    parts = image_eclip_parts(model, images, targets, route="attention", departures=departures,
                              loosened=loosened, qk=qk)
    return parts.maps(), parts.scores


# ----------------------------------------------------------------------------- text


def default_text_blocks(model: ClipModel) -> int:
    """All blocks of shallow text towers; the last half of deeper ones."""
    depth = model.depth("text")
    return depth if depth <= 4 else depth // 2


@dataclass
class TextParts:
    """The text branch's pieces before the ReLU: ``total`` (K, B, L) the contributions of the
    explained blocks summed, for K cotangents of the text embedding; ``embedding`` (B, E) the
    text embedding of the pass; ``token_mask`` (B, L) the explained tokens (strictly between SOT
    and EOT)."""

    total: torch.Tensor
    embedding: torch.Tensor
    token_mask: torch.Tensor


def text_eclip_parts(model: ClipModel, tokens: torch.Tensor, cotangents: Callable[[torch.Tensor], torch.Tensor], *,
                     route: str, departures: Departures = FAITHFUL, loosened: bool = True, qk: str = "out_proj",
                     n_blocks: int | None = None) -> TextParts:
    """Either route on the last ``n_blocks`` text blocks, for the cotangents ``cotangents(e)``
    (K, B, E) of the text embedding ``e``: per block the EOT query's contributions (with the
    loosened term), summed. Linear in the cotangents."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}")
    depth = model.depth("text")
    if n_blocks is None:
        n_blocks = default_text_blocks(model)
    with autograd():  # differentiable from the token embeddings on: frozen parameters work too
        tr = model.trace_text(tokens, heads=departures.heads, explained=n_blocks, differentiable=True)
        blocks = tr.blocks[-n_blocks:]
        cot = cotangents(tr.embedding.detach())
        leaves = [b.attn if route == "attention" else b.attn_out for b in blocks]
        grads = torch.autograd.grad(tr.embedding, leaves, cot, is_grads_batched=True)
    batch = torch.arange(len(tokens))
    eot = tr.pool_index
    positions = torch.arange(tokens.shape[1])
    token_mask = (positions[None] > 0) & (positions[None] < eot[:, None])  # (B, L)
    total = torch.zeros(())
    for index, rec, grad in zip(range(depth - n_blocks, depth), blocks, grads):
        if route == "attention":
            # (K, B, H, L, L) -> EOT row of each map, summed over heads -> (K, B, L)
            contrib = grad.transpose(0, 1)[batch, :, :, eot].sum(2).transpose(0, 1)
        else:
            w = grad[:, batch, eot]  # (K, B, D)
            contrib = torch.einsum("kbd,bld->kbl", w, merge_heads(rec.v).detach())
        if loosened:
            with torch.no_grad():
                cos = loosened_attention(model, merge_heads(rec.q)[batch, eot], merge_heads(rec.k), qk,
                                         tower="text", block=index)
                lam = minmax(cos) if departures.minmax_all_tokens else masked_minmax(cos, token_mask)
            contrib = lam[None] * contrib
        total = total + contrib
    return TextParts(total.detach(), tr.embedding.detach(), token_mask)


def text_maps(total: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """(B, K, L) token maps from the summed contributions (K, B, L): ReLU, the explained tokens
    only, normalised to sum 1 per map (an all-zero map stays zero)."""
    maps = total.clamp_min(0).transpose(0, 1) * token_mask[:, None]
    norm = maps.sum(-1, keepdim=True)
    return torch.where(norm > 0, maps / norm.clamp_min(1e-30), maps)


@grad_mode_independent
def text_eclip(model: ClipModel, tokens: torch.Tensor, targets: torch.Tensor, *, route: str,
               departures: Departures = FAITHFUL, loosened: bool = True, qk: str = "out_proj",
               n_blocks: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token maps (B, K, L) for B texts and K image targets, with the token mask (B, L).

    The query is the EOT position; the explained tokens are those strictly between SOT
    and EOT; contributions of the last ``n_blocks`` blocks are summed, passed through
    ReLU and normalised to sum 1 per map (an all-zero map stays zero).
    """
    parts = text_eclip_parts(model, tokens, lambda e: cosine_cotangents(e, targets), route=route,
                             departures=departures, loosened=loosened, qk=qk, n_blocks=n_blocks)
    return text_maps(parts.total, parts.token_mask), cosine_scores(parts.embedding, targets), parts.token_mask
