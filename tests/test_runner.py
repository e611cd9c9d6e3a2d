"""The chapter runner reports every chapter, failing or not, and the photographs' inputs."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

import eclip_core as ec
from eclip_core.paper import misalignment, photos
from eclip_core.world import shapes
from eclip_core.book import QUICK, main, report
from eclip_core.errors import InputError


@pytest.fixture(scope="module")
def embedded():
    return ec.load_model()


def _book(root: Path, cells: dict[str, str]) -> None:
    (root / "notebooks").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   + "".join(f"  - file: notebooks/{name}\n" for name in cells))
    for name, source in cells.items():
        nb = nbformat.v4.new_notebook()
        parameters = nbformat.v4.new_code_cell("model = 'eclip-shapes'")
        parameters.metadata["tags"] = ["parameters"]
        nb.cells = [parameters, nbformat.v4.new_code_cell(source)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")


@pytest.mark.slow
def test_a_failing_chapter_does_not_stop_the_others(tmp_path, capsys):
    _book(tmp_path / "book", {"a_fails": "assert model == 'mine', 'the model was ' + model",
                              "b_runs": "print('ran on', model)"})
    status = main(["execute", "--root", str(tmp_path / "book"), "-p", "model", "mine-typo",
                   "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert status == 1
    assert "a_fails" in printed and "failed: AssertionError: the model was mine-typo" in printed
    assert "1 of 2 chapters passed" in printed
    ran = nbformat.read(tmp_path / "out" / "b_runs.ipynb", 4)
    assert "ran on mine-typo" in ran.cells[-1].outputs[0]["text"]


@pytest.mark.slow
def test_the_kernels_log_is_quiet_and_the_cells_warnings_are_kept(tmp_path, capfd):
    """Executing a chapter prints no kernel start-up warnings (the kernel logs errors only, so
    an error of its own, such as a KeyboardInterrupt it catches while a loaded machine shuts it
    down, may still show); a warning a cell raises is still its output."""
    _book(tmp_path / "book", {"warns": "import warnings\nwarnings.warn('a warning of the chapter')"})
    assert main(["execute", "--root", str(tmp_path / "book"), "--out", str(tmp_path / "out")]) == 0
    err = capfd.readouterr().err
    assert "[IPKernelApp] WARNING" not in err and "without encryption" not in err, err[-500:]
    outputs = nbformat.read(tmp_path / "out" / "warns.ipynb", 4).cells[-1].outputs
    assert any("a warning of the chapter" in o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_a_build_that_changes_no_output_leaves_the_notebook_as_it_was(tmp_path):
    """In place, as `make book` runs: executing a chapter twice gives the same bytes (no run
    times, durations or paths stored), and what nbval and the book read is kept."""
    root = tmp_path / "book"
    _book(root, {"same": "print(sum(range(10)))"})
    notebook = root / "notebooks" / "same.ipynb"
    stored = []
    for _ in range(2):
        assert main(["execute", "--root", str(root)]) == 0
        stored.append(notebook.read_bytes())
    assert stored[0] == stored[1]
    nb = nbformat.reads(stored[0].decode(), 4)
    assert "papermill" not in nb.metadata and nb.metadata["eclip"]["threads"] >= 2
    assert all("execution" not in c.metadata and "papermill" not in c.metadata for c in nb.cells)
    assert nb.cells[-1].outputs[0]["text"] == "45\n" and nb.cells[0].metadata["tags"] == ["parameters"]


def test_printed_text_is_stored_as_one_output_per_stream():
    """However the kernel split what a cell printed into messages, it is stored in one piece."""
    import nbformat

    from eclip_core.book import coalesce_streams

    parts = [nbformat.v4.new_output("stream", name="stdout", text="a\n"),
             nbformat.v4.new_output("stream", name="stdout", text="b\n"),
             nbformat.v4.new_output("stream", name="stderr", text="warned\n"),
             nbformat.v4.new_output("display_data", data={"text/plain": "x"}),
             nbformat.v4.new_output("stream", name="stdout", text="c\n")]
    merged = coalesce_streams(parts)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in merged] == [
        ("stream", "stdout", "a\nb\n"), ("stream", "stderr", "warned\n"), ("display_data", None, None),
        ("stream", "stdout", "c\n")]


@pytest.mark.slow
def test_parameters_need_an_output_folder(tmp_path):
    run = subprocess.run([sys.executable, "-m", "eclip_core.book", "execute", "-p", "model", "ViT-B-16"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--out" in run.stderr
    with pytest.raises(SystemExit):
        main(["execute", "--root", str(tmp_path)])  # no _toc.yml there


def test_report_lists_every_chapter():
    from eclip_core.book import Outcome

    text = report([Outcome(Path("x/00_a.ipynb"), Path("o/00_a.ipynb"), 1.25),
                   Outcome(Path("x/01_b.ipynb"), Path("o/01_b.ipynb"), 2.0, "KeyError: 'n'")])
    assert "00_a" in text and "passed" in text and "failed: KeyError: 'n'" in text
    assert "1 of 2 chapters passed, 3.2 s in all" in text
    assert all(isinstance(v, (int, list)) for v in QUICK.values())


def test_prompts_file(tmp_path):
    assert photos.parse_prompts("# c\n\ndog.jpg: a dog | a ball\ncat.png:a cat") == {
        "dog.jpg": ("a dog", "a ball"), "cat.png": ("a cat",)}
    for bad, said in [("dog.jpg a dog", "expected 'image file"), ("dog.jpg: a dog ||", "non-empty"),
                      ("a.jpg: x\na.jpg: y", "listed twice"), ("# only a comment", "lists no image")]:
        with pytest.raises(InputError, match=said):
            photos.parse_prompts(bad)
    Image.new("RGB", (90, 60), "red").save(tmp_path / "red.png")
    (tmp_path / "prompts.txt").write_text("red.png: a red square | a blue circle\n")
    [photo] = photos.load_photos(tmp_path)
    assert photo.name == "red.png" and photo.image.size == (90, 60) and photo.prompts == ("a red square",
                                                                                         "a blue circle")
    (tmp_path / "prompts.txt").write_text("gone.png: a dog\n")
    with pytest.raises(InputError, match="'gone.png' is not a file"):
        photos.load_photos(tmp_path)
    (tmp_path / "prompts.txt").unlink()
    with pytest.raises(InputError, match="has no prompts.txt"):
        photos.load_photos(tmp_path)
    (tmp_path / "prompts.txt").write_text("bad.png: a dog\n")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        photos.load_photos(tmp_path)


def test_sample_photographs_and_the_embedded_models_prompts(embedded):
    samples = photos.load_photos()
    assert [p.name for p in samples] == list(photos.SAMPLE_PHOTOS)
    texts, own = photos.photo_texts(embedded, samples[:2])
    assert not own  # eclip-shapes cannot read "an astronaut": it explains its own top prompts
    from eclip_core.evaluation import zero_shot_scores

    scores = zero_shot_scores(embedded, [p.image for p in samples[:2]], shapes.prompts())
    for row, chosen in zip(scores, texts):
        assert chosen == [shapes.prompts()[i] for i in row.topk(2).indices]
    assert photos.reads_prompts(embedded, ["a red circle"]) and not photos.reads_prompts(embedded, ["a red dog"])


def test_photographs_at_the_published_scale(embedded):
    """The short side at most 640/224 times the model's input (64 px: 183), aspect kept; a
    smaller photograph untouched; the published keep-size grid then about 2.9 times the model's."""
    samples = photos.load_photos()
    scaled = photos.at_published_scale(samples, embedded)
    for before, after in zip(samples, scaled):
        w, h = before.image.size
        assert min(after.image.size) == min(183, min(w, h))
        assert abs(after.image.size[0] / after.image.size[1] - w / h) < 0.01
        assert (after.name, after.prompts) == (before.name, before.prompts)
    small = photos.Photo("small", Image.new("RGB", (100, 80)), ("a red circle",))
    assert photos.at_published_scale([small], embedded)[0] is small
    grid = embedded.prepare([scaled[0].image], keep_size=True)[0].shape[-1] // embedded.patch_size[0]
    assert 2.5 < grid / embedded.grid_size[0] < 3.2
    with pytest.raises(InputError, match="at least 1"):
        photos.at_published_scale(samples, embedded, scale=0.5)


def test_the_world_is_drawn_at_the_models_size(embedded, one_head_clip):
    assert shapes.world_size(embedded) == shapes.IMAGE_SIZE
    assert shapes.world_size(one_head_clip) == 224
    [scene] = shapes.held_out_scenes(1, 1, size=224)
    assert scene.image.size == (224, 224) and scene.objects[0].mask.shape == (224, 224)
    default, explicit = shapes.held_out_scenes(3, 1), shapes.held_out_scenes(3, 1, size=shapes.IMAGE_SIZE)
    assert all((a.image.tobytes(), a.caption) == (b.image.tobytes(), b.caption) for a, b in zip(default, explicit))


def test_photo_study_on_a_small_vit(one_head_clip, tmp_path):
    import open_clip

    preprocess = open_clip.image_transform(224, is_train=False)
    from eclip_core.world.vocab import ShapesTokenizer

    bundle = (one_head_clip, preprocess, ShapesTokenizer(16))  # a vocabulary within the model's 64 ids
    pictures = [photos.Photo("wide", Image.new("RGB", (320, 224), (200, 40, 40)), ("a red square", "a blue star")),
                photos.Photo("native", Image.effect_noise((224, 224), 60).convert("RGB"), ("a green circle",))]
    study = misalignment.photo_study(bundle, pictures, steps=2)
    t = study.table
    assert study.own_prompts and list(t.index.get_level_values("photo")) == ["wide", "wide", "native"]
    assert (t["faithful"] - t["original"]).abs().max() <= 1e-5
    assert list(t["grid"]) == ["7x7"] * 3 and list(t["grid_reference"]) == ["7x10", "7x10", "7x7"]
    # one head and the model's own size: the published pass is the model's own
    assert t.loc[("native", "a green circle"), "drift"] <= 1e-5 and (t.loc["wide", "drift"] > 1e-5).all()
    assert ((t["deletion_faithful_start"] - t["original"]).abs() <= 1e-5).all()


