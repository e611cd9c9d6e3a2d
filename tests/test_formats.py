"""Every file format a user writes, read back exactly: the photographs' prompts file, the labels
CSV of `eclip evaluate --images`, and a model's checkpoint folder (config, safetensors weights,
checksum, metrics). Several entries per line, comments, odd spacing, unicode, a byte-order mark
and Windows line ends included."""

import csv
import io
import json

import pytest
import torch
from PIL import Image

from eclip_core.errors import InputError
from eclip_core.evaluation import folder_items
from eclip_core.paper import photos
from eclip_core.world import embedded

PROMPTS = {
    "dog.jpg": ("a dog", "a ball"),
    "café au lait.png": ("un café", "a cup: white", "ein Straßenschild", "一只猫"),
    "street.png": ("a bicycle", "a car", "a traffic light"),
}


def prompts_text(entries, *, newline="\n", bom=""):
    """The documented format, written with comments, blank lines and uneven spacing."""
    lines = ["# prompts for my photographs", ""]
    for name, prompts in entries.items():
        lines.append(f"  {name} :\t" + "  |".join(f" {p} " for p in prompts) + "  ")
        lines.append("   # a comment between entries")
    return bom + newline.join(lines) + newline


@pytest.mark.parametrize("newline, bom", [("\n", ""), ("\r\n", "\ufeff")])
def test_the_prompts_file_reads_back_exactly(tmp_path, newline, bom):
    """Several prompts per line, a prompt holding ':', unicode names and prompts, comments,
    tabs and spaces around every separator; the file written with Windows line ends and a
    byte-order mark (as some editors save it) reads the same."""
    for i, name in enumerate(PROMPTS):
        Image.new("RGB", (20 + i, 10), "red").save(tmp_path / name)
    (tmp_path / photos.PROMPTS_FILE).write_bytes(prompts_text(PROMPTS, newline=newline, bom=bom).encode("utf-8"))
    read = photos.load_photos(tmp_path)
    assert {p.name: p.prompts for p in read} == PROMPTS
    assert [p.name for p in read] == list(PROMPTS)  # in the file's order
    assert [p.image.size for p in read] == [(20, 10), (21, 10), (22, 10)]


def test_the_prompts_file_separates_prompts_by_a_bar_only():
    assert photos.parse_prompts("x.png: a, b | c; d | e/f") == {"x.png": ("a, b", "c; d", "e/f")}
    with pytest.raises(InputError, match="non-empty"):
        photos.parse_prompts("x.png: a || b")


LABELS = [("dog.png", "a dog"), ("a cat, sleeping.png", "a cat, sleeping on a mat"),
          ("straße.png", "ein Straßenschild"), ("quote.png", 'a "quoted" word')]


@pytest.mark.parametrize("header, newline, bom", [(True, "\n", ""), (False, "\r\n", "\ufeff"),
                                                   (True, "\r\n", "\ufeff")])
def test_the_labels_csv_reads_back_exactly(tmp_path, header, newline, bom):
    """Written by Python's csv module (as pandas and spreadsheets write it): quoted fields with
    commas and quotes, unicode, an optional header, a comment line, Windows line ends and a
    byte-order mark."""
    for i, (name, _) in enumerate(LABELS):
        Image.new("RGB", (8 + i, 8), "blue").save(tmp_path / name)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=newline)
    if header:
        writer.writerow(["filename", "label"])
    writer.writerow(["# a comment", "ignored"])
    writer.writerows(LABELS)
    labels = tmp_path / "labels.csv"
    labels.write_bytes((bom + buffer.getvalue()).encode("utf-8"))
    items = folder_items(tmp_path, labels)
    assert [(it.name, it.target) for it in items] == LABELS
    assert [it.image.size for it in items] == [(8, 8), (9, 8), (10, 8), (11, 8)]


def test_an_unquoted_label_keeps_its_commas(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("a.png, a red circle, left of a square \n")
    [item] = folder_items(tmp_path, labels)
    assert item.target == "a red circle, left of a square"


def test_a_checkpoint_folder_reads_back_exactly(tmp_path):
    """save_embedded then load_embedded: the same config, every weight bit for bit, the metrics,
    and a checksum line that `sha256sum -c` reads; a checksum written in binary mode ('*name')
    is read too, and one changed byte of the weights is refused."""
    config = json.loads((embedded.EMBEDDED_DIR / embedded.CONFIG_FILE).read_text())
    torch.manual_seed(0)
    model = embedded.build_model(config["model_cfg"])
    metrics = {"top1": 0.5, "note": "größer als Zufall"}
    folder = embedded.save_embedded(model, tmp_path / "ckpt", config["model_cfg"], config["preprocess_cfg"], metrics)
    loaded = embedded.load_embedded(directory=folder)
    assert embedded.read_config(folder) == {"model_cfg": config["model_cfg"],
                                            "preprocess_cfg": config["preprocess_cfg"]}
    mine, theirs = model.state_dict(), loaded.module.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert json.loads((folder / embedded.METRICS_FILE).read_text()) == metrics
    line = (folder / embedded.CHECKSUM_FILE).read_text()
    digest = embedded.file_sha256(folder / embedded.WEIGHTS_FILE)
    assert line == f"{digest}  {embedded.WEIGHTS_FILE}\n"
    (folder / embedded.CHECKSUM_FILE).write_text(f"{digest.upper()} *{embedded.WEIGHTS_FILE}\n")
    assert embedded.expected_sha256(folder) == digest
    weights = bytearray((folder / embedded.WEIGHTS_FILE).read_bytes())
    weights[-1] ^= 1
    (folder / embedded.WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(embedded.ModelLoadError, match="checksum mismatch"):
        embedded.load_embedded(directory=folder)
