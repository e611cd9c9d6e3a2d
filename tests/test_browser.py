"""Every page of the book in a real headless Chromium, as a reader offline would see it.

The book is built once per session (the ``html`` fixture in conftest.py) and served from a
local HTTP server on 127.0.0.1. Each page (the intro and every chapter in ``_toc.yml``) is
opened at 1280x900 in a fresh browser context in which every request to another host is
blocked. Per page:

* no JavaScript errors (uncaught exceptions, console errors), no failed requests, no
  request to another host;
* every ``<img>`` decoded;
* every formula typeset by MathJax, and no raw ``$...$``, ``$$...$$``, ``\\(...\\)`` or
  ``\\[...\\]`` left in the visible text;
* every table and every text output of a cell fits the text column: nothing hidden behind a
  horizontal scroll bar;
* a full-page screenshot under ``_build/screenshots/<page>.png`` (with ``report.json``, the
  measurements of every page), for a person to look at.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``) driven by ``playwright``; no
browser is downloaded. Outside CI the browser tests are skipped when either is missing;
with the environment variable ``CI`` set, that is a failure.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from eclip_core.book import ROOT, chapter_notebooks

pytestmark = pytest.mark.slow  # `make check` leaves it out; `make test` runs it

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOTS = ROOT / "_build" / "screenshots"
LOCAL_HOST = "127.0.0.1"
MATHJAX_TIMEOUT_S = 60


def book_pages() -> list[str]:
    """The pages of the book, as paths without suffix under the HTML root: the root page
    of ``_toc.yml`` (the intro), then every chapter notebook in book order."""
    root = yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]
    return [root] + [nb.relative_to(ROOT).with_suffix("").as_posix() for nb in chapter_notebooks()]


PAGES = book_pages()
PAGE_IDS = [Path(p).name for p in PAGES]


# --------------------------------------------------------------------------- the built HTML

def test_built_pages_load_nothing_from_the_network(html):
    """No script, stylesheet, image or frame of any built page comes from another host:
    MathJax is served from _static/mathjax (book/_ext/offline_mathjax.py)."""
    remote = re.compile(r"""<(script|link|img|iframe|source|video|audio)\b[^>]*?\b(src|href)=["']((?:https?:)?//[^"']*)""",
                        re.I)
    found = [f"{page.relative_to(html)}: <{tag} {attr}={url}>"
             for page in sorted(html.rglob("*.html")) for tag, attr, url in remote.findall(page.read_text())]
    assert not found, "pages load from the network:\n" + "\n".join(found)
    assert (html / "_static" / "mathjax" / "MathJax.js").is_file(), "MathJax was not copied to _static/mathjax"


# --------------------------------------------------------------------------- the browser

def _ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium, launched by playwright; skipped (outside CI) when either is missing."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"Chromium is not installed ({CHROMIUM} is missing): sudo apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the Python package playwright is missing: pip install -e '.[dev]'")
    if missing:
        message = "browser tests need a headless Chromium and playwright; " + "; ".join(missing)
        if _ci():
            pytest.fail(f"{message} (CI is set: a missing browser is a failure, not a skip)")
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):
        # Chromium asks every server for /favicon.ico on its own; the book has none and
        # no page links one. Answer "no content" so that the probe is not a 404.
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(html):
    """The built HTML over HTTP on 127.0.0.1 (a free port), in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(html))
    httpd = http.server.ThreadingHTTPServer((LOCAL_HOST, 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOCAL_HOST}:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# Runs in the page once it has loaded: images, MathJax, visible text, widths.
_INSPECT = r"""
async ({mathjaxTimeoutMs}) => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const out = {timingsMs: {}};
  const t0 = performance.now();
  const lap = name => { out.timingsMs[name] = Math.round(performance.now() - t0); };

  // images: none lazy, all decoded
  const images = [...document.images];
  images.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
  await Promise.allSettled(images.map(img => img.decode()));
  out.images = images.map(img => ({src: (img.getAttribute('src') || '').slice(0, 100),
                                   naturalWidth: img.naturalWidth}));
  lap('images');

  // math: wait until MathJax has typeset the page
  const sources = [...document.querySelectorAll('span.math.notranslate, div.math.notranslate')];
  const mathjaxScript = [...document.scripts].some(s => /mathjax/i.test(s.src));
  out.mathjax = !sources.length ? 'no math on the page'
              : mathjaxScript ? 'MathJax never loaded' : 'the page has math but no MathJax script';
  if (sources.length && mathjaxScript) {
    const deadline = Date.now() + mathjaxTimeoutMs;
    const loaded = () => window.MathJax && ((MathJax.Hub && MathJax.Hub.Register) ||
                                            (MathJax.startup && MathJax.startup.promise));
    while (!loaded() && Date.now() < deadline) await sleep(50);
    let done = null;
    if (window.MathJax && MathJax.Hub && MathJax.Hub.Register) {  // MathJax 2
      // after the startup typeset; the hook must not return the queued callback, else
      // MathJax waits for it before finishing the startup it waits on: a deadlock
      done = new Promise(resolve => MathJax.Hub.Register.StartupHook('End',
        () => { MathJax.Hub.Queue(() => resolve('typeset')); }));
    } else if (window.MathJax && MathJax.startup && MathJax.startup.promise) {  // MathJax 3
      done = MathJax.startup.promise.then(() => 'typeset');
    }
    if (done) {
      out.mathjax = await Promise.race([done, sleep(Math.max(0, deadline - Date.now()))
                                                .then(() => 'MathJax timed out')]);
      out.mathjaxVersion = MathJax.version || null;
      if (out.mathjax !== 'typeset' && MathJax.Hub && MathJax.Hub.Startup) {
        out.mathjax += ' (last MathJax startup signals: ' + MathJax.Hub.Startup.signal.posted.slice(-4).join(', ') + ')';
      }
    }
  }
  lap('mathjax');
  const output = '.MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_SVG_Display, .MathJax_CHTML, mjx-container';
  out.math = sources.map(el => {
    const tex = el.querySelector('script[type^="math/tex"]');
    return {tex: (tex ? tex.textContent : el.textContent).trim().slice(0, 80),
            typeset: !!el.querySelector(output),
            error: !!el.querySelector('.merror, .MathJax_Error, mjx-merror')};
  });

  // the visible text, without code and program output (a `$` there is not math)
  const hide = document.createElement('style');
  hide.textContent = 'pre, code, kbd, samp, .highlight { display: none !important; }';
  document.head.appendChild(hide);
  out.visibleText = document.body.innerText;
  hide.remove();
  lap('text');

  // widths: every table and every text output against the text column
  const column = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const style = getComputedStyle(column);
  out.column = {element: column.tagName.toLowerCase() + (column.className ? '.' + column.className.trim().split(/\s+/).join('.') : ''),
                clientWidth: column.clientWidth,
                contentWidth: Math.round(column.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight))};
  const scroller = el => {
    for (let a = el.parentElement; a && a !== column; a = a.parentElement) {
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(a).overflowX)) return a;
    }
    return null;
  };
  const counts = {};
  out.blocks = [...document.querySelectorAll('table, div.cell_output pre, div.output pre')].map(el => {
    const kind = el.tagName === 'TABLE' ? 'table' : 'cell output <pre>';
    counts[kind] = (counts[kind] || 0) + 1;
    const box = scroller(el);
    const own = ['auto', 'scroll', 'hidden'].includes(getComputedStyle(el).overflowX);
    const firstLine = (el.innerText || '').split('\n').find(line => line.trim()) || '';
    return {kind, index: counts[kind], firstLine: firstLine.trim().slice(0, 70),
            scrollWidth: el.scrollWidth,
            ownWidth: own ? el.clientWidth : null,
            boxWidth: box ? box.clientWidth : null};
  });
  lap('widths');
  return out;
}
"""

_RAW_MATH = [
    ("$$...$$", re.compile(r"\$\$[\s\S]+?\$\$")),
    ("$...$", re.compile(r"(?<![\\$])\$(?=\S)[^$\n]+?(?<=\S)\$(?!\$)")),
    (r"\(...\)", re.compile(r"\\\([\s\S]*?\\\)")),
    (r"\[...\]", re.compile(r"\\\[[\s\S]*?\\\]")),
]


_FOREIGN = re.compile(r"^(?:https?|wss?|ftp)://(?!" + re.escape(LOCAL_HOST) + r"(?::\d+)?(?:/|$))")


def _source_has_math(page_path: str) -> bool:
    """Whether the page's source (notebook markdown cells, or a .md page) writes math."""
    notebook, markdown = ROOT / f"{page_path}.ipynb", ROOT / f"{page_path}.md"
    if notebook.exists():
        text = "\n".join("".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"]
                         if cell["cell_type"] == "markdown")
    else:
        text = markdown.read_text() if markdown.exists() else ""
    return bool(re.search(r"\$[^$\s]|\\begin\{", text))


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in ("http", "https", "ws", "wss", "ftp") or parts.hostname == LOCAL_HOST


@pytest.fixture(scope="module")
def visit(chromium, server):
    """Open a page (memoized): events, measurements and a full-page screenshot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    visits: dict[str, dict] = {}

    def open_page(page_path: str) -> dict:
        if page_path in visits:
            if isinstance(visits[page_path], Exception):
                raise visits[page_path]  # the page failed to open once: no second try per test
            return visits[page_path]
        name = Path(page_path).name
        record = {"page": page_path, "js_errors": [], "console_errors": [], "failed_requests": [],
                  "foreign_requests": []}
        start = time.perf_counter()
        context = chromium.new_context(viewport=VIEWPORT, service_workers="block")

        # offline: every request to another host is aborted (the pattern is matched in the
        # driver, so local requests never wait for Python)
        context.route(_FOREIGN, lambda r: r.abort("blockedbyclient"))
        page = context.new_page()
        page.on("request", lambda req: _local(req.url) or record["foreign_requests"].append(req.url))
        page.on("websocket", lambda ws: _local(ws.url) or record["foreign_requests"].append(ws.url))
        page.on("pageerror", lambda err: record["js_errors"].append(str(err)))
        page.on("console", lambda msg: msg.type == "error" and record["console_errors"].append(
            f"{msg.text} (at {msg.location.get('url', '?')}:{msg.location.get('lineNumber', '?')})"))
        page.on("requestfailed", lambda req: _local(req.url) and record["failed_requests"].append(
            f"{req.url}: {req.failure}"))
        page.on("response", lambda resp: resp.status >= 400 and record["failed_requests"].append(
            f"{resp.url}: HTTP {resp.status}"))
        try:
            page.goto(f"{server}/{page_path}.html", wait_until="load", timeout=60_000)
            record.update(page.evaluate(_INSPECT, {"mathjaxTimeoutMs": MATHJAX_TIMEOUT_S * 1000}))
            page.wait_for_load_state("networkidle", timeout=30_000)
            shot = SCREENSHOTS / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            record["screenshot"] = str(shot.relative_to(ROOT))
        except Exception as err:
            visits[page_path] = err
            raise
        finally:
            context.close()
        record["seconds"] = round(time.perf_counter() - start, 2)
        visits[page_path] = record
        return record

    yield open_page
    report = {}
    for page_path, r in visits.items():
        if isinstance(r, Exception):
            report[page_path] = {"error": repr(r)}
            continue
        report[page_path] = {k: v for k, v in r.items() if k != "visibleText"}
        if "column" in r:
            report[page_path]["too_wide"] = [_describe(b, r["column"]) for b in r["blocks"] if _too_wide(b, r["column"])]
    (SCREENSHOTS / "report.json").write_text(json.dumps(report, indent=1))


def _visible_limit(block: dict, column: dict) -> int:
    """The width a block is shown in: the text column, or a narrower scrolling box around it."""
    return min(w for w in (column["contentWidth"], block["ownWidth"], block["boxWidth"]) if w is not None)


def _too_wide(block: dict, column: dict) -> bool:
    return block["scrollWidth"] > _visible_limit(block, column) + 1  # 1 px for rounding


def _describe(block: dict, column: dict) -> str:
    return (f"{block['kind']} #{block['index']} ({block['firstLine']!r}) is {block['scrollWidth']} px wide, "
            f"shown in {_visible_limit(block, column)} px (text column {column['element']}: "
            f"{column['contentWidth']} px inside, clientWidth {column['clientWidth']} px)")


page_param = pytest.mark.parametrize("page_path", PAGES, ids=PAGE_IDS)


@page_param
def test_page_loads_offline_without_errors(visit, page_path):
    r = visit(page_path)
    problems = ([f"JavaScript error: {e}" for e in r["js_errors"]]
                + [f"console error: {e}" for e in r["console_errors"]]
                + [f"failed request: {e}" for e in r["failed_requests"]]
                + [f"request to another host (blocked): {u}" for u in r["foreign_requests"]])
    assert not problems, f"{page_path}.html:\n  " + "\n  ".join(problems)
    assert (ROOT / r["screenshot"]).is_file()


@page_param
def test_every_image_is_decoded(visit, page_path):
    r = visit(page_path)
    broken = [img["src"] for img in r["images"] if img["naturalWidth"] <= 0]
    assert not broken, f"{page_path}.html: {len(broken)} of {len(r['images'])} images not decoded: {broken}"


@page_param
def test_every_formula_is_typeset(visit, page_path):
    r = visit(page_path)
    problems = []
    if _source_has_math(page_path) and not r["math"]:
        problems.append("the source writes math, but the page has no math elements")
    if r["math"] and r["mathjax"] != "typeset":
        problems.append(f"MathJax: {r['mathjax']}")
    problems += [f"not typeset: {m['tex']!r}" for m in r["math"] if not m["typeset"]]
    problems += [f"MathJax error in: {m['tex']!r}" for m in r["math"] if m["error"]]
    for label, pattern in _RAW_MATH:
        problems += [f"raw {label} in the visible text: {hit[:80]!r}" for hit in pattern.findall(r["visibleText"])]
    assert not problems, f"{page_path}.html ({len(r['math'])} formulas):\n  " + "\n  ".join(problems)


@page_param
def test_every_table_fits_the_text_column(visit, page_path):
    r = visit(page_path)
    wide = [_describe(b, r["column"]) for b in r["blocks"] if _too_wide(b, r["column"])]
    assert not wide, (f"{page_path}.html: {len(wide)} of {len(r['blocks'])} tables/cell outputs are wider "
                      f"than the text column at {VIEWPORT['width']}x{VIEWPORT['height']} and hide columns "
                      "behind a horizontal scroll bar:\n  " + "\n  ".join(wide))
