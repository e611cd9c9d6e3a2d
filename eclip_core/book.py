"""Execute the book's chapters with papermill: the stored book, or the book on your own model.

``python -m eclip_core.book execute [NOTEBOOK ...]`` (``make book`` runs it) executes every
chapter in place on the embedded model, refreshing the outputs that ``make test`` validates.

``python -m eclip_core.book execute -p model ViT-B-16 -p pretrained weights.safetensors
--out DIR [--render]`` runs every chapter on another model into ``DIR``, leaving the stored
notebooks untouched; ``--quick`` sets every chapter's sample sizes small (a first look in
minutes); ``--render`` builds the executed copies into their own HTML book,
``DIR/_build/html``. Every chapter runs even when one fails; a table of chapters, seconds
and outcomes (with the first line of each error) closes the run, and the exit status is 1
if any chapter failed.

Outputs are stored with :func:`storing_threads` intra-op threads (recorded in each
notebook's metadata under ``eclip.threads``); ``make test`` validates them with nbval at
:data:`VALIDATION_THREADS`, so every test run re-executes the book with another thread
count than the one that stored it (see the README's policy on validated outputs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

#: The repository this package runs from (an editable install or a clone on ``sys.path``).
ROOT = Path(__file__).resolve().parent.parent
#: Threads of the kernels that nbval runs in ``make test`` (notebooks/conftest.py).
VALIDATION_THREADS = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: ``--quick``: every chapter's sample sizes, small (a chapter ignores the names it lacks).
#: Enough for every model-independent assert to run; too few for the measured intervals.
QUICK: dict[str, object] = {
    "n_single": 10, "n_multi": 5, "n_styled": 10,      # chapter 0
    "n_images": 1, "n_study": 2, "steps": 4,           # chapters 2, 3, 4, 7
    "repeats": 1, "n_vocabulary": 40,                  # chapter 2's cost figure and basis section
    "rise_masks": 4, "n_p1": 2,                        # chapters 4, 5
    "n_trained": 3, "error_pool": 40,                  # chapter 5's P2 tests (n_scenes: 2, above)
    "n_captions": 4,                                   # chapter 6 (4 captions drawn)
    "n_photos": 1, "n_pick": 5,                        # photographs in chapters 1, 3, 4; chapter 1's example
    "n_scenes": 2, "n_dose": 2, "doses": [1, 2],       # chapter 8
    # chapters 4, 5, 7, 8: the Grad-ECLIP family, one baseline and the control instead of the whole zoo
    "methods": ["grad_eclip", "grad_eclip:reference", "attention_eclip", "gae", "edges"],
}


#: The kernel's own log at errors only: ipykernel warns on every start that its local TCP
#: sockets are unencrypted, which says nothing about the chapter (the cells' warnings and
#: errors are outputs, not the kernel's log, and are kept).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def storing_threads() -> int:
    """Threads for executing the book: every core, and never the validation count."""
    return max(2, os.cpu_count() or 1, VALIDATION_THREADS + 1)


def set_kernel_threads(threads: int) -> None:
    """Kernels started after this call run torch with ``threads`` intra-op threads."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


#: Metadata that papermill and the kernel write on every run (times, durations, the paths run
#: from): stored, it would change every notebook at every build whatever its outputs.
VOLATILE_NOTEBOOK_METADATA = ("papermill",)
VOLATILE_CELL_METADATA = ("papermill", "execution")


def tidy(notebook: Path, threads: int) -> None:
    """Note in the notebook's metadata how many threads produced its stored outputs, and drop
    what changes at every run (:data:`VOLATILE_NOTEBOOK_METADATA`, :data:`VOLATILE_CELL_METADATA`),
    so that a build that changes no output leaves the stored notebook byte for byte as it was."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for key in VOLATILE_NOTEBOOK_METADATA:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    nb.metadata["eclip"] = {"threads": threads}
    nbformat.write(nb, notebook)


def coalesce_streams(outputs: list) -> list:
    """Consecutive outputs of one stream (stdout, stderr) as one: how the kernel splits what a
    cell prints into messages depends on timing, not on what it printed."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
            previous["text"] = "".join(previous["text"]) + "".join(output["text"])
        else:
            merged.append(output)
    return merged


def _toc_files(root: Path) -> list[str]:
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks named in ``_toc.yml``, in book order."""
    return [root / f"{f}.ipynb" for f in _toc_files(root) if (root / f"{f}.ipynb").exists()]


@dataclass
class Outcome:
    """One chapter's run: where its executed copy is, how long it took, and its first error line."""

    notebook: Path
    executed: Path
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None


def _first_line(err: BaseException) -> str:
    name, value = getattr(err, "ename", None), getattr(err, "evalue", None)
    text = f"{name}: {value}" if name else f"{type(err).__name__}: {err}"
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def execute(notebooks: list[Path], parameters: dict, out: Path | None,
            defaults: dict | None = None, threads: int | None = None) -> list[Outcome]:
    """Run each notebook with papermill (in place, or into ``out``), every one even when
    another fails; the outcomes in order. ``parameters`` go to every notebook (papermill
    warns of a name a notebook lacks); ``defaults`` (such as :data:`QUICK`) only to the
    notebooks that declare them."""
    import papermill

    threads = threads or storing_threads()
    set_kernel_threads(threads)
    outcomes = []
    for nb in notebooks:
        target = (out / nb.name) if out else nb
        declared = papermill.inspect_notebook(str(nb)) if (defaults or out) else {}
        given = {**{k: v for k, v in (defaults or {}).items() if k in declared}, **parameters}
        if out is not None and "chapters" in declared and "chapters" not in parameters:
            given["chapters"] = str(out)  # the closing chapter reads this run's chapters, not the stored ones
        start = time.perf_counter()
        error = None
        try:
            papermill.execute_notebook(str(nb), str(target), parameters=given or None,
                                       cwd=str(nb.parent), progress_bar=False, kernel_name="python3",
                                       extra_arguments=KERNEL_ARGUMENTS)
        except Exception as err:  # a failing chapter is reported, and the next one runs
            error = _first_line(err)
        seconds = time.perf_counter() - start
        if target.exists():
            tidy(target, threads)
        outcomes.append(Outcome(nb, target, seconds, error))
        print(f"{_shown(nb)}: {seconds:.1f} s{'' if error is None else ' FAILED'}", flush=True)
    return outcomes


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report(outcomes: list[Outcome]) -> str:
    """The closing table: chapter, seconds, passed or failed with the error's first line."""
    width = max([len(o.notebook.stem) for o in outcomes] + [7])
    lines = [f"{'chapter':{width}s}  {'seconds':>7s}  outcome"]
    for o in outcomes:
        lines.append(f"{o.notebook.stem:{width}s}  {o.seconds:7.1f}  "
                     f"{'passed' if o.passed else 'failed: ' + (o.error or '')}")
    failed = sum(not o.passed for o in outcomes)
    lines.append(f"{len(outcomes) - failed} of {len(outcomes)} chapters passed, "
                 f"{sum(o.seconds for o in outcomes):.1f} s in all")
    return "\n".join(lines)


def render(outcomes: list[Outcome], out: Path, parameters: dict, root: Path = ROOT) -> Path:
    """Build the executed copies in ``out`` into an HTML book of their own (the stored book's
    pages and configuration, the title naming the model); the path of its ``_build/html``."""
    source = out / "_book"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(root / "book", source / "book", ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((root / "_config.yml").read_text())
    model = parameters.get("model", "eclip-shapes")
    weights = parameters.get("pretrained")
    config["title"] = f"{config.get('title', 'eclip')}: {model}" + (f" ({Path(str(weights)).name})"
                                                                    if weights else "")
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    executed = {o.notebook.name: o.executed for o in outcomes if o.executed.exists()}
    toc = yaml.safe_load((root / "_toc.yml").read_text())

    def keep(entries):
        kept = []
        for entry in entries or []:
            name = Path(entry.get("file", "")).name + ".ipynb"
            if "file" in entry and entry["file"].startswith("notebooks/") and name not in executed:
                continue
            kept.append(entry)
        return kept

    toc["chapters"] = keep(toc.get("chapters"))
    (source / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (source / "notebooks").mkdir(parents=True, exist_ok=True)
    for name, path in executed.items():
        shutil.copy2(path, source / "notebooks" / name)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(source),
               "--path-output", str(out), "--keep-going"]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError("jupyter-book build failed:\n" + (run.stdout + run.stderr)[-3000:])
    return out / "_build" / "html"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eclip_core.book",
                                     description="Execute the book's chapters with papermill.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute chapter notebooks with papermill")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter in _toc.yml")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), help="papermill parameter (value parsed as YAML)")
    run.add_argument("--out", type=Path, help="write executed copies here instead of in place")
    run.add_argument("--quick", action="store_true",
                     help="small sample sizes in every chapter (a first look; -p overrides)")
    run.add_argument("--render", action="store_true",
                     help="build the executed copies into an HTML book, OUT/_build/html")
    run.add_argument("--threads", type=int, help="torch threads of each chapter's kernel (default: every "
                     "core, at least 2; the stored book is made with the default)")
    run.add_argument("--root", type=Path, default=ROOT,
                     help="the book's folder, with _toc.yml (default: this repository)")
    args = parser.parse_args(argv)
    if not (args.root / "_toc.yml").is_file():
        parser.error(f"{args.root} has no _toc.yml: pass --root, the folder of the book")
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    for name in ("pretrained", "photos"):  # paths as the reader typed them, not from notebooks/
        value = parameters.get(name)
        if isinstance(value, str) and value and Path(value).expanduser().exists():
            parameters[name] = str(Path(value).expanduser().resolve())
    defaults = QUICK if args.quick else None
    if (parameters or defaults) and args.out is None:
        parser.error("with -p or --quick, pass --out DIR: the stored outputs belong to the default model")
    if args.render and args.out is None:
        parser.error("--render builds the executed copies of --out DIR: pass --out")
    if args.threads is not None and (args.threads < 1 or args.out is None):
        parser.error("--threads needs --out and at least 1: the stored book is made with every core")
    if args.out:
        args.out = args.out.resolve()
        args.out.mkdir(parents=True, exist_ok=True)
    notebooks = [p.resolve() for p in args.notebooks] or chapter_notebooks(args.root)
    outcomes = execute(notebooks, parameters, args.out, defaults, args.threads)
    print(report(outcomes), flush=True)
    if args.render and args.out:
        html = render(outcomes, args.out, parameters, args.root)
        print(f"book: {html / 'index.html'}", flush=True)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
