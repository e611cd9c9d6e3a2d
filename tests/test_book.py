"""The book renders from the stored notebook outputs: every chapter page, with its figures."""

import json
import re

import pytest

from eclip_core.book import ROOT, chapter_notebooks

pytestmark = pytest.mark.slow  # `make check` leaves it out; `make test` runs it

# `html`, the book built once per session, is a fixture in conftest.py (test_browser.py uses it too)


def test_every_chapter_is_in_the_toc():
    listed = {p.name for p in chapter_notebooks()}
    on_disk = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert listed == on_disk and listed


def test_varying_outputs_are_tagged_per_cell_with_the_reason():
    for notebook in chapter_notebooks():
        cells = json.loads(notebook.read_text())["cells"]
        assert "NBVAL_IGNORE_OUTPUT" not in json.dumps([c["source"] for c in cells]), notebook.name
        assert "nbval-ignore-output" not in json.dumps(json.loads(notebook.read_text())["metadata"]), notebook.name
        for i, cell in enumerate(cells):
            if "nbval-ignore-output" in cell["metadata"].get("tags", []):
                assert cell["metadata"].get("eclip", {}).get("varies"), f"{notebook.name} cell {i}: no reason"


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


def test_stored_outputs_were_made_with_another_thread_count():
    """make test re-executes the book at VALIDATION_THREADS: the stored outputs must come
    from another thread count, or the nbval run would not test machine independence."""
    from eclip_core.book import VALIDATION_THREADS

    for notebook in chapter_notebooks():
        threads = json.loads(notebook.read_text())["metadata"].get("eclip", {}).get("threads")
        assert threads is not None, f"{notebook.name}: not executed by `python -m eclip_core.book execute`"
        assert threads != VALIDATION_THREADS, notebook.name


def _sanitized(text: str) -> str:
    from nbval.plugin import get_sanitize_patterns

    for regex, replace in get_sanitize_patterns((ROOT / "notebooks" / "nbval-sanitize.cfg").read_text()):
        text = re.sub(regex, replace, text)
    return text


def test_sanitizer_compares_structure_not_measured_digits():
    # a measured figure either side of a rounding boundary, re-padded: the same output
    assert _sanitized("maskclip        0.3198   -2.1e-05") == _sanitized("maskclip       0.3197  3.0e-06")
    # what is fixed by the configuration is still compared
    assert _sanitized("grid 8x8 (n=1000)") != _sanitized("grid 8x8 (n=999)")
    assert _sanitized("ViT-B-16: True") != _sanitized("ViT-B-16: False")
    assert _sanitized("P1 yes") != _sanitized("P1 no")
