"""Cost of explaining K text targets, as a ratio to one plain forward pass.

Prints, for ViT-B-16 (random init, seed 0) at 224 px on the CPU, the median time of
faithful Attention-ECLIP for K = 1, 100, 1000 targets divided by the median time of
one ``encode_image`` of the same batch, measured in the same run; and the same for the
published per-target way (one forward, then one backward pass per target through the
model's own last block). Ratios, not absolute times, are what carry across machines.

    python benchmarks/bench_explain.py [--batch 2] [--repeats 5] [--full]

Without ``--full`` the per-target way is measured up to K = 100 and its K = 1000 figure
is extrapolated linearly (and labelled so); ``--full`` measures it.
"""

from __future__ import annotations

import argparse
import warnings

import open_clip
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.explainers.eclip import loosened_attention
from eclip_core.maps import minmax
from eclip_core.timing import median_seconds
from eclip_core.trace import merge_heads, trace_vision


def per_target_grad_eclip(model, images, targets):
    """The published way: one forward with the full last block, one backward per target."""
    visual = model.visual
    trace = trace_vision(model, images)
    last = trace.blocks[-1]
    emb = visual.ln_post(last.x_out)[:, 0] @ visual.proj  # pooled after the full last block
    scores = F.normalize(emb, dim=-1) @ targets.T
    with torch.no_grad():
        lam = minmax(loosened_attention(model, merge_heads(last.q)[:, 0], merge_heads(last.k)[:, 1:]))
    values = merge_heads(last.v)[:, 1:].detach()
    maps = []
    for k in range(targets.shape[0]):
        grad = torch.autograd.grad(scores[:, k].sum(), last.attn_out, retain_graph=True)[0]
        maps.append(F.relu(lam * torch.einsum("bd,bnd->bn", grad[:, 0], values)))
    return torch.stack(maps, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="measure the per-target way at K=1000")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    images = torch.randn(args.batch, 3, 224, 224)
    all_targets = F.normalize(torch.randn(1000, model.visual.output_dim), dim=-1)

    with torch.no_grad():
        forward = median_seconds(lambda: model.encode_image(images), args.repeats)
    print(f"ViT-B-16 random init, batch {args.batch}, 224 px, {args.threads} threads, "
          f"median of {args.repeats}; unit = one encode_image of the batch")
    print(f"{'K':>6} {'shared forward (ours)':>24} {'per-target backward':>22}")
    measured = {}
    for k in (1, 100, 1000):
        targets = all_targets[:k]
        ours = median_seconds(lambda: ec.explain(model, images, targets, method="attention_eclip"),
                              args.repeats) / forward
        if k < 1000 or args.full:
            reps = args.repeats if k == 1 else 1
            theirs = median_seconds(lambda: per_target_grad_eclip(model, images, targets), reps) / forward
            measured[k] = theirs
            label = f"{theirs:21.2f}x"
        else:  # linear in K: the forward once, then a fixed cost per target
            per_target = (measured[100] - measured[1]) / 99
            label = f"{measured[1] + per_target * (k - 1):21.2f}x (extrapolated from K=1, 100)"
        print(f"{k:>6} {ours:23.2f}x {label}")


if __name__ == "__main__":
    main()
