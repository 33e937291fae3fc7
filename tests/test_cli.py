"""The command line teaches itself: --version, examples in every --help, and the fully
resolved recipe printed as TOML that ``pixelgen run`` accepts back."""

from __future__ import annotations

import pathlib

import pytest

from pixelgen import cli, registry
from pixelgen.cli.score import with_spread
from pixelgen.recipe import SampleSection, load_recipe, recipe_to_dict

RECIPES = sorted((pathlib.Path(__file__).parent.parent / "recipes").glob("*.toml"))


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("pixelgen 0.")


@pytest.mark.parametrize("argv", [[], ["plugins"], ["check"], ["sample"], ["run"], ["eval"], ["compare"],
                                  ["analyse"], ["recipe", "show"], ["compress"], ["decompress"]])
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
    assert again == with_hyperparameter_defaults(want)


def with_hyperparameter_defaults(data: dict) -> dict:
    """``recipe_to_dict``'s data with each model's declared defaults written out (but
    ``in_channels``, which the data set fills in), as ``recipe show`` writes them."""
    for run in data.get("runs", [data]):
        spec = registry.get_model_spec(run["model"]["name"])
        declared = {k: v for k, v in spec.defaults().items() if k != "in_channels" and v is not None}
        run["model"]["hyperparameters"] = {**declared, **run["model"]["hyperparameters"]}
    return data


def test_recipe_show_writes_hyperparameters_and_unset_values(capsys):
    assert cli.main(["recipe", "show", "recipes/quickstart.toml", "--set", "train.gradient_clip_norm='none'"]) == 0
    text = capsys.readouterr().out
    model = text[text.index("[model.hyperparameters]"):text.index("[data]")]
    for name in registry.get_model_spec("pixelcnn").hyperparameters:
        assert f"\n{name} = " in model or f"\n# {name} = " in model, name
    assert "\nhidden_channels = 16\n" in model and "\nkernel_size = 3\n" in model
    assert "\n# in_channels = 3 unless the data set says otherwise" in model
    for line in ('threads = "none"', 'max_steps = "none"', 'gradient_clip_norm = "none"', "# max_time = unset: "):
        assert f"\n{line}" in text, line
    shown = load_recipe("recipes/quickstart.toml", ["train.gradient_clip_norm='none'"])
    assert shown.runs[0].train.gradient_clip_norm is None


def test_a_mistyped_command_or_choice_gets_a_did_you_mean(capsys):
    for argv, hint in ((["rn", "x.toml"], "did you mean 'run'?"), (["sampel"], "did you mean 'sample'?")):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert hint in err and err.count("\n") == 1


def test_eval_split_has_help_and_sample_shows_the_recipe_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--split {test,val,train} the data split scored" in text
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    default = SampleSection()
    assert f"softmax temperature (default: {default.temperature})" in text
    assert f"(default: {default.batch_size})" in text and f"(default: {default.sampler})" in text


def test_plugins_say_manual_download_where_nothing_is_downloaded(capsys):
    assert cli.main(["plugins"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "(plugin datasets)" in line}
    for name in ("imagenet32", "imagenet64", "image_folder"):
        assert "manual download" in lines[name] and "download=" not in lines[name], lines[name]
    assert "download=True" in lines["cifar10"] and "manual" not in lines["cifar10"]


@pytest.mark.parametrize("value, spread, shown", [
    (1.53, 0.09652, "1.530 ± 0.097"), (12.0, 1.3, "12.0 ± 1.3"), (0.01234, 0.00213, "0.0123 ± 0.0021"),
    (123.456, None, "123.5"),
])
def test_a_figure_and_its_spread_share_their_decimals(value, spread, shown):
    assert with_spread(value, spread) == shown
