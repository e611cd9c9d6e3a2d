"""Tests of the training code path on a tiny model."""

import math

import numpy as np
import torch

from eclip_core import shapes
from eclip_core.embedded import build_preprocess, load_embedded
from eclip_core.train import (TrainConfig, contrastive_loss, default_preprocess_config, images_to_tensor,
                              learning_rate, main, same_caption_matrix, train)


def tiny_config(**overrides) -> TrainConfig:
    config = TrainConfig(steps=40, batch_size=24, lr=3e-3, warmup_steps=5, workers=0, threads=1,
                         log_every=0, eval_every=0)
    config.model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": config.model_cfg["text_cfg"]["vocab_size"],
                     "width": 32, "heads": 2, "layers": 1},
    }
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_a_few_steps_reduce_the_loss():
    _, summary = train(tiny_config())
    losses = summary["losses"]
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    print(f"loss: first five {np.mean(losses[:5]):.3f}, last five {np.mean(losses[-5:]):.3f}")
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2


def test_training_is_reproducible_from_the_seed():
    first = train(tiny_config(steps=3))[1]["losses"]
    second = train(tiny_config(steps=3))[1]["losses"]
    third = train(tiny_config(steps=3, seed=1))[1]["losses"]
    assert first == second
    assert first != third


def test_duplicate_captions_are_positives():
    captions = ["a red circle", "a red circle", "a blue star and a red circle", "a red circle and a blue star"]
    same = same_caption_matrix(captions)
    assert same.tolist() == [[True, True, False, False], [True, True, False, False],
                             [False, False, True, True], [False, False, True, True]]
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]]), dim=1)
    ideal = contrastive_loss(features, features, torch.tensor(50.0), same)
    shuffled = contrastive_loss(features, features.flip(0), torch.tensor(50.0), same)
    assert ideal < 0.75 and shuffled > 10  # ln 2 when two positives share the mass equally


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)
    rates = [learning_rate(step, config) for step in range(100)]
    assert rates[0] < rates[9] == max(rates)
    assert rates[-1] < 2e-5 and all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_training_normalisation_equals_open_clip_eval_preprocess():
    config = default_preprocess_config()
    preprocess = build_preprocess(config)
    scenes = shapes.eval_set(8, (1, 2, 3))
    expected = torch.stack([preprocess(scene.image) for scene in scenes])
    assert torch.equal(images_to_tensor([s.image for s in scenes], config["mean"], config["std"]), expected)


def test_command_line_writes_a_loadable_model(tmp_path, capsys):
    record = main(["--out", str(tmp_path), "--steps", "3", "--batch-size", "8", "--workers", "0", "--threads", "1",
                   "--eval-every", "0", "--n-single", "40", "--n-multi", "20"])
    assert "single-object top-1" in capsys.readouterr().out
    assert 0 <= record["metrics"]["single_top1"] <= 1
    model, preprocess, tokenizer = load_embedded(directory=tmp_path)
    with torch.no_grad():
        features = model.encode_text(tokenizer(["a red circle"]))
    assert features.shape == (1, 64)
