"""Independent reference implementations of every explainer, for ``test_references.py``.

Nothing here imports ``eclip_core.trace`` or ``eclip_core.explainers``: every quantity is
computed from the open_clip model's own modules and parameters, either

* through the model's own forward (``model.encode_image`` / ``model.encode_text``) with
  hooks: a forward pre-hook on a resblock captures (or replaces) its input, a hook on a
  block's ``nn.MultiheadAttention`` captures its input and output; or
* by redoing a block by hand from a captured input: ``ln_1``, the three slices of
  ``in_proj_weight``, an explicit loop over heads, softmax, ``out_proj``, ``ln_2``,
  ``mlp``; the hand-written pass is checked against the model's forward where the two
  should agree, so the reference is known to be the model's computation.

Gradients are plain ``torch.autograd.grad`` of ``F.cosine_similarity``, one target at a
time. Grids are row-major (patch ``r * gw + c`` at row ``r``, column ``c``), as
``conv1`` lays them out.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- hooks


@contextmanager
def captured_inputs(blocks, replace_with_leaf: bool = False):
    """Record the input of every block in ``blocks`` while the model runs its own forward.

    With ``replace_with_leaf`` the input is swapped for a detached copy that requires
    grad, so gradients of the model's own output w.r.t. it can be taken.
    """
    store: list = [None] * len(blocks)

    def make(i):
        def hook(module, args):
            x = args[0]
            if replace_with_leaf:
                x = x.detach().requires_grad_(True)
                store[i] = x
                return (x,) + tuple(args[1:])
            store[i] = x.detach()
            return None
        return hook

    handles = [b.register_forward_pre_hook(make(i)) for i, b in enumerate(blocks)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def captured_attention_io(attn_module):
    """Record the (normalised) input and the output of a block's nn.MultiheadAttention."""
    store = {}

    def pre(module, args, kwargs):
        store["z"] = args[0] if args else kwargs["query"]

    def post(module, args, kwargs, output):
        store["out"] = output[0]

    handles = [attn_module.register_forward_pre_hook(pre, with_kwargs=True),
               attn_module.register_forward_hook(post, with_kwargs=True)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------- by hand


def qkv_by_hand(block, x):
    """(q, k, v), each (B, T, D) over the full width, from ln_1 and the in-projection."""
    d_model = x.shape[-1]
    z = block.ln_1(x)
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    q = z @ w[:d_model].T + b[:d_model]
    k = z @ w[d_model:2 * d_model].T + b[d_model:2 * d_model]
    v = z @ w[2 * d_model:].T + b[2 * d_model:]
    return q, k, v


def block_by_hand(block, x, heads: int | None = None, mask=None):
    """One residual attention block redone with an explicit loop over heads.

    Returns a dict: q, k, v (B, T, D); probs: list over heads of (B, T, T); o: (B, T, D)
    the concatenated head outputs before out_proj; out: the block output.
    """
    heads = heads or block.attn.num_heads
    q, k, v = qkv_by_hand(block, x)
    width = x.shape[-1] // heads
    probs, outs = [], []
    for h in range(heads):
        cols = slice(h * width, (h + 1) * width)
        logits = torch.einsum("btc,bsc->bts", q[..., cols], k[..., cols]) / math.sqrt(width)
        if mask is not None:
            logits = logits + mask
        p = torch.softmax(logits, dim=-1)
        probs.append(p)
        outs.append(torch.einsum("bts,bsc->btc", p, v[..., cols]))
    o = torch.cat(outs, dim=-1)
    y = x + block.ls_1(F.linear(o, block.attn.out_proj.weight, block.attn.out_proj.bias))
    out = y + block.ls_2(block.mlp(block.ln_2(y)))
    return {"q": q, "k": k, "v": v, "probs": probs, "o": o, "out": out}


def mha_probs(block, x, mask=None):
    """(B, H, T, T) per-head attention probabilities from the block's own nn.MultiheadAttention."""
    z = block.ln_1(x)
    _, weights = block.attn(z, z, z, need_weights=True, average_attn_weights=False, attn_mask=mask)
    return weights


def minmax_over(values, index):
    """Min-max of ``values`` (1-D) with min and max taken over ``values[index]`` only."""
    sub = values[index]
    lo, hi = sub.min(), sub.max()
    if hi - lo <= 1e-12:
        return torch.ones_like(values)
    return (values - lo) / (hi - lo)


def loosened_cos(block, q, k, qk: str):
    """cos(q, k_i) over the full width; ``out_proj`` passes both through W_out . + b_out first."""
    if qk == "out_proj":
        q = F.linear(q, block.attn.out_proj.weight, block.attn.out_proj.bias)
        k = F.linear(k, block.attn.out_proj.weight, block.attn.out_proj.bias)
    return F.cosine_similarity(q[None], k, dim=-1)


def image_embedding_from_tokens(visual, tokens):
    """ln_post then proj of the CLS token: the image embedding from the last block's output."""
    return visual.ln_post(tokens[:, 0]) @ visual.proj


# ----------------------------------------------------------------------------- vision helpers


def grid_of(model, images):
    ph, pw = model.visual.patch_size
    return images.shape[-2] // ph, images.shape[-1] // pw


def with_pos_embedding_for(model, grid):
    """A deep copy of ``model`` whose patch positional embeddings are bicubically
    interpolated (align_corners=False) to ``grid``, CLS kept: the reference mode's input."""
    twin = copy.deepcopy(model)
    visual = twin.visual
    pos = visual.positional_embedding.detach()
    gh0, gw0 = visual.grid_size
    if tuple(grid) != (gh0, gw0):
        width = pos.shape[-1]
        patch = pos[1:].reshape(gh0, gw0, width).permute(2, 0, 1)[None]  # (1, D, gh0, gw0)
        patch = F.interpolate(patch, size=tuple(grid), mode="bicubic", align_corners=False)
        new = torch.cat([pos[:1], patch[0].permute(1, 2, 0).reshape(grid[0] * grid[1], width)])
        visual.positional_embedding = torch.nn.Parameter(new)
    return twin


def all_block_inputs(model, images):
    """Inputs of every vision block, captured from ``model.encode_image`` (no grad)."""
    blocks = model.visual.transformer.resblocks
    with torch.no_grad(), captured_inputs(blocks) as store:
        embedding = model.encode_image(images)
    return list(store), embedding


def to_grid(rows, grid):
    """(..., N) patch values -> (..., gh, gw), row-major."""
    return rows.reshape(*rows.shape[:-1], *grid)


# ----------------------------------------------------------------------------- image branch


def image_eclip(model, images, targets, *, route: str, mode: str = "faithful",
                loosened: bool = True, qk: str = "out_proj"):
    """Expected (maps (B, K, gh, gw), scores (B, K)) of Grad-ECLIP / Attention-ECLIP.

    Faithful Grad-ECLIP takes w = dS/do_0 from the model's own forward (a hook on the last
    block's nn.MultiheadAttention output, pulled back through out_proj: w = W_out^T g).
    Attention-ECLIP differentiates the score w.r.t. the per-head attention probabilities
    of a hand-written recompute of the last block; reference mode (both routes) runs a
    copy of the model with interpolated positional embeddings and recomputes the last
    block by hand with one head over the full width (scale 1/sqrt(D)).
    """
    grid = grid_of(model, images)
    reference = mode == "reference"
    net = with_pos_embedding_for(model, grid) if reference else model
    visual = net.visual
    block = visual.transformer.resblocks[-1]
    d_model = block.attn.in_proj_weight.shape[1]
    heads = 1 if reference else block.attn.num_heads
    b, k = len(images), len(targets)
    t = targets.to(images.dtype)

    with torch.no_grad(), captured_inputs([block]) as store:
        own_embedding = net.encode_image(images)
    x_in = store[0]
    with torch.enable_grad():
        rec = block_by_hand(block, x_in, heads=heads)
        embedding = image_embedding_from_tokens(visual, rec["out"])
        if not reference:  # the hand-written block is the model's own
            torch.testing.assert_close(embedding, own_embedding, rtol=1e-9, atol=1e-12)
        contrib = torch.zeros(b, k, grid[0] * grid[1], dtype=images.dtype)
        if route == "grad" and not reference:
            with captured_attention_io(block.attn) as io:
                own = net.encode_image(images)
            for j in range(k):
                score = F.cosine_similarity(own, t[j:j + 1], dim=-1).sum()
                g = torch.autograd.grad(score, io["out"], retain_graph=True)[0][:, 0]  # (B, D)
                w = g @ block.attn.out_proj.weight  # dS/do_0 = W_out^T dS/d(attn output)
                v = io["z"] @ block.attn.in_proj_weight[2 * d_model:].T + block.attn.in_proj_bias[2 * d_model:]
                contrib[:, j] = torch.einsum("bnd,bd->bn", v[:, 1:], w).detach()
        elif route == "grad":
            for j in range(k):
                score = F.cosine_similarity(embedding, t[j:j + 1], dim=-1).sum()
                w = torch.autograd.grad(score, rec["o"], retain_graph=True)[0][:, 0]
                contrib[:, j] = torch.einsum("bnd,bd->bn", rec["v"][:, 1:], w).detach()
        elif route == "attention":
            for j in range(k):
                score = F.cosine_similarity(embedding, t[j:j + 1], dim=-1).sum()
                grads = torch.autograd.grad(score, rec["probs"], retain_graph=True)
                contrib[:, j] = sum(g[:, 0, 1:] for g in grads).detach()
        else:
            raise ValueError(route)
    if loosened:
        with torch.no_grad():
            lam = torch.stack([
                minmax_over(loosened_cos(block, rec["q"][i, 0], rec["k"][i, 1:], qk), slice(None))
                for i in range(b)])
        contrib = lam[:, None] * contrib
    maps = to_grid(torch.relu(contrib), grid)
    scores = F.cosine_similarity(embedding.detach()[:, None], t[None], dim=-1)
    return maps, scores


def raw_attention(model, images):
    """(B, gh, gw): CLS row of the last block's attention (its own nn.MultiheadAttention), mean over heads."""
    inputs, _ = all_block_inputs(model, images)
    with torch.no_grad():
        probs = mha_probs(model.visual.transformer.resblocks[-1], inputs[-1])
        return to_grid(probs.mean(1)[:, 0, 1:], grid_of(model, images))


def rollout(model, images, start_block: int = 0):
    """(B, gh, gw): Abnar & Zuidema rollout, A_L' ... A_s' with A' = rownorm(mean_h A + I)."""
    blocks = model.visual.transformer.resblocks
    inputs, _ = all_block_inputs(model, images)
    out = []
    with torch.no_grad():
        for i in range(len(images)):
            mats = []
            for block, x in list(zip(blocks, inputs))[start_block:]:
                a = mha_probs(block, x[i:i + 1])[0].mean(0)
                a = a + torch.eye(a.shape[0], dtype=a.dtype)
                mats.append(a / a.sum(dim=1, keepdim=True))
            joint = mats[-1]
            for a in reversed(mats[:-1]):
                joint = joint @ a
            out.append(joint[0, 1:])
    return to_grid(torch.stack(out), grid_of(model, images))


def gae(model, images, targets, *, last_block_only: bool = False, logit_scale: float = 1.0):
    """(B, K, gh, gw): Chefer et al. relevance R <- R + mean_h ReLU(dS/dA^h * A^h) R from R = I."""
    visual = model.visual
    blocks = visual.transformer.resblocks
    inputs, own = all_block_inputs(model, images)
    t = targets.to(images.dtype)
    grid = grid_of(model, images)
    with torch.enable_grad():
        x = inputs[0]
        recs = []
        for block in blocks:
            rec = block_by_hand(block, x)
            recs.append(rec)
            x = rec["out"]
        embedding = image_embedding_from_tokens(visual, x)
        torch.testing.assert_close(embedding, own, rtol=1e-9, atol=1e-12)
        used = recs[-1:] if last_block_only else recs
        leaves = [p for rec in used for p in rec["probs"]]
        maps = torch.zeros(len(images), len(targets), grid[0] * grid[1], dtype=images.dtype)
        for j in range(len(targets)):
            score = logit_scale * F.cosine_similarity(embedding, t[j:j + 1], dim=-1).sum()
            grads = torch.autograd.grad(score, leaves, retain_graph=True)
            n_tok = x.shape[1]
            for i in range(len(images)):
                relevance = torch.eye(n_tok, dtype=images.dtype)
                offset = 0
                for rec in used:
                    heads = len(rec["probs"])
                    cam = sum(torch.relu(grads[offset + h][i] * rec["probs"][h][i])
                              for h in range(heads)) / heads
                    offset += heads
                    relevance = relevance + cam @ relevance
                maps[i, j] = relevance[0, 1:].detach()
    return to_grid(maps, grid)


def gradcam(model, images, targets, cls_token="kept"):
    """(B, K, gh, gw): ReLU(sum_c w_c x_ic) on the last block's input tokens x, with
    w = dS/dx averaged over all tokens (``cls_token="kept"``) or over the patch tokens
    (``"dropped"``); the gradient from the model's own forward."""
    visual = model.visual
    block = visual.transformer.resblocks[-1]
    t = targets.to(images.dtype)
    with torch.enable_grad(), captured_inputs([block], replace_with_leaf=True) as store:
        embedding = model.encode_image(images)
        x = store[0]
        maps = []
        for j in range(len(targets)):
            score = F.cosine_similarity(embedding, t[j:j + 1], dim=-1).sum()
            g = torch.autograd.grad(score, x, retain_graph=True)[0]  # (B, T, D)
            w = g.mean(dim=1) if cls_token == "kept" else g[:, 1:].mean(dim=1)  # over tokens
            maps.append(torch.relu(torch.einsum("bnd,bd->bn", x[:, 1:], w)).detach())
    return to_grid(torch.stack(maps, dim=1), grid_of(model, images))


def maskclip(model, images, targets):
    """(B, K, gh, gw): cos(proj(ln_post(W_out v_i + b_out)), t) for the last block's values."""
    visual = model.visual
    block = visual.transformer.resblocks[-1]
    inputs, _ = all_block_inputs(model, images)
    with torch.no_grad():
        _, _, v = qkv_by_hand(block, inputs[-1])
        dense = visual.ln_post(F.linear(v[:, 1:], block.attn.out_proj.weight, block.attn.out_proj.bias))
        dense = dense @ visual.proj  # (B, N, E)
        t = targets.to(images.dtype)
        maps = torch.stack([F.cosine_similarity(dense, t[j][None, None], dim=-1)
                            for j in range(len(targets))], dim=1)
    return to_grid(maps, grid_of(model, images))


def rise(model, images, targets, masks, keep: float):
    """(B, K, gh, gw): sum_n cos(encode_image(x * M_n), t) M_n / (n * keep), averaged per patch."""
    ph, pw = model.visual.patch_size
    gh, gw = grid_of(model, images)
    t = targets.to(images.dtype)
    out = []
    with torch.no_grad():
        for image in images:
            sal = torch.zeros(len(targets), *image.shape[-2:], dtype=images.dtype)
            for m in masks:
                s = F.cosine_similarity(model.encode_image(image[None] * m), t, dim=-1)  # (K,)
                sal += s[:, None, None] * m[0]
            sal /= len(masks) * keep
            out.append(sal.reshape(len(targets), gh, ph, gw, pw).mean(dim=(2, 4)))
    return torch.stack(out)


# ----------------------------------------------------------------------------- text branch


def causal_mask(n: int, dtype):
    """Additive causal mask: position i sees positions <= i."""
    return torch.full((n, n), float("-inf"), dtype=dtype).triu(1)


def text_eclip(model, tokens, targets, *, route: str, mode: str = "faithful",
               loosened: bool = True, qk: str = "out_proj", n_blocks: int):
    """Expected (maps (B, K, L), scores (B, K)) of the text branch.

    The explained blocks (the last ``n_blocks``) are redone by hand from the input of the
    first of them (captured from ``model.encode_text``), with the causal mask built here,
    one head over the full width in reference mode; the query is the EOT position
    (argmax token id), explained tokens lie strictly between SOT and EOT; contributions
    summed over the blocks, ReLU, zero elsewhere, normalised to sum 1. The loosened term
    is min-max normalised over the explained tokens (faithful) or all positions (reference).
    """
    blocks = model.transformer.resblocks
    explained = list(blocks)[len(blocks) - n_blocks:]
    reference = mode == "reference"
    b, n = tokens.shape
    eot = tokens.argmax(dim=-1)
    t = targets.to(model.token_embedding.weight.dtype)
    with torch.no_grad(), captured_inputs(explained[:1]) as store:
        own = model.encode_text(tokens)
    mask = causal_mask(n, own.dtype)
    with torch.enable_grad():
        x = store[0]
        recs = []
        for block in explained:
            rec = block_by_hand(block, x, heads=1 if reference else None, mask=mask)
            recs.append(rec)
            x = rec["out"]
        pooled = model.ln_final(x)[torch.arange(b), eot]
        embedding = pooled @ model.text_projection
        if not reference:
            torch.testing.assert_close(embedding, own, rtol=1e-9, atol=1e-12)
        total = torch.zeros(b, len(targets), n, dtype=own.dtype)
        for j in range(len(targets)):
            score = F.cosine_similarity(embedding, t[j:j + 1], dim=-1).sum()
            if route == "attention":
                leaves = [p for rec in recs for p in rec["probs"]]
            else:
                leaves = [rec["o"] for rec in recs]
            grads = torch.autograd.grad(score, leaves, retain_graph=True)
            for i in range(b):
                e = int(eot[i])
                explained_positions = torch.arange(1, e)
                offset = 0
                for block, rec in zip(explained, recs):
                    if route == "attention":
                        heads = len(rec["probs"])
                        contrib = sum(grads[offset + h][i, e] for h in range(heads))
                        offset += heads
                    else:
                        w = grads[offset][i, e]
                        offset += 1
                        contrib = rec["v"][i] @ w
                    if loosened:
                        cos = loosened_cos(block, rec["q"][i, e], rec["k"][i], qk)
                        index = slice(None) if reference else explained_positions
                        contrib = minmax_over(cos, index) * contrib
                    total[i, j] += contrib.detach()
    maps = torch.zeros_like(total)
    for i in range(b):
        e = int(eot[i])
        maps[i, :, 1:e] = torch.relu(total[i, :, 1:e])
    sums = maps.sum(-1, keepdim=True)
    maps = torch.where(sums > 0, maps / sums, maps)
    scores = F.cosine_similarity(embedding.detach()[:, None], t[None], dim=-1)
    return maps, scores


# ----------------------------------------------------------------------------- the zoo


def blocks_by_hand(model, images):
    """Every vision block redone by hand from the input of the first (captured from
    ``encode_image``), checked against the model's own embedding; the per-block records."""
    visual = model.visual
    inputs, own = all_block_inputs(model, images)
    x, recs = inputs[0], []
    for block in visual.transformer.resblocks:
        rec = block_by_hand(block, x)
        recs.append(rec)
        x = rec["out"]
    torch.testing.assert_close(image_embedding_from_tokens(visual, x), own, rtol=1e-9, atol=1e-12)
    return recs, own


def legrad(model, images, targets, *, n_blocks: int, pooling: str = "cls"):
    """(maps (B, K, gh, gw), scores (B, K)): for each of the last ``n_blocks`` hand-written
    blocks, the embedding ln_post(pooled output) @ proj (pooled: the CLS token, or the mean
    of every token), its cosine with one target at a time, autograd w.r.t. each head's
    probabilities, ReLU, mean over heads and query rows, CLS column dropped; summed over
    the blocks, then each map min-maxed by hand."""
    visual = model.visual
    t = targets.to(images.dtype)
    b, k = len(images), len(targets)
    with torch.enable_grad():
        recs, _ = blocks_by_hand(model, images)
        used = recs[len(recs) - n_blocks:]
        embeddings = [visual.ln_post(r["out"][:, 0] if pooling == "cls" else r["out"].mean(dim=1)) @ visual.proj
                      for r in used]
        total = torch.zeros(b, k, recs[0]["out"].shape[1] - 1, dtype=images.dtype)
        for j in range(k):
            for rec, embedding in zip(used, embeddings):
                score = F.cosine_similarity(embedding, t[j:j + 1], dim=-1).sum()
                grads = torch.autograd.grad(score, rec["probs"], retain_graph=True)  # per head (B, T, T)
                positive = sum(torch.relu(g) for g in grads) / len(grads)  # mean over heads
                total[:, j] += positive.mean(dim=1)[:, 1:].detach()  # mean over query rows, CLS column dropped
    maps = torch.empty_like(total)
    for i in range(b):
        for j in range(k):
            row = total[i, j]
            maps[i, j] = (row - row.min()) / (row.max() - row.min())
    scores = F.cosine_similarity(embeddings[-1].detach()[:, None], t[None], dim=-1)
    return to_grid(maps, grid_of(model, images)), scores


def direct_contributions(model, images, targets, *, n_blocks: int, split: str = "own_mean"):
    """(B, K, gh, gw): for each of the last ``n_blocks`` hand-written blocks, head h and patch i,
    the term A^h[CLS, i] (v^h_i @ W_O^h^T) through ls_1, centred over channels, scaled by
    ln_post's weight over its std at the final CLS token, @ proj; dotted with the unit target
    and divided by |encode_image|. Loops over blocks, heads and patches."""
    visual = model.visual
    blocks = visual.transformer.resblocks
    t = targets.to(images.dtype)
    with torch.no_grad():
        recs, own = blocks_by_hand(model, images)
        final = recs[-1]["out"][:, 0]
        sigma = torch.sqrt(final.var(dim=-1, unbiased=False) + visual.ln_post.eps)[:, None]
        n_tok = recs[0]["out"].shape[1]
        maps = torch.zeros(len(images), len(targets), n_tok - 1, dtype=images.dtype)
        for index in range(len(blocks) - n_blocks, len(blocks)):
            block, rec = blocks[index], recs[index]
            heads = len(rec["probs"])
            width = final.shape[-1] // heads
            for h in range(heads):
                cols = slice(h * width, (h + 1) * width)
                w_h = block.attn.out_proj.weight[:, cols]
                for i in range(1, n_tok):
                    write = block.ls_1(rec["probs"][h][:, 0, i, None] * (rec["v"][:, i, cols] @ w_h.T))
                    if split == "own_mean":
                        centred = write - write.mean(dim=-1, keepdim=True)
                        c = (visual.ln_post.weight * centred / sigma) @ visual.proj  # (B, E)
                    else:  # TextSpan: b_O over T tokens x H heads, the norm's mean and bias over every term
                        terms = (2 * len(blocks) + 1) * n_tok * heads
                        write = write + block.ls_1(block.attn.out_proj.bias) / (n_tok * heads)
                        mean = final.mean(dim=-1, keepdim=True) / terms
                        post = visual.ln_post.weight * (write - mean) / sigma + visual.ln_post.bias / terms
                        c = post @ visual.proj
                    maps[:, :, i - 1] += (c @ t.T) / own.norm(dim=-1)[:, None]
    return to_grid(maps, grid_of(model, images))


def clip_surgery(model, images, targets, *, n_blocks: int, weighted: bool = False):
    """(B, K, gh, gw), as the public CLIP Surgery code computes it: from the input of the first
    surgery block a second stream adds, per block, out_proj of per-head softmax(v v^T / sqrt(d)) v
    (v from the hand-written original block) and no MLP; its patch tokens through ln_post and
    proj, normalised; feature surgery by element-wise products f_i * t_k (optionally weighted by
    softmax(2 cos(encode_image, t)) / its mean), minus their mean over the K classes, summed."""
    visual = model.visual
    blocks = visual.transformer.resblocks
    t = targets.to(images.dtype)
    with torch.no_grad():
        recs, own = blocks_by_hand(model, images)
        first = len(blocks) - n_blocks
        x = recs[first - 1]["out"] if first > 0 else all_block_inputs(model, images)[0][0]
        for block, rec in zip(list(blocks)[first:], recs[first:]):
            heads = len(rec["probs"])
            width = x.shape[-1] // heads
            outs = []
            for h in range(heads):
                v = rec["v"][..., h * width:(h + 1) * width]
                outs.append(torch.softmax(v @ v.transpose(1, 2) / math.sqrt(width), dim=-1) @ v)
            o = torch.cat(outs, dim=-1)
            x = x + block.ls_1(F.linear(o, block.attn.out_proj.weight, block.attn.out_proj.bias))
        f = visual.ln_post(x[:, 1:]) @ visual.proj
        f = f / f.norm(dim=-1, keepdim=True)
        feats = f[:, :, None, :] * t[None, None]  # (B, N, K, E)
        if weighted:
            prob = (2 * F.cosine_similarity(own[:, None], t[None], dim=-1)).softmax(dim=-1)  # (B, K)
            feats = feats * (prob / prob.mean(dim=-1, keepdim=True))[:, None, :, None]
        maps = (feats - feats.mean(dim=2, keepdim=True)).sum(dim=-1)  # (B, N, K)
    return to_grid(maps.transpose(1, 2), grid_of(model, images))


def black(images, mean=None, std=None):
    """The black image in the normalised input space, (0 - mean) / std, with open_clip's
    default normalisation unless given."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = torch.tensor(mean or OPENAI_DATASET_MEAN, dtype=images.dtype)[:, None, None]
    std = torch.tensor(std or OPENAI_DATASET_STD, dtype=images.dtype)[:, None, None]
    return (-mean / std).expand_as(images[0]).expand_as(images).clone()


def integrated_gradients(model, images, targets, baseline, steps: int):
    """(B, K, gh, gw): integrated gradients in *pixel* space from the baseline image, right
    Riemann sum, gradients of the cosine through ``encode_image`` one step and one target at a
    time; (x - x0) * mean gradient, summed over the channels and the pixels of each patch."""
    ph, pw = model.visual.patch_size
    gh, gw = grid_of(model, images)
    t = targets.to(images.dtype)
    acc = torch.zeros(len(targets), *images.shape, dtype=images.dtype)
    for step in range(1, steps + 1):
        point = (baseline + step / steps * (images - baseline)).requires_grad_(True)
        with torch.enable_grad():
            embedding = model.encode_image(point)
            for j in range(len(targets)):
                score = F.cosine_similarity(embedding, t[j:j + 1], dim=-1).sum()
                acc[j] += torch.autograd.grad(score, point, retain_graph=True)[0]
    pixels = ((images - baseline)[None] * acc / steps).sum(dim=2)  # (K, B, H, W)
    return pixels.reshape(len(targets), len(images), gh, ph, gw, pw).sum(dim=(3, 5)).transpose(0, 1)


def occlusion(model, images, targets, baseline):
    """(B, K, gh, gw): cos(encode_image(x), t) - cos(encode_image(x with patch (r, c) set to
    the baseline), t), one patch and one image at a time."""
    ph, pw = model.visual.patch_size
    gh, gw = grid_of(model, images)
    t = targets.to(images.dtype)
    out = torch.zeros(len(images), len(targets), gh, gw, dtype=images.dtype)
    with torch.no_grad():
        for i in range(len(images)):
            full = F.cosine_similarity(model.encode_image(images[i:i + 1]), t, dim=-1)
            for r in range(gh):
                for c in range(gw):
                    x = images[i:i + 1].clone()
                    x[..., r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] = baseline[i:i + 1, :, r * ph:(r + 1) * ph,
                                                                                c * pw:(c + 1) * pw]
                    out[i, :, r, c] = full - F.cosine_similarity(model.encode_image(x), t, dim=-1)
    return out
