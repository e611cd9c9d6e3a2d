"""A model known only by its encoders: any module with ``encode_image`` (and ``encode_text``).

Nothing of it can be traced, so every explainer that reads the forward pass refuses it in one
line; what needs only the deployed model's own output -- its cosine, zero-shot predictions, the
deletion and insertion metrics -- works on it as on any other family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import torch

from ..clip import ClipModel
from ..errors import UnsupportedModelError
from . import Trace


class EncoderModel(ClipModel):
    """A CLIP known only by ``module.encode_image`` / ``module.encode_text``."""

    family = "encoders"
    traced = False

    @classmethod
    def accepts(cls, module: Any) -> bool:
        return callable(getattr(module, "encode_image", None))

    def check(self) -> None:
        """Nothing to check: nothing of the model is read but its encoders."""

    def _refuse(self, what: str) -> NoReturn:
        raise UnsupportedModelError(f"{self.name} is known only by its encode_image / encode_text: {what} "
                                    f"needs a model eclip can trace (an open_clip ViT)")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        module: Any = self.module
        return module.encode_image(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        encode = getattr(self.module, "encode_text", None)
        if not callable(encode):
            raise UnsupportedModelError(f"{self.name} has no encode_text: pass target embeddings instead of texts")
        return encode(tokens)

    def check_images(self, images: torch.Tensor, keep_size: bool = False) -> None:
        """A (B, 3, H, W) batch of finite values; its size is the model's business."""
        self._check_image_batch(images, size=False)

    @property
    def image_size(self) -> tuple[int, int]:
        self._refuse("its input size")

    @property
    def patch_size(self) -> tuple[int, int]:
        self._refuse("a patch grid")

    @property
    def grid_size(self) -> tuple[int, int]:
        self._refuse("a patch grid")

    @property
    def embed_dim(self) -> int:
        self._refuse("its embedding width")

    @property
    def context_length(self) -> int:
        self._refuse("its context length")

    def depth(self, tower: str = "vision") -> int:
        self._refuse("a number of blocks")

    def heads(self, tower: str = "vision", block: int = -1) -> int:
        self._refuse("a number of heads")

    def input_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        self._refuse("its input normalisation (pass its preprocess)")

    def logit_scale(self) -> torch.Tensor:
        self._refuse("its temperature")

    def vision_parameter_groups(self) -> list[tuple[str, list[str]]]:
        self._refuse("the randomisation cascade")

    def vision_parameters(self) -> dict[str, torch.nn.Parameter]:
        self._refuse("the randomisation cascade")

    def trace_vision(self, images: torch.Tensor, *, heads: int | None = None, keep_size: bool = False,
                     record: str = "all") -> Trace:
        self._refuse("this explainer")

    def trace_text(self, tokens: torch.Tensor, *, heads: int | None = None, explained: int = 1,
                   differentiable: bool = False) -> Trace:
        self._refuse("this explainer")

    def cls_readout(self, x_cls: torch.Tensor, attn_out_cls: torch.Tensor) -> torch.Tensor:
        self._refuse("this explainer")

    def cls_embedding_from_tokens(self, tokens: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        self._refuse("this explainer")

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        self._refuse("this explainer")

    def frozen_readout(self, x_cls: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        self._refuse("this explainer")

    def attention_output(self, attn_out: torch.Tensor, *, tower: str = "vision", block: int = -1,
                         bias: bool = True) -> torch.Tensor:
        self._refuse("this explainer")

    def attention_projection(self, t: torch.Tensor, *, tower: str = "vision", block: int = -1) -> torch.Tensor:
        self._refuse("this explainer")

    def attention_weights(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        self._refuse("this explainer")

    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        self._refuse("this explainer")

    def embedding_from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        self._refuse("this explainer")
