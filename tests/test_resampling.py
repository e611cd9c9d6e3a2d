"""Every conclusion the book states holds on other samples: chapters' studies rerun on
held-out samples disjoint from the book's (other seeds of the held-out stream)."""

import pytest

import eclip_core as ec
from eclip_core.paper import misalignment, p1, p2

pytestmark = pytest.mark.slow  # `make check` leaves it out; `make test` runs it


@pytest.fixture(scope="module")
def bundle():
    return ec.load_model()


@pytest.fixture(scope="module")
def p2_studies(bundle):
    """P2 studies by sample, each measured once for the tests that read it."""
    cache: dict[int, p2.P2Study] = {}

    def study(sample: int) -> p2.P2Study:
        if sample not in cache:
            cache[sample] = p2.p2_study(bundle, list(p2.P2_STATED), sample=sample)
        return cache[sample]

    return study


@pytest.mark.parametrize("sample", [1, 2, 3])
def test_p2_verdicts_hold_on_disjoint_samples(p2_studies, sample):
    study = p2_studies(sample)
    conclusions = p2.p2_conclusions(study)
    print(f"sample {sample}: {len(study.pairs)} pairs;", study.table[["gap", "gap_low", "gap_high"]].round(3))
    assert len(conclusions) == len(p2.P2_STATED)
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


def test_cascade_conclusions_hold_on_disjoint_samples(bundle):
    methods = list(p2.CASCADE_DECORRELATED) + ["rollout", "gae", "edges"]
    table = p2.cascade_study(bundle, methods, samples=(3, 4, 5))
    conclusions = p2.cascade_conclusions(table)
    assert len(conclusions) == len(p2.CASCADE_DECORRELATED) + 2
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


def test_conclusions_can_fail(p2_studies, monkeypatch):
    """A verdict the data contradict is reported false: the checks are not vacuous."""
    study = p2_studies(1)
    flipped = {"rollout": "aligned", "gae": "no evidence"}
    verdicts = p2.p2_verdicts(study.table)
    assert all(verdicts[m] != v for m, v in flipped.items())
    monkeypatch.setattr(p2, "P2_STATED", {**p2.P2_STATED, **flipped})
    conclusions = p2.p2_conclusions(study)
    assert [claim for claim, holds in conclusions.items() if not holds] == [
        f"{m}: {v}" for m, v in p2.P2_STATED.items() if m in flipped]


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
