"""The book's answer per claim: findings recorded by the chapters, read back by the last one.

A chapter that measures a claim shows a :class:`Finding`: the claim, what the paper says, the
quantity measured with its interval, sample size and model, and the :class:`Rule` that turns the
interval into one of four fixed verdicts (:data:`VERDICTS`). Shown in a notebook, a finding
prints one line and stores itself in the output's metadata, so that :func:`collect` reads every
finding of a folder of executed chapters back -- the stored book's, or a run on a reader's weights
(``python -m eclip_core.book execute --out DIR``) -- and :func:`verdict_table` sets them side by
side. :data:`STATED` is the verdict the book states for each finding on its own model: the
chapters state the same words in their prose, and ``tests/test_verdicts.py`` checks the three
(prose, stored measurement, :data:`STATED`) against each other.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..stats import Interval

#: The four verdicts, strongest first. "holds": proved for every model and measured here;
#: "holds on this model": an interval on the claimed side of its bound; "contradicted": an interval
#: on the other side; "not shown": neither.
VERDICTS = ("holds", "holds on this model", "not shown", "contradicted")
#: Where a finding stores itself in a notebook output's metadata.
KEY = "eclip/finding"
#: The paper's claims and the book's own, in the order of the closing table.
CLAIMS = {
    "a": "(a) Grad-ECLIP is Attention-ECLIP",
    "b": "(b) the published code explains another model",
    "P1": "P1: the original model",
    "P2": "P2: alignment with performance",
    "book": "the book's own measures",
}
KINDS = ("proof", "above", "below", "worse", "study")


@dataclass(frozen=True)
class Rule:
    """How an interval becomes a verdict; every bound fixed before measuring.

    - ``proof``: a symbolic derivation for every model, checked numerically: ``holds`` when the
      proof stands and the measured gap's upper end is at most ``bound``; ``contradicted`` when the
      proof fails or the whole interval exceeds ``bound``.
    - ``above`` / ``below``: the claim is that the quantity lies above / below ``bound``:
      ``holds on this model`` when the whole interval does, ``contradicted`` when the whole
      interval lies on the other side.
    - ``worse``: the claim is that the published maps are worse than the faithful ones by more
      than ``bound`` (a margin); the interval is published - faithful, lower is better when
      ``lower_is_better``. ``holds on this model`` when the whole interval is worse by more than
      the margin; ``contradicted`` when even its unfavourable end is within the margin (not worse
      by the margin: non-inferiority); otherwise ``not shown``.
    - ``study``: the verdict a study's own decision rule gave (P2's Holm-adjusted one-sided tests,
      :meth:`~eclip_core.paper.p2.P2Study.verdicts`), carried in the finding's ``given``.
    """

    kind: str
    bound: float = 0.0
    lower_is_better: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"a rule's kind is one of {KINDS}, got {self.kind!r}")
        if self.kind == "worse" and not self.bound > 0:
            raise InputError(f"a 'worse' rule needs a positive margin, got {self.bound!r}")

    def verdict(self, interval: Interval | None, proof: bool | None = None, given: str | None = None) -> str:
        if self.kind == "study":
            if given not in VERDICTS:
                raise InputError(f"a study's verdict is one of {VERDICTS}, got {given!r}")
            return given
        if interval is None:
            raise InputError(f"a {self.kind!r} rule needs an interval")
        low, high = interval.low, interval.high
        if self.kind == "proof":
            if proof is False or low > self.bound:
                return "contradicted"
            return "holds" if proof and high <= self.bound else "not shown"
        if self.kind == "above":
            return "holds on this model" if low > self.bound else "contradicted" if high < self.bound else "not shown"
        if self.kind == "below":
            return "holds on this model" if high < self.bound else "contradicted" if low > self.bound else "not shown"
        # worse: orient so that larger means "the published maps are better"
        better_low, better_high = (-high, -low) if self.lower_is_better else (low, high)
        if better_high < -self.bound:
            return "holds on this model"
        return "contradicted" if better_low > -self.bound else "not shown"

    def __str__(self) -> str:
        if self.kind == "proof":
            return f"a proof, and the measured gap at most {self.bound:.0e}"
        if self.kind == "worse":
            better = "lower" if self.lower_is_better else "higher"
            return f"published worse by more than {self.bound} ({better} is better)"
        if self.kind == "study":
            return "the study's own decision rule"
        return f"interval {self.kind} {self.bound:g}"


@dataclass(frozen=True)
class Finding:
    """One claim measured by one chapter on one model: ``key`` (as in :data:`STATED`), ``claim``
    (a key of :data:`CLAIMS`), ``paper`` (what the paper says, or the book), ``measured`` (the
    quantity, in words), ``interval`` (estimate, 95% interval, sample size), ``rule``, ``model``
    and ``chapter``; ``proof`` for a ``proof`` rule, ``given`` for a ``study`` rule."""

    key: str
    claim: str
    paper: str
    measured: str
    interval: Interval | None
    rule: Rule
    model: str
    chapter: str
    proof: bool | None = None
    given: str | None = None

    def __post_init__(self):
        if self.claim not in CLAIMS:
            raise InputError(f"a finding's claim is one of {list(CLAIMS)}, got {self.claim!r}")
        self.rule.verdict(self.interval, self.proof, self.given)  # refuses what it cannot read

    @property
    def verdict(self) -> str:
        return self.rule.verdict(self.interval, self.proof, self.given)

    def evidence(self) -> str:
        """The interval in words (a proof's measured gap, a study's deciding interval)."""
        iv = self.interval
        if iv is None:
            return "a proof" if self.proof else "the study's intervals"
        if iv.level == 1.0 and iv.low == iv.high:  # measured on every item, no sampling
            return f"{'a proof; ' if self.proof else ''}{_number(iv.estimate)} (n={iv.n}, every item)"
        level = "" if iv.level == 0.95 else f", {iv.level:.0%} interval"
        return f"{_number(iv.estimate)} [{_number(iv.low)}, {_number(iv.high)}] (n={iv.n}{level})"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = None if self.interval is None else list(self.interval)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        data = dict(data)
        interval = data.pop("interval")
        rule = Rule(**data.pop("rule"))
        return cls(interval=None if interval is None else Interval(*interval), rule=rule, **data)

    def __str__(self) -> str:
        # the first line(s) hold no measured number, so that its layout never depends on one
        head = textwrap.fill(f"{self.key}: {self.measured} ({self.model})", 76, subsequent_indent="    ",
                             break_on_hyphens=False)
        return f"{head}\n    {self.evidence()} -> {self.verdict}"

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": str(self)}, {KEY: self.to_json()}


def _number(x: float) -> str:
    return f"{x:+.3f}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:+.1e}"


def interval(estimate: float, low: float, high: float, n: int, level: float = 0.95) -> Interval:
    """An :class:`~eclip_core.stats.Interval` from a table's columns (plain floats)."""
    return Interval(float(estimate), float(low), float(high), int(n), level)


def exact(value: float, n: int) -> Interval:
    """A measured maximum over ``n`` items, no sampling: an interval of width 0."""
    return Interval(float(value), float(value), float(value), int(n), 1.0)


def collect(folder: str | Path, notebooks: Iterable[str | Path] | None = None) -> list[Finding]:
    """Every finding stored in the outputs of the executed chapters in ``folder`` (default: every
    ``*.ipynb`` there, in name order), in the order they were shown."""
    folder = Path(folder)
    paths = sorted(folder.glob("*.ipynb")) if notebooks is None else [folder / Path(p) for p in notebooks]
    found = []
    for path in paths:
        try:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"cannot read the chapter {path}: {err}") from None
        for cell in cells:
            for output in cell.get("outputs", []):
                data = output.get("metadata", {}).get(KEY)
                if data is not None:
                    found.append(Finding.from_json(data))
    return found


def verdict_table(findings: Iterable[Finding], stated: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per finding, in the order of :data:`CLAIMS` and then as found: the claim, what the
    paper says, what was measured (on which model, in which chapter), the evidence, the verdict
    and, with ``stated``, the verdict the book states."""
    order = {claim: i for i, claim in enumerate(CLAIMS)}
    rows = []
    for f in sorted(findings, key=lambda f: order[f.claim]):
        row = {"claim": CLAIMS[f.claim], "key": f.key, "the paper says": f.paper,
               "measured": f"{f.measured} ({f.model}, {f.chapter})", "evidence": f.evidence(),
               "rule": str(f.rule), "verdict": f.verdict}
        if stated is not None:
            row["stated"] = stated.get(f.key, "-")
        rows.append(row)
    return pd.DataFrame(rows).set_index("key")


def disagreements(findings: Iterable[Finding], stated: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each stated key whose finding is missing or gives another verdict -> what was found."""
    stated = STATED if stated is None else stated
    by_key = {f.key: f for f in findings}
    out = {}
    for key, verdict in stated.items():
        got = by_key[key].verdict if key in by_key else "missing"
        if got != verdict:
            out[key] = got
    return out


def stated_in_prose(text: str) -> dict[str, str]:
    """The verdicts a chapter's prose states, written ``verdict `key`: **words**``."""
    import re

    words = "|".join(re.escape(v) for v in VERDICTS)
    return {m.group(1): m.group(2) for m in re.finditer(rf"verdict `([^`]+)`: \*\*({words})\*\*", text)}


def is_finite(f: Finding) -> bool:
    """Whether a finding's numbers are finite (a failed measurement is not a verdict)."""
    return f.interval is None or all(math.isfinite(x) for x in f.interval[:3])


#: The verdict the book states for each finding on eclip-shapes (chapters 2-5, 8). The measured
#: ones were the same on the book's sample and on the further samples its resampling tests
#: recheck (tests/test_resampling.py, tests/test_resampling_p2.py); the proofs hold for any model.
STATED: dict[str, str] = {
    "a.maps": "holds",
    "a.vit-b-16": "holds",
    "b.pass": "holds on this model",
    "b.keep-size": "holds on this model",
    "b.accuracy": "holds on this model",
    "b.maps": "holds on this model",
    "b.deletion": "contradicted",
    "b.insertion": "contradicted",
    "b.pointing": "contradicted",
    "b.p2-series": "contradicted",
    "b.p2-randomised": "contradicted",
    "b.p2-shuffled": "contradicted",
    "P1.faithful": "holds on this model",
    "P1.published": "holds on this model",
    "P2.grad_eclip": "not shown",
    "P2.controls": "holds on this model",
    "book.truth": "holds on this model",
    "b.cost.keep-size": "holds on this model",
    "b.cost.published": "holds on this model",
    "book.deletion-sees-cost": "contradicted",
    "book.text": "not shown",
}


# ----------------------------------------------------------------------------- each chapter's findings


def model_name(model: str, pretrained: object = None) -> str:
    """The model a chapter ran on, as the table names it."""
    return f"{model} ({Path(str(pretrained)).name})" if pretrained is not None else model


def equivalence_findings(gap: float, maps: int, proof: bool, model: str, *, vit_gap: float | None = None,
                         vit_maps: int = 0, bound: float = 1e-10) -> list[Finding]:
    """Chapter 2: the symbolic residual (``proof``: zero for symbolic sizes, with and without the
    loosened term, and a control that does not vanish) and the worst relative gap between the two
    routes' maps over ``maps`` maps (both modes, with and without lambda), on the chapter's model
    and, given ``vit_gap``, on ViT-B-16 with random weights."""
    paper = "Grad-ECLIP's maps equal Attention-ECLIP's"
    out = [Finding("a.maps", "a", paper, "max |G - A| / max |G|, float64", exact(gap, maps), Rule("proof", bound),
                   model, "chapter 2", proof=proof)]
    if vit_gap is not None:
        out.append(Finding("a.vit-b-16", "a", paper, "max |G - A| / max |G|, float64", exact(vit_gap, vit_maps),
                           Rule("proof", bound), "ViT-B-16 (random init)", "chapter 2", proof=proof))
    return out


def p1_findings(study: Any, model: str) -> list[Finding]:
    """Chapter 3 (:class:`~eclip_core.paper.p1.P1Study`): one head at the model's own size moves
    the scores (the mean drift's interval above :data:`~eclip_core.paper.p1.DRIFT_MOVES`); on
    enlarged scenes the keep-size input moves them too, and the published pass loses accuracy."""
    from .p1 import DRIFT_MOVES

    t = study.table
    enlarged = [size for size in study.measures if size != "native"]

    def row(size: str, variant: str, column: str) -> Interval:
        r = t.loc[(size, variant)]
        return interval(r[column], r[f"{column}_low"], r[f"{column}_high"], study.n)

    out = [Finding("b.pass", "b", "one head over the full width is another forward pass",
                   "mean |cosine drift|, one head, the model's size", row("native", "one_head", "mean_drift"),
                   Rule("above", DRIFT_MOVES), model, "chapter 3")]
    if enlarged:
        size = enlarged[0]
        out.append(Finding("b.keep-size", "b", "the keep-size input is another forward pass",
                           f"mean |cosine drift|, keep-size, scenes {size}", row(size, "keep_size", "mean_drift"),
                           Rule("above", DRIFT_MOVES), model, "chapter 3"))
        out.append(Finding("b.accuracy", "b", "the published pass is not the model's performance",
                           f"zero-shot accuracy change, published pass, scenes {size}",
                           row(size, "reference", "accuracy_change"), Rule("below", 0.0), model, "chapter 3"))
    return out


def misalignment_findings(study: Any, model: str) -> list[Finding]:
    """Chapter 4 (:class:`~eclip_core.paper.misalignment.MisalignmentStudy`): the two modes'
    maps rank the patches differently (mean rank correlation below 0.5), and, under our protocol,
    whether the published maps score worse on the deployed model by more than
    :data:`~eclip_core.paper.misalignment.MARGIN`."""
    from .misalignment import MARGIN

    n = study.correlation.n
    out = [Finding("b.maps", "b", "the published maps are not the original model's",
                   "rank correlation of the two modes' maps", study.correlation, Rule("below", 0.5), model,
                   "chapter 4")]
    for metric, key in (("deletion_auc", "b.deletion"), ("insertion_auc", "b.insertion"),
                        ("pointing_game", "b.pointing")):
        if ("ours", metric) not in study.differences.index:
            continue
        r = study.differences.loc[("ours", metric)]
        out.append(Finding(key, "b", "the departures make the maps worse explanations",
                           f"published - faithful {metric.replace('_', ' ')}",
                           interval(r["difference"], r["difference_low"], r["difference_high"], n),
                           Rule("worse", MARGIN, lower_is_better=metric == "deletion_auc"), model, "chapter 4"))
    return out


#: P2's verdicts as this table's words, for a claim that the explainer follows the model.
_P2_WORDS = {"holds": "holds on this model", "fails": "contradicted", "not shown": "not shown"}


def principle_findings(certificates: pd.DataFrame, n_p1: int, study: Any, model: str,
                       tests: Iterable[str] = ("series", "randomised", "shuffled")) -> list[Finding]:
    """Chapter 5: P1's certificates (the worst score drift of the faithful explainers and of the
    published mode, against 1e-5), whether P2's tests separate the controls, faithful Grad-ECLIP's
    verdict on P2, and, per test in ``tests``, whether the published mode follows the model worse
    than the faithful one by more than :data:`~eclip_core.paper.p2.EQUIVALENCE_MARGIN` (the 90%
    interval: a one-sided test at 5%)."""
    from .p2 import EQUIVALENCE_MARGIN

    out = []
    faithful = [s for s in certificates.index if not str(s).endswith(":reference")]
    published = [s for s in certificates.index if str(s).endswith(":reference")]
    if faithful:
        out.append(Finding("P1.faithful", "P1", "a faithful explainer explains the deployed model's scores",
                           "worst score drift of the faithful explainers",
                           exact(certificates.loc[faithful, "max_drift"].max(), n_p1), Rule("below", 1e-5), model,
                           "chapter 5"))
    if published:
        out.append(Finding("P1.published", "P1", "the published Grad-ECLIP breaks P1",
                           "least score drift of the published mode",
                           exact(certificates.loc[published, "max_drift"].min(), n_p1), Rule("above", 1e-5), model,
                           "chapter 5"))
    calibrated = [name for name, test in study.tests.items() if test.calibrated]
    out.append(Finding("P2.controls", "P2", "P2 can be checked",
                       f"P2's tests that separate the faithful controls from the model-blind ones: "
                       f"{len(calibrated)} of {len(study.tests)}", None,
                       Rule("study"), model, "chapter 5",
                       given="holds on this model" if len(calibrated) == len(study.tests) else "not shown"))
    verdicts = study.verdicts()
    if "grad_eclip" in verdicts.index:
        out.append(Finding("P2.grad_eclip", "P2", "Grad-ECLIP on the original model follows the model",
                           "P2 over the calibrated tests (Holm-adjusted)", None, Rule("study"), model, "chapter 5",
                           given=_P2_WORDS[verdicts.loc["grad_eclip", "P2"]]))
    for name in tests:
        test = study.tests.get(name)
        if test is None or "grad_eclip" not in test.replicates or "grad_eclip:reference" not in test.replicates:
            continue
        narrow = test.difference("grad_eclip:reference", "grad_eclip", 0.9)
        out.append(Finding(f"b.p2-{name}", "b", "the departures make the maps follow the model less",
                           f"published - faithful, P2's {name} test",
                           narrow, Rule("worse", EQUIVALENCE_MARGIN, lower_is_better=name == "shuffled"), model,
                           "chapter 5"))
    return out


def truth_findings(study: Any, model: str) -> list[Finding]:
    """Chapter 8 (:class:`~eclip_core.paper.counterfactual.GroundTruthStudy`): faithful
    Grad-ECLIP's Shapley correlation above 0 (better than a map that ranks nothing)."""
    if "grad_eclip" not in study.methods:
        return []
    return [Finding("book.truth", "book", "Grad-ECLIP's maps rank objects as their effects do",
                    "Shapley correlation of faithful Grad-ECLIP", study.intervals("shapley_correlation")["grad_eclip"],
                    Rule("above", 0.0), model, "chapter 8")]


def dose_findings(study: Any, model: str) -> list[Finding]:
    """Chapter 8's dose study (:class:`~eclip_core.paper.dose.DoseStudy`), at its largest dose:
    whether the keep-size input alone, and all three departures together, make the maps worse
    explanations of the deployed model (arm - reference Shapley correlation, positive better,
    below 0), and whether the deletion metric sees the keep-size input's cost (its difference
    below 0 too)."""
    arms = {(a.departure, a.dose): a for a in study.arms}
    doses = [a.dose for a in study.arms if a.departure == "keep-size"]
    if not doses or max(doses) == 1:
        return []
    dose = max(doses)
    out = []
    for departure, key, said in (("keep-size", "b.cost.keep-size", "the keep-size input"),
                                 ("all three", "b.cost.published", "the published recipe (all three)")):
        arm = arms.get((departure, dose))
        if arm is not None:
            out.append(Finding(key, "b", f"{said} makes the maps worse explanations",
                               f"{arm.label} - reference, Shapley correlation (positive: better)",
                               study.difference(arm, "shapley_correlation")[0], Rule("below", 0.0), model,
                               "chapter 8"))
    arm = arms.get(("keep-size", dose))
    if arm is not None and "deletion_auc" in study.per_item:
        out.append(Finding("book.deletion-sees-cost", "book", "deletion sees what the keep-size input costs",
                           f"{arm.label} - reference, deletion AUC (positive: better)",
                           study.difference(arm, "deletion_auc")[0], Rule("below", 0.0), model, "chapter 8"))
    return out


def text_findings(intervals: Mapping[str, Interval], model: str) -> list[Finding]:
    """Chapter 6 (:func:`~eclip_core.paper.text_truth.agreement_intervals`): whether the text
    branch's token maps rank a caption's colour and shape words as their substitution effects do
    (the mean Spearman correlation above 0, which a uniform map scores)."""
    if "map" not in intervals:
        return []
    return [Finding("book.text", "book", "the text branch shows the words the match rests on",
                    "token map vs substitution effects, mean Spearman over captions", intervals["map"],
                    Rule("above", 0.0), model, "chapter 6")]


def show(findings: Iterable[Finding]) -> list[Finding]:
    """Display each finding (a line each; the finding itself in the output's metadata)."""
    from IPython.display import display

    findings = list(findings)
    for f in findings:
        display(f)
    return findings
