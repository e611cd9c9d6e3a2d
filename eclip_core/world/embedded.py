"""The default model shipped inside the package: a small CLIP trained on the shapes world.

The artifacts in ``EMBEDDED_DIR`` follow open_clip's ``local-dir:`` layout:

* ``open_clip_config.json`` -- ``{"model_cfg": {...}, "preprocess_cfg": {...}}``;
* ``open_clip_model.safetensors`` -- the state dict of an ``open_clip.CLIP``;
* ``SHA256SUMS`` -- the checksum of the weights, verified on every load;
* ``metrics.json`` -- held-out evaluation results and the training recipe.

So ``open_clip.create_model_and_transforms('local-dir:' + str(EMBEDDED_DIR))``
builds the same model; its text must be tokenized with
:class:`eclip_core.world.vocab.ShapesTokenizer`, not open_clip's BPE tokenizer.

Importing this module registers the shipped models by name with
:func:`eclip_core.models.register_model` (``load_model("eclip-shapes")``, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..clip import ClipModel
from ..errors import ModelLoadError, one_line
from ..models import DEFAULT_MODEL, register_model
from ..trace.open_clip import OpenClipModel
from .vocab import ShapesTokenizer

EMBEDDED_NAME = DEFAULT_MODEL
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EMBEDDED_DIR = DATA_DIR / "embedded"
#: The same architecture trained with the captions shuffled across images (``python -m
#: eclip_core.world.train --shuffle-captions``): a model that learnt nothing about its images.
SHUFFLED_MODEL = f"{EMBEDDED_NAME}-shuffled"
SHUFFLED_DIR = DATA_DIR / "shuffled"
#: The training series: the shipped model's own training run, caught after ``SERIES_STEPS``
#: steps (the last is the shipped model itself, which is not stored twice).
SERIES_DIR = DATA_DIR / "series"
SERIES_STEPS: tuple[int, ...] = (20, 60, 160, 450, 1250, 3500)
#: The training series by name (the last name is the embedded model itself).
SERIES_MODELS: dict[str, int] = {f"{EMBEDDED_NAME}-step-{step}": step for step in SERIES_STEPS}
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
CHECKSUM_FILE = "SHA256SUMS"
METRICS_FILE = "metrics.json"




def series_checkpoint_dir(step: int, root: Path = SERIES_DIR) -> Path:
    """Where the training series keeps the weights after ``step`` steps."""
    return Path(root) / f"step-{step:05d}"


def build_model(model_cfg: dict[str, Any]) -> open_clip.CLIP:
    """A freshly initialised ``open_clip.CLIP`` from a ``model_cfg`` dict."""
    return open_clip.CLIP(**_copy(model_cfg))


def build_preprocess(preprocess_cfg: dict[str, Any]) -> Callable:
    """open_clip's evaluation transform (resize, centre crop, to tensor, normalise)."""
    return image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config))  # open_clip may mutate nested dicts


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ModelLoadError(f"embedded model file is missing: {path}")
    return path


def read_config(directory: Path = EMBEDDED_DIR) -> dict[str, Any]:
    """The parsed ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``)."""
    path = _require(Path(directory) / CONFIG_FILE)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read embedded model config {path}: {error}") from error
    if "model_cfg" not in config:
        raise ModelLoadError(f"embedded model config {path} has no 'model_cfg'")
    return config


def expected_sha256(directory: Path = EMBEDDED_DIR) -> str:
    """The recorded checksum of the weights file, from ``SHA256SUMS``."""
    path = _require(Path(directory) / CHECKSUM_FILE)
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == WEIGHTS_FILE:
            return parts[0].lower()
    raise ModelLoadError(f"{path} records no checksum for {WEIGHTS_FILE}")


def verify_weights(directory: Path = EMBEDDED_DIR) -> Path:
    """The weights file, after checking it exists and matches its recorded SHA-256."""
    weights = _require(Path(directory) / WEIGHTS_FILE)
    expected = expected_sha256(directory)
    actual = file_sha256(weights)
    if actual != expected:
        raise ModelLoadError(
            f"checksum mismatch for {weights}: SHA-256 is {actual}, expected {expected} "
            f"(file corrupted or replaced)")
    return weights


def load_embedded(device: str | torch.device = "cpu", directory: Path | str = EMBEDDED_DIR,
                  name: str = EMBEDDED_NAME) -> ClipModel:
    """Load the shipped model (``model, preprocess, tokenizer`` unpack from it).

    The model is an ``open_clip.CLIP`` in eval mode, float32, on ``device``;
    ``preprocess`` is open_clip's evaluation transform for it and ``tokenizer``
    a :class:`ShapesTokenizer` with the model's context length.  Raises
    :class:`ModelLoadError` if a file is missing or the weights fail their checksum.
    """
    directory = Path(directory)
    config = read_config(directory)
    weights = verify_weights(directory)
    model = build_model(config["model_cfg"])
    try:
        state_dict = load_file(str(weights), device="cpu")
        model.load_state_dict(state_dict, strict=True)
    except (SafetensorError, RuntimeError) as error:
        raise ModelLoadError(f"cannot load weights from {weights}: {error}") from error
    clip = OpenClipModel(model, name=name)
    preprocess_cfg = {**_copy(config.get("preprocess_cfg", {}))}
    preprocess_cfg.setdefault("size", clip.image_size)
    set_model_preprocess_cfg(model, preprocess_cfg)
    model.to(device=device, dtype=torch.float32).eval()
    clip.preprocess = build_preprocess(preprocess_cfg)
    clip.tokenizer = ShapesTokenizer(context_length=clip.context_length)
    return clip


def save_embedded(model: open_clip.CLIP, directory: Path | str, model_cfg: dict[str, Any],
                  preprocess_cfg: dict[str, Any], metrics: dict[str, Any] | None = None) -> Path:
    """Write config, safetensors weights, checksum (and metrics) in the local-dir layout."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": _copy(model_cfg), "preprocess_cfg": _copy(preprocess_cfg)}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state_dict = {name: tensor.detach().to("cpu", torch.float32).contiguous()
                  for name, tensor in model.state_dict().items()}
    save_file(state_dict, str(directory / WEIGHTS_FILE), metadata={"name": EMBEDDED_NAME})
    (directory / WEIGHTS_FILE).chmod(0o644)  # shipped data must be world-readable once installed
    checksum = file_sha256(directory / WEIGHTS_FILE)
    (directory / CHECKSUM_FILE).write_text(f"{checksum}  {WEIGHTS_FILE}\n")
    if metrics is not None:
        (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return directory


# ----------------------------------------------------------------------------- the shipped models by name


def _shipped(name: str, directory: Callable[[], Path]) -> Callable[[], ClipModel]:
    """A loader of a shipped model; the folder is read at call time (tests point it elsewhere)."""

    def load() -> ClipModel:
        try:
            return load_embedded(device="cpu", directory=directory(), name=name)
        except ModelLoadError as err:
            raise ModelLoadError(f"cannot load the embedded model {name}: {one_line(err)}") from None

    return load


register_model(EMBEDDED_NAME, _shipped(EMBEDDED_NAME, lambda: EMBEDDED_DIR),
               "embedded, 64x64 shapes world, no download")
register_model(SHUFFLED_MODEL, _shipped(SHUFFLED_MODEL, lambda: SHUFFLED_DIR),
               "embedded, trained on captions shuffled across images: a model that learnt nothing about its images")


def _series_dir(step: int) -> Callable[[], Path]:
    """Where a checkpoint of the series lies (the last is the embedded model itself), read at call time."""
    return lambda: EMBEDDED_DIR if step == SERIES_STEPS[-1] else series_checkpoint_dir(step, SERIES_DIR)


for _name, _step in SERIES_MODELS.items():
    register_model(_name, _shipped(_name, _series_dir(_step)),
                   f"embedded, {EMBEDDED_NAME} after {_step} training steps (the training series)")
