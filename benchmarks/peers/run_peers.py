"""The peers that are not installable beside eclip, run on one random-init CLIP ViT-B/16.

Runs in its own environment (``make peers`` builds it: OpenAI's ``clip`` as packaged on the
index, ``legrad_torch`` with the ``open_clip_torch<=2.23`` it pins) and imports each peer's own
code at run time from the checkout or package given; nothing of theirs is copied here:

- the published Grad-ECLIP code (``--grad-eclip CHECKOUT``): the functions of its evaluation
  script ``generate_emap.py`` (``imgprocess_keepsize``, ``clip_encode_dense``, ``grad_eclip``,
  ``attention_layer``) and of its demo notebook ``grad_eclip_image.ipynb`` are read from the
  checkout and executed unchanged, except ``x.half()`` in the encoders, which becomes the
  model's dtype (the run is on CPU); the short side is capped at 640 pixels as its main loop
  does; the score is the cosine of the class token with each target, as there;
- LeGrad (``legrad_torch``): ``LeWrapper(model).compute_legrad_clip`` on open_clip's ViT-B-16;
- TextSpan (``--textspan CHECKOUT``): its model factory and ``hook_prs_logger`` (``prs_hook.py``),
  the per-head, per-token terms of ``prs.finalize`` times each target, over the last 4 blocks.

Every peer gets the same weights (one state dict, OpenAI's layout, biases and norms perturbed so
that a dropped or misplaced bias shows), the same photographs (scikit-image's astronaut, coffee,
cat and rocket, and the coffee upscaled past the 640-pixel cap) and the same random unit targets.
Everything is written to one safetensors file, with the peers' versions and commits, for
``compare.py`` to set beside eclip in eclip's own environment.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

SEED = 0
N_TARGETS = 3
EMBED = 512
TEXTSPAN_BLOCKS = 4
#: OpenAI's ViT-B/16 CLIP
ARCH = dict(embed_dim=EMBED, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
            context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def photographs() -> dict[str, Image.Image]:
    """The photographs every peer explains (the last one crosses the published 640-pixel cap)."""
    from skimage import data
    photos = {name: Image.fromarray(getattr(data, name)()).convert("RGB")
              for name in ("astronaut", "coffee", "chelsea", "rocket")}
    coffee = photos["coffee"]
    photos["coffee_large"] = coffee.resize((int(coffee.width * 1.71), int(coffee.height * 1.71)), Image.BICUBIC)
    return photos


def capped(img: Image.Image) -> Image.Image:
    """The published main loop's cap: a short side over 640 scaled to 640, sizes truncated by int()."""
    w, h = img.size
    if min(w, h) > 640:
        scale = min(w, h) / 640
        img = img.resize((int(w / scale), int(h / scale)))
    return img


def openai_state_dict(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A random-init ViT-B/16 CLIP in OpenAI's layout, biases and norms perturbed (seeded)."""
    import clip.model
    torch.manual_seed(SEED)
    model = clip.model.CLIP(**ARCH)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif ".ln_" in name or name.startswith(("visual.ln_", "ln_")):
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
    return {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}


def openai_model(state: dict[str, torch.Tensor]):
    """OpenAI's CLIP with these weights. (Not ``clip.model.build_model``: it rounds every weight
    to float16 on the way.)"""
    import clip.model
    model = clip.model.CLIP(**ARCH)
    model.load_state_dict(state)
    return model.to(state["visual.conv1.weight"].dtype).eval()


def source_functions(source: str, names: set[str]) -> str:
    """The top-level definitions (functions and assignments) of ``source`` whose names are given."""
    keep = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            keep.append(ast.get_source_segment(source, node))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
            keep.append(ast.get_source_segment(source, node))
    return "\n\n".join(s for s in keep if s)


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def on_model_dtype(code: str) -> str:
    """The one change to the published encoders: ``x.half()`` becomes the model's dtype (CPU)."""
    assert code.count("x = x.half()") == 1, "the published encoder changed: x.half() not found once"
    return code.replace("x = x.half()", "x = x.type(clipmodel.dtype)")


def published_namespace(model) -> dict:
    import torchvision.transforms as T
    from torchvision.transforms import Compose, InterpolationMode, Normalize, Resize, ToTensor
    return {"torch": torch, "F": F, "np": np, "T": T, "Compose": Compose, "Normalize": Normalize,
            "ToTensor": ToTensor, "Resize": Resize, "InterpolationMode": InterpolationMode, "clipmodel": model,
            "math": math}


def run_generate_emap(checkout: Path, model, photos, targets) -> dict[str, torch.Tensor]:
    """``generate_emap.py``'s Grad-ECLIP on each photograph and target, as its main loop calls it
    (with ``q_out``, which the published call omits: it raises TypeError as written)."""
    source = (checkout / "generate_emap.py").read_text()
    code = source_functions(source, {"_transform", "imgprocess_keepsize", "attention_layer", "clip_encode_dense",
                                     "grad_eclip"})
    ns = published_namespace(model)
    exec(compile(on_model_dtype(code), str(checkout / "generate_emap.py"), "exec"), ns)
    out = {}
    for name, img in photos.items():
        x = ns["imgprocess_keepsize"](capped(img)).unsqueeze(0).to(model.dtype)
        outputs, _, _, v, q_out, k_out, _, att_output, map_size = ns["clip_encode_dense"](x)
        embedding = F.normalize(outputs[:, 0], dim=-1)
        cosines = (embedding @ targets.T.to(embedding.dtype))[0]
        maps = [ns["grad_eclip"](c, q_out, k_out, v, att_output, map_size) for c in cosines]
        out[f"published/{name}/input"] = x.detach()
        out[f"published/{name}/maps"] = torch.stack(maps).detach()
        out[f"published/{name}/scores"] = cosines.detach()
    return out


def run_notebook(checkout: Path, model, photos, targets) -> dict[str, torch.Tensor]:
    """The demo notebook's Grad-ECLIP (``grad_eclip_image.ipynb``: q and k as they leave in_proj,
    any number of last blocks; here 1, the default of the evaluation script)."""
    cells = json.loads((checkout / "grad_eclip_image.ipynb").read_text())["cells"]
    source = "\n\n".join(code for code in ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
                           if parses(code))  # shell lines (! pip install ...) are not Python
    code = source_functions(source, {"_transform", "imgprocess", "attention_layer", "clip_encode_dense", "sim_qk",
                                     "grad_eclip"})
    ns = published_namespace(model)
    ns["clip_inres"] = model.visual.input_resolution
    ns["clip_ksize"] = model.visual.conv1.kernel_size
    ns["print"] = lambda *a, **k: None  # the notebook's encoder prints shapes
    exec(compile(on_model_dtype(code), str(checkout / "grad_eclip_image.ipynb"), "exec"), ns)
    out = {}
    for name, img in photos.items():
        x = ns["imgprocess"](capped(img)).unsqueeze(0).to(model.dtype)
        outputs, _, vs, qs, ks, _, attn_outputs, map_size = ns["clip_encode_dense"](x, 1)
        embedding = F.normalize(outputs[:, 0], dim=-1)
        cosines = (embedding @ targets.T.to(embedding.dtype))[0]
        maps = [ns["grad_eclip"](c, qs, ks, vs, attn_outputs, map_size) for c in cosines]
        out[f"notebook/{name}/maps"] = torch.stack(maps).detach()
        out[f"notebook/{name}/scores"] = cosines.detach()
    return out


def run_legrad(state, inputs, targets) -> dict[str, torch.Tensor]:
    """LeGrad's own wrapper on open_clip's ViT-B-16 (QuickGELU, the OpenAI weights' layout), 224 px."""
    import open_clip
    from legrad import LeWrapper
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    missing = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert not missing.missing_keys, missing.missing_keys
    model = model.to(state["visual.conv1.weight"].dtype).eval()
    wrapped = LeWrapper(model)
    out = {}
    for name, x in inputs.items():
        maps = wrapped.compute_legrad_clip(text_embedding=targets.to(x.dtype), image=x)  # (1, K, 224, 224)
        out[f"legrad/{name}/maps"] = maps[0].detach()
    return out


def run_textspan(checkout: Path, state, inputs, targets) -> dict[str, torch.Tensor]:
    """TextSpan's hooked model and PRS logger: each patch's direct contribution to each target
    over the last 4 blocks' heads, as its code splits the norm and biases."""
    sys.path.insert(0, str(checkout))
    from prs_hook import hook_prs_logger
    from utils.factory import create_model_and_transforms
    dtype = state["visual.conv1.weight"].dtype
    model, _, _ = create_model_and_transforms("ViT-B-16", pretrained=None, force_quick_gelu=True)
    missing = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert not missing.missing_keys, missing.missing_keys
    model = model.to(dtype).eval()
    prs = hook_prs_logger(model, "cpu")
    out = {}
    for name, x in inputs.items():
        with torch.no_grad():
            prs.reinit()
            representation = model.encode_image(x, attn_method="head", normalize=False)
            attentions, _ = prs.finalize(representation)  # (B, L, T, H, E), divided by |e|
        per_patch = attentions[:, -TEXTSPAN_BLOCKS:, 1:].sum((1, 3))  # (B, N, E)
        out[f"textspan/{name}/maps"] = torch.einsum("bne,ke->bkn", per_patch, targets.to(dtype))[0]
        out[f"textspan/{name}/embedding"] = representation.detach()
    return out


def commit(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grad-eclip", type=Path, required=True, help="a checkout of Cyang-Zhao/Grad-Eclip")
    parser.add_argument("--textspan", type=Path, required=True, help="a checkout of yossigandelsman/clip_text_span")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args(argv)
    import importlib.metadata as md

    dtype = getattr(torch, args.dtype)
    if dtype == torch.float64:
        import clip.model
        # OpenAI's LayerNorm casts to float32 and back, so the model cannot run in float64 as is;
        # in float64 runs the cast is lifted (a dtype change, the only one besides x.half()).
        clip.model.LayerNorm.forward = torch.nn.LayerNorm.forward
    torch.set_num_threads(max(1, torch.get_num_threads()))
    state = openai_state_dict(dtype)
    model = openai_model(state)
    photos = photographs()
    g = torch.Generator().manual_seed(SEED + 2)
    targets = F.normalize(torch.randn(N_TARGETS, EMBED, generator=g, dtype=torch.float64), dim=-1)

    import open_clip
    preprocess = open_clip.image_transform(224, is_train=False)  # open_clip's 224-pixel transform
    inputs = {name: preprocess(img).unsqueeze(0).to(dtype) for name, img in photos.items()}

    results: dict[str, torch.Tensor] = {}
    results.update(run_generate_emap(args.grad_eclip, model, photos, targets))
    results.update(run_notebook(args.grad_eclip, model, photos, targets))
    results.update(run_legrad(state, inputs, targets))
    results.update(run_textspan(args.textspan, state, inputs, targets))
    results.update({f"input224/{k}": v for k, v in inputs.items()})
    results.update({f"state/{k}": v for k, v in state.items()})
    results["targets"] = targets
    meta = {
        "dtype": args.dtype,
        "photos": json.dumps(list(photos)),
        "grad_eclip_commit": commit(args.grad_eclip),
        "textspan_commit": commit(args.textspan),
        "legrad_torch": md.version("legrad_torch"),
        "openai_clip": md.version("openai-clip"),
        "open_clip_torch": md.version("open_clip_torch"),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in results.items()}, str(args.out), metadata=meta)
    print(f"wrote {args.out}: {len(results)} tensors; {meta}")


if __name__ == "__main__":
    main()
