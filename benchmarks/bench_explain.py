"""Cost of every explainer, as a ratio to one plain forward pass, with its peak memory.

Prints one table for an open_clip ViT (default ViT-B-16, random init, seed 0, 224 px) on
the CPU (or ``--device cuda``): for each explainer and each number of targets K (or of
(image, text) pairs), the median time of ``explain`` divided by the median time of one
``encode_image`` of the same batch, measured in the same run, and the memory the call
needed above what was in use before it (``eclip_core.timing.peak_memory``). Rows:

* Grad-ECLIP and Attention-ECLIP (faithful) at K = 1, 100, 1000 shared targets;
* the published per-target way (one backward pass per target through the last block) at
  K = 1 and 100, its K = 1000 figure extrapolated linearly (and labelled so) unless ``--full``;
* paired targets: every image its own 10 texts, against all of them shared by every image;
* every other registered explainer at K = 1 (RISE and occlusion also per masked pass);
* the explanation basis (``eclip_core.explainers.basis``): building it and the maps of
  ``--vocabulary`` targets (80,000: 1,000 class names x 80 templates) from it; each further
  1,000 targets from a saved basis; its peak memory;
* memory: Grad-/Attention-ECLIP at K = 1000 for a batch of ``--memory-batch`` images.

    python benchmarks/bench_explain.py [--model ViT-B-16] [--batch 2] [--repeats 3]
        [--threads 2] [--device cpu] [--methods a,b] [--full] [--memory-batch 8]
        [--family transformers]

``--family transformers`` / ``transformers-siglip``: a Hugging Face ``transformers`` CLIPModel /
SiglipModel of ViT-B/16's shapes (random init, seed 0) instead, the Grad-ECLIP and
Attention-ECLIP rows only.

Ratios, not absolute times, are what carry across machines; nothing here is a test.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.explainers.basis import CHUNK, explanation_basis, load_basis
from eclip_core.explainers.eclip import loosened_attention
from eclip_core.maps import minmax
from eclip_core.timing import explain_cost, forward_seconds, median_seconds, peak_memory, random_targets
from eclip_core.trace import merge_heads

RISE_MASKS = 100
PAIRED = 10  # texts per image in the paired rows
OPTIONS = {"rise": dict(n_masks=RISE_MASKS), "integrated_gradients": dict(steps=16)}


def per_target_grad_eclip(model, images, targets):
    """The published way: one forward with the full last block, one backward per target."""
    visual = model.visual
    trace = ec.trace_vision(model, images)
    last = trace.blocks[-1]
    emb = visual.ln_post(last.x_out)[:, 0] @ visual.proj  # pooled after the full last block
    scores = F.normalize(emb, dim=-1) @ targets.T
    with torch.no_grad():
        lam = minmax(loosened_attention(ec.as_model(model), merge_heads(last.q)[:, 0], merge_heads(last.k)[:, 1:]))
    values = merge_heads(last.v)[:, 1:].detach()
    maps = []
    for k in range(targets.shape[0]):
        grad = torch.autograd.grad(scores[:, k].sum(), last.attn_out, retain_graph=True)[0]
        maps.append(F.relu(lam * torch.einsum("bd,bnd->bn", grad[:, 0], values)))
    return torch.stack(maps, 1)


def masked_passes(method: str, model, images) -> int | None:
    """Forward passes of masked images one call makes per image (RISE, occlusion), else None."""
    if method == "rise":
        return RISE_MASKS
    if method == "occlusion":
        grid = [s // p for s, p in zip(images.shape[-2:], ec.as_model(model).patch_size)]
        return grid[0] * grid[1]
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every registered one)")
    parser.add_argument("--full", action="store_true", help="measure the per-target way at K=1000")
    parser.add_argument("--memory-batch", type=int, default=8)
    parser.add_argument("--family", choices=("open_clip", "transformers", "transformers-siglip"), default="open_clip")
    parser.add_argument("--vocabulary", type=int, default=80_000,
                        help="targets explained from the basis (1,000 classes x 80 templates)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.family.startswith("transformers"):
        return transformers_rows(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(args.model, pretrained=None).eval().to(args.device)
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    images = torch.randn(args.batch, 3, *size, generator=torch.Generator().manual_seed(1)).to(args.device)
    dim = ec.as_model(model).embed_dim
    bank = random_targets(1000, dim, seed=2, like=images)
    methods = args.methods.split(",") if args.methods else list(ec.METHODS)
    forward = forward_seconds(model, images, args.repeats)
    print(f"{args.model} random init, batch {args.batch}, {size[0]}x{size[1]} px, {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}; "
          f"unit = one encode_image of the batch")
    rows: list[tuple[str, str, str, str]] = []

    def row(name, targets_label, ratio, note="", memory=None):
        mem = "" if memory is None else f"{memory / 2**20:8.0f} MiB"
        rows.append((name, targets_label, f"{ratio:7.2f}x" if ratio is not None else "", mem + note))
        print(f"  {name:<26} {targets_label:>14} {rows[-1][2]:>9}  {rows[-1][3]}", flush=True)

    print(f"  {'explainer':<26} {'targets':>14} {'ratio':>9}  memory / note")
    for method in ("grad_eclip", "attention_eclip"):
        if method not in methods:
            continue
        for k in (1, 100, 1000):
            row(method, f"K={k}", explain_cost(model, images, bank[:k], method, forward=forward,
                                               repeats=args.repeats))
    measured = {}
    for k in (1, 100, 1000) if ec.as_model(model).pooling == "cls" else ():  # the published recipe: class tokens
        if k < 1000 or args.full:
            reps = args.repeats if k == 1 else 1
            measured[k] = median_seconds(lambda: per_target_grad_eclip(model, images, bank[:k]), reps) / forward
            row("published per-target", f"K={k}", measured[k])
        else:  # linear in K: the forward once, then a fixed cost per target
            per_target = (measured[100] - measured[1]) / 99
            row("published per-target", f"K={k}", measured[1] + per_target * (k - 1),
                "  extrapolated from K=1, 100")

    # paired: image b explained for its own PAIRED texts, against all B x PAIRED of them shared
    own = bank[:args.batch * PAIRED].reshape(args.batch, PAIRED, -1)  # (B, K, E), distinct texts
    for method in ("grad_eclip", "attention_eclip", "gae", "gradcam", "legrad"):
        if method not in methods:
            continue
        ratio_paired = explain_cost(model, images, own, method, forward=forward, repeats=args.repeats)
        ratio_shared = explain_cost(model, images, own.flatten(0, 1), method, forward=forward,
                                    repeats=args.repeats)
        row(method, f"{args.batch}x{PAIRED} paired", ratio_paired,
            f"  the {args.batch * PAIRED} texts shared: {ratio_shared:.2f}x")

    for method in methods:
        if method in ("grad_eclip", "attention_eclip"):
            continue
        options = OPTIONS.get(method, {})
        reps = 1 if method in ("rise", "occlusion", "integrated_gradients") else args.repeats
        ratio = explain_cost(model, images, bank[:1], method, forward=forward, repeats=reps, **options)
        passes = masked_passes(method, model, images)
        note = ""
        if passes is not None:
            note = f"  {passes} masked passes of the batch: {ratio / passes:.2f}x each"
        if method == "integrated_gradients":
            note = f"  {options['steps']} steps"
        row(method, "K=1", ratio, note)

    if "grad_eclip" in methods:  # the explanation basis: any vocabulary for a matrix product
        vocabulary = random_targets(args.vocabulary, dim, seed=4, like=images)
        basis = explanation_basis(model, images)
        build = median_seconds(lambda: explanation_basis(model, images), args.repeats) / forward
        product = median_seconds(lambda: basis.explain(vocabulary), 1) / forward
        row("basis (grad_eclip)", f"K={args.vocabulary:,}", build + product,
            f"  building the basis {build:.2f}x, the product {product:.2f}x")
        with tempfile.TemporaryDirectory() as folder:
            saved = load_basis(basis.save(Path(folder) / "basis.safetensors"))
            further = median_seconds(lambda: saved.explain(vocabulary[:1000]), args.repeats) / forward
        row("basis, saved", "each 1,000 more", further,
            f"  from the file, no model; {basis.bytes_per_image / 2**20:.2f} MiB per image")
        output = args.batch * args.vocabulary * basis.rows.shape[1] * basis.rows.element_size()
        memory = peak_memory(lambda: basis.explain(vocabulary), args.device)
        row("basis (grad_eclip)", f"K={args.vocabulary:,}", None,
            f"  peak, chunks of {CHUNK} targets (the maps themselves: {output / 2**20:.0f} MiB)", memory)

    big = torch.randn(args.memory_batch, 3, *size, generator=torch.Generator().manual_seed(3)).to(args.device)
    for method in ("grad_eclip", "attention_eclip"):
        if method not in methods:
            continue
        memory = peak_memory(lambda: ec.explain(model, big, bank, method), args.device)
        row(method, "K=1000", None, f"  batch {args.memory_batch}: peak", memory)


def transformers_rows(args) -> list[tuple[str, str, float]]:
    """Grad-ECLIP and Attention-ECLIP on a ``transformers`` CLIPModel of ViT-B/16's shapes."""
    import transformers

    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=16)
    torch.manual_seed(0)
    if args.family == "transformers-siglip":
        name = "SiglipModel"
        model = transformers.SiglipModel(transformers.SiglipConfig(
            vision_config=vision, text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                   num_attention_heads=12, vocab_size=32000,
                                                   max_position_embeddings=64))).eval().to(args.device)
    else:
        name = "CLIPModel"
        model = transformers.CLIPModel(transformers.CLIPConfig(
            vision_config=vision, text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                                   num_attention_heads=8, max_position_embeddings=77,
                                                   vocab_size=49408), projection_dim=512)).eval().to(args.device)
    images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(args.device)
    bank = random_targets(1000, ec.as_model(model).embed_dim, seed=2, like=images)
    forward = forward_seconds(model, images, args.repeats)
    print(f"transformers {name} (ViT-B/16 shapes) random init, batch {args.batch}, 224x224 px, {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}; unit = one get_image_features of the batch")
    out = []
    for method in ("grad_eclip", "attention_eclip"):
        for k in (1, 100, 1000):
            ratio = explain_cost(model, images, bank[:k], method, forward=forward, repeats=args.repeats)
            out.append((method, f"K={k}", ratio))
            print(f"  {method:<26} {'K=' + str(k):>14} {ratio:7.2f}x", flush=True)
    return out


if __name__ == "__main__":
    main()
