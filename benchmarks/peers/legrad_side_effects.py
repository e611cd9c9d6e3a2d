"""What LeGrad's wrapper does to the model it is given (``legrad_torch``), run in the peers'
environment of ``make peers`` (``open_clip_torch`` 2.23, its pin):

- ``LeWrapper(model)`` replaces ``model.visual.forward`` and rewrites
  ``model.visual.positional_embedding`` in place at the first image size it sees; a later call
  at another size, by LeGrad or by the unwrapped model, is tried;
- a non-square grid (224x320) is tried;
- with ``--eclip`` (in eclip's environment, ``legrad_torch`` and ``einops`` on ``PYTHONPATH``:
  open_clip 3.x without LeGrad's pin), LeGrad's map is set beside eclip's
  ``legrad(pooling="mean")``.

Prints one line per attempt: "runs" or "fails" with the error's first line.
"""
import sys
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from legrad import LeWrapper


def fresh():
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-16", pretrained=None).eval()


def image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def attempt(label: str, fn, *args) -> None:
    try:
        fn(*args)
        print(label, ": runs")
    except Exception as ex:  # noqa: BLE001 -- what fails, and how, is the finding
        print(label, ": fails:", type(ex).__name__, str(ex).splitlines()[0][:150])


def main() -> None:
    t = F.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(1)), dim=-1)
    x224, x448 = image(224, 224, 2), image(448, 448, 3)
    for first in (x224, x448):
        model = fresh()
        pos0 = tuple(model.visual.positional_embedding.shape)
        with torch.no_grad():
            e0 = model.encode_image(x224)
        wrapped = LeWrapper(model)
        name = "x".join(map(str, first.shape[-2:]))
        attempt(f"first call {name}", wrapped.compute_legrad_clip, t, first)
        print(f"  model.visual.positional_embedding {pos0} -> {tuple(model.visual.positional_embedding.shape)}; "
              f"model.visual.forward is now {getattr(model.visual.forward, '__name__', '?')}")
        attempt("  then LeGrad at 448x448", wrapped.compute_legrad_clip, t, x448)
        attempt("  then LeGrad at 224x224", wrapped.compute_legrad_clip, t, x224)

        def unwrapped(model, e0):
            with torch.no_grad():
                e1 = model.encode_image(x224)
            print("  the unwrapped model's embedding at 224: max relative change",
                  float((e1 - e0).abs().max() / e0.abs().max()))
        attempt("  the unwrapped model at 224", unwrapped, model, e0)
    wrapped = LeWrapper(fresh())
    attempt("fresh model, LeGrad at 224x320", wrapped.compute_legrad_clip, t, image(224, 320, 4))
    if "--eclip" in sys.argv[1:]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from compare import legrad_pixels

        import eclip_core as ec
        ours = legrad_pixels(ec.explain(fresh(), x224, t, method="legrad", pooling="mean").maps, 16)
        theirs = LeWrapper(fresh()).compute_legrad_clip(t, x224).detach()
        print(f"LeGrad under open_clip {open_clip.__version__} beside eclip's legrad(pooling='mean'): "
              f"max abs {float((ours - theirs).abs().max()):.3f}, "
              f"Pearson {float(torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]):.3f}")


if __name__ == "__main__":
    main()
