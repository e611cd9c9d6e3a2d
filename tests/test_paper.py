"""Small pieces of the book's studies, on constructed cases: what the chapters compute with them."""

import numpy as np
import pandas as pd
import pytest
import torch

import eclip_core as ec
from eclip_core.models import random_clip
from eclip_core.paper import is_book_model, misalignment
from eclip_core.paper.atlas import route_gap


def test_the_book_states_its_figures_on_its_own_model_only():
    assert is_book_model("eclip-shapes")
    assert not is_book_model("eclip-shapes", "weights.safetensors") and not is_book_model("ViT-B-16")


def test_dips_below_end_counts_curves_whose_minimum_precedes_their_end():
    curves = np.array([[1.0, 0.5, 0.2], [1.0, 0.1, 0.2], [1.0, 0.2, 0.2 + 1e-9]])
    assert misalignment.dips_below_end(curves) == pytest.approx(1 / 3)


def test_rank_agreement_of_protocols():
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0], "c": [3.0, 2.0, 1.0]},
                         index=["x", "y", "z"])
    assert misalignment.rank_agreement(table) == pytest.approx({"a vs b": 1.0, "a vs c": -1.0, "b vs c": -1.0})


def test_the_two_routes_have_no_gap_and_the_check_can_fail(monkeypatch):
    """The same function on a random float64 ViT (both modes, with and without lambda; chapter 6
    checks the text branch); a route made to differ by a tenth shows a gap of that size."""
    model = random_clip(dict(image_size=32, patch_size=8, width=32, layers=2, head_width=8))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    targets = torch.nn.functional.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(1),
                                                        dtype=torch.float64), dim=-1)
    gap, shape = route_gap(model, images, targets)
    assert gap <= 1e-10 and shape == (2, 3, 4, 4)
    original = ec.METHODS["attention_eclip"]
    monkeypatch.setitem(ec.METHODS, "attention_eclip", ec.Method(
        "attention_eclip", lambda model, images, targets, *, departures=ec.FAITHFUL, loosened=True, qk="out_proj":
        tuple(v * 1.1 if i == 0 else v for i, v in enumerate(original.fn(model, images, targets, departures=departures,
                                                                          loosened=loosened, qk=qk))),
        "scaled", original.modes, text_route=None, choices=original.choices))
    assert route_gap(model, images, targets)[0] == pytest.approx(0.1 / 1.1, rel=1e-6)
