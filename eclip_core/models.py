"""Load the embedded default model or any open_clip ViT, with its preprocess and tokenizer."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch
from safetensors.torch import load_file

from . import embedded
from .errors import ModelLoadError, UnsupportedModelError, one_line
from .trace import SUPPORTED, text_tower, vision_tower

DEFAULT_MODEL = "eclip-shapes"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class LoadedModel(NamedTuple):
    """``model, preprocess, tokenizer = load_model(...)``."""

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable


class ModelInfo(NamedTuple):
    """What an architecture's open_clip config says about it, without building it."""

    name: str
    vit: bool  # the image tower is a vision transformer (open_clip's own or timm's)
    supported: bool  # eclip can trace it (the final word is load_model's check of the built model)
    note: str  # why not, or what to know


def available_models() -> list[str]:
    """The embedded model, then every architecture open_clip knows."""
    return [DEFAULT_MODEL] + sorted(open_clip.list_models())


def model_info(name: str) -> ModelInfo:
    """Classify a model from its config: is its image tower a ViT, can eclip trace it."""
    if name == DEFAULT_MODEL:
        return ModelInfo(name, True, True, "embedded, 64x64 shapes world, no download")

    config = open_clip.get_model_config(name)
    if config is None:
        raise ModelLoadError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    timm_name = vision.get("timm_model_name")
    if isinstance(vision.get("layers"), (list, tuple)):
        return ModelInfo(name, False, False, "ResNet image tower")
    if timm_name:
        vit = timm_name.startswith(("vit_", "eva")) and "fastvit" not in timm_name
        return ModelInfo(name, vit, False, f"timm image tower {timm_name}")
    if "multimodal_cfg" in config or vision.get("attentional_pool"):
        return ModelInfo(name, True, False, "CoCa / attentional pooling")
    if vision.get("pool_type", "tok") != "tok" or vision.get("global_average_pool"):
        return ModelInfo(name, True, False, f"image tower pools with {vision.get('pool_type', 'avg')!r}, "
                                            f"not the class token")
    if text.get("hf_model_name"):
        return ModelInfo(name, True, False, f"Hugging Face text tower {text['hf_model_name']}")
    if text.get("embed_cls"):
        return ModelInfo(name, True, False, "text tower with a class token")
    if text.get("hf_tokenizer_name"):
        return ModelInfo(name, True, True, f"Hugging Face tokenizer {text['hf_tokenizer_name']} "
                                           f"(needs transformers and a download)")
    return ModelInfo(name, True, True, "")


def load_model(name: str | None = None, pretrained: str | Path | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """The embedded model (no arguments), or open_clip architecture ``name``.

    ``pretrained`` is an open_clip tag (open_clip looks in its cache and downloads only
    then) or the path of a checkpoint: ``.safetensors``, or a PyTorch file read with
    ``weights_only=True`` (never unpickled). Without it the weights are random and
    nothing is downloaded. Unsupported towers are refused here, before any download
    and before any explaining.
    """
    if name in (None, DEFAULT_MODEL):
        if pretrained is not None:
            raise ModelLoadError(f"{DEFAULT_MODEL} ships its own weights; pretrained= is not used with it")
        try:  # the directory is read at call time, so tests can point it elsewhere
            loaded = embedded.load_embedded(device="cpu", directory=embedded.EMBEDDED_DIR)
        except embedded.ModelLoadError as err:
            raise ModelLoadError(f"cannot load the embedded model {DEFAULT_MODEL}: {one_line(err)}") from None
        return LoadedModel(_to_device(loaded[0], device), *loaded[1:])

    if not isinstance(name, str) or name not in open_clip.list_models():
        raise ModelLoadError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    info = model_info(name)
    if not info.supported:
        raise UnsupportedModelError(f"unsupported model {name!r}: {info.note}; supported: {SUPPORTED}")
    path = Path(pretrained) if pretrained is not None else None
    is_path = path is not None and (path.suffix in CHECKPOINT_SUFFIXES or path.exists())
    hf_tokenizer = (open_clip.get_model_config(name).get("text_cfg") or {}).get("hf_tokenizer_name")
    if hf_tokenizer and not (pretrained is not None and not is_path):
        raise ModelLoadError(f"model {name!r} needs the Hugging Face tokenizer {hf_tokenizer!r}, which "
                             f"would be downloaded; name a pretrained tag to allow network access")
    if path is not None and is_path:
        state = read_checkpoint(path)  # read (and refused) before the model is built
        with _quiet_open_clip():
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        _load_state(model, state, path, name)
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained is not None and str(pretrained) not in tags:
            raise ModelLoadError(f"pretrained {str(pretrained)!r} is neither a file nor a tag of {name!r}; "
                                 f"its tags: {', '.join(tags) or 'none'}")
        try:
            with _quiet_open_clip(pretrained is None):
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except Exception as err:  # open_clip raises many types; the user needs one message
            raise ModelLoadError(f"could not load {name!r} with pretrained={str(pretrained)!r}: "
                                 f"{one_line(err)}") from None
    vision_tower(model)
    text_tower(model)
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as err:
        raise ModelLoadError(f"cannot build the tokenizer of {name!r}: {one_line(err)}") from None
    return LoadedModel(_to_device(model, device), preprocess, tokenizer)


def random_clip(vision: dict[str, Any], *, embed_dim: int = 16, seed: int = 0, perturb: float = 0.2,
                dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A small random-init open_clip CLIP with image tower ``vision`` (open_clip's
    ``vision_cfg``: ``image_size``, ``patch_size``, ``width``, ``layers``, ``head_width``,
    ...) and a one-block text tower, in eval mode. Every 1-D parameter (biases, norm
    weights) is moved from its 0 / 1 init by N(0, ``perturb``^2), so that no identity
    norm or zero bias makes two computations agree by accident. The global RNG is left as it was.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(embed_dim=embed_dim, vision_cfg=dict(vision),
                               text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=1, layers=1))
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(perturb * torch.randn_like(p))
    vision_tower(model)
    return model.to(dtype).eval()


def _to_device(model: torch.nn.Module, device) -> torch.nn.Module:
    try:
        return model.to(device).eval()
    except Exception as err:  # bad device strings, CUDA absent, ...
        raise ModelLoadError(f"cannot move the model to device {str(device)!r}: {one_line(err)}") from None


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
    """A state dict from safetensors or a weights-only PyTorch file; a clear error otherwise.

    A pickle that holds anything but tensors and plain containers is refused, never
    unpickled; so is a checkpoint with NaN or Inf weights.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"checkpoint {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {str(path)!r} does not exist")
    state: Any
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(_unreadable(path, err)) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise ModelLoadError(f"checkpoint {str(path)!r} holds no state dict "
                             f"(found {type(state).__name__})")
    others = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ModelLoadError(f"checkpoint {str(path)!r} is not a state dict of tensors: "
                             f"{len(others)} entries are not tensors (e.g. {others[0]!r})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelLoadError(f"checkpoint {str(path)!r} has NaN or Inf weights in {len(bad)} "
                             f"tensors (e.g. {bad[0]!r})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unreadable(path: Path, err: BaseException) -> str:
    message = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found:
        return (f"checkpoint {str(path)!r} is not a weights-only file: it pickles the Python object "
                f"{found.group(1)}, and eclip never unpickles code (save model.state_dict() with "
                f"safetensors or torch.save)")
    if "Weights only load failed" in message:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|Check the documentation|$)",
                           message, re.S)
        reason = one_line(detail.group(1)) if detail else "it is not a weights-only PyTorch file"
        return (f"checkpoint {str(path)!r} cannot be read as a weights-only PyTorch file "
                f"({reason}); eclip never unpickles code")
    return (f"cannot read checkpoint {str(path)!r} as safetensors or a weights-only PyTorch "
            f"file: {one_line(err)}")


def _load_state(model: torch.nn.Module, state: dict, path: Path, name: str) -> None:
    """Load strictly, or say which keys and shapes do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {k!r}: "
                         f"{tuple(state[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model)")
        raise ModelLoadError(f"checkpoint {str(path)!r} does not fit {name!r}: {', '.join(parts)}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelLoadError(f"checkpoint {str(path)!r} does not fit {name!r}: {one_line(err)}") from None
