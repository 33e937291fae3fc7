"""The house reads one way: pixelgen's modules import each other at the top of files only,
without a cycle, and the plugin API (pixelgen.blocks) stands on torch and einops alone."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pixelgen"


def pixelgen_imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """``(module, at_top)`` for every import of a pixelgen module in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "pixelgen":
            names = [node.module] if node.module != "pixelgen" else [f"pixelgen.{a.name}" for a in node.names]
            found += [(name, id(node) in top) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "pixelgen"]
    return found


def module_name(path: pathlib.Path) -> str:
    return "pixelgen" if path.stem == "__init__" else f"pixelgen.{path.stem}"


MODULES = {module_name(p): p for p in sorted(PACKAGE.glob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {m if m in MODULES else m.rsplit(".", 1)[0] for m, _ in pixelgen_imports(path)}
        graph[name] = {m for m in graph[name] if m in MODULES and m != name}
    return graph


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_pixelgen_import_inside_a_function(name):
    inside = [m for m, at_top in pixelgen_imports(MODULES[name]) if not at_top]
    assert not inside, f"{name} imports {inside} inside a function: that module lives in the wrong room"


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    graph.pop("pixelgen")  # the package's __init__ re-exports; its modules never import it
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
                        lambda: {**real, "pixelgen.blocks": real["pixelgen.blocks"] | {"pixelgen.training"}})
    with pytest.raises(AssertionError, match="import cycle"):
        test_the_import_graph_has_no_cycle()


def test_no_module_but_the_cli_imports_the_cli_or_report_upwards():
    graph = import_graph()
    assert not any("pixelgen.cli" in deps for name, deps in graph.items() if name != "pixelgen.__main__")
    building_blocks = {"pixelgen.layers", "pixelgen.scans", "pixelgen.blocks", "pixelgen.errors"}
    for low in ("pixelgen.layers", "pixelgen.scans", "pixelgen.blocks", "pixelgen.sampling", "pixelgen.metrics"):
        assert graph[low] <= building_blocks, (low, graph[low])


def test_the_plugin_api_loads_torch_and_einops_only():
    code = (
        "import sys; import pixelgen.blocks; "
        "heavy = ['pixelgen.training', 'pixelgen.trainer', 'pixelgen.checkpoint', 'pixelgen.archive', "
        "'pixelgen.recipe', 'pixelgen.registry', 'pixelgen.sampling', 'zarr', 'PIL', 'lightning_fabric', 'pluggy']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    # the package's __init__ runs first: measure pixelgen.blocks through a bare import of it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_public_name_is_exported_lazily_and_resolves():
    import pixelgen

    assert sorted(pixelgen.__all__) == sorted(pixelgen._EXPORTS)
    for name in pixelgen.__all__:
        assert getattr(pixelgen, name).__module__ is not None


def test_the_command_line_parses_without_torch():
    code = ("import sys, pixelgen.cli; pixelgen.cli.build_parser().parse_args(['run', 'x.toml']); "
            "print([m for m in ('torch', 'zarr', 'lightning_fabric', 'pixelgen.training') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
