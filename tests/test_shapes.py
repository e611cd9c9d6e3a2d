"""Tests of the shapes world and of the word-level tokenizer."""

import re

import numpy as np
import pytest
import torch

from eclip_core import viz
from eclip_core.world import shapes
from eclip_core.world.vocab import ShapesTokenizer

PHRASE = rf"a ({'|'.join(shapes.COLOURS)}) ({'|'.join(shapes.SHAPES)})"
CAPTION = re.compile(rf"^{PHRASE}( and {PHRASE}){{0,2}}$")


def _pixels(scene):
    return np.asarray(scene.image)


def test_same_seed_gives_identical_scenes():
    for n_objects in (1, 2, 3):
        first = shapes.render_scene(np.random.default_rng(7), n_objects)
        second = shapes.render_scene(np.random.default_rng(7), n_objects)
        assert np.array_equal(_pixels(first), _pixels(second))
        assert first.caption == second.caption
        for a, b in zip(first.objects, second.objects):
            assert np.array_equal(a.mask, b.mask)


def test_different_seeds_give_different_scenes():
    first = shapes.render_scene(np.random.default_rng(1), 2)
    second = shapes.render_scene(np.random.default_rng(2), 2)
    assert not np.array_equal(_pixels(first), _pixels(second))


def test_eval_set_is_deterministic_and_balanced():
    first, second = shapes.eval_set(50), shapes.eval_set(50)
    assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(first, second))
    labels = shapes.prompt_labels()
    assert [scene.labels[0] for scene in first] == [labels[i % len(labels)] for i in range(50)]


def test_masks_are_visible_nonempty_disjoint_and_coloured():
    scenes = shapes.eval_set(60, (2, 3)) + shapes.eval_set(20, 1)
    for scene in scenes:
        pixels = _pixels(scene).astype(int)
        union = np.zeros((64, 64), dtype=int)
        for obj in scene.objects:
            assert obj.mask.dtype == bool and obj.mask.shape == (64, 64)
            assert obj.mask.sum() >= 20
            union += obj.mask
            reference = np.array(shapes.COLOUR_RGB[obj.colour])
            # the visible mask shows the object's own colour (jitter + shading only)
            distance = np.abs(pixels[obj.mask] - reference).max(axis=1)
            assert np.median(distance) < 25
        assert union.max() == 1  # visible masks never share a pixel
        assert 1 <= len(scene.objects) <= 3


def test_objects_overlap_little():
    rng = np.random.default_rng(5)
    for _ in range(30):
        occupied = []
        for shape in rng.choice(shapes.SHAPES, size=3):
            silhouette = shapes._place(rng, str(shape), 64, occupied)
            for other in occupied:
                shared = (silhouette & other).sum()
                assert shared <= shapes.MAX_OVERLAP * min(silhouette.sum(), other.sum())
            occupied.append(silhouette)
    for scene in shapes.eval_set(40, (3,)):
        assert all(obj.mask.sum() > 40 for obj in scene.objects)


def test_objects_stay_inside_the_image():
    for scene in shapes.eval_set(60, (1, 2, 3)):
        for obj in scene.objects:
            assert not obj.mask[0].any() and not obj.mask[-1].any()
            assert not obj.mask[:, 0].any() and not obj.mask[:, -1].any()


def test_captions_and_prompts_are_well_formed():
    for scene in shapes.eval_set(30, (1, 2, 3)):
        assert CAPTION.match(scene.caption), scene.caption
        assert scene.caption.count(" and ") == len(scene.objects) - 1
        assert all(obj.phrase in scene.caption for obj in scene.objects)
    prompts, labels = shapes.prompts(), shapes.prompt_labels()
    assert len(prompts) == len(set(prompts)) == len(shapes.COLOURS) * len(shapes.SHAPES)
    assert prompts[: len(shapes.SHAPES)] == [f"a {shapes.COLOURS[0]} {s}" for s in shapes.SHAPES]
    assert all(p == f"a {c} {s}" for p, (c, s) in zip(prompts, labels))


def test_objects_in_a_scene_are_distinct():
    for scene in shapes.eval_set(50, (3,)):
        assert len(set(scene.labels)) == len(scene.labels)


def test_train_and_eval_splits_differ():
    batch = next(shapes.train_stream(batch_size=64))
    evaluation = shapes.eval_set(64, 1) + shapes.eval_set(64, (2, 3))
    eval_bytes = {scene.image.tobytes() for scene in evaluation}
    assert not any(scene.image.tobytes() in eval_bytes for scene in batch)


def test_train_stream_is_reproducible_and_mixes_object_counts():
    first = next(shapes.train_stream(seed=3, batch_size=32))
    second = next(shapes.train_stream(seed=3, batch_size=32))
    assert [s.caption for s in first] == [s.caption for s in second]
    assert {len(s.objects) for s in first} >= {1, 2}


def test_restricted_pools_are_respected():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene = shapes.render_scene(rng, 2, colours=("red", "blue"), shapes=("star",  "cross"))
        assert {c for c, _ in scene.labels} <= {"red", "blue"}
        assert {s for _, s in scene.labels} <= {"star", "cross"}


def test_scene_grid_draws_a_figure():
    figure = viz.scene_grid(shapes.eval_set(7, (1, 2)), ncols=4, show_masks=True)
    assert len(figure.axes) == 8
    assert figure.axes[0].get_title()


# ----------------------------------------------------------------------------- tokenizer


def test_eot_is_the_argmax_of_every_row():
    tokenizer = ShapesTokenizer(context_length=16)
    texts = shapes.prompts() + [scene.caption for scene in shapes.eval_set(20, (2, 3))] + [""]
    ids = tokenizer(texts)
    assert ids.shape == (len(texts), 16) and ids.dtype == torch.long
    eot_positions = ids.argmax(dim=-1)
    assert torch.all(ids[torch.arange(len(texts)), eot_positions] == tokenizer.eot_token_id)
    assert torch.all(ids[:, 0] == tokenizer.sot_token_id)
    assert tokenizer.eot_token_id == max(range(tokenizer.vocab_size))


def test_truncation_keeps_eot_last():
    tokenizer = ShapesTokenizer(context_length=6)
    ids = tokenizer("a red circle and a blue square and a green star")[0]
    assert ids.tolist()[-1] == tokenizer.eot_token_id
    assert tokenizer.decode(ids) == "a red circle and"


def test_unknown_words_map_to_unk_and_text_is_normalised():
    tokenizer = ShapesTokenizer()
    ids = tokenizer("A RED, Banana!")[0].tolist()
    assert ids[:5] == [tokenizer.sot_token_id, tokenizer.token_to_id["a"], tokenizer.token_to_id["red"],
                       tokenizer.unk_token_id, tokenizer.eot_token_id]
    assert ids[5:] == [0] * (tokenizer.context_length - 5)
    assert tokenizer.decode(tokenizer("a purple star")[0]) == "a purple star"


def test_too_short_context_is_rejected():
    with pytest.raises(ValueError):
        ShapesTokenizer(context_length=1)


# ----------------------------------------------------------------------------- styles


def test_the_default_style_draws_the_world_of_the_chapters():
    """The default style is the world the stored chapters were drawn in, pixel for pixel (the
    digest of these scenes as the renderer drew them before styles existed), and naming it
    changes nothing: the same random stream, the same pixels."""
    import hashlib

    digest = hashlib.sha256()
    for scene in shapes.eval_set(12, (2, 3)) + next(shapes.train_stream(batch_size=16, twin_fraction=0.5,
                                                                         multi_fraction=0.5)):
        digest.update(np.asarray(scene.image).tobytes())
    assert digest.hexdigest() == "a8036c0ed1ce32249086f2188f0333e0c9362d339713f258cb246824b92db555"
    plain = shapes.eval_set(12, (2, 3))
    named = shapes.eval_set(12, (2, 3), style="default")
    explicit = shapes.eval_set(12, (2, 3), style=shapes.Style())
    for a, b, c in zip(plain, named, explicit):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_training_never_draws_a_held_out_style():
    rng = np.random.default_rng(0)
    drawn = [shapes.random_style(rng) for _ in range(400)]
    assert not any(shapes.is_held_out_style(s) for s in drawn)
    assert all(shapes.is_held_out_style(s) for s in shapes.HELD_OUT_STYLES.values())
    # every training factor is drawn: the held-out combinations are of things seen apart
    assert {s.background for s in drawn} == set(shapes.TRAIN_BACKGROUNDS)
    assert {s.fill for s in drawn} == {"filled", "outline"}
    assert any(s.fill == "outline" for s in drawn if s.background != "stripes")
    assert any(s.background == "stripes" for s in drawn)
    assert max(s.blur for s in drawn) <= shapes.TRAIN_BLUR and max(s.grain for s in drawn) <= shapes.TRAIN_GRAIN


def test_each_seen_style_is_a_held_out_style_without_its_held_out_part():
    """SEEN_STYLES are training styles, and each equals a held-out style in every field but
    the ones that make it held out: outline-stripes less its outlines, or less its stripes
    (filled on stripes, outlined on a flat ground); soft with blur and grain at training's limit."""
    from dataclasses import asdict

    def differing(a, b):
        return {k for k, v in asdict(a).items() if asdict(b)[k] != v}

    seen, held = shapes.SEEN_STYLES, shapes.HELD_OUT_STYLES
    for style in seen.values():
        assert not shapes.is_held_out_style(style)
        assert style.background in shapes.TRAIN_BACKGROUNDS
        assert shapes.TRAIN_RADIUS[0] <= style.radius[0] <= style.radius[1] <= shapes.TRAIN_RADIUS[1]
    assert differing(seen["stripes"], held["outline-stripes"]) == {"fill"}
    assert differing(seen["flat-outline"], held["outline-stripes"]) == {"background"}
    assert differing(seen["soft-edge"], held["soft"]) == {"blur", "grain"}
    assert (seen["soft-edge"].blur, seen["soft-edge"].grain) == (shapes.TRAIN_BLUR, shapes.TRAIN_GRAIN)
    assert shapes.as_style("flat-outline") == seen["flat-outline"]
    with pytest.raises(ValueError, match="flat-outline"):  # the error names every known style
        shapes.as_style("outlines")


def test_styled_scenes_have_their_own_stream_and_keep_objects_visible():
    default = shapes.eval_set(8, 1)
    for name, style in shapes.HELD_OUT_STYLES.items():
        scenes = shapes.eval_set(8, 1, style=name)
        assert [s.labels for s in scenes] == [s.labels for s in default]  # the same classes, in order
        assert not np.array_equal(np.asarray(scenes[0].image), np.asarray(default[0].image))
        for scene in scenes:
            obj = scene.objects[0]
            assert obj.mask.any()
            if style.fill == "outline":  # a ring: its silhouette's interior is not painted
                full = scene.drawing.layers[0].silhouette
                assert full.sum() < 0.8 * (full | _filled(full)).sum()


def _filled(ring):
    """The ring's interior: pixels enclosed by it (flood fill of the outside from the border)."""
    from scipy import ndimage
    return ndimage.binary_fill_holes(ring)


@pytest.mark.parametrize("background", ["flat", "gradient", "blotches", "stripes", "checker"])
def test_every_background_colour_is_far_from_the_colour_of_every_object(background):
    style = shapes.Style(background=background)
    objects = [("white", "circle"), ("yellow", "star"), ("cyan", "square")]
    for seed in range(20):
        scene = shapes.render_objects(np.random.default_rng(seed), objects, style=style)
        pixels = scene.drawing.background.reshape(-1, 3).astype(float)
        for colour, _ in objects:
            distance = np.linalg.norm(pixels - np.asarray(shapes.COLOUR_RGB[colour]), axis=1)
            assert distance.min() >= shapes.MIN_CONTRAST - 1e-3, (background, seed, colour)


def test_a_styled_scene_is_edited_with_its_blur_and_grain():
    """Removing an object redraws the same background, blur and grain: far from the object
    (beyond the blur's reach) nothing changes, and removing every object leaves the
    background as it was drawn, blurred and grained."""
    style = shapes.HELD_OUT_STYLES["soft"]
    scene = shapes.render_objects(np.random.default_rng(3), [("red", "circle"), ("blue", "square")], style=style)
    assert np.array_equal(np.asarray(shapes.compose(scene.drawing).image), np.asarray(scene.image))
    edited = shapes.edit(scene, remove=[0])
    from scipy import ndimage
    near = ndimage.binary_dilation(scene.drawing.layers[0].silhouette, iterations=6)
    assert np.array_equal(np.asarray(edited.image)[~near], np.asarray(scene.image)[~near])
    assert not np.array_equal(np.asarray(edited.image)[near], np.asarray(scene.image)[near])
    bare = shapes.edit(scene, remove=[0, 1])
    expected = shapes.compose(shapes.Drawing(scene.drawing.background, (), scene.drawing.blur, scene.drawing.grain))
    assert np.array_equal(np.asarray(bare.image), np.asarray(expected.image))


def test_bad_styles_are_refused_by_name():
    for kwargs, words in (({"background": "plaid"}, "unknown background"), ({"fill": "hatched"}, "fill"),
                          ({"radius": (0.2, 0.1)}, "radius"), ({"blur": -1.0}, "blur")):
        with pytest.raises(ValueError, match=words):
            shapes.Style(**kwargs)
    with pytest.raises(ValueError, match="unknown style"):
        shapes.eval_set(2, 1, style="sepia")


def test_the_style_ramp_is_a_curriculum():
    """No styled scene before the ramp's first step, the full share from its last, linear between."""
    shares = [shapes.style_share(b, 0.6, (100, 300)) for b in (0, 99, 100, 200, 250, 300, 5000)]
    assert shares == pytest.approx([0, 0, 0, 0.3, 0.45, 0.6, 0.6])
    assert shapes.style_share(0, 0.6) == 0.6  # no ramp: the share throughout
    assert shapes.style_share(7, 0.6, (7, 7)) == 0.6
    for ramp in ((300, 100), (-1, 5)):
        with pytest.raises(ValueError, match="style_ramp"):
            next(shapes.train_stream(batch_size=4, style_fraction=0.5, style_ramp=ramp))
    with pytest.raises(ValueError, match="style_fraction"):  # refused at once, not when the ramp begins
        next(shapes.train_stream(batch_size=4, style_fraction=1.5, style_ramp=(1000, 2000)))


def test_the_ramp_reaches_each_batch_by_its_index():
    early, late = (next(shapes.train_stream(batch_size=64, style_fraction=1.0, style_ramp=(10, 20), start=b))
                   for b in (9, 20))
    assert all(s.drawing.blur == 0 and s.drawing.grain is None for s in early)
    plain = next(shapes.train_stream(batch_size=64, start=9))
    assert [np.asarray(s.image).tobytes() for s in early] == [np.asarray(s.image).tobytes() for s in plain]
    full = next(shapes.train_stream(batch_size=64, style_fraction=1.0, start=20))
    assert [np.asarray(s.image).tobytes() for s in late] == [np.asarray(s.image).tobytes() for s in full]


def test_training_batches_mix_styles_and_the_default():
    batch = next(shapes.train_stream(batch_size=64, style_fraction=0.5))
    blurred_or_flat = [s for s in batch if s.drawing.blur > 0 or s.drawing.grain is not None]
    assert 0 < len(blurred_or_flat) < 64
    plain = next(shapes.train_stream(batch_size=64))
    assert all(s.drawing.blur == 0 and s.drawing.grain is None for s in plain)
