"""Metrics on constructed cases where the right answer is known, and evaluate() end to end."""

import copy
import json
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import Compose, Normalize

import eclip_core as ec
from eclip_core import metrics as M
from eclip_core.world import shapes
from eclip_core.evaluation import evaluate
from eclip_core.explainers import unregister
from eclip_core.randomisation import randomisation_cascade
from eclip_core.inputs import to_model_input
from eclip_core.metrics.faithfulness import road_impute

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
PREPROCESS = Compose([Normalize(MEAN, STD)])  # only its Normalize step is read
SIZE = 16


pytestmark = pytest.mark.usefixtures("one_thread")


class RegionModel(nn.Module):
    """A model whose image embedding depends only on the pixels of one region.

    ``encode_image``: the mean (normalised) colour of rows r0:r1, cols c0:c1, plus a
    constant 1, so deleting pixels outside the region changes nothing.
    """

    def __init__(self, region):
        super().__init__()
        self.region = region
        self.scale = nn.Parameter(torch.ones(()))

    def encode_image(self, x):
        r0, r1, c0, c1 = self.region
        colour = x[:, :, r0:r1, c0:c1].mean((2, 3))
        return torch.cat([colour, torch.ones(len(x), 1, dtype=x.dtype)], 1) * self.scale


def normalise(pixels):
    return (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def scene(region=(4, 8, 4, 8)):
    """A grey image with a saturated red square on ``region``; (image, model, targets)."""
    pixels = torch.full((3, SIZE, SIZE), 0.5)
    r0, r1, c0, c1 = region
    pixels[:, r0:r1, c0:c1] = torch.tensor([0.95, 0.05, 0.1]).view(3, 1, 1)
    image = normalise(pixels)
    model = RegionModel(region)
    with torch.no_grad():
        own = model.encode_image(image[None])[0]
        black = model.encode_image(normalise(torch.zeros(3, SIZE, SIZE))[None])[0]
    return image, model, F.normalize(torch.stack([own, black]), dim=-1)


def cosine(model, x, target):
    with torch.no_grad():
        return float(F.normalize(model.encode_image(x[None]), dim=-1)[0] @ target)


def region_map(region, grid=4):
    """Patch-grid map (grid x grid) that is 1 on the patches covering ``region``."""
    r0, r1, c0, c1 = region
    p = SIZE // grid
    m = torch.zeros(grid, grid)
    m[r0 // p:(r1 - 1) // p + 1, c0 // p:(c1 - 1) // p + 1] = 1
    return m


# ----------------------------------------------------------------------------- deletion / insertion


@pytest.mark.parametrize("baseline", ["uniform", "blur", "mean", "black"])
def test_map_on_the_region_beats_its_inverse(baseline):
    image, model, targets = scene()
    good = region_map((4, 8, 4, 8))
    kw = dict(preprocess=PREPROCESS, steps=16, baseline=baseline)
    if baseline == "blur":  # the region model reads a mean colour, which a light blur keeps
        kw["blur_sigma"] = 3.0
    d_good = M.deletion_curve(model, image, good, targets, 0, **kw)
    d_bad = M.deletion_curve(model, image, 1 - good, targets, 0, **kw)
    i_good = M.insertion_curve(model, image, good, targets, 0, **kw)
    i_bad = M.insertion_curve(model, image, 1 - good, targets, 0, **kw)
    assert d_good.auc_score < d_bad.auc_score - 0.05, (d_good.auc_score, d_bad.auc_score)
    assert i_good.auc_score > i_bad.auc_score + 0.05, (i_good.auc_score, i_bad.auc_score)
    # measured with the model on its own input: the unperturbed point is the model's score
    assert d_good.scores[0] == pytest.approx(cosine(model, image, targets[0]), abs=1e-6)
    assert i_good.scores[-1] == pytest.approx(cosine(model, image, targets[0]), abs=1e-6)
    assert d_good.fractions[0] == 0 and d_good.fractions[-1] == 1 and len(d_good.fractions) == 17
    assert d_good.direction.startswith("deletion: lower") and i_good.direction.startswith("insertion: higher")


def test_perturbation_happens_in_pixel_space():
    """Fully deleted with the mean / black baseline = the mean colour / black image, re-normalised."""
    image, model, targets = scene()
    sal = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    mean_end = M.deletion_curve(model, image, sal, targets, 0, preprocess=PREPROCESS, steps=4,
                                baseline="mean").scores[-1]
    assert mean_end == pytest.approx(cosine(model, torch.zeros(3, SIZE, SIZE), targets[0]), abs=1e-6)
    black = M.deletion_curve(model, image, sal, targets, 0, preprocess=PREPROCESS, steps=4, baseline="black")
    black_image = normalise(torch.zeros(3, SIZE, SIZE))
    assert black.scores[-1] == pytest.approx(cosine(model, black_image, targets[0]), abs=1e-6)
    # zero-shot top-1 over the two targets: the own image, then the black one
    assert black.correct[0] and not black.correct[-1]
    assert black.auc_correct < 1.0


def test_ties_are_broken_in_raster_order():
    """A constant map deletes the top rows first: a top region dies at once, a bottom one last."""
    flat = torch.ones(4, 4)
    top_image, top_model, top_t = scene((0, 4, 6, 10))
    bottom_image, bottom_model, bottom_t = scene((12, 16, 6, 10))
    kw = dict(preprocess=PREPROCESS, steps=16, baseline="black")
    top = M.deletion_curve(top_model, top_image, flat, top_t, 0, **kw)
    bottom = M.deletion_curve(bottom_model, bottom_image, flat, bottom_t, 0, **kw)
    untouched = bottom.fractions <= 0.75
    assert np.allclose(bottom.scores[untouched], bottom.scores[0], atol=1e-6)
    assert top.scores[2] < top.scores[0] - 0.05
    assert top.auc_score < bottom.auc_score - 0.1
    again = M.deletion_curve(top_model, top_image, flat, top_t, 0, **kw)
    assert np.array_equal(again.scores, top.scores)


def test_published_protocol_schedule():
    image, model, targets = scene()
    sal = region_map((4, 8, 4, 8))
    d = M.deletion_curve(model, image, sal, targets, 0, preprocess=PREPROCESS, protocol="published")
    per_step = SIZE * SIZE // 200
    assert len(d.fractions) == 11 and d.baseline == "uniform"
    assert np.allclose(np.diff(d.fractions), 10 * per_step / SIZE ** 2)
    assert d.fractions[-1] <= 0.5
    i = M.insertion_curve(model, image, sal, targets, 0, preprocess=PREPROCESS, protocol="published")
    assert i.baseline == "black"
    black = normalise(torch.zeros(3, SIZE, SIZE))
    assert i.scores[0] == pytest.approx(cosine(model, black, targets[0]), abs=1e-6)


def _neighbour_mean_solution(pixels: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear system solved directly: each removed pixel equals the weighted mean of its
    8 neighbours (1/6 on the sides, 1/12 on the corners; outside the image, the edge pixel)."""
    c, h, w = pixels.shape
    index = -np.ones((h, w), dtype=int)
    where = np.argwhere(removed)
    index[removed] = np.arange(len(where))
    out = pixels.copy()
    for channel in range(c):
        a, b = np.eye(len(where)), np.zeros(len(where))
        for k, (y, x) in enumerate(where):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if dy == dx == 0:
                        continue
                    weight = 1 / 12 if dy and dx else 1 / 6
                    ny, nx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
                    if removed[ny, nx]:
                        a[k, index[ny, nx]] -= weight
                    else:
                        b[k] += weight * pixels[channel, ny, nx]
        out[channel][removed] = np.linalg.solve(a, b)
    return out


def test_road_imputation_solves_the_neighbour_mean_system():
    """Without noise, enough Jacobi sweeps reach the solution of ROAD's linear system, computed
    here by a direct solve (the border pixels included: the edge is replicated)."""
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    removed = torch.rand(2, 1, 9, 11, generator=g) < 0.4
    removed[0, 0, 0, :4] = True  # a run along the border
    imputed = road_impute(pixels, removed, iterations=600, noise=0.0)
    for i in range(2):
        expected = _neighbour_mean_solution(pixels[i].numpy(), removed[i, 0].numpy())
        np.testing.assert_allclose(imputed[i].numpy(), expected, atol=2e-5)


def test_road_keeps_kept_pixels_and_adds_the_stated_noise():
    g = torch.Generator().manual_seed(4)
    pixels = 0.4 + 0.2 * torch.rand(1, 3, 64, 64, generator=g, dtype=torch.float64)  # no clamping at 0 or 1
    removed = torch.rand(1, 1, 64, 64, generator=g) < 0.5
    noisy = road_impute(pixels, removed, seed=1)
    plain = road_impute(pixels, removed, seed=1, noise=0.0)
    kept = ~removed.expand_as(pixels)
    assert torch.equal(noisy[kept], pixels[kept]) and torch.equal(plain[kept], pixels[kept])
    jitter = (noisy - plain)[~kept]
    assert abs(float(jitter.mean())) < 1e-3 and 0.0093 < float(jitter.std()) < 0.0107  # ROAD_NOISE = 0.01
    assert not torch.equal(noisy, road_impute(pixels, removed, seed=2))  # the seed draws the noise


def test_batched_curves_equal_single_curves():
    image_a, model, targets = scene()
    image_b = normalise(torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)))
    maps = [region_map((4, 8, 4, 8)), torch.rand(4, 4, generator=torch.Generator().manual_seed(4))]
    batch = M.perturbation_curves(model, torch.stack([image_a, image_b]), maps, targets, [0, 1],
                                  kind="insertion", preprocess=PREPROCESS, steps=8, batch_size=5)
    for image, sal, index, curve in zip([image_a, image_b], maps, [0, 1], batch):
        single = M.insertion_curve(model, image, sal, targets, index, preprocess=PREPROCESS, steps=8)
        assert np.allclose(single.scores, curve.scores, atol=1e-6)
        assert np.array_equal(single.correct, curve.correct)


# ----------------------------------------------------------------------------- localisation


def test_pointing_game_on_hand_made_maps():
    mask = np.zeros((16, 16), bool)
    mask[8:12, 12:16] = True
    sal = torch.zeros(4, 4)
    sal[2, 3] = 1.0  # patch rows 8:12, cols 12:16 at 16 px
    assert M.pointing_game(sal, mask)
    sal2 = torch.zeros(4, 4)
    sal2[0, 0] = 1.0
    assert not M.pointing_game(sal2, mask)
    assert M.pointing_game(sal2, mask, tolerance=12) and not M.pointing_game(sal2, mask, tolerance=11)
    # ties: the first maximum in raster order points (a constant map points at the top-left)
    corner = np.zeros((16, 16), bool)
    corner[0, 0] = True
    assert M.pointing_game(torch.ones(4, 4), corner)
    assert not M.pointing_game(torch.ones(4, 4), mask)


def test_energy_in_mask_on_hand_made_maps():
    mask = np.zeros((16, 16), bool)
    mask[:8] = True  # top half
    sal = torch.ones(16, 16)
    sal[:8] = 3.0
    assert M.energy_in_mask(sal, mask) == pytest.approx(0.75)
    sal[8:12] = -5.0  # negative mass is ignored
    assert M.energy_in_mask(sal, mask) == pytest.approx(3 * 128 / (3 * 128 + 64))
    assert M.energy_in_mask(-torch.ones(4, 4), mask) == 0.0
    coarse = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # upsampled to the mask size first
    e = M.energy_in_mask(coarse, mask)
    assert 0.75 < e < 1.0


# ----------------------------------------------------------------------------- rank correlation


def test_spearman_hand_computed_with_ties():
    # ranks (average ties): a -> [1, 2.5, 2.5, 4], b -> [1, 3, 2, 4]; r = 4.5 / sqrt(4.5 * 5)
    assert M.spearman([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(math.sqrt(0.9))
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert M.spearman(x, x.exp()) == pytest.approx(1.0)
    assert M.spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert torch.equal(M.average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])),
                       torch.tensor([3.5, 1.0, 3.5, 2.0], dtype=torch.float64))
    batch = M.spearman(torch.stack([x, x]), torch.stack([x.exp(), -x]))
    assert batch.shape == (2,) and batch[0] == pytest.approx(1.0) and batch[1] == pytest.approx(-1.0)
    assert M.spearman(torch.zeros(5), torch.zeros(5)) == 1.0
    assert M.spearman(torch.zeros(5), x[:5]) == 0.0


# ----------------------------------------------------------------------------- randomisation


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16),
        text_cfg=dict(context_length=8, vocab_size=32, width=16, heads=2, layers=1),
    )
    return model.eval()


def test_randomisation_cascade(tiny_clip):
    before = copy.deepcopy(tiny_clip.state_dict())
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    texts = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    steps = randomisation_cascade(tiny_clip, "attention_eclip", images, texts, seed=0)
    assert [s.name for s in steps] == ["trained", "proj+ln_post", "block1", "block0", "embeddings"]
    assert steps[0].spearman == pytest.approx(1.0) and steps[0].agreement == 1.0
    assert steps[1].spearman < 0.9, [s.spearman for s in steps]
    assert max(s.spearman for s in steps[1:]) < 0.95
    randomised = {n for s in steps for n in s.parameters}
    assert randomised == {n for n, _ in tiny_clip.visual.named_parameters()}
    after = tiny_clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the user's model is untouched
    again = randomisation_cascade(tiny_clip, "attention_eclip", images, texts, seed=0)
    assert [s.spearman for s in again] == [s.spearman for s in steps]


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def embedded():
    try:
        return ec.load_model()
    except ec.ModelLoadError as err:
        pytest.skip(f"embedded model not available: {err}")


def test_evaluate_on_embedded_model(embedded, tmp_path):
    scenes = shapes.eval_set(4)
    methods = list(ec.METHODS) + ["grad_eclip:reference"]
    texts = shapes.prompts()[:10]  # holds the 4 scenes' prompts; fewer targets keep the test fast
    result = evaluate(embedded, scenes, methods, texts=texts, steps=8, rise_masks=40)
    table = result.table()
    assert list(table.index) == methods
    for _, row in table.iterrows():
        assert row["n"] == 4
        for key in ("deletion_auc", "insertion_auc", "deletion_acc_auc", "insertion_acc_auc",
                    "pointing_game", "energy_in_mask", "ms_per_image", "cost_ratio"):
            assert math.isfinite(row[key]), (row.name, key)
        assert 0 <= row["pointing_game"] <= 1 and 0 <= row["energy_in_mask"] <= 1
        assert -1 <= row["deletion_auc"] <= 1 and row["cost_ratio"] > 0
    assert any("lower is better" in note for note in result.notes)
    table.to_csv(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().count("\n") == len(methods) + 1
    table.reset_index().to_json(tmp_path / "t.json", orient="records")
    assert [r["method"] for r in json.loads((tmp_path / "t.json").read_text())] == methods
    assert len(result.per_image) == 4 * len(methods)

    # the table's numbers are the metric functions' numbers on the same maps
    model, preprocess, _ = embedded
    prompts = texts
    e = ec.explain(embedded, [s.image for s in scenes], prompts, method="attention_eclip")
    x = torch.stack([preprocess(s.image) for s in scenes])
    idx = [prompts.index(f"a {s.objects[0].phrase}") for s in scenes]
    aucs = [M.deletion_curve(embedded, x[i], e.maps[i, idx[i]], prompts, idx[i], steps=8).auc_score
            for i in range(4)]
    hits = [M.pointing_game(e.maps[i, idx[i]], scenes[i].objects[0].mask) for i in range(4)]
    row = table.loc["attention_eclip"]
    assert row["deletion_auc"] == pytest.approx(np.mean(aucs), abs=1e-6)
    assert row["pointing_game"] == pytest.approx(np.mean(hits))


def test_evaluate_published_protocol(embedded):
    scenes = shapes.eval_set(3)
    result = evaluate(embedded, scenes, ["attention", "gradcam"], texts=shapes.prompts()[:10],
                      protocol="published")
    assert any("protocol=published" in note for note in result.notes)
    for _, row in result.table().iterrows():
        assert math.isfinite(row["deletion_auc"]) and math.isfinite(row["insertion_auc"])
        assert abs(row["deletion_auc"]) <= 0.5 + 1e-9  # scored up to half of the image only


# ----------------------------------------------------------------------------- input geometry


def _smooth(width, height):
    """A smooth grey picture (PIL) and its values in [0, 1] (H, W), for geometry checks."""
    yy, xx = np.mgrid[0:height, 0:width]
    values = 0.5 + 0.2 * np.sin(xx * 2 * np.pi / 9) + 0.2 * np.sin(yy * 2 * np.pi / 11)
    return Image.fromarray((np.stack([values] * 3, -1) * 255).round().astype(np.uint8)), values


@pytest.mark.parametrize("size", [(192, 64), (64, 192), (101, 37), (37, 101), (67, 64), (64, 64), (150, 48)])
def test_to_model_input_reproduces_the_preprocess_geometry(embedded, size):
    """A map covering the whole image lands on the pixels the preprocess keeps: the picture
    itself, used as a map, matches the model's input (bilinear vs bicubic), and a crop one
    pixel off does not."""
    picture, values = _smooth(*size)
    seen = embedded.preprocess(picture)[0] * 0.26862954 + 0.48145466  # un-normalised red channel
    placed = to_model_input(torch.tensor(values), size, embedded.preprocess)
    assert placed.shape == seen.shape
    error = float((placed - seen)[2:-2, 2:-2].abs().max())
    assert error < 0.02, error
    wide = to_model_input(torch.tensor(values), size, Compose(embedded.preprocess.transforms[:1]))
    top, left = round((wide.shape[0] - 64) / 2), round((wide.shape[1] - 64) / 2)  # as CenterCrop
    for dy, dx in [(1, 0), (0, 1), (-1, 0), (0, -1)]:
        if 0 <= top + dy <= wide.shape[0] - 64 and 0 <= left + dx <= wide.shape[1] - 64:
            off = wide[top + dy:top + dy + 64, left + dx:left + dx + 64]
            assert float((off - seen)[2:-2, 2:-2].abs().max()) > 2 * error, (dy, dx)
    if max(size) >= 1.5 * min(size):  # stretching the whole picture over the input is far off
        stretched = torch.nn.functional.interpolate(torch.tensor(values)[None, None], size=(64, 64),
                                                    mode="bilinear", align_corners=False)[0, 0]
        assert float((stretched - seen).abs().max()) > 0.05


def test_metrics_refuse_a_map_of_another_shape(embedded):
    x = embedded.preprocess(_smooth(192, 64)[0])
    with pytest.raises(ec.InputError, match=r"a 8x24 map does not have the shape of the 64x64 input it is "
                                            r"scored on: stretching it would score it on other pixels"):
        M.deletion_curve(embedded, x, torch.ones(8, 24), ["a red circle"], 0)
    with pytest.raises(ec.InputError, match="to_model_input"):
        M.energy_in_mask(torch.ones(8, 24), np.ones((64, 64), bool))


def _left_third(model, images, targets, *, departures=ec.FAITHFUL):
    """Reference mode: a map that is 1 on the left 56 of 192 pixels (outside the model's centre
    crop, columns 64..127) and 0 elsewhere; faithful mode: 0."""
    gh, gw = images.shape[-2] // 8, images.shape[-1] // 8
    maps = torch.zeros(len(images), len(targets), gh, gw)
    if departures.keep_size:
        maps[..., :7] = 1.0
    return maps, torch.zeros(len(images), len(targets))


def _nothing(model, images, targets, *, departures=ec.FAITHFUL):
    gh, gw = images.shape[-2] // 8, images.shape[-1] // 8
    return torch.zeros(len(images), len(targets), gh, gw), torch.zeros(len(images), len(targets))


def test_evaluate_scores_keep_size_maps_on_the_pixels_they_explain(embedded):
    """A non-square photograph: a reference-mode map that is perfect only outside the crop
    is scored exactly like an all-zero map (the model never saw those pixels), not
    stretched over the crop."""
    from eclip_core.evaluation import Item

    picture = _smooth(192, 64)[0]
    mask = np.zeros((64, 64), bool)
    mask[:, :20] = True  # the left of what the model sees
    items = [Item(picture, "a red circle", mask=mask)]
    modes = ("faithful", "reference")
    ec.register(ec.Method("left_third", _left_third, "perfect outside the crop", modes))
    ec.register(ec.Method("nothing", _nothing, "all zeros", modes))
    try:
        result = evaluate(embedded, items, ["left_third:reference", "nothing:reference"],
                          texts=["a red circle", "a blue square"], steps=8, timing=False)
    finally:
        unregister("left_third")
        unregister("nothing")
    rows = result.per_image.set_index("method")
    for column in ("deletion_auc", "insertion_auc", "energy_in_mask"):
        assert rows.loc["left_third:reference", column] == rows.loc["nothing:reference", column], column
    assert rows.loc["left_third:reference", "energy_in_mask"] == 0.0
    inside = torch.zeros(8, 24)
    inside[:, 8:16] = 1.0  # the crop's columns on the keep-size grid
    placed = to_model_input(inside, (192, 64), embedded.preprocess)
    assert torch.equal(placed[:, 4:60], torch.ones(64, 56))


def test_zero_shot_scores_in_chunks_are_the_cosines_of_one_pass(embedded):
    """Chunking the images changes nothing: each score is the cosine of the image's own
    embedding with the text's, computed here directly in one pass."""
    from eclip_core.evaluation import zero_shot_scores

    model, preprocess, tokenizer = embedded
    scenes = shapes.eval_set(7, 1)
    texts = ["a red circle", "a blue square", "a green triangle"]
    x = torch.stack([preprocess(s.image) for s in scenes])
    with torch.no_grad():
        expected = F.normalize(model.encode_image(x), dim=-1) @ F.normalize(
            model.encode_text(tokenizer(texts)), dim=-1).T
    for batch_size in (1, 3, 256):
        got = zero_shot_scores(embedded, [s.image for s in scenes], texts, batch_size=batch_size)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(zero_shot_scores(embedded, x, texts, batch_size=batch_size), expected,
                                   rtol=0, atol=1e-6)
    with pytest.raises(ec.InputError, match="batch_size"):
        zero_shot_scores(embedded, x, texts, batch_size=0)
    with pytest.raises(ec.InputError, match="no images"):
        zero_shot_scores(embedded, [], texts)
    with pytest.raises(ec.InputError, match=r"\(N, 3, H, W\), got shape \(3, 64, 64\)"):
        zero_shot_scores(embedded, x[0], texts)


def test_evaluate_scores_given_maps_without_explaining_again(embedded):
    """Maps kept by one evaluation, scored under another protocol, give exactly what
    explaining again gives, and the explainer is not called; a wrong count is refused."""
    import pandas as pd

    from eclip_core.errors import InputError
    from eclip_core.explainers import Method, register

    scenes = shapes.eval_set(4, (2, 3), seed=shapes.EVAL_SEED + 5)
    first = evaluate(embedded, scenes, ["grad_eclip", "edges"], steps=4, timing=False, keep_maps=True)
    again = evaluate(embedded, scenes, ["grad_eclip", "edges"], steps=4, protocol="published", timing=False)
    reused = evaluate(embedded, scenes, ["grad_eclip", "edges"], steps=4, protocol="published", timing=False,
                      maps=first.maps)
    pd.testing.assert_frame_equal(reused.per_image, again.per_image)
    calls = []

    def counted(model, images, targets, *, departures=ec.FAITHFUL):
        calls.append(len(images))
        raise AssertionError("explained although its maps were given")

    register(Method("counted", counted, "fails if called"))
    try:
        given = {"counted": first.maps["edges"]}
        scored = evaluate(embedded, scenes, ["counted"], steps=4, timing=False, maps=given)
        assert not calls and len(scored.per_image) == len(first.maps["edges"])
        with pytest.raises(InputError, match="maps given"):
            evaluate(embedded, scenes, ["counted"], steps=4, timing=False, maps={"counted": given["counted"][:2]})
    finally:
        unregister("counted")


def test_evaluation_intervals_are_each_methods_bootstrap_over_its_items():
    import pandas as pd

    from eclip_core.errors import InputError
    from eclip_core.evaluation import Evaluation
    from eclip_core.stats import bootstrap

    a = [0.1, 0.4, 0.35, 0.8, 0.2, float("nan")]
    per_image = pd.DataFrame({"method": ["a"] * 6 + ["b"] * 4, "item": list(range(6)) + list(range(4)),
                              "deletion_auc": a + [0.5] * 4, "pointing_game": [1.0, 0.0] * 5})
    result = Evaluation(per_image, {}, {}, 1.0, [])
    got = result.intervals("deletion_auc", seed=3)
    assert list(got.index) == ["a", "b"] and list(got["n"]) == [5, 4]
    expected = bootstrap(a[:5], seed=3)
    assert tuple(got.loc["a", ["deletion_auc", "deletion_auc_low", "deletion_auc_high"]]) == expected[:3]
    assert got.loc["a", "deletion_auc"] == pytest.approx(result.table().loc["a", "deletion_auc"])
    assert tuple(got.loc["b", ["deletion_auc", "deletion_auc_low", "deletion_auc_high"]]) == (0.5, 0.5, 0.5)
    narrow = result.intervals("deletion_auc", seed=3, level=0.5).loc["a"]
    assert got.loc["a", "deletion_auc_low"] < narrow["deletion_auc_low"] <= narrow["deletion_auc_high"] \
        < got.loc["a", "deletion_auc_high"]
    with pytest.raises(InputError, match="no column 'insertion_auc'"):
        result.intervals("insertion_auc")
