"""Every explainer against an independent reference, value by value (float64).

The references (``tests/reference_impl.py``) never touch ``eclip_core.trace`` or the
explainers' internals: they use the open_clip model's own forward with hooks, or redo a
block by hand with a loop over heads, and take gradients of ``F.cosine_similarity`` one
target at a time. The model is a tiny open_clip CLIP on a non-square 64x96 input (a 4x6
patch grid; 5x8 for the keep-size input of reference mode), so a transposed grid cannot
pass, with every bias and LayerNorm parameter randomised, so a dropped bias or norm
cannot pass either.
"""

import numpy as np
import open_clip
import pytest
import reference_impl as ref
import torch
import torch.nn.functional as F
from PIL import Image

import eclip_core as ec
from eclip_core.explainers.rise import rise_masks
from eclip_core.explainers import eclip as eclip_module

EMBED = 32
GRID = (4, 6)
KEEP_SIZE = (80, 128)  # reference-mode input: a 5x8 grid, the positional embeddings interpolated
pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a dog on a red mat", "two cats", "a green car parked in the shade of an old tree"]


def assert_maps_equal(got, expected, rel=1e-11):
    """Same shape, and values equal to round-off relative to the map's scale."""
    assert got.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0, "the reference map is all zeros: the test would not discriminate"
    err = (got - expected).abs().max().item()
    assert err <= rel * scale, f"max |got - expected| = {err:.3e} for a map scale of {scale:.3e}"


@pytest.fixture(scope="module")
def tiny():
    """open_clip CLIP, 3 vision blocks of 4 heads (64 wide) on 64x96 images with 16x16
    patches, 3 text blocks of 2 heads with open_clip's full vocabulary (so its tokenizer
    works), float64; biases and norm parameters perturbed away from their 0/1 init."""
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=EMBED,
        vision_cfg=dict(image_size=(64, 96), patch_size=16, width=64, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=3),
    ).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.tokenizer.SimpleTokenizer(context_length=16)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def keep_size_images():
    return torch.randn(1, 3, *KEEP_SIZE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def targets(k, seed=3):
    return F.normalize(torch.randn(k, EMBED, generator=torch.Generator().manual_seed(seed),
                                   dtype=torch.float64), dim=-1)


def model_scores(model, x, t):
    with torch.no_grad():
        return F.cosine_similarity(model.encode_image(x)[:, None], t[None], dim=-1)


# ----------------------------------------------------------------------------- the references


def test_references_reproduce_the_models_own_forward(tiny, images, tokenizer):
    """The hand-written blocks are the model's: per-head probabilities equal its own
    nn.MultiheadAttention's, and the recomputed towers give encode_image / encode_text."""
    inputs, own = ref.all_block_inputs(tiny, images)
    x = inputs[0]
    for block in tiny.visual.transformer.resblocks:
        rec = ref.block_by_hand(block, x)
        with torch.no_grad():
            mha = ref.mha_probs(block, x)
        torch.testing.assert_close(torch.stack(rec["probs"], 1), mha, rtol=1e-10, atol=1e-13)
        x = rec["out"]
    torch.testing.assert_close(ref.image_embedding_from_tokens(tiny.visual, x), own, rtol=1e-10, atol=1e-13)
    # and the text reference asserts its own agreement with encode_text
    ref.text_eclip(tiny, tokenizer(TEXTS), targets(1), route="grad", n_blocks=3)


# ----------------------------------------------------------------------------- Grad-/Attention-ECLIP


def force_forward_mode_beyond_reverse_limit(monkeypatch):
    """Attention-ECLIP in forward mode for every K above the reverse-mode limit (16), so the
    K = 40 cases test it on these few-token models too."""
    monkeypatch.setattr(eclip_module, "FORWARD_MODE_RATIO", 0)
    assert eclip_module.uses_forward_mode(40, 1000, 32) and not eclip_module.uses_forward_mode(3, 1, 32)


ECLIP_OPTIONS = [dict(loosened=True, qk="out_proj"), dict(loosened=True, qk="raw"), dict(loosened=False)]
ECLIP_IDS = ["loosened-out_proj", "loosened-raw", "no-loosened"]


@pytest.mark.parametrize("k,forward", [(3, True), (40, True), (40, False)],
                         ids=["K3-reverse", "K40-forward-mode-and-jacobian", "K40-reverse-jacobian"])
@pytest.mark.parametrize("options", ECLIP_OPTIONS, ids=ECLIP_IDS)
@pytest.mark.parametrize("method,route", [("grad_eclip", "grad"), ("attention_eclip", "attention")])
def test_image_eclip_faithful(tiny, images, method, route, options, k, forward, monkeypatch):
    """Faithful mode: Grad-ECLIP against w = W_out^T dS/d(attention output) from the model's
    own forward; Attention-ECLIP against dS/dA^h of a per-head hand-written last block.
    K = 40 exceeds both the reverse-mode limit (16: forward-mode AD, forced whatever the
    token count) and E = 32 (the pullback contracts a Jacobian); with ``forward`` off,
    Attention-ECLIP forms that Jacobian in reverse mode from 32 copies of the attention row."""
    if forward:
        force_forward_mode_beyond_reverse_limit(monkeypatch)
    else:
        monkeypatch.setattr(eclip_module, "REVERSE_MODE_TARGETS", 10**9)
        assert not eclip_module.uses_forward_mode(k, 1, 32)
    t = targets(k)
    got = ec.explain(tiny, images, t, method=method, **options)
    expected, expected_scores = ref.image_eclip(tiny, images, t, route=route, **options)
    assert got.maps.shape == (2, k, *GRID)
    assert_maps_equal(got.maps, expected)
    torch.testing.assert_close(got.scores, expected_scores, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)
    assert got.scores_original is None


@pytest.mark.parametrize("k", [3, 40], ids=["K3-reverse", "K40-forward-mode-and-jacobian"])
@pytest.mark.parametrize("options", ECLIP_OPTIONS, ids=ECLIP_IDS)
@pytest.mark.parametrize("method,route", [("grad_eclip", "grad"), ("attention_eclip", "attention")])
def test_image_eclip_reference_mode(tiny, keep_size_images, method, route, options, k, monkeypatch):
    """Reference mode on a 80x128 tensor: a deep copy of the model with bicubically
    interpolated positional embeddings (4x6 -> 5x8) gives the last block's input; that
    block is redone by hand with one head over the full width, scale 1/sqrt(D)."""
    force_forward_mode_beyond_reverse_limit(monkeypatch)
    t = targets(k, seed=4)
    got = ec.explain(tiny, keep_size_images, t, method=method, mode="reference", **options)
    expected, expected_scores = ref.image_eclip(tiny, keep_size_images, t, route=route,
                                                mode="reference", **options)
    assert got.maps.shape == (1, k, 5, 8)
    assert got.input_size == KEEP_SIZE
    assert_maps_equal(got.maps, expected)
    torch.testing.assert_close(got.scores, expected_scores, rtol=0, atol=1e-12)


def test_reference_mode_differs_from_faithful_where_it_should(tiny, images):
    """At the native size only the one-head recompute separates the modes: the maps and the
    scores must differ (the reference would equal the faithful map if heads were ignored)."""
    t = targets(2)
    faithful = ec.explain(tiny, images, t, method="grad_eclip")
    reference = ec.explain(tiny, images, t, method="grad_eclip", mode="reference")
    expected, expected_scores = ref.image_eclip(tiny, images, t, route="grad", mode="reference")
    assert_maps_equal(reference.maps, expected)
    torch.testing.assert_close(reference.scores, expected_scores, rtol=0, atol=1e-12)
    assert (reference.scores - faithful.scores).abs().max() > 1e-4
    torch.testing.assert_close(reference.scores_original, model_scores(tiny, images, t), rtol=0, atol=1e-12)


def keep_size_by_hand(image, preprocess, size_hw):
    """The keep-size tensor computed with PIL directly: bicubic resize, to [0, 1], normalise."""
    import numpy as np

    norm = [s for s in preprocess.transforms if type(s).__name__ == "Normalize"][0]
    resized = image.resize((size_hw[1], size_hw[0]), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).permute(2, 0, 1)
    mean = torch.tensor(norm.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(norm.std, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def test_keep_size_tensor_rounds_each_side_to_the_nearest_patch_multiple():
    """120x72: 72/16 = 4.5 rounds half up to 5 (Python's round would give 4), 120/16 = 7.5 -> 8.
    1000x700: the short side first shrunk to 640 (914x640), then 914/16 = 57.1 -> 57."""
    from open_clip import image_transform

    from eclip_core.inputs import keep_size_tensor

    preprocess = image_transform(224, is_train=False)
    rng = torch.Generator().manual_seed(5)
    small = Image.fromarray(torch.randint(0, 256, (72, 120, 3), generator=rng, dtype=torch.uint8).numpy())
    got = keep_size_tensor(small, preprocess, 16)
    assert got.shape == (3, 80, 128)
    torch.testing.assert_close(got, keep_size_by_hand(small, preprocess, (80, 128)), rtol=0, atol=1e-5)

    large = Image.fromarray(torch.randint(0, 256, (70, 100, 3), generator=rng, dtype=torch.uint8).numpy()
                            ).resize((1000, 700), Image.Resampling.NEAREST)
    got = keep_size_tensor(large, preprocess, 16)
    assert got.shape == (3, 640, 912)
    shrunk = large.resize((914, 640), Image.Resampling.BICUBIC)
    torch.testing.assert_close(got, keep_size_by_hand(shrunk, preprocess, (640, 912)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method,route", [("grad_eclip", "grad"), ("attention_eclip", "attention")])
def test_reference_mode_on_a_pil_image_explains_the_keep_size_input(tiny, method, route):
    """A 120x72 PIL image: reference mode explains the 80x128 keep-size input (5x8 grid),
    while scores_original is the model's own cosine on its native 64x96 preprocess."""
    from open_clip import image_transform

    preprocess = image_transform((64, 96), is_train=False)
    rng = torch.Generator().manual_seed(6)
    image = Image.fromarray(torch.randint(0, 256, (72, 120, 3), generator=rng, dtype=torch.uint8).numpy())
    t = targets(2, seed=7)
    got = ec.explain(tiny, image, t, method=method, mode="reference", preprocess=preprocess)
    assert got.input_size == KEEP_SIZE
    x = keep_size_by_hand(image, preprocess, KEEP_SIZE)[None].double()
    expected, expected_scores = ref.image_eclip(tiny, x, t, route=route, mode="reference")
    assert_maps_equal(got.maps, expected, rel=1e-5)  # the image itself is float32
    torch.testing.assert_close(got.scores, expected_scores, rtol=0, atol=1e-6)
    native = preprocess(image)[None].double()
    torch.testing.assert_close(got.scores_original, model_scores(tiny, native, t), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- text branch


TEXT_CASES = [
    ("grad", "faithful", dict(loosened=True, qk="out_proj"), None),
    ("attention", "faithful", dict(loosened=True, qk="out_proj"), None),
    ("grad", "faithful", dict(loosened=True, qk="raw"), 2),
    ("attention", "faithful", dict(loosened=False), 2),
    ("grad", "faithful", dict(loosened=False), 1),
    ("grad", "reference", dict(loosened=True, qk="out_proj"), None),
    ("attention", "reference", dict(loosened=True, qk="out_proj"), 2),
    ("attention", "reference", dict(loosened=True, qk="raw"), None),
    ("grad", "reference", dict(loosened=False), 2),
]


@pytest.mark.parametrize("route,mode,options,n_blocks", TEXT_CASES,
                         ids=[f"{r}-{m}-{'-'.join(map(str, o.values()))}-n{n}" for r, m, o, n in TEXT_CASES])
def test_text_branch(tiny, tokenizer, route, mode, options, n_blocks):
    """explain_text against the hand-written text blocks: EOT query (argmax token id),
    tokens strictly between SOT and EOT, causal mask, sum over the last n blocks (all 3
    by default here), ReLU, sum 1; lambda min-max over the explained tokens (faithful) or
    over all positions (reference); one head over the full width in reference mode."""
    method = "grad_eclip" if route == "grad" else "attention_eclip"
    t = targets(3, seed=8)
    got = ec.explain_text(tiny, TEXTS, t, method=method, mode=mode, tokenizer=tokenizer,
                          n_blocks=n_blocks, **options)
    tokens = tokenizer(TEXTS)
    expected, expected_scores = ref.text_eclip(tiny, tokens, t, route=route, mode=mode,
                                               n_blocks=n_blocks or 3, **options)
    assert got.maps.shape == (3, 3, 16)
    assert_maps_equal(got.maps, expected)
    eot = tokens.argmax(-1)
    positions = torch.arange(16)
    assert torch.equal(got.token_mask, (positions > 0) & (positions < eot[:, None]))
    assert [len(w) for w in got.extras["words"]] == (eot - 1).tolist()
    torch.testing.assert_close(got.scores, expected_scores, rtol=0, atol=1e-12)
    if mode == "faithful":
        with torch.no_grad():
            own = F.cosine_similarity(tiny.encode_text(tokens)[:, None], t[None], dim=-1)
        torch.testing.assert_close(got.scores, own, rtol=0, atol=1e-12)


def test_text_branch_against_images(tiny, tokenizer, images):
    """Images as targets: their unit embeddings from encode_image."""
    got = ec.explain_text(tiny, TEXTS[:2], images, method="attention_eclip", tokenizer=tokenizer)
    with torch.no_grad():
        t = F.normalize(tiny.encode_image(images), dim=-1)
    expected, scores = ref.text_eclip(tiny, tokenizer(TEXTS[:2]), t, route="attention", n_blocks=3)
    assert_maps_equal(got.maps, expected)
    torch.testing.assert_close(got.scores, scores, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- baselines


def test_raw_attention(tiny, images):
    t = targets(2)
    got = ec.explain(tiny, images, t, method="attention")
    expected = ref.raw_attention(tiny, images)
    assert_maps_equal(got.maps, expected[:, None].expand(-1, 2, -1, -1))
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("start_block", [0, 1, 2])
def test_rollout(tiny, images, start_block):
    t = targets(2)
    got = ec.explain(tiny, images, t, method="rollout", start_block=start_block)
    expected = ref.rollout(tiny, images, start_block)
    assert_maps_equal(got.maps, expected[:, None].expand(-1, 2, -1, -1))
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("last_block_only", [False, True], ids=["rollout", "last-block"])
@pytest.mark.parametrize("logit_scale", [1.0, 100.0])
def test_gae(tiny, images, last_block_only, logit_scale):
    t = targets(20)  # more than one chunk of 16 targets
    got = ec.explain(tiny, images, t, method="gae", last_block_only=last_block_only,
                     logit_scale=logit_scale)
    expected = ref.gae(tiny, images, t, last_block_only=last_block_only, logit_scale=logit_scale)
    assert_maps_equal(got.maps, expected)
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls_token", ["kept", "dropped"])
@pytest.mark.parametrize("k", [3, 40], ids=["K3", "K40-jacobian"])
def test_gradcam(tiny, images, k, cls_token):
    """Gradient from the model's own forward, w.r.t. a leaf swapped in for the last block's input;
    the weights averaged over every token or over the patch tokens only."""
    t = targets(k)
    got = ec.explain(tiny, images, t, method="gradcam", cls_token=cls_token)
    expected = ref.gradcam(tiny, images, t, cls_token=cls_token)
    assert_maps_equal(got.maps, expected)
    assert (got.maps > 0).float().mean() > 0.1
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


def test_maskclip(tiny, images):
    t = targets(3)
    got = ec.explain(tiny, images, t, method="maskclip")
    expected = ref.maskclip(tiny, images, t)
    assert_maps_equal(got.maps, expected)
    assert (got.maps < 0).any() and (got.maps > 0).any()  # a cosine, no ReLU
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


def test_rise(tiny, images):
    """The same masks (rise_masks, same seed), scored with encode_image one mask at a time,
    then averaged over each 16x16 patch by reshaping (not adaptive pooling)."""
    t = targets(2)
    n, cells, keep, seed = 12, 4, 0.5, 7
    got = ec.explain(tiny, images, t, method="rise", n_masks=n, cells=cells, keep=keep, seed=seed,
                     batch_size=5)
    masks = rise_masks(n, (64, 96), cells, keep, torch.Generator().manual_seed(seed)).double()
    expected = ref.rise(tiny, images, t, masks, keep)
    assert_maps_equal(got.maps, expected)
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


def test_edges_control(tiny, images):
    """By hand, pixel by pixel: |I(y, x+1) - I(y, x)| + |I(y+1, x) - I(y, x)| of the channel
    mean (on the (H-1) x (W-1) pixels where both exist), averaged over each patch's pixels
    with adaptive pooling's bins; the same map for every target, blind to the model."""
    t = targets(2)
    got = ec.explain(tiny, images, t, method="edges")
    gray = images.double().mean(1).numpy()  # (B, 64, 96)
    edge = np.abs(gray[:, :-1, 1:] - gray[:, :-1, :-1]) + np.abs(gray[:, 1:, :-1] - gray[:, :-1, :-1])  # 63 x 95
    expected = np.zeros((len(images), 4, 6))
    for r in range(4):
        for c in range(6):  # adaptive pooling bins: floor(i*L/n) .. ceil((i+1)*L/n)
            r0, r1 = (r * 63) // 4, -(-((r + 1) * 63) // 4)
            c0, c1 = (c * 95) // 6, -(-((c + 1) * 95) // 6)
            expected[:, r, c] = edge[:, r0:r1, c0:c1].mean((1, 2))
    for k in range(2):
        np.testing.assert_allclose(got.maps[:, k].double().numpy(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", sorted(ec.METHODS))
def test_faithful_scores_are_the_models_cosine(tiny, images, tokenizer, method):
    """Strings through the tokenizer: scores = cos(encode_image(x), encode_text(tokens))."""
    texts = ["a red circle", "a blue square"]
    options = dict(n_masks=2) if method == "rise" else {}
    got = ec.explain(tiny, images, texts, method=method, tokenizer=tokenizer, **options)
    assert got.maps.dtype == got.scores.dtype == torch.float64  # the model's dtype, end to end
    with torch.no_grad():
        t = tiny.encode_text(tokenizer(texts))
        expected = F.cosine_similarity(tiny.encode_image(images)[:, None], t[None], dim=-1)
    torch.testing.assert_close(got.scores, expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- the zoo


@pytest.mark.parametrize("k", [3, 20], ids=["K3", "K20-two-chunks"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("n_blocks", [1, 2, 3])
def test_legrad(tiny, images, n_blocks, pooling, k):
    """Hand-written blocks, one target and one block at a time, autograd of each block's own
    cosine w.r.t. each head's probabilities; the returned scores are the last block's."""
    t = targets(k)
    got = ec.explain(tiny, images, t, method="legrad", n_blocks=n_blocks, pooling=pooling)
    expected, expected_scores = ref.legrad(tiny, images, t, n_blocks=n_blocks, pooling=pooling)
    assert_maps_equal(got.maps, expected)
    torch.testing.assert_close(got.scores, expected_scores, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.maps.amin((-1, -2)), torch.zeros(2, k, dtype=torch.float64))
    if pooling == "cls":  # at the last block the score is the model's own cosine
        torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_blocks", [1, 3])
@pytest.mark.parametrize("split", ["own_mean", "textspan"])
def test_direct_contributions(tiny, images, n_blocks, split):
    """A loop over blocks, heads and patches on the hand-written blocks, ln_post's statistics
    taken from the final CLS token by hand, divided by |encode_image|; each term centred on its
    own mean, or (TextSpan's code) the attention bias split over tokens and heads and the norm's
    mean and bias over all (2L + 1) T H terms."""
    t = targets(3)
    got = ec.explain(tiny, images, t, method="direct_contributions", n_blocks=n_blocks, split=split)
    assert_maps_equal(got.maps, ref.direct_contributions(tiny, images, t, n_blocks=n_blocks, split=split))
    assert (got.maps < 0).any() and (got.maps > 0).any()  # no ReLU
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_blocks", [1, 2])
def test_clip_surgery(tiny, images, n_blocks, weighted):
    """The public code's dual path redone by hand (v-v attention per head, no MLP) and its
    feature surgery by element-wise products; the scores stay the model's own."""
    t = targets(4)
    got = ec.explain(tiny, images, t, method="clip_surgery", n_blocks=n_blocks, weighted=weighted)
    assert_maps_equal(got.maps, ref.clip_surgery(tiny, images, t, n_blocks=n_blocks, weighted=weighted))
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)
    torch.testing.assert_close(got.scores_original, got.scores, rtol=0, atol=1e-12)


@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_integrated_gradients_equal_pixel_space_ig_pooled_per_patch(tiny, images, baseline):
    """Pixel-space IG through encode_image (one step, one target at a time), summed over the
    channels and pixels of each patch, equals IG on the patch embeddings: conv1 is linear and
    its patches do not overlap."""
    t = targets(3)
    got = ec.explain(tiny, images, t, method="integrated_gradients", steps=5, baseline=baseline, batch_size=4)
    base = ref.black(images) if baseline == "black" else torch.zeros_like(images)
    assert_maps_equal(got.maps, ref.integrated_gradients(tiny, images, t, base, steps=5))
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_occlusion(tiny, images, baseline):
    t = targets(3)
    got = ec.explain(tiny, images, t, method="occlusion", baseline=baseline, batch_size=5)
    base = ref.black(images) if baseline == "black" else torch.zeros_like(images)
    assert_maps_equal(got.maps, ref.occlusion(tiny, images, t, base))
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


def test_centre_control(tiny, images):
    """exp(-(r^2 + c^2) / 0.5) on a grid of coordinates from -1 to 1, written out cell by cell;
    the same for every image and text; the scores are the model's own."""
    t = targets(2)
    got = ec.explain(tiny, images, t, method="centre")
    gh, gw = GRID
    expected = torch.tensor([[np.exp(-((-1 + 2 * r / (gh - 1)) ** 2 + (-1 + 2 * c / (gw - 1)) ** 2) / 0.5)
                              for c in range(gw)] for r in range(gh)], dtype=torch.float64)
    assert_maps_equal(got.maps, expected.expand(2, 2, gh, gw))
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


def test_random_control_is_blind_to_the_model_and_the_text(tiny, images):
    """The same map for the same image whatever the model, the text and the batch it comes in;
    another image or seed, another map; uniform values in [0, 1)."""
    t = targets(2)
    got = ec.explain(tiny, images, t, method="random")
    other_model = ec.explain(random_clip_like(tiny), images, targets(3), method="random")
    alone = ec.explain(tiny, images[1:], t[:1], method="random")
    assert torch.equal(got.maps[:, 0], got.maps[:, 1]) and torch.equal(got.maps[:, 0], other_model.maps[:, 0])
    assert torch.equal(alone.maps[0, 0], got.maps[1, 0])
    assert not torch.equal(got.maps[0, 0], got.maps[1, 0])
    assert not torch.equal(ec.explain(tiny, images, t, method="random", seed=1).maps, got.maps)
    assert got.maps.min() >= 0 and got.maps.max() < 1 and got.maps.std() > 0.1
    torch.testing.assert_close(got.scores, model_scores(tiny, images, t), rtol=0, atol=1e-12)


def random_clip_like(model):
    """Another model of the same shapes: every parameter redrawn."""
    import copy

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return twin
