"""Make the rendered book read offline.

Sphinx loads MathJax 3 from a CDN by default, so without a network every formula shows
as raw LaTeX. This extension serves MathJax 2.7 from an installed package instead
(``jupyter-server-mathjax``, the Jupyter project's packaging of MathJax, a ``dev`` extra):

* its ``static/`` tree is copied to ``_static/mathjax/`` of the HTML output;
* ``mathjax_path`` points there, with the combined ``TeX-AMS-MML_HTMLorMML-full`` config;
* ``mathjax2_config`` tells MathJax 2 what MyST writes: ``$...$`` (dollarmath) becomes
  ``<span class="math">\\(...\\)</span>``, ``$$...$$`` and amsmath environments become
  ``<div class="math">\\[...\\]</div>`` inside sections marked ``mathjax_ignore``, so only
  the MyST math classes are processed; the HTML-CSS output uses the STIX-Web web fonts
  that the package ships (it has no TeX fonts), never fonts from elsewhere;
* the MathJax 3 configuration that MyST sets up is dropped (it would confuse MathJax 2);
* two style fixes (see ``mathjax2_config``): no request for MathJax 2's ``about:blank``
  placeholder font, and inline math on the text's baseline under the book theme.

It also drops sphinx-thebe's page assets: the book has no launch button, so thebe never
starts, but its loader names a CDN URL for the thebe bundle, and its configuration script
is included twice, which is a JavaScript error on every page ("Identifier 'THEBE_JS_URL'
has already been declared").

Registered in ``_config.yml`` under ``sphinx: local_extensions:``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

TARGET = "mathjax"  # under _static/ in the HTML output
CONFIG_FILE = "TeX-AMS-MML_HTMLorMML-full"
MYST_MATH_CLASSES = "tex2jax_process|mathjax_process|math|output_area"
MYST_IGNORE_CLASSES = "tex2jax_ignore|mathjax_ignore"


def mathjax_static_dir() -> Path:
    """The MathJax 2 tree shipped by jupyter-server-mathjax."""
    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise ExtensionError(
            "offline_mathjax: the book serves MathJax from the `jupyter-server-mathjax` "
            "package, which is not installed; install the dev extras: pip install -e '.[dev]'"
        ) from err
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (static / "MathJax.js").is_file() or not (static / "config" / f"{CONFIG_FILE}.js").is_file():
        raise ExtensionError(f"offline_mathjax: no MathJax.js / config/{CONFIG_FILE}.js under {static}")
    return static


def mathjax_version(static: Path) -> str:
    found = re.search(r'MathJax\.version="([^"]+)"', (static / "MathJax.js").read_text(errors="replace"))
    return found.group(1) if found else "unknown"


def configure(app: Sphinx, config) -> None:
    """Set at config-inited, so that the values are part of the HTML builder's config hash:
    a change here rewrites every page on the next incremental build."""
    mathjax_static_dir()  # fail early, with the install hint, if the package is missing
    config.mathjax_path = f"{TARGET}/MathJax.js?config={CONFIG_FILE}"
    config.mathjax2_config = mathjax2_config(getattr(config, "myst_mathjax_classes", None) or MYST_MATH_CLASSES)


def mathjax2_config(process_classes: str) -> dict:
    return {
        "tex2jax": {
            "inlineMath": [["\\(", "\\)"]],
            "displayMath": [["\\[", "\\]"]],
            "processEscapes": False,
            "processEnvironments": True,
            "processClass": process_classes,
            "ignoreClass": MYST_IGNORE_CLASSES,
        },
        "HTML-CSS": {
            # only the web fonts shipped in the package: no local-font guessing, no image fonts
            "availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None,
            "styles": {
                # MathJax 2 declares an always-failing placeholder font, src url('about:blank'):
                # the browser then logs a failed font request on every page with math. A
                # local() source that names no installed font fails the same way, unrequested.
                "@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank_no_such_font')"},
                # MathJax 2 wraps each formula's output in its own span.math; the theme's
                # rule for Sphinx's span.math (inline-flex, overflow: hidden) would then
                # put the formula's bottom, not its baseline, on the line: inline math
                # would sit raised above the text.
                ".MathJax span.math": {"overflow": "visible", "max-width": "none"},
            },
        },
        "messageStyle": "none",  # no "Loading MathJax" box in the corner
    }


def drop_mathjax3_config(app: Sphinx) -> None:
    """After MyST's own ``builder-inited`` handler, which writes its classes into
    ``mathjax3_config``: MathJax 2 reads ``mathjax2_config`` only."""
    app.config.mathjax3_config = None


_THEBE_CONFIG = re.compile(r'\s*<script type="text/x-thebe-config">.*?</script>', re.S)


def drop_thebe(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    def is_thebe(asset) -> bool:
        text = str(getattr(asset, "filename", asset) or "") + str(getattr(asset, "attributes", {}).get("body", ""))
        return "thebe" in text.lower()

    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if not is_thebe(asset)]
    if "body" in context:
        context["body"] = _THEBE_CONFIG.sub("", context["body"])


def copy_mathjax(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = mathjax_static_dir()
    target = Path(app.outdir) / "_static" / TARGET
    shutil.copytree(static, target, dirs_exist_ok=True)
    logger.info(f"offline_mathjax: MathJax {mathjax_version(static)} copied to {target}")


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", configure, priority=900)
    app.connect("builder-inited", drop_mathjax3_config, priority=900)  # MyST's runs at 500
    app.connect("html-page-context", drop_thebe, priority=900)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
