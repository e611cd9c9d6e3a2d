"""The ``eclip`` command line, run in-process through ``eclip_core.cli.main`` (one subprocess test).

Uses the embedded 64x64 model, so each explain run takes a fraction of a second.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eclip_core as ec
from eclip_core.world import shapes
from eclip_core.cli import main, slug
from eclip_core.explainers import METHODS


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def grid():
    return tuple(ec.load_model().model.visual.grid_size)


@pytest.fixture
def scene_png(tmp_path):
    path = tmp_path / "scene.png"
    shapes.eval_set(1)[0].image.save(path)
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("eclip: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_methods_lists_explainers_and_models(capsys):
    code, out, _ = _run(capsys, "methods")
    assert code == 0
    for name, method in METHODS.items():
        assert name in out and method.description in out
    assert "faithful,reference" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:] if line.startswith("  ")}
    assert rows["eclip-shapes"] == ["yes", "yes"]
    assert rows["ViT-B-16"] == ["yes", "yes"]
    assert rows["RN50"] == ["no", "no"]
    assert rows["EVA02-B-16"] == ["yes", "no"]  # a ViT, but a timm tower eclip does not trace


def test_explain_writes_a_png_and_a_npy_per_text(capsys, tmp_path, scene_png, grid):
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, "explain", scene_png, "--text", "a red circle", "--text", "a blue square!",
                          "-o", out_dir)
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["scene__a-blue-square__attention_eclip__faithful.npy",
                     "scene__a-blue-square__attention_eclip__faithful.png",
                     "scene__a-red-circle__attention_eclip__faithful.npy",
                     "scene__a-red-circle__attention_eclip__faithful.png"]
    raw = np.load(out_dir / "scene__a-red-circle__attention_eclip__faithful.npy")
    assert raw.shape == grid and np.isfinite(raw).all()
    expected = ec.explain(ec.load_model(), [scene_png], ["a red circle"]).maps[0, 0].numpy()
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-7)
    assert (out_dir / "scene__a-red-circle__attention_eclip__faithful.png").read_bytes()[:4] == b"\x89PNG"
    assert "cos" in out


def test_explain_reference_mode_and_method(capsys, tmp_path, scene_png):
    dotted = tmp_path / "my.scene.v2.png"
    shutil.copy(scene_png, dotted)
    code, _, err = _run(capsys, "explain", scene_png, dotted, "-t", "a red circle", "--method", "grad_eclip",
                        "--mode", "reference", "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "my.scene.v2__a-red-circle__grad_eclip__reference.png", "scene__a-red-circle__grad_eclip__reference.png"]


@pytest.mark.slow
def test_all_methods_writes_a_comparison_grid(capsys, tmp_path, scene_png):
    code, out, err = _run(capsys, "explain", scene_png, "-t", "a red circle", "-t", "a green star",
                          "--all-methods", "-o", tmp_path)
    assert code == 0, err
    # progress: a line per method before it runs, and RISE's bar over its batches of masks
    said = [line for line in out.splitlines() if line.startswith("[")]
    assert said == [f"[{i}/{len(METHODS)}] {m} on scene.png ..." for i, m in enumerate(METHODS, start=1)]
    assert "RISE, 500 masks" in err
    grid_png = tmp_path / "scene__all-methods__faithful.png"
    assert grid_png.is_file() and grid_png.stat().st_size > 10_000
    npys = {p.name for p in tmp_path.glob("*.npy")}
    assert npys == {f"scene__{slug(t)}__{m}__faithful.npy" for t in ("a red circle", "a green star")
                    for m in METHODS}


def test_missing_image_exit_code_1_and_one_line(capsys, tmp_path):
    missing = tmp_path / "nope.png"
    code, _, err = _run(capsys, "explain", missing, "-t", "a red circle", "-o", tmp_path / "out")
    assert code == 1
    line = _one_line_error(err)
    assert str(missing) in line and "no such file" in line
    assert not (tmp_path / "out").exists()  # inputs are checked before anything is written


@pytest.mark.parametrize("argv,message", [
    (["-t", "   "], "empty"),
    (["-t", "a red circle", "--method", "nope"], "unknown method 'nope'; available"),
    (["-t", "a red circle", "--method", "gae", "--mode", "reference"], "has no mode 'reference'"),
    (["-t", "a red circle", "--model", "RN50"], "ResNet image tower"),
    (["-t", "a red circle", "--model", "ViT-Nope"], "unknown model 'ViT-Nope'"),
    (["-t", "a red circle", "--pretrained", "openai"], "ships its own weights"),
])
def test_bad_input_exit_code_1(capsys, tmp_path, scene_png, argv, message):
    code, _, err = _run(capsys, "explain", scene_png, *argv, "-o", tmp_path / "out")
    assert code == 1
    assert message in _one_line_error(err)


def test_unreadable_image_and_output_file_in_the_way(capsys, tmp_path, scene_png):
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("hello")
    code, _, err = _run(capsys, "explain", text_file, "-t", "a red circle", "-o", tmp_path / "out")
    assert code == 1 and "not an image file" in _one_line_error(err)
    code, _, err = _run(capsys, "explain", scene_png, "-t", "a red circle", "-o", text_file)
    assert code == 1 and "cannot create output directory" in _one_line_error(err)


@pytest.mark.parametrize("argv", [
    ["explain", "x.png", "-t", "a", "-o", "o", "--bogus"],
    ["explain", "x.png", "-o", "o"],  # --text is required
    ["explain", "x.png", "-t", "a", "-o", "o", "--mode", "sideways"],
    ["explain", "x.png", "-t", "a", "-o", "o", "--method", "gae", "--all-methods"],
    ["evaluate", "--n-images", "0"],
    ["evaluate", "--images", "somewhere"],
    ["evaluate", "--out", "results.txt"],
    ["frobnicate"],
    [],
])
def test_usage_errors_exit_code_2(capsys, argv):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert "usage:" in err and "Traceback" not in err


def test_help_on_every_command(capsys):
    for argv in (["--help"], ["explain", "--help"], ["evaluate", "--help"], ["methods", "--help"]):
        code, out, _ = _run(capsys, *argv)
        assert code == 0 and "usage: eclip" in out


def test_over_long_text_warns_on_one_line(capsys, tmp_path, scene_png):
    long_text = "a red circle and a blue square and " * 4 + "a star"
    code, _, err = _run(capsys, "explain", scene_png, "-t", long_text, "-o", tmp_path, "-q")
    assert code == 0
    warning_lines = [line for line in err.splitlines() if line.startswith("eclip: warning:")]
    assert len(warning_lines) == 1 and "context length of" in warning_lines[0]
    assert len(list(tmp_path.glob("scene__*.png"))) == 1


@pytest.mark.slow
def test_evaluate_prints_a_table(capsys, tmp_path):
    out_csv = tmp_path / "results.csv"
    code, out, err = _run(capsys, "evaluate", "--n-images", 4, "--methods", "attention_eclip,gradcam",
                          "--steps", 4, "--out", out_csv, "-q")
    assert code == 0, err
    assert "deletion_auc" in out and "pointing_game" in out
    assert "attention_eclip" in out and "gradcam" in out
    rows = out_csv.read_text().splitlines()
    assert rows[0].startswith("method,") and len(rows) == 3


def test_evaluate_a_labelled_folder(capsys, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    scenes = shapes.eval_set(3)
    lines = ["filename,label"]
    for i, scene in enumerate(scenes):
        scene.image.save(folder / f"img{i}.png")
        lines.append(f"img{i}.png,{scene.caption}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    out_json = tmp_path / "results.json"
    code, out, err = _run(capsys, "evaluate", "--images", folder, "--labels", labels,
                          "--methods", "attention_eclip", "--steps", 4, "--out", out_json, "-q")
    assert code == 0, err
    assert "deletion_auc" in out and "pointing_game" not in out.splitlines()[1]
    assert json.loads(out_json.read_text())["rows"][0]["n"] == 3
    labels.write_text("filename,label\nmissing.png,a red circle\n")
    code, _, err = _run(capsys, "evaluate", "--images", folder, "--labels", labels, "-q")
    assert code == 1 and "line 2: no image 'missing.png'" in _one_line_error(err)


@pytest.mark.slow
def test_installed_console_script_help():
    script = shutil.which("eclip", path=str(Path(sys.executable).parent))
    assert script, "the eclip console script is not installed (pip install -e .)"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "explain" in done.stdout and "evaluate" in done.stdout and "methods" in done.stdout


def test_viz_helpers_for_notebooks(tmp_path):
    from eclip_core import viz

    bundle = ec.load_model()
    scene = shapes.eval_set(1)[0]
    texts = ["a red circle", "a blue star"]
    result = ec.explain(bundle, [scene.image], texts)
    view = viz.input_image(scene.image, bundle.preprocess)
    assert view.size == tuple(bundle.model.visual.image_size)
    fig = viz.overlay(view, result.maps[0, 0], title="a red circle")
    assert len(fig.axes) == 2  # the image and its colour bar
    grid = viz.comparison_grid(view, {"attention_eclip": result.maps, "again": result.maps[0]}, texts)
    grid.savefig(tmp_path / "grid.png")
    with pytest.raises(ec.InputError, match=r"\(K=2, grid_h, grid_w\)"):
        viz.comparison_grid(view, {"bad": result.maps[0, :1]}, texts)
    tokens = ec.explain_text(bundle, ["a red circle"], [scene.image])
    n = int(tokens.token_mask[0].sum())
    words = bundle.tokenizer.decode(tokens.extras["tokens"][0]).split()
    weights = tokens.maps[0, 0][tokens.token_mask[0]]
    assert words == ["a", "red", "circle"] and n == 3
    bar = viz.token_bar(words, weights, title="a red circle")
    bar.savefig(tmp_path / "bar.png")
    with pytest.raises(ec.InputError, match="2 words but 1 weights"):
        viz.token_bar(["a", "b"], [1.0])


def test_methods_lists_the_embedded_models_vocabulary(capsys):
    from eclip_core.world.vocab import WORDS

    code, out, _ = _run(capsys, "methods")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("Vocabulary of the eclip-shapes tokenizer (other words are read as <unk>):")
    listed = " ".join(lines[start + 1:lines.index("", start)]).split()
    assert listed == list(WORDS) and "circle" in listed and "cat" not in listed


# ----------------------------------------------------------------------------- outputs


def test_file_names_hold_the_mode(capsys, tmp_path, scene_png):
    """A faithful run no longer overwrites a reference run's files."""
    for mode in ("reference", "faithful"):
        code, _, err = _run(capsys, "explain", scene_png, "-t", "a red circle", "-m", "grad_eclip", "--mode", mode,
                            "-o", tmp_path, "-q")
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("scene__*")) == [
        f"scene__a-red-circle__grad_eclip__{mode}.{ext}" for mode in ("faithful", "reference")
        for ext in ("npy", "png")]
    faithful, reference = (np.load(tmp_path / f"scene__a-red-circle__grad_eclip__{m}.npy")
                           for m in ("faithful", "reference"))
    assert not np.array_equal(faithful, reference)


def test_a_failed_load_leaves_no_output_folder(capsys, tmp_path, scene_png):
    text = tmp_path / "weights.pt"
    text.write_text("not weights\n")
    out = tmp_path / "new" / "out"
    code, _, err = _run(capsys, "explain", scene_png, "-t", "a red circle", "--model", "ViT-B-32",
                        "--pretrained", text, "-o", out)
    assert code == 1 and "it is a text file" in _one_line_error(err)
    unreadable = tmp_path / "notes.jpg"
    unreadable.write_text("hello")
    code, _, err = _run(capsys, "explain", unreadable, "-t", "a red circle", "-o", out)
    assert code == 1 and "not an image file" in _one_line_error(err)
    code, _, err = _run(capsys, "evaluate", "-n", 2, "--model", "ViT-B-32", "--pretrained", text,
                        "--out", out / "results.csv")
    assert code == 1
    assert not (tmp_path / "new").exists()


def test_nothing_is_left_half_written(capsys, tmp_path, scene_png, monkeypatch):
    from matplotlib.figure import Figure

    def disk_full(self, handle, **kwargs):
        handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    code, _, err = _run(capsys, "explain", scene_png, "-t", "a red circle", "-o", tmp_path / "out")
    assert code == 1 and "No space left on device" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "scene__a-red-circle__attention_eclip__faithful.npy"]  # whole; no PNG, no temporary file
    np.load(tmp_path / "out" / "scene__a-red-circle__attention_eclip__faithful.npy")

    def no_save(handle, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", no_save)
    code, _, err = _run(capsys, "explain", scene_png, "-t", "a red circle", "-o", tmp_path / "other")
    assert code == 1 and not (tmp_path / "other").exists()


@pytest.mark.parametrize("dpi", ["5000", "10", "0"])
def test_dpi_is_bounded(capsys, dpi):
    code, _, err = _run(capsys, "explain", "x.png", "-t", "a", "-o", "o", "--dpi", dpi)
    assert code == 2 and "usage:" in err
    assert ("from 30 to 600 dots per inch" in err) or ("positive integer" in err)


def test_saved_figures_are_bounded_in_pixels(tmp_path):
    from matplotlib.figure import Figure
    from PIL import Image

    from eclip_core import viz

    fig = Figure(figsize=(40, 20))
    with pytest.warns(UserWarning, match=r"big.png: 600 dpi would make a 24000x12000 px image; saved at 274 dpi"):
        assert viz.save_figure(fig, tmp_path / "big.png", dpi=600) == pytest.approx((6e7 / 800) ** 0.5)
    width, height = Image.open(tmp_path / "big.png").size
    assert max(width, height) <= viz.MAX_PIXELS_PER_SIDE and width * height <= viz.MAX_PIXELS


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


@pytest.mark.parametrize("size", [(20, 2000), (2000, 20), (4096, 640), (64, 64)])
def test_extreme_aspect_ratios_keep_title_and_colour_bar(size):
    from PIL import Image

    from eclip_core import viz

    picture = Image.new("RGB", size, (120, 30, 30))
    title = '"a red circle"\nattention_eclip (reference)   cos = 0.123 (original model 0.456)'
    fig = viz.overlay(picture, np.random.default_rng(0).random((8, 8)), title=title)
    renderer = _drawn(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert max(fig.get_size_inches()) <= viz.MAX_FIGURE_INCHES
    box = fig.axes[0].title.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height and box.y0 >= 0, (box, width, height)
    image_box, bar_box = (ax.get_position() for ax in fig.axes[:2])
    assert bar_box.y0 == pytest.approx(image_box.y0) and bar_box.height == pytest.approx(image_box.height)
    assert image_box.width / image_box.height * width / height == pytest.approx(size[0] / size[1], rel=1e-6)
    grid = viz.comparison_grid(picture, {"a": np.ones((2, 8, 8)), "b": np.zeros((2, 8, 8))}, ["x", "y"],
                               scores={"a": [0.1, 0.2], "b": [0.3, 0.4]}, title="grid")
    _drawn(grid)
    pictures, bars = grid.axes[0::2], grid.axes[1::2]
    for picture_ax, bar_ax in zip(pictures, bars):
        p, b = picture_ax.get_position(), bar_ax.get_position()
        assert b.y0 == pytest.approx(p.y0) and b.height == pytest.approx(p.height)
    assert max(grid.get_size_inches()) <= viz.MAX_FIGURE_INCHES


def test_constant_maps_get_a_sensible_colour_range():
    from eclip_core import viz

    assert viz._limits(np.zeros((4, 4))) == (0.0, 1.0)
    assert viz._limits(np.full((4, 4), 0.7)) == (0.0, 0.7)
    assert viz._limits(np.full((4, 4), -0.3)) == (-0.3, 0.0)
    noisy = 0.5 + 1e-13 * np.random.default_rng(0).standard_normal((4, 4))  # round-off, not a map
    assert viz._limits(noisy) == pytest.approx((0.0, 0.5))
    assert viz._limits(np.array([[0.0, 2.0]])) == (0.0, 2.0)
    fig = viz.overlay(Image.new("RGB", (8, 8)), np.zeros((2, 2)))
    assert fig.axes[0].images[1].get_clim() == (0.0, 1.0)


def test_reference_grid_shows_the_original_models_score(capsys, tmp_path, scene_png, monkeypatch):
    from eclip_core import cli, viz

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return viz.comparison_grid(*args, **kwargs)

    monkeypatch.setattr(cli, "comparison_grid", spy)
    code, _, err = _run(capsys, "explain", scene_png, "-t", "a red circle", "--all-methods", "--mode", "reference",
                        "-o", tmp_path, "-q")
    assert code == 0, err
    assert set(seen["scores_original"]) == {"grad_eclip", "attention_eclip"}
    grid = spy(Image.new("RGB", (8, 8)), {"m": np.ones((1, 2, 2))}, ["x"], scores={"m": [0.25]},
               scores_original={"m": [0.5]})
    assert grid.axes[0].get_title() == "m\ncos 0.250 (original 0.500)"
