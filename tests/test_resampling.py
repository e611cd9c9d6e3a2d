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
