"""Recipes: TOML in, frozen validated attrs objects out, and back again."""

import os
import pathlib
import pickle
import textwrap
import tomllib
import typing

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pixelgen
from pixelgen import registry
from pixelgen.blocks import Hyperparameter
from pixelgen.errors import RecipeError
from pixelgen.limits import MAX_RECIPE_BYTES, MAX_RECIPE_DEPTH
from pixelgen.recipe import (
    EvalSection,
    ModelSection,
    OptimizerSection,
    OutputSection,
    Recipe,
    RunSpec,
    TrainSection,
    dump_toml,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    run_dir,
)
from pixelgen.recipe.schema import FABRIC_PRECISIONS
from pixelgen.store.runs import write_resolved

# --------------------------------------------------------------------------------------
# A fake plugin, so these tests do not depend on the built-in models and data sets.
# --------------------------------------------------------------------------------------


def tiny_model(in_channels: int = 3, n_layers: int = 2, kernel_sizes=(3, 3)):
    return object()


def other_model(hidden_channels: int = 8, n_layers: int = 1):
    return object()


def fake_digits(root, split, size: int = 8, colour: bool = False):
    return []


class FakePlugin:
    def __init__(self, datasets):
        self.datasets = datasets

    @pixelgen.hookimpl
    def pixelgen_models(self):
        return [
            pixelgen.ModelSpec("tiny_test_model", tiny_model, "a test model", hyperparameters={
                "in_channels": Hyperparameter(3, "colours"),
                "n_layers": Hyperparameter(2, "layers"),
                "kernel_sizes": Hyperparameter((3, 3), "kernel size per layer"),
            }),
            pixelgen.ModelSpec("other_test_model", other_model, "another test model", hyperparameters={
                "hidden_channels": Hyperparameter(8, "width"),
                "n_layers": Hyperparameter(1, "layers"),
            }),
        ]

    @pixelgen.hookimpl
    def pixelgen_datasets(self):
        return self.datasets


@pytest.fixture(autouse=True)
def fake_plugin():
    specs = [pixelgen.DatasetSpec("fake_digits", fake_digits, "test digits")]
    if "cifar10" not in registry.list_datasets():  # the default data.name must resolve
        specs.append(pixelgen.DatasetSpec("cifar10", fake_digits, "stand-in"))
    registry.register_plugin(FakePlugin(specs), name="test_recipe_fake")
    yield
    registry.unregister_plugin("test_recipe_fake")


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = """
[model]
name = "tiny_test_model"
"""

COMPARE = """
description = "compare two models on the same data"

[data]
name = "fake_digits"
batch_size = 8
[data.options]
size = 4

[train]
epochs = 5
[train.optimizer]
lr = 3e-4

[model.hyperparameters]
n_layers = 4

[[runs]]
name = "a"
[runs.model]
name = "tiny_test_model"
[runs.model.hyperparameters]
in_channels = 1

[[runs]]
name = "b"
[runs.model]
name = "tiny_test_model"
[runs.train]
epochs = 2
[runs.train.optimizer]
weight_decay = 0.01

[[runs]]
name = "c"
[runs.model]
name = "other_test_model"
hyperparameters = {}
"""


# --------------------------------------------------------------------------------------
# Defaults and structure
# --------------------------------------------------------------------------------------


def test_minimal_recipe_fills_defaults_from_the_attrs_classes(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.source == str(tmp_path / "exp.toml")
    assert not recipe.compare
    (run,) = recipe.runs
    assert run.name == "tiny_test_model"  # defaults to model.name
    assert run.model.hyperparameters == {}
    assert run.data == attrs.evolve(type(run.data)(), name="cifar10")
    assert run.train == TrainSection()
    assert run.train.optimizer == OptimizerSection(lr=1e-3, betas=(0.9, 0.999))
    assert run.train.precision == "32-true"
    assert run.eval.batch_size == run.data.batch_size == 16  # filled in on load
    assert run.sample.n == 16 and run.sample.tensorboard_n == 4
    assert recipe.output == OutputSection()
    assert recipe.description == ""


def test_toml_ints_become_floats_and_arrays_tuples(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + """
        [train.optimizer]
        lr = 1
        betas = [0, 0.5]
        [model.hyperparameters]
        kernel_sizes = [5, 3]
    """))
    run = recipe.runs[0]
    assert run.train.optimizer.lr == 1.0 and isinstance(run.train.optimizer.lr, float)
    assert run.train.optimizer.betas == (0.0, 0.5)
    assert all(isinstance(b, float) for b in run.train.optimizer.betas)
    assert run.model.hyperparameters["kernel_sizes"] == (5, 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [('"32"', "32"), ("32", 32), ('"bf16"', "bf16"), ('"16-mixed"', "16-mixed"),
     ('"bf16-true"', "bf16-true"), ('"transformer-engine"', "transformer-engine")],
)
def test_precision_is_passed_to_fabric_as_written(tmp_path, value, expected):
    recipe = load_recipe(write(tmp_path, MINIMAL + f"[train]\nprecision = {value}\n"))
    assert recipe.runs[0].train.precision == expected


def test_optional_fields_take_none_as_a_string(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + '[train]\ngradient_clip_norm = "none"\n'))
    assert recipe.runs[0].train.gradient_clip_norm is None


def test_recipes_are_frozen_hashable_and_picklable(tmp_path):
    recipe = load_recipe(write(tmp_path, COMPARE))
    run = recipe.runs[0]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        run.train.epochs = 3
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        recipe.runs = ()
    with pytest.raises(TypeError):
        run.model.hyperparameters["n_layers"] = 1
    assert isinstance(recipe.runs, tuple)
    assert hash(recipe) == hash(load_recipe(tmp_path / "exp.toml"))
    assert pickle.loads(pickle.dumps(recipe)) == recipe


def test_python_construction_is_validated_like_a_recipe():
    with pytest.raises(RecipeError, match=r"^TrainSection\.epochs: expected an integer in 1\.\.1,000,000"):
        TrainSection(epochs=0)
    with pytest.raises(RecipeError, match=r"^TrainSection\.precision: expected one of '32-true'"):
        TrainSection(precision="fp8")
    with pytest.raises(RecipeError, match=r"^OptimizerSection\.betas: expected an array of 2"):
        OptimizerSection(betas=(0.9,))
    assert OptimizerSection(betas=[0.5, 0.5]).betas == (0.5, 0.5)



def test_precisions_are_the_ones_fabric_accepts():
    from lightning_fabric.connector import _PRECISION_INPUT

    fabric = {value for literal in typing.get_args(_PRECISION_INPUT) for value in typing.get_args(literal)}
    assert set(FABRIC_PRECISIONS) == fabric


def test_python_construction_asks_for_python_values():
    # "none" and aliases are recipe spellings; Python is told the value to pass instead
    with pytest.raises(RecipeError, match=r"^TrainSection\.gradient_clip_norm: expected None "
                       r"\(the canonical form\), got 'none'$"):
        TrainSection(gradient_clip_norm="none")
    assert TrainSection(gradient_clip_norm=None).gradient_clip_norm is None
    with pytest.raises(RecipeError, match=r"^TrainSection\.optimizer: expected an instance of "
                       r"OptimizerSection, got \{'lr': 1\}$"):
        TrainSection(optimizer={"lr": 1})
    with pytest.raises(RecipeError, match=r"^ModelSection\.hyperparameters\.k\.1: expected a TOML"):
        ModelSection(name="x", hyperparameters={"k": [1, None]})
    with pytest.raises(RecipeError, match=r"^TrainSection\.seed: expected an integer in 0\.\.4,294,967,295, got True$"):
        TrainSection(seed=True)

# --------------------------------------------------------------------------------------
# [[runs]]
# --------------------------------------------------------------------------------------


def test_runs_are_deep_merged_over_the_shared_tables(tmp_path):
    recipe = load_recipe(write(tmp_path, COMPARE, name="cifar_compare.toml"))
    assert recipe.compare
    a, b, c = recipe.runs
    assert [r.name for r in recipe.runs] == ["a", "b", "c"]
    # shared [data] and [train] reach every run
    assert {r.data.name for r in recipe.runs} == {"fake_digits"}
    assert {r.data.batch_size for r in recipe.runs} == {8}
    assert dict(a.data.options) == {"size": 4}
    assert a.train.epochs == 5 and c.train.epochs == 5
    # a run's own keys win, and its tables merge key by key with the shared ones
    assert b.train.epochs == 2
    assert b.train.optimizer.lr == 3e-4 and b.train.optimizer.weight_decay == 0.01
    assert a.train.optimizer.weight_decay == 0.0
    assert dict(a.model.hyperparameters) == {"n_layers": 4, "in_channels": 1}
    assert dict(b.model.hyperparameters) == {"n_layers": 4}


def test_run_directories(tmp_path):
    compare = load_recipe(write(tmp_path, COMPARE, name="cifar_compare.toml"))
    assert [run_dir(compare, r) for r in compare.runs] == [
        run_dir(compare, compare.runs[0]).parent / n for n in "abc"
    ]
    assert str(run_dir(compare, compare.runs[1])) == os.path.join("runs", "cifar_compare", "b")

    single = load_recipe(
        write(tmp_path, MINIMAL + '[output]\ndir = "out/{recipe}-{model}"\n', name="mini.toml")
    )
    assert str(run_dir(single, single.runs[0])) == os.path.join("out", "mini-tiny_test_model")
    no_file = recipe_from_dict({"model": {"name": "tiny_test_model"}})
    assert str(run_dir(no_file, no_file.runs[0])) == os.path.join("runs", "recipe")


# --------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------


def test_overrides_are_parsed_as_toml_values_else_strings(tmp_path):
    recipe = load_recipe(
        write(tmp_path, MINIMAL),
        [
            "train.optimizer.lr=3e-4",
            "data.flips=true",
            "model.hyperparameters.n_layers=2",
            "train.accelerator=cpu",
            "train.devices=auto",
            "train.precision=bf16",
            "train.optimizer.betas=[0.5, 0.9]",
            "data.root=/tmp/some data",
            'description="a = b"',
            "train.gradient_clip_norm=none",
        ],
    )
    run = recipe.runs[0]
    assert run.train.optimizer.lr == 3e-4
    assert run.data.flips is True
    assert run.model.hyperparameters["n_layers"] == 2
    assert run.train.accelerator == "cpu"
    assert run.train.devices == "auto"
    assert run.train.precision == "bf16"
    assert run.train.optimizer.betas == (0.5, 0.9)
    assert run.data.root == "/tmp/some data"
    assert recipe.description == "a = b"
    assert run.train.gradient_clip_norm is None


def test_overrides_reach_shared_tables_and_single_runs(tmp_path):
    path = write(tmp_path, COMPARE)
    recipe = load_recipe(path, ["runs.1.train.epochs=3", "train.seed=7", "runs.0.name=first"])
    a, b, c = recipe.runs
    assert (a.train.epochs, b.train.epochs, c.train.epochs) == (5, 3, 5)
    assert {r.train.seed for r in recipe.runs} == {7}
    assert a.name == "first"
    # an inline table merges into the table it names
    recipe = load_recipe(path, ["runs.0={train = {epochs = 1}}", "train.optimizer={lr = 0.5}"])
    assert recipe.runs[0].name == "a" and recipe.runs[0].train.epochs == 1
    assert recipe.runs[0].model.hyperparameters["in_channels"] == 1
    assert recipe.runs[2].train.optimizer.lr == 0.5
    # an override is validated like the file itself
    with pytest.raises(RecipeError, match=r"^runs\.2\.train\.epochs: expected an integer in 1\.\.1,000,000"):
        load_recipe(path, ["runs.2.train.epochs=0"])


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [MINIMAL, COMPARE])
def test_resolved_dict_round_trips_through_toml(tmp_path, text):
    recipe = load_recipe(write(tmp_path, text), ["train.gradient_clip_norm=none"])
    resolved = recipe_to_dict(recipe)
    dumped = dump_toml(resolved)
    assert recipe_to_dict(recipe_from_dict(tomllib.loads(dumped))) == resolved
    # every default is written out
    first = resolved["runs"][0] if recipe.compare else resolved
    assert first["train"]["optimizer"]["betas"] == [0.9, 0.999]
    assert first["sample"]["sampler"] == "fast"
    assert first["eval"]["batch_size"] == first["data"]["batch_size"]
    assert resolved["output"]["dir"] == "runs/exp"  # {recipe} resolved to the file stem


def test_write_resolved_is_atomic_and_reloads_to_the_same_recipe(tmp_path):
    recipe = load_recipe(write(tmp_path, COMPARE, name="cifar_compare.toml"),
                         ["train.max_steps=9"])
    out = tmp_path / "run"
    path = write_resolved(recipe, out)
    assert path == out / "recipe.toml"
    assert os.listdir(out) == ["recipe.toml"]  # no temporary file left behind
    again = load_recipe(path)
    assert recipe_to_dict(again) == recipe_to_dict(recipe)
    assert again.runs == recipe.runs
    assert run_dir(again, again.runs[2]) == run_dir(recipe, recipe.runs[2])
    path = write_resolved(recipe, out)  # overwriting is fine too
    assert os.listdir(out) == ["recipe.toml"]


def test_write_resolved_for_one_run_reproduces_that_run(tmp_path):
    recipe = load_recipe(write(tmp_path, COMPARE, name="cifar_compare.toml"))
    b = recipe.runs[1]
    folder = tmp_path / "b"
    alone = load_recipe(write_resolved(recipe, folder, run=b))
    assert alone.runs == (b,)
    assert run_dir(alone, alone.runs[0]) == run_dir(recipe, b)


def test_dump_toml_writes_the_supported_subset():
    data = {
        "title": 'quote " backslash \\ newline \n tab \t bell \x07 é',
        "skip": None,
        "n": -3,
        "x": 1e-5,
        "flag": False,
        "values": [1, 2.5, "s", [True]],
        "empty": [],
        "table": {"a": 1, "nested": {"b": "c"}, "weird key": 2, "empty": {}},
        "items": [{"name": "one", "sub": {"k": 1}}, {"name": "two", "more": [{"z": 0}]}],
    }
    text = dump_toml(data)
    expected = {k: v for k, v in data.items() if k != "skip"}
    assert tomllib.loads(text) == expected
    with pytest.raises(TypeError, match="cannot write"):
        dump_toml({"t": object()})



def test_dump_toml_names_the_array_item_it_cannot_write():
    with pytest.raises(TypeError, match=r"^a\.1: cannot write NoneType value None as TOML$"):
        dump_toml({"a": [1, None]})
    # an array mixing tables and values is still TOML (inline tables)
    assert tomllib.loads(dump_toml({"a": [{"x": 1}, 2]})) == {"a": [{"x": 1}, 2]}

# --------------------------------------------------------------------------------------
# Errors: one line, naming the dotted key path
# --------------------------------------------------------------------------------------

BAD = [
    # (TOML appended to a valid single-run recipe, expected message prefix)
    ('[train.optimizer]\nlr = "fast"',
     "train.optimizer.lr: expected a positive number, got 'fast'"),
    ("[train.optimizer]\nlr = 0", "train.optimizer.lr: expected a positive number, got 0"),
    ("[train.optimzer]\nlr = 1", "train.optimzer: unknown key; did you mean 'optimizer'?"),
    ("[trian]\nepochs = 1", "trian: unknown key; did you mean 'train'?"),
    ("[train]\nxyzzy = 1", "train.xyzzy: unknown key; known keys of train: epochs, max_steps"),
    ("[model.hyperparameters]\nfoo = 1",
     "model.hyperparameters.foo: model 'tiny_test_model' has no hyperparameter 'foo'; "
     "available: in_channels=3, n_layers=2, kernel_sizes=(3, 3)"),
    ("[model.hyperparameters]\nn_layers = {a = 1}",
     "model.hyperparameters.n_layers: expected a TOML string, number, boolean or array"),
    ('[data]\nname = "nope"', "data.name: unknown data set 'nope'; available data sets: "),
    ('[data]\nname = "fake_digits"\n[data.options]\nsizes = 3',
     "data.options.sizes: data set 'fake_digits' has no option 'sizes'; available: size=8, colour=False"),
    ("[data]\nbatch_size = 0", "data.batch_size: expected an integer in 1..100,000, got 0"),
    ("[data]\nvalidation_fraction = 1.0",
     "data.validation_fraction: expected a number in [0, 1), got 1.0"),
    ('[data]\nflips = "yes"', "data.flips: expected true or false, got 'yes'"),
    ("[paper]\nbits_per_dim = -3.06", 'paper.bits_per_dim: expected a positive number or "none", got -3.06'),
    ("[paper]\nsource = 2", "paper.source: expected a string, got 2"),
    ("[data]\nroot = 3", "data.root: expected a string, got 3"),
    ("[train]\nepochs = 2.5", "train.epochs: expected an integer in 1..1,000,000, got 2.5"),
    ("[train]\nepochs = true", "train.epochs: expected an integer in 1..1,000,000, got True"),
    ("[train]\nmax_steps = -1", 'train.max_steps: expected an integer in 1..1,000,000,000 or "none", got -1'),
    ('[train]\nprecision = "fp8"', "train.precision: expected one of '32-true', 'bf16-mixed'"),
    ('[train]\ngradient_clip_norm = "off"',
     "train.gradient_clip_norm: expected a positive number or \"none\", got 'off'"),
    ("[train]\ndevices = 0", "train.devices: expected an integer in 1..1,024 or a string, got 0"),
    ("[train.scheduler]\nfactor = 1", "train.scheduler.factor: expected a number in (0, 1)"),
    ('[train.scheduler]\nname = "cosine"',
     "train.scheduler.name: expected one of 'plateau', 'none', got 'cosine'"),
    ("[train.optimizer]\nbetas = [0.9]", "train.optimizer.betas: expected an array of 2 items"),
    ("[train.optimizer]\nbetas = [0.9, 1.5]", "train.optimizer.betas: expected an array of 2"),
    ('[eval]\nsplit = "dev"', "eval.split: expected one of 'test', 'val', 'train', got 'dev'"),
    ("[sample]\ntop_p = 0", "sample.top_p: expected a number in (0, 1], got 0"),
    ("[sample]\nn = -1", "sample.n: expected an integer in 0..100,000, got -1"),
    ('[output]\ndir = "runs/{name}"', "output.dir: expected a path using only the {recipe}"),
    ('name = "a/b"', "name: expected a folder name"),
    ("description = 3", "description: expected a string, got 3"),
    ("train = 3", "train: expected a table, got 3"),
    ("runs = []", "runs: expected one or more [[runs]] tables"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_values_name_their_key_path(tmp_path, extra, message):
    # top-level keys must precede the [model] table in TOML
    text = extra + "\n" + MINIMAL if not extra.startswith("[") else MINIMAL + extra
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"model": {"name": "x"}})
    assert str(info.value).startswith("model.name: unknown model 'x'; available models: ")
    assert "other_test_model, " in str(info.value) and "tiny_test_model" in str(info.value)


def test_a_mistyped_model_or_data_set_name_gets_a_did_you_mean():
    with pytest.raises(RecipeError, match=r"^model.name: unknown model 'pixelcn'; did you mean 'pixelcnn'\? "):
        recipe_from_dict({"model": {"name": "pixelcn"}})
    with pytest.raises(RecipeError, match=r"^data.name: unknown data set 'cifar1'; did you mean 'cifar10'\? "):
        recipe_from_dict({"model": {"name": "pixelcnn"}, "data": {"name": "cifar1"}})


def test_every_key_is_checked_before_a_name_is_looked_up():
    """A misspelt key in a later run is found before the first run's model name, which loads
    the plugins (and torch) to look up."""
    with pytest.raises(RecipeError, match=r"^runs.1.train.epoch: unknown key"):
        recipe_from_dict({"runs": [{"name": "a", "model": {"name": "nothing_by_this_name"}},
                                   {"name": "b", "train": {"epoch": 1}}]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "model: required key is missing"),
        ({"model": {}}, "model.name: required key is missing"),
        ({"model": {"name": 3}}, "model.name: expected a string, got 3"),
        ({"runs": [{}]}, "runs.0.model: required key is missing"),
        ({"runs": [3]}, "runs.0: expected a table, got 3"),
        ({"runs": [{"modle": {}}]}, "runs.0.modle: unknown key; did you mean 'model'?"),
        ({"runs": [{"model": {"name": "tiny_test_model"}, "zzz": 1}]},
         "runs.0.zzz: unknown key; known keys of runs.0: model, name, data"),
        ({"model": {"name": "tiny_test_model"}, "runs": [{}, {}]},
         "runs.1.name: duplicate run name 'tiny_test_model' (also run 0)"),
        # a bad shared value is reported where it was written ...
        ({"train": {"epochs": 0}, "runs": [{"model": {"name": "tiny_test_model"}}]},
         "train.epochs: expected an integer in 1..1,000,000, got 0 (shared value, inherited by runs.0)"),
        ({"model": {"hyperparameters": {"kernel_sizes": [1]}},
          "runs": [{"model": {"name": "tiny_test_model"}},
                   {"model": {"name": "other_test_model"}}]},
         "model.hyperparameters.kernel_sizes: model 'other_test_model' has no hyperparameter "
         "'kernel_sizes'; available: hidden_channels=8, n_layers=1 (shared value, inherited by runs.1)"),
        # ... and a bad run value in its run
        ({"runs": [{"model": {"name": "tiny_test_model"}},
                   {"name": "b", "model": {"name": "tiny_test_model"},
                    "train": {"optimizer": {"lr": -1}}}]},
         "runs.1.train.optimizer.lr: expected a positive number, got -1"),
        ({"model": {"name": "tiny_test_model", "hyperparameters": {"n_layers": None}}},
         "model.hyperparameters.n_layers: expected a TOML string, number, boolean or array"),
    ],
)
def test_bad_dicts_name_their_key_path(data, message):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.foo=1", "--set train.foo: unknown key; known keys of train: epochs, max_steps"),
        ("train.optimzer.lr=1", "--set train.optimzer.lr: unknown key; did you mean 'optimizer'?"),
        ("trian.epochs=1", "--set trian.epochs: unknown key; did you mean 'train'?"),
        ("train.epochs", "--set train.epochs: expected KEY=VALUE"),
        ("train.epochs.x=1", "--set train.epochs.x: train.epochs is a value, not a table"),
        ("runs.0.train.epochs=1", "--set runs.0.train.epochs: the recipe has no [[runs]] tables"),
        ("train..epochs=1", "--set train..epochs: empty key segment"),
        ("train.epochs=fast", "train.epochs: expected an integer in 1..1,000,000, got 'fast'"),
        ("model.hyperparameters.bar=1", "model.hyperparameters.bar: model 'tiny_test_model' has no hyperparameter 'bar'"),
    ],
)
def test_bad_overrides_name_the_override(tmp_path, override, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, MINIMAL), [override])
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(message), str(info.value)



@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[train.optimizer]\nlr = 0", "train.optimizer.lr: expected a positive number, got 0"),
        ("[train.optimizer]\nbetas = [0.9, 1.5]", "train.optimizer.betas: expected an array of 2 "
         "items, each a number in [0, 1), got [0.9, 1.5]"),
        ("[sample]\ntop_p = 2", "sample.top_p: expected a number in (0, 1], got 2"),
        ("[train]\ndevices = [1]",
         "train.devices: expected an integer in 1..1,024 or a string, got [1]"),
    ],
)
def test_bad_values_are_quoted_as_the_recipe_wrote_them(tmp_path, extra, message):
    # ints are converted to floats and arrays to tuples before the checks run, but the
    # message quotes the value from the file
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, MINIMAL + extra))
    assert str(info.value) == message


def test_unknown_keys_are_reported_before_bad_values():
    data = {"model": {"name": "tiny_test_model"}, "train": {"epochs": 0, "xyz": 1}}
    with pytest.raises(RecipeError, match=r"^train\.xyz: unknown key; known keys of train: "):
        recipe_from_dict(data)


def _schema_keys(cls, prefix=()):
    """Dotted key tuples of every value (not table) field, walked from the attrs classes."""
    for field in attrs.fields(cls):
        tp = typing.get_type_hints(cls)[field.name]
        if field.metadata.get("internal"):
            continue
        if isinstance(tp, type) and attrs.has(tp):
            yield from _schema_keys(tp, prefix + (field.name,))
        else:
            yield prefix + (field.name,)


RUN_VALUE_KEYS = list(_schema_keys(RunSpec))


@pytest.mark.parametrize("key", RUN_VALUE_KEYS + [("output", *k) for k in _schema_keys(OutputSection)],
                         ids=".".join)
def test_every_key_refuses_a_wrong_value_naming_its_path(key):
    wrong = [{"a": 1}]  # a TOML array of tables fits no recipe value
    data = {"model": {"name": "tiny_test_model"}}
    table = data
    for part in key[:-1]:
        table = table.setdefault(part, {})
    table[key[-1]] = wrong
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    assert str(info.value).startswith(f"{'.'.join(key)}: expected "), str(info.value)
    assert str(info.value).endswith("got [{'a': 1}]") and "\n" not in str(info.value)


@pytest.mark.parametrize("key", RUN_VALUE_KEYS, ids=".".join)
def test_every_run_key_refuses_a_wrong_value_in_its_run(key):
    run = {"name": "b", "model": {"name": "tiny_test_model"}}
    table = run
    for part in key[:-1]:
        table = table.setdefault(part, {})
    table[key[-1]] = 2.5j  # no TOML value is complex
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"runs": [{"model": {"name": "tiny_test_model"}}, run]})
    assert str(info.value).startswith(f"runs.1.{'.'.join(key)}: expected "), str(info.value)

def test_run_index_out_of_range(tmp_path):
    with pytest.raises(RecipeError, match=r"^--set runs\.3\.name: runs index must be 0\.\.2"):
        load_recipe(write(tmp_path, COMPARE), ["runs.3.name=x"])


def test_file_errors_are_one_line_and_name_the_file(tmp_path):
    path = write(tmp_path, '[model]\nname = "tiny_test_model"\nlr = = 3\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    text = str(info.value)
    assert text.startswith(f"{path}: invalid TOML: ") and "line 3" in text and "\n" not in text

    missing = tmp_path / "missing.toml"
    with pytest.raises(RecipeError, match="missing.toml: no such recipe file$"):
        load_recipe(missing)
    (tmp_path / "latin1.toml").write_bytes(b'description = "\xe9"\n')
    with pytest.raises(RecipeError, match="latin1.toml: not UTF-8 text"):
        load_recipe(tmp_path / "latin1.toml")


SHIPPED = sorted(
    [*pathlib.Path(__file__).parent.parent.glob("recipes/*.toml"),
     *pathlib.Path(__file__).parent.parent.glob("examples/*/*.toml")]
)


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.name != "pyproject.toml"], ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    if "gated" in path.name and "gated_pixelcnn" not in registry.list_models():
        pytest.skip("the example plugin pixelgen-gated is not installed")
    recipe = load_recipe(path)
    assert recipe.runs and all(run.model.name in registry.list_models() for run in recipe.runs)
    assert recipe.description


def test_paper_recipes_carry_table_1_and_say_where_they_depart_from_the_paper():
    base = pathlib.Path(__file__).parent.parent / "recipes"
    figures = {"cifar_pixelcnn.toml": (15, "3.14"), "cifar_row.toml": (12, "3.07"), "cifar_diag.toml": (12, "3.00")}
    for name, (depth, figure) in figures.items():
        (run,) = load_recipe(base / name).runs
        hyper = {**registry.get_model_spec(run.model.name).defaults(), **run.model.hyperparameters}
        assert (hyper["n_layers"], hyper["hidden_channels"], hyper["head_channels"]) == (depth, 128, 1024)
        assert hyper["residual"] and run.data.name == "cifar10" and run.data.validation_fraction == 0.1
        assert not run.data.flips  # the paper uses no augmentation
        # The project's training protocol, each part named as a departure in the comments:
        assert run.train.optimizer.lr == 1e-3 and run.train.scheduler.name == "plateau"
        assert run.train.early_stopping_patience == 10
        comments = "\n".join(line for line in (base / name).read_text().splitlines() if line.startswith("#"))
        said = [figure, "table 5", "section 4", "section 3.3", "section 3.4", "RMSProp", "plateau"]
        said += ["clipping"] if run.train.gradient_clip_norm else []
        said += ["weight decay"] if run.train.optimizer.weight_decay else []
        for words in said:
            assert words in comments, f"{name}: the comments do not say {words!r}"
    assert [r.model.name for r in load_recipe(base / "cifar_compare.toml").runs] == [
        "pixelcnn", "row_lstm", "diagonal_bilstm"]



def test_the_table_2_and_3_recipes_vary_one_thing_and_name_the_table_cell_of_each_run():
    base = pathlib.Path(__file__).parent.parent / "recipes"
    table2 = load_recipe(base / "cifar_table2.toml").runs
    connections = [(r.model.hyperparameters["residual"], r.model.hyperparameters["skip"]) for r in table2]
    assert sorted(connections) == [(False, False), (False, True), (True, False), (True, True)]
    table3 = load_recipe(base / "cifar_table3.toml").runs
    assert [r.model.hyperparameters["n_layers"] for r in table3] == [1, 2, 3, 6, 9, 12]
    assert all(r.model.hyperparameters["residual"] and r.model.hyperparameters["skip"] for r in table3)
    for table, runs in (("table 2", table2), ("table 3", table3)):
        for run in runs:
            assert run.model.name == "row_lstm" and run.data.name == "cifar10" and not run.data.flips
            assert (run.model.hyperparameters["hidden_channels"], run.model.hyperparameters["head_channels"]) == (128, 1024)
            assert run.paper.source.startswith(f"Pixel RNN, {table}") and "CIFAR-10 validation" in run.paper.source
    small2, small3 = load_recipe(base / "fmnist_ablation.toml").runs, load_recipe(base / "fmnist_depth.toml").runs
    assert {r.model.name for r in small2 + small3} == {"row_lstm"}
    assert [r.model.hyperparameters["n_layers"] for r in small3] == [1, 2, 4, 8]

@pytest.mark.parametrize("name, model, hyper, dataset, figure", [
    ("mnist_binarized.toml", "diagonal_bilstm",
     {"hidden_channels": 16, "n_layers": 7, "head_channels": 32, "residual": True, "n_levels": 2},
     "binarized_mnist_static", "79.20 nats"),
    ("imagenet32.toml", "row_lstm",
     {"hidden_channels": 384, "n_layers": 12, "head_channels": 1024, "residual": True, "n_levels": 256},
     "imagenet32", "3.86 bits/dim"),
    ("imagenet64.toml", "row_lstm",
     {"hidden_channels": 512, "n_layers": 4, "head_channels": 1024, "residual": False, "n_levels": 256},
     "imagenet64", "3.63 bits/dim"),
])
def test_the_other_paper_recipes_carry_section_4_and_say_where_they_depart(name, model, hyper, dataset, figure):
    path = pathlib.Path(__file__).parent.parent / "recipes" / name
    (run,) = load_recipe(path).runs
    resolved = {**registry.get_model_spec(run.model.name).defaults(), **run.model.hyperparameters}
    assert run.model.name == model and {k: resolved[k] for k in hyper} == hyper
    assert run.data.name == dataset and not run.data.flips  # no augmentation (section 5.2)
    assert run.data.batch_size in (16, 32)
    comments = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for said in (figure, "section 4", "section 3.3", "section 3.4", "RMSProp", "plateau", "clipping",
                 "weight decay", "flips"):
        assert said in comments, f"{name}: the comments do not say {said!r}"


def test_the_binarized_fashion_mnist_check_is_a_two_level_run_on_thresholded_data():
    (run,) = load_recipe(pathlib.Path(__file__).parent.parent / "recipes" / "fmnist_binarized.toml").runs
    assert run.model.hyperparameters["n_levels"] == 2 and run.data.options == {"binarize": True}
    assert run.train.accelerator == "cpu" and run.data.limit_train <= 5000


# ------------------------------------------------------------------------------ hostile files


def hostile_paths(tmp_path):
    """Paths a recipe argument can name that are no recipe: each must be refused in one line."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * MAX_RECIPE_BYTES + "\n")
    deep_toml = tmp_path / "deep.toml"
    deep_toml.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    deep_value = write(tmp_path, '[model]\nname = "tiny_test_model"\n[model.hyperparameters]\nn_layers = '
                       + "[" * (MAX_RECIPE_DEPTH + 5) + "]" * (MAX_RECIPE_DEPTH + 5) + "\n", "deep_value.toml")
    return {"fifo": (fifo, "not a regular file"), "device": (pathlib.Path("/dev/zero"), "not a regular file"),
            "folder": (tmp_path, "is a folder"), "big": (big, "a recipe is at most"),
            "deep toml": (deep_toml, "nested too deeply"), "deep value": (deep_value, "nested more than")}


def test_a_hostile_recipe_file_is_refused_in_one_line_without_reading_it_all(tmp_path, fake_plugin):
    for what, (path, needle) in hostile_paths(tmp_path).items():
        with pytest.raises(RecipeError, match=needle) as caught:
            load_recipe(path)
        assert "\n" not in str(caught.value), what


def test_a_deeply_nested_override_is_refused_in_one_line(tmp_path, fake_plugin):
    path = write(tmp_path, '[model]\nname = "tiny_test_model"\n')
    for depth in (MAX_RECIPE_DEPTH + 1, 5000):
        with pytest.raises(RecipeError, match="nested"):
            load_recipe(path, [f"model.hyperparameters.n_layers={'[' * depth}{']' * depth}"])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(value=st.recursive(st.integers() | st.text(max_size=3) | st.booleans(),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                     max_size=3),
                          max_leaves=60))
def test_any_nested_value_in_a_recipe_loads_or_is_one_recipe_error(value):
    """Generated TOML-like values at every key path a user can write: the recipe loads, or
    one RecipeError names the problem; nothing else escapes."""
    for data in ({"model": {"name": "pixelcnn", "hyperparameters": {"n_layers": value}}},
                 {"train": {"optimizer": value}}, {"data": {"options": {"x": value}}}, {"runs": value}):
        try:
            recipe_from_dict(data)
        except RecipeError as exc:
            assert "\n" not in str(exc)
