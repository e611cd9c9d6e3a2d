"""Hugging Face ``transformers``' SigLIP (attention-probe pooling) as a family: the recorded
pass reproduces ``get_image_features`` / ``get_text_features`` at ViT-B-16 sizes; Grad-ECLIP's
map computed another way (torch's own MultiheadAttention weights, HF's own tokens); Attention-ECLIP
equals it; every method defined for the pooling certifies the deployed cosine; the others, the
published mode and the text branch refused in one line."""

import json

import pytest
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.errors import UnsupportedModelError
from eclip_core.explainers import METHODS
from eclip_core.maps import minmax
from eclip_core.trace.hf_siglip import HFSiglipModel

transformers = pytest.importorskip("transformers", reason="transformers is the hf extra (pip install -e '.[hf]')")

pytestmark = pytest.mark.usefixtures("one_thread")
CHEAP = {"rise": dict(n_masks=8), "integrated_gradients": dict(steps=4), "occlusion": dict(window=1)}


def siglip(vision: dict, text: dict, *, seed: int = 0, perturb: float = 0.2) -> torch.nn.Module:
    """A random-init ``transformers.SiglipModel``, 1-D parameters moved off their init, float64."""
    config = transformers.SiglipConfig(vision_config=vision, text_config=text)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.SiglipModel(config)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(perturb * torch.randn_like(p))
    return model.to(torch.float64).eval()


TINY = dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        image_size=48, patch_size=8),
            text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      vocab_size=64, max_position_embeddings=8))


@pytest.fixture(scope="module")
def tiny():
    return siglip(**TINY, seed=3)


def relative(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


def images(n=2, size=48, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def targets(k=3, dim=32, seed=1):
    return F.normalize(torch.randn(k, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_the_recorded_pass_is_get_image_and_text_features_at_vit_b16_sizes():
    model = siglip(dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=224, patch_size=16),
                   dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        vocab_size=32000, max_position_embeddings=64), seed=1)
    clip = ec.as_model(model)
    assert isinstance(clip, HFSiglipModel) and clip.pooling == "map" and clip.grid_size == (14, 14)
    x = images(2, 224)
    ids = torch.randint(0, 32000, (3, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative(clip.trace_vision(x).embedding, clip.encode_image(x)) <= 1e-6  # measured ~1e-15
        assert relative(clip.trace_text(ids).embedding, clip.encode_text(ids)) <= 1e-6


def grad_eclip_another_way(model, x, t, loosened=True):
    """The probe's attention from torch's own MultiheadAttention (its weights), the tokens from
    HF's own forward, the gradient of the deployed cosine by autograd through the head's modules."""
    head = model.vision_model.head
    mha = head.attention
    with torch.no_grad():
        tokens = model.vision_model(pixel_values=x).last_hidden_state  # (B, N, D) after post_layernorm
    probe = head.probe.expand(len(x), 1, -1)
    _, weights = mha(probe, tokens, tokens, need_weights=True, average_attn_weights=False)  # (B, H, 1, N)
    d = tokens.shape[-1]
    wq, wk, wv = mha.in_proj_weight.split(d)
    bq, bk, bv = mha.in_proj_bias.split(d)
    heads = mha.num_heads
    values = F.linear(tokens, wv, bv)  # (B, N, D)
    per_head = values.unflatten(-1, (heads, d // heads))  # (B, N, H, d)
    o = torch.einsum("bhn,bnhd->bhd", weights[:, :, 0].detach(), per_head).flatten(1).requires_grad_(True)
    h = mha.out_proj(o)
    emb = h + head.mlp(head.layernorm(h))
    with torch.no_grad():
        assert relative(emb, model.get_image_features(pixel_values=x).pooler_output) <= 1e-10
    scores = F.normalize(emb, dim=-1) @ t.T  # (B, K)
    maps = []
    for k in range(len(t)):
        g = torch.autograd.grad(scores[:, k].sum(), o, retain_graph=True)[0]  # (B, D)
        contrib = torch.einsum("bd,bnd->bn", g, values)
        if loosened:
            q = F.normalize(mha.out_proj(F.linear(probe[:, 0], wq, bq)), dim=-1)
            keys = F.normalize(mha.out_proj(F.linear(tokens, wk, bk)), dim=-1)
            contrib = minmax((keys @ q[:, :, None])[..., 0]) * contrib
        maps.append(contrib.clamp_min(0))
    return torch.stack(maps, 1).detach(), scores.detach()


@pytest.mark.parametrize("loosened", [True, False])
def test_grad_eclip_is_the_probe_attention_gradient_times_the_values(tiny, loosened):
    x, t = images(), targets()
    expected, scores = grad_eclip_another_way(tiny, x, t, loosened)
    got = ec.explain(tiny, x, t, method="grad_eclip", loosened=loosened)
    assert got.maps.shape == (2, 3, 6, 6)
    assert relative(got.maps.flatten(2), expected) <= 1e-10 and relative(got.scores, scores) <= 1e-12
    same = ec.explain(tiny, x, t, method="attention_eclip", loosened=loosened)
    assert relative(same.maps, got.maps) <= 1e-10  # the equivalence, with the probe's row


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_runs_with_its_certificate_or_is_refused_in_one_line(tiny, method):
    x, t = images(), targets()
    if "map" not in METHODS[method].poolings:
        with pytest.raises(UnsupportedModelError, match="reads a class token; .* pools with an attention probe") as err:
            ec.explain(tiny, x, t, method=method)
        assert "\n" not in str(err.value) and "grad_eclip" in str(err.value)
        return
    got = ec.explain(tiny, x, t, method=method, **CHEAP.get(method, {}))
    with torch.no_grad():
        own = F.normalize(ec.as_model(tiny).encode_image(x), dim=-1) @ t.T
    assert (got.scores - own).abs().max() <= 1e-10 and got.maps.shape == (2, 3, 6, 6)
    assert torch.isfinite(got.maps).all()


def test_the_published_mode_and_the_text_branch_are_refused(tiny):
    x, t = images(), targets()
    with pytest.raises(UnsupportedModelError, match="defined for class-token ViTs"):
        ec.explain(tiny, x, t, method="grad_eclip", mode="reference")
    with pytest.raises(UnsupportedModelError, match="text tower is not explained"):
        ec.explain_text(tiny, ["a cat"], x, method="grad_eclip", tokenizer=lambda texts: torch.zeros(1, 8).long())


def test_a_siglip_folder_loads_offline(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "siglip")
    json.dump({"image_mean": [0.4, 0.4, 0.4], "image_std": [0.3, 0.3, 0.3]},
              (tmp_path / "siglip" / "preprocessor_config.json").open("w"))
    clip = ec.load_model(tmp_path / "siglip")
    assert isinstance(clip, HFSiglipModel) and clip.input_normalisation() == ((0.4,) * 3, (0.3,) * 3)
    clip.module.to(torch.float64)
    x = images(1)
    with torch.no_grad():
        assert relative(clip.encode_image(x), ec.as_model(tiny).encode_image(x)) <= 1e-12
