"""Every conclusion the book states holds on other samples: chapters' studies rerun on
held-out samples disjoint from the book's (other seeds of the held-out stream)."""

import pytest

import eclip_core as ec
from eclip_core.paper import misalignment, p1

pytestmark = pytest.mark.slow  # `make check` leaves it out; `make test` runs it


@pytest.fixture(scope="module")
def bundle():
    return ec.load_model()


@pytest.mark.parametrize("sample", [1, 2, 3])
def test_misalignment_conclusions_hold_on_disjoint_samples(bundle, sample):
    study = misalignment.misalignment_study(bundle, sample=sample, protocols=("ours",))
    conclusions = misalignment.misalignment_conclusions(study)
    print(f"sample {sample}: rho {study.correlation}", study.differences.round(3))
    assert len(conclusions) == 4
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


@pytest.mark.parametrize("sample", [1, 2, 3])
def test_p1_conclusions_hold_on_disjoint_samples(bundle, sample):
    study = p1.p1_study(bundle, sample=sample)
    conclusions = p1.p1_conclusions(study)
    print(f"sample {sample}:", study.table.round(4))
    assert len(conclusions) == 5
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


def test_p1_conclusions_can_fail(bundle):
    """Each chapter-3 conclusion reads its own cell: contradicting it there makes it false."""
    study = p1.p1_study(bundle, sample=1, n=40)
    assert all(p1.p1_conclusions(study).values())
    edits = {("native", "keep_size", "max_drift"): 1e-3, ("native", "one_head", "mean_drift_low"): 1e-4,
             ("x2", "keep_size", "mean_drift_low"): 0.0, ("x2", "reference", "agreement_high"): 1.0,
             ("x2", "reference", "accuracy_change_high"): 0.01}
    for (size, variant, column), value in edits.items():
        table = study.table.copy()
        table.loc[(size, variant), column] = value
        verdicts = p1.p1_conclusions(p1.P1Study(study.measures, table, study.n))
        assert sum(not v for v in verdicts.values()) == 1, (size, variant, column)


@pytest.mark.parametrize("sample", [1, 2])
def test_dose_conclusions_hold_on_disjoint_samples(bundle, sample):
    """Chapter 8's stated verdicts on what the departures cost, at the largest dose, on other
    samples of 32 scenes (the pixel metrics' ROAD, which no verdict reads, left out)."""
    from eclip_core.paper import dose, verdicts
    from eclip_core.world import shapes

    scenes = shapes.distractor_scenes(32, sample, size=shapes.world_size(bundle))
    study = dose.dose_study(bundle, scenes, arms=[dose.Arm("keep-size", 4), dose.Arm("all three", 4)],
                            road=False, seed=sample)
    found = verdicts.dose_findings(study, "eclip-shapes")
    for f in found:
        print(f"sample {sample}: {f.key} {f.evidence()} -> {f.verdict}")
    assert {f.key for f in found} == {"b.cost.keep-size", "b.cost.published", "book.deletion-sees-cost"}
    assert all(f.verdict == verdicts.STATED[f.key] for f in found)


def test_text_verdict_holds_on_a_disjoint_sample(bundle):
    """Chapter 6's stated verdict on the text branch, on another sample of 24 captions."""
    from eclip_core.paper import text_truth, verdicts
    from eclip_core.world import shapes

    scenes = shapes.eval_set(24, (2, 3), seed=7)
    frame = text_truth.text_agreement(bundle, [s.caption for s in scenes], [s.image for s in scenes])
    (found,) = verdicts.text_findings(text_truth.agreement_intervals(frame), "eclip-shapes")
    print(found)
    assert found.verdict == verdicts.STATED["book.text"]
