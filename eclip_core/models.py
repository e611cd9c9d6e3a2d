"""The door: any CLIP becomes a :class:`~eclip_core.clip.ClipModel` here, once.

:func:`as_model` converts what a user passes (a :class:`ClipModel`, a ``load_model()``
result, a bare CLIP with its preprocess and tokenizer) into the typed model, picking its
family from :data:`FAMILIES`; every entry point calls it, and nothing below it unpacks a
model again. :func:`load_model` builds one by name: a model a package registered under a
name (the embedded eclip-shapes models, :func:`register_model`), or an open_clip
architecture with a tag (from open_clip's cache), a checkpoint file, or random weights.
"""

from __future__ import annotations

import difflib
import logging
import os
import pickletools
import re
import socket
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import open_clip
import torch
from safetensors.torch import load_file

from .clip import ClipModel
from .departures import FAITHFUL, Departures
from .errors import InputError, ModelLoadError, UnsupportedModelError, one_line
from .trace import Trace
from .trace.encoders import EncoderModel
from .trace.hf_clip import HFClipModel, load_folder
from .trace.hf_siglip import HFSiglipModel
from .trace.open_clip import SUPPORTED, OpenClipModel, text_tower
from .trace.open_clip_timm import OpenClipTimmModel

#: The model of ``load_model()`` with no name (registered by :mod:`eclip_core.world.embedded`).
DEFAULT_MODEL = "eclip-shapes"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: Seconds to wait for the weights' host before saying it is unreachable.
HOST_TIMEOUT = 5.0

#: The families of models, each one module of :mod:`eclip_core.trace`: the first whose
#: ``accepts`` takes a module wraps it (and may still refuse it, in one line). Last, any module
#: with an ``encode_image``: known by its encoders only, it has nothing to trace.
FAMILIES: list[type[ClipModel]] = [OpenClipTimmModel, OpenClipModel, HFSiglipModel, HFClipModel, EncoderModel]

#: What the entry points accept as a model.
Model = Any


def as_model(model: Model, preprocess: Callable | None = None, tokenizer: Callable | None = None) -> ClipModel:
    """The typed model of whatever the caller passed: a :class:`ClipModel` as it is (with
    ``preprocess`` / ``tokenizer`` replacing its own where given), a ``(model, preprocess,
    tokenizer)`` tuple, or a bare CLIP module of a known family. A model no family traces is
    refused here, in one line."""
    if isinstance(model, ClipModel):
        if preprocess is None and tokenizer is None:
            return model
        return type(model)(model.module, preprocess or model.preprocess, tokenizer or model.tokenizer,
                           name=model.name)
    if isinstance(model, tuple):
        if len(model) < 1:
            raise InputError("expected a CLIP model or a (model, preprocess, tokenizer) tuple, got ()")
        module, pre, tok = (tuple(model) + (None, None))[:3]
        model, preprocess, tokenizer = module, preprocess or pre, tokenizer or tok
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"expected a CLIP model (a load_model() result or a torch module), "
                         f"got {type(model).__name__}")
    for family in FAMILIES:
        if family.accepts(model):
            return family(model, preprocess, tokenizer)
    raise UnsupportedModelError(f"unsupported model {type(model).__name__}: no family of eclip traces it; "
                                f"supported: {SUPPORTED}; transformers' CLIPModel and SiglipModel")


def trace_vision(model: Model, images: torch.Tensor, departures: Departures = FAITHFUL, *,
                 record: str = "all") -> Trace:
    """The recorded forward pass of the image tower (see :meth:`ClipModel.trace_vision`):
    with :data:`~eclip_core.departures.FAITHFUL` it reproduces ``model.encode_image``."""
    return as_model(model).trace_vision(images, heads=departures.heads, keep_size=departures.keep_size,
                                        record=record)


def trace_text(model: Model, tokens: torch.Tensor, departures: Departures = FAITHFUL, *,
               explained: int = 1, differentiable: bool = False) -> Trace:
    """The recorded forward pass of the text tower (see :meth:`ClipModel.trace_text`)."""
    return as_model(model).trace_text(tokens, heads=departures.heads, explained=explained,
                                      differentiable=differentiable)


# ----------------------------------------------------------------------------- models by name


@dataclass(frozen=True)
class NamedModel:
    """A model a package ships under a name: how to load it, and a note for ``eclip methods``."""

    name: str
    load: Callable[[], ClipModel]
    note: str


#: Models known by name (the embedded ones, registered by :mod:`eclip_core.world.embedded`).
NAMED_MODELS: dict[str, NamedModel] = {}


def register_model(name: str, load: Callable[[], ClipModel], note: str) -> None:
    """Make ``load_model(name)`` return ``load()``; ``note`` says what the model is."""
    NAMED_MODELS[name] = NamedModel(name, load, note)


class ModelInfo(NamedTuple):
    """What an architecture's open_clip config says about it, without building it."""

    name: str
    vit: bool  # the image tower is a vision transformer (open_clip's own or timm's)
    supported: bool  # eclip can trace it (the final word is load_model's check of the built model)
    note: str  # why not, or what to know


def available_models() -> list[str]:
    """The models known by name, then every architecture open_clip knows."""
    return list(NAMED_MODELS) + sorted(open_clip.list_models())


def unknown_model(name: object) -> ModelLoadError:
    """The error for a name that is no model: the closest names first, then all of them."""
    names = available_models()
    text = str(name)
    same = [n for n in names if n.lower() == text.lower()]
    close = same or difflib.get_close_matches(text, names, n=3, cutoff=0.6) or \
        difflib.get_close_matches(text.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
    close = [next(n for n in names if n.lower() == c.lower()) for c in close]
    hint = f"; closest: {', '.join(close)}" if close else ""
    return ModelLoadError(f"unknown model {name!r}{hint}; available: {', '.join(names)}")


def model_info(name: str) -> ModelInfo:
    """Classify a model from its config: is its image tower a ViT, can eclip trace it."""
    if name in NAMED_MODELS:
        return ModelInfo(name, True, True, NAMED_MODELS[name].note)
    config = open_clip.get_model_config(name)
    if config is None:
        raise unknown_model(name)
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    timm_name = vision.get("timm_model_name")
    if isinstance(vision.get("layers"), (list, tuple)):
        return ModelInfo(name, False, False, "ResNet image tower")
    if timm_name:
        vit = timm_name.startswith(("vit_", "eva")) and "fastvit" not in timm_name
        if timm_name.startswith("vit_") and "pe_core" not in timm_name and vision.get("timm_pool") == "map":
            return ModelInfo(name, True, True, f"timm ViT {timm_name} pooled by an attention probe (no class "
                                               f"token: the methods defined for it)")
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


def load_model(name: str | Path | None = None, pretrained: str | Path | None = None,
               device: str | torch.device = "cpu") -> ClipModel:
    """The embedded model (no arguments, or ``"eclip-shapes"``), another model registered by
    name (``"eclip-shapes-shuffled"``, ``"eclip-shapes-step-20"``, ...: :func:`available_models`),
    or open_clip architecture ``name``, or a ``transformers`` ``save_pretrained`` folder of a
    ``CLIPModel`` (its weights, and its tokenizer and preprocessor config where present).

    ``pretrained`` is an open_clip tag (open_clip looks in its cache and downloads only
    then) or the path of a checkpoint: ``.safetensors``, or a PyTorch file read with
    ``weights_only=True`` (never unpickled). Without it the weights are random and
    nothing is downloaded. Unsupported towers are refused here, before any download
    and before any explaining.
    """
    name = DEFAULT_MODEL if name is None else name
    if isinstance(name, (str, Path)) and (Path(name) / "config.json").is_file():
        if pretrained is not None:
            raise ModelLoadError(f"{name} is a transformers folder with its own weights; pretrained= is not used "
                                 f"with it")
        folder = load_folder(name)
        _to_device(folder.module, device)
        return folder
    if isinstance(name, str) and name in NAMED_MODELS:
        if pretrained is not None:
            raise ModelLoadError(f"{name} ships its own weights; pretrained= is not used with it")
        loaded = NAMED_MODELS[name].load()
        _to_device(loaded.module, device)
        return loaded

    if not isinstance(name, str) or name not in open_clip.list_models():
        raise unknown_model(name)
    info = model_info(name)
    if not info.supported:
        raise UnsupportedModelError(f"unsupported model {name!r}: {info.note}; supported: {SUPPORTED}")
    path = Path(pretrained) if pretrained is not None else None
    is_path = path is not None and (path.suffix in CHECKPOINT_SUFFIXES or path.exists())
    hf_tokenizer = (open_clip.get_model_config(name).get("text_cfg") or {}).get("hf_tokenizer_name")
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
        if pretrained is not None:
            _fetch_weights(name, str(pretrained))  # from the cache, or downloaded once, quietly
        try:  # from the cache only: the weights are there now
            with _quiet_open_clip(), _hub_offline():
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except Exception as err:  # open_clip raises many types; the user needs one message
            raise ModelLoadError(f"could not load {name!r} with pretrained={str(pretrained)!r}: "
                                 f"{one_line(err)}") from None
    clip = as_model(model, preprocess)  # its image tower checked, its family picked
    clip.name = name
    text_tower(model)
    try:
        with _quiet_open_clip(), _hub_offline():  # a Hugging Face tokenizer only from its cache
            clip.tokenizer = open_clip.get_tokenizer(name)
    except Exception as err:
        if not hf_tokenizer:
            raise ModelLoadError(f"cannot build the tokenizer of {name!r}: {one_line(err)}") from None
        clip.tokenizer = MissingTokenizer(name, hf_tokenizer)
    _to_device(model, device)
    return clip


class MissingTokenizer:
    """Stands for a Hugging Face tokenizer that is not in the local cache: the model loads and
    explains targets given as embeddings; strings fail in one line naming what to fetch."""

    def __init__(self, model: str, tokenizer: str):
        self.model, self.tokenizer = model, tokenizer

    def __call__(self, texts: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise ModelLoadError(f"{self.model}'s tokenizer is the Hugging Face tokenizer {self.tokenizer!r}, not in the "
                             f"local cache: fetch it once (huggingface-cli download {self.tokenizer}), or pass the "
                             f"targets as (K, E) embeddings")


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
    OpenClipModel(model)  # refused here if it cannot be traced
    return model.to(dtype).eval()


def _to_device(model: torch.nn.Module, device) -> torch.nn.Module:
    try:
        return model.to(device).eval()
    except Exception as err:  # bad device strings, CUDA absent, ...
        raise ModelLoadError(f"cannot move the model to device {str(device)!r}: {one_line(err)}") from None


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Silence open_clip's and the Hugging Face hub's logging (its warnings, its retries):
    what goes wrong reaches the user as one ModelLoadError."""
    loggers = [logging.getLogger(name) for name in ("", "huggingface_hub", "urllib3", "filelock")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextmanager
def _hub_offline(offline: bool = True) -> Iterator[None]:
    """The Hugging Face hub in offline mode (cache only, no request) for the duration."""
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub: open_clip downloads from URLs, which _fetch_weights handles
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _from_hub(cfg: dict) -> bool:
    """Whether open_clip takes a tag's weights from the Hugging Face hub (else from its URL)."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return False
    return bool(cfg.get("hf_hub"))


def _weights_host(cfg: dict) -> str:
    """The host open_clip downloads a tag's weights from."""
    if _from_hub(cfg):
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    return urlparse(cfg.get("url", "")).hostname or "the download server"


def _fetch_weights(name: str, tag: str) -> None:
    """Make sure the weights of ``tag`` are in the local cache: found there without any
    request, else downloaded once, quietly. An unreachable host fails in one line within
    :data:`HOST_TIMEOUT` seconds, not after the hub's retries and pages of logging."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not _from_hub(cfg):
        if os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg.get("url", "")))):
            return  # open_clip's URL cache (its checksum is checked when it loads)
    else:
        try:
            with _quiet_open_clip(), _hub_offline():
                open_clip.download_pretrained(cfg)
            return
        except Exception:  # not in the cache
            pass
    host = _weights_host(cfg)
    try:
        socket.create_connection((host, 443), timeout=HOST_TIMEOUT).close()
    except OSError as err:
        raise ModelLoadError(f"cannot download the weights of {name!r} (pretrained={tag!r}): {host} is "
                             f"unreachable ({one_line(err.strerror or err, 80)}) and they are not in the "
                             f"local cache; connect once to download them, or pass a checkpoint file") from None
    try:
        with _quiet_open_clip(), _hub_offline(False):
            open_clip.download_pretrained(cfg)
    except Exception as err:
        raise ModelLoadError(f"could not download the weights of {name!r} (pretrained={tag!r}) from "
                             f"{host}: {one_line(err, 200)}") from None


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
            with warnings.catch_warnings():  # torch warns about pickle protocols before failing
                warnings.simplefilter("ignore")
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


#: Globals of a torch.save'd state dict of tensors (what weights_only=True accepts).
_TENSOR_GLOBALS = re.compile(r"^(torch\.|collections OrderedDict$|collections\.OrderedDict$|_codecs encode$)")


def _sniff(path: Path) -> str | None:
    """Why a file that torch.load refused is not a weights file, in words (None: no idea).

    Reads bytes only: a pickle is disassembled (``pickletools``), never unpickled."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if not head:
        return "the file is empty"
    data = None
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip archive: its pickle is data.pkl
        try:
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(member) if member else None
        except (zipfile.BadZipFile, OSError, KeyError):
            return "it is a zip archive that is not a PyTorch checkpoint"
        if data is None:
            return "it is a zip archive without the data.pkl of a PyTorch checkpoint"
    elif head[:1] == b"\x80":
        data = path.read_bytes()
    else:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return "it is neither a PyTorch checkpoint (a zip archive) nor a pickle"
        if sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
            snippet = " ".join(text.split())[:40]
            return f"it is a text file (it starts {snippet!r}), not a PyTorch checkpoint"
        return "it is neither a PyTorch checkpoint (a zip archive) nor a pickle"
    found = _pickled_globals(data)
    others = [g for g in found if not _TENSOR_GLOBALS.match(g)]
    if others:
        return f"it pickles the Python object {others[0].replace(' ', '.')}"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] >= 4:
        return f"it is a plain pickle (protocol {head[1]}), not a file written by torch.save"
    return None


def _pickled_globals(data: bytes) -> list[str]:
    """The globals a pickle refers to ("module name"), read from its opcodes."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]} {strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated or odd pickle: what was read so far
        pass
    return found


def _unreadable(path: Path, err: BaseException) -> str:
    message = str(err)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    sniffed = None if path.suffix == ".safetensors" else _sniff(path)
    if found or (sniffed or "").startswith("it pickles"):
        what = found.group(1) if found else (sniffed or "").removeprefix("it pickles the Python object ")
        return (f"checkpoint {str(path)!r} is not a weights-only file: it pickles the Python object "
                f"{what}, and eclip never unpickles code (save model.state_dict() with "
                f"safetensors or torch.save)")
    if sniffed:
        return (f"checkpoint {str(path)!r} cannot be read as a weights-only PyTorch file: {sniffed} "
                f"(eclip reads .safetensors, or torch.save files with weights_only=True)")
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
