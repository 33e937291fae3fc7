"""Every number a user can write has a range, checked before any work (issue 21, item 5): a
recipe key, a model hyperparameter, ``pixelgen sample --size`` and an image to complete."""

import os
import pathlib
import subprocess
import sys
import time
import typing

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import pixelgen
from pixelgen.cli import build_parser
from pixelgen.cli import main as cli_main
from pixelgen.errors import RecipeError
from pixelgen.limits import (
    MAX_HYPERPARAMETER, MAX_IMAGE_SIDE, MAX_MEASURE_SIDE, MAX_MIXTURES, MAX_SAMPLES, MAX_SCALING_POINTS, MAX_SEED,
)
from pixelgen.recipe import load_recipe, recipe_from_dict
from pixelgen.recipe.schema import RunSpec
from pixelgen.registry import get_model_spec
from pixelgen.sampling import SamplingError
from pixelgen.store.images import read_image
from pixelgen.training.plan import build_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.toml"


def numeric_keys(cls: type = RunSpec, prefix: tuple = ()) -> list[tuple[str, ...]]:
    """The key paths of every field of the recipe schema that takes a number."""
    keys = []
    for field in attrs.fields(cls):
        if attrs.has(field.type):
            keys += numeric_keys(field.type, prefix + (field.name,))
        elif {int, float} & set(typing.get_args(field.type) or (field.type,)):
            keys.append(prefix + (field.name,))
    return keys


NUMERIC_KEYS = numeric_keys() + [("model", "hyperparameters", name)
                                 for name in get_model_spec("pixelcnn").hyperparameters]


def test_the_walk_finds_the_keys_of_the_issue():
    for key in ("train.seed", "sample.seed", "score.seed", "sample.n", "score.n", "data.batch_size",
                "train.epochs", "train.max_steps", "data.limit_train", "model.hyperparameters.n_layers"):
        assert tuple(key.split(".")) in NUMERIC_KEYS


def nested(path: tuple[str, ...], value: object) -> dict:
    data: dict = {"model": {"name": "pixelcnn"}}
    table = data
    for key in path[:-1]:
        table = table.setdefault(key, {})
    table[path[-1]] = value
    return data


@settings(max_examples=300, deadline=None, derandomize=True)
@given(key=st.sampled_from(NUMERIC_KEYS),
       value=st.integers() | st.sampled_from([-1, 0, 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**70, 10**9, 10**400]))
def test_any_integer_at_a_numeric_key_loads_or_is_one_line_naming_the_key(key, value):
    try:
        recipe_from_dict(nested(key, value))
    except RecipeError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith(".".join(key) + ":"), str(exc)


@pytest.mark.parametrize("key", ["train.seed", "sample.seed", "score.seed"])
def test_seeds_are_what_every_generator_accepts(key):
    for good in (0, MAX_SEED):
        recipe_from_dict(nested(tuple(key.split(".")), good))
    for bad in (-1, MAX_SEED + 1, 2**70):
        with pytest.raises(RecipeError, match=rf"^{key}: expected an integer in 0\.\.4,294,967,295, got {bad}$"):
            recipe_from_dict(nested(tuple(key.split(".")), bad))


def test_seed_everything_accepts_the_largest_seed_and_refuses_one_more():
    from lightning_fabric.utilities.seed import seed_everything

    assert seed_everything(MAX_SEED, verbose=False) == MAX_SEED
    with pytest.raises(ValueError):
        seed_everything(MAX_SEED + 1, verbose=False)


def test_the_hyperparameter_rule_reads_only_the_default():
    from pixelgen.blocks import Hyperparameter

    width, switch = Hyperparameter(128, "a width"), Hyperparameter(0, "an off switch")
    assert width.refuses(1) is None and width.refuses(MAX_HYPERPARAMETER) is None
    assert switch.refuses(0) is None
    for bad in (0, -1, MAX_HYPERPARAMETER + 1, 2.0, True, "8"):
        assert width.refuses(bad) == f"an integer in 1..{MAX_HYPERPARAMETER:,}"
    assert Hyperparameter("row_lstm", "a name").refuses(-1) is None
    assert Hyperparameter(True, "a switch").refuses(5) is None


def test_a_model_too_large_to_allocate_is_refused_before_it_is_built():
    run = load_recipe(QUICKSTART, ["model.hyperparameters.hidden_channels=16384",
                                   "model.hyperparameters.n_layers=100"]).runs[0]
    start = time.perf_counter()
    with pytest.raises(RecipeError, match=r"^model\.hyperparameters: '\w+' would have [\d,]+ parameters, more than"):
        build_model(run, (3, 32, 32), 10)
    assert time.perf_counter() - start < 30


def cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pixelgen.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, needle", [
    ("train.seed=-1", "train.seed: expected an integer in 0..4,294,967,295, got -1"),
    (f"train.seed={2**70}", f"train.seed: expected an integer in 0..4,294,967,295, got {2**70}"),
    ("model.hyperparameters.hidden_channels=-1", "model.hyperparameters.hidden_channels: expected an integer in 1.."),
    (f"model.hyperparameters.hidden_channels={10**9}", "model.hyperparameters.hidden_channels: expected"),
    (f"model.hyperparameters.n_layers={10**8}", "model.hyperparameters.n_layers: expected an integer in 1.."),
    (f"sample.n={10**9}", "sample.n: expected an integer in 0..100,000, got 1000000000"),
])
def test_the_issue_cases_through_the_cli_are_one_line_and_write_nothing(tmp_path, override, needle):
    out = tmp_path / "out"
    out.mkdir()
    start = time.perf_counter()
    done = cli("run", str(QUICKSTART), "--set", override, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"pixelgen: error: {needle}"] or (
        len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr), done.stderr
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert time.perf_counter() - start < 60


def test_sample_size_and_seed_are_bounded_on_the_command_line(tmp_path):
    checkpoint = ROOT / "tests" / "fixtures" / "diagonal_v0_2" / "runs" / "best.ckpt"
    for args, needle in ((["--size", f"{MAX_IMAGE_SIDE + 1}x8"], "--size: expected sides of at most 1024"),
                         (["--seed", str(MAX_SEED + 1)], "--seed: expected a seed in 0..4,294,967,295"),
                         (["-n", str(10**9)], "expected a number of images in 1..100,000")):
        done = cli("sample", str(checkpoint), *args, "--png", str(tmp_path / "s.png"), cwd=tmp_path)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert needle in done.stderr
        assert list(tmp_path.iterdir()) == []


def test_an_image_to_complete_over_the_limits_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (MAX_IMAGE_SIDE + 1, 2)).save(tmp_path / "wide.png")
    with pytest.raises(SamplingError, match=r"wide\.png: the image to complete is 2x1025; sides of at most 1024"):
        read_image(tmp_path / "wide.png", 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for side in (12, 20):  # PIL warns above MAX_IMAGE_PIXELS, raises above twice that
        Image.new("L", (side, side)).save(tmp_path / f"{side}.png")
        with pytest.raises(SamplingError, match=r"decompression bomb") as caught:
            read_image(tmp_path / f"{side}.png", 1)
        assert "\n" not in str(caught.value)


def test_every_route_to_a_model_shares_the_hyperparameter_rule():
    """pixelgen.create_model (and so `pixelgen check --hp`, Python, a recipe) refuses a
    width or depth outside the shared rule before anything is built."""
    for bad in ({"n_layers": 10**8}, {"hidden_channels": -1}, {"head_channels": 0}):
        with pytest.raises(pixelgen.PixelgenError, match="expected an integer in 1"):
            pixelgen.create_model("pixelcnn", **bad)
    assert cli_main(["check", "pixelcnn", "--hp", "n_layers=100000000"]) == 2


@pytest.mark.parametrize("n_mixtures", [0, -3, MAX_MIXTURES + 1, 10**9, 2.5, True])
def test_a_likelihood_option_out_of_range_is_one_line_before_anything_is_allocated(n_mixtures):
    """A mixture of 10**9 logistics was an allocator traceback: the option has a range."""
    choice = {"name": "logistic_mixture", "n_mixtures": n_mixtures}
    expected = rf"n_mixtures must be an integer in 1\.\.{MAX_MIXTURES}"
    with pytest.raises(pixelgen.PixelgenError, match=expected) as caught:
        pixelgen.create_model("pixelcnn", hidden_channels=4, n_layers=1, head_channels=4, likelihood=choice)
    assert "\n" not in str(caught.value)
    toml_value = str(n_mixtures).lower()  # True -> true
    assert cli_main(["check", "pixelcnn", "--hp", f"likelihood={{name='logistic_mixture', n_mixtures={toml_value}}}"]) == 2


def test_the_largest_mixture_builds():
    model = pixelgen.create_model("pixelcnn", hidden_channels=4, n_layers=1, head_channels=4,
                                  likelihood={"name": "logistic_mixture", "n_mixtures": MAX_MIXTURES})
    assert model.likelihood.n_mixtures == MAX_MIXTURES


MEASURE_AND_SAMPLE_BOUNDS = [  # (command, option, low, high)
    ("compare", "--field-size", 1, MAX_MEASURE_SIDE),
    ("compare", "--scaling-sizes", 1, MAX_MEASURE_SIDE),
    ("analyse", "--scaling-depths", 1, MAX_HYPERPARAMETER),
    ("analyse", "--timing-images", 1, MAX_SAMPLES),
    ("sample", "--label", 0, MAX_HYPERPARAMETER - 1),
    ("sample", "--rows", 1, MAX_IMAGE_SIDE),
]


@pytest.mark.parametrize("command, option, low, high", MEASURE_AND_SAMPLE_BOUNDS)
def test_measurement_and_sample_options_have_ranges(tmp_path, capsys, command, option, low, high):
    """Each bound itself parses; one past either end is one line naming the option and its
    range, before anything is read or measured."""
    target = str(tmp_path / "run" / "best.ckpt")
    pathlib.Path(target).parent.mkdir()
    pathlib.Path(target).write_bytes(b"")
    first = [command, target if command != "compare" else str(tmp_path / "run")]
    for value in (low, high):
        assert getattr(build_parser().parse_args([*first, option, str(value)]), option[2:].replace("-", "_")) in (
            value, [value])
    for value in (low - 1, high + 1):
        with pytest.raises(SystemExit) as usage:  # argparse's usage error
            cli_main([*first, option, str(value)])
        assert usage.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"argument {option}: expected" in err and f"{low}..{high:,}" in err, err


@pytest.mark.parametrize("option", ["--scaling-sizes", "--scaling-depths"])
def test_a_scaling_sweep_has_at_most_its_points(tmp_path, capsys, option):
    run = tmp_path / "run"
    run.mkdir()
    assert cli_main(["compare", str(run), option, *["2"] * (MAX_SCALING_POINTS + 1)]) == 2
    err = capsys.readouterr().err
    assert err == f"pixelgen: error: {option}: {MAX_SCALING_POINTS + 1} values; a sweep times at most {MAX_SCALING_POINTS}\n"
    assert list(run.iterdir()) == [] and not (tmp_path / "report").exists()
