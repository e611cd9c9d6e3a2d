"""The zoo's certificates and identities: which forward pass every explanation explained,
the direct contributions' completeness, LeGrad's scores, CLIP Surgery's dependence on the
prompts, integrated gradients' completeness, and the equivalence atlas."""

import copy

import pytest
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.paper.atlas import compare, equivalence_atlas
from eclip_core.explainers import METHODS, Method, register, unregister
from eclip_core.explainers.direct import direct_terms
from eclip_core.models import random_clip

pytestmark = pytest.mark.usefixtures("one_thread")

#: Options that keep every method cheap on ViT-B-16 (maps are not checked there, only scores).
CHEAP = {"rise": dict(n_masks=2), "integrated_gradients": dict(steps=1), "occlusion": dict(window=7)}


@pytest.fixture(scope="module")
def tiny():
    """Two 4-head blocks with layer scale on 32x48 images (a 4x6 grid), float64."""
    return random_clip(dict(image_size=(32, 48), patch_size=8, width=32, layers=2, head_width=8,
                            ls_init_value=0.5), seed=3)


def _images(model, n=2, seed=0):
    dtype = next(model.parameters()).dtype
    return torch.randn(n, 3, *ec.as_model(model).image_size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _targets(model, k=3, seed=1):
    dtype = next(model.parameters()).dtype
    return F.normalize(torch.randn(k, ec.as_model(model).embed_dim, generator=torch.Generator().manual_seed(seed),
                                   dtype=dtype), dim=-1)


def _cosine(model, x, t):
    with torch.no_grad():
        return F.normalize(model.encode_image(x), dim=-1) @ t.T


# ----------------------------------------------------------------------------- the certificate


@pytest.mark.parametrize("model_name", ["tiny", "vit_b16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_faithful_mode_certifies_its_scores(request, model_name, method):
    """In faithful mode every method's scores are the model's cosine (1e-5); an explanation
    whose departures are empty is FAITHFUL, without scores_original; any other carries the
    original model's cosine and describes what ran differently, in words."""
    model = request.getfixturevalue(model_name)
    x = _images(model, 1 if model_name == "vit_b16" else 2)
    t = _targets(model, 2)
    got = ec.explain(model, x, t, method=method, **CHEAP.get(method, {}))
    own = _cosine(model, x, t)
    assert (got.scores - own).abs().max() <= 1e-5
    words = got.describe(model)
    if not words:
        assert got.departures == ec.FAITHFUL and got.scores_original is None
    else:
        assert got.departures.any and all(isinstance(w, str) and w for w in words)
        assert (got.scores_original - own).abs().max() <= 1e-5
        assert got.drift.abs().max() <= 1e-5  # the scores are the model's; the map is where it departs
    faithful_methods = {"grad_eclip", "attention_eclip", "attention", "rollout", "gae", "gradcam", "maskclip",
                        "rise", "direct_contributions", "integrated_gradients", "occlusion"}
    assert (not words) == (method in faithful_methods)


def test_departures_in_words(tiny):
    """Reference mode names the model's own numbers; LeGrad's mean pooling and CLIP Surgery
    carry their own departures; one frozen value throughout."""
    assert ec.FAITHFUL.describe() == [] and ec.FAITHFUL.summary() == "none"
    assert ec.PUBLISHED.describe(ec.as_model(tiny), input_size=(40, 56)) == [
        "last vision block recomputed with 1 head over the full width instead of 4",
        "input 40\u00d756 with interpolated positional embeddings instead of 32\u00d748"]
    assert ec.PUBLISHED.describe(ec.as_model(tiny), branch="text")[1].startswith("loosened term min-max")
    x, t = _images(tiny), _targets(tiny)
    mean = ec.explain(tiny, x, t, method="legrad", pooling="mean", n_blocks=1)
    assert mean.describe(tiny) == ["score from the mean of all tokens (CLS included) before ln_post and proj, "
                                   "not the CLS token (block 2): not the model's output, even at the last block"]
    surgery = ec.explain(tiny, x, t, method="clip_surgery")
    assert [w.split(":")[0] for w in surgery.describe(tiny)] == ["v-v attention in block 2",
                                                                 "each map relative to the prompts given"]
    assert surgery.departures.notes and surgery.departures.heads is None
    with pytest.raises(AttributeError):
        surgery.departures.notes = ()  # type: ignore[misc]
    with pytest.raises(ec.InputError, match="tuple of non-empty strings"):
        ec.Departures(notes=("",))
    assert ec.Departures(notes=("x",)).any and ec.FAITHFUL.with_notes() is ec.FAITHFUL


def test_reference_mode_reports_scores_original_on_the_text_branch(vit_b16, tokenizer_b16, images_224):
    texts = ["a photo of a dog", "a red car"]
    got = ec.explain_text(vit_b16, texts, images_224[:1], method="grad_eclip", mode="reference",
                          tokenizer=tokenizer_b16)
    with torch.no_grad():
        t = F.normalize(vit_b16.encode_image(images_224[:1]), dim=-1)
        own = F.normalize(vit_b16.encode_text(tokenizer_b16(texts)), dim=-1) @ t.T
    assert (got.scores_original - own).abs().max() <= 1e-5
    assert got.drift.abs().max() > 1e-4  # the one-head recompute of the text blocks
    assert got.describe(vit_b16)[0] == "explained text blocks recomputed with 1 head over the full width instead of 8"


# ----------------------------------------------------------------------------- LeGrad


def test_legrad_scores_and_each_blocks_relation_to_the_output(tiny):
    """CLS pooling: the last block's score is exactly the model's cosine, an earlier block's
    read-out is not; mean pooling: not even the last block's (the drift is reported)."""
    x, t = _images(tiny), _targets(tiny)
    own = _cosine(tiny, x, t)
    for n in (1, 2):
        cls = ec.explain(tiny, x, t, method="legrad", n_blocks=n)
        torch.testing.assert_close(cls.scores, own, rtol=0, atol=1e-12)
    tr = ec.trace_vision(tiny, x)
    earlier = F.normalize(ec.as_model(tiny).readout(tr.blocks[0].x_out[:, 0]), dim=-1) @ t.T
    assert (earlier - own).abs().max() > 1e-2
    mean = ec.explain(tiny, x, t, method="legrad", pooling="mean")
    torch.testing.assert_close(mean.scores_original, own, rtol=0, atol=1e-12)
    assert mean.drift.abs().max() > 1e-2
    with pytest.raises(ec.InputError, match="pooling must be one of 'cls', 'mean'"):
        ec.explain(tiny, x, t, method="legrad", pooling="max")
    with pytest.raises(ec.InputError, match=r"n_blocks must be an integer in 1\.\.2"):
        ec.explain(tiny, x, t, method="legrad", n_blocks=3)


# ----------------------------------------------------------------------------- direct contributions


@pytest.mark.slow
def test_direct_terms_sum_to_the_embedding(vit_b16, images_224, tiny):
    """Every (block, head, token), MLP, embedding and bias term together is encode_image:
    1e-5 (relative to the embedding) in float32 on ViT-B-16, 1e-12 in float64 with layer scale."""
    for model, x, tol in ((vit_b16, images_224[:1], 1e-5), (tiny, _images(tiny), 1e-12)):
        terms = direct_terms(model, x)
        with torch.no_grad():
            own = model.encode_image(x)
        err = ((terms.total() - own).abs().max() / own.abs().max()).item()
        print(f"{ec.as_model(model).depth()} blocks: completeness error {err:.1e}")
        assert err <= tol
    assert direct_terms(vit_b16, images_224[:1]).heads.shape == (1, 12, 12, 197, 512)  # (B, L, H, T, E)


def test_direct_map_is_the_patches_share_of_the_cosine(tiny):
    """All blocks: the map's sum plus every other term, dotted with the unit target over |e|,
    is the model's cosine."""
    x, t = _images(tiny), _targets(tiny)
    got = ec.explain(tiny, x, t, method="direct_contributions", n_blocks=2)
    terms = direct_terms(tiny, x)
    rest = terms.total() - terms.heads[:, :, :, 1:].sum((1, 2, 3))
    norm = terms.e.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(got.maps.sum((-1, -2)) + rest @ t.T / norm, _cosine(tiny, x, t),
                               rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- CLIP Surgery


def test_clip_surgery_maps_depend_on_the_other_prompts(tiny):
    x, t = _images(tiny), _targets(tiny, 3)
    both = ec.explain(tiny, x, t[:2], method="clip_surgery").maps[:, 0]
    other = ec.explain(tiny, x, t[[0, 2]], method="clip_surgery").maps[:, 0]
    assert (both - other).abs().max() > 1e-3  # the same prompt, another map
    alone = ec.explain(tiny, x, t[:1], method="clip_surgery")
    assert alone.maps.abs().max() == 0 and alone.departures.any


# ----------------------------------------------------------------------------- integrated gradients


def test_integrated_gradients_completeness(tiny):
    """The map sums to S(image) - S(black) as the steps grow (right Riemann sum: error ~ 1/m)."""
    x, t = _images(tiny), _targets(tiny)
    black = ec.explain(tiny, x, t, method="occlusion", window=8).maps[:, :, 0, 0]  # S(x) - S(all black)
    errors = [(ec.explain(tiny, x, t, method="integrated_gradients", steps=m).maps.sum((-1, -2)) - black)
              .abs().max().item() for m in (8, 64)]
    print(f"completeness error: {errors[0]:.2e} (8 steps), {errors[1]:.2e} (64 steps)")
    assert errors[1] <= errors[0] / 4 and errors[1] <= 0.02 * black.abs().max()


# ----------------------------------------------------------------------------- the atlas


def test_atlas_finds_the_equal_and_the_flipped():
    """Grad-ECLIP and Attention-ECLIP come out the same function; an explainer and its
    sign-flipped copy do not (rank correlation -1 on every map); LeGrad's last block and the
    attention gradient coincide up to a monotone map on a one-head model only."""
    def flipped(model, images, targets, *, departures=ec.FAITHFUL):
        maps, scores = METHODS["attention_eclip"].fn(model, images, targets, departures=departures, loosened=False)
        return -maps, scores

    register(Method("flipped_attention_gradient", flipped, "sign-flipped attention gradient (a test)"))
    try:
        models = {"one-head": random_clip(dict(image_size=32, patch_size=8, width=16, layers=2, head_width=16)),
                  "four-heads": random_clip(dict(image_size=(24, 32), patch_size=8, width=32, layers=2,
                                                 head_width=8), seed=1)}
        methods = {"grad_eclip": ("grad_eclip", {}), "attention_eclip": ("attention_eclip", {}),
                   "attention_gradient": ("attention_eclip", {"loosened": False}),
                   "flipped": ("flipped_attention_gradient", {}),
                   "legrad_last_block": ("legrad", {"n_blocks": 1})}
        table = equivalence_atlas(models, methods, n_boot=200).set_index(["first", "second"])
    finally:
        unregister("flipped_attention_gradient")
    print(table[["verdict", "median_rho", "ci_low", "ci_high", "monotone_on"]].to_string())
    assert table.loc[("grad_eclip", "attention_eclip"), "verdict"] == "same"
    assert table.loc[("grad_eclip", "attention_eclip"), "max_rel_diff"] <= 1e-10
    flip = table.loc[("attention_gradient", "flipped")]
    assert flip["verdict"] == "different" and flip["median_rho"] < 0
    row = table.loc[("attention_gradient", "legrad_last_block")]
    assert row["verdict"] == "different" and row["monotone_on"] == "one-head"
    assert set(table["verdict"]) <= {"same", "monotone", "different"} and len(table) == 10


def test_compare_says_monotone_for_a_rescaled_copy():
    a = {"m": torch.randn(6, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
    verdict = compare(a, {"m": 3 * a["m"] + 1}, n_boot=50)
    assert verdict["verdict"] == "monotone" and verdict["median_rho"] == pytest.approx(1)
    assert compare(a, {"m": copy.deepcopy(a["m"])}, n_boot=50)["verdict"] == "same"


def test_keep_size_input_of_the_models_own_size_is_no_departure():
    """The certificate names only what ran differently: a 64x64 scene's keep-size input is the
    embedded model's own 64x64 input (no interpolation), a 128x128 one is not."""
    from eclip_core.world import shapes

    bundle = ec.load_model()
    scene = shapes.eval_set(1, 1)[0]
    native = ec.explain(bundle, [scene.image], ["a red circle"], "grad_eclip", "reference").describe(bundle.model)
    assert len(native) == 1 and "head" in native[0]
    big = ec.explain(bundle, [scene.image.resize((128, 128))], ["a red circle"], "grad_eclip", "reference")
    words = big.describe(bundle.model)
    assert len(words) == 2 and "128\u00d7128" in words[1] and "interpolated" in words[1]


def test_certificates_table_checks_scores_against_the_model(tiny):
    """principles.certificates: faithful methods certify the model (no departures, drift 0,
    P1), reference modes do not; a method reporting shifted scores fails P1 with its shift."""
    from eclip_core.explainers import Method, register, unregister
    from eclip_core.explainers.base import cosine_scores
    from eclip_core.paper.p1 import certificates

    def shifted(model, images, targets, *, departures=ec.FAITHFUL):
        with torch.no_grad():
            scores = cosine_scores(model.encode_image(images), targets)
        return torch.ones(len(images), targets.shape[-2], *model.grid_size), scores + 0.01

    register(Method("shifted_scores", shifted, "a test method whose scores are 0.01 too high"))
    try:
        x, t = _images(tiny, 2), _targets(tiny, 3)
        table, words = certificates(tiny, x, t, specs=["grad_eclip", "grad_eclip:reference", "rise",
                                                       "shifted_scores"])
    finally:
        unregister("shifted_scores")
    assert table.loc["grad_eclip", "P1"] and table.loc["grad_eclip", "max_drift"] <= 1e-5
    assert table.loc["grad_eclip", "departures"] == 0 and words["grad_eclip"] == []
    assert table.loc["rise", "P1"] and table.loc["rise", "departures"] == 0
    assert not table.loc["grad_eclip:reference", "P1"] and table.loc["grad_eclip:reference", "departures"] >= 1
    assert (table["original_drift"] <= 1e-5).all()
    assert not table.loc["shifted_scores", "P1"]
    assert abs(table.loc["shifted_scores", "max_drift"] - 0.01) <= 1e-6


def test_notes_alone_do_not_change_the_forward_pass():
    """A method's notes make an explanation depart (certificate) without changing the forward
    pass the score comes from; the published heads and input do change it."""
    noted = ec.FAITHFUL.with_notes("a map from somewhere else")
    assert noted.any and not noted.changes_forward
    assert ec.PUBLISHED.changes_forward and not ec.FAITHFUL.changes_forward
