"""Bad input gets a clear error naming the problem, before any heavy work."""

import warnings

import open_clip
import pytest
import torch

import eclip_core as ec


def test_resnet_model_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rn50 = open_clip.create_model("RN50", pretrained=None)
    with pytest.raises(ec.UnsupportedModelError, match="not a vision transformer"):
        ec.explain(rn50, torch.zeros(1, 3, 224, 224), torch.ones(1, 1024))


@pytest.mark.parametrize("shape", [(3, 224), (2, 1, 224, 224), (1, 3, 200, 200), (0, 3, 224, 224)])
def test_wrong_image_tensor_shape(vit_b16, shape):
    with pytest.raises(ec.InputError, match="images|image"):
        ec.explain(vit_b16, torch.zeros(shape), torch.ones(1, 512))


@pytest.mark.parametrize("texts,message", [([""], "empty"), (["   "], "empty"), ([], "no targets"),
                                           (["ok", 3], "not a string")])
def test_bad_texts(vit_b16, tokenizer_b16, texts, message):
    with pytest.raises(ec.InputError, match=message):
        ec.explain(vit_b16, torch.zeros(1, 3, 224, 224), texts, tokenizer=tokenizer_b16)


def test_zero_target_embeddings(vit_b16):
    with pytest.raises(ec.InputError, match="no targets"):
        ec.explain(vit_b16, torch.zeros(1, 3, 224, 224), torch.zeros(0, 512))


def test_target_embeddings_of_wrong_width(vit_b16):
    with pytest.raises(ec.InputError, match=r"\(K, 512\)"):
        ec.explain(vit_b16, torch.zeros(1, 3, 224, 224), torch.ones(2, 300))


def test_unreadable_image_file(vit_b16, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is text, not a PNG")
    preprocess = open_clip.image_transform(224, is_train=False)
    with pytest.raises(ec.InputError, match="cannot read image"):
        ec.explain(vit_b16, [bad], torch.ones(1, 512), preprocess=preprocess)
    with pytest.raises(ec.InputError, match="no such file"):
        ec.explain(vit_b16, [tmp_path / "missing.jpg"], torch.ones(1, 512), preprocess=preprocess)


def test_unknown_method_and_mode(vit_b16):
    with pytest.raises(ec.InputError, match="available"):
        ec.explain(vit_b16, torch.zeros(1, 3, 224, 224), torch.ones(1, 512), method="nope")
    with pytest.raises(ec.InputError, match="mode"):
        ec.explain(vit_b16, torch.zeros(1, 3, 224, 224), torch.ones(1, 512), mode="other")


def test_unknown_model_name_lists_available():
    with pytest.raises(ec.ModelLoadError, match="available: eclip-shapes"):
        ec.load_model("ViT-Nonexistent")


def test_checkpoint_that_is_not_weights_is_refused(tmp_path):
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ec.ModelLoadError, match="cannot read checkpoint"):
        ec.load_model("ViT-B-32", pretrained=bad)
