"""What each departure costs (eclip_core.paper.dose): each arm's maps computed another way, the
reference matched by dose, the signs of the differences and the verdict words at their bounds."""

import numpy as np
import pandas as pd
import pytest
import torch

import eclip_core as ec
from eclip_core.departures import Departures
from eclip_core.errors import InputError
from eclip_core.explainers.eclip import attention_eclip
from eclip_core.inputs import to_model_input
from eclip_core.maps import upsample
from eclip_core.paper import counterfactual as cf
from eclip_core.paper import dose
from eclip_core.stats import relative_gap
from eclip_core.world import shapes


@pytest.fixture(scope="module")
def model():
    return ec.load_model("eclip-shapes")


@pytest.fixture(scope="module")
def scenes(model):
    return shapes.distractor_scenes(2, 5, size=shapes.world_size(model))


def texts_of(scenes):
    return [[f"a {o.phrase}" for o in s.objects] for s in scenes]


def test_arms_name_their_departures_and_refuse_what_has_no_dose():
    assert [a.label for a in dose.default_arms((1, 3))] == [
        "one head", "lambda", "keep-size x1", "keep-size x3", "all three x1", "all three x3"]
    published = dose.Arm("all three", 2)
    assert (published.heads, published.keep_size, published.loosened) == (1, True, True)
    assert dose.Arm("one head").departures == Departures(heads=1)
    assert dose.Arm("keep-size", 3).departures == Departures(keep_size=True)
    assert dose.Arm("lambda").departures == Departures() and dose.Arm("lambda").loosened
    assert dose.Arm("none", 4).label == "reference" and not dose.Arm("none", 4).departures.any
    with pytest.raises(InputError, match="no dose"):
        dose.Arm("one head", 2)
    with pytest.raises(InputError, match="departure must be one of"):
        dose.Arm("two heads")
    with pytest.raises(InputError, match="positive integer"):
        dose.Arm("keep-size", 0)


def test_enlarge_keeps_the_image_at_dose_one_and_scales_each_side(scenes):
    image = scenes[0].image
    assert dose.enlarge(image, 1) is image
    assert dose.enlarge(image, 3).size == (3 * image.width, 3 * image.height)


def test_reference_and_lambda_maps_are_grad_eclip_on_the_deployed_pass(model, scenes):
    images, texts = [s.image for s in scenes], texts_of(scenes)
    size = model.image_size
    reference = dose.arm_maps(model, images, texts, dose.Arm("none"))
    with_lambda = dose.arm_maps(model, images, texts, dose.Arm("lambda"))
    for maps, loosened in ((reference, False), (with_lambda, True)):
        expected = upsample(ec.explain(model, images, texts, "grad_eclip", loosened=loosened).maps.double(), size)
        assert torch.allclose(maps, expected, atol=1e-12)
    assert not torch.allclose(reference, with_lambda)


def test_one_head_and_all_three_at_native_size_match_the_published_mode(model, scenes):
    images, texts = [s.image for s in scenes], texts_of(scenes)
    size = model.image_size
    published = ec.explain(model, images, texts, "grad_eclip", "reference").maps.double()
    assert torch.allclose(dose.arm_maps(model, images, texts, dose.Arm("all three", 1)), upsample(published, size),
                          atol=1e-12)
    one_head = ec.explain(model, images, texts, "grad_eclip", "reference", loosened=False).maps.double()
    assert torch.allclose(dose.arm_maps(model, images, texts, dose.Arm("one head")), upsample(one_head, size),
                          atol=1e-12)


def test_keep_size_maps_are_the_enlarged_scene_explained_at_its_own_grid(model, scenes):
    """Another route (Attention-ECLIP, equal by the paper's identity) on the enlarged scene at
    keep-size, placed on the model's input pixels."""
    images, texts = [s.image for s in scenes], texts_of(scenes)
    big = [dose.enlarge(im, 3) for im in images]
    x, _ = model.prepare(big, keep_size=True)
    assert tuple(x.shape[-2:]) == tuple(3 * s for s in model.image_size)
    targets, _ = model.paired_text_embeddings(texts, len(big))
    maps, _ = attention_eclip(model, x, targets, departures=Departures(keep_size=True), loosened=False)
    expected = torch.stack([to_model_input(m.double(), im.size, model.preprocess) for m, im in zip(maps, big)])
    got = dose.arm_maps(model, images, texts, dose.Arm("keep-size", 3))
    assert got.shape == expected.shape
    assert relative_gap(got, expected) < 1e-5  # two routes in the model's float32
    # the reference at dose 3 sees the enlarged scene through the model's preprocess: another map
    reference3 = dose.arm_maps(model, images, texts, dose.Arm("none", 3))
    assert not torch.allclose(got, reference3)


def test_keep_size_maps_of_an_oblong_image_land_on_the_pixels_the_model_sees(model, scenes):
    """An image that is not square: the keep-size map covers all of it, the model sees its
    centre crop; the map is placed as the preprocess places the pixels."""
    image = scenes[0].image.crop((0, 8, 64, 56))  # 64 wide, 48 high
    texts = [["a red circle"]]
    got = dose.arm_maps(model, [image], texts, dose.Arm("keep-size", 2))
    big = dose.enlarge(image, 2)
    x, _ = model.prepare([big], keep_size=True)
    targets, _ = model.paired_text_embeddings(texts, 1)
    maps, _ = attention_eclip(model, x, targets, departures=Departures(keep_size=True), loosened=False)
    expected = to_model_input(maps[0].double(), big.size, model.preprocess)[None]
    assert got.shape[-2:] == tuple(model.image_size)
    assert relative_gap(got, expected) < 1e-5
    stretched = upsample(maps.double(), model.image_size)  # the whole image squeezed onto the input
    assert relative_gap(got, stretched) > 1e-2


@pytest.fixture(scope="module")
def small_study(model, scenes):
    known = cf.truth(model, scenes, pairs=True)
    arms = [dose.Arm("keep-size", 1), dose.Arm("keep-size", 2), dose.Arm("one head")]
    return dose.dose_study(model, scenes, arms=arms, known=known, steps=4, road_steps=2), known


def test_a_study_measures_every_arm_against_the_reference_of_its_dose(small_study):
    study, known = small_study
    rows = study.per_item
    assert set(rows["arm"]) == {"reference", "keep-size x1", "keep-size x2", "one head"}
    assert sorted(rows.loc[rows["arm"] == "reference", "dose"].unique()) == [1, 2]
    assert (rows["arm"] == "reference").sum() == 2 * len(known.targets)
    for arm in study.arms:
        assert (rows["arm"] == arm.label).sum() == len(known.targets)
    # the dose-1 keep-size input is the model's own: nothing departs, every difference is 0
    control = study.table().loc["keep-size x1"]
    assert control["rho"] == pytest.approx(1.0)
    for name in ("truth", "deletion", "insertion", "ROAD"):
        assert control[name] == 0 and control[f"{name}_verdict"] == "equivalent"
    # the Shapley correlation is the map's shares against the truth's values
    first = rows[rows["arm"] == "one head"].iloc[0]
    assert -1 <= first["shapley_correlation"] <= 1 and first["item"] == 0


def constructed(differences, column="shapley_correlation", reference_dose2=0.0):
    """A study whose arm 'keep-size x2' differs from its dose-2 reference by ``differences`` (one
    item per scene), the dose-1 reference being far off (a study that read the wrong dose would
    see it)."""
    rows = []
    for i, d in enumerate(differences):
        rows.append({"arm": "reference", "dose": 1, "scene": i, "item": i, "rho": 1.0, column: 100.0})
        rows.append({"arm": "reference", "dose": 2, "scene": i, "item": i, "rho": 1.0, column: reference_dose2})
        rows.append({"arm": "keep-size x2", "dose": 2, "scene": i, "item": i, "rho": 0.5,
                     column: reference_dose2 + d})
    return dose.DoseStudy(pd.DataFrame(rows), [dose.Arm("keep-size", 2)])


def test_differences_are_signed_so_that_positive_is_better():
    arm = dose.Arm("keep-size", 2)
    rng = np.random.default_rng(0)
    shift = rng.normal(0.3, 0.05, 40)
    truth = constructed(shift)
    assert truth.difference(arm, "shapley_correlation")[0].estimate == pytest.approx(shift.mean())
    # deletion: lower is better, so an arm whose AUC is lower explains better
    deletion = constructed(-shift, "deletion_auc", reference_dose2=0.5)
    assert deletion.difference(arm, "deletion_auc")[0].estimate == pytest.approx(shift.mean())
    assert deletion.verdict(arm, "deletion_auc") == "better"


@pytest.mark.parametrize("centre, spread, expected", [
    (-0.3, 0.05, "worse"), (-0.03, 0.01, "slightly worse"), (0.0, 0.01, "equivalent"),
    (0.03, 0.01, "slightly better"), (0.3, 0.05, "better"), (0.0, 0.5, "not shown"),
    (0.0, 0.4, "equivalent")])  # 90% interval inside the margin, the 95% one not: TOST reads the 90%
def test_verdict_words_at_the_margin(centre, spread, expected):
    rng = np.random.default_rng(1)
    study = constructed(centre + spread * rng.standard_normal(60))
    assert study.verdict(dose.Arm("keep-size", 2), "shapley_correlation") == expected


def test_the_margins_are_the_books_fixed_ones():
    assert dose.MARGINS == {"shapley_correlation": 0.1, "deletion_auc": 0.05, "insertion_auc": 0.05,
                            "road_deletion_auc": 0.05}
    # a difference of 0.07 +- tiny is within the truth's margin, beyond the AUCs'
    values = 0.07 + 0.001 * np.random.default_rng(2).standard_normal(40)
    assert constructed(values).verdict(dose.Arm("keep-size", 2), "shapley_correlation") == "slightly better"
    auc = constructed(-values, "deletion_auc", reference_dose2=0.5)
    assert auc.verdict(dose.Arm("keep-size", 2), "deletion_auc") == "better"


def test_interval_level_is_the_one_asked():
    study = constructed(np.random.default_rng(3).normal(0, 1, 50))
    wide = study.difference(dose.Arm("keep-size", 2), "shapley_correlation", 0.95)[0]
    narrow = study.difference(dose.Arm("keep-size", 2), "shapley_correlation", 0.80)[0]
    assert wide.low < narrow.low < narrow.high < wide.high and wide.level == 0.95


def test_trend_reads_a_cost_growing_with_the_dose():
    rows = []
    for i in range(30):
        for m in (1, 2, 3, 4):
            rows.append({"arm": "reference", "dose": m, "scene": i // 2, "item": i, "rho": 1.0,
                         "shapley_correlation": 0.5})
            rows.append({"arm": f"keep-size x{m}", "dose": m, "scene": i // 2, "item": i, "rho": 1.0,
                         "shapley_correlation": 0.5 - 0.1 * m + 0.01 * np.sin(i + m)})
    study = dose.DoseStudy(pd.DataFrame(rows), [dose.Arm("keep-size", m) for m in (1, 2, 3, 4)])
    growth = dose.trend(study, "keep-size")
    assert growth.estimate == pytest.approx(-1.0) and growth.n == 15  # scenes, not items
    with pytest.raises(InputError, match="3 doses"):
        dose.trend(study, "one head")


def test_a_study_refuses_what_it_cannot_measure(model, scenes):
    with pytest.raises(InputError, match="at least one arm"):
        dose.dose_study(model, scenes, arms=[])
    with pytest.raises(InputError, match="each arm once"):
        dose.dose_study(model, scenes, arms=[dose.Arm("lambda"), dose.Arm("lambda")])
