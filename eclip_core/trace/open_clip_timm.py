"""open_clip's timm image towers pooled by an attention probe (SigLIP, SigLIP 2): the one reader
of timm's internals.

open_clip builds these towers as ``TimmModel``: a timm ``VisionTransformer`` trunk with
``global_pool="map"`` (no class token; an ``AttentionPoolLatent`` head: one learned latent query
attends over the patch tokens, then ``x + mlp(norm(x))`` after its projection) and open_clip's
own head on top (empty for SigLIP). :class:`OpenClipTimmModel` re-runs the trunk from its
parameters -- each timm ``Block`` from ``norm1``, ``attn.qkv`` (with its ``q_norm``/``k_norm``),
``attn.norm``, ``attn.proj``, ``ls1``, ``norm2``, ``mlp``, ``ls2`` -- and records the pooling head
as the last block with the latent in the class token's place (its key masked), as
:mod:`eclip_core.trace.hf_siglip` does for transformers' SigLIP: Grad-ECLIP, Attention-ECLIP
and the methods defined for attention-probe pooling apply; the rest are refused per method in
one line. The text tower is open_clip's own (:class:`~eclip_core.trace.open_clip.OpenClipModel`).
Other timm trunks (EVA-02 and PE-Core's ``Eva`` blocks with rotary position embeddings, class-
token or average-pooled trunks) are refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import torch
import torch.nn.functional as F

from ..clip import TOWERS
from ..errors import UnsupportedModelError
from . import BlockRecord, Trace, attention_probs, merge_heads, split_heads
from .open_clip import OpenClipModel, _pair, text_tower, timm_tower

SUPPORTED = ("open_clip's timm towers with a ViT trunk pooled by an attention probe "
             "(global_pool='map': ViT-B-16-SigLIP, ViT-B-16-SigLIP2 and their sizes)")


def _check_trunk(trunk) -> None:
    from timm.layers import AttentionPoolLatent
    from timm.models.vision_transformer import Block, VisionTransformer

    kind = type(trunk).__name__
    if not isinstance(trunk, VisionTransformer):
        raise UnsupportedModelError(f"unsupported timm trunk {kind} (EVA-02 and PE-Core's Eva blocks use rotary "
                                    f"position embeddings, not traced yet); supported: {SUPPORTED}")
    pool = trunk.attn_pool
    if trunk.global_pool != "map" or not isinstance(pool, AttentionPoolLatent):
        raise UnsupportedModelError(f"unsupported timm trunk pooling {trunk.global_pool!r}: eclip traces the "
                                    f"attention-probe pooling ('map') of timm towers; supported: {SUPPORTED}")
    if trunk.cls_token is not None or trunk.num_prefix_tokens or pool.latent_len != 1 or pool.pos_embed is not None:
        raise UnsupportedModelError(f"unsupported timm trunk: prefix tokens or several latent queries; "
                                    f"supported: {SUPPORTED}")
    for block in trunk.blocks:
        if type(block) is not Block or getattr(block.attn, "gate", None) is not None:
            raise UnsupportedModelError(f"unsupported timm block {type(block).__name__}: eclip traces timm's plain "
                                        f"ViT Block (qkv attention, no gate); supported: {SUPPORTED}")


def _embed_dim(trunk, head: torch.nn.Module) -> int:
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    return int(linears[-1].out_features) if linears else int(trunk.num_features)


def run_block(block, x: torch.Tensor) -> BlockRecord:
    """One timm ``Block`` from its parameters (q and k after their norms, before the scale)."""
    attn = block.attn
    heads = int(attn.num_heads)
    q, k, v = (split_heads(t, heads) for t in attn.qkv(block.norm1(x)).chunk(3, dim=-1))
    q, k = attn.q_norm(q), attn.k_norm(k)
    probs = attention_probs(q, k)
    attn_out = merge_heads(probs @ v)
    y = x + block.ls1(attn.proj(attn.norm(attn_out)))
    return BlockRecord(x, q, k, v, probs, attn_out, y + block.ls2(block.mlp(block.norm2(y))))


class OpenClipTimmModel(OpenClipModel):
    """An open_clip ``CustomTextCLIP`` whose image tower is a timm ViT pooled by an attention probe."""

    family = "open_clip-timm"
    pooling = "map"
    text_explainable = False

    @classmethod
    def accepts(cls, module: Any) -> bool:
        return isinstance(module, torch.nn.Module) and timm_tower(module) is not None

    def check(self) -> None:
        tower = timm_tower(self.module)
        assert tower is not None
        self._trunk, self._head_module = tower
        _check_trunk(self._trunk)
        self._pool = self._trunk.attn_pool

    def _tower(self, tower: str):
        if tower == "vision":
            return self._trunk
        if tower == "text":
            return text_tower(self.module)
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")

    # ------------------------------------------------------------------ facts

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self._trunk.patch_embed.img_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self._trunk.patch_embed.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return _pair(self._trunk.patch_embed.grid_size)

    @property
    def embed_dim(self) -> int:
        return _embed_dim(self._trunk, self._head_module)

    def depth(self, tower: str = "vision") -> int:
        """For the image tower: the trunk's blocks and the pooling head, its last attention block."""
        if tower == "vision":
            return len(self._trunk.blocks) + 1
        return super().depth(tower)

    def heads(self, tower: str = "vision", block: int = -1) -> int:
        if tower != "vision":
            return super().heads(tower, block)
        if block in (-1, self.depth("vision") - 1):
            return int(self._pool.num_heads)
        return int(self._trunk.blocks[block].attn.num_heads)

    def vision_parameters(self) -> dict[str, torch.nn.Parameter]:
        params = {f"trunk.{n}": p for n, p in self._trunk.named_parameters()}
        params.update({f"head.{n}": p for n, p in self._head_module.named_parameters()})
        return params

    def vision_parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``head+ln_post`` (the pooling head, the trunk's final norms, open_clip's head), then
        ``block{L-1}``, ..., ``block0``, then ``embeddings``."""
        names = list(self.vision_parameters())
        head = ("trunk.attn_pool.", "trunk.norm.", "trunk.fc_norm.", "head.")
        groups = [("head+ln_post", [n for n in names if n.startswith(head)])]
        for i in reversed(range(len(self._trunk.blocks))):
            groups.append((f"block{i}", [n for n in names if n.startswith(f"trunk.blocks.{i}.")]))
        used = {n for _, group in groups for n in group}
        groups.append(("embeddings", [n for n in names if n not in used]))
        return [(name, group) for name, group in groups if group]

    # ------------------------------------------------------------------ the recorded pass

    def check_images(self, images: torch.Tensor, keep_size: bool = False) -> None:
        if keep_size:
            raise UnsupportedModelError("the keep-size input is the published recipe for class-token ViTs; "
                                        f"{self.name} explains its own {self.image_size[0]}x{self.image_size[1]} input")
        self._check_image_batch(images)

    def _patches(self, images: torch.Tensor) -> torch.Tensor:
        embed = self._trunk.patch_embed
        x = embed.proj(images.to(embed.proj.weight.dtype)).flatten(2).transpose(1, 2)
        return embed.norm(x)

    def _tokens(self, patches: torch.Tensor, keep_all: bool) -> tuple[list[BlockRecord], torch.Tensor]:
        """The blocks' records (all, or none when not ``keep_all``) and the tokens after the
        trunk's final norm."""
        trunk = self._trunk
        x = trunk.norm_pre(patches + trunk.pos_embed.to(patches.dtype))
        records = []
        for block in trunk.blocks:
            record = run_block(block, x)
            if keep_all:
                records.append(record)
            x = record.x_out
        return records, trunk.norm(x)

    def head_record(self, tokens: torch.Tensor) -> BlockRecord:
        """The pooling head as a block: token 0 the latent query, 1..N the patch tokens; every
        key but the latent's, so row 0 is the head's attention over the patches."""
        pool = self._pool
        heads = int(pool.num_heads)
        latent = pool.latent.to(tokens.dtype).expand(len(tokens), 1, -1)
        x = torch.cat([latent, tokens], dim=1)
        q = pool.q_norm(split_heads(pool.q(x), heads))
        k, v = (split_heads(t, heads) for t in pool.kv(x).chunk(2, dim=-1))
        k = pool.k_norm(k)
        mask = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        mask[:, 0] = float("-inf")
        probs = attention_probs(q, k, mask)
        attn_out = merge_heads(probs @ v)
        return BlockRecord(x, q, k, v, probs, attn_out, self._pool_tail(attn_out))

    def _pool_tail(self, attn_out: torch.Tensor) -> torch.Tensor:
        pool = self._pool
        h = pool.proj(attn_out)
        return h + pool.mlp(pool.norm(h)) if pool.mlp is not None else h

    def _after_pool(self, pooled: torch.Tensor) -> torch.Tensor:
        """The trunk's ``fc_norm`` and ``head``, then open_clip's head: the embedding."""
        trunk = self._trunk
        return self._head_module(trunk.head(trunk.fc_norm(pooled)))

    def trace_vision(self, images: torch.Tensor, *, heads: int | None = None, keep_size: bool = False,
                     record: str = "all") -> Trace:
        """Reproduces ``encode_image``; the last record is the pooling head."""
        if record not in ("all", "last"):
            raise ValueError(f"record must be 'all' or 'last', got {record!r}")
        if heads is not None:
            raise UnsupportedModelError("the one-head recompute is the published recipe for class-token ViTs")
        self.check_images(images, keep_size)
        blocks, tokens = self._tokens(self._patches(images), keep_all=record == "all")
        head = self.head_record(tokens)
        return Trace(blocks + [head], self._after_pool(head.x_out[:, 0]),
                     torch.zeros(len(images), dtype=torch.long), self.grid_size)

    # ------------------------------------------------------------------ read-outs

    def cls_readout(self, x_cls: torch.Tensor, attn_out_cls: torch.Tensor) -> torch.Tensor:
        """From the latent's attention output to the embedding (the latent itself does not enter)."""
        return self._after_pool(self._pool_tail(attn_out_cls))

    def cls_embedding_from_tokens(self, tokens: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        if heads is not None:
            raise UnsupportedModelError("the one-head recompute is the published recipe for class-token ViTs")
        return self._after_pool(self.head_record(tokens[:, 1:]).x_out[:, 0])

    def _no_class_token(self, what: str) -> NoReturn:
        raise UnsupportedModelError(f"{self.name} pools with an attention probe, not a class token: {what} "
                                    f"is not defined for it")

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._no_class_token("a token's read-out through the final norm and projection")

    def frozen_readout(self, x_cls: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        return self._no_class_token("a linear read-out of the residual stream")

    def split_readout(self, x_cls: torch.Tensor, share: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._no_class_token("TextSpan's split read-out")

    def _projection(self, block: int) -> torch.nn.Linear:
        """The image tower's attention output projection of ``block`` (the last: the pooling head's)."""
        if block in (-1, self.depth("vision") - 1):
            return self._pool.proj
        return self._trunk.blocks[block].attn.proj

    def attention_output(self, attn_out: torch.Tensor, *, tower: str = "vision", block: int = -1,
                         bias: bool = True) -> torch.Tensor:
        if tower != "vision":
            return super().attention_output(attn_out, tower=tower, block=block, bias=bias)
        proj = self._projection(block)
        if block in (-1, self.depth("vision") - 1):
            return proj(attn_out) if bias else F.linear(attn_out, proj.weight)
        trunk_block = self._trunk.blocks[block]
        z = trunk_block.attn.norm(attn_out)
        return trunk_block.ls1(proj(z) if bias else F.linear(z, proj.weight))

    def attention_projection(self, t: torch.Tensor, *, tower: str = "vision", block: int = -1) -> torch.Tensor:
        if tower != "vision":
            return super().attention_projection(t, tower=tower, block=block)
        return self._projection(block)(t)

    def attention_weights(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        proj = self._projection(block)
        return proj.weight, proj.bias, None

    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self._patches(images)

    def embedding_from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        _, tokens = self._tokens(patches, keep_all=False)
        return self._after_pool(self.head_record(tokens).x_out[:, 0])


__all__ = ["OpenClipTimmModel", "SUPPORTED"]
