"""The house rules, as tests: one reader of open_clip, options checked up front, typed API."""

import ast
import inspect
from pathlib import Path

import pytest
import torch

import eclip_core as ec
from eclip_core.explainers import METHODS, Method, register, unregister

PACKAGE = Path(ec.__file__).parent

#: open_clip's attribute names for the pieces of a CLIP: only trace.py may read them.
OPEN_CLIP_INTERNALS = {
    "visual", "transformer", "resblocks", "attn", "in_proj_weight", "in_proj_bias", "out_proj", "num_heads",
    "ln_1", "ln_2", "ls_1", "ls_2", "mlp", "ln_pre", "ln_post", "proj", "conv1", "class_embedding",
    "positional_embedding", "patch_size", "grid_size", "image_size", "output_dim", "token_embedding",
    "ln_final", "text_projection", "attn_mask", "attn_pool", "pool_type", "text_pool_type", "logit_scale",
}
#: Our own records have fields named like open_clip's modules: reading them is not reading open_clip.
OWN_RECORDS = {"attn"}  # BlockRecord.attn, the attention probabilities


def _reads(path: Path) -> list[tuple[int, str]]:
    """Attribute reads of open_clip internals in one module (``self.x`` and the trace module's
    own accessors, ``trace.image_size(model)``, excluded)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in OPEN_CLIP_INTERNALS - OWN_RECORDS:
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "trace"):
                continue
            found.append((node.lineno, node.attr))
    return found


def test_only_trace_reads_open_clip_internals():
    offenders = {str(p.relative_to(PACKAGE)): _reads(p) for p in sorted(PACKAGE.rglob("*.py"))
                 if p.name != "trace.py"}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"open_clip internals read outside trace.py: {offenders}"


def test_the_layout_check_can_fail(tmp_path):
    module = tmp_path / "sneaky.py"
    module.write_text("def f(model):\n    return model.visual.transformer.resblocks[-1].attn.out_proj\n")
    assert {attr for _, attr in _reads(module)} == {"visual", "transformer", "resblocks", "out_proj"}


def test_unknown_option_names_the_valid_ones(vit_b16, images_224):
    with pytest.raises(ec.InputError, match="no option 'qkk'.*loosened, qk"):
        ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="grad_eclip", qkk="raw")
    with pytest.raises(ec.InputError, match="no option 'n_masks'; its options: none"):
        ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="gradcam", n_masks=3)
    with pytest.raises(ec.InputError, match="qk must be one of 'out_proj', 'raw'"):
        ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="grad_eclip", qk="both")
    with pytest.raises(ec.InputError, match="has no mode 'reference'; its modes: faithful"):
        ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="rollout", mode="reference")


def test_register_refuses_to_replace_a_builtin_unless_asked():
    original = METHODS["gradcam"]
    twin = Method("gradcam", original.fn, "a replacement")
    with pytest.raises(ec.InputError, match="already registered"):
        register(twin)
    assert METHODS["gradcam"] is original
    try:
        assert register(twin, replace=True) is twin and METHODS["gradcam"] is twin
    finally:
        register(original, replace=True)


def test_an_explainer_must_take_the_departures():
    def bare(model, images, targets):
        return images, targets

    with pytest.raises(ec.InputError, match="must take a keyword parameter 'departures'"):
        Method("bare", bare, "no departures")
    unregister_missing = pytest.raises(ec.InputError, match="no explainer named 'bare'")
    with unregister_missing:
        unregister("bare")


def test_explanations_report_their_departures(vit_b16, images_224):
    faithful = ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="grad_eclip")
    assert faithful.departures == ec.FAITHFUL and not faithful.departures.any
    assert faithful.departures.describe() == [] and faithful.describe(vit_b16) == []
    assert faithful.departures.summary() == "none"


@pytest.mark.parametrize("name", ["explain", "explain_text", "load_model", "trace_vision", "trace_text"])
def test_public_entries_are_typed(name):
    signature = inspect.signature(getattr(ec, name))
    assert signature.return_annotation is not inspect.Signature.empty, name
    untyped = [p for p in signature.parameters.values()
               if p.annotation is inspect.Parameter.empty and p.name not in ("model", "preprocess", "tokenizer")
               and p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert not untyped, f"{name}: untyped parameters {[p.name for p in untyped]}"


def _shipped(config: dict, root: Path) -> tuple[set[Path], list[str]]:
    """The data files a wheel built from ``config`` (pyproject's ``[tool.setuptools]``) would
    hold, and the listed packages that are no folder of ``root``."""
    import fnmatch

    packages, patterns = config["packages"], config.get("package-data", {})
    missing = [p for p in packages if not (root / p.replace(".", "/")).is_dir()]
    shipped = set()
    for package, globs in patterns.items():
        folder = root / package.replace(".", "/")
        if package not in packages:
            continue
        for path in folder.rglob("*"):
            relative = path.relative_to(folder).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(relative, g) and relative.count("/") == g.count("/")
                                      for g in globs):
                shipped.add(path)
    return shipped, missing


def test_every_data_file_ships_with_the_package():
    """The models are package data: every file under eclip_core/data (weights, checksums,
    metrics) is named by pyproject's package-data of a listed package, so a wheel holds it."""
    import tomllib

    root = PACKAGE.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = {p for p in (PACKAGE / "data").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    shipped, missing = _shipped(config, root)
    assert not missing, f"listed packages that are no folder: {missing}"
    assert data and not data - shipped, sorted(str(p.relative_to(root)) for p in data - shipped)
    # the check can fail: a model folder left out of the packages is reported
    narrower = {**config, "packages": [p for p in config["packages"] if not p.endswith("series")]}
    assert any("series" in p.parts for p in data - _shipped(narrower, root)[0])
