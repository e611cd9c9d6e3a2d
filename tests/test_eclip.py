"""Grad-ECLIP equals Attention-ECLIP; reference mode is another model; K targets share one pass."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import eclip_core as ec
from eclip_core.departures import departures_for
from eclip_core.explainers.eclip import attention_eclip, grad_eclip, text_eclip
from eclip_core.explainers import eclip as eclip_module


def _targets(k, dim=512, dtype=torch.float64, seed=3):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, dim, generator=g, dtype=dtype), dim=-1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["faithful", "reference"])
@pytest.mark.parametrize("loosened", [True, False])
@pytest.mark.parametrize("k", [3, 20], ids=["reverse-mode", "forward-mode"])
def test_image_routes_agree_in_float64(vit_b16_f64, images_224, mode, loosened, k, monkeypatch):
    monkeypatch.setattr(eclip_module, "FORWARD_MODE_RATIO", 0)  # K = 20: forward mode on 197 tokens too
    assert eclip_module.uses_forward_mode(k, 197, 512) == (k > 16)
    x, t = images_224[:1].double(), _targets(k)
    model = ec.as_model(vit_b16_f64)  # the registered functions take the typed model
    g, sg = grad_eclip(model, x, t, departures=departures_for(mode), loosened=loosened)
    a, sa = attention_eclip(model, x, t, departures=departures_for(mode), loosened=loosened)
    rel = ((g - a).abs().max() / g.abs().max()).item()
    print(f"image {mode} loosened={loosened}: max|G-A|/max|G| = {rel:.2e}")
    assert g.shape == (1, k, 14, 14)
    assert g.abs().max() > 0
    assert rel <= 1e-10
    assert torch.equal(sg, sa)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["faithful", "reference"])
@pytest.mark.parametrize("loosened", [True, False])
def test_text_routes_agree_in_float64(vit_b16_f64, tokenizer_b16, mode, loosened):
    tokens = tokenizer_b16(["a dog on a mat", "two cats and a red car"])
    t = _targets(3)
    model = ec.as_model(vit_b16_f64)
    g, _, mask = text_eclip(model, tokens, t, route="grad", departures=departures_for(mode),
                            loosened=loosened, n_blocks=4)
    a, _, _ = text_eclip(model, tokens, t, route="attention", departures=departures_for(mode),
                         loosened=loosened, n_blocks=4)
    rel = ((g - a).abs().max() / g.abs().max()).item()
    print(f"text {mode} loosened={loosened}: max|G-A|/max|G| = {rel:.2e}")
    assert rel <= 1e-10
    assert (g[~mask[:, None].expand_as(g)] == 0).all()  # only tokens between SOT and EOT
    sums = g.sum(-1)
    assert torch.all(((sums - 1).abs() < 1e-12) | (sums == 0))


def test_image_routes_agree_in_float32(vit_b16, images_224):
    t = _targets(4, dtype=torch.float32)
    model = ec.as_model(vit_b16)  # the registered functions take the typed model
    g, _ = grad_eclip(model, images_224, t)
    a, _ = attention_eclip(model, images_224, t)
    rel = ((g - a).abs().max() / g.abs().max()).item()
    print(f"float32: max|G-A|/max|G| = {rel:.2e}")
    assert rel <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grad_eclip", "attention_eclip"])
def test_k_targets_in_one_call_equal_k_single_calls(vit_b16, images_224, method):
    t = _targets(3, dtype=torch.float32)
    together = ec.explain(vit_b16, images_224, t, method=method)
    for k in range(3):
        single = ec.explain(vit_b16, images_224, t[k:k + 1], method=method)
        assert torch.allclose(together.maps[:, k], single.maps[:, 0], rtol=1e-5, atol=1e-7)
        assert torch.allclose(together.scores[:, k], single.scores[:, 0], atol=1e-6)


@pytest.mark.slow
def test_more_targets_than_embedding_dims_uses_the_jacobian(vit_b16, images_224):
    """K > E switches to contracting one Jacobian; the maps must not change."""
    t = _targets(520, dtype=torch.float32)
    many = ec.explain(vit_b16, images_224[:1], t, method="attention_eclip")
    few = ec.explain(vit_b16, images_224[:1], t[[0, 257, 519]], method="attention_eclip")
    assert torch.allclose(many.maps[:, [0, 257, 519]], few.maps, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_faithful_score_is_the_original_models(vit_b16, images_224):
    t = _targets(3, dtype=torch.float32)
    result = ec.explain(vit_b16, images_224, t, method="grad_eclip", mode="faithful")
    with torch.no_grad():
        original = F.normalize(vit_b16.encode_image(images_224), dim=-1) @ t.T
    diff = (result.scores - original).abs().max().item()
    print(f"faithful score vs original: {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.slow
def test_reference_score_differs_on_vit_b16(vit_b16, images_224):
    t = _targets(3, dtype=torch.float32)
    result = ec.explain(vit_b16, images_224, t, method="grad_eclip", mode="reference")
    assert result.scores_original is not None
    drift = result.drift.abs().max().item()
    print(f"reference vs original score drift on ViT-B-16 random init: {drift:.3e}")
    # ten times the tolerance within which the faithful score matches the original
    assert drift > 1e-4


def test_reference_equals_original_for_one_head_model_at_native_size(one_head_clip):
    model = one_head_clip
    image = Image.fromarray(torch.rand(224, 224, 3, generator=torch.Generator().manual_seed(0))
                             .mul(255).byte().numpy())
    from open_clip import image_transform

    preprocess = image_transform(224, is_train=False)
    t = _targets(2, dim=32, dtype=torch.float32)
    result = ec.explain(model, [image], t, method="grad_eclip", mode="reference", preprocess=preprocess)
    diff = result.drift.abs().max().item()
    print(f"one-head model, 224x224 input: reference vs original drift {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.slow
def test_reference_mode_explains_at_keep_size(vit_b16):
    from open_clip import image_transform

    image = Image.new("RGB", (480, 320), (120, 30, 200))
    preprocess = image_transform(224, is_train=False)
    t = _targets(1, dtype=torch.float32)
    ref = ec.explain(vit_b16, image, t, method="grad_eclip", mode="reference", preprocess=preprocess)
    own = ec.explain(vit_b16, image, t, method="grad_eclip", mode="faithful", preprocess=preprocess)
    assert ref.maps.shape[-2:] == (20, 30)
    assert own.maps.shape[-2:] == (14, 14)
    assert ref.upsampled().shape[-2:] == (320, 480)


def test_raw_qk_option_changes_the_loosened_term(vit_b16, images_224):
    t = _targets(1, dtype=torch.float32)
    a = ec.explain(vit_b16, images_224, t, method="grad_eclip", qk="out_proj").maps
    b = ec.explain(vit_b16, images_224, t, method="grad_eclip", qk="raw").maps
    assert not torch.allclose(a, b)


def test_grad_eclip_matches_direct_autograd_of_the_cosine(vit_b16, images_224):
    """Independent of the batched machinery: autograd of F.cosine_similarity, one target."""
    from eclip_core.explainers.eclip import loosened_attention
    from eclip_core.maps import minmax
    from eclip_core import trace_vision
    from eclip_core.trace import merge_heads

    t = _targets(1, dtype=torch.float32)
    tr = trace_vision(vit_b16, images_224[:1])
    last = tr.blocks[-1]
    score = F.cosine_similarity(tr.embedding, t)[0]
    w = torch.autograd.grad(score, last.attn_out)[0][:, 0]  # (1, D)
    with torch.no_grad():
        lam = minmax(loosened_attention(ec.as_model(vit_b16), merge_heads(last.q)[:, 0], merge_heads(last.k)[:, 1:]))
        expected = (lam * (merge_heads(last.v)[:, 1:] @ w[0])).clamp_min(0).reshape(14, 14)
    got = ec.explain(vit_b16, images_224[:1], t, method="grad_eclip").maps[0, 0]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_attention_route_switches_to_forward_mode_when_targets_outnumber_tokens():
    """Reverse mode costs in proportion to min(K, E) (K targets, E embedding dimensions),
    forward mode to the T tokens: forward only for min(K, E) > 16 and > 2 T
    (ViT-B-16: T = 197, E = 512; the embedded model: T = 65, E = 64)."""
    assert not eclip_module.uses_forward_mode(16, 1, 512)
    assert eclip_module.uses_forward_mode(17, 4, 512)
    assert not eclip_module.uses_forward_mode(300, 197, 512)
    assert not eclip_module.uses_forward_mode(394, 197, 512)
    assert eclip_module.uses_forward_mode(395, 197, 512) and eclip_module.uses_forward_mode(1000, 197, 512)
    assert not eclip_module.uses_forward_mode(1000, 65, 64)  # E bounds the reverse-mode cost
    assert not eclip_module.uses_forward_mode(1000, 197, 300)
