"""The ``eclip`` command line: explain images, evaluate explainers, list what is available.

    eclip explain photo.jpg --text "a red circle" --text "a blue square" -o out/
    eclip explain photo.jpg --text "a red circle" --all-methods -o out/
    eclip evaluate --n-images 32 --methods attention_eclip,grad_eclip --out results.csv
    eclip methods

Exit codes: 0 success, 1 bad input (a one-line ``eclip: error: ...`` on stderr), 2 bad
usage (argparse). The default model is the embedded eclip-shapes CLIP: no download.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__, models
from .clip import ClipModel
from .departures import MODES
from .errors import EclipError, InputError, one_line
from .evaluation import evaluate, folder_items
from .explainers import METHODS, Request, explain, resolve
from .inputs import load_image
from .models import DEFAULT_MODEL, available_models, model_info
from .viz import MAX_PIXELS_PER_SIDE, comparison_grid, input_image, overlay, save_figure, write_atomically
from .world import shapes
from .world.vocab import WORDS

PROG = "eclip"
DEFAULT_METHOD = "attention_eclip"


# ============================================================================ helpers


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a text: ``"A red circle!"`` -> ``"a-red-circle"``."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return out or "text"


def _unique(names: Sequence[str]) -> list[str]:
    """The names, with ``-2``, ``-3``... appended to repeats."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        candidate, n = name, seen.get(name, 0)
        while candidate in out:
            n += 1
            candidate = f"{name}-{n + 1}"
        seen[name] = n
        out.append(candidate)
    return out


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _method_list(value: str) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of method names")
    return names


MIN_DPI, MAX_DPI = 30, 600


def _dpi(value: str) -> int:
    number = _positive_int(value)
    if not MIN_DPI <= number <= MAX_DPI:
        raise argparse.ArgumentTypeError(f"expected a resolution from {MIN_DPI} to {MAX_DPI} dots per inch, "
                                         f"got {value!r}")
    return number


class _Output:
    """The output directory: checked up front, created only when the first file is written
    (so a failed run leaves no empty directory behind), and files written whole or not at
    all (a temporary name, then a rename)."""

    def __init__(self, path: Path):
        self.path, self.created = path, False
        for parent in (path, *path.parents):
            if parent.exists():
                if not parent.is_dir():
                    why = "a file of that name exists" if parent == path else f"{str(parent)!r} is a file"
                    raise InputError(f"cannot create output directory {str(path)!r}: {why}")
                break

    def file(self, name: str) -> Path:
        if not self.path.is_dir():
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise InputError(f"cannot create output directory {str(self.path)!r}: "
                                 f"{err.strerror or err}") from None
            self.created = True
        return self.path / name

    def npy(self, name: str, array: np.ndarray) -> Path:
        path = self.file(name)
        write_atomically(path, lambda handle: np.save(handle, array))
        return path

    def png(self, name: str, fig, dpi: int) -> Path:
        path = self.file(name)
        save_figure(fig, path, dpi)
        return path

    def text(self, name: str, content: str) -> Path:
        path = self.file(name)
        write_atomically(path, lambda handle: handle.write(content.encode()))
        return path

    def discard_if_empty(self) -> None:
        """After a failure: remove the directory if this run created it and wrote nothing."""
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()


def _load_model(args: argparse.Namespace) -> ClipModel:
    return models.load_model(args.model, args.pretrained, device=args.device)


def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, flush=True)


def _loading(args) -> None:
    if args.model is not None:
        _say(args, f"loading {args.model}" + (f" ({args.pretrained})" if args.pretrained else "") + " ...")


# ============================================================================ methods


def cmd_methods(args: argparse.Namespace) -> int:
    rows = [(m.name, ",".join(m.modes), m.description) for m in METHODS.values()]
    width = max(len(r[0]) for r in rows)
    modes = max(len(r[1]) for r in rows)
    print("Explainers (eclip explain --method NAME [--mode MODE]):")
    for name, mode, description in rows:
        print(f"  {name:<{width}}  {mode:<{modes}}  {description}")
    if args.explainers_only:
        return 0
    print()
    print(f"Vocabulary of the {DEFAULT_MODEL} tokenizer (other words are read as <unk>):")
    print(textwrap.fill(" ".join(WORDS), width=78, initial_indent="  ", subsequent_indent="  "))
    print()
    print(f"Models (eclip explain --model NAME [--pretrained TAG|PATH]; default {DEFAULT_MODEL}):")
    infos = [model_info(name) for name in available_models()]
    width = max(len(i.name) for i in infos)
    print(f"  {'name':<{width}}  ViT  supported  note")
    for info in infos:
        if args.supported_only and not info.supported:
            continue
        print(f"  {info.name:<{width}}  {'yes' if info.vit else 'no ':<3}  "
              f"{'yes' if info.supported else 'no':<9}  {info.note}".rstrip())
    return 0


# ============================================================================ explain


def cmd_explain(args: argparse.Namespace) -> int:
    if args.all_methods and args.method:
        raise _UsageError("--method and --all-methods cannot be used together")
    if args.all_methods:
        methods = [resolve(m, args.mode) for m in METHODS.values() if args.mode in m.modes]
        if not methods:
            raise InputError(f"no registered method supports mode {args.mode!r}")
    else:
        methods = [resolve(args.method or DEFAULT_METHOD, args.mode)]
    texts = list(args.text)
    for i, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"--text #{i + 1} is empty")
    for path in args.images:  # the cheap checks of every input before any work
        _check_image_path(Path(path))
    out = _Output(Path(args.output))
    try:
        return _explain_all(args, methods, texts, out)
    except BaseException:
        out.discard_if_empty()
        raise


def _explain_all(args: argparse.Namespace, methods: list[Request], texts: list[str], out: _Output) -> int:
    _loading(args)
    model = _load_model(args)
    stems = _unique([Path(p).stem or "image" for p in args.images])
    slugs = _unique([slug(t) for t in texts])
    for path, stem in zip(args.images, stems):
        image = load_image(path)  # one at a time: memory stays bounded by one image
        grid_maps, grid_scores, grid_original, view = {}, {}, {}, None
        for number, request in enumerate(methods, start=1):
            method = request.name
            options = {"progress": True} if not args.quiet and "progress" in request.method.options else {}
            if len(methods) > 1:  # the long case: say what runs (RISE adds its own progress bar)
                _say(args, f"[{number}/{len(methods)}] {method} on {Path(path).name} ...")
            start = time.perf_counter()
            result = explain(model, [image], texts, resolve(request, options=options))
            seconds = time.perf_counter() - start
            maps = result.maps[0].detach().float().cpu()  # (K, gh, gw), finite (checked by explain)
            scores = result.scores[0].detach().float().cpu()
            if not (torch.isfinite(maps).all() and torch.isfinite(scores).all()):
                raise EclipError(f"{method} produced NaN or Inf values for {path}: refusing to write them "
                                 f"(check the model's weights)")
            if view is None:  # the picture the explained forward pass saw
                view = (input_image(image, size=result.input_size) if result.departures.keep_size
                        else input_image(image, model.preprocess))
            for k, (text, text_slug) in enumerate(zip(texts, slugs)):
                base = f"{stem}__{text_slug}__{method}__{args.mode}"  # stems may hold dots: no with_suffix
                out.npy(f"{base}.npy", maps[k].numpy())
                if args.all_methods:
                    continue
                title = f'"{_short(text)}"\n{method} ({args.mode})   cos = {scores[k]:.3f}'
                if result.scores_original is not None:
                    title += f" (original model {float(result.scores_original[0, k]):.3f})"
                written = out.png(f"{base}.png", overlay(view, maps[k], title=title), args.dpi)
                _say(args, f"wrote {written}  (cos {scores[k]:.3f}, {seconds:.2f} s)")
            grid_maps[method], grid_scores[method] = maps, scores.tolist()
            if result.scores_original is not None:
                grid_original[method] = result.scores_original[0].tolist()
        if args.all_methods:
            grid = comparison_grid(view, grid_maps, texts, scores=grid_scores, scores_original=grid_original,
                                   title=f"{Path(path).name}: {args.mode} mode")
            written = out.png(f"{stem}__all-methods__{args.mode}.png", grid, args.dpi)
            _say(args, f"wrote {written}  ({len(methods)} methods x {len(texts)} texts)")
    return 0


def _check_image_path(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"cannot read image {str(path)!r}: it is a directory")
    if not path.is_file():
        raise InputError(f"cannot read image {str(path)!r}: no such file")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ============================================================================ evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    if (args.images is None) != (args.labels is None):
        raise _UsageError("--images and --labels go together")
    if args.out is not None and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise _UsageError(f"--out must end in .csv or .json, got {args.out!r}")
    methods = [resolve(spec) for spec in (args.methods or [m.name for m in METHODS.values()])]
    out = _Output(Path(args.out).parent) if args.out is not None else None
    _loading(args)
    model = _load_model(args)
    if args.images is not None:
        items, texts = folder_items(Path(args.images), Path(args.labels)), None
    else:
        items, texts = shapes.scene_items(shapes.eval_set(args.n_images, n_objects=args.n_objects)), shapes.prompts()
    result = evaluate(model, items, methods, texts=texts, steps=args.steps, seed=args.seed,
                      rise_masks=args.rise_masks, protocol=args.protocol, progress=not args.quiet)
    table = result.table()
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.precision", 4):
        print(table)
    for note in result.notes:
        print(f"  {note}")
    if out is not None:
        name = Path(args.out).name
        if name.lower().endswith(".json"):  # rows from pandas (NaN as null), with the notes
            rows = json.loads(table.reset_index().to_json(orient="records"))
            written = out.text(name, json.dumps({"rows": rows, "notes": result.notes}, indent=2) + "\n")
        else:
            written = out.text(name, table.to_csv())
        print(f"wrote {written}")
    return 0


# ============================================================================ parser


class _UsageError(Exception):
    """A usage problem found after parsing: reported by argparse, exit code 2."""


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, metavar="NAME",
                       help="open_clip architecture, e.g. ViT-B-16 (default: the embedded "
                            "eclip-shapes model; see 'eclip methods')")
    group.add_argument("--pretrained", default=None, metavar="TAG|PATH",
                       help="open_clip pretrained tag (downloads if not cached: the only case in "
                            "which eclip uses the network) or a checkpoint file (.safetensors, or a "
                            "weights-only PyTorch file); without it an open_clip model is random")
    group.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Explain what CLIP vision transformers look at, and judge the explainers.",
        epilog="Exit codes: 0 success, 1 bad input, 2 bad usage. 'eclip COMMAND --help' for details.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    explain = sub.add_parser(
        "explain", help="heat maps of images for texts",
        description="Explain each IMAGE for each --text: an overlay PNG (map over the image the model "
                    "saw, colour bar, cosine score in the title) and the raw map as .npy, named "
                    "{image}__{text}__{method}__{mode}.png/.npy. With --all-methods: one comparison grid "
                    "per image, {image}__all-methods__{mode}.png (a row per text, a column per method), "
                    "and every raw map. Files are written whole or not at all.")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    explain.add_argument("--text", "-t", action="append", required=True, metavar="TEXT",
                         help="a text to explain the image for (repeat for several)")
    explain.add_argument("--method", "-m", default=None,
                         help=f"explainer (default: {DEFAULT_METHOD}; see 'eclip methods')")
    explain.add_argument("--mode", default="faithful", choices=MODES,
                         help="faithful: the model's own forward pass (default); reference: the "
                              "published Grad-ECLIP code's departures (keep-size input, one-head recompute)")
    explain.add_argument("--all-methods", action="store_true",
                         help="every registered method that supports --mode, in a comparison grid")
    explain.add_argument("--output", "-o", required=True, metavar="OUT", help="output directory (created)")
    explain.add_argument("--dpi", type=_dpi, default=120,
                         help=f"resolution of the PNGs, {MIN_DPI} to {MAX_DPI} (default 120; lowered for "
                              f"images over {MAX_PIXELS_PER_SIDE} px a side)")
    explain.add_argument("--quiet", "-q", action="store_true",
                         help="no progress and do not list the files written")
    _add_model_options(explain)
    explain.set_defaults(func=cmd_explain, parser=explain)

    evaluate = sub.add_parser(
        "evaluate", help="deletion / insertion / pointing game of explainers",
        description="Evaluate explainers on N held-out scenes of the embedded shapes world (deletion "
                    "and insertion AUCs, pointing game and energy in the ground-truth mask), or on a "
                    "folder of images with a labels file (CSV 'filename,label text'; no masks, so no "
                    "pointing game), and print a table.")
    evaluate.add_argument("--n-images", "-n", type=_positive_int, default=32, metavar="N",
                          help="number of shapes-world scenes (default 32)")
    evaluate.add_argument("--n-objects", type=int, default=1, choices=(1, 2, 3),
                          help="objects per scene (default 1; the target is the first object)")
    evaluate.add_argument("--methods", type=_method_list, default=None, metavar="A,B,...",
                          help="comma-separated methods, 'name:reference' for reference mode "
                               "(default: every registered method)")
    evaluate.add_argument("--images", default=None, metavar="DIR", help="a folder of images (with --labels)")
    evaluate.add_argument("--labels", default=None, metavar="FILE",
                          help="CSV of 'filename,label text' rows for --images")
    evaluate.add_argument("--out", default=None, metavar="FILE", help="also write the table (.csv or .json)")
    evaluate.add_argument("--steps", type=_positive_int, default=32,
                          help="deletion / insertion steps (default 32)")
    evaluate.add_argument("--protocol", default="ours", choices=("ours", "published"),
                          help="perturbation schedule (default: ours; see eclip_core.metrics)")
    evaluate.add_argument("--rise-masks", type=_positive_int, default=500, help="RISE masks (default 500)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of random baselines (default 0)")
    evaluate.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_model_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate, parser=evaluate)

    methods = sub.add_parser("methods", help="list explainers and models",
                             description="List the registered explainers (name, modes, description) "
                                         "and the models: the embedded one and every open_clip "
                                         "architecture, marking the vision transformers eclip can trace.")
    methods.add_argument("--supported-only", action="store_true", help="list only models eclip can explain")
    methods.add_argument("--explainers-only", action="store_true", help="do not list models")
    methods.set_defaults(func=cmd_methods, parser=methods)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version (0) or a usage error (2)
        return int(done.code or 0) if not isinstance(done.code, str) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except _UsageError as err:
            args.parser.print_usage(sys.stderr)
            print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
            return 2
        except EclipError as err:
            print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
            return 1
        except OSError as err:  # output files and directories
            where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
            print(f"{PROG}: error: {err.strerror or one_line(err)}{where}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
