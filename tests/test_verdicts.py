"""The closing chapter's verdict table: each rule's reading of an interval, findings stored in a
notebook and read back, each chapter's findings computed from its study, and the stored book
-- prose, stored measurements and the stated verdicts -- in agreement."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import pytest

from eclip_core.book import ROOT, chapter_notebooks
from eclip_core.errors import InputError
from eclip_core.paper import verdicts as vd
from eclip_core.paper.p2 import EQUIVALENCE_MARGIN
from eclip_core.stats import Interval

HOLDS, HERE, NOT_SHOWN, AGAINST = vd.VERDICTS


def iv(low, high, estimate=None, n=10, level=0.95):
    return Interval((low + high) / 2 if estimate is None else estimate, low, high, n, level)


# ----------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("low, high, expected", [(0.2, 0.4, HERE), (-0.4, -0.2, AGAINST), (-0.1, 0.1, NOT_SHOWN),
                                                 (0.0, 0.1, NOT_SHOWN)])
def test_above_reads_the_whole_interval_against_its_bound(low, high, expected):
    assert vd.Rule("above", 0.0).verdict(iv(low, high)) == expected
    # the same interval, mirrored, under "below"
    assert vd.Rule("below", 0.0).verdict(iv(-high, -low)) == expected


def test_above_and_below_use_their_bound_not_zero():
    assert vd.Rule("above", 0.5).verdict(iv(0.3, 0.4)) == AGAINST
    assert vd.Rule("below", 0.5).verdict(iv(0.3, 0.4)) == HERE
    assert vd.Rule("below", 0.5).verdict(iv(0.45, 0.55)) == NOT_SHOWN


@pytest.mark.parametrize("proof, gap, expected", [(True, 1e-15, HOLDS), (False, 1e-15, AGAINST), (True, 1e-3, AGAINST),
                                                  (None, 1e-15, NOT_SHOWN)])
def test_a_proof_holds_only_with_its_measurement_within_the_bound(proof, gap, expected):
    assert vd.Rule("proof", 1e-10).verdict(vd.exact(gap, 4), proof) == expected


def test_a_proof_whose_interval_straddles_the_bound_is_not_shown():
    assert vd.Rule("proof", 1e-10).verdict(iv(1e-12, 1e-9), True) == NOT_SHOWN


@pytest.mark.parametrize("low, high, lower_is_better, expected", [
    (-0.033, 0.003, True, AGAINST),    # deletion: the published maps not worse by the margin
    (0.06, 0.10, True, HERE),          # deletion higher by more than the margin: worse
    (-0.10, -0.06, True, AGAINST),     # deletion lower: better
    (-0.10, -0.06, False, HERE),       # insertion lower by more than the margin: worse
    (-0.07, 0.01, False, NOT_SHOWN),   # the unfavourable end beyond the margin, the other within
    (-0.03, 0.07, True, NOT_SHOWN),
])
def test_worse_orients_the_difference_by_the_metric(low, high, lower_is_better, expected):
    assert vd.Rule("worse", 0.05, lower_is_better=lower_is_better).verdict(iv(low, high)) == expected


def test_worse_reads_its_margin():
    assert vd.Rule("worse", 0.1).verdict(iv(-0.08, 0.0)) == AGAINST
    assert vd.Rule("worse", 0.05).verdict(iv(-0.08, 0.0)) == NOT_SHOWN


def test_rules_refuse_what_they_cannot_read():
    with pytest.raises(InputError, match="kind"):
        vd.Rule("around")
    with pytest.raises(InputError, match="margin"):
        vd.Rule("worse", 0.0)
    with pytest.raises(InputError, match="interval"):
        vd.Rule("above").verdict(None)
    with pytest.raises(InputError, match="study"):
        vd.Rule("study").verdict(None, given="passes")
    assert vd.Rule("study").verdict(None, given=NOT_SHOWN) == NOT_SHOWN
    with pytest.raises(InputError, match="claim"):
        vd.Finding("x", "z", "p", "m", iv(0, 1), vd.Rule("above"), "m", "c")


# ----------------------------------------------------------------------------- stored and read back


BELOW = vd.Rule("below", 0.5)
RHO = Interval(0.32, 0.26, 0.38, 240)


def finding(key="b.maps", rule=BELOW, interval=RHO, **kw):
    return vd.Finding(key, kw.pop("claim", "b"), "paper", "measured", interval, rule, "eclip-shapes", "chapter 4", **kw)


def notebook_with(findings, path, prose=""):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(prose))
    cell = nbformat.v4.new_code_cell("vd.show(findings)")
    for f in findings:
        data, metadata = f._repr_mimebundle_()
        cell.outputs.append(nbformat.v4.new_output("display_data", data=data, metadata=metadata))
    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text="other output\n"))
    nb.cells.append(cell)
    nbformat.write(nb, path)


def test_findings_shown_in_a_notebook_are_read_back_exactly(tmp_path):
    shown = [finding(), finding("a.maps", vd.Rule("proof", 1e-10), vd.exact(6.3e-16, 160), claim="a", proof=True),
             finding("P2.controls", vd.Rule("study"), None, claim="P2", given=HERE),
             finding("b.deletion", vd.Rule("worse", 0.05, lower_is_better=True), iv(-0.033, 0.003, -0.015, 240))]
    notebook_with(shown[:2], tmp_path / "02_a.ipynb")
    notebook_with(shown[2:], tmp_path / "05_b.ipynb")
    back = vd.collect(tmp_path)
    assert back == shown
    assert [f.verdict for f in back] == [HERE, HOLDS, HERE, AGAINST]
    assert vd.collect(tmp_path, ["05_b.ipynb"]) == shown[2:]


def test_a_findings_line_names_its_key_evidence_and_verdict():
    line = str(finding())
    assert line == f"b.maps: measured (eclip-shapes)\n    +0.320 [+0.260, +0.380] (n=240) -> {HERE}"
    assert "90% interval" in finding(interval=iv(0.1, 0.2, level=0.9)).evidence()
    assert "a proof; +6.3e-16 (n=160, every item)" in finding(rule=vd.Rule("proof", 1e-10), interval=vd.exact(6.3e-16, 160),
                                             proof=True).evidence()


def test_an_unreadable_chapter_is_one_clear_error(tmp_path):
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(InputError, match="bad.ipynb"):
        vd.collect(tmp_path)


def test_the_table_orders_claims_and_sets_stated_beside_measured():
    found = [finding(), finding("a.maps", vd.Rule("proof", 1e-10), vd.exact(1e-15, 4), claim="a", proof=True)]
    table = vd.verdict_table(found, {"b.maps": HERE})
    assert list(table.index) == ["a.maps", "b.maps"]
    assert list(table["verdict"]) == [HOLDS, HERE]
    assert list(table["stated"]) == ["-", HERE]


def test_disagreements_name_missing_and_different_verdicts():
    found = [finding()]
    assert vd.disagreements(found, {"b.maps": HERE}) == {}
    assert vd.disagreements(found, {"b.maps": AGAINST}) == {"b.maps": HERE}
    assert vd.disagreements(found, {"a.maps": HOLDS}) == {"a.maps": "missing"}


def test_prose_statements_are_read_with_their_words():
    text = ("So verdict `b.maps`: **holds on this model**, and verdict `P2.grad_eclip`: **not shown**; "
            "verdict `x`: **maybe** is not a verdict.")
    assert vd.stated_in_prose(text) == {"b.maps": HERE, "P2.grad_eclip": NOT_SHOWN}


# ----------------------------------------------------------------------------- each chapter's findings


def test_p1_findings_read_the_right_rows_and_columns():
    variants = ("one_head", "keep_size", "reference")
    index = pd.MultiIndex.from_tuples([(s, v) for s in ("native", "x2") for v in variants])
    table = pd.DataFrame(0.0, index=index, columns=[f"{c}{e}" for c in ("mean_drift", "accuracy_change")
                                                    for e in ("", "_low", "_high")])
    table.loc[("native", "one_head"), ["mean_drift", "mean_drift_low", "mean_drift_high"]] = [0.1, 0.09, 0.11]
    table.loc[("x2", "keep_size"), ["mean_drift", "mean_drift_low", "mean_drift_high"]] = [5e-4, 4e-4, 6e-4]
    table.loc[("x2", "reference"), ["accuracy_change", "accuracy_change_low", "accuracy_change_high"]] = [-.4, -.5, -.3]
    study = SimpleNamespace(table=table, measures={"native": None, "x2": None}, n=300)
    got = {f.key: f for f in vd.p1_findings(study, "m")}
    assert got["b.pass"].interval == Interval(0.1, 0.09, 0.11, 300)
    assert got["b.pass"].verdict == HERE
    assert got["b.keep-size"].verdict == AGAINST  # below the drift that counts as moving
    assert got["b.accuracy"].interval.estimate == -0.4 and got["b.accuracy"].verdict == HERE


def test_misalignment_findings_orient_deletion_and_the_others():
    index = pd.MultiIndex.from_tuples([("ours", m) for m in ("deletion_auc", "insertion_auc", "pointing_game")]
                                      + [("published", "deletion_auc")])
    differences = pd.DataFrame({"difference": [0.08, -0.08, 0.0, 0.5], "difference_low": [0.06, -0.1, -0.04, 0.4],
                                "difference_high": [0.1, -0.06, 0.04, 0.6]}, index=index)
    study = SimpleNamespace(correlation=Interval(0.6, 0.55, 0.65, 240), differences=differences)
    got = {f.key: f.verdict for f in vd.misalignment_findings(study, "m")}
    assert got == {"b.maps": AGAINST, "b.deletion": HERE, "b.insertion": HERE, "b.pointing": AGAINST}


class FakeTest:
    def __init__(self, calibrated, gap):
        self.calibrated, self.gap = calibrated, gap
        self.replicates = {"grad_eclip": None, "grad_eclip:reference": None}

    def difference(self, a, b, level=0.95):
        assert (a, b) == ("grad_eclip:reference", "grad_eclip")  # published minus faithful
        half = 0.05 if level == 0.9 else 0.2  # a 95% interval would straddle the margin
        return Interval(self.gap, self.gap - half, self.gap + half, 40, level)


def test_principle_findings_read_certificates_calibration_p2_and_the_paired_tests():
    certificates = pd.DataFrame({"max_drift": [0.0, 3e-8, 0.3]}, index=["grad_eclip", "rise", "grad_eclip:reference"])
    tests = {"trained": FakeTest(True, 0.0), "series": FakeTest(True, 0.0), "shuffled": FakeTest(True, 0.2)}
    verdicts = pd.DataFrame({"P2": ["fails"]}, index=["grad_eclip"])
    study = SimpleNamespace(tests=tests, verdicts=lambda: verdicts)
    got = {f.key: f for f in vd.principle_findings(certificates, 24, study, "m", tests=("series", "shuffled"))}
    assert got["P1.faithful"].interval.estimate == 3e-8 and got["P1.faithful"].verdict == HERE
    assert got["P1.published"].interval.estimate == 0.3 and got["P1.published"].verdict == HERE
    assert got["P2.controls"].verdict == HERE
    assert got["P2.grad_eclip"].verdict == AGAINST
    assert got["b.p2-series"].interval.level == 0.9 and got["b.p2-series"].verdict == AGAINST
    # the shuffled share: lower is better, so a published share 0.2 higher is worse by more than 0.1
    assert got["b.p2-shuffled"].rule.bound == EQUIVALENCE_MARGIN and got["b.p2-shuffled"].verdict == HERE
    assert "b.p2-trained" not in got
    tests["series"].calibrated = False
    assert {f.key: f for f in vd.principle_findings(certificates, 24, study, "m")}["P2.controls"].verdict == NOT_SHOWN


def test_truth_findings_read_faithful_grad_eclip():
    study = SimpleNamespace(methods=["rise", "grad_eclip"],
                            intervals=lambda column: {"grad_eclip": Interval(0.5, 0.4, 0.6, 24),
                                                      "rise": Interval(-1, -1, -1, 24)})
    (f,) = vd.truth_findings(study, "m")
    assert f.interval.estimate == 0.5 and f.verdict == HERE


def test_dose_findings_read_the_largest_dose_and_the_right_measures():
    from eclip_core.paper import dose

    arms = [dose.Arm("keep-size", m) for m in (1, 4, 2)] + [dose.Arm("all three", 4), dose.Arm("one head")]
    values = {("keep-size x4", "shapley_correlation"): Interval(-0.2, -0.3, -0.1, 32),
              ("all three x4", "shapley_correlation"): Interval(-0.2, -0.3, 0.1, 32),
              ("keep-size x4", "deletion_auc"): Interval(0.04, 0.02, 0.06, 32)}

    def difference(arm, column, level=0.95):
        return values.get((arm.label, column), Interval(9, 9, 9, 32)), None

    study = SimpleNamespace(arms=arms, difference=difference, per_item={"deletion_auc": []})
    found = {f.key: f for f in vd.dose_findings(study, "m")}
    assert found["b.cost.keep-size"].verdict == HERE and "keep-size x4" in found["b.cost.keep-size"].measured
    assert found["b.cost.published"].verdict == "not shown"
    assert found["book.deletion-sees-cost"].verdict == "contradicted"
    study.arms = [dose.Arm("keep-size", 1), dose.Arm("one head")]
    assert vd.dose_findings(study, "m") == []  # no enlarged input, nothing to say about its cost


def test_text_findings_read_the_maps_interval():
    (f,) = vd.text_findings({"map": Interval(0.1, -0.1, 0.3, 24), "position": Interval(-0.3, -0.4, -0.2, 24)}, "m")
    assert f.key == "book.text" and f.verdict == "not shown" and f.interval.estimate == 0.1
    (f,) = vd.text_findings({"map": Interval(0.3, 0.1, 0.5, 24), "position": Interval(-0.3, -0.4, -0.2, 24)}, "m")
    assert f.verdict == HERE
    assert vd.text_findings({}, "m") == []


# ----------------------------------------------------------------------------- the stored book


CHAPTERS = chapter_notebooks()


def prose(path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def test_every_stated_verdict_is_recorded_by_a_chapter_and_measured_as_stated():
    chapters = [p for p in CHAPTERS if "verdicts" not in p.stem]
    found = vd.collect(ROOT / "notebooks", [p.name for p in chapters])
    keys = [f.key for f in found]
    assert len(keys) == len(set(keys)), "a finding recorded twice"
    assert set(keys) == set(vd.STATED)
    assert all(f.model == "eclip-shapes" for f in found if f.key != "a.vit-b-16")
    assert vd.disagreements(found) == {}
    assert all(vd.is_finite(f) for f in found)


def test_each_chapters_prose_states_the_verdicts_it_records():
    for path in CHAPTERS:
        if "verdicts" in path.stem:
            continue
        recorded = {f.key for f in vd.collect(path.parent, [path.name])}
        stated = vd.stated_in_prose(prose(path))
        assert set(stated) == recorded, path.name
        assert stated == {k: vd.STATED[k] for k in recorded}, path.name


def test_the_closing_chapter_shows_every_stated_verdict():
    (closing,) = [p for p in CHAPTERS if "verdicts" in p.stem]
    assert closing == CHAPTERS[-1]
    text = json.dumps(json.loads(closing.read_text())["cells"])
    for key in vd.STATED:
        assert key in text, key
    assert np.all([word in text for word in vd.VERDICTS[:3]])
