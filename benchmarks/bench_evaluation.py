"""Cost of evaluating every registered explainer on the shapes world with the embedded model.

Runs :func:`eclip_core.evaluation.evaluate` (deletion and insertion curves, pointing game,
energy in mask; RISE with 500 masks) on ``--n-images`` held-out single-object scenes
and prints the table, the wall time of each explainer's whole evaluation, and the time
of its ``explain`` calls as a ratio to one forward pass (``encode_image``) of the same
batches, measured in the same run. Budget: 200 images in <= 10 minutes on 2 CPU cores.

    python benchmarks/bench_evaluation.py [--n-images 200] [--steps 16] [--rise-masks 500]
                                          [--methods a,b,...] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

import eclip_core as ec
from eclip_core.evaluation import evaluate
from eclip_core.world import shapes

BUDGET_SECONDS = 600


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rise-masks", type=int, default=500)
    parser.add_argument("--methods", default=None,
                        help="comma-separated (default: every registered method)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    bundle = ec.load_model()
    scenes = shapes.eval_set(args.n_images)
    methods = args.methods.split(",") if args.methods else list(ec.METHODS)
    print(f"{len(methods)} explainers on {len(scenes)} scenes, {args.steps} steps, "
          f"RISE {args.rise_masks} masks, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    tables, per_method = [], {}
    forward_ms = float("nan")
    for method in methods:  # one evaluate call per method, to time each one's whole evaluation
        t = time.perf_counter()
        result = evaluate(bundle, scenes, [method], steps=args.steps, rise_masks=args.rise_masks,
                          progress=True)
        per_method[method] = time.perf_counter() - t
        tables.append(result.table())
        forward_ms = 1000 * result.forward_seconds / len(scenes)
    total = time.perf_counter() - start

    table = pd.concat(tables)
    table["eval_seconds"] = pd.Series(per_method)
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.precision", 4):
        print(table)
    print("\n".join(f"  {note}" for note in result.notes))
    print(f"\none forward pass: {forward_ms:.3f} ms per image (batches of 50)")
    print("explain time as a ratio to one forward pass of the same batch:")
    for method, row in table.iterrows():
        print(f"  {method:<18} {row['cost_ratio']:10.1f} x   "
              f"(whole evaluation of the method: {row['eval_seconds']:.1f} s)")
    verdict = "within" if total <= BUDGET_SECONDS else "OVER"
    print(f"\ntotal {total:.1f} s for {len(scenes)} images: {verdict} the {BUDGET_SECONDS} s budget")
    if args.csv:
        table.to_csv(args.csv)


if __name__ == "__main__":
    main()
