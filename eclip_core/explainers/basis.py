"""The explanation basis: Grad-ECLIP's maps for any vocabulary at the cost of a matrix product.

Before its ReLU, the image map of Grad-ECLIP (and of Attention-ECLIP, the same map) is linear
in the unit target ``t`` (chapter 2 derives it in sympy):

    G_i(t) = lambda_i * sum_c w_c(t) v_{i,c},     w(t) = J^T g(t),     g(t) = (I - f f^T) t / |e|

with ``e`` the image embedding of the pass explained, ``f = e / |e|``, ``g(t)`` the cosine's
gradient with respect to ``e``, ``J = de/do_0`` the Jacobian of the embedding with respect to the
last block's CLS attention output (the rest of the block, the final LayerNorm and the
projection, at the point of the forward pass), ``v_i`` the last block's values of patch ``i``
(all heads) and ``lambda_i`` the loosened q-k similarity (1 without it) -- none of which depends
on ``t``. So ``G_i(t) = <r_i, t>`` with

    r_i = lambda_i * (I - f f^T) J v_i / |e|,

one row of E numbers per patch: each image has a basis ``R`` (N patches x E), and the maps of
K targets are ``ReLU(R t_k)``, a (N x E) x (E x K) product. The basis is computed once per image
from one forward pass and E small backward passes through the last block's CLS readout (the
Jacobian ``J``); it holds for both ``qk`` options, with and without the loosened term, in
either mode (the published pass is another forward pass, but the map is as linear in ``t``).
The ReLU is the only step that is not linear, and it is applied per map after the product.

The text branch has a basis too: its token maps sum the explained blocks' EOT contributions,
each linear in the target image embedding ``t`` before the ReLU, so a text's basis holds one
row per token, ``sum_l lambda_{l,j} (I - f f^T) J_l v_{l,j} / |e|`` (``J_l``: the text
embedding's Jacobian with respect to block l's attention output at EOT; E backward passes
through the text tower, batched), and the maps of K images are ``ReLU(R t_k)`` restricted to
the explained tokens and normalised to sum 1, as ``explain_text`` gives them
(:func:`text_explanation_basis`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..clip import ClipModel
from ..departures import Departures
from ..errors import InputError
from ..inputs import Images, target_norms
from ..maps import minmax, to_grid
from ..models import Model, as_model
from ..trace import merge_heads
from .base import Explanation, check_finite, cosine_scores, grad_mode_independent, pushforward, record, unit
from .eclip import loosened_attention, text_eclip_parts, text_maps
from .registry import Request, resolve

#: The methods whose maps the basis gives: the two routes of the same map.
BASIS_METHODS = ("grad_eclip", "attention_eclip")
#: Targets multiplied at once by :meth:`ExplanationBasis.explain` (peak memory: the output plus
#: one chunk's maps).
CHUNK = 4096
FORMAT = "eclip-explanation-basis/1"


@dataclass(frozen=True)
class ExplanationBasis:
    """Per image, the rows from which any target's map is one matrix product.

    ``rows``: (B, N, E), map of patch ``i`` of image ``b`` for unit target ``t`` before the ReLU
    = ``rows[b, i] @ t``; ``embeddings``: (B, E) the image embeddings of the pass explained
    (``scores`` = their cosine with the targets); ``original``: (B, E) the deployed model's own
    embeddings where the pass departs from it (the certificate: ``scores_original``), else
    None; ``request``, ``departures``, ``grid`` and ``input_size`` as in an
    :class:`~eclip_core.explainers.base.Explanation`; ``model``: the model's name; ``names``:
    the images' names, if given.
    """

    rows: torch.Tensor
    embeddings: torch.Tensor
    request: Request
    departures: Departures
    grid: tuple[int, int]
    input_size: tuple[int, int]
    model: str
    original: torch.Tensor | None = None
    names: list[str] = field(default_factory=list)
    #: "image" (rows per patch) or "text" (rows per token, ``token_mask`` the explained ones)
    branch: str = "image"
    token_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def bytes_per_image(self) -> int:
        """What one image's basis takes (rows and embeddings, in their dtype)."""
        per = self.rows[0].numel() + self.embeddings[0].numel() * (1 if self.original is None else 2)
        return per * self.rows.element_size()

    def explain(self, targets: torch.Tensor | str | Sequence[str], model: Model | None = None, *,
                chunk: int = CHUNK) -> Explanation:
        """The maps of K targets, the same as ``explain(model, images, targets, method, mode,
        **options)`` would give: ``targets`` a (K, E) tensor of embeddings (normalised here), or
        strings with the ``model`` that embeds them. ``chunk``: targets per matrix product."""
        t, norms = self._targets(targets, model)
        if chunk < 1:
            raise InputError(f"chunk must be a positive number of targets, got {chunk!r}")
        b, n, _ = self.rows.shape
        maps = self.rows.new_empty(b, len(t), n)
        transposed = self.rows.transpose(1, 2).contiguous()  # (B, E, N)
        for start in range(0, len(t), chunk):  # each chunk of targets read once for every image
            part = t[start:start + chunk].to(self.rows.dtype)
            inverse = (1 / norms[start:start + chunk]).to(self.rows.dtype)[:, None]
            for image in range(b):
                block = maps[image, start:start + chunk]  # contiguous rows of the output: no copy
                torch.matmul(part, transposed[image], out=block)
                block.mul_(inverse)  # unit targets: the norm divided out of the map, not the targets
                if self.branch == "image":
                    block.clamp_(min=0)
        # finite rows (checked when the basis is made or read) times unit targets are finite
        scores = cosine_scores(self.embeddings, t.to(self.rows.dtype)) / norms.to(self.rows.dtype)
        original = None if self.original is None else \
            cosine_scores(self.original, t.to(self.rows.dtype)) / norms.to(self.rows.dtype)
        if self.branch == "text":
            assert self.token_mask is not None
            return Explanation(text_maps(maps.transpose(0, 1), self.token_mask), scores, self.request,
                               self.departures, branch="text", token_mask=self.token_mask, scores_original=original,
                               extras={"basis": self.model, "texts": self.names})
        return Explanation(to_grid(maps, self.grid), scores, self.request, self.departures,
                           scores_original=original, input_size=self.input_size, extras={"basis": self.model})

    def __post_init__(self) -> None:
        if self.rows.ndim != 3 or self.embeddings.shape != (self.rows.shape[0], self.rows.shape[2]):
            raise InputError(f"a basis holds (B, N, E) rows and (B, E) embeddings, got {tuple(self.rows.shape)} "
                             f"and {tuple(self.embeddings.shape)}")
        check_finite(self.rows, self.request.name, "basis")
        if float(self.rows.abs().max()) > 1e30:
            raise InputError("the basis has rows too large for their maps to stay finite")

    def _targets(self, targets: Any, model: Model | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, E) targets, checked, and their norms (divided out of the maps)."""
        if isinstance(targets, torch.Tensor) and (targets.ndim == 2 or self.branch == "image"):
            targets = targets.to(self.rows.device)
            return targets, target_norms(targets, self.rows.shape[-1])
        what = "images" if self.branch == "text" else "texts"
        if model is None:
            raise InputError(f"{what} as targets need the model that embeds them: pass model=, or (K, E) embeddings")
        clip = as_model(model)
        if clip.name != self.model:
            raise InputError(f"this basis was made with {self.model!r}; {what} embedded by {clip.name!r} "
                             "would be another model's targets")
        embed = clip.image_embeddings if self.branch == "text" else clip.text_embeddings
        unit_targets = embed(targets).to(self.rows.device, self.rows.dtype)
        return unit_targets, unit_targets.new_ones(len(unit_targets))

    def save(self, path: str | Path) -> Path:
        """Write the basis as one safetensors file (tensors, and what made them as metadata)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"rows": self.rows.contiguous().cpu(), "embeddings": self.embeddings.contiguous().cpu()}
        if self.original is not None:
            tensors["original"] = self.original.contiguous().cpu()
        if self.token_mask is not None:
            tensors["token_mask"] = self.token_mask.contiguous().cpu()
        meta = {"format": FORMAT, "method": self.request.name, "mode": self.request.mode,
                "options": json.dumps(dict(self.request.options)), "grid": json.dumps(list(self.grid)),
                "input_size": json.dumps(list(self.input_size)), "model": self.model,
                "names": json.dumps(self.names, ensure_ascii=False), "branch": self.branch}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)
        return path


def load_basis(path: str | Path) -> ExplanationBasis:
    """Read a basis written by :meth:`ExplanationBasis.save` (no model needed to use it)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no basis file {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError) as err:
        raise InputError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT or "rows" not in tensors:
        raise InputError(f"{path}: not an explanation basis (format {meta.get('format')!r}, expected {FORMAT!r})")
    branch = meta.get("branch", "image")
    request = resolve(meta["method"], meta["mode"], json.loads(meta["options"]), text=branch == "text")
    return ExplanationBasis(tensors["rows"], tensors["embeddings"], request, request.departures,
                            tuple(json.loads(meta["grid"])), tuple(json.loads(meta["input_size"])),
                            meta["model"], tensors.get("original"), json.loads(meta["names"]), branch,
                            tensors.get("token_mask"))


def explanation_basis(model: Model, images: Images, method: str | Request = "grad_eclip", mode: str | None = None,
                      *, names: Sequence[str] | None = None, batch_size: int = 16,
                      **options: Any) -> ExplanationBasis:
    """The basis of B images (paths, PIL images or a preprocessed tensor) for Grad-ECLIP or
    Attention-ECLIP in ``mode`` with ``options`` (``loosened``, ``qk``): then
    ``basis.explain(targets)`` equals ``explain(model, images, targets, method, mode, **options)``
    for any targets. ``batch_size``: images per forward pass."""
    clip = as_model(model)
    request = resolve(method, mode, options, model=clip)
    if request.name not in BASIS_METHODS:
        raise InputError(f"the explanation basis exists for {', '.join(BASIS_METHODS)} (their maps are linear "
                         f"in the target before the ReLU); {request.name!r} has none")
    departures = request.departures_for(clip)
    x, original = clip.prepare(images, keep_size=departures.keep_size)
    if names is not None and len(names) != len(x):
        raise InputError(f"{len(names)} names for {len(x)} images")
    parts = [_basis_rows(clip, x[i:i + batch_size], departures, **request.options)
             for i in range(0, len(x), batch_size)]
    rows = torch.cat([p[0] for p in parts])
    embeddings = torch.cat([p[1] for p in parts])
    grid = parts[0][2]
    deployed = None
    if departures.any and original is not None:
        with torch.no_grad():
            deployed = torch.cat([clip.encode_image(original[i:i + batch_size])
                                  for i in range(0, len(original), batch_size)])
    return ExplanationBasis(rows, embeddings, request, departures, grid, (x.shape[-2], x.shape[-1]), clip.name,
                            deployed, list(names or []))


@grad_mode_independent
def _basis_rows(model: ClipModel, images: torch.Tensor, departures: Departures, *, loosened: bool = True,
                qk: str = "out_proj") -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(B, N, E) rows, (B, E) embeddings and the grid of one batch (see the module)."""
    with torch.no_grad():
        tr = record(model, images, departures, "last")
    last = tr.blocks[-1]
    e = tr.embedding.detach()
    x_cls = last.x_in[:, 0]
    values = merge_heads(last.v)[:, 1:].detach()  # (B, N, D)
    # J v_i for every patch at once, in forward mode: N tangents cost less than E cotangents
    jv = pushforward(lambda o: model.cls_readout(x_cls, o), last.attn_out[:, 0],
                     values.transpose(0, 1)).transpose(0, 1)  # (B, N, E)
    with torch.no_grad():
        f = unit(e)
        rows = (jv - torch.einsum("bne,be->bn", jv, f)[..., None] * f[:, None]) / e.norm(dim=-1)[:, None, None]
        if loosened:
            lam = minmax(loosened_attention(model, merge_heads(last.q)[:, 0], merge_heads(last.k)[:, 1:], qk))
            rows = rows * lam[..., None]
    assert tr.grid is not None
    return rows.detach().contiguous(), e, tr.grid


def text_explanation_basis(model: Model, texts: str | Sequence[str], method: str | Request = "grad_eclip",
                           mode: str | None = None, **options: Any) -> ExplanationBasis:
    """The text branch's basis of B texts (one row per token): then ``basis.explain(images,
    model)`` (or (K, E) image embeddings) equals ``explain_text(model, texts, images, method,
    mode, **options)`` for any images. ``options``: ``loosened``, ``qk``, ``n_blocks``."""
    clip = as_model(model)
    request = resolve(method, mode, options, text=True, model=clip)
    if request.name not in BASIS_METHODS:
        raise InputError(f"the explanation basis exists for {', '.join(BASIS_METHODS)}; {request.name!r} has none")
    departures = request.departures
    tokens = clip.tokenize(texts)
    rows, embedding, mask = _text_rows(clip, tokens, departures, **request.options)
    deployed = None
    if departures.any:
        with torch.no_grad():
            deployed = clip.encode_text(tokens)
    names = [texts] if isinstance(texts, str) else list(texts)
    return ExplanationBasis(rows, embedding, request, departures, (0, 0), (0, 0), clip.name, deployed, names,
                            "text", mask)


@grad_mode_independent
def _text_rows(model: ClipModel, tokens: torch.Tensor, departures: Departures, **options: Any
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L, E) rows, (B, E) embeddings and (B, L) explained tokens (see the module)."""
    def identity(e: torch.Tensor) -> torch.Tensor:  # the E unit cotangents: the Jacobian, one row each
        width = e.shape[-1]
        return torch.eye(width, dtype=e.dtype, device=e.device)[:, None].expand(width, len(e), width)

    parts = text_eclip_parts(model, tokens, identity, route="grad", departures=departures, **options)
    jv = parts.total.permute(1, 2, 0)  # (B, L, E): sum_l lambda_l J_l v_l
    e = parts.embedding
    f = unit(e)
    rows = (jv - torch.einsum("ble,be->bl", jv, f)[..., None] * f[:, None]) / e.norm(dim=-1)[:, None, None]
    return rows.contiguous(), e, parts.token_mask
