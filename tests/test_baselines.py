"""Baseline explainers on constructed cases whose right answer is known."""

import pytest
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.explainers.rise import rise_masks, rise_saliency
from eclip_core import trace_vision

GRADIENT_AND_ATTENTION = ["grad_eclip", "attention_eclip", "attention", "rollout", "gae", "gradcam",
                          "maskclip", "legrad", "direct_contributions", "clip_surgery", "integrated_gradients",
                          "occlusion"]
#: CLIP Surgery subtracts the mean over the prompts given: the one method not batched over targets.
PROMPT_RELATIVE = {"clip_surgery"}


@pytest.fixture(scope="module")
def symmetric_case(one_head_clip):
    """Positional embeddings zeroed and a constant image except one patch at grid (1, 4):
    every other patch is the same token, so every map must be equal on them."""
    import copy

    model = copy.deepcopy(one_head_clip)
    with torch.no_grad():
        model.visual.positional_embedding[1:] = 0
    image = torch.full((1, 3, 224, 224), 0.3)
    image[:, :, 32:64, 128:160] = torch.tensor([1.5, -1.0, 0.5])[:, None, None]
    targets = F.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(5)), dim=-1)
    return model, image, targets


@pytest.mark.parametrize("method", GRADIENT_AND_ATTENTION)
def test_identical_patches_get_identical_values(symmetric_case, method):
    model, image, targets = symmetric_case
    maps = ec.explain(model, image, targets, method=method).maps[0]  # (K, 7, 7)
    assert maps.shape == (3, 7, 7)
    others = torch.ones(7, 7, dtype=torch.bool)
    others[1, 4] = False
    rest = maps[:, others]
    scale = maps.abs().amax() + 1e-12
    spread = ((rest.amax(-1) - rest.amin(-1)) / scale).max().item()
    print(f"{method}: spread over identical patches {spread:.1e} of the map's scale")
    assert spread <= 1e-4


@pytest.mark.parametrize("method", ["attention", "rollout", "gae", "attention_eclip", "maskclip", "legrad",
                                    "direct_contributions", "clip_surgery", "integrated_gradients", "occlusion"])
def test_odd_patch_stands_out_where_it_is(symmetric_case, method):
    """The odd patch is at row 1, column 4: a transposed or shifted grid puts it elsewhere."""
    model, image, targets = symmetric_case
    maps = ec.explain(model, image, targets, method=method).maps[0]
    odd = maps[:, 1, 4]
    other = maps[:, 0, 0]
    assert (odd - other).abs().max() > 1e-6


@pytest.mark.slow
def test_raw_attention_matches_multihead_attention_weights(vit_b16, images_224):
    with torch.no_grad():
        tr = trace_vision(vit_b16, images_224)
        block = vit_b16.visual.transformer.resblocks[-1]
        z = block.ln_1(tr.blocks[-1].x_in)
        _, weights = block.attn(z, z, z, need_weights=True, average_attn_weights=True)
    maps = ec.explain(vit_b16, images_224, torch.ones(1, 512), method="attention").maps
    expected = weights[:, 0, 1:].reshape(2, 14, 14)
    assert torch.allclose(maps[:, 0], expected, atol=1e-6)


def test_rollout_of_one_block_is_the_renormalised_attention(one_head_clip):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    from eclip_core.explainers.attention import attention_rollout

    maps, _ = attention_rollout(ec.as_model(one_head_clip), x, torch.ones(1, 32), start_block=1)
    with torch.no_grad():
        attn = trace_vision(one_head_clip, x).blocks[-1].attn.mean(1)[0]
    a = attn + torch.eye(attn.shape[0])
    expected = (a / a.sum(-1, keepdim=True))[0, 1:].reshape(7, 7)
    assert torch.allclose(maps[0, 0], expected, atol=1e-6)


def test_gae_last_block_only_is_the_gradient_weighted_attention(one_head_clip):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    t = F.normalize(torch.randn(1, 32, generator=torch.Generator().manual_seed(4)), dim=-1)
    maps = ec.explain(one_head_clip, x, t, method="gae", last_block_only=True).maps[0, 0]
    tr = trace_vision(one_head_clip, x)
    score = F.cosine_similarity(tr.embedding, t)[0]
    attn = tr.blocks[-1].attn
    grad = torch.autograd.grad(score, attn)[0]
    expected = (grad * attn).clamp_min(0).mean(1)[0, 0, 1:].reshape(7, 7)
    assert torch.allclose(maps, expected.detach(), atol=1e-7)


def test_rise_finds_the_only_region_the_score_depends_on():
    """A score that reads one 16x16 region only: RISE must put its mass there."""
    gen = torch.Generator().manual_seed(0)
    masks = rise_masks(2000, (64, 64), cells=8, keep=0.5, generator=gen)
    image = torch.ones(3, 64, 64)

    def score(batch):
        return batch[:, :, 16:32, 40:56].mean(dim=(1, 2, 3))[:, None]

    sal = rise_saliency(score, image, masks, keep=0.5)[0]
    inside = sal[16:32, 40:56].mean()
    far = torch.cat([sal[:8].flatten(), sal[40:].flatten()])  # beyond the masks' smoothing reach
    contrast = (inside - far.mean()) / far.std()
    print(f"RISE: inside {inside:.3f}, far outside {far.mean():.3f} +- {far.std():.3f}, "
          f"contrast {contrast:.1f} sd")
    # RISE's estimate carries an offset E[S]; the region must stand out from the noise around it
    assert contrast > 5
    row, col = divmod(int(sal.argmax()), 64)
    assert 16 <= row < 32 and 40 <= col < 56
    assert torch.isfinite(sal).all()


def test_rise_through_explain_is_deterministic_and_on_the_grid(one_head_clip):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    t = torch.ones(2, 32)
    a = ec.explain(one_head_clip, x, t, method="rise", n_masks=40, seed=3).maps
    b = ec.explain(one_head_clip, x, t, method="rise", n_masks=40, seed=3).maps
    assert a.shape == (1, 2, 7, 7)
    assert torch.equal(a, b)


def test_every_method_is_batched_over_targets(one_head_clip):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    t = F.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(6)), dim=-1)
    for method in GRADIENT_AND_ATTENTION:
        together = ec.explain(one_head_clip, x, t, method=method).maps
        single = ec.explain(one_head_clip, x, t[1:2], method=method).maps
        if method in PROMPT_RELATIVE:  # its map of a prompt depends on the other prompts given
            assert not torch.allclose(together[:, 1], single[:, 0], rtol=1e-4, atol=1e-7), method
            continue
        assert torch.allclose(together[:, 1], single[:, 0], rtol=1e-4, atol=1e-7), method
