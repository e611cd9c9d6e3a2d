"""The typed model: a CLIP with its preprocess and tokenizer, decided once at the door.

Every entry point of the library (``explain``, the metrics, the evaluation loop, the
checks) converts what it is given -- a :class:`ClipModel`, a ``load_model()`` result, a
bare CLIP with ``preprocess=`` / ``tokenizer=`` -- into a :class:`ClipModel` once, with
:func:`eclip_core.models.as_model`; nothing below the door unpacks a model again.

A :class:`ClipModel` is the seam through which model families come in: each family is one
subclass in its own module of :mod:`eclip_core.trace` (open_clip's class-token ViTs:
:class:`eclip_core.trace.open_clip.OpenClipModel`), the only module that reads its library's
internals. A family implements the model's facts (input size, patch grid, heads, ...), the
recorded forward pass (:meth:`ClipModel.trace_vision`, :meth:`ClipModel.trace_text`) and the
few read-outs the explainers build on; everything here -- preparing images and texts, the
deployed model's own cosine -- is shared by every family.

``model, preprocess, tokenizer = clip_model`` still unpacks, as ``load_model`` results always
did, for code written against the plain module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .errors import InputError, UnsupportedModelError
from .inputs import (
    Images,
    as_list,
    check_image_tensor,
    check_targets,
    keep_size_tensor,
    load_image,
    native_batch,
    tokenize,
)
from .trace import BlockRecord, Trace

TOWERS = ("vision", "text")


class ClipModel(ABC):
    """A CLIP, its preprocess and tokenizer, and the operations the library needs.

    ``module``: the torch module (an open_clip ``CLIP``, ...); ``preprocess``: the model's own
    image pipeline (needed for PIL images and paths); ``tokenizer``: its own (needed for
    strings). ``name``: for reports. Constructing one checks that the family can trace the
    module (:meth:`check`), so an unsupported model is refused here, in one line.
    """

    #: The family's name, e.g. ``"open_clip"``.
    family: str = ""
    #: Whether the family records the forward pass (False: a model known only by its encoders,
    #: whose input size and embedding width are its own business).
    traced: bool = True
    #: How the image tower pools its tokens into the embedding: ``"cls"`` (a class token, read
    #: out after the last block) or ``"map"`` (an attention probe over the patch tokens, SigLIP's
    #: head; the trace's last record is that head, with the probe at position 0). Each method
    #: declares the poolings it is defined for (:attr:`eclip_core.explainers.Method.poolings`).
    pooling: str = "cls"
    #: Whether the text branch's explainers apply to the text tower.
    text_explainable: bool = True

    def __init__(self, module: torch.nn.Module, preprocess: Callable | None = None,
                 tokenizer: Callable | None = None, *, name: str | None = None) -> None:
        self.module = module
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name or type(module).__name__
        self.check()

    # ------------------------------------------------------------------ the door's helpers

    @classmethod
    @abstractmethod
    def accepts(cls, module: Any) -> bool:
        """Whether ``module`` belongs to this family (it may still be refused by :meth:`check`)."""

    @abstractmethod
    def check(self) -> None:
        """Refuse, with one line, a module of this family that cannot be traced."""

    def __iter__(self) -> Iterator[Any]:
        """``model, preprocess, tokenizer = clip_model``."""
        return iter((self.module, self.preprocess, self.tokenizer))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def model(self) -> torch.nn.Module:
        """The torch module (the name ``load_model`` results have always used)."""
        return self.module

    def with_module(self, module: torch.nn.Module) -> ClipModel:
        """The same preprocess and tokenizer around another module of this family (a copy)."""
        return type(self)(module, self.preprocess, self.tokenizer, name=self.name)

    def rescaled_query_key(self, scales: torch.Tensor, block: int = -1) -> ClipModel:
        """The same function written with other weights (a copy): channel ``c`` of vision block
        ``block``'s queries multiplied by ``scales[c]`` and its keys divided by it (weights and
        biases). Every head's ``q^h . k^h`` is unchanged, so are the attention, the forward pass
        and every score; anything read from q or k apart from those products (the loosened term)
        is not. ``scales``: (D,) positive and finite."""
        raise UnsupportedModelError(f"{self.name}: rescaling queries and keys is implemented for "
                                    f"open_clip's class-token ViTs")

    @staticmethod
    def _check_scales(scales: torch.Tensor, width: int) -> torch.Tensor:
        """``scales`` as a (width,) float64 tensor, refused unless positive and finite."""
        scales = torch.as_tensor(scales, dtype=torch.float64).detach().cpu()
        if scales.shape != (width,):
            raise InputError(f"scales must be one per channel of the block's queries, shape ({width},), "
                             f"got {tuple(scales.shape)}")
        if not bool(torch.isfinite(scales).all()) or bool((scales <= 0).any()):
            raise InputError("scales must be positive and finite")
        return scales

    def to(self, device: str | torch.device) -> ClipModel:
        """Moves the module to ``device``; returns ``self``."""
        self.module.to(device)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    # ------------------------------------------------------------------ the deployed model

    @abstractmethod
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, E) the deployed model's own image embedding of its preprocessed input."""

    @abstractmethod
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(K, E) the deployed model's own text embedding of token ids."""

    def native_input(self, images: Images) -> torch.Tensor:
        """(B, 3, H, W) on the model's device and dtype, as the deployed model sees the images:
        paths and PIL images through its preprocess, a tensor taken as already preprocessed
        ((B, 3, H, W) or one (3, H, W) image) and checked to be at the model's own size."""
        if isinstance(images, torch.Tensor):
            x = check_image_tensor(images)
            x = x[None] if x.ndim == 3 else x
            x = x.to(self.device, self.dtype)
            self.check_images(x)
            return x
        if self.preprocess is None:
            raise InputError("PIL images need the model's preprocess: pass preprocess= or a load_model() result")
        return native_batch([load_image(im) for im in as_list(images)], self.preprocess).to(self.device, self.dtype)

    def prepare(self, images: Images, keep_size: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(tensor to explain, the same images as the deployed model sees them, or None).

        Paths and PIL images are decoded once; they go through the preprocess and, with
        ``keep_size``, also through the published code's keep-size pipeline (aspect kept,
        sides rounded to the patch). A tensor is taken as already prepared: with
        ``keep_size`` any patch multiple is accepted, and its native twin is itself only
        when it is at the model's own size.
        """
        if isinstance(images, torch.Tensor):
            x = check_image_tensor(images)
            x = (x[None] if x.ndim == 3 else x).to(self.device, self.dtype)
            self.check_images(x, keep_size=keep_size)
            return x, (x if not self.traced or tuple(x.shape[-2:]) == self.image_size else None)
        if self.preprocess is None:
            raise InputError("PIL images need the model's preprocess: pass preprocess= or a load_model() result")
        pil = [load_image(im) for im in as_list(images)]
        original = native_batch(pil, self.preprocess).to(self.device, self.dtype)
        if not keep_size:
            return original, original
        keep = [keep_size_tensor(im, self.preprocess, self.patch_size[0]) for im in pil]
        if len({tuple(t.shape) for t in keep}) > 1:
            raise InputError("the keep-size input explains each image at its own resolution; these images "
                             "have different sizes: explain them one call each")
        return torch.stack(keep).to(self.device, self.dtype), original

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids of K non-empty strings, on the model's device (see :func:`eclip_core.inputs.tokenize`)."""
        return tokenize(self.tokenizer, texts).to(self.device)

    def text_embeddings(self, texts: Any) -> torch.Tensor:
        """(K, E) unit-norm text embeddings of the deployed model, from strings; or embeddings
        given as a (K, E) tensor, or per image as (B, K, E) (kept in that shape), checked."""
        if isinstance(texts, torch.Tensor):
            width = self.embed_dim if self.traced else None
            if texts.ndim == 3:
                flat = check_targets(texts.flatten(0, 1).to(self.device), width, self.dtype)
                return flat.reshape(texts.shape)
            return check_targets(texts.to(self.device), width, self.dtype)
        with torch.no_grad():
            embeddings = F.normalize(self.encode_text(self.tokenize(texts)), dim=-1)
        if not torch.isfinite(embeddings).all():
            raise InputError("the text tower produced NaN or Inf text embeddings (check the model's weights)")
        return embeddings

    def paired_text_embeddings(self, texts: Sequence[Sequence[str]], batch: int) -> tuple[torch.Tensor, list[int]]:
        """(B, K, E) unit-norm targets and the B list lengths: image ``b`` is explained for its
        own texts ``texts[b]``, which fill ``[b, :len(texts[b])]``; K is the longest list and
        shorter lists are padded with zero vectors. Each distinct text is embedded once."""
        if len(texts) != batch:
            raise InputError(f"{len(texts)} lists of texts for {batch} images: give one list per image")
        lengths = [len(t) for t in texts]
        if 0 in lengths:
            raise InputError(f"image {lengths.index(0)} has an empty list of texts: every image needs at "
                             f"least one text to be explained for")
        distinct = list(dict.fromkeys(text for per_image in texts for text in per_image))
        embeddings = self.text_embeddings(distinct)
        padded = embeddings.new_zeros(batch, max(lengths), embeddings.shape[-1])
        for b, per_image in enumerate(texts):
            index = torch.tensor([distinct.index(text) for text in per_image], device=embeddings.device)
            padded[b, :len(per_image)] = embeddings[index]
        return padded, lengths

    def image_embeddings(self, images: Any) -> torch.Tensor:
        """(K, E) unit-norm image embeddings of the deployed model, from images (see
        :meth:`native_input`) or given as a (K, E) tensor of embeddings (checked)."""
        if isinstance(images, torch.Tensor) and images.ndim == 2:
            return check_targets(images, self.embed_dim if self.traced else None, self.dtype)
        with torch.no_grad():
            return F.normalize(self.encode_image(self.native_input(images)), dim=-1)

    def cosine(self, images: Images, texts: Any) -> torch.Tensor:
        """(B, K) the deployed model's cosine of each image with each text, on its own pipeline
        (``encode_image`` of :meth:`native_input`, ``encode_text`` of the texts, or the given
        embeddings): the score every certificate is checked against."""
        targets = self.text_embeddings(texts)
        with torch.no_grad():
            f = F.normalize(self.encode_image(self.native_input(images)), dim=-1)
        t = targets.to(f.dtype)
        return torch.einsum("be,bke->bk", f, t) if t.ndim == 3 else f @ t.T

    # ------------------------------------------------------------------ facts

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the model's own input."""

    @property
    @abstractmethod
    def patch_size(self) -> tuple[int, int]:
        """(height, width) of a patch."""

    @property
    @abstractmethod
    def grid_size(self) -> tuple[int, int]:
        """The patch grid of the model's own input."""

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Width of the joint embedding space."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Token positions of the text tower."""

    @abstractmethod
    def depth(self, tower: str = "vision") -> int:
        """Number of transformer blocks of a tower."""

    @abstractmethod
    def heads(self, tower: str = "vision", block: int = -1) -> int:
        """Attention heads of one block of a tower."""

    @abstractmethod
    def input_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel of the model's input normalisation."""

    @abstractmethod
    def logit_scale(self) -> torch.Tensor:
        """The learnable log temperature of the contrastive loss (a parameter)."""

    @abstractmethod
    def vision_parameter_groups(self) -> list[tuple[str, list[str]]]:
        """The image tower's parameter names grouped top down (read-out, last block, ..., the
        embeddings), as the randomisation cascade draws them."""

    @abstractmethod
    def vision_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The image tower's parameters by the names of :meth:`vision_parameter_groups`."""

    # ------------------------------------------------------------------ the recorded pass

    @abstractmethod
    def check_images(self, images: torch.Tensor, keep_size: bool = False) -> None:
        """Refuse a tensor that is not (B, 3, H, W) at the model's resolution (``keep_size``:
        any positive patch multiple), or holds NaN or Inf."""

    def _check_image_batch(self, images: torch.Tensor, keep_size: bool = False, *, size: bool = True) -> None:
        """The checks the families share: a non-empty (B, 3, H, W) tensor, with ``size`` at the
        model's resolution (``keep_size``: any positive multiple of the patch), of finite values."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"images must be a (B, 3, H, W) tensor, got shape {shape}")
        if images.shape[0] == 0:
            raise InputError("no images given (batch of size 0)")
        if size:
            hw = tuple(images.shape[-2:])
            ph, pw = self.patch_size
            if keep_size:
                if hw[0] % ph or hw[1] % pw or hw[0] < ph or hw[1] < pw:
                    raise InputError(f"image size {hw} is not a positive multiple of the patch {ph}x{pw}")
            elif hw != tuple(self.image_size):
                raise InputError(f"images are {hw[0]}x{hw[1]} but the model's pipeline is "
                                 f"{self.image_size[0]}x{self.image_size[1]}; preprocess them with the model's "
                                 f"own preprocess (or pass PIL images)")
        if not torch.isfinite(images).all():
            raise InputError("images contain NaN or Inf values")

    @abstractmethod
    def trace_vision(self, images: torch.Tensor, *, heads: int | None = None, keep_size: bool = False,
                     record: str = "all") -> Trace:
        """The recorded forward pass of the image tower. ``heads``: the last block recomputed
        with that many heads over the full width (the published code's departure; None: the
        model's own); ``keep_size``: the input may be any patch multiple, with interpolated
        positional embeddings; ``record="last"`` records the last block only."""

    @abstractmethod
    def trace_text(self, tokens: torch.Tensor, *, heads: int | None = None, explained: int = 1,
                   differentiable: bool = False) -> Trace:
        """The recorded forward pass of the text tower. ``heads``: the last ``explained`` blocks
        recomputed with that many heads; ``differentiable``: the token embeddings enter as a
        leaf that requires grad."""

    # ------------------------------------------------------------------ read-outs

    @abstractmethod
    def cls_readout(self, x_cls: torch.Tensor, attn_out_cls: torch.Tensor) -> torch.Tensor:
        """The image embedding from the last block's CLS input and CLS attention output
        (before the output projection); broadcasts over leading dimensions."""

    @abstractmethod
    def cls_embedding_from_tokens(self, tokens: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """The image embedding as a function of the last block's input tokens (B, T, D)."""

    @abstractmethod
    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final norm then the projection, on (..., D) tokens: how the model reads its CLS token."""

    @abstractmethod
    def frozen_readout(self, x_cls: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        """``(linear, bias)``: the read-out with the final norm's statistics taken from ``x_cls``
        (B, D) as constants; ``linear(x_cls) + bias`` is the image embedding."""

    def split_readout(self, x_cls: torch.Tensor, share: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """``term -> proj(gamma * (term - share * mu) / sigma + share * beta)`` with the final norm's
        mean ``mu`` and deviation ``sigma`` from ``x_cls`` (B, D) as constants: the read-out of one
        of ``1 / share`` terms that split the norm's mean and bias equally (TextSpan's convention;
        :meth:`frozen_readout` centres each term on its own mean instead)."""
        raise UnsupportedModelError(f"{self.name}: no split read-out for this family")

    @abstractmethod
    def attention_output(self, attn_out: torch.Tensor, *, tower: str = "vision", block: int = -1,
                         bias: bool = True) -> torch.Tensor:
        """What a block's attention adds to the residual stream for ``attn_out`` (..., D) (heads
        concatenated, before the output projection): the projection, its bias unless ``bias``
        is False, and any layer scale. Linear in ``attn_out`` without the bias."""

    @abstractmethod
    def attention_projection(self, t: torch.Tensor, *, tower: str = "vision", block: int = -1) -> torch.Tensor:
        """The block's attention output projection alone (``W_out t + b_out``), as the published
        code applies it to queries and keys."""

    @abstractmethod
    def attention_weights(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(weight, bias, scale)`` of a vision block's attention output: the output projection's
        (D, D) weight and (D,) bias (or None), and the (D,) layer scale applied after it (or
        None): :meth:`attention_output` is ``scale * (weight @ o + bias)``."""

    @abstractmethod
    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, D): each patch's embedding, before the class token and positions."""

    @abstractmethod
    def embedding_from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, E) image embedding from (B, N, D) patch embeddings at the model's own grid."""


__all__ = ["BlockRecord", "ClipModel", "TOWERS", "Trace"]
