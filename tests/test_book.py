"""The book renders from the stored notebook outputs: every chapter page, with its figures."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eclip_core.book import ROOT, chapter_notebooks


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(out),
                          "--warningiserror", "--keep-going"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out / "_build" / "html"


def test_every_chapter_is_in_the_toc():
    listed = {p.name for p in chapter_notebooks()}
    on_disk = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert listed == on_disk and listed


def test_intro_page_exists(html):
    assert (html / "book" / "intro.html").exists()


@pytest.mark.parametrize("notebook", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_page_shows_its_figures(html, notebook):
    page = html / notebook.relative_to(ROOT).with_suffix(".html")
    assert page.exists(), f"{page} was not rendered"
    stored = json.loads(notebook.read_text())
    figures = sum("image/png" in out.get("data", {}) for cell in stored["cells"]
                  for out in cell.get("outputs", []))
    sources = re.findall(r'<img[^>]+src="([^"]+)"', page.read_text())
    rendered = [s for s in sources if s.startswith("data:") or (page.parent / s).exists()]
    assert len(rendered) >= figures, f"{page.name}: {len(rendered)} images for {figures} figures"
    assert "Traceback" not in page.read_text()
