"""Counterfactual scenes and the ground-truth measures, on constructed cases."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

import eclip_core as ec
from eclip_core.paper import counterfactual as cf
from eclip_core.world import shapes
from eclip_core.departures import FAITHFUL
from eclip_core.explainers import Method, register, unregister


@pytest.fixture(scope="module")
def scene():
    return shapes.eval_set(3, 3)[0]


def pixels(s):
    return np.asarray(s.image).astype(int)


def test_compose_redraws_every_scene_exactly():
    for s in shapes.eval_set(6, (1, 2, 3)):
        again = shapes.compose(s.drawing)
        assert np.array_equal(pixels(again), pixels(s))
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(again.objects, s.objects))


def test_removing_an_object_restores_the_background_and_nothing_else(scene):
    background = np.clip(scene.drawing.background, 0, 255).round().astype(int)
    for i in range(3):
        edited = shapes.edit(scene, remove=[i])
        covered = scene.drawing.layers[i].silhouette
        later = np.zeros_like(covered)
        earlier = np.zeros_like(covered)
        for j, layer in enumerate(scene.drawing.layers):
            if j > i:
                later |= layer.silhouette
            elif j < i:
                earlier |= layer.silhouette
        bare = covered & ~later & ~earlier  # where only object i was drawn: now background
        assert bare.any()
        assert np.array_equal(pixels(edited)[bare], background[bare])
        assert np.array_equal(pixels(edited)[~covered], pixels(scene)[~covered])
        assert [o.phrase for o in edited.objects] == [o.phrase for j, o in enumerate(scene.objects) if j != i]
    assert np.array_equal(pixels(shapes.edit(scene, remove=[0, 1, 2])), background)


def test_recolour_and_move_change_only_that_object(scene):
    i = 1
    new = next(c for c in shapes.COLOURS if c != scene.objects[i].colour)
    recoloured = shapes.edit(scene, recolour={i: new})
    visible = scene.objects[i].mask
    assert recoloured.objects[i].colour == new and np.array_equal(recoloured.objects[i].mask, visible)
    assert np.array_equal(pixels(recoloured)[~visible], pixels(scene)[~visible])
    shift = np.asarray(shapes.COLOUR_RGB[new]) - np.asarray(shapes.COLOUR_RGB[scene.objects[i].colour])
    delta = pixels(recoloured)[visible] - pixels(scene)[visible]
    assert np.abs(delta - shift).max() <= 1  # the same jitter and shading, another colour (rounding)
    rows, cols = np.nonzero(scene.drawing.layers[i].silhouette)
    dy = 1 if rows.max() + 1 < 64 else -1
    moved = shapes.edit(scene, move={i: (dy, 0)})
    assert np.array_equal(moved.drawing.layers[i].silhouette, np.roll(scene.drawing.layers[i].silhouette, dy, 0))
    with pytest.raises(ValueError, match="out of the image"):
        shapes.edit(scene, move={i: (64, 0)})
    with pytest.raises(ValueError, match="out of range"):
        shapes.edit(scene, remove=[3])
    with pytest.raises(ValueError, match="out of range"):
        shapes.edit(scene, remove=[True])
    with pytest.raises(ValueError, match="sequence of object indices"):
        shapes.edit(scene, remove=1)
    partial = dataclasses.replace(scene, named=(1,))
    assert shapes.edit(partial, remove=[0]).caption == f"a {scene.objects[1].phrase}"
    assert shapes.edit(partial, remove=[1]).caption == ""  # its one named object is gone


def test_curve_area_and_regret_by_hand():
    assert cf.curve_area(np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert cf.curve_area(np.array([1.0, 0.5, 0.5, 0.0])) == pytest.approx((1.5 + 1.0 + 0.5) / 6)
    # three objects: removing object 2 costs the score most, then 0, then 1
    value = {2: 0.6, 0: 0.3, 1: 0.1}
    scores = {frozenset(r): np.array([1.0 - sum(value[i] for i in r)])
              for n in range(4) for r in itertools.combinations(range(3), n)}
    effects = cf.true_effects(scores, 3)[:, 0]
    np.testing.assert_allclose(effects, [0.3, 0.1, 0.6])
    best = cf.item_measures(np.array([0.3, 0.1, 0.6]), effects, scores, 0)
    assert best["cf_correlation"] == pytest.approx(1.0) and best["cf_top"] == 1.0
    assert best["cf_regret"] == pytest.approx(0.0)
    worst = cf.item_measures(np.array([0.3, 0.6, 0.1]), effects, scores, 0)  # order 1, 0, 2
    assert worst["cf_correlation"] == pytest.approx(-1.0) and worst["cf_top"] == 0.0
    # curve of order (1, 0, 2): 1, .9, .6, 0 against the best (2, 0, 1): 1, .4, .1, 0
    assert worst["cf_regret"] == pytest.approx(cf.curve_area(np.array([1, .9, .6, 0]))
                                               - cf.curve_area(np.array([1, .4, .1, 0])))
    flat = cf.item_measures(np.array([0.2, 0.2, 0.2]), effects, scores, 0)
    assert flat["cf_correlation"] == 0.0 and flat["cf_top"] == 0.0
    assert flat["cf_regret"] == pytest.approx(flat["cf_regret_random"])  # no ranking: a random order
    two_tied = cf.item_measures(np.array([0.6, 0.2, 0.2]), effects, scores, 0)  # orders (0,1,2), (0,2,1)
    expected = np.mean([cf.curve_area(cf.removal_curve(scores, order, 0)) for order in [(0, 1, 2), (0, 2, 1)]])
    assert two_tied["cf_regret"] == pytest.approx(expected - cf.curve_area(np.array([1, .4, .1, 0])))


def test_removal_scores_are_the_models_scores_of_the_edited_scenes(scene):
    bundle = ec.load_model()
    texts = [f"a {o.phrase}" for o in scene.objects]
    scores = cf.removal_scores(bundle, scene, texts)
    assert len(scores) == 8
    for removed in (frozenset(), frozenset({1}), frozenset({0, 2})):
        image = shapes.edit(scene, remove=sorted(removed)).image if removed else scene.image
        expected = ec.evaluation.zero_shot_scores(bundle, [image], texts)[0].double().numpy()
        np.testing.assert_allclose(scores[removed], expected, atol=1e-6)
    effects = cf.true_effects(scores, 3)
    np.testing.assert_allclose(effects[1], scores[frozenset()] - scores[frozenset({1})])


@pytest.mark.slow
def test_an_explainer_that_paints_the_true_effects_scores_best():
    """A registered explainer whose map puts on each object a mass that grows with its true
    effect (read from the counterfactual scores) correlates 1 with the truth, names the top object
    and has no regret; its negation has no positive mass and ranks nothing (correlation 0)."""
    bundle = ec.load_model()
    scenes = shapes.eval_set(4, 3)
    prompts = shapes.prompts()
    bank = bundle.text_embeddings(prompts)
    painted = {}
    for s in scenes:
        texts = [f"a {o.phrase}" for o in s.objects]
        eff = cf.true_effects(cf.removal_scores(bundle, s, texts), 3)
        key = bundle.preprocess(s.image).numpy().tobytes()
        for k, text in enumerate(texts):
            # mass (not density) proportional to the effect, shifted to be positive
            weighted = sum(np.where(o.mask, (float(eff[i, k]) - eff[:, k].min() + 0.01) / o.mask.sum(), 0.0)
                           for i, o in enumerate(s.objects))
            painted[(key, prompts.index(text))] = torch.from_numpy(weighted).float()

    def oracle(sign):
        def fn(model, images, targets, *, departures=FAITHFUL):
            maps = [sign * painted[(x.numpy().tobytes(), int((bank @ t[0]).argmax()))][None] for x, t in
                    zip(images, targets)]
            return torch.stack(maps), torch.zeros(len(images), 1)
        return fn

    register(Method("cf_oracle", oracle(1.0), "paints the true effects (a test)"))
    register(Method("cf_anti", oracle(-1.0), "paints minus the true effects (a test)"))
    try:
        study = cf.ground_truth_study(bundle, scenes, ["cf_oracle", "cf_anti"], steps=4, road=False)
    finally:
        unregister("cf_oracle")
        unregister("cf_anti")
    table = study.table()
    assert table.loc["cf_oracle", "cf_correlation"] == pytest.approx(1.0)
    assert table.loc["cf_oracle", "cf_top"] == pytest.approx(1.0)
    # removing objects by their single-removal effects is not always the best order (objects
    # interact), but it beats a random order on average
    oracle = study.per_item[study.per_item["method"] == "cf_oracle"]
    assert 0 <= table.loc["cf_oracle", "cf_regret"] < oracle["cf_regret_random"].mean()
    assert table.loc["cf_anti", "cf_correlation"] == 0.0 and table.loc["cf_anti", "cf_top"] == 0.0
    anti = study.per_item[study.per_item["method"] == "cf_anti"]
    np.testing.assert_allclose(anti["cf_regret"], anti["cf_regret_random"])  # ranks nothing
    assert study.agreement("energy_in_mask").estimate == pytest.approx(1.0)  # two methods, same order
    assert study.agreement("cf_regret", truth="cf_correlation").estimate == pytest.approx(1.0)
    with pytest.raises(ec.InputError, match="each method once"):
        cf.ground_truth_study(bundle, scenes, ["edges", "edges"], steps=4, road=False)
    assert len(study.per_item) == 2 * 12 and table.loc["cf_oracle", "n"] == 12
    assert study.per_item["cf_regret_random"].min() >= 0


def _study(rows, methods):
    import pandas as pd

    return cf.GroundTruthStudy(pd.DataFrame(rows), effects=[], methods=methods)


def test_ranks_set_each_perturbation_metric_against_the_truth():
    """Ranks by hand: 1 = best, lower-is-better metrics ranked upwards, means equal to 9
    decimals share a rank, the largest gap is the farthest metric rank from the truth's."""
    means = {  # method: (cf_correlation, deletion_auc, insertion_auc, road_deletion_auc)
        "a": (0.9, 0.30, 0.50, 0.40),
        "b": (0.5, 0.10, 0.70, 0.20),
        "b_twin": (0.5 + 1e-12, 0.10, 0.70 - 1e-12, 0.20),  # b up to round-off
        "c": (0.1, 0.20, 0.60, 0.10),
    }
    rows = [{"method": m, "scene": s, "cf_correlation": v[0], "cf_top": 0.0, "cf_regret": 0.0,
             "deletion_auc": v[1], "insertion_auc": v[2], "road_deletion_auc": v[3]}
            for m, v in means.items() for s in range(2)]
    ranks = _study(rows, list(means)).ranks()
    expected = {"truth": [1, 2.5, 2.5, 4], "deletion": [4, 1.5, 1.5, 3], "insertion": [4, 1.5, 1.5, 3],
                "ROAD": [4, 2.5, 2.5, 1], "largest gap": [3, 1, 1, 3]}
    assert list(ranks.columns) == list(expected)
    for column, values in expected.items():
        assert ranks[column].tolist() == values, column
    without_road = _study([{k: v for k, v in r.items() if k != "road_deletion_auc"} for r in rows], list(means))
    assert "ROAD" not in without_road.ranks()
    no_metric = [{k: v for k, v in r.items() if not k.endswith("_auc")} for r in rows]
    with pytest.raises(ec.InputError, match="no perturbation metric"):
        _study(no_metric, list(means)).ranks()


@pytest.mark.slow
def test_localisation_by_model_on_constructed_maps():
    """A map that is the object's mask points at it and holds all its energy on any model; a map
    on the image's corner never does; the model-blind edges are the same on both models."""
    from eclip_core.paper import p2

    trained, shuffled = ec.load_model(), ec.load_model("eclip-shapes-shuffled")
    scenes = shapes.eval_set(6, 1)
    masks = {trained.preprocess(s.image).numpy().tobytes(): s.objects[0].mask for s in scenes}

    def painted(kind: str):
        def fn(model, images, targets, *, departures=FAITHFUL):
            maps = []
            for x in images:
                mask = torch.from_numpy(masks[x.numpy().tobytes()].astype(np.float32))
                if kind == "corner":
                    mask = torch.zeros_like(mask)
                    mask[0, 0] = 1.0
                elif kind == "half":  # the mask over a quarter-height floor
                    mask = mask + 0.25
                maps.append(mask[None].expand(targets.shape[-2], -1, -1))
            return torch.stack(maps), torch.zeros(len(images), targets.shape[-2])
        return fn

    names = {"mask_map": "mask", "corner_map": "corner", "half_map": "half"}
    for name, kind in names.items():
        register(Method(name, painted(kind), f"constructed: {kind} (a test)"))
    try:
        table = p2.localisation_by_model({"trained": trained, "shuffled": shuffled}, scenes,
                                              [*names, "edges"])
    finally:
        for name in names:
            unregister(name)
    for model in ("trained", "shuffled"):
        for metric in ("pointing", "energy"):
            assert table.loc["mask_map", [f"{metric}_{model}", f"{metric}_{model}_low"]].tolist() == [1.0, 1.0]
            assert table.loc["corner_map", [f"{metric}_{model}", f"{metric}_{model}_high"]].tolist() == [0.0, 0.0]
    # the floor: pointing still 1, energy A * 1.25 / (A * 1.25 + (N - A) * 0.25) for a mask of A of N pixels
    areas = np.array([s.objects[0].mask.sum() for s in scenes], dtype=float)
    size = scenes[0].objects[0].mask.size
    energy = float(np.mean(areas * 1.25 / (areas * 1.25 + (size - areas) * 0.25)))
    half = table.loc["half_map"]
    assert half["pointing_trained"] == 1.0 and half["energy_trained"] == pytest.approx(energy, abs=1e-9)
    assert half["energy_trained_low"] < energy < half["energy_trained_high"]
    edges = table.loc["edges"]
    assert all(edges[f"{metric}_trained{end}"] == edges[f"{metric}_shuffled{end}"]
               for metric in ("pointing", "energy") for end in ("", "_low", "_high"))
    assert table.attrs["n"] == 6
    chance = float(np.mean([s.objects[0].mask.mean() for s in scenes]))
    kept = p2.above_chance(table, chance, "shuffled")
    assert "mask_map" in kept and "corner_map" not in kept
    with pytest.raises(ec.EclipError, match="no model 'random'"):
        p2.above_chance(table, chance, "random")
