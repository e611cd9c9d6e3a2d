"""P2's machinery on constructed cases: Shapley values by hand, the tests' statistics and verdict
rules, the verdict table, and each rule shown able to fail."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

import eclip_core as ec
from eclip_core.paper import p2
from eclip_core.paper.counterfactual import TRUTH, contrast, described, shapley_values
from eclip_core.world import shapes

pytestmark = pytest.mark.usefixtures("one_thread")


def game(value):
    """Removal scores of a 3-object scene for one text from a value of the present coalition."""
    full = frozenset(range(3))
    return {full - frozenset(c): np.array([value(frozenset(c))])
            for r in range(4) for c in itertools.combinations(range(3), r)}


def test_shapley_values_by_hand():
    """An additive game gives each object its own worth; two objects that stand in for each other
    (either one carries the score) share it equally where a single removal sees nothing; the
    values always sum to the scene's score minus its background's."""
    additive = shapley_values(game(lambda c: sum({0: 0.5, 1: 0.2, 2: -0.1}[i] for i in c)), 3)
    assert additive == pytest.approx([0.5, 0.2, -0.1])
    either = game(lambda c: 1.0 if c & {0, 1} else 0.0)
    assert shapley_values(either, 3) == pytest.approx([0.5, 0.5, 0.0])
    full, empty = either[frozenset()][0], either[frozenset({0, 1, 2})][0]
    assert full - either[frozenset({0})][0] == 0.0  # the single removal of 0 shows no effect
    both = game(lambda c: 1.0 if {0, 1} <= c else 0.0)  # both needed: each half again
    assert shapley_values(both, 3) == pytest.approx([0.5, 0.5, 0.0])
    asymmetric = game(lambda c: 0.3 * (0 in c) + 0.6 * ({0, 2} <= c))
    phi = shapley_values(asymmetric, 3)
    assert phi == pytest.approx([0.3 + 0.3, 0.0, 0.3]) and phi.sum() == pytest.approx(full - empty + 0.9 - 1.0)


def test_contrast_is_the_named_mean_minus_the_background_mean():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    other = np.zeros((8, 8), bool)
    other[4:, 4:] = True
    saliency = torch.zeros(8, 8, dtype=torch.float64)
    saliency[:4, :4] = 3.0
    saliency[4:, 4:] = 10.0  # another object's pixels count neither as named nor as background
    saliency[:4, 4:] = 1.0
    # background: the 32 pixels outside both objects, 16 of them at 1
    assert contrast(saliency, mask, mask | other) == pytest.approx(3.0 - 0.5)


def test_the_objects_a_wrong_answer_describes():
    scene = shapes.distractor_scenes(1)[0]  # a red circle, a red star, a white circle
    assert described(scene, "a red cross") == (0, 1)
    assert described(scene, "a white star") == (1, 2)
    assert described(scene, "a green triangle") == ()


def rows(values: dict[str, np.ndarray], column: str = p2.QUALITY) -> pd.DataFrame:
    """Rows of a study: per method, (scenes,) values, one row per scene."""
    return pd.DataFrame([{"method": m, "scene": s, column: float(v)} for m, vs in values.items()
                         for s, v in enumerate(vs)])


def noisy(mean: float, n: int = 60, seed: int = 0, spread: float = 0.1) -> np.ndarray:
    return mean + spread * np.random.default_rng(seed).standard_normal(n)


def test_agreement_is_the_least_over_the_models_with_verdicts_at_the_thresholds():
    """good agrees with both models (passes); blind agrees with one only (its least fails); weak
    agrees at 0.1 (fails: below 0.2); unsure, around 0.1 with a wide spread, is not shown."""
    one = rows({"good": noisy(0.6), "blind": noisy(0.6, seed=1), "weak": noisy(0.1, seed=2)})
    two = rows({"good": noisy(0.5, seed=4), "blind": noisy(0.0, seed=5), "weak": noisy(0.1, seed=6)})
    test = p2.agreement_test("t", "?", {"a": one, "b": two}, ["good", "blind", "weak"], n_boot=500)
    t = test.table
    assert t.loc["good", "estimate"] == pytest.approx(min(noisy(0.6).mean(), noisy(0.5, seed=4).mean()))
    assert list(t["verdict"]) == ["passes", "fails", "fails"]
    assert (t["low"] <= t["estimate"]).all() and (t["estimate"] <= t["high"]).all()
    single = p2.agreement_test("t", "?", {"a": one}, ["good", "blind"], n_boot=500)
    assert single.table.loc["blind", "verdict"] == "passes"  # one model alone cannot tell it apart
    unsure = p2.agreement_test("t", "?", {"a": rows({"unsure": noisy(0.1, seed=3, spread=1.2)})}, ["unsure"],
                               n_boot=500)
    assert unsure.table.loc["unsure", "verdict"] == "not shown"


def test_holm_can_leave_a_verdict_unshown_that_one_test_alone_would_give():
    """Six explainers with the same marginal evidence: alone each would pass (p about 0.02),
    together Holm multiplies the smallest by six and none is shown."""
    marginal = noisy(0.07, n=60, seed=99, spread=0.5)
    alone = p2.agreement_test("t", "?", {"a": rows({"m": marginal})}, ["m"], n_boot=400)
    many = p2.agreement_test("t", "?", {"a": rows({f"m{i}": marginal for i in range(6)})},
                             [f"m{i}" for i in range(6)], n_boot=400)
    raw = p2.p_above(alone.replicates["m"], p2.AGREES)
    assert raw < p2.ALPHA <= 6 * raw and alone.table.loc["m", "verdict"] == "passes"
    assert np.allclose(many.table["p_pass"], 6 * raw) and (many.table["verdict"] == "not shown").all()


def test_the_errors_test_reads_how_the_map_moves_between_the_two_answers():
    """Per scene two targets, the wrong answer first: a map whose shares move as the values do
    agrees (1), a map the same for both answers says nothing (0) and fails."""
    out = []
    for scene in range(30):
        rng = np.random.default_rng(scene)
        wrong, right = rng.normal(size=3), rng.normal(size=3)
        for k, values in enumerate((wrong, right)):
            out.append({"method": "follows", "scene": scene, "target_index": 2 * scene + k,
                        "shares": tuple(values + 5), "shapley": tuple(values)})
            out.append({"method": "blind", "scene": scene, "target_index": 2 * scene + k,
                        "shares": (0.2, 0.3, 0.5), "shapley": tuple(values)})
    test = p2.errors_test(pd.DataFrame(out), ["follows", "blind"], n_boot=300)
    assert test.table.loc["follows", "estimate"] == pytest.approx(1.0)
    assert test.table.loc["blind", "estimate"] == 0.0
    assert list(test.table["verdict"]) == ["passes", "fails"]


def test_the_shuffled_test_reads_contrast_left_and_needs_the_trained_test():
    """faithful: contrast falls to 1% and agrees on the trained model (passes); keeps: contrast
    kept (fails); mute: contrast falls but never agreed with the trained model (fails)."""
    n = 40
    trained = pd.concat([
        rows({"faithful": noisy(0.6, n), "keeps": noisy(0.6, n, 1), "mute": noisy(0.0, n, 2)}),
    ]).assign(contrast=np.concatenate([noisy(1.0, n, 3), noisy(1.0, n, 4), noisy(1.0, n, 5)]))
    shuffled = trained.copy()
    shuffled["contrast"] = np.concatenate([noisy(0.01, n, 6, 0.001), noisy(0.9, n, 7), noisy(0.01, n, 8, 0.001)])
    test = p2.shuffled_test(trained, shuffled, ["faithful", "keeps", "mute"], n_boot=300)
    assert test.table.loc["faithful", "estimate"] == pytest.approx(noisy(0.01, n, 6, 0.001).mean()
                                                                   / noisy(1.0, n, 3).mean())
    assert list(test.table["verdict"]) == ["passes", "fails", "fails"]
    # unsure: its contrast vanishes, but its agreement with the trained model is not shown: nor is this test
    unsure = rows({"unsure": noisy(0.1, n, 9, spread=1.2)}).assign(contrast=noisy(1.0, n, 10))
    quiet = unsure.assign(contrast=noisy(0.01, n, 11, 0.001))
    assert p2.agreement_test("t", "?", {"a": unsure}, ["unsure"], n_boot=300).table.loc["unsure", "verdict"] \
        == "not shown"
    assert p2.shuffled_test(unsure, quiet, ["unsure"], n_boot=300).table.loc["unsure", "verdict"] == "not shown"


def test_the_verdict_table_reads_only_calibrated_tests():
    """P2 holds where every calibrated test passes; a test whose controls misbehave is left out."""
    def test(verdicts):
        table = pd.DataFrame({"verdict": verdicts}, index=["x", "y", "occlusion", "edges"])
        return p2.P2Test("t", "?", table, {}, ["trained"])

    good = test(["passes", "passes", "passes", "fails"])
    bad = test(["fails", "passes", "fails", "passes"])  # its controls the wrong way round
    study = p2.P2Study({"good": good, "bad": bad}, ["x", "y", "occlusion", "edges"], 0, 10)
    assert good.calibrated and not bad.calibrated
    verdicts = study.verdicts()
    assert verdicts.attrs["calibrated"] == ["good"]
    assert verdicts.loc["x", "P2"] == "holds"  # its failure on the uncalibrated test is not read
    other = p2.P2Study({"good": good, "also": test(["not shown", "fails", "passes", "fails"])},
                       ["x", "y", "occlusion", "edges"], 0, 10).verdicts()
    assert other.loc["x", "P2"] == "not shown" and other.loc["y", "P2"] == "fails"
    unshown = test(["passes", "passes", "passes", "not shown"])  # a negative control must fail, not just not pass
    assert not unshown.calibrated
    holds = p2.stated_verdicts_hold(study, {"x": {"bad": "fails", "good": "passes"}})
    assert holds == {"x: bad fails": False, "x: good passes": True}  # an uncalibrated test's verdict is not read


def test_published_minus_faithful_is_equivalent_only_when_the_90_percent_interval_is_inside():
    """Replicates of the difference spread evenly over [-0.11, 0.11]: the 90% interval (about
    +-0.099) lies inside the margin 0.1, the 95% one (+-0.1045) does not; TOST at 5% reads the
    90% one, so the two are equivalent, and not within a margin of 0.09."""
    spread = np.linspace(-0.11, 0.11, 1001)
    table = pd.DataFrame({"estimate": [0.5, 0.5], "n": [40, 40]}, index=["grad_eclip", "grad_eclip:reference"])
    test = p2.P2Test("trained", "?", table, {"grad_eclip": np.zeros_like(spread), "grad_eclip:reference": spread},
                     ["trained"])
    study = p2.P2Study({"trained": test}, ["grad_eclip", "grad_eclip:reference"], 0, 40)
    gap = study.published_minus_faithful()
    assert gap.loc["trained", "equivalent"]
    assert gap.loc["trained", "difference_low"] == pytest.approx(-0.1045) and gap.loc["trained", "difference"] == 0
    assert not study.published_minus_faithful(margin=0.09).loc["trained", "equivalent"]


def test_the_paired_difference_uses_the_same_resamples():
    a, b = noisy(0.6, 50), noisy(0.6, 50) + 0.05
    test = p2.agreement_test("t", "?", {"m": rows({"a": a, "b": b})}, ["a", "b"], n_boot=300)
    diff = test.difference("b", "a")
    assert diff.estimate == pytest.approx(0.05) and diff.high - diff.low == pytest.approx(0.0, abs=1e-12)


def test_the_model_errors_are_wrong_answers_then_right_ones():
    model = ec.load_model()
    known = p2.model_errors(model, shapes.distractor_scenes(60), minimum=1)
    prompts = [t.prompt for t in known.targets]
    assert len(prompts) % 2 == 0 and len(known.scenes) == len(prompts) // 2
    for scene, (wrong, right) in zip(known.scenes, zip(prompts[::2], prompts[1::2])):
        present = {f"a {o.phrase}" for o in scene.objects}
        assert wrong not in present and right in present
    with pytest.raises(ec.InputError, match="enlarge the error pool"):
        p2.model_errors(model, shapes.distractor_scenes(3), minimum=5)


def test_randomised_models_leave_the_model_untouched():
    model = ec.load_model()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    twins = p2.randomised_models(model, seed=1)
    assert list(twins) == ["randomised head", "randomised all"]
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    head, every = (twin.module.state_dict() for twin in twins.values())
    assert not torch.equal(head["visual.proj"], before["visual.proj"])
    assert torch.equal(head["visual.conv1.weight"], before["visual.conv1.weight"])
    assert not torch.equal(every["visual.conv1.weight"], before["visual.conv1.weight"])


def test_the_controls_are_named_and_the_truth_row_is_faithful_by_construction():
    assert set(p2.POSITIVE_CONTROLS) >= {"occlusion", "integrated_gradients", "direct_contributions", TRUTH}
    assert set(p2.NEGATIVE_CONTROLS) == {"edges", "centre", "random"}
    assert all(m in ec.METHODS for m in p2.NEGATIVE_CONTROLS)


VERDICT_CLAIM = r"((?:`[\w:]+`(?:,\s*|\s+and\s+))*`[\w:]+`)\s+\*\*(holds|fails|not shown)\*\*"
RETIRED_WORDS = ("aligned", "no evidence", "reversed")


def prose_verdicts(markdown: str) -> dict[str, str]:
    """Every ``\\`method\\`, ... and \\`method\\` **verdict**`` claim of a chapter's prose."""
    import re

    claims: dict[str, str] = {}
    for names, verdict in re.findall(VERDICT_CLAIM, markdown):
        for name in re.findall(r"`([\w:]+)`", names):
            claims[name] = verdict
    return claims


def chapter_markdown(name: str) -> str:
    import json
    from pathlib import Path

    cells = json.loads((Path(__file__).parents[1] / "notebooks" / name).read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def test_the_prose_reader_finds_lists_and_fails_on_a_changed_word():
    text = "`a`, `b` and `c` **holds**. Then `d` **fails**, `e:reference` **not shown**; `f` is **fine**."
    assert prose_verdicts(text) == {"a": "holds", "b": "holds", "c": "holds", "d": "fails",
                                    "e:reference": "not shown"}


@pytest.mark.parametrize("chapter", ["05_principles.ipynb", "08_ground_truth.ipynb"])
def test_the_chapters_words_are_the_stated_verdicts(chapter):
    """What chapters 5 and 8 say of an explainer's P2 verdict in words is what p2.P2_STATED
    states (and chapter 5 says it of every explainer it names); the retired verdict words of the
    old tests are not used."""
    text = chapter_markdown(chapter)
    claims = prose_verdicts(text)
    stated = p2.stated_table()["P2"]
    for method, verdict in claims.items():
        assert method in stated.index, f"{chapter} states a verdict on {method}, which P2_STATED does not"
        assert verdict == stated[method], f"{chapter}: {method} **{verdict}**, stated {stated[method]}"
    if chapter.startswith("05"):
        assert len(claims) >= 12
    import re

    assert not [w for w in RETIRED_WORDS if re.search(rf"\b{w}\b", text, re.IGNORECASE)], chapter
