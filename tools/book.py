"""Execute the book's chapter notebooks with papermill, in place, timing each.

``python -m tools.book execute [NOTEBOOK ...] [-p NAME VALUE ...]`` (from the repository
root; ``make book`` runs it): with no
parameters the notebooks run on the embedded default model and their stored outputs
are refreshed (``make test`` validates them with nbval); with parameters, write the
executed copies elsewhere with ``--out DIR`` so the stored outputs stay those of the
default model.

Outputs are stored with :func:`storing_threads` intra-op threads (recorded in each
notebook's metadata under ``eclip.threads``); ``make test`` validates them with nbval at
:data:`VALIDATION_THREADS`, so every test run re-executes the book with another thread
count than the one that stored it (see the README's policy on validated outputs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent  # the repository
#: Threads of the kernels that nbval runs in ``make test`` (notebooks/conftest.py).
VALIDATION_THREADS = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def storing_threads() -> int:
    """Threads for executing the book: every core, and never the validation count."""
    return max(2, os.cpu_count() or 1, VALIDATION_THREADS + 1)


def set_kernel_threads(threads: int) -> None:
    """Kernels started after this call run torch with ``threads`` intra-op threads."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


def record_threads(notebook: Path, threads: int) -> None:
    """Note in the notebook's metadata how many threads produced its stored outputs."""
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["eclip"] = {"threads": threads}
    nbformat.write(nb, notebook)


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks named in ``_toc.yml``, in book order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = []

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").exists()]


def execute(notebooks: list[Path], parameters: dict, out: Path | None) -> float:
    import papermill

    threads = storing_threads()
    set_kernel_threads(threads)
    total = 0.0
    for nb in notebooks:
        target = (out / nb.name) if out else nb
        start = time.perf_counter()
        papermill.execute_notebook(str(nb), str(target), parameters=parameters or None,
                                   cwd=str(nb.parent), progress_bar=False, kernel_name="python3")
        seconds = time.perf_counter() - start
        record_threads(target, threads)
        total += seconds
        print(f"{nb.relative_to(ROOT) if nb.is_relative_to(ROOT) else nb}: {seconds:.1f} s", flush=True)
    print(f"all notebooks: {total:.1f} s", flush=True)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.book")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute chapter notebooks with papermill")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter in _toc.yml")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), help="papermill parameter (value parsed as YAML)")
    run.add_argument("--out", type=Path, help="write executed copies here instead of in place")
    args = parser.parse_args(argv)
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    if parameters and args.out is None:
        parser.error("with -p, pass --out DIR: the stored outputs belong to the default model")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    notebooks = [p.resolve() for p in args.notebooks] or chapter_notebooks()
    execute(notebooks, parameters, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
