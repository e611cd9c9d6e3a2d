"""open_clip's timm towers pooled by an attention probe (SigLIP, SigLIP 2) as a family: the
recorded pass reproduces ``encode_image`` / ``encode_text`` on ViT-B-16-SigLIP; Grad-ECLIP's map
computed another way through timm's own pooling module; Attention-ECLIP equals it; every method
defined for the pooling certifies the deployed cosine, the others are refused in one line;
``load_model`` builds it offline, and its Hugging Face tokenizer, absent, fails only when strings
are tokenized."""

import warnings

import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import eclip_core as ec
from eclip_core.errors import ModelLoadError, UnsupportedModelError
from eclip_core.explainers import METHODS
from eclip_core.maps import minmax
from eclip_core.trace.open_clip_timm import OpenClipTimmModel

pytestmark = pytest.mark.usefixtures("one_thread")
CHEAP = {"rise": dict(n_masks=8), "integrated_gradients": dict(steps=2), "occlusion": dict(window=7)}


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """1-D parameters moved off their 0 / 1 init (seeded), float64, eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.to(torch.float64).eval()


@pytest.fixture(scope="module")
def tiny():
    """A timm ViT-Ti/16 trunk pooled by an attention probe (as SigLIP's), a one-block text tower."""
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(4)
        model = open_clip.CustomTextCLIP(
            embed_dim=192,
            vision_cfg=dict(timm_model_name="vit_tiny_patch16_224", timm_pool="map", timm_proj="none",
                            image_size=224),
            text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=1, layers=1, no_causal_mask=True,
                          pool_type="last", proj_bias=True))
        # SigLIP's trunk layout (no class token, 'map' pooling) at ViT-Ti's size: 3 heads of 64, 12 blocks
        model.visual.trunk = timm.create_model("vit_tiny_patch16_224", pretrained=False, class_token=False,
                                               global_pool="map", num_classes=0)
    return perturbed(model, 5)


def relative(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


def images(n=1, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def targets(k=2, dim=192, seed=1):
    return F.normalize(torch.randn(k, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_the_recorded_pass_is_encode_image_and_text_on_vit_b16_siglip():
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = perturbed(open_clip.create_model("ViT-B-16-SigLIP", pretrained=None), 1)
    clip = ec.as_model(model)
    assert isinstance(clip, OpenClipTimmModel) and clip.pooling == "map" and clip.grid_size == (14, 14)
    x = images(2)
    ids = torch.randint(0, 32000, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative(clip.trace_vision(x).embedding, model.encode_image(x)) <= 1e-6  # measured ~4e-15
        assert relative(clip.trace_text(ids).embedding, model.encode_text(ids)) <= 1e-6


def grad_eclip_through_timm(model, x, t):
    """timm's own AttentionPoolLatent (unfused attention), its attention output caught on its way
    into the projection; the values from its own kv layer; autograd for dS/do."""
    trunk = model.visual.trunk
    pool = trunk.attn_pool
    pool.fused_attn = False
    caught = {}

    def catch(_module, args):
        caught["o"] = args[0]
        return None

    handle = pool.proj.register_forward_pre_hook(catch)
    try:
        tokens = trunk.forward_features(x)  # after the trunk's final norm
        emb = model.visual.head(trunk.forward_head(tokens))
    finally:
        handle.remove()
    d = tokens.shape[-1]
    _, values = pool.kv(tokens).split(d, dim=-1)
    q = F.normalize(pool.proj(pool.q(pool.latent[:, 0])), dim=-1)  # the loosened term, qk="out_proj"
    keys = F.normalize(pool.proj(pool.kv(tokens)[..., :d]), dim=-1)
    lam = minmax((keys @ q.T)[..., 0])
    scores = F.normalize(emb, dim=-1) @ t.T
    maps = []
    for k in range(len(t)):
        g = torch.autograd.grad(scores[:, k].sum(), caught["o"], retain_graph=True)[0][:, 0]  # (B, D)
        maps.append((lam * torch.einsum("bd,bnd->bn", g, values)).clamp_min(0))
    return torch.stack(maps, 1).detach(), scores.detach()


def test_grad_eclip_is_the_probe_attention_gradient_times_the_values(tiny):
    x, t = images(), targets()
    expected, scores = grad_eclip_through_timm(tiny, x, t)
    got = ec.explain(tiny, x, t, method="grad_eclip")
    assert got.maps.shape == (1, 2, 14, 14)
    assert relative(got.maps.flatten(2), expected) <= 1e-10 and relative(got.scores, scores) <= 1e-12
    assert relative(ec.explain(tiny, x, t, method="attention_eclip").maps, got.maps) <= 1e-10


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_runs_with_its_certificate_or_is_refused_in_one_line(tiny, method):
    x, t = images(), targets()
    if "map" not in METHODS[method].poolings:
        with pytest.raises(UnsupportedModelError, match="reads a class token; .* pools with an attention probe") as err:
            ec.explain(tiny, x, t, method=method)
        assert "\n" not in str(err.value)
        return
    got = ec.explain(tiny, x, t, method=method, **CHEAP.get(method, {}))
    with torch.no_grad():
        own = F.normalize(tiny.encode_image(x), dim=-1) @ t.T
    assert (got.scores - own).abs().max() <= 1e-10 and got.maps.shape == (1, 2, 14, 14)


def test_the_published_mode_and_keep_size_are_refused(tiny):
    with pytest.raises(UnsupportedModelError, match="defined for class-token ViTs"):
        ec.explain(tiny, images(), targets(), method="grad_eclip", mode="reference")


def test_load_model_builds_siglip_offline_and_names_the_missing_tokenizer():
    clip = ec.load_model("ViT-B-16-SigLIP")
    assert isinstance(clip, OpenClipTimmModel)
    normalize = [step for step in clip.preprocess.transforms if type(step).__name__ == "Normalize"][0]
    assert clip.input_normalisation() == (tuple(normalize.mean), tuple(normalize.std))  # the pipeline's own
    x = clip.native_input([Image.new("RGB", (300, 200), (90, 120, 30))])
    t = targets(1, 768)
    got = ec.explain(clip, x, t.float(), method="attention_eclip")  # embeddings need no tokenizer
    assert got.maps.shape == (1, 1, 14, 14)
    with pytest.raises(ModelLoadError, match="timm/ViT-B-16-SigLIP.*huggingface-cli download"):
        ec.explain(clip, x, ["a dog"])


def test_the_explanation_basis_answers_as_explain_does(tiny):
    """Any vocabulary for a matrix product holds with the probe too (the map is bilinear in the
    target and the head's values, as with a class token)."""
    x, t = images(2, seed=6), targets(5, seed=7)
    for method in ("grad_eclip", "attention_eclip"):
        direct = ec.explain(tiny, x, t, method=method)
        from_basis = ec.explanation_basis(tiny, x, method=method).explain(t)
        assert relative(from_basis.maps, direct.maps) <= 1e-10 and relative(from_basis.scores, direct.scores) <= 1e-12
