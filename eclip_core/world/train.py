"""Contrastive training of the embedded CLIP on the shapes world, and its evaluation.

Run ``python -m eclip_core.world.train`` to reproduce the shipped model (the defaults
are the recipe that produced it) or ``--out DIR`` to write elsewhere.  The model
is a genuine ``open_clip.CLIP``: a ``VisionTransformer`` image tower (CLS-token
pooling) and open_clip's text ``Transformer`` over :class:`ShapesTokenizer` ids,
trained with the symmetric InfoNCE loss and a learnable temperature.

One departure from plain CLIP training: a caption is a positive of every image in the
batch that holds all the objects it names (:func:`contains_matrix`), not only of its own
image.  With only identical captions as positives, a single-object caption such as
"a red circle" is pushed *away* from images of a red circle beside other objects, and the
model learns a bag of colours and shapes whose best single-object prompt on a
multi-object scene is often a binding error.  ``--positives same`` trains the plain way.
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import set_model_preprocess_cfg

from ..clip import ClipModel
from ..explainers.attention import cls_attention
from ..models import Model, as_model
from ..timing import forward_seconds
from ..trace.open_clip import preprocess_config
from . import shapes
from .embedded import (
    EMBEDDED_DIR,
    SERIES_DIR,
    SERIES_STEPS,
    build_model,
    build_preprocess,
    save_embedded,
    series_checkpoint_dir,
)
from .vocab import DEFAULT_CONTEXT_LENGTH, ShapesTokenizer

IMAGE_SIZE = 64
SHUFFLE_KEY = 2  # spawn key of the caption permutations (the batches use shapes.TRAIN_KEY)


def default_model_config(vocab_size: int | None = None) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of the embedded model."""
    vocab_size = vocab_size or ShapesTokenizer().vocab_size
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": 64, "layers": 4,
                       "head_width": 16, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": DEFAULT_CONTEXT_LENGTH, "vocab_size": vocab_size,
                     "width": 64, "heads": 4, "layers": 2, "mlp_ratio": 4.0},
    }


def default_preprocess_config(size: int = IMAGE_SIZE) -> dict[str, Any]:
    """open_clip ``preprocess_cfg``: bicubic shortest-side resize, centre crop, OpenAI normalisation."""
    return {"size": size, "mode": "RGB", "mean": list(OPENAI_DATASET_MEAN),
            "std": list(OPENAI_DATASET_STD), "interpolation": "bicubic",
            "resize_mode": "shortest", "fill_color": 0}


@dataclass
class TrainConfig:
    """The training recipe; the defaults produced the shipped model."""

    steps: int = 3500
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    data_seed: int = shapes.TRAIN_SEED
    threads: int = 1  # one training thread + one data process keep both cores busy
    workers: int = 1
    multi_fraction: float = 0.25
    hard_fraction: float = 0.5
    twin_fraction: float = 0.0
    partial_fraction: float = 0.0
    style_fraction: float = 0.0  # scenes drawn in a random training style (shapes.random_style)
    style_ramp: tuple[int, int] = (0, 0)  # no styles before step [0], full style_fraction from [1]
    positives: str = "contains"
    shuffle_captions: bool = False  # data randomisation: captions permuted across each batch's images
    checkpoints: tuple[int, ...] = ()  # steps after which the weights are kept (the training series)
    log_every: int = 50
    eval_every: int = 500
    device: str = "cpu"  # the shipped model was trained on the CPU; "cuda" trains faster, not bit-identically
    model_cfg: dict[str, Any] = field(default_factory=default_model_config)
    preprocess_cfg: dict[str, Any] = field(default_factory=default_preprocess_config)


# ----------------------------------------------------------------------------- data


def images_to_tensor(images: Sequence, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PIL images (already at model size) -> normalised (N, 3, H, W) float tensor.

    Performs the same operations as torchvision's ToTensor + Normalize, in batch,
    so results equal open_clip's eval preprocess for images at the model's size.
    """
    pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.uint8) for image in images]))
    return normalise_pixels(pixels, mean, std)


def normalise_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    tensor = pixels.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)
    return tensor.sub(mean_t).div(std_t)


def same_caption_matrix(captions: Sequence[str]) -> torch.Tensor:
    """(B, B) bool: captions naming the same set of objects (order-free) are positives."""
    keys = [shapes.caption_key(caption) for caption in captions]
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    ids = torch.tensor([index[key] for key in keys])
    return ids[:, None] == ids[None, :]


def contains_matrix(scenes: Sequence[shapes.Scene]) -> torch.Tensor:
    """(B, B) bool: entry (i, j) is true when image ``i`` holds every object caption ``j`` names.

    Used as the positives of the contrastive loss: ``"a red circle"`` is a true
    description of an image of a red circle beside a blue square, so it must not be
    pushed away from it; ``"a red square"`` is not, and stays a negative.
    """
    holds = [frozenset(obj.phrase for obj in scene.objects) for scene in scenes]
    named = [shapes.caption_key(scene.caption) for scene in scenes]
    return torch.tensor([[caption <= objects for caption in named] for objects in holds])


class ShapesBatches(torch.utils.data.IterableDataset):
    """Training batches as tensors: uint8 pixels, token ids, (image, caption) positives.

    ``positives="contains"``: a caption is a positive for every image that holds all
    the objects it names (:func:`contains_matrix`); ``"same"``: only for images with
    the same caption (:func:`same_caption_matrix`).

    ``shuffle_captions``: the captions of each batch are permuted across its images at
    random (a seeded permutation per batch), so a caption says nothing about its image:
    the data randomisation test of Adebayo et al. (2018). Positives are then the images
    given the same caption (``"contains"`` would read the true objects back from the scenes).
    """

    def __init__(self, seed: int, batch_size: int, context_length: int, size: int = IMAGE_SIZE,
                 positives: str = "contains", shuffle_captions: bool = False, **batch_options):
        super().__init__()
        if positives not in ("contains", "same"):
            raise ValueError(f"positives must be 'contains' or 'same', not {positives!r}")
        self.positives = positives
        self.shuffle_captions = shuffle_captions
        self.seed, self.batch_size, self.size = seed, batch_size, size
        self.context_length = context_length
        self.batch_options = batch_options

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        tokenizer = ShapesTokenizer(self.context_length)
        # Each data process makes every n-th batch; the loader interleaves them in order,
        # so the stream is the same whatever the number of processes.
        worker = torch.utils.data.get_worker_info()
        start, stride = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        stream = shapes.train_stream(self.seed, self.batch_size, self.size, start=start, stride=stride,
                                     **self.batch_options)
        for index, scenes in zip(itertools.count(start, stride), stream):
            captions = [scene.caption for scene in scenes]
            pixels = np.stack([np.asarray(scene.image, dtype=np.uint8) for scene in scenes])
            if self.shuffle_captions:
                rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(SHUFFLE_KEY, index)))
                captions = [captions[i] for i in rng.permutation(len(captions))]
                positive = same_caption_matrix(captions)
            else:
                positive = contains_matrix(scenes) if self.positives == "contains" else same_caption_matrix(captions)
            yield {"pixels": torch.from_numpy(pixels), "tokens": tokenizer(captions), "positive": positive}


def _single_thread_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the data worker must not compete with the training threads


def batch_iterator(config: TrainConfig) -> Iterator[dict[str, torch.Tensor]]:
    dataset = ShapesBatches(config.data_seed, config.batch_size,
                            config.model_cfg["text_cfg"]["context_length"],
                            config.model_cfg["vision_cfg"]["image_size"],
                            multi_fraction=config.multi_fraction, hard_fraction=config.hard_fraction,
                            twin_fraction=config.twin_fraction,
                            partial_fraction=config.partial_fraction,
                            style_fraction=config.style_fraction, style_ramp=tuple(config.style_ramp),
                            positives=config.positives,
                            shuffle_captions=config.shuffle_captions)
    if config.workers == 0:
        return iter(dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=config.workers,
                                         prefetch_factor=4, worker_init_fn=_single_thread_worker)
    return iter(loader)


# ----------------------------------------------------------------------------- training


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row.

    ``positive[i, j]`` says caption ``j`` describes image ``i``; each image's target
    is uniform over its positive captions and each caption's over its positive images.
    Every image must have its own caption as a positive (the diagonal).
    """
    positive = positive.to(image_features.dtype)
    logits = logit_scale * image_features @ text_features.T
    image_targets = positive / positive.sum(dim=1, keepdim=True)
    text_targets = positive.T / positive.T.sum(dim=1, keepdim=True)
    image_loss = -(image_targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_loss = -(text_targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (image_loss + text_loss) / 2


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on gains, biases, embeddings of position and the temperature."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        exempt = parameter.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name \
            or "embedding" in name
        (no_decay if exempt else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def training_device(name: str) -> torch.device:
    """The torch device called ``name``, or a ValueError that says why it cannot be used."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {name!r} (expected e.g. 'cpu' or 'cuda')") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device is available here; train on 'cpu'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: training runs on 'cpu' or 'cuda'")
    return device


def train(config: TrainConfig, log=print) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a CLIP from scratch; returns the model (eval mode) and a training summary."""
    training_device(config.device)  # refuse a device this machine lacks before any work
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(config, log)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainConfig, log) -> tuple[torch.nn.Module, dict[str, Any]]:
    torch.manual_seed(config.seed)
    device = training_device(config.device)
    model = build_model(config.model_cfg).to(device)
    set_model_preprocess_cfg(model, config.preprocess_cfg)
    clip = as_model(model)
    model.train()
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    mean, std = config.preprocess_cfg["mean"], config.preprocess_cfg["std"]
    batches = batch_iterator(config)
    losses: list[float] = []
    kept: dict[int, dict[str, torch.Tensor]] = {}
    unknown = [c for c in config.checkpoints if not 0 < c <= config.steps]
    if unknown:
        raise ValueError(f"checkpoint steps {unknown} are not within 1..{config.steps}")
    started = time.perf_counter()
    for step in range(config.steps):
        batch = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        images = normalise_pixels(batch["pixels"].to(device), mean, std)
        image_features, text_features, logit_scale = model(images, batch["tokens"].to(device))
        loss = contrastive_loss(image_features, text_features, logit_scale, batch["positive"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale().clamp_(0, math.log(100))  # CLIP's cap on the temperature
        losses.append(loss.item())
        if step + 1 in config.checkpoints:
            kept[step + 1] = {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
        if config.log_every and (step + 1) % config.log_every == 0:
            recent = float(np.mean(losses[-config.log_every:]))
            log(f"step {step + 1:5d}  loss {recent:.4f}  scale {logit_scale.item():6.2f}  "
                f"lr {learning_rate(step, config):.2e}  {time.perf_counter() - started:7.1f}s")
        if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
            model.eval()
            quick = evaluate_embedded(model, n_single=200, n_multi=200, attention=False,
                                      seen_styles=_seen_styles(config))
            log(f"  eval@{step + 1}: single top-1 {quick['single_top1']:.3f}  "
                f"colour {quick['single_colour_acc']:.3f}  shape {quick['single_shape_acc']:.3f}  "
                f"multi present {quick['multi_top1_present']:.3f}  held-out styles "
                + " ".join(f"{k} {v:.3f}" for k, v in quick["held_out_styles"].items())
                + "".join(f"  seen {k} {v:.3f}" for k, v in quick.get("seen_styles", {}).items()))
            model.train()
    model.eval().cpu()
    summary = {"steps": config.steps, "train_seconds": round(time.perf_counter() - started, 1),
               "final_loss": float(np.mean(losses[-min(len(losses), 50):])),
               "first_loss": losses[0], "losses": losses, "checkpoints": kept}
    return model, summary


def _seen_styles(config: TrainConfig) -> tuple[str, ...]:
    """The training styles beside the held-out ones, evaluated when training draws styles."""
    return tuple(shapes.SEEN_STYLES) if config.style_fraction else ()


# ----------------------------------------------------------------------------- evaluation


def mask_patch_fraction(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each patch's area covered by a boolean (H, W) mask."""
    height, width = mask.shape
    rows, cols = grid
    return mask.reshape(rows, height // rows, cols, width // cols).mean(axis=(1, 3))


def attention_inside_outside(attention: torch.Tensor, scenes: Sequence[shapes.Scene]) -> dict[str, float]:
    """Mean attention per unit of patch area inside all objects' masks vs outside."""
    grid = (attention.shape[1], attention.shape[2])
    attn = attention.numpy().astype(np.float64)
    inside = np.stack([mask_patch_fraction(np.any([o.mask for o in s.objects], axis=0), grid)
                       for s in scenes])
    inside_density = (attn * inside).sum() / inside.sum()
    outside_density = (attn * (1 - inside)).sum() / (1 - inside).sum()
    per_image = (attn * inside).sum((1, 2)) / inside.sum((1, 2)) / (
        (attn * (1 - inside)).sum((1, 2)) / (1 - inside).sum((1, 2)))
    return {"ratio": float(inside_density / outside_density),
            "median_image_ratio": float(np.median(per_image)),
            "mass_inside": float((attn * inside).sum() / attn.sum()),
            "area_inside": float(inside.mean())}


def _encode_images(model: ClipModel, scenes, batch_size: int) -> torch.Tensor:
    """(N, E) unit-norm image embeddings of the scenes, ``batch_size`` at a time, on the CPU."""
    return torch.cat([model.image_embeddings([s.image for s in scenes[start:start + batch_size]]).cpu()
                      for start in range(0, len(scenes), batch_size)])


def _attention(model: ClipModel, scenes, batch_size: int) -> torch.Tensor:
    """(N, gh, gw) the last block's CLS attention over the patches, mean over heads
    (:func:`~eclip_core.explainers.attention.cls_attention`)."""
    return torch.cat([cls_attention(model, model.native_input([s.image for s in scenes[start:start + batch_size]]))[0]
                      .cpu() for start in range(0, len(scenes), batch_size)])


def multi_object_outcomes(predicted: Sequence[tuple[str, str]],
                          scenes: Sequence[shapes.Scene]) -> tuple[list[bool], list[bool]]:
    """For each scene and its predicted (colour, shape): is it a present object, and is it a
    binding error (its colour and its shape are both present, but on different objects)?"""
    present, binding = [], []
    for (colour, shape), scene in zip(predicted, scenes, strict=True):
        is_present = (colour, shape) in scene.labels
        present.append(is_present)
        binding.append(not is_present and colour in {c for c, _ in scene.labels}
                       and shape in {s for _, s in scene.labels})
    return present, binding


def evaluate_embedded(model: Model, preprocess=None, tokenizer=None, *, n_single: int = 800,
                      n_multi: int = 400, batch_size: int = 200, attention: bool = True, timing: bool = True,
                      seed: int = shapes.EVAL_SEED,
                      styles: Sequence[str | shapes.Style] = tuple(shapes.HELD_OUT_STYLES),
                      n_styled: int | None = None,
                      seen_styles: Sequence[str | shapes.Style] = ()) -> dict[str, Any]:
    """Zero-shot metrics on the held-out shapes scenes.

    * single-object images: top-1 over all colour x shape prompts, and whether the
      predicted prompt's colour / shape is right;
    * 2-3-object images: whether the top-1 prompt names a present object, and how
      often it is a binding error (its colour and its shape are both present,
      but on different objects);
    * single-object top-1 on scenes drawn in each of ``styles`` (held out from training,
      :data:`~eclip_core.world.shapes.HELD_OUT_STYLES`), ``n_styled`` each (default ``n_single``),
      and in each of ``seen_styles`` (training styles beside them,
      :data:`~eclip_core.world.shapes.SEEN_STYLES`; none by default); a style is a name or a
      :class:`~eclip_core.world.shapes.Style`, reported under :func:`~eclip_core.world.shapes.style_name`;
    * the last vision block's CLS attention density inside vs outside the objects.
    """
    clip = as_model(model, preprocess, tokenizer)
    if clip.preprocess is None:
        declared = preprocess_config(clip.module) or default_preprocess_config(clip.image_size[0])
        clip.preprocess = build_preprocess(declared)
    if clip.tokenizer is None:
        clip.tokenizer = ShapesTokenizer(clip.context_length)
    was_training = clip.module.training
    clip.module.eval()
    labels = shapes.prompt_labels()
    text_features = clip.text_embeddings(shapes.prompts()).cpu()
    metrics: dict[str, Any] = {"n_prompts": len(labels)}

    size = clip.image_size[0]  # the world at the model's input size: masks on its grid
    single = shapes.eval_set(n_single, 1, seed=seed, size=size)
    predicted = (_encode_images(clip, single, batch_size) @ text_features.T).argmax(1)
    pairs = [(labels[p], scene.labels[0]) for p, scene in zip(predicted.tolist(), single)]
    metrics.update({
        "n_single": n_single,
        "single_top1": float(np.mean([guess == truth for guess, truth in pairs])),
        "single_colour_acc": float(np.mean([guess[0] == truth[0] for guess, truth in pairs])),
        "single_shape_acc": float(np.mean([guess[1] == truth[1] for guess, truth in pairs])),
    })

    n_styled = n_single if n_styled is None else n_styled
    for key, names in (("held_out_styles", styles), ("seen_styles", seen_styles)):
        if names and n_styled:
            metrics["n_styled"] = n_styled
            metrics[key] = {}
            for style in names:
                styled = shapes.eval_set(n_styled, 1, seed=seed, size=size, style=style)
                guess = (_encode_images(clip, styled, batch_size) @ text_features.T).argmax(1)
                metrics[key][shapes.style_name(style)] = float(np.mean(
                    [labels[p] == scene.labels[0] for p, scene in zip(guess.tolist(), styled)]))

    if n_multi:
        multi = shapes.eval_set(n_multi, (2, 3), seed=seed, size=size)
        predicted = (_encode_images(clip, multi, batch_size) @ text_features.T).argmax(1)
        present, binding = multi_object_outcomes([labels[p] for p in predicted.tolist()], multi)
        metrics.update({"n_multi": n_multi, "multi_top1_present": float(np.mean(present)),
                        "multi_binding_error": float(np.mean(binding))})

    if attention:
        metrics["attention_single"] = attention_inside_outside(
            _attention(clip, single, batch_size), single)
        if n_multi:
            metrics["attention_multi"] = attention_inside_outside(
                _attention(clip, multi, batch_size), multi)
    if attention and timing:  # one forward pass of 64 held-out images (the median of 5)
        images = clip.native_input([s.image for s in shapes.eval_set(64, 1, size=size)])
        metrics["forward_64_images_seconds"] = forward_seconds(clip, images, repeats=5)
    clip.module.train(was_training)
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    lines = [f"single-object top-1       {metrics['single_top1']:.4f}  (n={metrics['n_single']})",
             f"single-object colour acc  {metrics['single_colour_acc']:.4f}",
             f"single-object shape acc   {metrics['single_shape_acc']:.4f}"]
    for style, top1 in metrics.get("held_out_styles", {}).items():
        lines.append(f"held-out style {style + ':':16s} {top1:.4f}  (n={metrics['n_styled']})")
    for style, top1 in metrics.get("seen_styles", {}).items():
        lines.append(f"seen style {style + ':':20s} {top1:.4f}  (n={metrics['n_styled']})")
    if "multi_top1_present" in metrics:
        lines += [f"multi-object top-1 present {metrics['multi_top1_present']:.4f}  (n={metrics['n_multi']})",
                  f"multi-object binding error {metrics['multi_binding_error']:.4f}"]
    for key in ("attention_single", "attention_multi"):
        if key in metrics:
            lines.append(f"{key} inside/outside ratio {metrics[key]['ratio']:.2f}  "
                         f"(median per image {metrics[key]['median_image_ratio']:.2f})")
    if "forward_64_images_seconds" in metrics:
        lines.append(f"forward pass, 64 images   {metrics['forward_64_images_seconds'] * 1000:.1f} ms")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


#: The recorded settings the command line sets, in its order (``min_lr`` and ``log_every`` have
#: no option: they are printed beside the command).
COMMAND_OPTIONS = ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "seed", "data_seed", "threads",
                   "workers", "multi_fraction", "hard_fraction", "twin_fraction", "partial_fraction",
                   "style_fraction", "style_ramp", "checkpoints", "positives", "eval_every", "device")


def training_command(recipe: dict) -> str:
    """The command that trains with every setting of a recorded ``recipe`` (the ``training``
    entry of a model's metrics.json), each option spelled out, defaults included."""
    parts = ["python -m eclip_core.world.train"]
    for key in COMMAND_OPTIONS:
        if key not in recipe:
            continue
        value = recipe[key]
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            value = " ".join(map(str, value))
        parts.append(f"--{key.replace('_', '-')} {value}")
    if recipe.get("shuffle_captions"):
        parts.append("--shuffle-captions")
    return " ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR,
                        help="directory for the open_clip local-dir artifacts (default: the packaged model)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="model initialisation seed")
    parser.add_argument("--data-seed", type=int, default=defaults.data_seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="data-generation processes (0: generate in the training process)")
    parser.add_argument("--multi-fraction", type=float, default=defaults.multi_fraction)
    parser.add_argument("--hard-fraction", type=float, default=defaults.hard_fraction)
    parser.add_argument("--twin-fraction", type=float, default=defaults.twin_fraction,
                        help="fraction of multi-object scenes drawn as binding twins")
    parser.add_argument("--partial-fraction", type=float, default=defaults.partial_fraction,
                        help="fraction of multi-object scenes captioned by one of their objects")
    parser.add_argument("--style-fraction", type=float, default=defaults.style_fraction,
                        help="fraction of scenes drawn in a random training style (0: the default style only)")
    parser.add_argument("--style-ramp", type=int, nargs=2, default=defaults.style_ramp, metavar=("FIRST", "FULL"),
                        help="curriculum: no styled scenes before step FIRST, their share rising linearly "
                             "to --style-fraction at step FULL (default: 0 0, the share throughout)")
    parser.add_argument("--checkpoints", type=int, nargs="*", default=None,
                        help="steps after which to keep the weights (the training series; default: "
                             f"those of {list(SERIES_STEPS)} within --steps, none with --shuffle-captions)")
    parser.add_argument("--series-out", type=Path, default=None,
                        help="directory for the training series (default: the packaged series when --out "
                             "is the packaged model, else OUT/series)")
    parser.add_argument("--device", default=defaults.device,
                        help="torch device to train on (default: cpu, as the shipped model was)")
    parser.add_argument("--positives", choices=("contains", "same"), default=defaults.positives,
                        help="which captions count as positives of an image: those naming only objects "
                             "it holds (default), or only captions naming exactly its objects")
    parser.add_argument("--shuffle-captions", action="store_true",
                        help="permute the captions across each batch's images (a model that learns nothing "
                             "about its images: the data randomisation test)")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--n-single", type=int, default=1000, help="held-out single-object images")
    parser.add_argument("--n-multi", type=int, default=500, help="held-out 2-3-object images")
    return parser.parse_args(argv)


def _checkpoint_steps(args: argparse.Namespace) -> tuple[int, ...]:
    if args.checkpoints is not None:
        return tuple(sorted(set(args.checkpoints)))
    if args.shuffle_captions:
        return ()
    return tuple(step for step in SERIES_STEPS if step <= args.steps)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        training_device(args.device)
    except ValueError as error:
        raise SystemExit(f"python -m eclip_core.world.train: error: {error}") from None
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
                         seed=args.seed, data_seed=args.data_seed, threads=args.threads,
                         workers=args.workers, multi_fraction=args.multi_fraction,
                         hard_fraction=args.hard_fraction, twin_fraction=args.twin_fraction,
                         partial_fraction=args.partial_fraction, style_fraction=args.style_fraction,
                         style_ramp=tuple(args.style_ramp), checkpoints=_checkpoint_steps(args),
                         positives=args.positives, shuffle_captions=args.shuffle_captions,
                         eval_every=args.eval_every, device=args.device)
    packaged = Path(args.out).resolve() == EMBEDDED_DIR
    series_out = Path(args.series_out or (SERIES_DIR if packaged else Path(args.out) / "series"))
    series = sorted(step for step in config.checkpoints if step != config.steps)
    if series_out.resolve() == SERIES_DIR and (config.checkpoints, config.steps) != (SERIES_STEPS, SERIES_STEPS[-1]):
        raise SystemExit(f"python -m eclip_core.world.train: error: the packaged training series is the run of "
                         f"{SERIES_STEPS[-1]} steps caught after {list(SERIES_STEPS)}; write other checkpoints "
                         f"elsewhere (--out DIR, or --series-out DIR)")
    model, summary = train(config)
    save_embedded(model, args.out, config.model_cfg, config.preprocess_cfg)  # weights first, come what may
    if series:  # a series of this run only: no checkpoint left from another
        for stale in series_out.glob("step-*"):
            shutil.rmtree(stale)
    for step, state in summary["checkpoints"].items():
        if step == config.steps:
            continue  # the last checkpoint is the model itself
        checkpoint = build_model(config.model_cfg)
        checkpoint.load_state_dict(state)
        set_model_preprocess_cfg(checkpoint, config.preprocess_cfg)
        checkpoint.eval()
        scores = evaluate_embedded(checkpoint, n_single=args.n_single, n_multi=args.n_multi, timing=False,
                                   seen_styles=_seen_styles(config))
        save_embedded(checkpoint, series_checkpoint_dir(step, series_out), config.model_cfg,
                      config.preprocess_cfg, {"metrics": scores, "step": step})
        print(f"checkpoint at step {step}: single top-1 {scores['single_top1']:.4f}")
    metrics = evaluate_embedded(model, n_single=args.n_single, n_multi=args.n_multi,
                                seen_styles=_seen_styles(config))
    n_parameters = sum(p.numel() for p in model.parameters())
    recipe = {key: value for key, value in vars(config).items() if key not in ("model_cfg", "preprocess_cfg")}
    record = {"metrics": metrics, "n_parameters": n_parameters,
              "training": {**recipe, "train_seconds": summary["train_seconds"],
                           "first_loss": summary["first_loss"], "final_loss": summary["final_loss"],
                           "command": training_command(recipe)}}
    save_embedded(model, args.out, config.model_cfg, config.preprocess_cfg, record)
    print(f"parameters {n_parameters}, trained {summary['train_seconds']:.0f}s, saved to {args.out}")
    print(format_metrics(metrics))
    return record


if __name__ == "__main__":
    main()
