"""The book on a reader's own model: every chapter through the runner
(``python -m eclip_core.book execute --quick``), on a random-init open_clip ViT saved to a
safetensors file, as a reader with pretrained weights would run it, then rendered into its
own book. ViT-S-32 (open_clip's VisionTransformer: 12 blocks of 6 heads, patch 32, 224 px):
the same code paths as ViT-B-32 at about a third of its cost on the CPU."""

import json
import subprocess
import sys

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from eclip_core.book import ROOT, chapter_notebooks
from eclip_core.paper import verdicts

pytestmark = pytest.mark.slow  # `make check` leaves it out; `make test` runs it

ARCH = "ViT-S-32"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_every_chapter_runs_on_a_readers_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "book-on-vit"
    stored = {p: p.read_bytes() for p in chapter_notebooks()}
    run = subprocess.run([sys.executable, "-m", "eclip_core.book", "execute", "-p", "model", ARCH,
                          "-p", "pretrained", str(checkpoint), "--quick", "--threads", "1",
                          "--out", str(out), "--render"],
                         capture_output=True, text=True, cwd=ROOT, env=_env())
    log = run.stdout[-4000:] + run.stderr[-3000:]
    chapters = chapter_notebooks()
    assert run.returncode == 0, log
    assert f"{len(chapters)} of {len(chapters)} chapters passed" in run.stdout, log
    for notebook in chapters:
        executed = json.loads((out / notebook.name).read_text())
        injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert injected and str(checkpoint) in "".join(injected[0]["source"]), notebook.name
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{notebook.name}: {errors[0]['ename']}"
        page = out / "_build" / "html" / "notebooks" / f"{notebook.stem}.html"
        assert page.exists(), f"{page} not rendered"
    assert ARCH in (out / "_build" / "html" / "book" / "intro.html").read_text()
    # the closing chapter read this run's findings, not the stored book's
    name = f"{ARCH} ({checkpoint.name})"
    found = verdicts.collect(out)
    assert {f.chapter for f in found} >= {"chapter 2", "chapter 3", "chapter 4", "chapter 5", "chapter 8"}
    assert {f.model for f in found} == {name}
    assert f"findings on {name}" in (out / "09_verdicts.ipynb").read_text()
    assert all(p.read_bytes() == content for p, content in stored.items())  # the stored book untouched


def _env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
