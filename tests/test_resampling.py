"""Every conclusion the book states holds on other samples: chapters' studies rerun on
held-out samples disjoint from the book's (other seeds of the held-out stream)."""

import pytest

import eclip_core as ec
from eclip_core import studies

pytestmark = pytest.mark.slow  # `make check` leaves it out; `make test` runs it


@pytest.fixture(scope="module")
def bundle():
    return ec.load_model()


@pytest.fixture(scope="module")
def p2_studies(bundle):
    """P2 studies by sample, each measured once for the tests that read it."""
    cache: dict[int, studies.P2Study] = {}

    def study(sample: int) -> studies.P2Study:
        if sample not in cache:
            cache[sample] = studies.p2_study(bundle, list(studies.P2_STATED), sample=sample)
        return cache[sample]

    return study


@pytest.mark.parametrize("sample", [1, 2, 3])
def test_p2_verdicts_hold_on_disjoint_samples(p2_studies, sample):
    study = p2_studies(sample)
    conclusions = studies.p2_conclusions(study)
    print(f"sample {sample}: {len(study.pairs)} pairs;", study.table[["gap", "gap_low", "gap_high"]].round(3))
    assert len(conclusions) == len(studies.P2_STATED)
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


def test_cascade_conclusions_hold_on_disjoint_samples(bundle):
    methods = list(studies.CASCADE_DECORRELATED) + ["rollout", "gae", "edges"]
    table = studies.cascade_study(bundle, methods, samples=(3, 4, 5))
    conclusions = studies.cascade_conclusions(table)
    assert len(conclusions) == len(studies.CASCADE_DECORRELATED) + 2
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


def test_conclusions_can_fail(p2_studies, monkeypatch):
    """A verdict the data contradict is reported false: the checks are not vacuous."""
    study = p2_studies(1)
    flipped = {"rollout": "aligned", "gae": "no evidence"}
    verdicts = studies.p2_verdicts(study.table)
    assert all(verdicts[m] != v for m, v in flipped.items())
    monkeypatch.setattr(studies, "P2_STATED", {**studies.P2_STATED, **flipped})
    conclusions = studies.p2_conclusions(study)
    assert [claim for claim, holds in conclusions.items() if not holds] == [
        f"{m}: {v}" for m, v in studies.P2_STATED.items() if m in flipped]


@pytest.mark.parametrize("sample", [1, 2, 3])
def test_misalignment_conclusions_hold_on_disjoint_samples(bundle, sample):
    study = studies.misalignment_study(bundle, sample=sample, protocols=("ours",))
    conclusions = studies.misalignment_conclusions(study)
    print(f"sample {sample}: rho {study.correlation}", study.differences.round(3))
    assert len(conclusions) == 4
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


@pytest.mark.parametrize("sample", [1, 2, 3])
def test_p1_conclusions_hold_on_disjoint_samples(bundle, sample):
    study = studies.p1_study(bundle, sample=sample)
    conclusions = studies.p1_conclusions(study)
    print(f"sample {sample}:", study.table.round(4))
    assert len(conclusions) == 5
    assert all(conclusions.values()), {k: v for k, v in conclusions.items() if not v}


def test_p1_conclusions_can_fail(bundle):
    """Each chapter-3 conclusion reads its own cell: contradicting it there makes it false."""
    study = studies.p1_study(bundle, sample=1, n=40)
    assert all(studies.p1_conclusions(study).values())
    edits = {("native", "keep_size", "max_drift"): 1e-3, ("native", "one_head", "mean_drift_low"): 1e-4,
             ("x2", "keep_size", "mean_drift_low"): 0.0, ("x2", "reference", "agreement_high"): 1.0,
             ("x2", "reference", "accuracy_change_high"): 0.01}
    for (size, variant, column), value in edits.items():
        table = study.table.copy()
        table.loc[(size, variant), column] = value
        verdicts = studies.p1_conclusions(studies.P1Study(study.measures, table, study.n))
        assert sum(not v for v in verdicts.values()) == 1, (size, variant, column)
