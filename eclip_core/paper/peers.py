"""The peers' own code beside eclip, for the peers that cannot be installed with it.

``make peers`` (``benchmarks/peers``) runs the published Grad-ECLIP code, LeGrad under the
open_clip it pins and TextSpan in an environment of their own, on one random-init ViT-B/16
with perturbed biases and norms, and sets eclip beside them; it stores the agreement in
``eclip_core/data/peers.json`` (per dtype: the peers' commits and versions, and per
comparison the largest relative difference and the lowest Pearson correlation of the maps).
:func:`peer_agreement` reads it for chapter 7 and the README.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

#: comparisons where eclip runs the peer's own computation: agreement to round-off expected
SAME = ("inputs", "published", "scores", "notebook", "legrad_mean", "textspan")
#: comparisons of a documented other convention: apart by design
APART = ("legrad_cls", "own_mean")
#: short names (peer, eclip) for each comparison, for a table that fits a page
LABELS = {
    "inputs": ("generate_emap.py input", "mode=reference input"),
    "published": ("generate_emap.py", "grad_eclip:reference"),
    "scores": ("its cosine", "the .scores"),
    "notebook": ("the demo notebook", "... qk=raw"),
    "legrad_mean": ("LeGrad", "legrad pooling=mean"),
    "legrad_cls": ("LeGrad", "legrad (pooling=cls)"),
    "textspan": ("TextSpan", "direct split=textspan"),
    "own_mean": ("TextSpan", "direct (own_mean)"),
}
DTYPES = ("float64", "float32")


def load_agreement(path: str | Path | None = None) -> dict[str, Any]:
    """The stored runs of ``make peers``, by dtype."""
    if path is None:
        text = resources.files("eclip_core.data").joinpath("peers.json").read_text()
    else:
        text = Path(path).read_text()
    data = json.loads(text)
    missing = [d for d in DTYPES if d not in data]
    if missing:
        raise ValueError(f"peers.json has no run in {', '.join(missing)}: run `make peers`")
    return data


def peer_agreement(path: str | Path | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(table, provenance): per comparison, the largest relative difference in each dtype and
    the lowest Pearson correlation over both; the peers' commits and versions of the runs."""
    data = load_agreement(path)
    rows = []
    for key in SAME + APART:
        peer, eclip = LABELS[key]
        row: dict[str, Any] = {"comparison": key, "peer": peer, "eclip": eclip}
        pearsons = []
        for dtype in DTYPES:
            stored = data[dtype]["rows"][key]
            row[dtype] = stored["max_relative"]
            if stored["min_pearson"] is not None:
                pearsons.append(stored["min_pearson"])
        row["Pearson"] = min(pearsons) if pearsons else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows).set_index("comparison")
    first = data[DTYPES[0]]
    provenance = dict(first["peers"], eclip_open_clip_torch=first["eclip_open_clip_torch"],
                      photos=first["photos"], targets=first["targets"])
    for dtype in DTYPES[1:]:
        if data[dtype]["peers"] != first["peers"]:
            raise ValueError(f"the {dtype} run used other peers' versions than the {DTYPES[0]} run")
    return table, provenance
