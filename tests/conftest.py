"""Shared fixtures: random-init open_clip models with fixed seeds (no weights downloaded),
and the book built once per session (test_book.py and test_browser.py both read it)."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import open_clip
import pytest
import torch

# `make test` runs two pytest workers (pytest-xdist): one thread each keeps the two cores busy
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def _random_model(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(name, pretrained=None, **kwargs).eval()


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: on a loaded 2-core machine a second thread
    mostly waits for a busy core; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def vit_b16():
    """ViT-B-16, random init, seed 0, float32."""
    return _random_model("ViT-B-16")


@pytest.fixture(scope="session")
def vit_b16_f64(vit_b16):
    """The same weights in float64, for round-off-level comparisons."""
    import copy

    return copy.deepcopy(vit_b16).double()


SMALL_EMBED = 24


@pytest.fixture(scope="session")
def small_vit():
    """A small open_clip CLIP, float64: 3 vision blocks of 4 heads on 64x96 images (a 4x6 grid of
    16-pixel patches), a one-block text tower, every bias and norm parameter perturbed away from
    its 0/1 initialisation (seed 0). Shared by tests that compare two computations of one map."""
    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=SMALL_EMBED,
                           vision_cfg=dict(image_size=(64, 96), patch_size=16, width=64, layers=3, head_width=16),
                           text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1),
                           ).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def tokenizer_b16():
    return open_clip.get_tokenizer("ViT-B-16")


@pytest.fixture(scope="session")
def images_224():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 224, 224, generator=g)


@pytest.fixture(scope="session")
def one_head_clip():
    """A small open_clip CLIP with one head per block: the published one-head recompute is exact."""
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=224, patch_size=32, width=64, layers=2, head_width=64),
        text_cfg=dict(context_length=16, vocab_size=64, width=32, heads=1, layers=1),
    )
    return model.eval()


@pytest.fixture(scope="session")
def html(tmp_path_factory):
    """The book built from the stored notebook outputs into a temporary folder, as
    ``make render`` builds it; the path of its ``_build/html``."""
    from eclip_core.book import ROOT

    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(out),
                          "--warningiserror", "--keep-going"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out / "_build" / "html"
