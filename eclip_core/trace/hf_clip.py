"""Hugging Face ``transformers``' CLIP: the one reader of its internals.

:class:`HFClipModel` re-runs a ``transformers.CLIPModel`` from its own parameters, as
:mod:`eclip_core.trace.open_clip` does for open_clip: every encoder layer from its submodules
(``layer_norm1``, ``q_proj``/``k_proj``/``v_proj``, ``out_proj``, ``layer_norm2``, ``mlp``),
the attention recomputed from the projections whatever attention implementation the model was
loaded with (eager, SDPA, ...), never modifying or hooking the model. The image embedding is
``visual_projection(post_layernorm(class token))``, the text embedding
``text_projection(final_layer_norm(x))`` at the first end-of-text token (or, for the configs
that predate ``transformers`` 4.31's fix, the largest token id), as ``get_image_features`` /
``get_text_features`` compute them; ``tests/test_hf_clip.py`` checks the parity.

``transformers`` is an optional extra (``pip install eclip[hf]``): it is imported only when a
model of this family is loaded from a folder; a model object passed in brings it along.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..clip import TOWERS, ClipModel
from ..errors import InputError, ModelLoadError, UnsupportedModelError, one_line
from . import BlockRecord, Trace, attention_probs, merge_heads, split_heads

#: CLIPImageProcessor's defaults (OpenAI's constants): what a model without its own
#: ``preprocessor_config.json`` is given.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SUPPORTED = "transformers' CLIPModel (class-token ViT image tower, causal text tower pooled at end-of-text)"


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def is_transformers_module(module: Any) -> bool:
    return isinstance(module, torch.nn.Module) and type(module).__module__.startswith("transformers.")


def _check_layer(layer, tower: str) -> None:
    attn = getattr(layer, "self_attn", None)
    if attn is None or not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj")) \
            or not all(hasattr(layer, n) for n in ("layer_norm1", "layer_norm2", "mlp")):
        raise UnsupportedModelError(f"unsupported {tower} layer {type(layer).__name__}: eclip traces CLIP's "
                                    f"encoder layer (self_attn with q/k/v/out projections, two layer norms, an MLP)")


def _heads(layer) -> int:
    attn = layer.self_attn
    n = getattr(attn, "num_heads", None)
    if n is None:
        n = attn.embed_dim // attn.head_dim
    return int(n)


def _project(linear: torch.nn.Linear, r: torch.Tensor) -> torch.Tensor:
    return F.linear(r, linear.weight, linear.bias)


# ----------------------------------------------------------------------------- layers


def qkv(layer, x: torch.Tensor, heads: int):
    """Queries, keys and values of ``layer`` for input ``x``, split into ``heads`` heads
    (before the 1/sqrt(d) scale, which :func:`~eclip_core.trace.attention_probs` applies)."""
    z = layer.layer_norm1(x)
    attn = layer.self_attn
    return (split_heads(attn.q_proj(z), heads), split_heads(attn.k_proj(z), heads),
            split_heads(attn.v_proj(z), heads))


def layer_tail(layer, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Everything a layer does after attention: projection, residual, MLP. Token-wise."""
    y = x + layer.self_attn.out_proj(attn_out)
    return y + layer.mlp(layer.layer_norm2(y))


def run_layer(layer, x: torch.Tensor, heads: int | None = None, attn_mask=None) -> BlockRecord:
    heads = heads or _heads(layer)
    if x.shape[-1] % heads:
        raise InputError(f"width {x.shape[-1]} is not divisible into {heads} heads")
    q, k, v = qkv(layer, x, heads)
    attn = attention_probs(q, k, attn_mask)
    attn_out = merge_heads(attn @ v)
    return BlockRecord(x, q, k, v, attn, attn_out, layer_tail(layer, x, attn_out))


def run_layers(layers, x, attn_mask=None, *, departed: int = 0, heads: int | None = None,
               keep: int | None = None) -> list[BlockRecord]:
    """Run a stack of layers; the last ``departed`` with ``heads`` heads; the records of the
    last ``keep`` returned (all when None; the others' tensors are not kept)."""
    n = len(layers)
    keep = n if keep is None else keep
    records = []
    for i, layer in enumerate(layers):
        record = run_layer(layer, x, heads if i >= n - departed else None, attn_mask)
        if i >= n - keep:
            records.append(record)
        x = record.x_out
    return records


def interpolate_positions(pos: torch.Tensor, grid: tuple[int, int], own: tuple[int, int]) -> torch.Tensor:
    """Positional embeddings (1 + N, D) for another patch grid (bicubic, align_corners=False,
    the published keep-size recipe), the class token's kept."""
    if tuple(grid) == tuple(own):
        return pos
    patch = pos[1:].reshape(1, own[0], own[1], -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def causal_mask(n: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.full((n, n), float("-inf"), dtype=dtype, device=device).triu(1)


# ----------------------------------------------------------------------------- tokenizer


class HFTokenizer:
    """A ``transformers`` tokenizer as eclip calls tokenizers: ``tok(texts)`` -> (K, context)
    token ids, padded to the context length and cut there (with the end-of-text token kept)."""

    def __init__(self, tokenizer: Any, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length
        self.pad_token_id = tokenizer.pad_token_id

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = self.tokenizer(texts, padding="max_length", truncation=True,
                             max_length=context_length or self.context_length, return_tensors="pt")
        return out["input_ids"].long()


def _default_preprocess(size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> Callable:
    from torchvision import transforms
    return transforms.Compose([
        transforms.Resize(min(size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        lambda im: im.convert("RGB"),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


# ----------------------------------------------------------------------------- the family


class HFClipModel(ClipModel):
    """A ``transformers.CLIPModel`` (or a subclass)."""

    family = "transformers"

    @classmethod
    def accepts(cls, module: Any) -> bool:
        return is_transformers_module(module)

    def check(self) -> None:
        module: Any = self.module
        kind = type(module).__name__
        if not all(hasattr(module, n) for n in ("vision_model", "text_model", "visual_projection",
                                                "text_projection")):
            raise UnsupportedModelError(f"unsupported transformers model {kind}: eclip traces {SUPPORTED} and "
                                        f"SiglipModel")
        vision = module.vision_model
        for n in ("embeddings", "pre_layrnorm", "encoder", "post_layernorm"):
            if not hasattr(vision, n):
                raise UnsupportedModelError(f"unsupported transformers image tower {type(vision).__name__}: "
                                            f"no {n}; supported: {SUPPORTED}")
        for layer in vision.encoder.layers:
            _check_layer(layer, "image")
        self._vision = vision
        self._config = module.config
        if self.preprocess is None:
            self.preprocess = _default_preprocess(self.image_size, OPENAI_MEAN, OPENAI_STD)
            self._normalisation = (OPENAI_MEAN, OPENAI_STD)
        if type(self.tokenizer).__module__.startswith("transformers."):  # a transformers tokenizer object
            self.tokenizer = HFTokenizer(self.tokenizer, self.context_length)

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
            text = module.text_model
            for layer in text.encoder.layers:
                _check_layer(layer, "text")
            return text
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")

    def _layers(self, tower: str = "vision"):
        return self._tower(tower).encoder.layers

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
        module: Any = self.module
        return int(module.visual_projection.out_features)

    @property
    def context_length(self) -> int:
        return int(self._config.text_config.max_position_embeddings)

    def depth(self, tower: str = "vision") -> int:
        return len(self._layers(tower))

    def heads(self, tower: str = "vision", block: int = -1) -> int:
        return _heads(self._layers(tower)[block])

    def input_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The folder's ``preprocessor_config.json`` when the model was loaded from one, else
        CLIPImageProcessor's defaults (OpenAI's constants)."""
        mean, std = getattr(self, "_normalisation", (OPENAI_MEAN, OPENAI_STD))
        return tuple(mean), tuple(std)

    def logit_scale(self) -> torch.Tensor:
        module: Any = self.module
        return module.logit_scale

    def vision_parameters(self) -> dict[str, torch.nn.Parameter]:
        module: Any = self.module
        params = {f"vision_model.{n}": p for n, p in self._vision.named_parameters()}
        params.update({f"visual_projection.{n}": p for n, p in module.visual_projection.named_parameters()})
        return params

    def vision_parameter_groups(self) -> list[tuple[str, list[str]]]:
        """``proj+ln_post`` (the projection and ``post_layernorm``), then ``block{L-1}``, ...,
        ``block0``, then ``embeddings`` (patch, class and position embeddings, ``pre_layrnorm``)."""
        names = list(self.vision_parameters())
        groups = [("proj+ln_post", [n for n in names if n.startswith(("visual_projection.",
                                                                       "vision_model.post_layernorm."))])]
        for i in reversed(range(self.depth("vision"))):
            prefix = f"vision_model.encoder.layers.{i}."
            groups.append((f"block{i}", [n for n in names if n.startswith(prefix)]))
        used = {n for _, group in groups for n in group}
        groups.append(("embeddings", [n for n in names if n not in used]))
        return [(name, group) for name, group in groups if group]

    # ------------------------------------------------------------------ the recorded pass

    def check_images(self, images: torch.Tensor, keep_size: bool = False) -> None:
        self._check_image_batch(images, keep_size)

    def _patches(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        conv = self._vision.embeddings.patch_embedding
        x = conv(images.to(conv.weight.dtype))
        return x.flatten(2).transpose(1, 2), (int(x.shape[-2]), int(x.shape[-1]))

    def _first_input(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        emb = self._vision.embeddings
        cls = emb.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        pos = interpolate_positions(emb.position_embedding.weight, grid, self.grid_size)
        return self._vision.pre_layrnorm(torch.cat([cls, patches], dim=1) + pos.to(patches.dtype))

    def trace_vision(self, images: torch.Tensor, *, heads: int | None = None, keep_size: bool = False,
                     record: str = "all") -> Trace:
        """With no departure the trace reproduces ``get_image_features``."""
        if record not in ("all", "last"):
            raise ValueError(f"record must be 'all' or 'last', got {record!r}")
        self.check_images(images, keep_size)
        patches, grid = self._patches(images)
        x = self._first_input(patches, grid)
        blocks = run_layers(self._vision.encoder.layers, x, departed=1, heads=heads,
                            keep=1 if record == "last" else None)
        last = blocks[-1]
        emb = self.cls_readout(last.x_in[:, 0], last.attn_out[:, 0])
        return Trace(blocks, emb, torch.zeros(len(images), dtype=torch.long), grid)

    def text_pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        eos = self._tower("text").eos_token_id if hasattr(self._tower("text"), "eos_token_id") \
            else self._config.text_config.eos_token_id
        if eos == 2:  # the configs before transformers 4.31: the largest id (OpenAI's end-of-text)
            return tokens.argmax(dim=-1)
        found = tokens == eos
        if not found.any(-1).all():
            raise InputError(f"a token sequence has no end-of-text token (id {eos}): the text embedding is read there")
        return found.int().argmax(dim=-1)

    def trace_text(self, tokens: torch.Tensor, *, heads: int | None = None, explained: int = 1,
                   differentiable: bool = False) -> Trace:
        """Reproduces ``get_text_features`` (causal mask; no padding mask: the causal mask keeps
        the padding after the end-of-text token from reaching it)."""
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
        blocks = run_layers(text.encoder.layers, x, causal_mask(n, dtype, x.device), departed=explained,
                            heads=heads)
        idx = self.text_pool_index(tokens)
        module: Any = self.module
        pooled = text.final_layer_norm(blocks[-1].x_out)[torch.arange(len(tokens)), idx]
        return Trace(blocks, module.text_projection(pooled), idx)

    # ------------------------------------------------------------------ read-outs

    def _readout_linear(self) -> torch.nn.Linear:
        module: Any = self.module
        return module.visual_projection

    def cls_readout(self, x_cls: torch.Tensor, attn_out_cls: torch.Tensor) -> torch.Tensor:
        """The whole path from the class token's attention output to the embedding."""
        y = layer_tail(self._vision.encoder.layers[-1], x_cls, attn_out_cls)
        return self.readout(y)

    def cls_embedding_from_tokens(self, tokens: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        layer = self._vision.encoder.layers[-1]
        q, k, v = qkv(layer, tokens, heads or _heads(layer))
        cls_out = merge_heads(attention_probs(q[:, :, :1], k) @ v)[:, 0]
        return self.cls_readout(tokens[:, 0], cls_out)

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        return _project(self._readout_linear(), self._vision.post_layernorm(tokens))

    def _post_norm(self) -> torch.nn.LayerNorm:
        ln = self._vision.post_layernorm
        if not isinstance(ln, torch.nn.LayerNorm):
            raise UnsupportedModelError(f"post_layernorm is {type(ln).__name__}, not a LayerNorm")
        return ln

    def frozen_readout(self, x_cls: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        """``linear(r)`` = ``W gamma (r - mean_c r) / sigma`` (B, ..., E), linear in ``r``;
        the bias is ``W beta`` (plus the projection's bias, if it has one)."""
        ln = self._post_norm()
        lin = self._readout_linear()
        sigma = (x_cls.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
        weight = ln.weight if ln.weight is not None else torch.ones_like(x_cls[0])
        beta = ln.bias if ln.bias is not None else torch.zeros_like(x_cls[0])

        def linear(r: torch.Tensor) -> torch.Tensor:
            s = sigma.reshape(len(sigma), *[1] * (r.ndim - 2), 1)
            return F.linear((r - r.mean(-1, keepdim=True)) / s * weight, lin.weight)

        return linear, _project(lin, beta)

    def split_readout(self, x_cls: torch.Tensor, share: float) -> Callable[[torch.Tensor], torch.Tensor]:
        ln = self._post_norm()
        lin = self._readout_linear()
        if lin.bias is not None:
            raise UnsupportedModelError("the image projection has a bias: TextSpan's split is not defined for it")
        mu = x_cls.mean(-1, keepdim=True)
        sigma = (x_cls.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
        weight = ln.weight if ln.weight is not None else torch.ones_like(x_cls[0])
        beta = ln.bias if ln.bias is not None else torch.zeros_like(x_cls[0])

        def read(term: torch.Tensor) -> torch.Tensor:
            shape = (len(x_cls), *[1] * (term.ndim - 2), 1)
            post = weight * (term - share * mu.reshape(shape)) / sigma.reshape(shape) + share * beta
            return F.linear(post, lin.weight)

        return read

    def attention_output(self, attn_out: torch.Tensor, *, tower: str = "vision", block: int = -1,
                         bias: bool = True) -> torch.Tensor:
        proj = self._layers(tower)[block].self_attn.out_proj
        return proj(attn_out) if bias else F.linear(attn_out, proj.weight)

    def attention_projection(self, t: torch.Tensor, *, tower: str = "vision", block: int = -1) -> torch.Tensor:
        return self._layers(tower)[block].self_attn.out_proj(t)

    def attention_weights(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        proj = self._vision.encoder.layers[block].self_attn.out_proj
        return proj.weight, proj.bias, None

    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self._patches(images)[0]

    def embedding_from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        x = self._first_input(patches, self.grid_size)
        for layer in self._vision.encoder.layers:
            x = run_layer(layer, x).x_out
        return self.readout(x[:, 0])


def load_folder(path: str | Path) -> ClipModel:
    """A ``save_pretrained`` folder of a ``CLIPModel``: weights (safetensors, or a PyTorch
    file that ``transformers`` reads with ``weights_only``), never a download; its tokenizer
    and ``preprocessor_config.json`` when the folder has them."""
    folder = Path(path)
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{folder} is not a transformers model folder: {one_line(err)}") from None
    kind = config.get("model_type")
    if kind not in ("clip", "siglip"):
        raise UnsupportedModelError(f"{folder}: model_type {kind!r} is not supported; supported: {SUPPORTED} "
                                    f"and SiglipModel")
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("a transformers folder needs the hf extra: pip install 'eclip[hf]'") from None
    cls = transformers.CLIPModel if kind == "clip" else transformers.SiglipModel
    try:
        module = cls.from_pretrained(folder, local_files_only=True).eval()
    except Exception as err:  # transformers raises many types; the user needs one line
        raise ModelLoadError(f"could not load the transformers {kind} model in {folder}: {one_line(err)}") from None
    tokenizer = None
    if any((folder / f).exists() for f in ("tokenizer.json", "vocab.json")):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as err:
            raise ModelLoadError(f"could not read the tokenizer in {folder}: {one_line(err)}") from None
    if kind == "siglip":
        from .hf_siglip import SIGLIP_MEAN, SIGLIP_STD, HFSiglipModel, _square_preprocess
        siglip = HFSiglipModel(module, None, tokenizer, name=folder.name)
        mean, std = _normalisation(folder, SIGLIP_MEAN, SIGLIP_STD)
        siglip.preprocess = _square_preprocess(siglip.image_size, mean, std)
        siglip._normalisation = (mean, std)  # type: ignore[attr-defined]
        return siglip
    clip = HFClipModel(module, None, tokenizer, name=folder.name)
    mean, std = _normalisation(folder, OPENAI_MEAN, OPENAI_STD)
    clip.preprocess = _default_preprocess(clip.image_size, mean, std)
    clip._normalisation = (mean, std)
    return clip


def _normalisation(folder: Path, mean: Sequence[float], std: Sequence[float]) -> tuple[tuple, tuple]:
    """The folder's ``preprocessor_config.json`` mean and std, else the defaults given."""
    processor = folder / "preprocessor_config.json"
    if processor.exists():
        cfg = json.loads(processor.read_text())
        return tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    return tuple(mean), tuple(std)


__all__ = ["HFClipModel", "HFTokenizer", "SUPPORTED", "load_folder"]
