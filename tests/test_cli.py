"""The command line teaches itself: --version, examples in every --help, and the fully
resolved recipe printed as TOML that ``pixelgen run`` accepts back."""

from __future__ import annotations

import pathlib

import pytest

from pixelgen import cli
from pixelgen.recipe import load_recipe, recipe_to_dict

RECIPES = sorted((pathlib.Path(__file__).parent.parent / "recipes").glob("*.toml"))


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("pixelgen 0.")


@pytest.mark.parametrize("argv", [[], ["plugins"], ["check"], ["sample"], ["run"], ["eval"], ["compare"],
                                  ["analyse"], ["recipe", "show"]])
def test_every_help_ends_with_examples(argv, capsys):
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    text = capsys.readouterr().out
    examples = text[text.index("examples:"):]
    assert "pixelgen " in examples and text.rstrip().endswith(examples.rstrip())


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_show_prints_every_default_as_a_recipe_run_accepts(path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(path.parent.parent)
    assert cli.main(["recipe", "show", str(path.relative_to(path.parent.parent)), "--set", "train.seed=7"]) == 0
    shown = tmp_path / path.name
    shown.write_text(capsys.readouterr().out)
    assert "early_stopping_patience" in shown.read_text()  # a default the recipe never states
    again = recipe_to_dict(load_recipe(shown))
    want = recipe_to_dict(load_recipe(path.relative_to(path.parent.parent), ["train.seed=7"]))
    assert again == want
