#!/usr/bin/env python
"""Mutation check: single-line mutations of eclip_core that pytest must kill.

Each mutant names a file, the exact original text (which must occur exactly once:
the list fails loudly when it goes stale), its replacement, and the tests that should
kill it. The repository is copied to a temporary directory (without .git, .venv and
build outputs); each mutant is applied to the copy, the named tests run there with
``-x -q`` (cwd = the copy, so the mutated package is the one imported), and the file is
restored in a ``finally``. The worktree itself is never modified.

To keep it fast on a small machine the heavy third-party imports (torch, open_clip,
pytest and its plugins) are made once in this process; every pytest run happens in a
forked child, which imports eclip_core afresh from the copy. A baseline run of all the
named tests on the unmutated copy must pass first.

    python tools/mutants.py                 # all mutants; exit 1 if any survives
    python tools/mutants.py --only NAME...  # a few
    python tools/mutants.py --list
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = "tests/test_references.py"


def ref(*names: str) -> tuple[str, ...]:
    return tuple(f"{REF}::{n}" for n in names)


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


T = "eclip_core/trace/open_clip.py"
TR = "eclip_core/trace/__init__.py"
E = "eclip_core/explainers/eclip.py"
B = "eclip_core/explainers/base.py"
A = "eclip_core/explainers/attention.py"
G = "eclip_core/explainers/gae.py"
C = "eclip_core/explainers/gradcam.py"
M = "eclip_core/explainers/maskclip.py"
R = "eclip_core/explainers/rise.py"
N = "eclip_core/explainers/entry.py"
IN = "eclip_core/inputs.py"
CM = "eclip_core/clip.py"
MP = "eclip_core/maps.py"
D = "eclip_core/departures.py"
FA = "eclip_core/metrics/faithfulness.py"
LO = "eclip_core/metrics/localisation.py"
ST = "eclip_core/stats.py"
SE = "eclip_core/paper/p2.py"
BA = "eclip_core/explainers/basis.py"
BT = "tests/test_basis.py"
CF = "eclip_core/paper/counterfactual.py"
STATS = "tests/test_stats.py"
P2T = "tests/test_p2.py"
CFT = "tests/test_counterfactual.py"
FMT = "tests/test_formats.py"
VD = "eclip_core/paper/verdicts.py"
VT = "tests/test_verdicts.py"
DO = "eclip_core/paper/dose.py"
DT = "tests/test_dose.py"

FAITHFUL = ref("test_image_eclip_faithful")
REFERENCE = ref("test_image_eclip_reference_mode")
TEXT = ref("test_text_branch")
KILLS = "tests/test_mutant_kills.py"
METRICS = "tests/test_metrics.py"


def metrics(*names: str) -> tuple[str, ...]:
    return tuple(f"{METRICS}::{n}" for n in names)


MUTANTS = [
    # ---------------------------------------------------------------- trace.py
    Mutant("split-heads-interleaved", TR,
           "return t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(1, 2)",
           "return t.unflatten(-1, (t.shape[-1] // heads, heads)).transpose(-1, -2).transpose(1, 2)",
           FAITHFUL),
    Mutant("qkv-without-ln_1", T, "z = block.ln_1(x)", "z = x", FAITHFUL),
    Mutant("scale-sqrt-D-instead-of-sqrt-d", TR,
           "logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])",
           "logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1] * q.shape[1])", FAITHFUL),
    Mutant("one-head-recompute-scale-sqrt-d", T,
           "attn = attention_probs(q, k, attn_mask)",
           "attn = attention_probs(q * math.sqrt(block.attn.num_heads / heads), k, attn_mask)",
           REFERENCE + TEXT),
    Mutant("one-head-recompute-dropped", T,
           "heads = heads or block.attn.num_heads", "heads = block.attn.num_heads",
           REFERENCE + TEXT),
    Mutant("pos-embedding-grid-transposed", T,
           "patch = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)",
           "patch = pos[1:].reshape(1, gw, gh, -1).permute(0, 3, 2, 1)", REFERENCE),
    Mutant("pos-embedding-align-corners", T,
           'mode="bicubic", align_corners=False)', 'mode="bicubic", align_corners=True)', REFERENCE),
    Mutant("pos-embedding-bilinear", T,
           'mode="bicubic", align_corners=False)', 'mode="bilinear", align_corners=False)', REFERENCE),
    Mutant("patch-tokens-transposed", T,
           "return x.flatten(2).transpose(1, 2), tuple(x.shape[-2:])",
           "return x.transpose(2, 3).flatten(2).transpose(1, 2), tuple(x.shape[-2:])",
           FAITHFUL),
    Mutant("vision-without-ln_pre", T,
           "    return visual.ln_pre(x)\n", "    return x\n", FAITHFUL),
    # the readout of every vision embedding (CLS path, Grad-CAM's, MaskCLIP's) in one place
    Mutant("vision-readout-without-ln_post", T, "y = visual.ln_post(y)", "y = y", FAITHFUL),
    Mutant("block-tail-without-ln_2", T,
           "return y + block.ls_2(block.mlp(block.ln_2(y)))", "return y + block.ls_2(block.mlp(y))",
           FAITHFUL),
    Mutant("text-without-ln_final", T,
           "pooled = tower.ln_final(blocks[-1].x_out)[torch.arange(len(tokens)), idx]",
           "pooled = blocks[-1].x_out[torch.arange(len(tokens)), idx]", TEXT),
    Mutant("text-without-projection", T,
           "pooled = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj",
           "pooled = pooled", TEXT),
    Mutant("text-without-causal-mask", T,
           "mask = tower.attn_mask[:n, :n].to(dtype) if tower.attn_mask is not None else None",
           "mask = None", TEXT),
    Mutant("text-pooled-at-SOT", T,
           'return tokens.argmax(dim=-1)\n    if pool == "eos"',
           'return torch.zeros(len(tokens), dtype=torch.long)\n    if pool == "eos"', TEXT),
    # the block's output projection, as the loosened term (and MaskCLIP) reach it
    Mutant("loosened-out_proj-without-bias", T,
           "return self._blocks(tower)[block].attn.out_proj(t)",
           "return t @ self._blocks(tower)[block].attn.out_proj.weight.T", FAITHFUL),
    Mutant("maskclip-without-ln_post", M,
           "dense = model.readout(model.attention_projection(merge_heads(tr.blocks[-1].v)[:, 1:]))",
           "dense = model.attention_projection(merge_heads(tr.blocks[-1].v)[:, 1:])[..., :model.embed_dim]",
           ref("test_maskclip")),
    Mutant("maskclip-without-out_proj", M,
           "dense = model.readout(model.attention_projection(merge_heads(tr.blocks[-1].v)[:, 1:]))",
           "dense = model.readout(merge_heads(tr.blocks[-1].v)[:, 1:])", ref("test_maskclip")),
    # new: the departed heads reach the last `departed` blocks (the last vision block)
    Mutant("run-blocks-departed-off-by-one", T,
           "heads if i >= n - departed else None", "heads if i > n - departed else None",
           ref("test_reference_mode_differs_from_faithful_where_it_should") + TEXT),
    # new: the text trace recomputes every explained block, not one fewer
    Mutant("trace-text-explained-off-by-one", T,
           "departed=explained, heads=heads)",
           "departed=explained - 1, heads=heads)", TEXT),
    # ---------------------------------------------------------------- base.py
    # dS/df = (t - S f_hat) / |f|: the sign, and the projection off the embedding's direction
    Mutant("cosine-cotangent-sign-flip", B,
           "f_hat[:, None]) / norm[..., None]  # (B, K, E)",
           "f_hat[:, None]) / -norm[..., None]  # (B, K, E)", FAITHFUL),
    Mutant("cosine-cotangent-without-projection", B,
           " - s[..., None] * f_hat[:, None]) / norm[..., None]", ") / norm[..., None]", FAITHFUL),
    # ---------------------------------------------------------------- eclip.py, image branch
    Mutant("loosened-keys-not-unit", E,
           "return (unit(q)[:, None] * unit(k)).sum(-1)", "return (unit(q)[:, None] * k).sum(-1)",
           FAITHFUL),
    Mutant("loosened-qk-option-ignored", E,
           'if qk == "out_proj":\n        q = model.attention_projection',
           'if qk in QK_CHOICES:\n        q = model.attention_projection', FAITHFUL),
    Mutant("eclip-without-relu", E,
           "return to_grid(c.clamp_min(0).transpose(0, 1), self.trace.grid)",
           "return to_grid(c.transpose(0, 1), self.trace.grid)", FAITHFUL),
    Mutant("eclip-sign-flip", E,
           "return to_grid(c.clamp_min(0).transpose(0, 1), self.trace.grid)",
           "return to_grid((-c).clamp_min(0).transpose(0, 1), self.trace.grid)", FAITHFUL),
    Mutant("eclip-grid-transposed", E,
           "return to_grid(c.clamp_min(0).transpose(0, 1), self.trace.grid)",
           "return to_grid(c.clamp_min(0).transpose(0, 1), self.trace.grid[::-1]).transpose(-1, -2)",
           FAITHFUL),
    Mutant("attention-route-patch-slice-shifted", E,
           "contrib = grad[..., 1:]", "contrib = grad[..., :-1]", FAITHFUL),
    Mutant("grad-route-patch-slice-2:", E,
           'contrib = torch.einsum("kbd,bnd->kbn", grad, merge_heads(last.v)[:, 1:])',
           'contrib = torch.einsum("kbd,bnd->kbn", grad, merge_heads(last.v)[:, 2:])', FAITHFUL),
    Mutant("loosened-keys-include-CLS", E,
           "merge_heads(last.k)[:, 1:], qk))", "merge_heads(last.k)[:, :-1], qk))", FAITHFUL),
    Mutant("loosened-not-min-max-normalised", E,
           "lam = minmax(loosened_attention(model, merge_heads(last.q)[:, 0],",
           "lam = (loosened_attention(model, merge_heads(last.q)[:, 0],", FAITHFUL),
    Mutant("attention-eclip-mean-over-heads", E,
           "return pullback(from_attn_row, row, cot, broadcasts=True).sum(2)",
           "return pullback(from_attn_row, row, cot, broadcasts=True).mean(2)", FAITHFUL),
    Mutant("attention-eclip-CLS-column", E,
           "row = last.attn[:, :, 0]", "row = last.attn[:, :, :, 0]", FAITHFUL),
    Mutant("forward-mode-tangents-mean-over-heads", E,
           "tangents = torch.eye(row.shape[-1], dtype=row.dtype, device=row.device)[:, None, None, :].expand(-1, *row.shape)",
           "tangents = torch.eye(row.shape[-1], dtype=row.dtype, device=row.device)[:, None, None, :].expand(-1, *row.shape)"
           " / row.shape[1]",
           ref("test_image_eclip_faithful[attention_eclip-attention-loosened-out_proj-K40-forward-mode-and-jacobian]")),
    # ---------------------------------------------------------------- eclip.py, text branch
    Mutant("text-n_blocks-ignored", E,
           "if n_blocks is None:", "if True:",
           TEXT),
    # the one-head recompute requested for the last block only, not for every explained block
    Mutant("text-reference-one-head-in-last-block-only", E,
           "tr = model.trace_text(tokens, heads=departures.heads, explained=n_blocks, differentiable=True)",
           "tr = model.trace_text(tokens, heads=departures.heads, explained=1, differentiable=True)", TEXT),
    Mutant("text-attention-query-at-SOT", E,
           "contrib = grad.transpose(0, 1)[batch, :, :, eot].sum(2).transpose(0, 1)",
           "contrib = grad.transpose(0, 1)[batch, :, :, 0].sum(2).transpose(0, 1)", TEXT),
    Mutant("text-grad-query-at-SOT", E,
           "w = grad[:, batch, eot]  # (K, B, D)", "w = grad[:, batch, 0]  # (K, B, D)", TEXT),
    Mutant("text-loosened-query-at-SOT", E,
           "cos = loosened_attention(model, merge_heads(rec.q)[batch, eot], merge_heads(rec.k), qk,",
           "cos = loosened_attention(model, merge_heads(rec.q)[batch, 0], merge_heads(rec.k), qk,", TEXT),
    Mutant("text-faithful-min-max-over-all-positions", E,
           "lam = minmax(cos) if departures.minmax_all_tokens else masked_minmax(cos, token_mask)",
           "lam = minmax(cos)", TEXT),
    Mutant("text-reference-min-max-over-explained-tokens", E,
           "lam = minmax(cos) if departures.minmax_all_tokens else masked_minmax(cos, token_mask)",
           "lam = masked_minmax(cos, token_mask)", TEXT),
    Mutant("text-mask-includes-SOT", E,
           "token_mask = (positions[None] > 0) & (positions[None] < eot[:, None])",
           "token_mask = (positions[None] >= 0) & (positions[None] < eot[:, None])", TEXT),
    Mutant("text-mask-includes-EOT", E,
           "token_mask = (positions[None] > 0) & (positions[None] < eot[:, None])",
           "token_mask = (positions[None] > 0) & (positions[None] <= eot[:, None])", TEXT),
    Mutant("text-without-relu", E,
           "maps = total.clamp_min(0).transpose(0, 1) * token_mask[:, None]",
           "maps = total.transpose(0, 1) * token_mask[:, None]", TEXT),
    Mutant("text-normalised-by-max", E,
           "norm = maps.sum(-1, keepdim=True)", "norm = maps.amax(-1, keepdim=True)", TEXT),
    # ---------------------------------------------------------------- maps.py
    # the text branch's masked min-max (explained tokens only)
    Mutant("text-masked-max-over-all-positions", MP,
           "hi = torch.where(mask, x, -big).amax(-1, keepdim=True)", "hi = x.amax(-1, keepdim=True)",
           TEXT),
    Mutant("masked-min-over-all-positions", MP,
           "lo = torch.where(mask, x, big).amin(-1, keepdim=True)", "lo = x.amin(-1, keepdim=True)",
           TEXT),
    Mutant("to-grid-column-major", MP,
           "return values.reshape(*values.shape[:-1], int(grid[0]), int(grid[1]))",
           "return values.reshape(*values.shape[:-1], int(grid[1]), int(grid[0])).transpose(-1, -2)",
           ref("test_raw_attention", "test_maskclip")),
    Mutant("upsample-align-corners", MP,
           'mode="bilinear", align_corners=False)', 'mode="bilinear", align_corners=True)',
           (f"{KILLS}::test_upsample_is_bilinear_with_half_pixel_centres",)),
    Mutant("upsample-bicubic", MP,
           'mode="bilinear", align_corners=False)', 'mode="bicubic", align_corners=False)',
           (f"{KILLS}::test_upsample_is_bilinear_with_half_pixel_centres",)),
    # ---------------------------------------------------------------- attention.py
    Mutant("raw-attention-CLS-column", A,
           "rows = tr.blocks[-1].attn[:, :, 0].mean(1)", "rows = tr.blocks[-1].attn[:, :, :, 0].mean(1)",
           ref("test_raw_attention")),
    Mutant("raw-attention-mean-over-queries", A,
           "rows = tr.blocks[-1].attn[:, :, 0].mean(1)", "rows = tr.blocks[-1].attn.mean(2)[:, 0]",
           ref("test_raw_attention")),
    Mutant("attention-maps-grid-transposed", A,
           "return to_grid(rows[:, 1:], tr.grid), tr.embedding",
           "return to_grid(rows[:, 1:], tr.grid[::-1]).transpose(-1, -2), tr.embedding",
           ref("test_raw_attention")),
    Mutant("rollout-maps-grid-transposed", A,
           "return to_grid(rows[:, None, 1:], grid).expand(-1, k, -1, -1).contiguous()",
           "return to_grid(rows[:, None, 1:], grid[::-1]).transpose(-1, -2).expand(-1, k, -1, -1).contiguous()",
           ref("test_rollout")),
    Mutant("rollout-without-identity", A, "a = rec.attn.mean(1) + eye", "a = rec.attn.mean(1)",
           ref("test_rollout")),
    Mutant("rollout-start-block-ignored", A,
           "for rec in tr.blocks[start_block:]:", "for rec in tr.blocks:", ref("test_rollout")),
    Mutant("rollout-wrong-order", A,
           "joint = (a / a.sum(-1, keepdim=True)) @ joint", "joint = joint @ (a / a.sum(-1, keepdim=True))",
           ref("test_rollout")),
    Mutant("rollout-normalised-over-columns", A,
           "joint = (a / a.sum(-1, keepdim=True)) @ joint", "joint = (a / a.sum(-2, keepdim=True)) @ joint",
           ref("test_rollout")),
    # ---------------------------------------------------------------- gae.py
    Mutant("gae-without-relu", G,
           "cam = (torch.cat(grad) * attn.detach()).clamp_min(0).mean(2)",
           "cam = (torch.cat(grad) * attn.detach()).mean(2)", ref("test_gae")),
    Mutant("gae-without-rollout", G,
           "relevance = relevance + cam @ relevance", "relevance = relevance + cam", ref("test_gae")),
    Mutant("gae-logit-scale-ignored", G,
           "cot = cosine_cotangents(tr.embedding, targets) * logit_scale",
           "cot = cosine_cotangents(tr.embedding, targets)", ref("test_gae")),
    Mutant("gae-last-block-only-ignored", G,
           "blocks = tr.blocks[-1:] if last_block_only else tr.blocks", "blocks = tr.blocks",
           ref("test_gae")),
    # ---------------------------------------------------------------- gradcam.py
    Mutant("gradcam-zeros", C,
           'maps = torch.einsum("kbd,btd->bkt", weights, x[:, 1:]).clamp_min(0)',
           'maps = torch.einsum("kbd,btd->bkt", weights, x[:, 1:]).clamp_min(0) * 0', ref("test_gradcam")),
    Mutant("gradcam-average-over-channels", C,
           'maps = torch.einsum("kbd,btd->bkt", weights, x[:, 1:]).clamp_min(0)',
           'maps = torch.einsum("kbt,btd->bkt", grad[:, :, 1:].mean(3), x[:, 1:]).clamp_min(0)',
           ref("test_gradcam")),
    Mutant("gradcam-dropped-drops-the-last-token", C,
           'weights = (grad if cls_token == "kept" else grad[:, :, 1:]).mean(2)',
           'weights = (grad if cls_token == "kept" else grad[:, :, :-1]).mean(2)',
           ref("test_gradcam")),
    Mutant("gradcam-on-block-output", C,
           "x = tr.blocks[-1].x_in", "x = tr.blocks[-1].x_out", ref("test_gradcam")),
    # ---------------------------------------------------------------- maskclip.py
    Mutant("maskclip-dot-not-cosine", M,
           "unit(dense) @ t", "dense @ t",
           ref("test_maskclip")),
    Mutant("maskclip-grid-transposed", M,
           "return to_grid(maps.transpose(1, 2), tr.grid), cosine_scores(tr.embedding, targets)",
           "return to_grid(maps.transpose(1, 2), tr.grid[::-1]).transpose(-1, -2), "
           "cosine_scores(tr.embedding, targets)",
           ref("test_maskclip")),
    # ---------------------------------------------------------------- rise.py
    Mutant("rise-saliency-transposed", R,
           'part = torch.einsum("nk,nhw->khw", score_fn(image[None] * m), m[:, 0])',
           'part = torch.einsum("nk,nhw->kwh", score_fn(image[None] * m), m[:, 0])',
           ref("test_rise")),
    Mutant("rise-dot-not-cosine", R,
           "return unit(embed(batch)) @ ", "return embed(batch) @ ", ref("test_rise")),
    Mutant("rise-not-divided-by-keep", R,
           "return total / (len(masks) * keep)", "return total / len(masks)", ref("test_rise")),
    # ---------------------------------------------------------------- inputs.py
    Mutant("keep-size-bankers-rounding", IN,
           "return (max(1, int(height / patch + 0.5)) * patch, max(1, int(width / patch + 0.5)) * patch)",
           "return (max(1, round(height / patch)) * patch, max(1, round(width / patch)) * patch)",
           ref("test_keep_size_tensor_rounds_each_side_to_the_nearest_patch_multiple")),
    Mutant("keep-size-shrinks-the-long-side", IN,
           "scale = min(width, height) / KEEP_SIZE_SHORT_SIDE", "scale = max(width, height) / KEEP_SIZE_SHORT_SIDE",
           ref("test_keep_size_tensor_rounds_each_side_to_the_nearest_patch_multiple")),
    # new: the keep-size pipeline only when the departures ask for it (branch swapped)
    Mutant("prepare-images-keep-size-branch-swapped", CM,
           "        if not keep_size:\n            return original, original",
           "        if keep_size:\n            return original, original",
           ref("test_reference_mode_on_a_pil_image_explains_the_keep_size_input")),
    Mutant("text-targets-not-unit", CM,
           "embeddings = F.normalize(self.encode_text(self.tokenize(texts)), dim=-1)",
           "embeddings = self.encode_text(self.tokenize(texts))",
           ref("test_faithful_scores_are_the_models_cosine")),
    # ---------------------------------------------------------------- entry.py, explain()
    # reference mode's departures not passed to the input preparation: the native input
    Mutant("reference-mode-on-the-native-input", N,
           "x, original = clip.prepare(images, keep_size=departures.keep_size)",
           "x, original = clip.prepare(images)",
           ref("test_reference_mode_on_a_pil_image_explains_the_keep_size_input")),
    # new: scores_original only where the explained forward pass departs
    Mutant("scores-original-when-faithful", N,
           "if departures.any and original is not None:", "if original is not None:",
           ref("test_image_eclip_faithful[grad_eclip-grad-loosened-out_proj-K3-reverse]")),
    # ---------------------------------------------------------------- departures.py
    Mutant("departures-reference-is-faithful", D,
           "        return PUBLISHED", "        return FAITHFUL",
           ref("test_reference_mode_differs_from_faithful_where_it_should")),
    Mutant("published-without-text-minmax", D,
           "PUBLISHED = Departures(heads=1, keep_size=True, minmax_all_tokens=True)",
           "PUBLISHED = Departures(heads=1, keep_size=True)", TEXT),
    # ---------------------------------------------------------------- metrics/faithfulness.py
    Mutant("deletion-least-salient-first", FA,
           "_, order = torch.sort(-saliency, dim=1, stable=True)",
           "_, order = torch.sort(saliency, dim=1, stable=True)",
           metrics("test_map_on_the_region_beats_its_inverse[black]")),
    Mutant("schedule-steps-off-by-one", FA,
           "return np.round(np.linspace(0, n_pixels, steps + 1)).astype(np.int64)",
           "return np.round(np.linspace(0, n_pixels, steps)).astype(np.int64)",
           metrics("test_map_on_the_region_beats_its_inverse[black]")),
    Mutant("published-schedule-stops-short", FA,
           "scored = np.arange(0, PUBLISHED_LAST_STEP + 1, PUBLISHED_SCORE_EVERY)",
           "scored = np.arange(0, PUBLISHED_LAST_STEP, PUBLISHED_SCORE_EVERY)",
           metrics("test_published_protocol_schedule")),
    Mutant("insertion-starts-from-the-image", FA,
           "x = torch.where(perturbed, images[ci], base[ci])",
           "x = torch.where(perturbed, base[ci], images[ci])",
           metrics("test_map_on_the_region_beats_its_inverse[black]")),
    # ---------------------------------------------------------------- metrics/localisation.py
    Mutant("pointing-game-last-maximum", LO,
           "flat = int(torch.argmax(s.flatten()))",
           "flat = int(s.numel() - 1 - torch.argmax(s.flatten().flip(0)))",
           metrics("test_pointing_game_on_hand_made_maps")),
    Mutant("pointing-game-mask-transposed", LO,
           "return bool(m[y, x])", "return bool(m[x, y])",
           metrics("test_pointing_game_on_hand_made_maps")),
    Mutant("energy-in-mask-without-relu", LO,
           "s = upsample(saliency, (m.shape[0], m.shape[1])).clamp_min(0)",
           "s = upsample(saliency, (m.shape[0], m.shape[1]))",
           metrics("test_energy_in_mask_on_hand_made_maps")),
    # ---------------------------------------------------------------- stats.py
    Mutant("spearman-ordinal-ranks-for-ties", ST,
           "group = new_group.long().cumsum(1) - 1", "group = torch.arange(n).expand(m, n)",
           metrics("test_spearman_hand_computed_with_ties")),
    Mutant("pearson-not-centred", ST,
           "a = a - a.mean(-1, keepdim=True)", "a = a",
           metrics("test_spearman_hand_computed_with_ties")),
    Mutant("road-zero-padding", FA,
           'padded = F.pad(x, (1, 1, 1, 1), mode="replicate")', 'padded = F.pad(x, (1, 1, 1, 1))',
           metrics("test_road_imputation_solves_the_neighbour_mean_system")),
    Mutant("road-corner-weights", FA,
           "[[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]]",
           "[[1 / 6, 1 / 12, 1 / 6], [1 / 12, 0.0, 1 / 12], [1 / 6, 1 / 12, 1 / 6]]",
           metrics("test_road_imputation_solves_the_neighbour_mean_system")),
    Mutant("road-noise-scale", FA,
           ".to(pixels.dtype) * noise", ".to(pixels.dtype) * noise * 2",
           metrics("test_road_keeps_kept_pixels_and_adds_the_stated_noise")),
    # ---------------------------------------------------------------- ground truth tables
    Mutant("ranks-direction", "eclip_core/paper/counterfactual.py",
           "ranks[name] = exact[column].rank(ascending=not higher_is_better(column))",
           "ranks[name] = exact[column].rank(ascending=higher_is_better(column))",
           ("tests/test_counterfactual.py::test_ranks_set_each_perturbation_metric_against_the_truth",)),
    # ---------------------------------------------------------------- styles (train.py, shapes.py)
    Mutant("styled-top1-first-style", "eclip_core/world/train.py",
           "styled = shapes.eval_set(n_styled, 1, seed=seed, size=size, style=style)",
           "styled = shapes.eval_set(n_styled, 1, seed=seed, size=size, style=names[0])",
           ("tests/test_train.py::test_styled_top1_is_the_zero_shot_top1_on_each_styles_own_scenes",)),
    Mutant("seen-style-wrong-fill", "eclip_core/world/shapes.py",
           '"stripes": Style(background="stripes"),',
           '"stripes": Style(background="stripes", fill="outline"),',
           ("tests/test_shapes.py::test_each_seen_style_is_a_held_out_style_without_its_held_out_part",)),
    Mutant("seen-styles-not-evaluated", "eclip_core/world/train.py",
           "return tuple(shapes.SEEN_STYLES) if config.style_fraction else ()",
           "return ()",
           ("tests/test_train.py::test_a_styled_run_is_evaluated_on_the_seen_styles_too",)),
    Mutant("gradcam-cls-token-convention-swapped", C,
           'grad if cls_token == "kept" else', 'grad if cls_token == "dropped" else',
           ref("test_gradcam")),
    Mutant("textspan-bias-not-split-over-heads", "eclip_core/explainers/direct.py",
           "terms = terms + (bias if scale is None else bias * scale) / (tokens * heads_per_block)",
           "terms = terms + (bias if scale is None else bias * scale) / tokens",
           ref("test_direct_contributions")),
    Mutant("textspan-share-without-the-mlps", "eclip_core/explainers/direct.py",
           "read = model.split_readout(x_cls, 1 / ((2 * depth + 1) * tokens * heads_per_block))",
           "read = model.split_readout(x_cls, 1 / (depth * tokens * heads_per_block))",
           ref("test_direct_contributions")),
    Mutant("split-readout-mean-not-shared", T,
           "post = weight * (term - share * mu.reshape(shape)) / sigma.reshape(shape) + share * beta",
           "post = weight * (term - mu.reshape(shape)) / sigma.reshape(shape) + share * beta",
           ref("test_direct_contributions")),
    # ---------------------------------------------------------------- the explanation basis
    Mutant("basis-projection-sign", BA,
           'rows = (jv - torch.einsum("bne,be->bn", jv, f)[..., None] * f[:, None])',
           'rows = (jv + torch.einsum("bne,be->bn", jv, f)[..., None] * f[:, None])',
           (f"{BT}::test_maps_from_the_basis_are_explains",)),
    Mutant("basis-without-the-norm", BA,
           'rows = (jv - torch.einsum("bne,be->bn", jv, f)[..., None] * f[:, None]) / e.norm(dim=-1)[:, None, None]',
           'rows = (jv - torch.einsum("bne,be->bn", jv, f)[..., None] * f[:, None])',
           (f"{BT}::test_maps_from_the_basis_are_explains",)),
    Mutant("basis-values-shifted", BA,
           "values = merge_heads(last.v)[:, 1:].detach()",
           "values = merge_heads(last.v)[:, :-1].detach()",
           (f"{BT}::test_maps_from_the_basis_are_explains",)),
    Mutant("basis-text-projection-sign", BA,
           'rows = (jv - torch.einsum("ble,be->bl", jv, f)[..., None] * f[:, None])',
           'rows = (jv + torch.einsum("ble,be->bl", jv, f)[..., None] * f[:, None])',
           (f"{BT}::test_text_maps_from_the_basis_are_explain_texts",)),
    Mutant("basis-text-without-the-mask", BA,
           "return Explanation(text_maps(maps.transpose(0, 1), self.token_mask), scores, self.request,",
           "return Explanation(text_maps(maps.transpose(0, 1), torch.ones_like(self.token_mask)), scores, "
           "self.request,",
           (f"{BT}::test_text_maps_from_the_basis_are_explain_texts",)),
    Mutant("basis-without-lambda", BA,
           "rows = rows * lam[..., None]", "rows = rows",
           (f"{BT}::test_maps_from_the_basis_are_explains",)),
    Mutant("basis-without-relu", BA,
           "block.clamp_(min=0)", "block.clamp_(min=-1e30)",
           (f"{BT}::test_maps_from_the_basis_are_explains", f"{BT}::test_the_basis_is_the_map_before_its_relu")),
    Mutant("basis-chunk-short", BA,
           "torch.matmul(part, transposed[image], out=block)",
           "torch.matmul(part.flip(0), transposed[image], out=block)",
           (f"{BT}::test_maps_from_the_basis_are_explains",)),
    Mutant("basis-targets-not-unit", BA,
           "block.mul_(inverse)  # unit targets: the norm divided out of the map, not the targets",
           "pass",
           (f"{BT}::test_maps_from_the_basis_are_explains",)),
    Mutant("basis-certificate-from-the-pass", BA,
           "cosine_scores(self.original, t.to(self.rows.dtype))",
           "cosine_scores(self.embeddings, t.to(self.rows.dtype))",
           (f"{BT}::test_texts_need_the_model_that_embeds_them_and_a_saved_basis_reads_back",)),
    Mutant("basis-grid-read-transposed", BA,
           'tuple(json.loads(meta["grid"])), tuple(json.loads(meta["input_size"]))',
           'tuple(json.loads(meta["grid"]))[::-1], tuple(json.loads(meta["input_size"]))',
           (f"{BT}::test_the_saved_metadata_is_what_made_the_basis",)),
    # ---------------------------------------------------------------- the evidence: statistics (stats.py)
    Mutant("interval-level-halved", ST,
           "alpha = (1 - level) / 2", "alpha = (1 - level)",
           (f"{STATS}::test_a_tiny_sample_gives_the_enumerated_interval",
            f"{STATS}::test_a_large_sample_meets_the_normal_approximation")),
    Mutant("bootstrap-parts-the-columns", ST,
           "replicates = np.array([statistic(data[i]) for i in index], dtype=np.float64)",
           "replicates = np.array([statistic(np.stack([data[i][:, 0], data[np.roll(i, 1)][:, 1]], 1) "
           "if data.ndim == 2 else data[i]) for i in index], dtype=np.float64)",
           (f"{STATS}::test_rows_are_resampled_together",)),
    Mutant("paired-difference-unpaired", ST,
           "return bootstrap(a - b, n_boot=n_boot, seed=seed, level=level)",
           "return bootstrap(a - np.random.default_rng(seed).permutation(b), n_boot=n_boot, seed=seed, level=level)",
           (f"{STATS}::test_the_paired_difference_resamples_pairs",)),
    Mutant("paired-difference-sign", ST,
           "return bootstrap(a - b, n_boot=n_boot, seed=seed, level=level)",
           "return bootstrap(b - a, n_boot=n_boot, seed=seed, level=level)",
           (f"{STATS}::test_the_sign_of_the_paired_difference_is_a_minus_b",)),
    Mutant("holm-is-bonferroni", ST,
           "np.maximum.accumulate((m - np.arange(m)) * p[order])", "np.maximum.accumulate(m * p[order])",
           (f"{STATS}::test_holm_by_hand",)),
    Mutant("holm-not-monotone", ST,
           "np.maximum.accumulate((m - np.arange(m)) * p[order])", "((m - np.arange(m)) * p[order])",
           (f"{STATS}::test_holm_by_hand",)),
    Mutant("p-above-without-plus-one", ST,
           "return float((1 + np.sum(replicates <= threshold)) / (1 + len(replicates)))",
           "return float(np.sum(replicates <= threshold) / len(replicates))",
           (f"{STATS}::test_one_sided_p_values_count_the_replicates_on_the_other_side",)),
    Mutant("p-below-wrong-side", ST,
           "return float((1 + np.sum(replicates >= threshold)) / (1 + len(replicates)))",
           "return float((1 + np.sum(replicates <= threshold)) / (1 + len(replicates)))",
           (f"{STATS}::test_one_sided_p_values_count_the_replicates_on_the_other_side",)),
    Mutant("equivalence-at-the-95-interval", ST,
           "level=1 - 2 * alpha)", "level=1 - alpha)",
           (f"{STATS}::test_equivalence_is_the_90_percent_interval_inside_the_margin",)),
    Mutant("trend-is-pearson", ST,
           "return float(spearman(torch.from_numpy(points), torch.from_numpy(rows.mean(axis=0))))",
           "return float(pearson(torch.from_numpy(points), torch.from_numpy(rows.mean(axis=0))))",
           (f"{STATS}::test_a_monotone_trend_is_a_rank_correlation_not_a_line",)),
    # ---------------------------------------------------------------- the evidence: P2's rules (paper/p2.py)
    Mutant("p2-no-holm", SE,
           "passing = holm([pass_p(replicates[m]) for m in methods])",
           "passing = [pass_p(replicates[m]) for m in methods]",
           (f"{P2T}::test_holm_can_leave_a_verdict_unshown_that_one_test_alone_would_give",)),
    Mutant("p2-thresholds-swapped", SE,
           "lambda r: p_above(r, AGREES), lambda r: p_below(r, NEGLIGIBLE)",
           "lambda r: p_above(r, NEGLIGIBLE), lambda r: p_below(r, AGREES)",
           (f"{P2T}::test_agreement_is_the_least_over_the_models_with_verdicts_at_the_thresholds",)),
    Mutant("p2-verdict-on-the-estimate", SE,
           "fails = pf < ALPHA or (extra_fail or {}).get(m, False)",
           "fails = estimates[m] < NEGLIGIBLE or (extra_fail or {}).get(m, False)",
           (f"{P2T}::test_agreement_is_the_least_over_the_models_with_verdicts_at_the_thresholds",
            f"{P2T}::test_the_shuffled_test_reads_contrast_left_and_needs_the_trained_test")),
    Mutant("p2-agreement-mean-over-models", SE,
           "lambda rows: float(rows.mean(axis=0).min())", "lambda rows: float(rows.mean(axis=0).mean())",
           (f"{P2T}::test_agreement_is_the_least_over_the_models_with_verdicts_at_the_thresholds",)),
    Mutant("p2-errors-right-minus-wrong", SE,
           'shares = np.subtract(wrong["shares"], right["shares"])',
           'shares = np.subtract(right["shares"], wrong["shares"])',
           (f"{P2T}::test_the_errors_test_reads_how_the_map_moves_between_the_two_answers",)),
    Mutant("p2-shuffled-share-inverted", SE,
           "return float(rows[:, 0].mean() / rows[:, 1].mean()) if rows[:, 1].mean() != 0 else float(\"inf\")",
           "return float(rows[:, 1].mean() / rows[:, 0].mean()) if rows[:, 0].mean() != 0 else float(\"inf\")",
           (f"{P2T}::test_the_shuffled_test_reads_contrast_left_and_needs_the_trained_test",)),
    Mutant("p2-shuffled-without-the-trained-test", SE,
           'extra_pass={m: baseline[m] == "passes" for m in methods})',
           "extra_pass=None)",
           (f"{P2T}::test_the_shuffled_test_reads_contrast_left_and_needs_the_trained_test",)),
    Mutant("p2-calibration-ignores-negative-controls", SE,
           'and all(v == "fails" for m, v in verdicts.items() if m in NEGATIVE_CONTROLS)',
           'and all(v != "passes" for m, v in verdicts.items() if m in NEGATIVE_CONTROLS)',
           (f"{P2T}::test_the_verdict_table_reads_only_calibrated_tests",)),
    Mutant("p2-holds-on-any-pass", SE,
           'return "holds" if verdicts and all(v == "passes" for v in verdicts) else "not shown"',
           'return "holds" if verdicts and any(v == "passes" for v in verdicts) else "not shown"',
           (f"{P2T}::test_the_verdict_table_reads_only_calibrated_tests",)),
    Mutant("p2-uncalibrated-tests-read", SE,
           "calibrated = [name for name, test in self.tests.items() if test.calibrated]",
           "calibrated = list(self.tests)",
           (f"{P2T}::test_the_verdict_table_reads_only_calibrated_tests",)),
    Mutant("p2-stated-read-on-uncalibrated", SE,
           'readable = test == "P2" or test in calibrated', "readable = True",
           (f"{P2T}::test_the_verdict_table_reads_only_calibrated_tests",)),
    Mutant("p2-equivalence-at-95", SE,
           "test.difference(published, faithful, 0.9)", "test.difference(published, faithful, 0.95)",
           (f"{P2T}::test_published_minus_faithful_is_equivalent_only_when_the_90_percent_interval_is_inside",)),
    Mutant("interval-columns-swapped", ST,
           'f"{name}_low": self.low', 'f"{name}_low": self.high',
           (f"{P2T}::test_published_minus_faithful_is_equivalent_only_when_the_90_percent_interval_is_inside",)),
    Mutant("p2-difference-unpaired", SE,
           "diff = self.replicates[a] - self.replicates[b]",
           "diff = self.replicates[a] - np.random.default_rng(1).permutation(self.replicates[b])",
           (f"{P2T}::test_the_paired_difference_uses_the_same_resamples",)),
    # ---------------------------------------------------------------- the evidence: counterfactual truth
    Mutant("shapley-uniform-weights", CF,
           "weight = math.factorial(size) * math.factorial(n_objects - size - 1) / math.factorial(n_objects)",
           "weight = 1 / (2 ** (n_objects - 1))",
           (f"{P2T}::test_shapley_values_by_hand", "tests/test_symbolic.py::test_shapley_values_symbolically_"
            "and_against_the_numeric_ones")),
    Mutant("shapley-marginal-sign", CF,
           "phi[o] += weight * (value(present | {o}) - value(present))",
           "phi[o] += weight * (value(present) - value(present | {o}))",
           (f"{P2T}::test_shapley_values_by_hand",)),
    Mutant("contrast-sign", CF,
           "return float(values[named].mean() - values[background].mean())",
           "return float(values[background].mean() - values[named].mean())",
           (f"{P2T}::test_contrast_is_the_named_mean_minus_the_background_mean",)),
    Mutant("contrast-over-all-pixels", CF,
           "background = ~objects", "background = np.ones_like(objects)",
           (f"{P2T}::test_contrast_is_the_named_mean_minus_the_background_mean",)),
    Mutant("described-colour-only", CF,
           "if o.colour in words or o.shape in words)", "if o.colour in words)",
           (f"{P2T}::test_the_objects_a_wrong_answer_describes",)),
    Mutant("redundancy-single-against-itself", CF,
           "differs = [float(np.argmax(single) != np.argmax(phi))",
           "differs = [float(np.argmax(single) != np.argmax(single))",
           (f"{CFT}::test_evidence_on_named_counts_by_prompt_size_and_redundancy_compares_the_argmaxes",)),
    Mutant("evidence-on-named-any-size", CF,
           'rows = rows[rows["named"].str.count(r"\\+") + 1 == objects]',
           'rows = rows[rows["named"].str.count(r"\\+") + 1 >= objects]',
           (f"{CFT}::test_evidence_on_named_counts_by_prompt_size_and_redundancy_compares_the_argmaxes",)),
    Mutant("cf-paired-sign", CF,
           "diff = (rows.loc[a] - rows.loc[b])", "diff = (rows.loc[b] - rows.loc[a])",
           (f"{CFT}::test_paired_difference_between_two_explainers_is_per_item_and_resamples_scenes",)),
    Mutant("cf-paired-resamples-items", CF,
           'by_scene = diff.groupby("scene")["d"].agg(["sum", "count"]).to_numpy()',
           'by_scene = diff.groupby(diff.index)["d"].agg(["sum", "count"]).to_numpy()',
           (f"{CFT}::test_paired_difference_between_two_explainers_is_per_item_and_resamples_scenes",)),
    Mutant("cf-paired-equivalence-at-95", CF,
           "low, high = percentile_interval(replicates, 0.90)", "low, high = percentile_interval(replicates, 0.95)",
           (f"{CFT}::test_paired_equivalence_reads_the_90_percent_interval",)),
    # ---------------------------------------------------------------- the evidence: the formats users write
    Mutant("prompts-separator-comma", "eclip_core/paper/photos.py",
           'prompts = tuple(p.strip() for p in rest.split("|"))',
           'prompts = tuple(p.strip() for p in rest.split(","))',
           (f"{FMT}::test_the_prompts_file_reads_back_exactly", f"{FMT}::test_the_prompts_file_separates_"
            "prompts_by_a_bar_only")),
    Mutant("prompts-name-at-the-last-colon", "eclip_core/paper/photos.py",
           'name, colon, rest = line.partition(":")', 'name, colon, rest = line.rpartition(":")',
           (f"{FMT}::test_the_prompts_file_reads_back_exactly",)),
    Mutant("prompts-file-byte-order-mark-kept", "eclip_core/paper/photos.py",
           'listing.read_text(encoding="utf-8-sig")', 'listing.read_text(encoding="utf-8")',
           (f"{FMT}::test_the_prompts_file_reads_back_exactly",)),
    Mutant("labels-first-field-only", "eclip_core/evaluation.py",
           'name, text = row[0].strip(), ",".join(row[1:]).strip()', "name, text = row[0].strip(), row[1].strip()",
           (f"{FMT}::test_the_labels_csv_reads_back_exactly", f"{FMT}::test_an_unquoted_label_keeps_its_commas")),
    Mutant("labels-byte-order-mark-kept", "eclip_core/evaluation.py",
           'lines = labels.read_text(encoding="utf-8-sig").splitlines()',
           'lines = labels.read_text(encoding="utf-8").splitlines()',
           (f"{FMT}::test_the_labels_csv_reads_back_exactly",)),
    Mutant("checksum-binary-mode-unread", "eclip_core/world/embedded.py",
           'if len(parts) == 2 and parts[1].lstrip("*") == WEIGHTS_FILE:',
           'if len(parts) == 2 and parts[1] == WEIGHTS_FILE:',
           (f"{FMT}::test_a_checkpoint_folder_reads_back_exactly",)),
    Mutant("checkpoint-preprocess-config-dropped", "eclip_core/world/embedded.py",
           'config = {"model_cfg": _copy(model_cfg), "preprocess_cfg": _copy(preprocess_cfg)}',
           'config = {"model_cfg": _copy(model_cfg), "preprocess_cfg": {}}',
           (f"{FMT}::test_a_checkpoint_folder_reads_back_exactly",)),
    # ---------------------------------------------------------------- the verdict table (paper/verdicts.py)
    Mutant("verdict-above-reads-the-estimate", VD,
           'return "holds on this model" if low > self.bound else "contradicted" if high < self.bound else',
           'return "holds on this model" if interval.estimate > self.bound else "contradicted" if high < self.bound else',
           (f"{VT}::test_above_reads_the_whole_interval_against_its_bound",)),
    Mutant("verdict-below-bound-ignored", VD,
           'return "holds on this model" if high < self.bound else "contradicted" if low > self.bound else',
           'return "holds on this model" if high < 0 else "contradicted" if low > 0 else',
           (f"{VT}::test_above_and_below_use_their_bound_not_zero",)),
    Mutant("verdict-proof-without-its-measurement", VD,
           'return "holds" if proof and high <= self.bound else "not shown"',
           'return "holds" if proof else "not shown"',
           (f"{VT}::test_a_proof_whose_interval_straddles_the_bound_is_not_shown",)),
    Mutant("verdict-worse-not-oriented", VD,
           "better_low, better_high = (-high, -low) if self.lower_is_better else (low, high)",
           "better_low, better_high = (low, high)",
           (f"{VT}::test_worse_orients_the_difference_by_the_metric",)),
    Mutant("verdict-worse-margin-ignored", VD,
           'return "contradicted" if better_low > -self.bound else "not shown"',
           'return "contradicted" if better_low > 0 else "not shown"',
           (f"{VT}::test_worse_reads_its_margin", f"{VT}::test_worse_orients_the_difference_by_the_metric")),
    Mutant("verdict-stored-elsewhere", VD,
           'data = output.get("metadata", {}).get(KEY)', 'data = output.get("data", {}).get(KEY)',
           (f"{VT}::test_findings_shown_in_a_notebook_are_read_back_exactly",)),
    Mutant("verdict-p2-paired-at-95", VD,
           'narrow = test.difference("grad_eclip:reference", "grad_eclip", 0.9)',
           'narrow = test.difference("grad_eclip:reference", "grad_eclip")',
           (f"{VT}::test_principle_findings_read_certificates_calibration_p2_and_the_paired_tests",)),
    Mutant("verdict-p2-faithful-minus-published", VD,
           'narrow = test.difference("grad_eclip:reference", "grad_eclip", 0.9)',
           'narrow = test.difference("grad_eclip", "grad_eclip:reference", 0.9)',
           (f"{VT}::test_principle_findings_read_certificates_calibration_p2_and_the_paired_tests",)),
    Mutant("verdict-deletion-higher-is-better", VD,
           "Rule(\"worse\", MARGIN, lower_is_better=metric == \"deletion_auc\")",
           "Rule(\"worse\", MARGIN, lower_is_better=False)",
           (f"{VT}::test_misalignment_findings_orient_deletion_and_the_others",)),
    Mutant("verdict-p1-wrong-variant", VD,
           'row(size, "reference", "accuracy_change")', 'row(size, "one_head", "accuracy_change")',
           (f"{VT}::test_p1_findings_read_the_right_rows_and_columns",)),
    Mutant("evaluation-intervals-nan-as-zero", "eclip_core/evaluation.py",
           "interval = bootstrap(values.dropna().to_numpy(dtype=np.float64), seed=seed, level=level)",
           "interval = bootstrap(values.fillna(0).to_numpy(dtype=np.float64), seed=seed, level=level)",
           ("tests/test_metrics.py::test_evaluation_intervals_are_each_methods_bootstrap_over_its_items",)),
    Mutant("evaluation-intervals-level-ignored", "eclip_core/evaluation.py",
           "interval = bootstrap(values.dropna().to_numpy(dtype=np.float64), seed=seed, level=level)",
           "interval = bootstrap(values.dropna().to_numpy(dtype=np.float64), seed=seed)",
           ("tests/test_metrics.py::test_evaluation_intervals_are_each_methods_bootstrap_over_its_items",)),
    # ---------------------------------------------------------------- what each departure costs (paper/dose.py)
    Mutant("dose-reference-of-dose-one", DO,
           'reference = rows[(rows["arm"] == "reference") & (rows["dose"] == arm.dose)].set_index("item")\n',
           'reference = rows[(rows["arm"] == "reference") & (rows["dose"] == 1)].set_index("item")\n',
           (f"{DT}::test_differences_are_signed_so_that_positive_is_better",)),
    Mutant("dose-sign-not-oriented", DO,
           "            sign = 1.0 if higher_is_better(column) else -1.0\n",
           "            sign = 1.0\n",
           (f"{DT}::test_differences_are_signed_so_that_positive_is_better",)),
    Mutant("dose-tost-at-95", DO,
           "low, high = percentile_interval(replicates, 0.90)", "low, high = percentile_interval(replicates, 0.95)",
           (f"{DT}::test_verdict_words_at_the_margin",)),
    Mutant("dose-margin-of-the-truth-for-all", DO,
           "    margin = MARGINS[column]", "    margin = 0.1",
           (f"{DT}::test_the_margins_are_the_books_fixed_ones",)),
    Mutant("dose-lambda-dropped", DO,
           "maps, _ = grad_eclip(clip, x, targets, departures=departures, loosened=arm.loosened)",
           "maps, _ = grad_eclip(clip, x, targets, departures=departures, loosened=False)",
           (f"{DT}::test_reference_and_lambda_maps_are_grad_eclip_on_the_deployed_pass",)),
    Mutant("dose-keep-size-map-not-placed", DO,
           "    if departures.keep_size:  # each value to the pixel",
           "    if False:  # each value to the pixel",
           (f"{DT}::test_keep_size_maps_are_the_enlarged_scene_explained_at_its_own_grid",
            f"{DT}::test_keep_size_maps_of_an_oblong_image_land_on_the_pixels_the_model_sees")),
    Mutant("dose-trend-over-items", DO,
           'columns = [study.signed(arm, column).groupby("scene")["value"].mean().sort_index().to_numpy() for arm',
           'columns = [study.signed(arm, column)["value"].to_numpy() for arm',
           (f"{DT}::test_trend_reads_a_cost_growing_with_the_dose",)),
    Mutant("rescaled-keys-multiplied", "eclip_core/trace/open_clip.py",
           "attn.in_proj_weight[width:2 * width] /= s[:, None]", "attn.in_proj_weight[width:2 * width] *= s[:, None]",
           ("tests/test_rescaled.py::test_the_rescaled_model_is_the_same_function",)),
    Mutant("rescaled-bias-left", "eclip_core/trace/open_clip.py",
           "                attn.in_proj_bias[:width] *= s\n", "                pass\n",
           ("tests/test_rescaled.py::test_the_rescaled_model_is_the_same_function",)),
    Mutant("rescaled-loosened-keys-not-divided", "eclip_core/paper/rescaled.py",
           "return minmax(loosened_attention(model, q * s, k / s, qk))",
           "return minmax(loosened_attention(model, q * s, k * s, qk))",
           ("tests/test_rescaled.py::test_loosened_under_is_the_rescaled_models_own_term",)),
    Mutant("rescaled-top-is-least", "eclip_core/paper/rescaled.py",
           "top.append(_patch_share(objects[int(np.argmax(phi))].mask, grid))",
           "top.append(_patch_share(objects[int(np.argmin(phi))].mask, grid))",
           ("tests/test_rescaled.py::test_pieces_name_the_objects_worth_most_and_least",)),
    Mutant("text-effect-sign", "eclip_core/paper/text_truth.py",
           "float(scores[0] - scores[1:][owners_arr == index].mean())",
           "float(scores[1:][owners_arr == index].mean() - scores[0])",
           ("tests/test_text_truth.py::test_effects_are_the_score_minus_the_mean_over_substitutions",)),
    Mutant("text-effect-every-substitution", "eclip_core/paper/text_truth.py",
           "float(scores[0] - scores[1:][owners_arr == index].mean())", "float(scores[0] - scores[1:].mean())",
           ("tests/test_text_truth.py::test_effects_are_the_score_minus_the_mean_over_substitutions",)),
    Mutant("verdict-dose-smallest-dose", VD, "    dose = max(doses)\n", "    dose = min(doses)\n",
           (f"{VT}::test_dose_findings_read_the_largest_dose_and_the_right_measures",)),
    Mutant("verdict-prose-any-word", VD,
           'words = "|".join(re.escape(v) for v in VERDICTS)', 'words = r"[^*]+"',
           (f"{VT}::test_prose_statements_are_read_with_their_words",)),
]


# ----------------------------------------------------------------------------- running


def check_list(mutants) -> list[str]:
    """Problems with the list: text not found exactly once, no-op mutants, duplicate names."""
    problems, names = [], set()
    for m in mutants:
        if m.name in names:
            problems.append(f"{m.name}: duplicate name")
        names.add(m.name)
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"{m.name}: no file {m.file}")
            continue
        count = path.read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.name}: the original text occurs {count} times in {m.file} (expected 1)")
        if m.original == m.replacement:
            problems.append(f"{m.name}: the replacement equals the original")
        if not m.tests:
            problems.append(f"{m.name}: names no tests")
    return problems


def copy_repository(dest: Path) -> Path:
    repo = dest / "repo"
    shutil.copytree(ROOT, repo, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "_build", "__pycache__", "*.pyc", "*.egg-info", ".pytest_cache",
        ".ipynb_checkpoints", "out"))
    return repo


def warm_imports(repo: Path) -> None:
    """Import the heavy third-party modules (and pytest's plugins) once, in this process;
    then forget every eclip_core module so that each child imports the mutated one."""
    from importlib.metadata import entry_points

    import pytest  # noqa: F401

    for ep in entry_points(group="pytest11"):
        try:
            ep.load()
        except Exception:
            pass
    sys.path.insert(0, str(repo))
    try:
        import open_clip  # noqa: F401

        import eclip_core  # noqa: F401
        import eclip_core.explainers  # noqa: F401
    finally:
        sys.path.remove(str(repo))
        for name in [n for n in sys.modules if n == "eclip_core" or n.startswith("eclip_core.")]:
            del sys.modules[name]


def run_tests(repo: Path, tests, log: Path, timeout: int) -> tuple[str, float]:
    """Run pytest on ``tests`` in a forked child (cwd = repo). Returns (outcome, seconds):
    "passed", "failed (exit N)" or "timeout"."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            signal.alarm(timeout)
            os.chdir(repo)
            sys.path.insert(0, str(repo))
            import eclip_core

            where = Path(eclip_core.__file__).resolve()
            if not where.is_relative_to(repo.resolve()):
                print(f"eclip_core imported from {where}, not from the copy {repo}", flush=True)
                os._exit(98)
            import pytest

            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider",
                                     "-W", "ignore::pytest.PytestAssertRewriteWarning", *tests]))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    if os.WIFSIGNALED(status):
        return ("timeout" if os.WTERMSIG(status) == signal.SIGALRM else
                f"signal {os.WTERMSIG(status)}"), seconds
    code = os.WEXITSTATUS(status)
    if code == 98:
        raise SystemExit(f"the child imported eclip_core from outside the copy; see {log}")
    return ("passed" if code == 0 else f"failed (exit {code})"), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and logs")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True

    problems = check_list(MUTANTS)
    if problems:
        print("the mutant list is stale:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            print(f"unknown mutants: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        mutants = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:48s} {m.file}")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="eclip-mutants-"))
    total_start = time.monotonic()
    try:
        repo = copy_repository(tmp)
        warm_imports(repo)
        tests = sorted({t for m in mutants for t in m.tests})
        outcome, seconds = run_tests(repo, tests, tmp / "baseline.log", args.timeout * 4)
        print(f"baseline (unmutated, {len(tests)} test ids): {outcome} in {seconds:.0f} s", flush=True)
        if outcome != "passed":
            print((tmp / "baseline.log").read_text()[-4000:], file=sys.stderr)
            print("the named tests must pass on the unmutated code", file=sys.stderr)
            return 2
        rows = []
        width = max(len(m.name) for m in mutants)
        print(f"{'mutant':{width}s}  {'file':34s}  killed  seconds", flush=True)
        for m in mutants:
            path = repo / m.file
            original = path.read_text()
            log = tmp / f"{m.name}.log"
            try:
                path.write_text(original.replace(m.original, m.replacement, 1))
                outcome, seconds = run_tests(repo, m.tests, log, args.timeout)
            finally:
                path.write_text(original)
            killed = outcome != "passed"
            rows.append((m, killed, outcome, seconds))
            note = "" if not killed or outcome.startswith("failed (exit 1)") else f"  ({outcome})"
            print(f"{m.name:{width}s}  {m.file:34s}  {'yes' if killed else 'NO ':3s}  "
                  f"{seconds:7.1f}{note}", flush=True)
        survivors = [m for m, killed, _, _ in rows if not killed]
        n = len(rows)
        print(f"\nkill rate: {n - len(survivors)}/{n} = {100 * (n - len(survivors)) / n:.0f}%; "
              f"total {time.monotonic() - total_start:.0f} s")
        if survivors:
            print("survived: " + ", ".join(m.name for m in survivors), file=sys.stderr)
            args.keep = True
            return 1
        return 0
    finally:
        if args.keep:
            print(f"copy and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
