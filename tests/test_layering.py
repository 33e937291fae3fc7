"""The house reads one way: pixelgen's subpackages are layers, each importing only the layers
below it; modules import each other at the top of files only, without a cycle; and the plugin
API (pixelgen.blocks) stands on torch and einops alone. docs/architecture.md draws the layers."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pixelgen"

# The layers, bottom first. A unit is a subpackage or a top-level module; units of one layer
# stand beside each other and import neither each other nor anything above.
LAYERS = [
    ("foundation", {"pixelgen.errors", "pixelgen.limits"}),
    ("nn", {"pixelgen.nn"}),
    ("sampling", {"pixelgen.sampling"}),
    ("registry", {"pixelgen.registry"}),
    ("recipe and data", {"pixelgen.recipe", "pixelgen.data"}),
    ("store", {"pixelgen.store"}),
    ("training", {"pixelgen.training"}),
    ("study", {"pixelgen.study"}),
    ("api", {"pixelgen.api"}),
    ("cli", {"pixelgen.cli"}),
]
# Top-level modules that are another unit's front door.
PART_OF = {"pixelgen.blocks": "pixelgen.nn", "pixelgen.__main__": "pixelgen.cli"}
RANK = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}


def pixelgen_imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """``(module, at_top)`` for every import of a pixelgen module in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "pixelgen":
            found += [(f"{node.module}.{a.name}", id(node) in top) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "pixelgen"]
    return found


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The pixelgen module an imported dotted name lives in (``pixelgen.store.runs.LAST``
    -> ``pixelgen.store.runs``), None for the package's own lazy exports."""
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def unit_of(module: str) -> str | None:
    """The layer unit a module belongs to (its subpackage, or itself at the top)."""
    parts = module.split(".")
    unit = ".".join(parts[:2]) if len(parts) > 1 else None
    return PART_OF.get(unit, unit)


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {resolve(m) for m, _ in pixelgen_imports(path)} - {name, "pixelgen"}
    return graph


def unit_edges(graph: dict[str, set[str]]) -> set[tuple[str, str, str, str]]:
    """``(unit, imported unit, module, imported module)`` for imports between units."""
    return {(unit_of(a), unit_of(b), a, b) for a, deps in graph.items() for b in deps
            if unit_of(a) and unit_of(b) and unit_of(a) != unit_of(b)}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_pixelgen_import_inside_a_function(name):
    inside = [m for m, at_top in pixelgen_imports(MODULES[name]) if not at_top]
    assert not inside, f"{name} imports {inside} inside a function: that module lives in the wrong room"


def test_every_module_belongs_to_a_layer():
    units = {unit_of(name) for name in MODULES if unit_of(name)}
    assert units <= set(RANK), f"not in a layer: {sorted(units - set(RANK))}; add it to LAYERS and the docs"


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b} ({layer_a} may not import {layer_b})"
                  for unit_a, unit_b, a, b in unit_edges(graph)
                  if RANK[unit_b] >= RANK[unit_a]
                  for layer_a, layer_b in [(LAYERS[RANK[unit_a]][0], LAYERS[RANK[unit_b]][0])])


def test_imports_run_down_the_layers_only():
    assert not upward(import_graph())


def test_an_upward_import_is_caught():
    """The check above can fail: the recipe importing the trainer, or data importing the
    recipe beside it, is reported."""
    graph = import_graph()
    graph["pixelgen.recipe"] = graph["pixelgen.recipe"] | {"pixelgen.training.trainer"}
    graph["pixelgen.data"] = graph["pixelgen.data"] | {"pixelgen.recipe"}
    found = upward(graph)
    assert any(line.startswith("pixelgen.recipe -> pixelgen.training.trainer") for line in found), found
    assert any(line.startswith("pixelgen.data -> pixelgen.recipe") for line in found), found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_a_cycle_is_caught(monkeypatch):
    """The cycle check above can fail: a graph with a loop makes it raise."""
    real = import_graph()
    monkeypatch.setattr(sys.modules[__name__], "import_graph",
                        lambda: {**real, "pixelgen.nn.blocks": real["pixelgen.nn.blocks"] | {"pixelgen.training.plan"}})
    with pytest.raises(AssertionError, match="import cycle"):
        test_the_import_graph_has_no_cycle()


def test_every_subpackage_is_packaged():
    """A wheel holds only the packages pyproject.toml lists."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    subpackages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert subpackages <= listed, sorted(subpackages - listed)


#: The storage modules that load torch, zarr or PIL. The parser uses the light ones, the file
#: rules (pixelgen.store.files, pixelgen.store.runs: the standard library and the recipe), to
#: refuse an output path before anything heavy loads.
STORE_HEAVY = ["pixelgen.store.archive", "pixelgen.store.checkpoint", "pixelgen.store.images",
               "pixelgen.store.quantization"]


def loaded_after(code: str) -> list[str]:
    heavy = ["pixelgen.training", "pixelgen.store", *STORE_HEAVY, "pixelgen.study", "pixelgen.recipe",
             "pixelgen.registry", "pixelgen.sampling", "zarr", "PIL", "lightning_fabric", "pluggy", "matplotlib", "torch"]
    probe = f"import sys; {code}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return eval(out)  # a list of names printed by the probe


def test_the_plugin_api_loads_torch_and_einops_only():
    # the package's __init__ runs first: measure pixelgen.blocks through a bare import of it
    assert loaded_after("import pixelgen.blocks") == ["torch"]


def test_loading_a_recipe_loads_no_training_storage_or_study():
    loaded = loaded_after("import pixelgen.recipe as r; r.load_recipe('recipes/quickstart.toml')")
    assert not {"pixelgen.training", "pixelgen.store", "pixelgen.study", "zarr", "PIL", "lightning_fabric",
                "matplotlib"} & set(loaded), loaded


def test_every_public_name_is_exported_lazily_and_resolves():
    import pixelgen

    assert sorted(pixelgen.__all__) == sorted(pixelgen._EXPORTS)
    for name in pixelgen.__all__:
        assert getattr(pixelgen, name).__module__ is not None


def test_the_command_line_parses_without_torch():
    loaded = loaded_after("import pixelgen.cli; pixelgen.cli.build_parser().parse_args(['run', 'x.toml'])")
    assert not {"torch", "zarr", "lightning_fabric", "pixelgen.training"} & set(loaded), loaded


def test_a_bad_checkpoint_path_answers_without_torch():
    code = ("import pixelgen.cli\ntry: pixelgen.cli.main(['eval', '/nonexistent/best.ckpt'])\n"
            "except SystemExit: pass")
    loaded = loaded_after(f"exec({code!r})")
    assert not {"torch", "zarr", "lightning_fabric", "matplotlib", "PIL", "pixelgen.training"} & set(loaded), loaded


def test_a_mistyped_recipe_key_answers_without_torch():
    code = "import pixelgen.cli; pixelgen.cli.main(['run', 'recipes/quickstart.toml', '--set', 'train.epoch=1'])"
    loaded = loaded_after(code)
    assert not {"torch", "zarr", "lightning_fabric", "matplotlib", "PIL", "pixelgen.training"} & set(loaded), loaded


def test_listing_the_plugins_loads_no_training_storage_or_study():
    loaded = loaded_after("import contextlib, io, pixelgen.cli; "
                          "contextlib.redirect_stdout(io.StringIO()).__enter__(); pixelgen.cli.main(['plugins']); "
                          "sys.stdout = sys.__stdout__")
    assert not {"pixelgen.training", *STORE_HEAVY, "zarr", "lightning_fabric", "matplotlib"} & set(loaded), loaded


def test_an_output_on_a_run_file_answers_without_torch(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"a run's own checkpoint")
    code = (f"import pixelgen.cli\ntry: pixelgen.cli.main(['quantize', 'tests/fixtures/legacy_v0_1/runs/pixelcnn/best.ckpt', "
            f"'--to', 'int8', '--out', {str(tmp_path / 'last.ckpt')!r}, '--force'])\nexcept SystemExit: pass")
    loaded = loaded_after(f"exec({code!r})")
    assert not {"torch", "zarr", "lightning_fabric", "matplotlib", "PIL", "pixelgen.training"} & set(loaded), loaded
    assert (tmp_path / "last.ckpt").read_bytes() == b"a run's own checkpoint"
