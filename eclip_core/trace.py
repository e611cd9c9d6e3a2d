"""A recorded forward pass of an open_clip CLIP, computed from the model's own parameters.

This is the one module that knows open_clip's internals (``tests/test_layout.py`` fails
if another module reads them): the towers, blocks and heads, the readout path from
the CLS token to the embedding, the patch grid, and the facts other modules need
(:func:`image_size`, :func:`patch_size`, :func:`heads`, ...). It never modifies or
monkey-patches the model: every block is re-run from its own submodules (``ln_1``,
``ln_2``, ``mlp``, ``ls_1``, ``ls_2``, ``attn.out_proj``) and its attention from
``attn.in_proj_weight`` / ``in_proj_bias``, so that q, k, v, the attention
probabilities and the attention output exist as tensors that gradients can flow
through. ``tests/test_trace.py`` checks that the record reproduces
``model.encode_image`` / ``model.encode_text``.

The departures of the published Grad-ECLIP code are requested with one value,
:class:`~eclip_core.departures.Departures`: ``heads`` in the explained blocks (its
one-head recompute over the full width) and ``keep_size`` (a patch grid other than the
model's own, with bicubically interpolated positional embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock, TextTransformer, VisionTransformer

from .departures import FAITHFUL, Departures
from .errors import InputError, UnsupportedModelError

SUPPORTED = (
    "open_clip CLIP models whose image tower is open_clip's VisionTransformer with "
    "standard ResidualAttentionBlocks and class-token pooling (ViT-B-16, ViT-B-32, "
    "ViT-L-14 and their variants, and the embedded eclip-shapes model)"
)


@dataclass
class BlockRecord:
    """What one transformer block computed. Shapes: B batch, H heads, T tokens, D width."""

    x_in: torch.Tensor  # (B, T, D) block input
    q: torch.Tensor  # (B, H, T, D/H) queries, before the 1/sqrt(d) scale
    k: torch.Tensor  # (B, H, T, D/H)
    v: torch.Tensor  # (B, H, T, D/H)
    attn: torch.Tensor  # (B, H, T, T) attention probabilities
    attn_out: torch.Tensor  # (B, T, D) concat_h A^h v^h, before the output projection
    x_out: torch.Tensor  # (B, T, D) block output

    @property
    def heads(self) -> int:
        return self.q.shape[1]


@dataclass
class Trace:
    """A recorded forward pass of one tower."""

    blocks: list[BlockRecord]
    embedding: torch.Tensor  # (B, E) final embedding, not normalised
    pool_index: torch.Tensor  # (B,) the token the embedding is read from (0 = CLS)
    grid: tuple[int, int] | None = None  # patch grid (vision only)


# ----------------------------------------------------------------------------- checks


def vision_tower(model) -> VisionTransformer:
    """The model's image tower, or a clear error if eclip cannot trace it."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        kind = type(visual).__name__ if visual is not None else type(model).__name__
        raise UnsupportedModelError(
            f"unsupported model: its image tower is {kind}, not a vision transformer "
            f"(ResNet towers such as RN50 have no attention to explain); supported: {SUPPORTED}"
        )
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise UnsupportedModelError(
            f"unsupported model: image tower pools with {visual.pool_type!r} / an attention "
            f"pooler, not the class token; supported: {SUPPORTED}"
        )
    for block in visual.transformer.resblocks:
        _check_block(block)
    return visual


def text_tower(model):
    """The object holding the text tower's modules (the CLIP itself, or its ``.text``)."""
    tower = model if isinstance(model, CLIP) else getattr(model, "text", None)
    if not isinstance(tower, (CLIP, TextTransformer)):
        raise UnsupportedModelError(
            f"unsupported model: {type(model).__name__} has no open_clip text transformer "
            f"(Hugging Face text towers are not traced); supported: {SUPPORTED}"
        )
    if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
        raise UnsupportedModelError("unsupported text tower: class-token or padding-mask variants")
    for block in tower.transformer.resblocks:
        _check_block(block)
    return tower


def _check_block(block) -> None:
    if not isinstance(block, ResidualAttentionBlock) or hasattr(block, "ln_1_kv"):
        raise UnsupportedModelError(
            f"unsupported transformer block {type(block).__name__}: eclip traces open_clip's "
            f"standard ResidualAttentionBlock (nn.MultiheadAttention); supported: {SUPPORTED}"
        )


# ----------------------------------------------------------------------------- model facts


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def image_size(model) -> tuple[int, int]:
    """(height, width) of the model's own input."""
    return _pair(vision_tower(model).image_size)


def declared_input_size(model) -> tuple[int, int] | None:
    """The input size any open_clip image tower declares (ViT or not); None without one."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    return None if size is None else _pair(size)


def patch_size(model) -> tuple[int, int]:
    """(height, width) of a patch."""
    return _pair(vision_tower(model).patch_size)


def grid_size(model) -> tuple[int, int]:
    """The patch grid of the model's own input."""
    return _pair(vision_tower(model).grid_size)


def embed_dim(model) -> int | None:
    """Width of the joint embedding space, as the image tower declares it (None if it does not)."""
    dim = getattr(getattr(model, "visual", None), "output_dim", None)
    return None if dim is None else int(dim)


def _blocks(model, tower: str):
    if tower == "vision":
        return vision_tower(model).transformer.resblocks
    if tower == "text":
        return text_tower(model).transformer.resblocks
    raise ValueError(f"tower must be 'vision' or 'text', got {tower!r}")


def depth(model, tower: str = "vision") -> int:
    """Number of transformer blocks of a tower."""
    return len(_blocks(model, tower))


def heads(model, tower: str = "vision", block: int = -1) -> int:
    """Attention heads of one block of a tower."""
    return int(_blocks(model, tower)[block].attn.num_heads)


def context_length(model) -> int:
    """Token positions of the text tower."""
    return int(text_tower(model).positional_embedding.shape[0])


def preprocess_config(model) -> dict | None:
    """open_clip's ``preprocess_cfg`` stored on the image tower (any kind), if any."""
    return getattr(getattr(model, "visual", None), "preprocess_cfg", None)


def logit_scale(model) -> torch.nn.Parameter:
    """The learnable log temperature of the contrastive loss."""
    return model.logit_scale


def vision_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The image tower's parameters by name."""
    return dict(vision_tower(model).named_parameters())


def vision_parameter_groups(model) -> list[tuple[str, list[str]]]:
    """The image tower's parameter names grouped top down, as the randomisation cascade uses them.

    ``proj+ln_post``, then ``block{L-1}``, ..., ``block0``, then ``embeddings`` (the
    patch, class and positional embeddings, ``ln_pre`` and anything else left).
    """
    names = list(vision_parameters(model))
    groups = [("proj+ln_post", [n for n in names if n == "proj" or n.startswith("ln_post.")])]
    for i in reversed(range(depth(model, "vision"))):
        prefix = f"transformer.resblocks.{i}."
        groups.append((f"block{i}", [n for n in names if n.startswith(prefix)]))
    used = {n for _, group in groups for n in group}
    groups.append(("embeddings", [n for n in names if n not in used]))
    return [(name, group) for name, group in groups if group]


# ----------------------------------------------------------------------------- blocks


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    return t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d)."""
    return t.transpose(1, 2).flatten(2)


def qkv(block, x: torch.Tensor, heads: int):
    """Queries, keys and values of ``block`` for input ``x``, split into ``heads`` heads."""
    z = block.ln_1(x)
    q, k, v = F.linear(z, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    return split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)


def attention_probs(q, k, attn_mask=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask), per head."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        logits = logits + attn_mask
    return logits.softmax(dim=-1)


def block_tail(block, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Everything a block does after attention: projection, residual, MLP. Token-wise."""
    y = x + block.ls_1(block.attn.out_proj(attn_out))
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def run_block(block, x: torch.Tensor, heads: int | None = None, attn_mask=None) -> BlockRecord:
    """Re-run one block from its parameters; ``heads`` other than the model's is a departure."""
    heads = heads or block.attn.num_heads
    if x.shape[-1] % heads:
        raise InputError(f"width {x.shape[-1]} is not divisible into {heads} heads")
    q, k, v = qkv(block, x, heads)
    attn = attention_probs(q, k, attn_mask)
    attn_out = merge_heads(attn @ v)
    return BlockRecord(x, q, k, v, attn, attn_out, block_tail(block, x, attn_out))


def run_blocks(blocks, x, attn_mask=None, *, departed: int = 0, heads: int | None = None):
    """Run a stack of blocks, recording each; the last ``departed`` run with ``heads`` heads."""
    n = len(blocks)
    records = []
    for i, block in enumerate(blocks):
        record = run_block(block, x, heads if i >= n - departed else None, attn_mask)
        records.append(record)
        x = record.x_out
    return records


def attention_projection(model, t: torch.Tensor, *, tower: str = "vision", block: int = -1) -> torch.Tensor:
    """A block's attention output projection ``W_out t + b_out`` applied to ``t`` (..., D)."""
    return _blocks(model, tower)[block].attn.out_proj(t)


# ----------------------------------------------------------------------------- vision


def check_images(model, images: torch.Tensor, departures: Departures = FAITHFUL) -> None:
    """Refuse a tensor that is not (B, 3, H, W) at the model's resolution (keep-size: a patch multiple)."""
    visual = vision_tower(model)
    any_size = departures.keep_size
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"images must be a (B, 3, H, W) tensor, got shape {shape}")
    if images.shape[0] == 0:
        raise InputError("no images given (batch of size 0)")
    size = tuple(images.shape[-2:])
    ph, pw = visual.patch_size
    if any_size:
        if size[0] % ph or size[1] % pw or size[0] < ph or size[1] < pw:
            raise InputError(f"image size {size} is not a positive multiple of the patch {ph}x{pw}")
    elif size != tuple(visual.image_size):
        raise InputError(
            f"images are {size[0]}x{size[1]} but the model's pipeline is "
            f"{visual.image_size[0]}x{visual.image_size[1]}; preprocess them with the model's "
            f"own preprocess (or pass PIL images)"
        )
    if not torch.isfinite(images).all():
        raise InputError("images contain NaN or Inf values")


def interpolate_pos_embedding(visual: VisionTransformer, grid: tuple[int, int]) -> torch.Tensor:
    """Positional embeddings for another patch grid (bicubic, align_corners=False), CLS kept."""
    pos = visual.positional_embedding
    if tuple(grid) == tuple(visual.grid_size):
        return pos
    gh, gw = visual.grid_size
    patch = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def _patches(visual: VisionTransformer, images: torch.Tensor):
    """(B, N, D) patch embeddings (``conv1``, row-major) and the grid."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    return x.flatten(2).transpose(1, 2), tuple(x.shape[-2:])


def _first_input(visual: VisionTransformer, patches: torch.Tensor, grid) -> torch.Tensor:
    """Class token prepended, positional embeddings added, ``ln_pre``: the first block's input."""
    cls = visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    x = torch.cat([cls, patches], dim=1) + interpolate_pos_embedding(visual, grid).to(patches.dtype)
    return visual.ln_pre(x)


def embed_images(visual: VisionTransformer, images: torch.Tensor):
    """Patch + class + positional embeddings, then ``ln_pre``: the first block's input."""
    patches, grid = _patches(visual, images)
    return _first_input(visual, patches, grid), grid


def _readout(visual: VisionTransformer, y: torch.Tensor) -> torch.Tensor:
    y = visual.ln_post(y)
    return y @ visual.proj if visual.proj is not None else y


def cls_readout(model, x_cls: torch.Tensor, attn_out_cls: torch.Tensor) -> torch.Tensor:
    """The image embedding from the last block's CLS input and CLS attention output.

    In the last block nothing mixes tokens after attention, so this is the whole path
    from the CLS attention output to the embedding: per-target gradients need only it.
    Broadcasts over leading dimensions.
    """
    visual = vision_tower(model)
    return _readout(visual, block_tail(visual.transformer.resblocks[-1], x_cls, attn_out_cls))


def cls_embedding_from_tokens(model, tokens: torch.Tensor, departures: Departures = FAITHFUL) -> torch.Tensor:
    """The image embedding as a function of the last block's input tokens (B, T, D).

    Only the CLS query of the last block is computed: the embedding reads nothing else.
    """
    visual = vision_tower(model)
    block = visual.transformer.resblocks[-1]
    q, k, v = qkv(block, tokens, departures.heads or block.attn.num_heads)
    cls_out = merge_heads(attention_probs(q[:, :, :1], k) @ v)[:, 0]
    return _readout(visual, block_tail(block, tokens[:, 0], cls_out))


def value_embeddings(model, values: torch.Tensor) -> torch.Tensor:
    """Last-block values (B, N, D) through the output projection, ``ln_post`` and the
    projection, skipping attention: MaskCLIP's dense patch embeddings (B, N, E)."""
    visual = vision_tower(model)
    return _readout(visual, attention_projection(model, values))


def trace_vision(model, images: torch.Tensor, departures: Departures = FAITHFUL, *,
                 record: str = "all") -> Trace:
    """Recorded forward pass of the image tower.

    With :data:`~eclip_core.departures.FAITHFUL` (the default) the trace is the model's
    own forward pass and reproduces ``model.encode_image``; ``departures`` requests the
    published code's (``heads`` in the last block; ``keep_size``: a grid from the
    image, interpolated positional embeddings). ``record="last"`` runs the blocks
    before the last through the model's own modules (fused attention, nothing kept)
    and records the last block only.
    """
    if record not in ("all", "last"):
        raise ValueError(f"record must be 'all' or 'last', got {record!r}")
    visual = vision_tower(model)
    check_images(model, images, departures)
    x, grid = embed_images(visual, images)
    resblocks = visual.transformer.resblocks
    if record == "last":
        x = _run_unrecorded(visual.transformer, resblocks[:-1], x)
        resblocks = resblocks[-1:]
    blocks = run_blocks(resblocks, x, departed=1, heads=departures.heads)
    last = blocks[-1]
    emb = cls_readout(model, last.x_in[:, 0], last.attn_out[:, 0])
    return Trace(blocks, emb, torch.zeros(len(images), dtype=torch.long), grid)


def _run_unrecorded(transformer, blocks, x: torch.Tensor) -> torch.Tensor:
    """Blocks through their own forward (batch-first tokens in and out)."""
    batch_first = getattr(transformer, "batch_first", True)
    x = x if batch_first else x.transpose(0, 1)
    for block in blocks:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


# ----------------------------------------------------------------------------- the zoo's accessors


def readout(model, tokens: torch.Tensor) -> torch.Tensor:
    """``ln_post`` then the projection, on (..., D) tokens: how the model reads its CLS token."""
    return _readout(vision_tower(model), tokens)


def input_normalisation(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of the model's preprocess: its declared ``preprocess_cfg``,
    else open_clip's default (the OpenAI CLIP constants)."""
    cfg = preprocess_config(model) or {}
    return tuple(cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(cfg.get("std", OPENAI_DATASET_STD))


def patch_embeddings(model, images: torch.Tensor) -> torch.Tensor:
    """(B, N, D): each patch through ``conv1``, before the class token and positions."""
    check_images(model, images)
    return _patches(vision_tower(model), images)[0]


def embedding_from_patches(model, patches: torch.Tensor) -> torch.Tensor:
    """(B, E) image embedding from (B, N, D) patch embeddings at the model's own grid:
    class token, positions, ``ln_pre``, the blocks' own forward, ``ln_post``, projection."""
    visual = vision_tower(model)
    x = _first_input(visual, patches, grid_size(model))
    return _readout(visual, _run_unrecorded(visual.transformer, visual.transformer.resblocks, x)[:, 0])


def surgery_patch_embeddings(model, tr: Trace, n_blocks: int) -> torch.Tensor:
    """(B, N, E) patch tokens of CLIP Surgery's second path (Li et al. 2023), read out.

    From the input of the first of the last ``n_blocks`` blocks a second residual stream
    runs beside the model's: in each of those blocks it adds ``out_proj`` of value-value
    attention ``softmax(v v^T / sqrt(d)) v`` per head, with the values the original
    path computes there (from ``ln_1`` of the original stream), and no MLP. Its patch
    tokens then go through ``ln_post`` and the projection. ``tr`` must record every block.
    """
    visual = vision_tower(model)
    blocks = visual.transformer.resblocks
    if not 1 <= n_blocks <= len(blocks) or len(tr.blocks) != len(blocks):
        raise InputError(f"surgery needs a full trace and 1..{len(blocks)} blocks, got {n_blocks}")
    x = tr.blocks[-n_blocks].x_in
    for block, rec in zip(list(blocks)[-n_blocks:], tr.blocks[-n_blocks:]):
        x = x + block.ls_1(block.attn.out_proj(merge_heads(attention_probs(rec.v, rec.v) @ rec.v)))
    return _readout(visual, x[:, 1:])


@dataclass
class ResidualTerms:
    """What wrote the last block's CLS output, term by term (B batch, L blocks, H heads, T tokens):

    ``x_L[CLS] = embedding + sum(heads) + sum(biases) + sum(mlps)`` (exactly, up to round-off).
    """

    embedding: torch.Tensor  # (B, D) the first block's CLS input (class + position, ln_pre)
    heads: torch.Tensor  # (B, L, H, T, D) ls_1(A^h[CLS, i] W_O^h v^h_i): head h reading token i
    biases: torch.Tensor  # (L, D) ls_1(b_O), the attention output bias
    mlps: torch.Tensor  # (B, L, D) each block's MLP output at CLS


def cls_head_terms(model, tr: Trace, index: int) -> torch.Tensor:
    """(B, H, T, D): what head h of block ``index``, reading token i, adds to the CLS residual."""
    block = vision_tower(model).transformer.resblocks[index]
    rec = tr.blocks[index]
    w = block.attn.out_proj.weight.unflatten(1, (rec.heads, rec.v.shape[-1]))  # (D, H, d)
    return block.ls_1(torch.einsum("bhid,ehd->bhie", rec.v, w) * rec.attn[:, :, 0, :, None])


def cls_residual_terms(model, tr: Trace) -> ResidualTerms:
    """The CLS residual stream of a full trace split into its terms (see :class:`ResidualTerms`)."""
    blocks = vision_tower(model).transformer.resblocks
    if len(tr.blocks) != len(blocks):
        raise InputError("the residual terms need a trace that records every block")
    biases, mlps = [], []
    for block, rec in zip(blocks, tr.blocks):
        bias = block.attn.out_proj.bias
        biases.append(block.ls_1(bias if bias is not None else torch.zeros_like(rec.x_in[0, 0])))
        y = rec.x_in[:, 0] + block.ls_1(block.attn.out_proj(rec.attn_out[:, 0]))
        mlps.append(block.ls_2(block.mlp(block.ln_2(y))))
    heads = torch.stack([cls_head_terms(model, tr, i) for i in range(len(blocks))], 1)
    return ResidualTerms(tr.blocks[0].x_in[:, 0], heads, torch.stack(biases), torch.stack(mlps, 1))


def frozen_readout(model, x_cls: torch.Tensor):
    """The readout with ``ln_post``'s mean and std taken from ``x_cls`` (B, D) as constants.

    Returns ``(linear, bias)``: ``linear(r)`` maps residual terms (B, ..., D) to
    ``proj(gamma * (r - mean_c r) / sigma)`` (B, ..., E), linear in ``r``; ``bias`` is
    ``proj(beta)`` (E,). ``linear(x_cls) + bias`` is the image embedding.
    """
    visual = vision_tower(model)
    ln = visual.ln_post
    if not isinstance(ln, torch.nn.LayerNorm):
        raise UnsupportedModelError(f"ln_post is {type(ln).__name__}, not a LayerNorm")
    sigma = (x_cls.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()  # (B, 1)
    weight = ln.weight if ln.weight is not None else torch.ones_like(x_cls[0])
    beta = ln.bias if ln.bias is not None else torch.zeros_like(x_cls[0])

    def project(r: torch.Tensor) -> torch.Tensor:
        return r @ visual.proj if visual.proj is not None else r

    def linear(r: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(len(sigma), *[1] * (r.ndim - 2), 1)
        return project((r - r.mean(-1, keepdim=True)) / s * weight)

    return linear, project(beta)


# ----------------------------------------------------------------------------- text


def text_pool_index(tower, tokens: torch.Tensor) -> torch.Tensor:
    """The position the text embedding is read from, as open_clip pools it."""
    pool = getattr(tower, "text_pool_type", None) or getattr(tower, "pool_type", "argmax")
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    if pool == "eos":
        eos = getattr(tower, "text_eos_id", None) or tower.eos_id
        return (tokens == eos).int().argmax(dim=-1)
    if pool == "first":
        return torch.zeros(len(tokens), dtype=torch.long)
    if pool == "last":
        return torch.full((len(tokens),), tokens.shape[1] - 1, dtype=torch.long)
    raise UnsupportedModelError(f"unsupported text pooling {pool!r}")


def check_tokens(tower, tokens: torch.Tensor) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
        raise InputError("text tokens must be a (B, context_length) tensor of token ids")
    if tokens.shape[0] == 0:
        raise InputError("no texts given")
    ctx = tower.positional_embedding.shape[0]
    if tokens.shape[1] > ctx:
        raise InputError(f"token sequences of length {tokens.shape[1]} exceed the context length {ctx}")


def trace_text(model, tokens: torch.Tensor, departures: Departures = FAITHFUL, *,
               explained: int = 1, differentiable: bool = False) -> Trace:
    """Recorded forward pass of the text tower (causal mask), reproducing ``encode_text``.

    ``departures.heads`` recomputes the last ``explained`` blocks with that many heads:
    the published code's one-head recompute of the blocks it explains.
    ``differentiable``: the token embeddings enter as a leaf that requires grad, so the
    record can be differentiated (under grad mode) even when the parameters are frozen.
    """
    tower = text_tower(model)
    check_tokens(tower, tokens)
    n = tokens.shape[1]
    dtype = tower.token_embedding.weight.dtype
    x = tower.token_embedding(tokens).to(dtype) + tower.positional_embedding[:n].to(dtype)
    if differentiable:
        x = x.detach().requires_grad_(True)
    mask = tower.attn_mask[:n, :n].to(dtype) if tower.attn_mask is not None else None
    blocks = run_blocks(tower.transformer.resblocks, x, mask, departed=explained, heads=departures.heads)
    idx = text_pool_index(tower, tokens)
    pooled = tower.ln_final(blocks[-1].x_out)[torch.arange(len(tokens)), idx]
    proj = tower.text_projection
    if proj is not None:
        pooled = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj
    return Trace(blocks, pooled, idx)
