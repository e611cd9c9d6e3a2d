"""The stored agreement with the peers that cannot be installed beside eclip (``make peers``):
what chapter 7 and the README state is what the stored runs measured."""

import json
import re
from pathlib import Path

import pytest

from eclip_core.paper.peers import APART, DTYPES, LABELS, SAME, load_agreement, peer_agreement

README = Path(__file__).resolve().parents[1] / "README.md"


def test_stored_runs_have_both_dtypes_and_the_peers_commits():
    table, provenance = peer_agreement()
    assert list(table.index) == list(SAME + APART) and set(LABELS) == set(SAME + APART)
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["grad_eclip_commit"])
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["textspan_commit"])
    assert provenance["open_clip_torch"].startswith("2.") and provenance["eclip_open_clip_torch"].startswith("3.")
    # the peer's own computation to round-off; the other conventions apart (chapter 7's bounds)
    assert (table.loc[list(SAME), "float64"] <= 1e-9).all() and (table.loc[list(SAME), "float32"] <= 1e-4).all()
    assert (table.loc[list(APART), list(DTYPES)] >= 1e-2).all().all()


def test_readme_states_the_stored_figures():
    text = README.read_text()
    data = load_agreement()
    for key in SAME[1:]:  # (the inputs are identical: 0)
        for dtype in DTYPES:
            value = data[dtype]["rows"][key]["max_relative"]
            shown = f"{value:.1e}".replace("e-0", "e-")
            assert shown in text, f"README does not state {key} in {dtype}: {shown}"
    for key in APART:
        assert f"| {data['float64']['rows'][key]['max_relative']:.2f} |" in text, key
    assert data["float64"]["peers"]["grad_eclip_commit"][:7] in text
    assert data["float64"]["peers"]["textspan_commit"][:7] in text


def test_a_missing_run_is_named(tmp_path):
    path = tmp_path / "peers.json"
    path.write_text(json.dumps({"float64": {}}))
    with pytest.raises(ValueError, match="no run in float32: run `make peers`"):
        load_agreement(path)
