"""eclip beside the peers' own code: reads what ``run_peers.py`` wrote and prints the agreement.

Runs in eclip's environment. Loads the same state dict into open_clip's ViT-B-16 (QuickGELU),
explains the same photographs and targets with eclip and prints, per peer, the largest
relative difference (max |eclip - peer| / max |peer|, over every photograph and target) and
the lowest Pearson correlation of the maps:

- ``grad_eclip`` ``mode="reference"`` against ``generate_emap.py`` (input tensors, maps, scores),
  and with ``qk="raw"`` against the demo notebook;
- ``legrad`` ``pooling="mean"`` (the public code's pooling) and the default ``pooling="cls"``
  against LeGrad's wrapper, eclip's grid map passed through LeGrad's own bilinear upsampling to
  pixels and min-max (the peer's output is at pixel resolution);
- ``direct_contributions`` ``split="textspan"`` and the default ``split="own_mean"`` against
  TextSpan's PRS logger, last 4 blocks.

Usage: ``python benchmarks/peers/compare.py build/peers/peers.safetensors`` (``make peers``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_peers import photographs  # noqa: E402  (the same photographs, made the same way)

import eclip_core as ec  # noqa: E402


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


class Row:
    """One comparison: the worst relative difference and the lowest Pearson over its pairs."""

    def __init__(self, eclip: str, peer: str):
        self.eclip, self.peer, self.diffs, self.pearsons = eclip, peer, [], []

    def add(self, got: torch.Tensor, expected: torch.Tensor) -> None:
        assert got.shape == expected.shape, f"{self.eclip}: shapes {tuple(got.shape)} vs {tuple(expected.shape)}"
        self.diffs.append(relative(got, expected))
        for g, e in zip(got.reshape(-1, got.shape[-1] * (got.shape[-2] if got.ndim > 2 else 1)),
                        expected.reshape(-1, expected.shape[-1] * (expected.shape[-2] if expected.ndim > 2 else 1))):
            if e.std() > 0 and g.std() > 0:
                self.pearsons.append(pearson(g, e))

    def line(self) -> str:
        p = f"{min(self.pearsons):.7f}" if self.pearsons else "-"
        return f"| {self.peer} | {self.eclip} | {max(self.diffs):.1e} | {p} |"


def legrad_pixels(grid_maps: torch.Tensor, patch: int) -> torch.Tensor:
    """LeGrad's last step on eclip's grid maps: bilinear upsampling by the patch size, then
    min-max per map over pixels (its output's resolution)."""
    up = F.interpolate(grid_maps, scale_factor=patch, mode="bilinear")
    flat = up.flatten(2)
    lo, hi = flat.min(-1, keepdim=True)[0], flat.max(-1, keepdim=True)[0]
    return ((flat - lo) / (hi - lo)).reshape(up.shape)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--json", type=Path, help="add this run's rows (by dtype) to a JSON file (the book reads "
                        "eclip_core/data/peers.json)")
    args = parser.parse_args(argv)
    with safe_open(str(args.results), "pt") as f:
        meta = f.metadata()
        data = {k: f.get_tensor(k) for k in f.keys()}
    dtype = getattr(torch, meta["dtype"])
    state = {k[len("state/"):]: v for k, v in data.items() if k.startswith("state/")}
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    result = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert not result.missing_keys, result.missing_keys
    model = model.to(dtype).eval()
    preprocess = open_clip.image_transform(224, is_train=False)
    clip = ec.as_model(model, preprocess=preprocess)
    targets = data["targets"].to(dtype)
    photos = photographs()
    assert list(photos) == json.loads(meta["photos"]), "the photographs differ from the run's"

    rows = {
        "inputs": Row("`mode=\"reference\"` keep-size input (640-pixel cap, `int()` sizes)",
                      "`generate_emap.py` input"),
        "published": Row("`grad_eclip`, `mode=\"reference\"`", "`generate_emap.py` `grad_eclip`"),
        "scores": Row("its `.scores`", "the published cosine"),
        "notebook": Row("`grad_eclip`, `mode=\"reference\"`, `qk=\"raw\"`", "`grad_eclip_image.ipynb`"),
        "legrad_mean": Row("`legrad`, `pooling=\"mean\"`", "LeGrad `compute_legrad_clip`"),
        "legrad_cls": Row("`legrad` (default `pooling=\"cls\"`)", "LeGrad `compute_legrad_clip`"),
        "textspan": Row("`direct_contributions`, `split=\"textspan\"`", "TextSpan `prs.finalize`, last 4 blocks"),
        "own_mean": Row("`direct_contributions` (default `split=\"own_mean\"`)",
                        "TextSpan `prs.finalize`, last 4 blocks"),
    }
    for name, img in photos.items():
        x, _ = clip.prepare([img], keep_size=True)
        rows["inputs"].add(x, data[f"published/{name}/input"])
        ref = ec.explain(clip, [img], targets, method="grad_eclip", mode="reference")
        rows["published"].add(ref.maps[0], data[f"published/{name}/maps"])
        rows["scores"].add(ref.scores[0], data[f"published/{name}/scores"])
        raw = ec.explain(clip, [img], targets, method="grad_eclip", mode="reference", qk="raw")
        rows["notebook"].add(raw.maps[0], data[f"notebook/{name}/maps"])
        x224 = data[f"input224/{name}"].to(dtype)
        for pooling in ("mean", "cls"):
            ours = ec.explain(clip, x224, targets, method="legrad", pooling=pooling).maps
            rows[f"legrad_{pooling}"].add(legrad_pixels(ours, 16)[0], data[f"legrad/{name}/maps"])
        for split, key in (("textspan", "textspan"), ("own_mean", "own_mean")):
            ours = ec.explain(clip, x224, targets, method="direct_contributions", split=split, n_blocks=4).maps
            rows[key].add(ours[0].flatten(1), data[f"textspan/{name}/maps"])

    print(f"peers: Grad-ECLIP {meta['grad_eclip_commit'][:12]}, TextSpan {meta['textspan_commit'][:12]}, "
          f"legrad_torch {meta['legrad_torch']} (open_clip_torch {meta['open_clip_torch']}), "
          f"openai-clip {meta['openai_clip']}; eclip on open_clip_torch {open_clip.__version__}; {meta['dtype']}; "
          f"{len(photos)} photographs x {len(targets)} targets")
    print("| peer | eclip | max relative difference | lowest Pearson |")
    print("|---|---|---|---|")
    for row in rows.values():
        print(row.line())
    if args.json:
        stored = json.loads(args.json.read_text()) if args.json.exists() else {}
        stored[meta["dtype"]] = {
            "peers": {k: meta[k] for k in ("grad_eclip_commit", "textspan_commit", "legrad_torch", "open_clip_torch",
                                           "openai_clip", "torch")},
            "eclip_open_clip_torch": open_clip.__version__,
            "photos": json.loads(meta["photos"]), "targets": len(targets),
            "rows": {key: {"peer": row.peer, "eclip": row.eclip, "max_relative": max(row.diffs),
                           "min_pearson": min(row.pearsons) if row.pearsons else None}
                     for key, row in rows.items()},
        }
        args.json.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
