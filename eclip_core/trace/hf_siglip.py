"""Hugging Face ``transformers``' SigLIP: an image tower pooled by an attention probe.

:class:`HFSiglipModel` re-runs a ``transformers.SiglipModel`` from its own parameters: the
patch embeddings (no class token), the encoder layers as CLIP's
(:func:`eclip_core.trace.hf_clip.run_layers`), ``post_layernorm``, then the multihead
attention pooling head -- a learned probe attends over the patch tokens (``nn.MultiheadAttention``
from its ``in_proj_weight``), its output projected, then ``h + mlp(layernorm(h))``; the image
embedding is that (no projection), as ``get_image_features`` computes it.

The head is the trace's last record, laid out as the class-token families' last block is: token
0 is the probe, tokens 1..N the patches (after ``post_layernorm``); no token attends to the probe
(its key is masked), so the probe's row of the attention probabilities is the head's own
attention over the patches. Grad-ECLIP and Attention-ECLIP then apply unchanged -- the probe's
attention row takes the class token's place and their equivalence holds as before (the head's
output is linear in that row, with the values as coefficients) -- and so do the raw attention,
the perturbation methods and the controls; the explainers that read a class token through the
blocks (rollout, GAE, Grad-CAM, LeGrad, MaskCLIP, the direct contributions, CLIP Surgery) and
the published mode are refused for this family, each in one line
(:func:`eclip_core.explainers.registry.check_pooling`). The text tower (bidirectional, pooled at
the last position) is traced for the deployed cosine; its token maps are not offered yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import torch
import torch.nn.functional as F

from ..clip import TOWERS, ClipModel
from ..errors import InputError, UnsupportedModelError
from . import BlockRecord, Trace, attention_probs, merge_heads, split_heads
from .hf_clip import _check_layer, _heads, _pair, is_transformers_module, run_layers

#: SiglipImageProcessor's defaults: a square resize (no crop), mean and std 0.5.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
SUPPORTED = "transformers' SiglipModel (ViT image tower pooled by its attention head)"


def _square_preprocess(size: tuple[int, int], mean, std) -> Callable:
    from torchvision import transforms
    return transforms.Compose([
        lambda im: im.convert("RGB"),
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


class HFSiglipModel(ClipModel):
    """A ``transformers.SiglipModel``."""

    family = "transformers-siglip"
    pooling = "map"
    text_explainable = False

    @classmethod
    def accepts(cls, module: Any) -> bool:
        vision = getattr(module, "vision_model", None)
        return is_transformers_module(module) and hasattr(vision, "head") and hasattr(module, "text_model")

    def check(self) -> None:
        module: Any = self.module
        vision = module.vision_model
        head = getattr(vision, "head", None)
        if head is None or not hasattr(head, "probe") or not isinstance(getattr(head, "attention", None),
                                                                         torch.nn.MultiheadAttention):
            raise UnsupportedModelError(f"unsupported {type(module).__name__}: its image tower has no attention "
                                        f"pooling head with a probe; supported: {SUPPORTED}")
        if head.probe.shape[1] != 1:
            raise UnsupportedModelError(f"unsupported pooling head with {head.probe.shape[1]} probes; supported: "
                                        f"{SUPPORTED}")
        for layer in vision.encoder.layers:
            _check_layer(layer, "image")
        self._vision, self._head, self._config = vision, head, module.config
        if self.preprocess is None:
            self.preprocess = _square_preprocess(self.image_size, SIGLIP_MEAN, SIGLIP_STD)

    def with_module(self, module: torch.nn.Module) -> ClipModel:
        twin = super().with_module(module)
        if hasattr(self, "_normalisation"):
            twin._normalisation = self._normalisation  # type: ignore[attr-defined]
        return twin

    def _tower(self, tower: str):
        module: Any = self.module
        if tower == "vision":
            return self._vision
        if tower == "text":
            return module.text_model
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")

    # ------------------------------------------------------------------ the deployed model

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        module: Any = self.module
        out = module.get_image_features(pixel_values=images)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        module: Any = self.module
        out = module.get_text_features(input_ids=tokens)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    # ------------------------------------------------------------------ facts

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self._config.vision_config.image_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self._config.vision_config.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        (h, w), (ph, pw) = self.image_size, self.patch_size
        return h // ph, w // pw

    @property
    def embed_dim(self) -> int:
        return int(self._config.vision_config.hidden_size)

    @property
    def context_length(self) -> int:
        return int(self._config.text_config.max_position_embeddings)

    def depth(self, tower: str = "vision") -> int:
        """The encoder layers, and for the image tower the pooling head as its last attention block."""
        return len(self._tower(tower).encoder.layers) + (1 if tower == "vision" else 0)

    def heads(self, tower: str = "vision", block: int = -1) -> int:
        if tower == "vision" and block in (-1, self.depth("vision") - 1):
            return int(self._head.attention.num_heads)
        return _heads(self._tower(tower).encoder.layers[block])

    def input_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """SiglipImageProcessor's defaults (mean and std 0.5), or the folder's."""
        mean, std = getattr(self, "_normalisation", (SIGLIP_MEAN, SIGLIP_STD))
        return tuple(mean), tuple(std)

    def logit_scale(self) -> torch.Tensor:
        module: Any = self.module
        return module.logit_scale

    def vision_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {f"vision_model.{n}": p for n, p in self._vision.named_parameters()}

    def vision_parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``head+ln_post`` (the pooling head and ``post_layernorm``), then ``block{L-1}``, ...,
        ``block0``, then ``embeddings``."""
        names = list(self.vision_parameters())
        groups = [("head+ln_post", [n for n in names if n.startswith(("vision_model.head.",
                                                                       "vision_model.post_layernorm."))])]
        for i in reversed(range(len(self._vision.encoder.layers))):
            prefix = f"vision_model.encoder.layers.{i}."
            groups.append((f"block{i}", [n for n in names if n.startswith(prefix)]))
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
        conv = self._vision.embeddings.patch_embedding
        return conv(images.to(conv.weight.dtype)).flatten(2).transpose(1, 2)

    def _encoded(self, patches: torch.Tensor, keep: int | None = None) -> tuple[list[BlockRecord], torch.Tensor]:
        """The encoder layers' records (the last ``keep``; all when None) and the patch tokens
        after ``post_layernorm``."""
        pos = self._vision.embeddings.position_embedding.weight.to(patches.dtype)
        blocks = run_layers(self._vision.encoder.layers, patches + pos, keep=keep)
        return blocks, self._vision.post_layernorm(blocks[-1].x_out)

    def head_record(self, tokens: torch.Tensor, heads: int | None = None) -> BlockRecord:
        """The pooling head as a block: token 0 the probe, 1..N the patch tokens; every key
        but the probe's, so that row 0 is the head's attention over the patches."""
        mha = self._head.attention
        n_heads = heads or int(mha.num_heads)
        probe = self._head.probe.to(tokens.dtype).expand(len(tokens), 1, -1)
        x = torch.cat([probe, tokens], dim=1)
        q, k, v = (split_heads(t, n_heads) for t in F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1))
        mask = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        mask[:, 0] = float("-inf")
        attn = attention_probs(q, k, mask)
        attn_out = merge_heads(attn @ v)
        return BlockRecord(x, q, k, v, attn, attn_out, self._head_tail(attn_out))

    def _head_tail(self, attn_out: torch.Tensor) -> torch.Tensor:
        """After the head's attention: its output projection, then ``h + mlp(layernorm(h))``."""
        h = self._head.attention.out_proj(attn_out)
        return h + self._head.mlp(self._head.layernorm(h))

    def trace_vision(self, images: torch.Tensor, *, heads: int | None = None, keep_size: bool = False,
                     record: str = "all") -> Trace:
        """Reproduces ``get_image_features``; the last record is the pooling head."""
        if record not in ("all", "last"):
            raise ValueError(f"record must be 'all' or 'last', got {record!r}")
        if heads is not None:
            raise UnsupportedModelError("the one-head recompute is the published recipe for class-token ViTs")
        self.check_images(images, keep_size)
        blocks, tokens = self._encoded(self._patches(images), keep=1 if record == "last" else None)
        head = self.head_record(tokens)
        blocks = ([] if record == "last" else blocks) + [head]
        emb = head.x_out[:, 0]
        return Trace(blocks, emb, torch.zeros(len(images), dtype=torch.long), self.grid_size)

    def trace_text(self, tokens: torch.Tensor, *, heads: int | None = None, explained: int = 1,
                   differentiable: bool = False) -> Trace:
        """Reproduces ``get_text_features``: no mask (SigLIP's text tower attends both ways),
        the last position pooled through ``final_layer_norm`` and the head."""
        text = self._tower("text")
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
            raise InputError("text tokens must be a (B, context_length) tensor of token ids")
        if tokens.shape[0] == 0:
            raise InputError("no texts given")
        n = tokens.shape[1]
        if n > self.context_length:
            raise InputError(f"token sequences of length {n} exceed the context length {self.context_length}")
        emb = text.embeddings
        dtype = emb.token_embedding.weight.dtype
        x = emb.token_embedding(tokens).to(dtype) + emb.position_embedding.weight[:n].to(dtype)
        if differentiable:
            x = x.detach().requires_grad_(True)
        blocks = run_layers(text.encoder.layers, x, departed=explained, heads=heads)
        idx = torch.full((len(tokens),), n - 1, dtype=torch.long)
        pooled = text.final_layer_norm(blocks[-1].x_out)[:, -1]
        return Trace(blocks, text.head(pooled), idx)

    # ------------------------------------------------------------------ read-outs

    def cls_readout(self, x_cls: torch.Tensor, attn_out_cls: torch.Tensor) -> torch.Tensor:
        """The whole path from the probe's attention output to the embedding (the head has no
        residual from its input: ``x_cls``, the probe, does not enter)."""
        return self._head_tail(attn_out_cls)

    def cls_embedding_from_tokens(self, tokens: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """``tokens``: the last record's input (probe first); only the probe's row is computed."""
        head = self.head_record(tokens[:, 1:], heads)
        return head.x_out[:, 0]

    def _no_class_token(self, what: str) -> NoReturn:
        raise UnsupportedModelError(f"{self.name} pools with an attention probe, not a class token: {what} "
                                    f"is not defined for it")

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._no_class_token("a token's read-out through the final norm and projection")

    def frozen_readout(self, x_cls: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        return self._no_class_token("a linear read-out of the residual stream")

    def attention_output(self, attn_out: torch.Tensor, *, tower: str = "vision", block: int = -1,
                         bias: bool = True) -> torch.Tensor:
        proj = self._projection(tower, block)
        return proj(attn_out) if bias else F.linear(attn_out, proj.weight)

    def _projection(self, tower: str, block: int) -> torch.nn.Linear:
        if tower == "vision" and block in (-1, self.depth("vision") - 1):
            return self._head.attention.out_proj
        return self._tower(tower).encoder.layers[block].self_attn.out_proj

    def attention_projection(self, t: torch.Tensor, *, tower: str = "vision", block: int = -1) -> torch.Tensor:
        return self._projection(tower, block)(t)

    def attention_weights(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        proj = self._projection("vision", block)
        return proj.weight, proj.bias, None

    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self._patches(images)

    def embedding_from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        _, tokens = self._encoded(patches, keep=1)
        return self.head_record(tokens).x_out[:, 0]


__all__ = ["HFSiglipModel", "SUPPORTED"]
