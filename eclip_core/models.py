"""Load the embedded default model or any open_clip ViT, with its preprocess and tokenizer."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from .errors import ModelLoadError
from .trace import text_tower, vision_tower

DEFAULT_MODEL = "eclip-shapes"


class LoadedModel(NamedTuple):
    """``model, preprocess, tokenizer = load_model(...)``."""

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable


def available_models() -> list[str]:
    """The embedded model, then every architecture open_clip knows."""
    import open_clip

    return [DEFAULT_MODEL] + sorted(open_clip.list_models())


def load_model(name: str | None = None, pretrained: str | Path | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """The embedded model (no arguments), or open_clip architecture ``name``.

    ``pretrained`` is an open_clip tag (open_clip looks in its cache and downloads only
    then) or the path of a checkpoint: ``.safetensors``, or a PyTorch file read with
    ``weights_only=True`` (never unpickled). Without it the weights are random.
    Unsupported towers are refused here, before any explaining.
    """
    if name in (None, DEFAULT_MODEL):
        if pretrained is not None:
            raise ModelLoadError(f"{DEFAULT_MODEL} ships its own weights; pretrained= is not used with it")
        from .embedded import load_embedded

        return LoadedModel(*load_embedded(device=device))
    import open_clip

    if name not in open_clip.list_models():
        raise ModelLoadError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    path = Path(pretrained) if pretrained is not None else None
    if path is not None and (path.suffix in (".safetensors", ".pt", ".pth", ".bin") or path.exists()):
        with _quiet_open_clip():
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        try:
            model.load_state_dict(read_checkpoint(path))
        except RuntimeError as err:
            raise ModelLoadError(f"checkpoint {str(path)!r} does not fit {name!r}: "
                                 f"{str(err).splitlines()[0]}") from None
    else:
        try:
            with _quiet_open_clip(pretrained is None):
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except Exception as err:  # open_clip raises many types; the user needs one message
            raise ModelLoadError(f"could not load {name!r} with pretrained={pretrained!r}: {err}") from None
    vision_tower(model)
    text_tower(model)
    return LoadedModel(model.to(device).eval(), preprocess, open_clip.get_tokenizer(name))


@contextmanager
def _quiet_open_clip(quiet: bool = True):
    """Silence open_clip's "no pretrained weights" warning where random init is what was asked."""
    logger = logging.getLogger()
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a weights-only PyTorch file; a clear error otherwise."""
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"cannot read checkpoint {str(path)!r} as safetensors or a "
                             f"weights-only PyTorch file: {err}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ModelLoadError(f"checkpoint {str(path)!r} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
