"""Grad-ECLIP and its exact equivalent, Attention-ECLIP (image and text branches).

Image branch, for the last block (PAPER.md):

    Grad-ECLIP       G_i = ReLU( lambda_i * sum_c w_c v_{i,c} ),   w = dS/do_0
    Attention-ECLIP  G_i = ReLU( lambda_i * sum_h dS/dA^h_{0,i} )

Both routes are computed here from independent autograd leaves (the CLS attention
output for one, the CLS row of the attention probabilities for the other), so their
agreement is a measurement, not a shared line of code.

``mode="faithful"`` differentiates the original multi-head model at its native
resolution. ``mode="reference"`` reproduces the published code: the last block
recomputed with one head over the full width, and the input at keep-size resolution
with interpolated positional embeddings (the caller prepares that input).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..trace import (Trace, merge_heads, text_tower, trace_text, trace_vision, vision_readout,
                     vision_tower)
from .base import cosine_cotangents, cosine_scores, minmax, pullback, pushforward, unit

QK_CHOICES = ("out_proj", "raw")
#: Up to this many targets Attention-ECLIP differentiates in reverse mode, beyond in forward mode.
REVERSE_MODE_TARGETS = 16


def merge_heads_last(t: torch.Tensor) -> torch.Tensor:
    """(..., B, H, 1, d) -> (..., B, H*d): one query's attention output, heads concatenated."""
    return t.squeeze(-2).flatten(-2)


def loosened_attention(block, q: torch.Tensor, k: torch.Tensor, qk: str = "out_proj") -> torch.Tensor:
    """cos(q, k_i) over the full width (all heads together), before min-max.

    ``q``: (B, D) the query position; ``k``: (B, N, D) the keys. ``qk="out_proj"``
    first passes both through the block's output projection, as the published
    evaluation code does; ``qk="raw"`` uses them as they are (the demo notebook).
    """
    if qk == "out_proj":
        q, k = block.attn.out_proj(q), block.attn.out_proj(k)
    elif qk != "raw":
        raise ValueError(f"qk must be one of {QK_CHOICES}, got {qk!r}")
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
        k, b, _ = c.shape
        return c.clamp_min(0).transpose(0, 1).reshape(b, k, *self.trace.grid)


def image_eclip_parts(model, images: torch.Tensor, targets: torch.Tensor, *, route: str,
                      mode: str = "faithful", loosened: bool = True, qk: str = "out_proj") -> EclipParts:
    """Either route on the last vision block, kept in pieces (see :class:`EclipParts`)."""
    visual = vision_tower(model)
    block = visual.transformer.resblocks[-1]
    reference = mode == "reference"
    with torch.no_grad():
        tr = trace_vision(model, images, last_block_heads=1 if reference else None,
                          any_size=reference, record="last")
    last = tr.blocks[-1]
    x_cls, v = last.x_in[:, 0], last.v  # v: (B, H, T, d)
    cot = cosine_cotangents(tr.embedding, targets)  # (K, B, E)

    if route == "attention":
        def from_attn_row(row):  # row: (..., B, H, T), the CLS row of A
            return vision_readout(visual, block, x_cls, merge_heads_last(row.unsqueeze(-2) @ v))
        row = last.attn[:, :, 0]
        if len(targets) <= REVERSE_MODE_TARGETS:  # a few targets: one small backward pass each
            grad = pullback(from_attn_row, row, cot).sum(2)  # (K, B, T): sum_h dS/dA^h_{0,t}
        else:  # many: forward mode, d f / d A^h_{0,t} summed over heads for every token t at
            # once; the K targets then cost one (K, E) x (E, T) product
            tangents = torch.eye(row.shape[-1], dtype=row.dtype)[:, None, None, :].expand(-1, *row.shape)
            grad = torch.einsum("kbe,tbe->kbt", cot, pushforward(from_attn_row, row, tangents))
        contrib = grad[..., 1:]
    elif route == "grad":
        grad = pullback(lambda o: vision_readout(visual, block, x_cls, o), last.attn_out[:, 0], cot)
        contrib = torch.einsum("kbd,bnd->kbn", grad, merge_heads(v)[:, 1:])
    else:
        raise ValueError(f"unknown route {route!r}")

    lam = None
    if loosened:
        with torch.no_grad():
            lam = minmax(loosened_attention(block, merge_heads(last.q)[:, 0],
                                            merge_heads(last.k)[:, 1:], qk))
    return EclipParts(tr, grad, contrib, lam, cosine_scores(tr.embedding, targets))


def image_eclip(model, images, targets, *, route: str, **options):
    """(maps (B, K, gh, gw), scores (B, K)) of either route."""
    parts = image_eclip_parts(model, images, targets, route=route, **options)
    return parts.maps(), parts.scores


def grad_eclip(model, images, targets, **options):
    """Grad-ECLIP: channel weights dS/do_0 applied to the values (the published route)."""
    return image_eclip(model, images, targets, route="grad", **options)


def attention_eclip(model, images, targets, **options):
    """Attention-ECLIP: gradient of the score w.r.t. the CLS row of the attention probabilities."""
    return image_eclip(model, images, targets, route="attention", **options)


# ----------------------------------------------------------------------------- text


def default_text_blocks(model) -> int:
    """All blocks of shallow text towers; the last half of deeper ones."""
    depth = len(text_tower(model).transformer.resblocks)
    return depth if depth <= 4 else depth // 2


def text_eclip(model, tokens: torch.Tensor, targets: torch.Tensor, *, route: str,
               mode: str = "faithful", loosened: bool = True, qk: str = "out_proj",
               n_blocks: int | None = None):
    """Token maps (B, K, L) for B texts and K image targets, with the token mask (B, L).

    The query is the EOT position; the explained tokens are those strictly between SOT
    and EOT; contributions of the last ``n_blocks`` blocks are summed, passed through
    ReLU and normalised to sum 1 per map (an all-zero map stays zero).
    """
    tower = text_tower(model)
    depth = len(tower.transformer.resblocks)
    n_blocks = n_blocks or default_text_blocks(model)
    if not 1 <= n_blocks <= depth:
        raise ValueError(f"n_blocks must be in 1..{depth}, got {n_blocks}")
    heads = {i: 1 for i in range(-n_blocks, 0)} if mode == "reference" else None
    with torch.enable_grad():
        tr = trace_text(model, tokens, heads=heads)
        blocks = tr.blocks[-n_blocks:]
        cot = cosine_cotangents(tr.embedding, targets)
        leaves = [b.attn if route == "attention" else b.attn_out for b in blocks]
        grads = torch.autograd.grad(tr.embedding, leaves, cot, is_grads_batched=True)
    batch = torch.arange(len(tokens))
    eot = tr.pool_index
    positions = torch.arange(tokens.shape[1])
    token_mask = (positions[None] > 0) & (positions[None] < eot[:, None])  # (B, L)
    total = 0
    for block_mod, rec, grad in zip(tower.transformer.resblocks[-n_blocks:], blocks, grads):
        if route == "attention":
            # (K, B, H, L, L) -> EOT row of each map, summed over heads -> (K, B, L)
            contrib = grad.transpose(0, 1)[batch, :, :, eot].sum(2).transpose(0, 1)
        else:
            w = grad[:, batch, eot]  # (K, B, D)
            contrib = torch.einsum("kbd,bld->kbl", w, merge_heads(rec.v).detach())
        if loosened:
            with torch.no_grad():
                cos = loosened_attention(block_mod, merge_heads(rec.q)[batch, eot],
                                         merge_heads(rec.k), qk)
                lam = minmax(cos) if mode == "reference" else _masked_minmax(cos, token_mask)
            contrib = lam[None] * contrib
        total = total + contrib
    maps = total.clamp_min(0).transpose(0, 1) * token_mask[:, None]
    norm = maps.sum(-1, keepdim=True)
    maps = torch.where(norm > 0, maps / norm.clamp_min(1e-30), maps)
    return maps.detach(), cosine_scores(tr.embedding.detach(), targets), token_mask


def _masked_minmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min-max over the positions in ``mask`` only (the explained tokens)."""
    big = torch.finfo(x.dtype).max
    lo = torch.where(mask, x, big).amin(-1, keepdim=True)
    hi = torch.where(mask, x, -big).amax(-1, keepdim=True)
    span = hi - lo
    scaled = torch.where(span > 1e-12, (x - lo) / span.clamp_min(1e-12), torch.ones_like(x))
    return scaled * mask
