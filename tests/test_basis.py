"""The explanation basis: maps of any targets from one matrix product per image equal
`explain`'s, for every option and both modes, in float64; what is saved is read back; bad
input is refused in one line."""

import json

import pytest
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.explainers.basis import FORMAT, explanation_basis, load_basis, text_explanation_basis
from eclip_core.world import shapes

pytestmark = pytest.mark.usefixtures("one_thread")

EMBED = 24
OPTIONS = [{}, {"loosened": False}, {"qk": "raw"}, {"loosened": False, "qk": "raw"}]


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def targets(k, seed=3, width=EMBED):
    return F.normalize(torch.randn(k, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64),
                       dim=-1)


def assert_close(got, expected, rel=1e-12):
    scale = expected.abs().max().item()
    assert scale > 0 and got.shape == expected.shape
    assert (got - expected).abs().max().item() <= rel * scale


@pytest.mark.parametrize("method", ["grad_eclip", "attention_eclip"])
@pytest.mark.parametrize("mode", ["faithful", "reference"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_maps_from_the_basis_are_explains(small_vit, images, method, mode, options):
    t = targets(37) * torch.linspace(0.5, 3.0, 37, dtype=torch.float64)[:, None]  # any norm: explained as unit
    basis = explanation_basis(small_vit, images, method, mode, **options)
    got = basis.explain(t, chunk=8)  # chunks of 8: the last one short
    expected = ec.explain(small_vit, images, t, method=method, mode=mode, **options)
    assert_close(got.maps, expected.maps)
    assert torch.allclose(got.scores, expected.scores, rtol=0, atol=1e-14)
    assert got.departures == expected.departures and str(got.request) == str(expected.request)
    assert basis.rows.shape == (3, 24, EMBED) and basis.grid == (4, 6)


def test_the_basis_is_the_map_before_its_relu(small_vit, images):
    """Each row times a target is the map where it is positive and at most 0 where the map is
    0 (the ReLU comes after the product), so the sign and the transpose of every factor are
    pinned; and a target's map is linear in it before the ReLU."""
    t = targets(5)
    basis = explanation_basis(small_vit, images)
    before = torch.einsum("bne,ke->bkn", basis.rows, t).reshape(3, 5, 4, 6)
    maps = ec.explain(small_vit, images, t, method="grad_eclip").maps
    assert_close(before.clamp_min(0), maps)
    assert (before[maps == 0] <= 0).all() and (maps > 0).any() and (before < 0).any()


@pytest.mark.slow
def test_the_basis_of_a_real_size_model(vit_b16_f64, images_224):
    """ViT-B-16 (random init, float64, 224 px): 1,000 targets, both modes."""
    t = targets(1000, width=512)
    x = images_224[:1].double()
    for mode in ("faithful", "reference"):
        got = explanation_basis(vit_b16_f64, x, mode=mode).explain(t)
        assert_close(got.maps, ec.explain(vit_b16_f64, x, t, method="grad_eclip", mode=mode).maps, rel=1e-10)


def test_texts_need_the_model_that_embeds_them_and_a_saved_basis_reads_back(tmp_path):
    """Strings are embedded by the model the basis came from; saved, the basis is read back with
    its rows bit for bit, its request, departures, grid, input size, the deployed model's
    embeddings (the certificate of the reference mode) and unicode image names."""
    model = ec.load_model()
    scenes = shapes.eval_set(2, (1, 2))
    prompts = shapes.prompts()[:6]
    basis = explanation_basis(model, [s.image for s in scenes], "attention_eclip", "reference", names=["α.png", "b"])
    direct = ec.explain(model, [s.image for s in scenes], prompts, method="attention_eclip", mode="reference")
    from_texts = basis.explain(prompts, model)
    assert_close(from_texts.maps, direct.maps, rel=1e-5)  # float32
    assert torch.allclose(from_texts.scores_original, direct.scores_original, atol=1e-6)
    path = basis.save(tmp_path / "deep" / "basis.safetensors")
    again = load_basis(path)
    assert torch.equal(again.rows, basis.rows) and torch.equal(again.embeddings, basis.embeddings)
    assert torch.equal(again.original, basis.original) and again.names == ["α.png", "b"]
    assert (str(again.request), again.departures, again.grid, again.input_size, again.model) == \
        (str(basis.request), basis.departures, basis.grid, basis.input_size, basis.model)
    embedded = model.text_embeddings(prompts)
    assert_close(again.explain(embedded).maps, basis.explain(embedded).maps, rel=1e-6)
    assert again.bytes_per_image == (64 * 64 + 2 * 64) * 4  # rows, the embedding and the deployed one
    with pytest.raises(ec.InputError, match="need the model"):
        again.explain(prompts)
    with pytest.raises(ec.InputError, match="made with 'eclip-shapes'"):
        again.explain(prompts, ec.load_model("eclip-shapes-shuffled"))


def test_bad_input_is_refused_in_one_line(small_vit, images, tmp_path):
    with pytest.raises(ec.InputError, match="exists for grad_eclip, attention_eclip"):
        explanation_basis(small_vit, images, "gae")
    with pytest.raises(ec.InputError, match="2 names for 3 images"):
        explanation_basis(small_vit, images, names=["a", "b"])
    basis = explanation_basis(small_vit, images)
    with pytest.raises(ec.InputError, match=r"must be \(K, 24\)"):
        basis.explain(targets(3, width=23))
    with pytest.raises(ec.InputError, match="chunk"):
        basis.explain(targets(3), chunk=0)
    with pytest.raises(ec.InputError, match="no basis file"):
        load_basis(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "x"})
    with pytest.raises(ec.InputError, match=f"expected '{FORMAT}'"):
        load_basis(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ec.InputError, match="not a readable safetensors"):
        load_basis(tmp_path / "junk.safetensors")


def test_the_saved_metadata_is_what_made_the_basis(small_vit, images, tmp_path):
    from safetensors import safe_open

    path = explanation_basis(small_vit, images, "grad_eclip", qk="raw").save(tmp_path / "b.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and meta["method"] == "grad_eclip" and meta["mode"] == "faithful"
    assert json.loads(meta["options"])["qk"] == "raw" and json.loads(meta["grid"]) == [4, 6]
    assert json.loads(meta["input_size"]) == [64, 96]
    again = load_basis(path)
    assert again.grid == (4, 6) and again.input_size == (64, 96) and again.request.options["qk"] == "raw"
    assert again.explain(targets(2)).maps.shape == (3, 2, 4, 6)


@pytest.fixture(scope="module")
def embedded64():
    import copy

    clip = ec.load_model()
    return clip.with_module(copy.deepcopy(clip.module).double())


TEXTS = ["a red circle", "a blue square and a green triangle"]


@pytest.mark.parametrize("method", ["grad_eclip", "attention_eclip"])
@pytest.mark.parametrize("mode", ["faithful", "reference"])
@pytest.mark.parametrize("options", [{}, {"loosened": False}, {"qk": "raw", "n_blocks": 1}],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_text_maps_from_the_basis_are_explain_texts(embedded64, method, mode, options):
    """The text branch: a basis per text (one row per token); the maps of any image embeddings
    equal explain_text's (ReLU, explained tokens, normalised to sum 1), in float64."""
    images = targets(9, width=64)
    basis = text_explanation_basis(embedded64, TEXTS, method, mode, **options)
    got = basis.explain(images, chunk=4)
    expected = ec.explain_text(embedded64, TEXTS, images, method=method, mode=mode, **options)
    assert got.branch == "text" and torch.equal(got.token_mask, expected.token_mask)
    assert_close(got.maps, expected.maps)
    assert torch.allclose(got.scores, expected.scores, rtol=0, atol=1e-14)
    if mode == "reference":
        assert torch.allclose(got.scores_original, expected.scores_original, rtol=0, atol=1e-14)
    assert basis.rows.shape[:2] == expected.token_mask.shape


def test_a_text_basis_reads_back_and_takes_images(embedded64, tmp_path):
    scenes = shapes.eval_set(3, (1, 2))
    basis = text_explanation_basis(embedded64, TEXTS)
    again = load_basis(basis.save(tmp_path / "texts.safetensors"))
    assert again.branch == "text" and again.names == TEXTS and torch.equal(again.token_mask, basis.token_mask)
    assert torch.equal(again.rows, basis.rows) and again.request.text
    from_images = again.explain([s.image for s in scenes], embedded64)
    expected = ec.explain_text(embedded64, TEXTS, [s.image for s in scenes], method="grad_eclip")
    assert_close(from_images.maps, expected.maps, rel=1e-10)
    with pytest.raises(ec.InputError, match="images as targets need the model"):
        again.explain([s.image for s in scenes])
    with pytest.raises(ec.InputError, match="has no text branch"):
        text_explanation_basis(embedded64, TEXTS, "gae")
