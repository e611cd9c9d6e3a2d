"""Model randomisation (Adebayo et al. 2018): maps must change when the model's weights do.

A check of explainers rather than a metric of one map: it explains the same images again and
again on copies of the model whose weights are redrawn from the top down."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .clip import ClipModel
from .explainers import Request, explain, resolve
from .inputs import as_list, load_image
from .metrics import declare
from .models import Model, as_model
from .stats import pearson, spearman

declare("randomisation_spearman", "lower",
        "rank correlation of the maps with the trained model's once weights are randomised", "cascade")


@dataclass
class CascadeStep:
    """One step of the model-randomisation cascade (Adebayo et al. 2018).

    ``spearman`` / ``pearson``: mean over images and targets of the correlation between
    the trained model's maps and this step's maps (step 0, nothing randomised, is 1 by
    construction). ``agreement``: fraction of images whose zero-shot top-1 over the
    texts (the randomised model's ``encode_image`` on its own input) is unchanged: the
    model's performance, independent of the explainer. A faithful explainer's correlation falls as layers are
    randomised (lower is better after step 0).
    """

    step: int
    name: str
    parameters: tuple[str, ...]
    spearman: float
    pearson: float
    agreement: float
    per_image: tuple[float, ...] = ()  # each image's Spearman correlation, mean over the targets


def randomise_(model: ClipModel, names: Iterable[str], generator: torch.Generator) -> None:
    """Redraw each named image-tower parameter from a Gaussian with the tensor's own mean and std."""
    params = model.vision_parameters()
    with torch.no_grad():
        for name in names:
            p = params[name]
            flat = p.detach().double().flatten()
            mu = float(flat.mean())
            sd = float(flat.std()) if flat.numel() > 1 else abs(mu)
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.copy_((noise * sd + mu).to(p.dtype))


def _explain_maps(model: ClipModel, request: Request, images, targets: torch.Tensor) -> torch.Tensor:
    return explain(model, images, targets, request).maps.detach().double()


def cascade(model: Model, methods: Sequence[str | Request], images, texts, *, seed: int = 0,
            options: dict[str, dict[str, Any]] | None = None,
            progress: bool = False) -> dict[str, list[CascadeStep]]:
    """The randomisation cascade for several methods on the same randomised models.

    ``methods``: names, ``"name:reference"`` or requests; ``options``: per method label,
    keyword arguments for ``explain``. Returns the steps per method label (see
    :func:`randomisation_cascade`); lower correlation after step 0 is better.
    """
    clip = as_model(model)
    requests = [resolve(m, options=(options or {}).get(str(m), {})) for m in methods]
    targets = clip.text_embeddings(texts)
    if not isinstance(images, torch.Tensor):
        images = [load_image(im) for im in as_list(images)]  # decoded once, explained many times
    twin = clip.with_module(copy.deepcopy(clip.module).eval())  # never touch the user's model
    native = twin.native_input(images)

    def predictions():  # the (randomised) original model's zero-shot top-1 on its own input
        with torch.no_grad():
            return (F.normalize(twin.encode_image(native), dim=-1) @ targets.T).argmax(-1)

    pred0 = predictions()
    trained = {str(r): _explain_maps(twin, r, images, targets) for r in requests}
    generator = torch.Generator().manual_seed(seed)
    groups: list[tuple[str, list[str]]] = [("trained", [])] + clip.vision_parameter_groups()
    out: dict[str, list[CascadeStep]] = {str(r): [] for r in requests}
    for step, (name, names) in enumerate(tqdm(groups, desc="randomisation", disable=not progress,
                                              leave=False)):
        randomise_(twin, names, generator)
        agreement = float((predictions() == pred0).double().mean())
        for r in requests:
            m = str(r)
            maps = _explain_maps(twin, r, images, targets) if step else trained[m]
            a, b = trained[m].flatten(2), maps.flatten(2)
            rho = torch.as_tensor(spearman(a, b))  # (B, K)
            out[m].append(CascadeStep(step, name, tuple(names), float(rho.mean()),
                                      float(torch.as_tensor(pearson(a, b)).mean()), agreement,
                                      tuple(rho.mean(-1).tolist())))
    return out


def randomisation_cascade(model: Model, method: str, images, texts, *, seed: int = 0, mode: str | None = None,
                          **explain_options: Any) -> list[CascadeStep]:
    """Model-randomisation test (Adebayo et al. 2018) for one explainer.

    On a deep copy of the model (the user's model is never modified), the vision
    tower's parameters are randomised cumulatively from the top down -- projection +
    ``ln_post``, then the last block, the block below, ..., down to the embeddings --
    each parameter tensor redrawn from a Gaussian with its own mean and standard
    deviation (scale kept, learned structure destroyed; seeded by ``seed``). At every
    step the same images and texts are explained (in ``mode``, with ``explain_options``
    passed to :func:`eclip_core.explain`) and compared with the
    trained model's maps: mean Spearman rank correlation (average ranks for ties) and
    Pearson correlation over images and targets. Step 0 is the trained model itself
    (correlation 1). Pass criterion (P2): the correlation falls well below 1 once the
    top is randomised; maps that survive randomisation do not explain the model.
    """
    request = resolve(method, mode, explain_options)
    return cascade(model, [request], images, texts, seed=seed)[str(request)]
