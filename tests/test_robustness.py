"""Bad and unusual input: every case gets a sensible map or one clear error, never a crash.

Uses the embedded 64x64 model (8x8 patch grid) so the whole file stays fast.
"""

import contextlib
import copy
import io
import logging
import re
import shutil
import socket
import warnings

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import eclip_core as ec
from eclip_core import viz
from eclip_core.world import embedded
from eclip_core import inputs as images
from eclip_core.explainers import METHODS
from eclip_core.inputs import tokenize
from eclip_core.world.vocab import ShapesTokenizer

TEXT = ["a red circle"]


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(2)
    return ec.load_model()


@pytest.fixture(scope="module")
def grid(bundle):
    return tuple(bundle.model.visual.grid_size)


def _picture(width=40, height=30, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _finite_map(result, shape):
    assert tuple(result.maps.shape[-2:]) == tuple(shape)
    assert torch.isfinite(result.maps).all()
    assert torch.isfinite(result.scores).all()


# ----------------------------------------------------------------------------- unreadable files


def _bad_file(tmp_path, kind):
    picture = _picture(64, 64)
    if kind == "text":
        path = tmp_path / "notes.png"
        path.write_text("this is text, not a PNG\n")
    elif kind == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    elif kind in ("truncated_png", "truncated_jpeg"):
        fmt = "PNG" if kind == "truncated_png" else "JPEG"
        data = _encoded(picture, fmt)
        path = tmp_path / f"half.{fmt.lower()}"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "directory":
        path = tmp_path / "folder.png"
        path.mkdir()
    else:
        path = tmp_path / "missing.png"
    return path


@pytest.mark.parametrize("kind,message", [
    ("text", "not an image file"),
    ("empty", "not an image file"),
    ("truncated_png", "truncated"),
    ("truncated_jpeg", "truncated"),
    ("directory", "is a directory"),
    ("missing", "no such file"),
])
def test_unreadable_image_files_get_a_clear_message(bundle, tmp_path, kind, message):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ec.InputError, match=message) as error:
        ec.explain(bundle, [path], TEXT)
    text = str(error.value)
    assert str(path) in text and "\n" not in text


# ----------------------------------------------------------------------------- image modes


def _sixteen(values) -> Image.Image:
    image = Image.fromarray(np.asarray(values, dtype=np.uint16))
    assert image.mode == "I;16"
    return image


def _modes():
    rgb = _picture(48, 40)
    gray = rgb.convert("L")
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    sixteen = _sixteen(np.asarray(gray, dtype=np.uint16) * 257)
    return {
        "L": gray, "P": palette, "P+transparency": transparent, "RGBA": rgba,
        "LA": gray.convert("LA"), "I;16": sixteen, "I": gray.convert("I"), "F": gray.convert("F"),
        "1": gray.convert("1"), "CMYK": rgb.convert("CMYK"),
    }


def test_every_image_mode_gives_a_finite_map(bundle, grid, tmp_path):
    pictures = _modes()
    paths = []
    for name, picture in pictures.items():  # through files too: PNG keeps P, I;16 and alpha
        fmt = "TIFF" if picture.mode in ("CMYK", "F", "I") else "PNG"
        path = tmp_path / f"{name.replace(';', '').replace('+', '_')}.{fmt.lower()}"
        picture.save(path, fmt, **({"transparency": 0} if name == "P+transparency" else {}))
        paths.append(path)
    for path in paths:
        assert images.load_image(path).mode == "RGB"
    result = ec.explain(bundle, list(pictures.values()) + paths, TEXT)
    assert result.maps.shape[:2] == (2 * len(pictures), 1)
    _finite_map(result, grid)


def test_sixteen_bit_is_scaled_not_clipped():
    mid = _sixteen(np.full((4, 4), 30000))
    assert np.asarray(images.load_image(mid))[0, 0, 0] == round(30000 / 65535 * 255)
    ramp = _sixteen(np.array([[0, 65535]]))
    assert np.asarray(images.load_image(ramp))[0, :, 0].tolist() == [0, 255]


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))
    assert np.asarray(images.load_image(rgba))[0].tolist() == [[255, 0, 0], [255, 255, 255]]
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    assert np.asarray(images.load_image(palette))[0].tolist() == [[255, 255, 255], [255, 0, 0]]


# ----------------------------------------------------------------------------- geometry


def test_exif_rotated_jpeg_is_explained_upright(bundle, tmp_path):
    picture = _picture(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    picture.save(path, "JPEG", exif=exif)
    assert images.load_image(path).size == (20, 40)
    patch = bundle.model.visual.patch_size[0]
    result = ec.explain(bundle, [path], TEXT, method="attention_eclip", mode="reference")
    h, w = images.keep_size_shape(20, 40, patch)  # (height, width) of the upright image
    assert result.input_size == (h, w) and h > w
    _finite_map(result, (h // patch, w // patch))


def test_one_pixel_image(bundle, grid):
    pixel = Image.new("RGB", (1, 1), (200, 30, 30))
    _finite_map(ec.explain(bundle, [pixel], TEXT), grid)
    _finite_map(ec.explain(bundle, [pixel], TEXT, mode="reference"), (1, 1))


def test_zero_pixel_image_is_refused(bundle):
    with pytest.raises(ec.InputError, match="no pixels"):
        ec.explain(bundle, [Image.new("RGB", (0, 0))], TEXT)


def test_large_png_is_downscaled_with_a_warning(bundle, grid, tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_SIDE", 100)
    path = tmp_path / "large.png"
    _picture(300, 150).save(path)
    with pytest.warns(UserWarning, match=r"300x150 downscaled to 100x50"):
        assert images.load_image(path).size == (100, 50)
    with pytest.warns(UserWarning, match="downscaled"):
        _finite_map(ec.explain(bundle, [path], TEXT), grid)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    _picture(100, 100).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ec.InputError, match="too large to decode safely"):
        images.load_image(path)


def test_large_jpeg_is_decoded_small(tmp_path, monkeypatch):
    """JPEGs are decoded at reduced scale (bounded memory), EXIF rotation included."""
    monkeypatch.setattr(images, "MAX_SIDE", 100)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "large.jpg"
    _picture(800, 400).save(path, "JPEG", exif=exif)
    decoded = []
    real_load = Image.Image.load

    def spy(self):
        out = real_load(self)
        decoded.append(self.size)
        return out

    monkeypatch.setattr(Image.Image, "load", spy)
    with pytest.warns(UserWarning, match=r"400x800 downscaled to 50x100"):
        assert images.load_image(path).size == (50, 100)
    assert max(max(size) for size in decoded) <= 200  # 1/4 scale, not the full 800 px


# ----------------------------------------------------------------------------- texts


@pytest.mark.parametrize("texts", [[""], ["   \t\n"], ["a red circle", " "]])
def test_empty_texts_are_refused(bundle, texts):
    with pytest.raises(ec.InputError, match="empty"):
        ec.explain(bundle, [_picture()], texts)


def test_over_long_text_is_truncated_with_a_warning(bundle, grid):
    ctx = bundle.model.context_length
    long_text = "a red circle and " * 10 + "a blue square"
    with pytest.warns(UserWarning, match=rf"'a red circle and a red.*context length of {ctx} tokens"):
        result = ec.explain(bundle, [_picture()], ["a red circle", long_text])
    _finite_map(result, grid)


def test_shapes_tokenizer_length_boundary():
    tokenizer = ShapesTokenizer(context_length=16)
    fits = " ".join(["red"] * 14)  # 14 words + <sot> + <eot> = 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(tokenizer, [fits])
    with pytest.warns(UserWarning, match=r"text #1 'red red.*context length of 16 tokens \(17 tokens\)"):
        tokens = tokenize(tokenizer, ["a circle", fits + " red"])
    assert tokens[1, -1] == tokenizer.eot_token_id


def test_open_clip_tokenizer_over_long_text():
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(tokenizer, ["a photo of a dog"])
    with pytest.warns(UserWarning, match=r"'dog dog.*context length of 77 tokens"):
        tokenize(tokenizer, ["dog " * 120])


# ----------------------------------------------------------------------------- models


def test_resnet_is_refused_at_load_and_at_explain():
    with pytest.raises(ec.UnsupportedModelError, match="ResNet image tower"):
        ec.load_model("RN50")  # refused from its config, before building or downloading
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rn50 = open_clip.create_model("RN50", pretrained=None)
    with pytest.raises(ec.UnsupportedModelError, match="not a vision transformer"):
        ec.explain(rn50, torch.zeros(1, 3, 224, 224), torch.ones(1, 1024))


@pytest.mark.parametrize("name,message", [
    ("EVA02-B-16", "timm image tower"),
    ("PE-Core-B-16", "timm image tower"),
    ("ViT-L-14-CLIPA", "pools with 'avg'"),
    ("coca_ViT-B-32", "CoCa"),
    ("roberta-ViT-B-32", "Hugging Face text tower"),
])
def test_unsupported_open_clip_models_are_refused_before_building(name, message):
    with pytest.raises(ec.UnsupportedModelError, match=message):
        ec.load_model(name)


def test_a_missing_hf_tokenizer_is_named_when_strings_need_it():
    """The model loads (random weights, nothing downloaded); only tokenizing strings fails."""
    clip = ec.load_model("ViT-B-16-SigLIP")
    with pytest.raises(ec.ModelLoadError, match="not in the local cache: fetch it once"):
        clip.tokenize(["a dog"])


class _Payload:
    """Unpickling this would create a file: the loader must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_is_not_weights_only_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    torch.save({"visual.proj": torch.zeros(2), "payload": _Payload(str(marker))}, path)
    with pytest.raises(ec.ModelLoadError, match=r"not a weights-only file: it pickles the Python object "
                                                r"\S*open") as error:
        ec.load_model("ViT-B-32", pretrained=path)
    assert not marker.exists()
    assert "\n" not in str(error.value) and "weights_only=False" not in str(error.value)


@pytest.mark.parametrize("name,content,message", [
    ("weights.safetensors", b"garbage", "cannot read checkpoint"),
    ("weights.pt", b"garbage", "cannot be read as a weights-only PyTorch file"),
    ("missing.safetensors", None, "does not exist"),
])
def test_unreadable_checkpoints(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ec.ModelLoadError, match=message):
        ec.load_model("ViT-B-32", pretrained=path)


def test_checkpoint_with_nan_or_wrong_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "nan.safetensors"
    save_file({"visual.proj": torch.tensor([[float("nan")]])}, str(path))
    with pytest.raises(ec.ModelLoadError, match="NaN or Inf weights in 1 tensors"):
        ec.load_model("ViT-B-32", pretrained=path)
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"module.not_a_clip_key": torch.zeros(3)}}, path)
    with pytest.raises(ec.ModelLoadError, match=r"does not fit 'ViT-S-32': \d+ missing keys.*"
                                                r"1 unexpected keys \(e.g. 'not_a_clip_key'\)"):
        ec.load_model("ViT-S-32", pretrained=path)


def test_embedded_checksum_failure_is_an_eclip_error(tmp_path, monkeypatch):
    copied = tmp_path / "embedded"
    shutil.copytree(embedded.EMBEDDED_DIR, copied)
    weights = copied / embedded.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(embedded, "EMBEDDED_DIR", copied)
    with pytest.raises(ec.ModelLoadError, match="checksum mismatch"):
        ec.load_model()


# ----------------------------------------------------------------------------- NaN / Inf


def _with_nan(bundle, where):
    model = copy.deepcopy(bundle.model)
    with torch.no_grad():
        if where == "block":
            model.visual.transformer.resblocks[0].mlp.c_fc.weight[0, 0] = float("nan")
        else:
            model.visual.ln_post.weight[0] = float("nan")
    return bundle.with_module(model)


def test_nan_weights_never_give_a_map(bundle):
    broken = _with_nan(bundle, "block")
    options = {"rise": {"n_masks": 8}}
    for name in METHODS:
        with pytest.raises(ec.EclipError, match="NaN or Inf"):
            ec.explain(broken, [_picture()], TEXT, method=name, **options.get(name, {}))


def test_cli_refuses_nan_scores(bundle, tmp_path, monkeypatch, capsys):
    """Text-independent maps (raw attention) stay finite when only ln_post is NaN: the
    scores are not, and the command line writes nothing."""
    from eclip_core import cli, models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: _with_nan(bundle, "ln_post"))
    path = tmp_path / "picture.png"
    _picture().save(path)
    code = cli.main(["explain", str(path), "-t", "a red circle", "-m", "attention", "-o", str(tmp_path / "o")])
    assert code == 1
    assert "NaN or Inf" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*"))


def test_inf_in_input_and_maps_is_refused(bundle):
    x = torch.zeros(1, 3, *bundle.model.visual.image_size)
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ec.InputError, match="NaN or Inf"):
        ec.explain(bundle, x, TEXT)
    with pytest.raises(ec.InputError, match="NaN or Inf"):
        viz.overlay(_picture(), np.array([[0.0, np.nan], [1.0, 2.0]]), title="x")


# ----------------------------------------------------------------------------- network


def test_no_network_without_a_pretrained_tag(monkeypatch, tmp_path, grid):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    loaded = ec.load_model()
    _finite_map(ec.explain(loaded, [_picture()], TEXT), grid)
    from eclip_core.cli import main

    path = tmp_path / "picture.png"
    _picture().save(path)
    assert main(["explain", str(path), "--text", "a red circle", "-o", str(tmp_path / "out"), "-q"]) == 0
    assert len(list((tmp_path / "out").glob("*.npy"))) == 1


# ----------------------------------------------------------------------------- grad state


def _frozen(bundle):
    model = copy.deepcopy(bundle.model).requires_grad_(False)  # the usual inference set-up
    return bundle.with_module(model)


@pytest.mark.slow
@pytest.mark.parametrize("state", ["frozen", "no_grad", "inference_mode", "frozen+inference_mode"])
def test_explaining_does_not_depend_on_the_callers_grad_state(bundle, state):
    """Every method (every mode) and explain_text give the same result whatever the caller's
    grad mode, with frozen parameters too, and leave the grad mode and the flags as they were."""
    picture, texts, rise = _picture(), ["a red circle", "a blue square"], {"n_masks": 8}
    runs = [(m.name, mode) for m in METHODS.values() for mode in m.modes]

    def everything(loaded):
        maps = {(name, mode): ec.explain(loaded, [picture], texts, method=name, mode=mode,
                                         **(rise if name == "rise" else {})).maps
                for name, mode in runs}
        for name, mode in [("attention_eclip", "faithful"), ("grad_eclip", "reference")]:
            maps[(name, f"text-{mode}")] = ec.explain_text(loaded, texts, [picture], method=name,
                                                           mode=mode).maps
        return maps

    expected = everything(bundle)
    loaded = _frozen(bundle) if state.startswith("frozen") else bundle
    flags = [p.requires_grad for p in loaded.model.parameters()]
    context = (torch.inference_mode() if state.endswith("inference_mode")
               else torch.no_grad() if state == "no_grad" else contextlib.nullcontext())
    with context:
        grad_before, inference_before = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        got = everything(loaded)
        assert torch.is_grad_enabled() == grad_before
        assert torch.is_inference_mode_enabled() == inference_before
    assert [p.requires_grad for p in loaded.model.parameters()] == flags
    assert all(p.grad is None for p in loaded.model.parameters())
    for key, maps in expected.items():
        torch.testing.assert_close(got[key], maps, rtol=1e-5, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")


def test_explainers_called_directly_on_inference_tensors(bundle):
    """The registered functions themselves take inputs made under inference mode."""
    model = _frozen(bundle)  # the functions take the typed model, as explain passes it
    with torch.inference_mode():
        x = images.native_batch([_picture()], bundle.preprocess)
        targets = model.text_embeddings(TEXT)
        for name in ("gae", "grad_eclip", "attention_eclip", "gradcam"):
            maps, scores = METHODS[name].fn(model, x, targets)
            assert torch.isfinite(maps).all() and maps.shape[:2] == (1, 1), name


# ----------------------------------------------------------------------------- what may be passed

FLOAT_ONLY = "must be float and already preprocessed with the model's preprocess, got dtype torch.{}; pass PIL"


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool, torch.complex64])
def test_image_tensors_other_than_float_are_refused_everywhere(bundle, dtype):
    """A uint8 photograph is not the normalised input: refused by every entry that takes a tensor."""
    from eclip_core import evaluation, metrics
    from eclip_core.paper import p1 as principles

    x = bundle.preprocess(_picture())[None]
    bad = (x * 50).to(dtype) if dtype is not torch.bool else x > 0
    message = FLOAT_ONLY.format(str(dtype).removeprefix("torch."))
    calls = [lambda: ec.explain(bundle, bad, TEXT),
             lambda: ec.explain_text(bundle, TEXT, bad),
             lambda: metrics.deletion_curve(bundle, bad[0], torch.ones(8, 8), TEXT, 0),
             lambda: evaluation.zero_shot_predictions(bundle, bad, TEXT),
             lambda: principles.original_scores(bundle, bad, TEXT)]
    for call in calls:
        with pytest.raises(ec.InputError, match=re.escape(message)):
            call()


@pytest.mark.parametrize("texts,message", [
    (None, "texts must be a string, a list of strings or a (K, E) float tensor of embeddings, got NoneType"),
    (3, "texts must be a string, a list of strings or a (K, E) float tensor of embeddings, got int"),
    (b"a red circle", "texts must be a string, a list of strings or a (K, E) float tensor of embeddings, got bytes"),
    (["a red circle", None], "text #1 is a NoneType, not a string"),
    (torch.ones(1, 64, dtype=torch.long), "target embeddings must be a float tensor (e.g. model.encode_text's "
                                          "output), got dtype torch.int64"),
    (torch.ones(1, 64, dtype=torch.bool), "must be a float tensor (e.g. model.encode_text's output), got dtype "
                                          "torch.bool"),
    (torch.full((1, 64), float("inf")), "target embeddings contain NaN or Inf"),
    (torch.full((2, 64), 1e30), "target embedding #0 has a norm that over- or underflows in torch.float32 "
                                "(largest |value| 1e+30)"),
    (torch.full((1, 64), 1e300, dtype=torch.float64), "over- or underflows in torch.float64"),
    (torch.full((1, 64), 1e-30), "over- or underflows in torch.float32"),
    (torch.zeros(1, 64), "target embedding #0 is a zero vector"),
])
def test_bad_texts_and_targets_get_the_librarys_error(bundle, texts, message):
    with pytest.raises(ec.InputError, match=re.escape(message)) as error:
        ec.explain(bundle, [_picture()], texts)
    assert "\n" not in str(error.value)
    if not isinstance(texts, torch.Tensor):
        with pytest.raises(ec.InputError, match=re.escape(message)):
            ec.explain_text(bundle, texts, [_picture()])
    else:  # as image targets of the text branch
        with pytest.raises(ec.InputError, match=re.escape(message)):
            ec.explain_text(bundle, TEXT, texts)


def test_large_float64_targets_are_normalised_in_their_own_dtype(bundle):
    t = bundle.text_embeddings(TEXT).double()
    big = ec.explain(bundle, [_picture()], t * 1e39)  # 1e39 overflows float32, not float64
    torch.testing.assert_close(big.scores, ec.explain(bundle, [_picture()], t).scores)


@pytest.mark.parametrize("method,options,message", [
    ("grad_eclip", {"qk": "Raw"}, "method 'grad_eclip': qk must be one of 'out_proj', 'raw', got 'Raw' "
                                  "(did you mean 'raw'?)"),
    ("grad_eclip", {"qk": None}, "qk must be one of 'out_proj', 'raw', got None"),
    ("attention_eclip", {"loosened": "no"}, "method 'attention_eclip': loosened must be True or False, got 'no'"),
    ("attention_eclip", {"loosend": False}, "has no option 'loosend' (did you mean 'loosened'?)"),
    ("rise", {"n_masks": 0}, "method 'rise': n_masks must be >= 1, got 0"),
    ("rise", {"n_masks": 2.5}, "method 'rise': n_masks must be an integer, got 2.5"),
    ("rise", {"keep": 0.0}, "method 'rise': keep must be in (0, 1], got 0.0"),
    ("rise", {"keep": 1.5}, "keep must be in (0, 1], got 1.5"),
    ("rise", {"cells": 0}, "cells must be >= 1, got 0"),
    ("rise", {"batch_size": -1}, "batch_size must be >= 1, got -1"),
    ("rollout", {"start_block": -1}, "start_block must be an integer in 0..3 (the model's vision blocks), got -1"),
    ("rollout", {"start_block": 4}, "start_block must be an integer in 0..3 (the model's vision blocks), got 4"),
    ("gae", {"logit_scale": 0.0}, "logit_scale must be > 0, got 0.0"),
    ("gae", {"logit_scale": float("nan")}, "logit_scale must be a finite number, got nan"),
    ("grad-eclip", {}, "; did you mean 'grad_eclip'?"),
])
def test_misspelt_and_out_of_range_options(bundle, method, options, message):
    with pytest.raises(ec.InputError, match=re.escape(message)):
        ec.explain(bundle, [_picture()], TEXT, method=method, **options)


@pytest.mark.parametrize("n_blocks", [0, -1, 3, 1.5, True])
def test_text_n_blocks_out_of_range(bundle, n_blocks):
    with pytest.raises(ec.InputError, match=re.escape(f"n_blocks must be an integer in 1..2 (the text blocks "
                                                      f"summed), got {n_blocks!r}")):
        ec.explain_text(bundle, TEXT, [_picture()], n_blocks=n_blocks)


# ----------------------------------------------------------------------------- panoramas


@pytest.mark.parametrize("size,expected,capped", [
    ((4096, 640), (1280, 200), True),  # the panorama of the issue: long side capped
    ((640, 4096), (200, 1280), True),
    ((1300, 10), (1280, 9), True),
    ((2001, 1000), (1280, 639), True),
    ((2000, 1000), (1280, 640), False),  # up to 2:1 the published rule alone, unchanged
    ((4096, 3072), (853, 640), False),
    ((500, 375), (500, 375), False),
])
def test_keep_size_caps_the_long_side_too(size, expected, capped):
    assert images.keep_size_scaled(*size) == expected
    assert images.long_side_capped(*size) == capped


def test_panorama_in_reference_mode_is_bounded_with_a_notice(bundle):
    """4096x640 on the patch-8 model was 40,961 tokens (27 GB in block 1); now 4,001."""
    panorama = _picture(4096, 640)
    with pytest.warns(UserWarning, match=r"^keep-size input: the 4096x640 image is shrunk to 1280x200 "
                                         r"\(long side capped at 1280 px to bound the token count; the "
                                         r"published code caps only the short side, at 640\)$"):
        result = ec.explain(bundle, [panorama], TEXT, method="attention_eclip", mode="reference")
    assert result.input_size == (200, 1280)
    _finite_map(result, (25, 160))
    patch = bundle.model.visual.patch_size[0]
    worst = max(int(np.prod(images.keep_size_shape(w, h, patch))) // patch ** 2
                for w in range(600, 9000, 37) for h in (1, 300, 640, 2000))
    assert worst <= (640 // patch) * (1280 // patch)


# ----------------------------------------------------------------------------- vocabulary


def test_unknown_words_are_named_once_per_text(bundle):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ec.explain(bundle, [_picture()], ["a red circle!", "a cat on a mat", "a blue 🐱 star"])
    messages = [str(w.message) for w in caught]
    assert messages == [
        "text #1 'a cat on a mat': 'cat', 'on', 'mat' are not in the model's vocabulary and cannot change "
        "the explanation (read as <unk> or dropped; 'eclip methods' lists the vocabulary)",
        "text #2 'a blue 🐱 star': '🐱' is not in the model's vocabulary and cannot change the explanation "
        "(read as <unk> or dropped; 'eclip methods' lists the vocabulary)"]
    assert result.maps.shape[1] == 3
    with pytest.warns(UserWarning, match=r"^text #0 'a dog': 'dog' is not in the model's vocabulary"):
        ec.explain_text(bundle, ["a dog"], [_picture()])


@pytest.mark.parametrize("text", ["🐱", "🐱🐶 🦊", "cat dog", "  ¿?  "])
def test_a_text_without_a_known_word_is_refused(bundle, text):
    message = (f"text #1 {text!r} has no word the model's tokenizer knows; its vocabulary: a, an, and, "
               f"the, of, photo, image, red, green")
    with pytest.raises(ec.InputError, match=re.escape(message)):
        ec.explain(bundle, [_picture()], ["a red circle", text])
    with pytest.raises(ec.InputError, match=re.escape(message)):
        ec.explain_text(bundle, ["a red circle", text], [_picture()])


def test_open_clip_tokenizer_reads_any_text():
    """Byte-level BPE has no unknown words: nothing to warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(open_clip.get_tokenizer("ViT-B-32"), ["a 🐱 on a mat"])


# ----------------------------------------------------------------------------- model messages


def test_unreachable_pretrained_tag_fails_in_one_line_quickly(monkeypatch, tmp_path, caplog, capfd):
    import time

    from huggingface_hub import constants

    from eclip_core.cli import main

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    began = time.perf_counter()
    with pytest.raises(ec.ModelLoadError) as error:
        ec.load_model("ViT-B-32", pretrained="openai")
    assert time.perf_counter() - began < 10
    assert str(error.value) == (
        "cannot download the weights of 'ViT-B-32' (pretrained='openai'): huggingface.co is unreachable "
        "(Network is unreachable) and they are not in the local cache; connect once to download them, or "
        "pass a checkpoint file")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert constants.HF_HUB_OFFLINE is False  # the hub's mode is restored
    capfd.readouterr()
    path = tmp_path / "picture.png"
    _picture().save(path)
    code = main(["explain", str(path), "-t", "a red circle", "--model", "ViT-B-32", "--pretrained", "openai",
                 "-o", str(tmp_path / "out")])
    err = capfd.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "huggingface.co is unreachable" in err, err


@pytest.mark.parametrize("name,closest", [
    ("vit-b-16", "closest: ViT-B-16;"),
    ("ViT-B-61", "closest: ViT-B-16, "),
    ("ViT-L-14-336px", "closest: ViT-L-14-336, "),
])
def test_unknown_model_name_suggests_the_closest(name, closest):
    with pytest.raises(ec.ModelLoadError, match=re.escape(f"unknown model {name!r}; {closest}")) as error:
        ec.load_model(name)
    assert "; available: eclip-shapes, " in str(error.value)


def _plain_pickle(path, protocol):
    import pickle

    with open(path, "wb") as handle:
        pickle.dump({"visual.proj": torch.zeros(2), "hook": len}, handle, protocol=protocol)


@pytest.mark.parametrize("protocol", [4, 5])
def test_plain_pickle_that_is_not_weights_only_says_so_in_words(tmp_path, protocol):
    """torch 2.14 answers such a file with "Unsupported operand 149": eclip names the object."""
    path = tmp_path / "model.pt"
    _plain_pickle(path, protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's pickle-protocol warning is not passed on
        with pytest.raises(ec.ModelLoadError, match=r"is not a weights-only file: it pickles the Python "
                                                    r"object builtins\.len, and eclip never unpickles code"):
            ec.load_model("ViT-B-32", pretrained=path)


@pytest.mark.parametrize("content,reason", [
    (b"hello world, this is a text file\n", "it is a text file (it starts 'hello world, this is a text file'), "
                                           "not a PyTorch checkpoint"),
    (b"", "the file is empty"),
    (bytes(range(200, 256)) * 10, "it is neither a PyTorch checkpoint (a zip archive) nor a pickle"),
])
def test_a_file_named_pt_that_is_not_a_checkpoint_gets_words_not_a_number(tmp_path, content, reason):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ec.ModelLoadError) as error:
        ec.load_model("ViT-B-32", pretrained=path)
    assert str(error.value) == (f"checkpoint {str(path)!r} cannot be read as a weights-only PyTorch file: "
                                f"{reason} (eclip reads .safetensors, or torch.save files with weights_only=True)")
