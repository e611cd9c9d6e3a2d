"""The house rules, as tests: one reader per model family, three floors, one door for the model,
one place a request is decided, a typed API."""

import ast
import re
import inspect
from pathlib import Path

import pytest
import torch

import eclip_core as ec
from eclip_core import models
from eclip_core.clip import ClipModel
from eclip_core.explainers import METHODS, Method, register, unregister

PACKAGE = Path(ec.__file__).parent

#: open_clip's attribute names for the pieces of a CLIP: only its family module may read them.
#: (The typed model's own facts -- image_size, patch_size, grid_size, logit_scale -- share
#: open_clip's names and are left out: a read of open_clip's goes through one of these.)
OPEN_CLIP_INTERNALS = {
    "visual", "transformer", "resblocks", "attn", "in_proj_weight", "in_proj_bias", "out_proj", "num_heads",
    "ln_1", "ln_2", "ls_1", "ls_2", "mlp", "ln_pre", "ln_post", "proj", "conv1", "class_embedding",
    "positional_embedding", "output_dim", "token_embedding", "ln_final", "text_projection", "attn_mask",
    "attn_pool", "pool_type", "text_pool_type",
}
#: transformers' attribute names for the pieces of its CLIP: only its family module may read them.
HF_INTERNALS = {
    "probe", "logit_bias", "vision_model", "text_model", "visual_projection", "pre_layrnorm", "post_layernorm", "self_attn", "q_proj",
    "k_proj", "v_proj", "layer_norm1", "layer_norm2", "fc1", "fc2", "final_layer_norm", "patch_embedding",
    "position_embedding", "eos_token_id", "encoder", "get_image_features", "get_text_features",
}
#: Our own records have fields named like open_clip's modules: reading them is not reading open_clip.
OWN_RECORDS = {"attn"}  # BlockRecord.attn, the attention probabilities
#: The one module of each family that reads its library's internals (transformers' CLIP shares
#: some of open_clip's names -- out_proj, mlp, class_embedding, text_projection -- for its own).
FAMILY_MODULES = {"trace/open_clip.py", "trace/hf_clip.py", "trace/hf_siglip.py", "trace/open_clip_timm.py"}
#: timm's attribute names for the pieces of its ViT trunks: only the timm family module reads them
#: (open_clip.py hands it the trunk: ``timm_tower``).
TIMM_INTERNALS = {"patch_embed", "pos_embed", "latent", "qkv", "q_norm", "k_norm", "kv",
                  "norm1", "norm2", "ls1", "ls2", "norm_pre", "fc_norm", "forward_features", "forward_head"}
TIMM_MODULE = "trace/open_clip_timm.py"
HF_MODULES = {"trace/hf_clip.py", "trace/hf_siglip.py"}
#: The faces of the package: the package itself and its two programs, which may import every floor.
FACES = {"__init__.py", "cli.py", "book.py"}


def _reads(path: Path, internals: set[str] = OPEN_CLIP_INTERNALS) -> list[tuple[int, str]]:
    """Attribute reads of a library's internals in one module (``self.x`` excluded)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in internals - OWN_RECORDS:
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                continue
            found.append((node.lineno, node.attr))
    return found


def _modules() -> dict[str, Path]:
    return {p.relative_to(PACKAGE).as_posix(): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_only_the_family_module_reads_open_clip_internals():
    offenders = {name: _reads(p) for name, p in _modules().items() if name not in FAMILY_MODULES}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"open_clip internals read outside {FAMILY_MODULES}: {offenders}"


def test_only_the_transformers_family_reads_transformers_internals():
    offenders = {name: _reads(p, HF_INTERNALS) for name, p in _modules().items() if name not in HF_MODULES}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"transformers internals read outside {HF_MODULES}: {offenders}"
    importers = [name for name, p in _modules().items() if name not in HF_MODULES
                 and re.search(r"^\s*(import transformers|from transformers)", p.read_text(), re.M)]
    assert not importers, f"only {HF_MODULES} import transformers: {importers}"


def test_only_the_timm_family_reads_timm_internals():
    offenders = {name: _reads(p, TIMM_INTERNALS) for name, p in _modules().items() if name != TIMM_MODULE}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"timm internals read outside {TIMM_MODULE}: {offenders}"


def test_the_layout_check_can_fail(tmp_path):
    module = tmp_path / "sneaky.py"
    module.write_text("def f(model):\n    return model.visual.transformer.resblocks[-1].attn.out_proj\n")
    assert {attr for _, attr in _reads(module)} == {"visual", "transformer", "resblocks", "out_proj"}


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """The eclip_core modules a module imports (relative imports resolved), by dotted name."""
    name = "eclip_core." + path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {f for f in found if f.startswith("eclip_core")}


def _floor(name: str) -> str:
    return name.split("/")[0] if name.startswith(("world/", "paper/")) else "library"


def _upward(modules: dict[str, Path], root: Path = PACKAGE) -> dict[str, list[str]]:
    """Imports that go up a floor: the library into world or paper, world into paper."""
    above = {"library": ("eclip_core.world", "eclip_core.paper"), "world": ("eclip_core.paper",), "paper": ()}
    out = {}
    for name, path in modules.items():
        if name in FACES:
            continue
        bad = sorted(i for i in _imports(path, root) if i.startswith(above[_floor(name)]))
        if bad:
            out[name] = bad
    return out


def test_three_floors_and_no_import_goes_up():
    """The library (the top of eclip_core) never imports the shapes world or the book's studies;
    the world never imports the studies. Only the faces (the package, the CLI, the runner) may."""
    modules = _modules()
    assert {"world/shapes.py", "world/embedded.py", "paper/p1.py", "paper/p2.py"} <= set(modules)
    assert not _upward(modules), _upward(modules)


def test_the_floor_check_can_fail(tmp_path):
    (tmp_path / "sneaky.py").write_text("from .world import shapes\nfrom .paper.p2 import p2_study\n")
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "sly.py").write_text("from ..paper import p1\n")
    found = _upward({"sneaky.py": tmp_path / "sneaky.py", "world/sly.py": tmp_path / "world" / "sly.py"}, tmp_path)
    assert found == {"sneaky.py": ["eclip_core.paper.p2", "eclip_core.paper.p2.p2_study", "eclip_core.world",
                                   "eclip_core.world.shapes"],
                     "world/sly.py": ["eclip_core.paper", "eclip_core.paper.p1"]}


def test_one_module_per_family_and_every_family_a_typed_model():
    families = {family.__module__ for family in models.FAMILIES}
    assert len(families) == len(models.FAMILIES) and all(f.startswith("eclip_core.trace.") for f in families)
    assert all(issubclass(family, ClipModel) for family in models.FAMILIES)


def _parameters(modules: dict[str, Path]):
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                    yield name, node.name, arg


def test_the_model_is_typed_everywhere():
    """Nothing below the door unpacks: every parameter named ``model`` is annotated (a
    ClipModel, or ``Model`` at a door that converts it), none is called ``bundle``, and no
    helper unpacks a tuple of (model, preprocess, tokenizer)."""
    untyped = [(m, f) for m, f, a in _parameters(_modules()) if a.arg == "model" and a.annotation is None]
    bundles = [(m, f) for m, f, a in _parameters(_modules()) if a.arg == "bundle"]
    assert not untyped, f"untyped model parameters: {untyped}"
    assert not bundles, f"parameters still called bundle: {bundles}"
    assert not any("def unpack(" in p.read_text() for p in _modules().values())


def test_the_door_converts_once():
    model = ec.load_model()
    assert ec.as_model(model) is model  # a typed model passes through unchanged
    raw = ec.as_model(model.model, model.preprocess, model.tokenizer)
    assert isinstance(raw, ClipModel) and raw.module is model.module and raw.preprocess is model.preprocess
    module, preprocess, tokenizer = model  # and still unpacks as load_model results always did
    assert module is model.module and tokenizer is model.tokenizer
    with pytest.raises(ec.InputError, match="expected a CLIP model"):
        ec.as_model("ViT-B-16")


def test_a_request_is_decided_once():
    """One parser of "name:mode", one spelling in tables, a contradiction refused; the command
    line's modes are the registry's."""
    from eclip_core import cli
    from eclip_core.departures import MODES

    request = ec.resolve("grad_eclip:reference", options={"qk": "raw"})
    assert (request.name, request.mode, dict(request.options), str(request)) == \
        ("grad_eclip", "reference", {"qk": "raw"}, "grad_eclip:reference")
    assert ec.resolve(request) == request and ec.resolve("grad_eclip", "reference") == ec.resolve(request.method,
                                                                                                   "reference")
    with pytest.raises(ec.InputError, match="names mode 'reference' but mode='faithful'"):
        ec.resolve("grad_eclip:reference", "faithful")
    parser = cli.build_parser()
    explain = next(a for a in parser._subparsers._group_actions[0].choices["explain"]._actions
                   if a.dest == "mode")
    assert tuple(explain.choices) == MODES
    assert not hasattr(Method, "check") and "partition(\":\")" not in (PACKAGE / "cli.py").read_text()


def test_metric_directions_are_declared_once():
    """Every column a table ranks by has one declared direction, and no module but the metric
    registry spells one out in code (docstrings aside)."""
    from eclip_core.metrics import METRICS, higher_is_better
    from eclip_core import randomisation  # noqa: F401  (declares its measure)
    from eclip_core.paper import counterfactual  # noqa: F401  (declares its measures)

    for column in ("deletion_auc", "insertion_auc", "pointing_game", "energy_in_mask", "cf_correlation",
                   "cf_regret", "road_deletion_auc", "randomisation_spearman"):
        assert column in METRICS
    assert not higher_is_better("deletion_auc") and higher_is_better("cf_correlation")
    spelled = []
    for name, path in _modules().items():
        if name == "metrics/registry.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and ("lower is better" in node.value or "higher is better" in node.value):
                spelled.append((name, node.lineno))
    assert not spelled, spelled


def test_unknown_option_names_the_valid_ones(vit_b16, images_224):
    with pytest.raises(ec.InputError, match="no option 'qkk'.*loosened, qk"):
        ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="grad_eclip", qkk="raw")
    with pytest.raises(ec.InputError, match="no option 'n_masks'; its options: none"):
        ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="maskclip", n_masks=3)
    with pytest.raises(ec.InputError, match="cls_token must be one of 'kept', 'dropped'"):
        ec.explain(vit_b16, images_224[:1], torch.ones(1, 512), method="gradcam", cls_token="yes")
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
               if p.annotation is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD]
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


def test_every_package_ships():
    """Every folder of eclip_core with Python modules is a package listed in pyproject, so a
    wheel (or a fresh editable install) holds the three floors."""
    import tomllib

    root = PACKAGE.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(root).parts) for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert folders - listed == set(), sorted(folders - listed)
    assert {"eclip_core.trace", "eclip_core.world", "eclip_core.paper"} <= folders
