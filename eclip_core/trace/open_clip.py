"""open_clip's class-token ViTs: the one reader of open_clip's internals.

:class:`OpenClipModel` re-runs an open_clip ``CLIP`` from its own parameters -- every block
from its submodules (``ln_1``, ``ln_2``, ``mlp``, ``ls_1``, ``ls_2``, ``attn.out_proj``) and
its attention from ``attn.in_proj_weight`` / ``in_proj_bias`` -- never modifying or
monkey-patching the model, so that q, k, v, the attention probabilities and the attention
output exist as tensors that gradients can flow through. ``tests/test_trace.py`` checks that
the record reproduces ``encode_image`` / ``encode_text``; ``tests/test_layout.py`` that no
other module reads open_clip's attributes.

The departures of the published Grad-ECLIP code arrive as plain values: ``heads`` in the
explained blocks (its one-head recompute over the full width) and ``keep_size`` (a patch
grid other than the model's own, with bicubically interpolated positional embeddings).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP
from open_clip.timm_model import TimmModel
from open_clip.transformer import LayerScale, ResidualAttentionBlock, TextTransformer, VisionTransformer

from ..clip import TOWERS, ClipModel
from ..errors import InputError, UnsupportedModelError
from . import BlockRecord, Trace, attention_probs, merge_heads, split_heads

SUPPORTED = (
    "open_clip CLIP models whose image tower is open_clip's VisionTransformer with "
    "standard ResidualAttentionBlocks and class-token pooling (ViT-B-16, ViT-B-32, "
    "ViT-L-14 and their variants, and the embedded eclip-shapes model)"
)


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def vision_tower(module) -> VisionTransformer:
    """The module's image tower, or a clear error if eclip cannot trace it."""
    visual = getattr(module, "visual", None)
    if not isinstance(visual, VisionTransformer):
        kind = type(visual).__name__ if visual is not None else type(module).__name__
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


def timm_tower(module) -> tuple[Any, torch.nn.Module] | None:
    """(trunk, head) of an open_clip image tower built on timm (``TimmModel``: the embedding is
    ``head(trunk(x))``), or None for any other tower. The trunk's own internals are timm's, read
    by :mod:`eclip_core.trace.open_clip_timm`."""
    visual = getattr(module, "visual", None)
    if not isinstance(visual, TimmModel):
        return None
    return visual.trunk, visual.head


def text_tower(module):
    """The object holding the text tower's modules (the CLIP itself, or its ``.text``)."""
    tower = module if isinstance(module, CLIP) else getattr(module, "text", None)
    if not isinstance(tower, (CLIP, TextTransformer)):
        raise UnsupportedModelError(
            f"unsupported model: {type(module).__name__} has no open_clip text transformer "
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


def declared_input_size(module) -> tuple[int, int] | None:
    """The input size any open_clip image tower declares (ViT or not); None without one."""
    size = getattr(getattr(module, "visual", None), "image_size", None)
    return None if size is None else _pair(size)


def preprocess_config(module) -> dict | None:
    """open_clip's ``preprocess_cfg`` stored on the image tower (any kind), if any."""
    return getattr(getattr(module, "visual", None), "preprocess_cfg", None)


# ----------------------------------------------------------------------------- blocks


def qkv(block, x: torch.Tensor, heads: int):
    """Queries, keys and values of ``block`` for input ``x``, split into ``heads`` heads."""
    z = block.ln_1(x)
    q, k, v = F.linear(z, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    return split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)


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


def run_blocks(blocks, x, attn_mask=None, *, departed: int = 0, heads: int | None = None) -> list[BlockRecord]:
    """Run a stack of blocks, recording each; the last ``departed`` run with ``heads`` heads."""
    n = len(blocks)
    records = []
    for i, block in enumerate(blocks):
        record = run_block(block, x, heads if i >= n - departed else None, attn_mask)
        records.append(record)
        x = record.x_out
    return records


def _run_unrecorded(transformer, blocks, x: torch.Tensor) -> torch.Tensor:
    """Blocks through their own forward (batch-first tokens in and out)."""
    batch_first = getattr(transformer, "batch_first", True)
    x = x if batch_first else x.transpose(0, 1)
    for block in blocks:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


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


def _readout(visual: VisionTransformer, y: torch.Tensor) -> torch.Tensor:
    y = visual.ln_post(y)
    return y @ visual.proj if visual.proj is not None else y


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


# ----------------------------------------------------------------------------- the family


class OpenClipModel(ClipModel):
    """An open_clip ``CLIP`` (or ``CustomTextCLIP``) whose image tower is open_clip's
    ``VisionTransformer`` with class-token pooling."""

    family = "open_clip"

    @classmethod
    def accepts(cls, module: Any) -> bool:
        return isinstance(module, torch.nn.Module) and hasattr(module, "visual") and hasattr(module, "encode_image")

    def check(self) -> None:
        self._visual = vision_tower(self.module)

    def _tower(self, tower: str):
        if tower == "vision":
            return self._visual
        if tower == "text":
            return text_tower(self.module)
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")

    def _blocks(self, tower: str = "vision"):
        return self._tower(tower).transformer.resblocks

    # ------------------------------------------------------------------ the deployed model

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        module: Any = self.module
        return module.encode_image(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        module: Any = self.module
        return module.encode_text(tokens)

    # ------------------------------------------------------------------ facts

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self._visual.image_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self._visual.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return _pair(self._visual.grid_size)

    @property
    def embed_dim(self) -> int:
        return int(self._visual.output_dim)

    @property
    def context_length(self) -> int:
        return int(text_tower(self.module).positional_embedding.shape[0])

    def depth(self, tower: str = "vision") -> int:
        return len(self._blocks(tower))

    def heads(self, tower: str = "vision", block: int = -1) -> int:
        return int(self._blocks(tower)[block].attn.num_heads)

    def input_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The declared ``preprocess_cfg``, else open_clip's default (the OpenAI CLIP constants)."""
        cfg = preprocess_config(self.module) or {}
        return tuple(cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(cfg.get("std", OPENAI_DATASET_STD))

    def logit_scale(self) -> torch.Tensor:
        module: Any = self.module
        return module.logit_scale

    def vision_parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self._visual.named_parameters())

    def vision_parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``proj+ln_post``, then ``block{L-1}``, ..., ``block0``, then ``embeddings`` (the
        patch, class and positional embeddings, ``ln_pre`` and anything else left)."""
        names = list(self.vision_parameters())
        groups = [("proj+ln_post", [n for n in names if n == "proj" or n.startswith("ln_post.")])]
        for i in reversed(range(self.depth("vision"))):
            prefix = f"transformer.resblocks.{i}."
            groups.append((f"block{i}", [n for n in names if n.startswith(prefix)]))
        used = {n for _, group in groups for n in group}
        groups.append(("embeddings", [n for n in names if n not in used]))
        return [(name, group) for name, group in groups if group]

    # ------------------------------------------------------------------ the recorded pass

    def check_images(self, images: torch.Tensor, keep_size: bool = False) -> None:
        self._check_image_batch(images, keep_size)

    def trace_vision(self, images: torch.Tensor, *, heads: int | None = None, keep_size: bool = False,
                     record: str = "all") -> Trace:
        """With no departure the trace is the model's own forward pass and reproduces
        ``encode_image``. ``record="last"`` runs the blocks before the last through the model's
        own modules (fused attention, nothing kept) and records the last block only."""
        if record not in ("all", "last"):
            raise ValueError(f"record must be 'all' or 'last', got {record!r}")
        visual = self._visual
        self.check_images(images, keep_size)
        patches, grid = _patches(visual, images)
        x = _first_input(visual, patches, grid)
        resblocks = visual.transformer.resblocks
        if record == "last":
            x = _run_unrecorded(visual.transformer, resblocks[:-1], x)
            resblocks = resblocks[-1:]
        blocks = run_blocks(resblocks, x, departed=1, heads=heads)
        last = blocks[-1]
        emb = self.cls_readout(last.x_in[:, 0], last.attn_out[:, 0])
        return Trace(blocks, emb, torch.zeros(len(images), dtype=torch.long), grid)

    def trace_text(self, tokens: torch.Tensor, *, heads: int | None = None, explained: int = 1,
                   differentiable: bool = False) -> Trace:
        """Reproduces ``encode_text`` (causal mask); see :meth:`ClipModel.trace_text`."""
        tower = text_tower(self.module)
        check_tokens(tower, tokens)
        n = tokens.shape[1]
        dtype = tower.token_embedding.weight.dtype
        x = tower.token_embedding(tokens).to(dtype) + tower.positional_embedding[:n].to(dtype)
        if differentiable:
            x = x.detach().requires_grad_(True)
        mask = tower.attn_mask[:n, :n].to(dtype) if tower.attn_mask is not None else None
        blocks = run_blocks(tower.transformer.resblocks, x, mask, departed=explained, heads=heads)
        idx = text_pool_index(tower, tokens)
        pooled = tower.ln_final(blocks[-1].x_out)[torch.arange(len(tokens)), idx]
        proj = tower.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj
        return Trace(blocks, pooled, idx)

    # ------------------------------------------------------------------ read-outs

    def cls_readout(self, x_cls: torch.Tensor, attn_out_cls: torch.Tensor) -> torch.Tensor:
        """In the last block nothing mixes tokens after attention, so this is the whole path
        from the CLS attention output to the embedding: per-target gradients need only it."""
        visual = self._visual
        return _readout(visual, block_tail(visual.transformer.resblocks[-1], x_cls, attn_out_cls))

    def cls_embedding_from_tokens(self, tokens: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """Only the CLS query of the last block is computed: the embedding reads nothing else."""
        block = self._visual.transformer.resblocks[-1]
        q, k, v = qkv(block, tokens, heads or block.attn.num_heads)
        cls_out = merge_heads(attention_probs(q[:, :, :1], k) @ v)[:, 0]
        return self.cls_readout(tokens[:, 0], cls_out)

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        return _readout(self._visual, tokens)

    def frozen_readout(self, x_cls: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        """``linear(r)`` maps residual terms (B, ..., D) to ``proj(gamma * (r - mean_c r) / sigma)``
        (B, ..., E), linear in ``r``; ``bias`` is ``proj(beta)`` (E,)."""
        visual = self._visual
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

    def split_readout(self, x_cls: torch.Tensor, share: float) -> Callable[[torch.Tensor], torch.Tensor]:
        visual = self._visual
        ln = visual.ln_post
        if not isinstance(ln, torch.nn.LayerNorm):
            raise UnsupportedModelError(f"ln_post is {type(ln).__name__}, not a LayerNorm")
        mu = x_cls.mean(-1, keepdim=True)  # (B, 1)
        sigma = (x_cls.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
        weight = ln.weight if ln.weight is not None else torch.ones_like(x_cls[0])
        beta = ln.bias if ln.bias is not None else torch.zeros_like(x_cls[0])

        def read(term: torch.Tensor) -> torch.Tensor:
            shape = (len(x_cls), *[1] * (term.ndim - 2), 1)
            post = weight * (term - share * mu.reshape(shape)) / sigma.reshape(shape) + share * beta
            return post @ visual.proj if visual.proj is not None else post

        return read

    def attention_output(self, attn_out: torch.Tensor, *, tower: str = "vision", block: int = -1,
                         bias: bool = True) -> torch.Tensor:
        b = self._blocks(tower)[block]
        out = b.attn.out_proj(attn_out) if bias else F.linear(attn_out, b.attn.out_proj.weight)
        return b.ls_1(out)

    def attention_projection(self, t: torch.Tensor, *, tower: str = "vision", block: int = -1) -> torch.Tensor:
        return self._blocks(tower)[block].attn.out_proj(t)

    def attention_weights(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        b = self._visual.transformer.resblocks[block]
        if not isinstance(b.ls_1, (torch.nn.Identity, LayerScale)):
            raise UnsupportedModelError(f"block {block}'s layer scale is {type(b.ls_1).__name__}")
        return b.attn.out_proj.weight, b.attn.out_proj.bias, getattr(b.ls_1, "gamma", None)

    def rescaled_query_key(self, scales: torch.Tensor, block: int = -1) -> ClipModel:
        blocks = self._visual.transformer.resblocks
        if not -len(blocks) <= block < len(blocks):
            raise InputError(f"block must index the model's {len(blocks)} vision blocks, got {block}")
        width = blocks[block].attn.in_proj_weight.shape[1]
        scales = self._check_scales(scales, width)
        module = copy.deepcopy(self.module)
        attn = vision_tower(module).transformer.resblocks[block].attn
        with torch.no_grad():
            s = scales.to(attn.in_proj_weight.dtype).to(attn.in_proj_weight.device)
            attn.in_proj_weight[:width] *= s[:, None]
            attn.in_proj_weight[width:2 * width] /= s[:, None]
            if attn.in_proj_bias is not None:
                attn.in_proj_bias[:width] *= s
                attn.in_proj_bias[width:2 * width] /= s
        return self.with_module(module)

    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return _patches(self._visual, images)[0]

    def embedding_from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Class token, positions, ``ln_pre``, the blocks' own forward, ``ln_post``, projection."""
        visual = self._visual
        x = _first_input(visual, patches, self.grid_size)
        return _readout(visual, _run_unrecorded(visual.transformer, visual.transformer.resblocks, x)[:, 0])


__all__ = ["OpenClipModel", "SUPPORTED", "declared_input_size", "text_tower", "timm_tower", "vision_tower"]
