"""P1 and P2 checks: they pass where the answer is known to be yes and fail where it is no."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

import eclip_core as ec
from eclip_core.paper import p1 as P
from eclip_core.world import shapes
from eclip_core.world.embedded import build_model, build_preprocess
from eclip_core.world.train import default_model_config, default_preprocess_config
from eclip_core.world.vocab import ShapesTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def preprocess_of(model):
    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


def noise_image(width, height, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# ----------------------------------------------------------------------------- P1


@pytest.mark.slow
def test_p1_faithful_passes_reference_fails_on_vit_b16(vit_b16, tokenizer_b16):
    bundle = (vit_b16, preprocess_of(vit_b16), tokenizer_b16)
    image = [noise_image(300, 200, 0)]  # keep-size 208x304 (13x19 patches) vs native 224 crop
    texts = ["a photo of a dog", "a diagram"]
    faithful = P.p1_check(bundle, "attention_eclip", image, texts)
    assert faithful.passed, str(faithful)
    assert faithful.max_drift <= 1e-5 and faithful.agreement == 1.0
    reference = P.p1_check(bundle, "grad_eclip", image, texts, mode="reference")
    assert not reference.passed, str(reference)
    assert reference.max_drift > 1e-4
    # the original scores were computed independently of the explainer, on the native pipeline
    with torch.no_grad():
        x = bundle[1](image[0])[None]  # the preprocess
        f = F.normalize(vit_b16.encode_image(x), dim=-1)
        t = F.normalize(vit_b16.encode_text(tokenizer_b16(texts)), dim=-1)
    assert torch.allclose(reference.scores_original, f @ t.T, atol=1e-6)


def test_p1_departures_on_a_one_head_model(one_head_clip):
    """With one head per block the one-head recompute is the model itself; keep-size is not."""
    preprocess = image_transform_v2(PreprocessCfg(size=224, mean=(0.48, 0.46, 0.41),
                                                  std=(0.27, 0.26, 0.28)), is_train=False)
    bundle = (one_head_clip, preprocess, None)
    images = [noise_image(320, 192, 1), noise_image(320, 192, 2)]
    targets = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    table = P.p1_departures(bundle, images, targets, labels=[0, 1])
    rows = {name: row for name, row in table.iterrows()}
    assert rows["original"]["max_drift"] == 0.0 and rows["original"]["p1_passed"]
    assert rows["one_head"]["max_drift"] <= 1e-5 and rows["one_head"]["p1_passed"]
    assert rows["keep_size"]["grid"] == "6x10" and rows["keep_size"]["max_drift"] > 1e-4
    assert not rows["keep_size"]["p1_passed"] and not rows["reference"]["p1_passed"]
    # together = what the explainer's reference mode differentiates
    e = ec.explain(bundle, images, targets, method="grad_eclip", mode="reference")
    reference = P.p1_check(bundle, "grad_eclip", images, targets, mode="reference")
    assert reference.max_drift == pytest.approx(rows["reference"]["max_drift"], abs=1e-6)
    assert torch.allclose(e.scores, reference.scores)
    assert 0 <= rows["original"]["accuracy"] <= 1


# ----------------------------------------------------------------------------- P2


@pytest.fixture(scope="module")
def shapes_bundle():
    """The embedded model when its weights are there; else the same architecture, random init."""
    try:
        return ec.load_model()
    except ec.ModelLoadError:
        torch.manual_seed(0)
        model = build_model(default_model_config()).eval()
        return (model, build_preprocess(default_preprocess_config()),
                ShapesTokenizer(context_length=model.context_length))


def test_p1_with_strings_on_the_shapes_model(shapes_bundle):
    """Texts as strings: the original side encodes them itself with the model's tokenizer."""
    images = [s.image for s in shapes.eval_set(3)]
    prompts = shapes.prompts()
    for method in ("attention_eclip", "gradcam", "rise"):
        report = P.p1_check(shapes_bundle, method, images, prompts,
                            **({"n_masks": 20} if method == "rise" else {}))
        assert report.passed, str(report)
    reference = P.p1_check(shapes_bundle, "grad_eclip", images, prompts, mode="reference")
    assert not reference.passed and reference.max_drift > 1e-4
    assert "FAIL" in str(reference) and reference.row()["passed"] is False
