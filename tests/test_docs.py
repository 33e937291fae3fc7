"""The generated reference pages cover the code: every recipe key, every CLI option.

``docs/make_reference.py`` generates the reference pages' text when the docs are built
(``docs/conf.py`` puts it in place of each page's ``{generated}`` block as Sphinx reads
the page; nothing is written into ``docs/``); these tests check that text against
independent walks of the code, so that a new recipe key without ``help`` metadata, or a
subcommand the page misses, fails here and not only in the Sphinx build (which CI runs
through ``.ci/run``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import attrs
import pytest

import pixelgen
from pixelgen import recipe, registry
from pixelgen.cli import build_parser
from pixelgen.store import archive

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load_docs_script(name: str):
    """``docs/<name>.py``, imported as conf.py does: without leaving a docs/__pycache__."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    dont_write_before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write_before
    return module


make_reference = load_docs_script("make_reference")


# ------------------------------------------------------------------------------ recipe


def schema_fields() -> dict[str, attrs.Attribute]:
    """Every recipe key -> its attrs field, walked from :class:`pixelgen.recipe.Recipe`.

    Tables nest with dotted keys; the fields of a ``[[runs]]`` element are run keys,
    written without prefix (they are valid at the top level and inside each run).
    """
    out: dict[str, attrs.Attribute] = {}

    def walk(cls: type, prefix: str) -> None:
        for field in attrs.fields(attrs.resolve_types(cls)):
            if field.metadata.get("internal"):
                continue
            key = prefix + field.name
            out[key] = field
            if attrs.has(field.type):
                walk(field.type, key + ".")
            elif typing.get_origin(field.type) is tuple:
                element = typing.get_args(field.type)[0]
                if attrs.has(element):
                    walk(element, prefix)

    walk(recipe.Recipe, "")
    return out


def recipe_entries(page: str) -> dict[str, str]:
    """``recipe-key`` directive argument -> its body, from the generated page."""
    return dict(re.findall(r"^```\{recipe-key\} (\S+)\n(.*?)^```$", page, flags=re.M | re.S))


def plain(text: str) -> str:
    """Rendered text, roughly: Markdown escapes and code-span backticks removed, whitespace collapsed."""
    return " ".join(re.sub(r"\\(.)", r"\1", text.replace("`", "")).split())


def test_field_reference_rows_cover_every_field():
    rows = make_reference.field_reference()
    keys = [row[0] for row in rows]
    assert sorted(keys) == sorted(schema_fields())
    assert len(set(keys)) == len(keys)
    assert all(len(row) == 4 and all(isinstance(x, str) for x in row) for row in rows)
    by_key = {row[0]: row for row in rows}
    assert by_key["train.optimizer.lr"][1:3] == ("float (a positive number)", "0.001")
    assert by_key["data.root"][2] == "unset"
    assert by_key["model.name"][2] == "required"
    assert by_key["eval.split"][1] == '"test" | "val" | "train"'
    # Recipe.source is bookkeeping, not a recipe key
    assert [f.name for f in attrs.fields(recipe.Recipe)] == ["runs", "description", "output", "report", "source"]
    assert by_key["report.scaling"][1:3] == ("bool", "false")


def test_every_recipe_field_has_help():
    missing = [key for key, field in schema_fields().items() if not field.metadata.get("help")]
    assert not missing, f"recipe fields without help metadata (the docs need it): {missing}"


def test_recipe_reference_lists_every_field_and_no_other():
    entries = recipe_entries(make_reference.recipe_reference())
    fields = schema_fields()
    assert sorted(set(fields) - set(entries)) == [], "recipe keys missing from the reference"
    assert sorted(set(entries) - set(fields)) == [], "reference entries that are not recipe keys"


def test_recipe_reference_gives_each_fields_help_and_default():
    entries = recipe_entries(make_reference.recipe_reference())
    for key, field in schema_fields().items():
        body = entries[key]
        assert plain(field.metadata["help"]) in plain(body), key
        default = field.default
        if typing.get_origin(field.type) is tuple and attrs.has(typing.get_args(field.type)[0]):
            continue  # [[runs]]: optional in a file; a single-run recipe has none
        if default is attrs.NOTHING:
            assert "required" in body, key
        elif default is None:
            assert "default: unset" in body, key
        elif isinstance(default, (bool, int, float, str, tuple)):
            shown = re.search(r"default: `([^`]*)`", body)
            assert shown, f"{key}: no default shown"
            value = tomllib.loads(f"v = {shown.group(1)}")["v"]
            assert value == (list(default) if isinstance(default, tuple) else default), key


def test_recipe_reference_groups_keys_under_their_tables():
    page = make_reference.recipe_reference()
    for key, field in schema_fields().items():
        if attrs.has(field.type):
            assert f"## `[{key}]`" in page, f"no section for the table [{key}]"


# ------------------------------------------------------------------------------ CLI


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def cli_sections(page: str) -> dict[str, str]:
    """Subcommand -> its section of the generated page."""
    parts = re.split(r"^\(pixelgen-([\w-]+)\)=$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_cli_reference_covers_every_subcommand():
    page = make_reference.cli_reference()
    commands = subcommands(build_parser())
    assert commands, "pixelgen has no subcommands?"
    sections = cli_sections(page)
    assert sorted(sections) == sorted(commands)
    for name in commands:
        assert f"```{{program}} pixelgen {name}\n" in sections[name]
        assert f"[`pixelgen {name}`](#pixelgen-{name})" in page, f"{name} missing from the command list"


def test_cli_reference_lists_every_argument_of_every_subcommand():
    sections = cli_sections(make_reference.cli_reference())
    for name, sub in subcommands(build_parser()).items():
        options = re.findall(r"^```\{option\} (.+)$", sections[name], flags=re.M)
        documented = {word for line in options for word in re.split(r"[ ,]+", line)}
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            for option in names:
                assert option in documented, f"pixelgen {name}: {option} is not documented"
            if action.help:
                section = plain(sections[name])
                assert plain(action.help.split("%(")[0]).lower()[:40] in section.lower(), (name, option)


def test_cli_reference_shows_long_options_as_typed_and_each_description_once():
    """``--hp`` in prose is a code span (Sphinx's smartquotes makes an en dash of bare ``--``),
    and a command whose description is its help line says it once."""
    page = make_reference.cli_reference()
    prose = [line for line in page.splitlines() if not line.startswith(("```", "usage:", " "))]
    bare = [line for line in prose if re.search(r"(?<![`\w-])--[A-Za-z]", re.sub(r"`[^`]*`", "", line))]
    assert not bare, bare[:3]
    assert r"`--hp` n\_layers=2" in page
    for name, section in cli_sections(page).items():
        help_line = next(line for line in section.splitlines()[3:] if line.strip())
        assert section.count(help_line) == 1, (name, help_line)


def test_cli_reference_uses_the_given_parser():
    parser = argparse.ArgumentParser(prog="pixelgen")
    sub = parser.add_subparsers()
    extra = sub.add_parser("extra", help="an extra command")
    extra.add_argument("--flag", action="store_true", help="a flag")
    page = make_reference.cli_reference(parser)
    assert list(cli_sections(page)) == ["extra"]
    assert "```{option} --flag\nA flag.\n```" in page


# ------------------------------------------------------------------------------ others


def test_archive_reference_lists_the_layout():
    page = make_reference.archive_reference()
    for path in archive.LAYOUT:
        assert f"`{path}`" in page, path
    assert repr(archive.FORMAT) in page


def test_hyperparameter_table_has_every_paper_hyperparameter():
    table = make_reference.hyperparameter_table()
    for name in make_reference.PAPER_MODELS:
        assert f"`{name}`" in table
        for key, default in registry.get_model_spec(name).defaults().items():
            assert f"`{key}`" in table
            assert f"`{default!r}`" in table


def test_multiscale_hyperparameters_are_listed_with_their_defaults():
    table = make_reference.model_hyperparameters("multiscale")
    for key, hp in registry.get_model_spec("multiscale").hyperparameters.items():
        assert f"`{key}`" in table and f"`{hp.default!r}`" in table, key


def test_every_module_has_an_api_page_or_is_listed_as_pending():
    modules = {
        info.name
        for info in pkgutil.walk_packages(pixelgen.__path__, "pixelgen.")
        if not info.name.rpartition(".")[2].startswith("_")
    }
    listed = set(make_reference.API_MODULES) | set(make_reference.API_PENDING)
    assert sorted(modules - listed) == [], "add these modules to API_MODULES in docs/make_reference.py"
    assert sorted(set(make_reference.API_MODULES) - modules - {"pixelgen"}) == []


def test_public_names_are_found_where_they_are_documented():
    pytest.importorskip("sphinx")
    names = make_reference.public_names()
    assert set(names) == set(pixelgen.__all__)
    for name, module in names.items():
        assert module in make_reference.API_MODULES, f"pixelgen.{name} is defined in {module}"
    assert names["hookimpl"] == "pixelgen.registry.hookspecs"


# ------------------------------------------------------------------------------ pages


def doc_pages() -> dict[str, str]:
    """Every MyST page of the docs, by its path under ``docs/``."""
    return {
        path.relative_to(DOCS).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(DOCS.rglob("*.md"))
        if "_build" not in path.relative_to(DOCS).parts
    }


def test_every_generated_block_is_well_formed_and_generates():
    blocks = {}
    for page, text in doc_pages().items():
        opened = re.findall(r"^```\{generated\}.*$", text, flags=re.M)
        found = make_reference.GENERATED_BLOCK.findall(text)
        assert len(found) == len(opened), f"docs/{page}: a {{generated}} block that is not one line and a fence"
        for name, argument in found:
            assert make_reference.generate(name, argument or None).strip(), (page, name, argument)
            blocks[(name, argument)] = page
    expected = {("recipe", ""): "reference/recipe.md", ("cli", ""): "reference/cli.md",
                ("archive", ""): "reference/archive.md", ("hyperparameters", ""): "models.md",
                ("api-index", ""): "api/index.md"}
    for block, page in expected.items():
        assert blocks.get(block) == page, f"{block} should be generated in docs/{page}"
    with pytest.raises(ValueError, match="no such generator"):
        make_reference.expand("```{generated} nothing\n```\n")


def test_every_api_module_has_its_page_and_no_other():
    pages = {p: t for p, t in doc_pages().items() if p.startswith("api/")}
    expected = {f"api/{m}.md": f"```{{generated}} api {m}\n```\n" for m in make_reference.API_MODULES}
    expected["api/index.md"] = "```{generated} api-index\n```\n"
    assert sorted(set(expected) - set(pages)) == [], "create these pages, each holding its one block"
    assert sorted(set(pages) - set(expected)) == [], "pages of modules not in API_MODULES"
    for page, text in expected.items():
        assert pages[page] == text, page
    index = make_reference.api_index()
    assert all(f"\n{m}\n" in index for m in make_reference.API_MODULES)


def test_generated_figures_are_known_drawings():
    drawings = load_docs_script("make_figures").DRAWERS
    shown = [(page, name) for page, text in doc_pages().items()
             for name in re.findall(r"^```\{generated-figure\} (\S+)$", text, flags=re.M)]
    assert len(shown) == 3
    for page, name in shown:
        assert name in drawings, (page, name)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` with its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_building_the_docs_writes_nothing_into_docs(tmp_path):
    """A whole build (reading every page, generating every reference page and figure)
    into a folder outside ``docs/`` leaves ``docs/`` exactly as it was, with Python
    allowed to write bytecode as it would on a reader's machine."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    before = snapshot(DOCS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "dummy", str(DOCS), str(tmp_path / "out")],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted((tmp_path / "out" / ".doctrees" / "figures").iterdir())  # the figures were drawn, outside docs/
    assert snapshot(DOCS) == before


@pytest.mark.slow
def test_the_readme_first_steps_run_as_written(tmp_path):
    """The README's first Python block, exactly as written, in a folder holding the recipes:
    it trains, and its run folder holds the figures (benchmarks/readme_first_steps.py times it)."""
    readme = (DOCS.parent / "README.md").read_text()
    code = re.search(r"^```python\n(.*?)^```", readme, re.S | re.M).group(1)
    shutil.copytree(DOCS.parent / "recipes", tmp_path / "recipes")
    subprocess.run([sys.executable, "-c", code + "\nassert results[0]['bits_per_dim'] > 0\n"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=600)
    assert (tmp_path / "runs" / "first" / "metrics.json").is_file()
