"""The same function with other weights (ClipModel.rescaled_query_key) and the fit that makes
Grad-ECLIP's loosened term mislead (eclip_core.paper.rescaled)."""

import math

import numpy as np
import pytest
import torch

import eclip_core as ec
from eclip_core.clip import ClipModel
from eclip_core.errors import InputError, UnsupportedModelError
from eclip_core.explainers.eclip import loosened_attention
from eclip_core.maps import minmax
from eclip_core.paper import counterfactual as cf
from eclip_core.paper import rescaled
from eclip_core.stats import relative_gap
from eclip_core.world import shapes


@pytest.fixture(scope="module")
def model():
    return ec.load_model("eclip-shapes")


@pytest.fixture(scope="module")
def known(model):
    return cf.truth(model, shapes.distractor_scenes(3, 4, size=shapes.world_size(model)))


@pytest.fixture(scope="module")
def scales(model):
    return torch.exp(2 * torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))


def test_the_rescaled_model_is_the_same_function(model, scales, known):
    other = model.rescaled_query_key(scales)
    old = model.model.visual.transformer.resblocks[-1].attn.in_proj_weight
    new = other.model.visual.transformer.resblocks[-1].attn.in_proj_weight
    assert relative_gap(old.detach(), new.detach()) > 0.5  # other weights, and the original left as it was
    assert model.model.visual.transformer.resblocks[-1].attn.in_proj_weight is old
    x = model.native_input([s.image for s in known.scenes])
    with torch.no_grad():
        assert relative_gap(model.encode_image(x), other.encode_image(x)) < 1e-6
        assert relative_gap(model.trace_vision(x).blocks[-1].attn, other.trace_vision(x).blocks[-1].attn) < 1e-5
    texts = ["a red circle", "a blue square"]
    for method, mode, options in (("grad_eclip", "faithful", {"loosened": False}),
                                  ("grad_eclip", "reference", {"loosened": False}), ("occlusion", "faithful", {})):
        a = ec.explain(model, x, texts, method, mode, **options).maps
        b = ec.explain(other, x, texts, method, mode, **options).maps
        assert relative_gap(a, b) < 1e-5, (method, mode)
    # the loosened term is not a function of the model: Grad-ECLIP's map moves
    a = ec.explain(model, x, texts, "grad_eclip").maps
    assert relative_gap(a, ec.explain(other, x, texts, "grad_eclip").maps) > 0.05


def test_loosened_under_is_the_rescaled_models_own_term(model, scales, known):
    """Another route to the rescaled model's Grad-ECLIP map: the original model's q and k, the
    scales applied outside, times the contribution that does not depend on them."""
    other = model.rescaled_query_key(scales)
    p = rescaled.pieces(model, known)
    lam = rescaled.loosened_under(model, p.q, p.k, torch.log(scales))[p.image]
    expected = torch.relu(lam * p.contribution).detach()
    x = model.native_input([s.image for s in known.scenes])
    texts = [[t.prompt for t in known.targets if t.scene == i] for i in range(len(known.scenes))]
    maps = ec.explain(other, x, texts, "grad_eclip").maps
    got = torch.stack([maps[t.scene, t.k].flatten() for t in known.targets])
    assert relative_gap(got, expected) < 1e-4
    # at scales 1 it is the model's own term
    zero = torch.zeros(64, dtype=p.q.dtype)
    assert torch.allclose(rescaled.loosened_under(model, p.q, p.k, zero),
                          minmax(loosened_attention(model, p.q, p.k)), atol=1e-6)


def test_pieces_name_the_objects_worth_most_and_least(model, known):
    p = rescaled.pieces(model, known, [0, 4])
    for row, j in enumerate([0, 4]):
        t, phi = known.targets[j], known.shapley[j]
        objects = known.scenes[t.scene].objects
        top = objects[int(np.argmax(phi))].mask
        assert float(p.top[row].sum()) == pytest.approx(top.mean() * p.top.shape[1])
        assert int(p.image[row]) == t.scene
        bottom = objects[int(np.argmin(phi))].mask
        assert float(p.bottom[row].sum()) == pytest.approx(bottom.mean() * p.bottom.shape[1])


def test_the_fit_moves_the_maps_off_the_object_worth_most(model, known):
    scales, (start, end) = rescaled.fit_scales(model, known, [0], steps=60, bound=10.0)
    assert end < start - 0.2
    assert float(scales.min()) >= 0.1 * (1 - 1e-6) and float(scales.max()) <= 10 * (1 + 1e-6)
    p = rescaled.pieces(model, known, [0])
    assert float(rescaled.objective(model, p, torch.log(scales).float()).detach()) == pytest.approx(end, abs=1e-5)
    assert all(q.grad is None for q in model.model.parameters())  # the fit leaves the model alone


def test_rescaling_refuses_bad_scales_and_other_families(model):
    with pytest.raises(InputError, match="shape"):
        model.rescaled_query_key(torch.ones(3))
    with pytest.raises(InputError, match="positive and finite"):
        model.rescaled_query_key(-torch.ones(64))
    with pytest.raises(InputError, match="positive and finite"):
        model.rescaled_query_key(torch.full((64,), math.inf))
    with pytest.raises(InputError, match="block"):
        model.rescaled_query_key(torch.ones(64), block=7)
    with pytest.raises(UnsupportedModelError, match="open_clip"):
        ClipModel.rescaled_query_key(model, torch.ones(64))
    with pytest.raises(InputError, match="bound"):
        rescaled.fit_scales(model, None, bound=1.0)
