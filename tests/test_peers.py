"""eclip against the peers' own maintained packages, on the same random-init open_clip ViT
(biases and norms perturbed, float64): Captum's IntegratedGradients and Occlusion against
`integrated_gradients` and `occlusion`, pytorch-grad-cam's GradCAM (`grad-cam` on the package
index) against `gradcam` in both conventions. Values, not shapes. The peers are dev extras."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.explainers.perturbation import baseline_colour

captum_attr = pytest.importorskip("captum.attr", reason="captum is a dev extra (pip install -e '.[dev]')")
grad_cam = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is a dev extra (pip install -e '.[dev]')")

pytestmark = pytest.mark.usefixtures("one_thread")
EMBED = 24


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def texts():
    return F.normalize(torch.randn(3, EMBED, generator=torch.Generator().manual_seed(2), dtype=torch.float64), dim=-1)


def cosine(model, t):
    """The deployed cosine with one target, image by image: what the peers attribute."""
    return lambda x: F.cosine_similarity(model.encode_image(x), t[None], dim=-1)


def relative(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


def test_integrated_gradients_is_captums(small_vit, images, texts):
    """Captum's IG from the black image, right Riemann sum of 16 steps, summed over each patch's
    channels and pixels, is eclip's map (conv1 is linear and its patches do not overlap)."""
    ours = ec.explain(small_vit, images, texts, method="integrated_gradients", steps=16).maps
    black = baseline_colour(ec.as_model(small_vit), images).expand_as(images).contiguous()
    for k, t in enumerate(texts):
        attribution = captum_attr.IntegratedGradients(cosine(small_vit, t)).attribute(
            images, baselines=black, n_steps=16, method="riemann_right")
        theirs = attribution.sum(1).unflatten(1, (4, 16)).unflatten(3, (6, 16)).sum((2, 4))
        assert relative(theirs, ours[:, k]) < 1e-12  # measured 1e-15


def test_occlusion_is_captums(small_vit, images, texts):
    """Captum's Occlusion with one patch's window and stride, the black baseline: each pixel's
    attribution is its patch's score drop, eclip's map (and with 2x2-patch windows, too)."""
    colour = baseline_colour(ec.as_model(small_vit), images)[0]
    for window in (1, 2):
        ours = ec.explain(small_vit, images, texts, method="occlusion", window=window).maps
        side = 16 * window
        for k, t in enumerate(texts):
            attribution = captum_attr.Occlusion(cosine(small_vit, t)).attribute(
                images, sliding_window_shapes=(3, side, side), strides=(3, side, side), baselines=colour)
            theirs = attribution[:, 0, ::16, ::16]  # one pixel per patch: every pixel of a patch has its drop
            assert relative(theirs.double(), ours[:, k]) < 1e-6  # Captum returns float32: 3e-8 measured


class Scores(torch.nn.Module):
    """The model as pytorch-grad-cam sees a classifier: (B, K) cosines with K targets."""

    def __init__(self, model, targets):
        super().__init__()
        self.model, self.targets = model, targets

    def forward(self, x):
        return F.normalize(self.model.encode_image(x), dim=-1) @ self.targets.T


@pytest.mark.parametrize("cls_token", ["kept", "dropped"])
def test_gradcam_is_pytorch_grad_cams_in_both_conventions(small_vit, images, texts, cls_token):
    """pytorch-grad-cam's GradCAM on the last block's input tokens (the output of the block before
    it), its own weights (gradients averaged over the positions its reshape keeps) and weighted
    sum, then its ReLU: with the class token dropped by the reshape (its ViT recipe) it is
    `gradcam(cls_token="dropped")`; with it kept, `gradcam` (the default); and the two differ."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def tokens_as_image(tensor):  # (B, T, D) -> (B, D, 1, T'): the positions the weights average over
        kept = tensor if cls_token == "kept" else tensor[:, 1:]
        return kept.transpose(1, 2)[:, :, None, :]

    layer = small_vit.visual.transformer.resblocks[-2]
    cam = grad_cam.GradCAM(model=Scores(small_vit, texts), target_layers=[layer], reshape_transform=tokens_as_image)
    ours = ec.explain(small_vit, images, texts, method="gradcam", cls_token=cls_token).maps
    other = ec.explain(small_vit, images, texts, method="gradcam",
                       cls_token="dropped" if cls_token == "kept" else "kept").maps
    for k in range(len(texts)):
        outputs = cam.activations_and_grads(images)
        small_vit.zero_grad()
        sum(ClassifierOutputTarget(k)(o) for o in outputs).backward()
        activations = cam.activations_and_grads.activations[0].numpy()  # as its compute_cam_per_layer passes them
        gradients = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(images, layer, None, activations, gradients, False)  # (B, 1, T')
        theirs = torch.from_numpy(np.maximum(raw, 0))[:, 0, -24:].reshape(2, 4, 6)  # patch tokens
        assert relative(theirs, ours[:, k]) < 1e-12  # measured 1e-15
        assert relative(theirs, other[:, k]) > 0.1  # measured 0.6 to 3: the conventions differ
    cam.activations_and_grads.release()
