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
    ranks = _study(rows, list(means)).ranks("cf_correlation")
    expected = {"truth": [1, 2.5, 2.5, 4], "deletion": [4, 1.5, 1.5, 3], "insertion": [4, 1.5, 1.5, 3],
                "ROAD": [4, 2.5, 2.5, 1], "largest gap": [3, 1, 1, 3]}
    assert list(ranks.columns) == list(expected)
    for column, values in expected.items():
        assert ranks[column].tolist() == values, column
    without_road = _study([{k: v for k, v in r.items() if k != "road_deletion_auc"} for r in rows], list(means))
    assert "ROAD" not in without_road.ranks("cf_correlation")
    no_metric = [{k: v for k, v in r.items() if not k.endswith("_auc")} for r in rows]
    with pytest.raises(ec.InputError, match="no perturbation metric"):
        _study(no_metric, list(means)).ranks("cf_correlation")




def test_evidence_on_named_counts_by_prompt_size_and_redundancy_compares_the_argmaxes():
    """By hand: scene 0 has a one-object prompt whose largest Shapley value is on it, and a pair
    prompt whose is not; scene 1 a one-object prompt whose is not. Redundancy: the single
    removals' argmax differs from the Shapley argmax in one row of three."""
    rows = [
        {"method": "m", "scene": 0, "target_index": 0, "named": "0", "evidence_on_named": 1.0,
         "single": (0.3, 0.0, 0.0), "shapley": (0.3, 0.1, 0.0)},
        {"method": "m", "scene": 0, "target_index": 1, "named": "0+1", "evidence_on_named": 0.0,
         "single": (0.0, 0.0, 0.2), "shapley": (0.1, 0.1, 0.2)},
        {"method": "m", "scene": 1, "target_index": 2, "named": "1", "evidence_on_named": 0.0,
         "single": (0.0, 0.0, 0.1), "shapley": (0.3, 0.0, 0.1)},
    ]
    study = _study(rows, ["m"])
    assert study.evidence_on_named().estimate == pytest.approx(1 / 3)
    assert study.evidence_on_named(objects=1).estimate == pytest.approx(1 / 2)
    assert study.evidence_on_named(objects=2).estimate == 0.0
    with pytest.raises(ec.InputError, match="names 3"):
        study.evidence_on_named(objects=3)
    assert study.redundancy().estimate == pytest.approx(1 / 3)


def test_paired_difference_between_two_explainers_is_per_item_and_resamples_scenes():
    """a - b on the same items: by hand 0.1 on every item, so the interval is the point and
    equivalence within 0.2 holds but not within 0.05; a difference that varies across scenes
    gets an interval from resampling scenes (2 scenes: the replicates' means are 0.0, 0.1, 0.2)."""
    def rows(delta):
        out = []
        for j, (scene, d) in enumerate(zip([0, 0, 1, 1], delta)):
            out += [{"method": "a", "scene": scene, "target_index": j, "shapley_correlation": 0.5 + d},
                    {"method": "b", "scene": scene, "target_index": j, "shapley_correlation": 0.5}]
        return out

    constant = _study(rows([0.1] * 4), ["a", "b"])
    wide, same = constant.paired("a", "b", margin=0.2)
    assert (wide.estimate, wide.low, wide.high, wide.n) == pytest.approx((0.1, 0.1, 0.1, 2))
    assert same is True and constant.paired("a", "b", margin=0.05)[1] is False
    assert constant.paired("b", "a")[0].estimate == pytest.approx(-0.1)  # the sign: first minus second
    varying, _ = _study(rows([0.0, 0.0, 0.2, 0.2]), ["a", "b"]).paired("a", "b")
    assert varying.estimate == pytest.approx(0.1) and varying.low == pytest.approx(0.0)
    assert varying.high == pytest.approx(0.2) and varying.level == 0.95
    with pytest.raises(ec.InputError, match="both methods"):
        constant.paired("a", "c")


def test_paired_equivalence_reads_the_90_percent_interval():
    """Twenty scenes of spread differences: a margin between the 90% and the 95% interval's
    farthest bound is equivalence (TOST at 5% reads the 90% interval), one beyond both is too,
    one inside both is not."""
    from eclip_core.stats import bootstrap

    rng = np.random.default_rng(7)
    delta = rng.normal(0.02, 0.1, size=20)
    rows = [r for scene, d in enumerate(delta) for r in (
        {"method": "a", "scene": scene, "target_index": scene, "shapley_correlation": 0.5 + d},
        {"method": "b", "scene": scene, "target_index": scene, "shapley_correlation": 0.5})]
    study = _study(rows, ["a", "b"])
    wide, narrow = bootstrap(delta, level=0.95), bootstrap(delta, level=0.90)
    far95, far90 = max(-wide.low, wide.high), max(-narrow.low, narrow.high)
    assert far90 < far95
    assert study.paired("a", "b")[0].low == pytest.approx(wide.low)
    assert study.paired("a", "b", margin=(far90 + far95) / 2)[1] is True
    assert study.paired("a", "b", margin=far90 * 0.99)[1] is False
