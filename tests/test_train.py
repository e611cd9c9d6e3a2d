"""Tests of the training code path on a tiny model."""

import math

import numpy as np
import pytest
import torch

from eclip_core.world import shapes
from eclip_core.world.embedded import build_preprocess, load_embedded
from eclip_core.world.train import (
    ShapesBatches,
    TrainConfig,
    contains_matrix,
    contrastive_loss,
    default_preprocess_config,
    images_to_tensor,
    learning_rate,
    main,
    multi_object_outcomes,
    same_caption_matrix,
    train,
)


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


def _scene(labels, named=None):
    objects = tuple(shapes.ShapeObject(shape=shape, colour=colour, mask=np.zeros((2, 2), bool))
                    for colour, shape in labels)
    return shapes.Scene(image=None, objects=objects, named=named)


def test_a_caption_is_a_positive_of_every_image_holding_what_it_names():
    scenes = [_scene([("red", "circle")]),
              _scene([("red", "circle"), ("blue", "star")]),
              _scene([("blue", "circle"), ("red", "star")]),           # same attributes, bound otherwise
              _scene([("red", "circle"), ("blue", "star")], named=(1,)),  # captioned "a blue star"
              _scene([("blue", "star"), ("red", "circle")])]
    contains = contains_matrix(scenes)
    assert contains.tolist() == [
        [True, False, False, False, False],
        [True, True, False, True, True],
        [False, False, True, False, False],
        [True, True, False, True, True],
        [True, True, False, True, True],
    ]
    assert contains.diagonal().all()
    # The swapped-binding scene is a negative of everything else, as is the red circle alone
    # of every caption that names more than it holds.
    same = same_caption_matrix([scene.caption for scene in scenes])
    assert (same <= contains).all() and not torch.equal(same, contains)


def test_multi_object_outcomes_tell_present_objects_from_binding_errors():
    scene = _scene([("red", "circle"), ("blue", "star")])
    predicted = [("red", "circle"), ("red", "star"), ("green", "star"), ("blue", "circle")]
    present, binding = multi_object_outcomes(predicted, [scene] * 4)
    assert present == [True, False, False, False]
    assert binding == [False, True, False, True]


def test_the_loss_with_asymmetric_positives_uses_rows_for_images_and_columns_for_captions():
    # Image 1 holds both objects: caption 0 ("a red circle") is one of its positives, but
    # image 1 is not a positive of caption 0's own image.
    positive = torch.tensor([[True, False], [True, True]])
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.T
    log_p_text = logits.log_softmax(dim=1)    # each image over captions
    log_p_image = logits.T.log_softmax(dim=1)  # each caption over images
    image_loss = -(log_p_text[0, 0] + (log_p_text[1, 0] + log_p_text[1, 1]) / 2) / 2
    text_loss = -((log_p_image[0, 0] + log_p_image[0, 1]) / 2 + log_p_image[1, 1]) / 2
    expected = (image_loss + text_loss) / 2
    assert torch.allclose(contrastive_loss(images, texts, scale, positive), expected, atol=1e-6)


def test_the_batch_stream_does_not_depend_on_the_number_of_data_processes():
    dataset = ShapesBatches(seed=5, batch_size=6, context_length=16, multi_fraction=0.5)
    alone = [batch["tokens"] for batch, _ in zip(iter(dataset), range(4))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    shared = [batch["tokens"] for batch, _ in zip(loader, range(4))]
    assert all(torch.equal(a, b) for a, b in zip(alone, shared))
    assert not torch.equal(alone[0], alone[1])


def test_a_device_this_machine_lacks_is_refused_before_training(capsys):
    import pytest
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        train(tiny_config(device="gpu0"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            train(tiny_config(device="cuda"))
    with pytest.raises(SystemExit, match="unknown device"):
        main(["--device", "gpu0", "--steps", "1"])


def test_unknown_positives_rule_is_refused():
    import pytest
    with pytest.raises(ValueError, match="positives"):
        ShapesBatches(seed=0, batch_size=4, context_length=16, positives="subset")


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


@pytest.mark.slow
def test_command_line_writes_a_loadable_model(tmp_path, capsys):
    record = main(["--out", str(tmp_path), "--steps", "3", "--batch-size", "8", "--workers", "0", "--threads", "1",
                   "--eval-every", "0", "--n-single", "40", "--n-multi", "20"])
    assert "single-object top-1" in capsys.readouterr().out
    assert 0 <= record["metrics"]["single_top1"] <= 1
    model, preprocess, tokenizer = load_embedded(directory=tmp_path)
    with torch.no_grad():
        features = model.encode_text(tokenizer(["a red circle"]))
    assert features.shape == (1, 64)


@pytest.mark.slow
def test_styled_top1_is_the_zero_shot_top1_on_each_styles_own_scenes():
    """evaluate_embedded's held-out and seen style figures, recomputed directly: each style's
    scenes encoded, normalised, matched against every prompt, the top prompt's label compared."""
    from eclip_core.world.train import evaluate_embedded, format_metrics

    model, preprocess, tokenizer = load_embedded()
    metrics = evaluate_embedded(model, n_single=40, n_multi=0, attention=False, styles=("outline-stripes",),
                                seen_styles=("stripes", "flat-outline"))
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(shapes.prompts())), dim=-1)
    labels = shapes.prompt_labels()
    for key, name in (("held_out_styles", "outline-stripes"), ("seen_styles", "stripes"),
                      ("seen_styles", "flat-outline")):
        scenes = shapes.eval_set(40, 1, style=name)
        with torch.no_grad():
            images = model.encode_image(torch.stack([preprocess(s.image) for s in scenes]))
        top = (torch.nn.functional.normalize(images, dim=-1) @ text.T).argmax(1).tolist()
        expected = np.mean([labels[p] == s.labels[0] for p, s in zip(top, scenes)])
        assert metrics[key][name] == pytest.approx(expected, abs=1e-12), (key, name)
    assert set(metrics["seen_styles"]) == {"stripes", "flat-outline"}
    assert len({metrics["held_out_styles"]["outline-stripes"], *metrics["seen_styles"].values()}) > 1
    assert "seen style flat-outline:" in format_metrics(metrics)
    assert "seen_styles" not in evaluate_embedded(model, n_single=8, n_multi=0, attention=False, styles=())


@pytest.mark.slow
def test_styles_given_as_objects_are_reported_by_name():
    """A Style object is scored like its name and reported under it (a style of one's own under
    its repr), so the metrics format and write as JSON; an unknown name is refused by name."""
    import json

    from eclip_core.world.train import evaluate_embedded, format_metrics

    model = load_embedded().model
    own = shapes.Style(background="gradient", fill="outline")
    by_object = evaluate_embedded(model, n_single=8, n_multi=0, attention=False,
                                  styles=(shapes.Style(background="checker"), own))
    by_name = evaluate_embedded(model, n_single=8, n_multi=0, attention=False, styles=("checker",))
    assert by_object["held_out_styles"]["checker"] == by_name["held_out_styles"]["checker"]
    assert repr(own) in by_object["held_out_styles"]
    assert "checker" in format_metrics(by_object) and json.dumps(by_object)
    with pytest.raises(ValueError, match="unknown style 'chequer'"):
        evaluate_embedded(model, n_single=8, n_multi=0, attention=False, styles=("chequer",))


@pytest.mark.slow
def test_a_styled_run_is_evaluated_on_the_seen_styles_too(tmp_path):
    record = main(["--out", str(tmp_path), "--steps", "2", "--batch-size", "8", "--workers", "0",
                   "--style-fraction", "0.5", "--checkpoints", "--eval-every", "0", "--n-single", "8",
                   "--n-multi", "4"])
    assert set(record["metrics"]["seen_styles"]) == set(shapes.SEEN_STYLES)
    assert set(record["metrics"]["held_out_styles"]) == set(shapes.HELD_OUT_STYLES)


def test_shuffled_captions_are_a_seeded_permutation_of_each_batch():
    """Data randomisation: batch b keeps its images, and its captions are permuted across them
    by the permutation seeded with (data seed, SHUFFLE_KEY, b) -- the same with two data
    processes -- and the positives are the images given the same caption."""
    from eclip_core.world.train import SHUFFLE_KEY
    from eclip_core.world.vocab import ShapesTokenizer

    shuffled = ShapesBatches(seed=5, batch_size=12, context_length=16, multi_fraction=0.5,
                             shuffle_captions=True)
    loader = torch.utils.data.DataLoader(shuffled, batch_size=None, num_workers=2)
    scenes_stream = shapes.train_stream(5, 12, 64, multi_fraction=0.5)
    moved = 0
    for index, (alone, shared, scenes) in enumerate(zip(iter(shuffled), loader, scenes_stream)):
        if index == 3:
            break
        order = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(SHUFFLE_KEY, index))).permutation(12)
        captions = [scenes[i].caption for i in order]
        assert torch.equal(alone["pixels"], torch.from_numpy(np.stack([np.asarray(s.image) for s in scenes])))
        assert torch.equal(alone["tokens"], ShapesTokenizer(16)(captions))
        assert torch.equal(alone["positive"], same_caption_matrix(captions))
        assert torch.equal(alone["tokens"], shared["tokens"])
        moved += int((order != np.arange(12)).sum())
    assert moved > 18  # most captions left their image


@pytest.mark.slow
def test_shuffled_captions_on_the_command_line(tmp_path):
    record = main(["--steps", "2", "--batch-size", "8", "--shuffle-captions", "--workers", "0",
                   "--eval-every", "0", "--n-single", "8", "--n-multi", "4", "--out", str(tmp_path)])
    assert record["training"]["shuffle_captions"] is True
    assert record["training"]["command"].endswith("--shuffle-captions")


def test_checkpoints_are_kept_at_the_steps_asked_and_written_as_a_series(tmp_path):
    record = main(["--out", str(tmp_path), "--steps", "4", "--batch-size", "8", "--workers", "0",
                   "--checkpoints", "1", "3", "4", "--eval-every", "0", "--n-single", "8", "--n-multi", "4"])
    assert list(record["training"]["checkpoints"]) == [1, 3, 4]
    from eclip_core.world.embedded import series_checkpoint_dir
    first = load_embedded(directory=series_checkpoint_dir(1, tmp_path / "series")).model.state_dict()
    third = load_embedded(directory=series_checkpoint_dir(3, tmp_path / "series")).model.state_dict()
    final = load_embedded(directory=tmp_path).model.state_dict()
    assert not series_checkpoint_dir(4, tmp_path / "series").exists()  # the last is the model itself
    assert any(not torch.equal(first[k], third[k]) for k in first)
    assert any(not torch.equal(third[k], final[k]) for k in first)
    model, summary = train(tiny_config(steps=3, checkpoints=(3,)))
    assert all(torch.equal(summary["checkpoints"][3][k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="checkpoint steps"):
        train(tiny_config(steps=3, checkpoints=(5,)))
    assert set(summary["checkpoints"]) == {3}


def test_styled_training_batches_reach_the_loader():
    """style_fraction reaches the data: with it, some images are drawn in training styles."""
    styled = next(iter(ShapesBatches(seed=3, batch_size=32, context_length=16, style_fraction=1.0)))
    scenes = next(shapes.train_stream(3, 32, style_fraction=1.0))
    assert torch.equal(styled["pixels"], torch.from_numpy(np.stack([np.asarray(s.image) for s in scenes])))
    plain = next(iter(ShapesBatches(seed=3, batch_size=32, context_length=16)))
    assert not torch.equal(plain["pixels"], styled["pixels"])


def test_the_style_ramp_reaches_the_loader():
    """--style-ramp reaches the recipe and the data: before the ramp, the default style only."""
    from eclip_core.world.train import batch_iterator, parse_args

    assert parse_args(["--style-ramp", "5", "10"]).style_ramp == [5, 10]
    config = TrainConfig(batch_size=16, style_fraction=1.0, style_ramp=(1, 2), workers=0)
    first = next(batch_iterator(config))["pixels"]
    plain = next(batch_iterator(TrainConfig(batch_size=16, workers=0)))["pixels"]
    styled = next(batch_iterator(TrainConfig(batch_size=16, style_fraction=1.0, workers=0)))["pixels"]
    assert torch.equal(first, plain) and not torch.equal(first, styled)


def test_the_packaged_series_is_only_written_by_its_own_run(tmp_path, capsys):
    """A run other than the shipped recipe's cannot overwrite the packaged series (it would
    leave checkpoints of two runs side by side): refused before any training."""
    from eclip_core.world.embedded import SERIES_DIR

    for argv in (["--steps", "10"], ["--steps", "3500", "--checkpoints", "5"], ["--shuffle-captions"],
                 ["--out", str(tmp_path), "--series-out", str(SERIES_DIR), "--steps", "4"]):
        with pytest.raises(SystemExit, match="packaged training series"):
            main(argv + ["--workers", "0", "--eval-every", "0"])
    assert not (tmp_path / "open_clip_model.safetensors").exists()


def test_the_printed_training_command_sets_every_recorded_setting():
    """Chapter 0 prints training_command(recorded recipe): parsed back, it gives every setting
    the shipped model was trained with (those without an option are printed beside it)."""
    import json
    import shlex

    from eclip_core.world.embedded import EMBEDDED_DIR
    from eclip_core.world.train import COMMAND_OPTIONS, parse_args, training_command

    recipe = json.loads((EMBEDDED_DIR / "metrics.json").read_text())["training"]
    command = training_command(recipe)
    args = vars(parse_args(shlex.split(command)[3:]))
    for key in COMMAND_OPTIONS:
        if key in recipe:
            got = list(args[key]) if isinstance(args[key], (list, tuple)) else args[key]
            want = list(recipe[key]) if isinstance(recipe[key], (list, tuple)) else recipe[key]
            assert got == want, key
    assert args["shuffle_captions"] == recipe["shuffle_captions"]
    assert "--hard-fraction 0.5" in command and "--checkpoints 20 60 160 450 1250 3500" in command
    shuffled = training_command({**recipe, "shuffle_captions": True, "checkpoints": []})
    assert shuffled.endswith("--shuffle-captions") and "--checkpoints" not in shuffled
