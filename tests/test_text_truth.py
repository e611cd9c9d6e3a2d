"""The text branch's truth (eclip_core.paper.text_truth): substitution effects computed another
way, and the agreement of a token map with them."""

import numpy as np
import pytest
import torch

import eclip_core as ec
from eclip_core.errors import InputError
from eclip_core.paper import text_truth as tt
from eclip_core.stats import spearman
from eclip_core.world import shapes


@pytest.fixture(scope="module")
def model():
    return ec.load_model("eclip-shapes")


@pytest.fixture(scope="module")
def scenes():
    return shapes.eval_set(4, (2, 3))


def test_content_words_are_the_colours_and_shapes_with_their_places():
    assert tt.content_words("a red star and a yellow cross") == [
        (1, "red", "colour"), (2, "star", "shape"), (5, "yellow", "colour"), (6, "cross", "shape")]


def test_effects_are_the_score_minus_the_mean_over_substitutions(model, scenes):
    scene = scenes[0]
    caption = scene.caption
    effects = tt.substitution_effects(model, caption, scene.image)
    words = caption.split()
    own = float(model.cosine([scene.image], [caption])[0, 0])
    for index, word, effect in effects:
        kind = shapes.COLOURS if word in shapes.COLOURS else shapes.SHAPES
        others = [" ".join(words[:index] + [w] + words[index + 1:]) for w in kind if w != word]
        expected = own - float(model.cosine([scene.image], others)[0].double().mean())
        assert effect == pytest.approx(expected, abs=1e-6), word
    assert len(effects) == len(tt.content_words(caption))


def test_agreement_holds_the_map_against_the_effects(model, scenes):
    captions, images = [s.caption for s in scenes], [s.image for s in scenes]
    frame = tt.text_agreement(model, captions, images)
    assert len(frame) == len(scenes) and frame.attrs["skipped"] == 0
    result = ec.explain_text(model, captions, images, method="attention_eclip")
    for i, row in frame.iterrows():
        weights = result.maps[i, i][result.token_mask[i]].double()
        effects = tt.substitution_effects(model, captions[i], images[i])
        index = [e[0] for e in effects]
        truth = torch.tensor([e[2] for e in effects], dtype=torch.float64)
        assert row["map"] == pytest.approx(float(spearman(weights[index], truth)))
        assert row["position"] == pytest.approx(float(spearman(torch.tensor(index, dtype=torch.float64), truth)))
        assert row["uniform"] == 0
        assert row["content_share"] == pytest.approx(float(weights[index].sum()))
        colours = [j for j, (_, word, _) in enumerate(effects) if word in shapes.COLOURS]
        assert row["colour_weight"] == pytest.approx(float(weights[index][colours].mean()))
        assert row["colour_effect"] == pytest.approx(float(truth[colours].mean()))
    intervals = tt.agreement_intervals(frame)
    assert intervals["map"].estimate == pytest.approx(frame["map"].mean())
    assert intervals["map"].n == len(scenes)


def test_captions_not_one_token_per_word_are_left_out_and_counted():
    assert tt.word_weights(["a", "red", "star"], torch.ones(3), "a red star") is not None
    assert tt.word_weights(["a", "re", "d", "star"], torch.ones(4), "a red star") is None


def test_bad_input_is_refused(model, scenes):
    with pytest.raises(InputError, match="no colour or shape"):
        tt.substitution_effects(model, "a thing", scenes[0].image)
    with pytest.raises(InputError, match="one image per caption"):
        tt.text_agreement(model, ["a red star"], [])
    with pytest.raises(InputError, match="no caption"):
        tt.agreement_intervals(__import__("pandas").DataFrame())
    assert np.isfinite(tt.text_agreement(model, ["a red star"], [scenes[0].image])["map"]).all()
