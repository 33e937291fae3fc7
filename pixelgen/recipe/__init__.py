"""Recipes: declarative TOML files that say what to train, on what, and how.

A recipe is data. :func:`load_recipe` parses the TOML with :mod:`tomllib`, applies
``--set dotted.key=value`` overrides, and structures the result with ``cattrs`` into
the frozen attrs classes below, whose validators check every value. Any problem is a
one-line :class:`~pixelgen.errors.RecipeError` that starts with the dotted key path::

    train.optimizer.lr: expected a positive number, got 'fast'

Defaults live in one place, the attrs classes. :func:`recipe_to_dict` writes every value
back out, defaults included, and :func:`pixelgen.store.runs.write_resolved` stores that in each run directory
(as TOML, written by ``tomli_w``) so that a run can be reproduced from its outputs alone.

A recipe describes either one run, with the top-level tables ``[model] [data] [train]
[eval] [sample] [output]``, or several runs to compare, with ``[[runs]]`` tables whose
``model``/``data``/``train``/``eval``/``sample``/``score`` tables are deep-merged over the top-level
ones (which then act as shared defaults)::

    [data]
    name = "cifar10"
    [train]
    epochs = 20

    [[runs]]
    name = "pixelcnn"
    [runs.model]
    name = "pixelcnn"

    [[runs]]
    name = "row_lstm"
    [runs.model]
    name = "row_lstm"
    [runs.train]
    epochs = 10
"""

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import cattrs.gen
import tomli_w
from attrs.validators import (
    and_,
    deep_iterable,
    ge,
    gt,
    in_,
    instance_of,
    le,
    lt,
    max_len,
    min_len,
    optional,
    or_,
)

from pixelgen import registry
from pixelgen.errors import RecipeError
from pixelgen.limits import MIN_TEMPERATURE

__all__ = [
    "DataSection", "EvalSection", "FrozenTable", "ModelSection", "OptimizerSection",
    "OutputSection", "PaperSection", "Recipe", "RunSpec", "SampleSection", "SchedulerSection", "ScoreSection",
    "TrainSection",
    "apply_override", "dump_toml", "field_reference", "load_recipe", "recipe_from_dict",
    "recipe_to_dict", "run_dir", "single_run", "write_resolved",
]

KeyPath = tuple  # str keys and int indices into arrays


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and attrs.has(tp)


def _is_free_table(tp: Any) -> bool:
    return tp is dict or tp is Mapping or typing.get_origin(tp) in (dict, Mapping)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _takes_none_string(tp: Any) -> bool:
    """TOML has no null: optional non-string fields take the string "none" for unset."""
    members = typing.get_args(tp)
    return type(None) in members and str not in members


def _is_none_string(tp: Any, value: Any) -> bool:
    return _takes_none_string(tp) and isinstance(value, str) and value.lower() == "none"


def _alias(aliases: Mapping[str, str], value: Any) -> str | None:
    """The choice ``value`` is an alias of (TOML numbers included), if it is one."""
    key = str(value) if _is_number(value) else value
    return aliases.get(key) if isinstance(key, str) else None


def _public_fields(cls: type) -> list[attrs.Attribute]:
    return [f for f in attrs.fields(cls) if not f.metadata.get("internal")]


# --------------------------------------------------------------------------------------
# Checks on numbers and strings (field metadata "check").
# --------------------------------------------------------------------------------------


@attrs.frozen
class _Check:
    """attrs validators for a field's numbers (or strings), and what they accept in words:
    ``phrase`` for errors (``{a} {noun}`` becomes "an integer" or "a number"), ``short``
    for the docs."""

    validators: tuple[Any, ...]
    phrase: str
    short: str
    nouns: tuple[str, ...] = ("number", "integer")

    def words(self, noun: str) -> str:
        article = "an" if noun == "integer" else "a"
        return self.phrase.replace("{a}", article).replace("{noun}", noun)


def _interval(low: float, high: float, left: str, right: str) -> _Check:
    """A range check, e.g. ``_interval(0, 1, "[", ")")`` for 0 <= x < 1 (NaN fails it)."""
    text = f"in {left}{low}, {high}{right}"
    bounds = ((ge if left == "[" else gt)(low), (le if right == "]" else lt)(high))
    return _Check(bounds, "{a} {noun} " + text, text)


def _string_check(test: Callable[[str], bool], phrase: str, short: str) -> _Check:
    def validator(instance: Any, attribute: attrs.Attribute, value: str) -> None:
        if not test(value):
            raise ValueError(phrase)

    return _Check((validator,), phrase, short, ("string",))


def duration_seconds(value: float | str | None) -> float | None:
    """A time budget in seconds: a number of seconds, or ``"[DD:]HH:MM:SS"`` text as
    Lightning's ``max_time`` takes it; None for None or an unreadable value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 and value != float("inf") else None
    parts = value.split(":")
    if not 3 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        return None
    seconds = sum(int(p) * unit for p, unit in zip(reversed(parts), (1, 60, 3600, 86400)))
    return float(seconds) if seconds > 0 else None


def _is_duration(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if duration_seconds(value) is None:
        raise ValueError("not a duration")


class _DurationCheck(_Check):
    def words(self, noun: str) -> str:
        return '"[DD:]HH:MM:SS"' if noun == "string" else "a positive number of seconds"


DURATION = _DurationCheck((_is_duration,), "", "> 0 s or [DD:]HH:MM:SS", ("number", "integer", "string"))
POSITIVE = _Check((gt(0),), "a positive {noun}", "> 0")
NON_NEGATIVE = _Check((ge(0),), "a non-negative {noun}", ">= 0")
FRACTION = _interval(0, 1, "[", ")")
FOLDER_NAME = _string_check(  # run names become folder names
    lambda s: s not in ("", ".", "..") and "/" not in s and "\\" not in s,
    "a folder name (not empty, no '/')", "folder name",
)
PATH_TEMPLATE = _string_check(
    lambda s: s != "" and all(m in ("recipe", "model") for m in re.findall(r"\{([^{}]*)\}", s)),
    "a path using only the {recipe} and {model} placeholders", "placeholders {recipe}, {model}",
)


# --------------------------------------------------------------------------------------
# Free tables (model hyperparameters, data set options) stay immutable too.
# --------------------------------------------------------------------------------------


class FrozenTable(Mapping):
    """A read-only, hashable mapping for free tables; TOML arrays are stored as tuples."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items = {str(k): _freeze(v) for k, v in dict(items or {}).items()}

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenTable({self._items!r})"


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


# --------------------------------------------------------------------------------------
# Field validators, made once per field from its annotation and metadata. They check
# sections built in Python exactly as they check values read from a recipe.
# --------------------------------------------------------------------------------------


class _BadValue(RecipeError):
    """A value a field refuses; ``keys`` lead from the field's section to the value."""

    def __init__(self, owner: str, keys: KeyPath, expected: str, value: Any) -> None:
        super().__init__(f"{owner}.{_dotted(keys)}: expected {expected}, got {value!r}")
        self.keys, self.expected, self.value = keys, expected, value


def _rule(tp: Any, check: _Check | None, aliases: Mapping[str, str]) -> tuple[Any, str]:
    """The attrs validator for annotation ``tp``, and what it accepts, in words. ``check``
    applies to the numbers or strings in ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_section(tp):
        return instance_of(tp), f"an instance of {tp.__name__}"
    if _is_union(tp):
        rules = [_rule(m, check, aliases) for m in args if m is not type(None)]
        validator = or_(*(r[0] for r in rules)) if len(rules) > 1 else rules[0][0]
        text = " or ".join(r[1] for r in rules)
        if type(None) in args:
            validator = optional(validator)
            text += ' or "none"' if _takes_none_string(tp) else ""
        return validator, text
    if origin is Literal:
        text = f"one of {', '.join(map(repr, args))}" if len(args) > 1 else repr(args[0])
        if aliases:
            text += f" (or an alias: {', '.join(map(repr, aliases))})"
        return in_(args), text
    if origin is tuple and args[-1] is Ellipsis:  # any length, one item type
        item, words = _rule(args[0], check, aliases)
        return deep_iterable(item, instance_of(tuple)), f"an array whose items are each {words}"
    if origin is tuple:  # fixed length, one item type
        (item, words), n = _rule(args[0], check, aliases), len(args)
        shape = and_(instance_of(tuple), min_len(n), max_len(n))
        return deep_iterable(item, shape), f"an array of {n} items, each {words}"
    if tp is bool:
        return instance_of(bool), "true or false"
    noun = {int: "integer", float: "number", str: "string"}[tp]
    kind = instance_of(str) if tp is str else and_(
        instance_of((int, float) if tp is float else int), _not_bool)
    if check is not None and noun in check.nouns:
        return and_(kind, *check.validators), check.words(noun)
    return kind, f"an {noun}" if noun == "integer" else f"a {noun}"


def _not_bool(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")


@attrs.frozen(eq=False)
class _Expect:
    """A field's validator: ``validator`` decides, ``expected`` says what passes."""

    validator: Any
    expected: str

    def __call__(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        try:
            self.validator(instance, attribute, value)
        except (TypeError, ValueError):
            expected = self.expected  # "none" and aliases are for recipes; Python says:
            if _is_none_string(attribute.type, value):
                expected = "None (the canonical form)"
            elif canonical := _alias(attribute.metadata.get("aliases", {}), value):
                expected = f"{canonical!r} (the canonical form)"
            raise _BadValue(type(instance).__name__, (attribute.name,), expected, value) from None


def _free_values(instance: Any, attribute: attrs.Attribute, table: Any) -> None:
    """Free tables hold TOML values: strings, numbers, booleans and arrays of those."""
    owner = type(instance).__name__

    def check(value: Any, keys: KeyPath) -> None:
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                check(item, keys + (i,))
        elif not isinstance(value, (str, int, float)):  # bool is an int
            raise _BadValue(owner, keys, "a TOML string, number, boolean or array", value)

    if not isinstance(table, Mapping):
        raise _BadValue(owner, (attribute.name,), "a table", table)
    for key, value in table.items():
        check(value, (attribute.name, key))


def _add_validators(cls: type, fields: list[attrs.Attribute]) -> list[attrs.Attribute]:
    """attrs field transformer: each recipe field gets the validator its type calls for."""
    out = []
    for f in fields:
        if f.validator is None and not f.metadata.get("internal"):
            if _is_free_table(f.type):
                f = f.evolve(validator=_free_values)
            else:
                rule = _rule(f.type, f.metadata.get("check"), f.metadata.get("aliases", {}))
                f = f.evolve(validator=_Expect(*rule))
        out.append(f)
    return out


def _to_table(value: Any) -> Any:
    return FrozenTable(value) if isinstance(value, Mapping) else value


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _field(help: str, default: Any = attrs.NOTHING, **metadata: Any) -> Any:
    """An attrs field with ``metadata["help"]`` (and optional ``check``/``aliases``)."""
    kwargs: dict[str, Any] = {"metadata": {"help": help, **metadata}}
    if isinstance(default, Mapping):
        kwargs.update(factory=FrozenTable, converter=_to_table)
    elif default is not attrs.NOTHING:
        kwargs["default"] = default
    if isinstance(default, tuple):
        kwargs["converter"] = _to_tuple
    return attrs.field(**kwargs)


def _table(cls: type, help: str) -> Any:
    return attrs.field(factory=cls, metadata={"help": help})


def _schema(cls: type) -> type:
    """A recipe section: frozen, keyword-only, validated field by field."""
    return attrs.frozen(cls, kw_only=True, field_transformer=_add_validators)


# --------------------------------------------------------------------------------------
# The schema.
# --------------------------------------------------------------------------------------


@_schema
class ModelSection:
    """``[model]``: which registered architecture to build, and with what."""

    name: str = _field("Registered model name (see `pixelgen plugins`), e.g. \"pixelcnn\".")
    hyperparameters: Mapping[str, Any] = _field(
        "Keyword hyperparameters passed to the model factory ([model.hyperparameters]); "
        "keys must be parameters of that model, omitted ones keep the model's defaults.", {})


@_schema
class DataSection:
    """``[data]``: the data set, its split and how it is batched."""

    name: str = _field("Registered data set name, e.g. \"cifar10\" or \"mnist\".", "cifar10")
    root: str | None = _field(
        "Directory holding (or receiving) the data; unset means the user cache directory.", None)
    batch_size: int = _field("Training batch size per device.", 16, check=POSITIVE)
    validation_fraction: float = _field(
        "Fraction of the training split held out for validation when the data set has "
        "no validation split of its own.", 0.1, check=FRACTION)
    flips: bool = _field("Random horizontal flips of training images.", False)
    num_workers: int = _field("DataLoader worker processes (0 loads in the main process).",
                              0, check=NON_NEGATIVE)
    image_size: int | None = _field(
        "Resize images to this square size (image folders); unset keeps the stored size.",
        None, check=POSITIVE)
    options: Mapping[str, Any] = _field(
        "Extra keyword options for the data set factory ([data.options]); keys must be "
        "options of that data set.", {})
    download: bool = _field("Download the data set if it is not found under root.", True)
    limit_train: int | None = _field(
        "Use only the first N training images (quick runs); unset uses all.", None,
        check=POSITIVE)
    limit_val: int | None = _field(
        "Use only the first N validation images; unset uses all.", None, check=POSITIVE)
    limit_test: int | None = _field(
        "Use only the first N test images; unset uses all.", None, check=POSITIVE)


@_schema
class OptimizerSection:
    """``[train.optimizer]``."""

    name: Literal["adam"] = _field("Optimizer; only \"adam\" for now.", "adam")
    lr: float = _field("Learning rate.", 1e-3, check=POSITIVE)
    weight_decay: float = _field("L2 weight decay.", 0.0, check=NON_NEGATIVE)
    betas: tuple[float, float] = _field(
        "Adam coefficients for the running averages of the gradient and its square.",
        (0.9, 0.999), check=FRACTION)


@_schema
class SchedulerSection:
    """``[train.scheduler]``: learning-rate schedule, stepped on validation loss."""

    name: Literal["plateau", "none"] = _field(
        "\"plateau\" multiplies the learning rate by factor when validation loss stops "
        "improving; \"none\" keeps it constant.", "plateau")
    factor: float = _field("Multiplier applied to the learning rate on a plateau.", 0.5,
                           check=_interval(0, 1, "(", ")"))
    patience: int = _field(
        "Validations without improvement before the learning rate is reduced.", 2,
        check=NON_NEGATIVE)
    min_lr: float = _field("Lower bound on the learning rate.", 0.0, check=NON_NEGATIVE)


@_schema
class TrainSection:
    """``[train]``: the optimisation loop and the hardware it runs on."""

    epochs: int = _field("Maximum number of passes over the training data.", 100,
                         check=POSITIVE)
    max_steps: int | None = _field(
        "Stop after this many optimizer steps in total; unset means no step limit.", None,
        check=POSITIVE)
    optimizer: OptimizerSection = _table(OptimizerSection, "Optimizer settings.")
    scheduler: SchedulerSection = _table(SchedulerSection, "Learning-rate schedule.")
    early_stopping_patience: int = _field(
        "Stop after this many validations without improvement; 0 disables early stopping.",
        10, check=NON_NEGATIVE)
    gradient_clip_norm: float | None = _field(
        "Clip the global gradient norm to this value; \"none\" disables clipping.", 1.0,
        check=POSITIVE)
    seed: int = _field("Seed for parameter initialisation, data order and augmentation.", 0)
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true"] = _field(
        "Lightning Fabric precision; \"32\", \"bf16\", \"16\" and \"64\" are accepted as "
        "aliases.", "32-true",
        aliases={"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "64": "64-true"})
    accelerator: str = _field("Fabric accelerator: \"auto\", \"cpu\", \"cuda\", \"mps\".",
                              "auto")
    devices: int | str = _field(
        "Number of devices, or a Fabric device string such as \"auto\" or \"0,1\".", 1,
        check=POSITIVE)
    num_nodes: int = _field("Number of machines.", 1, check=POSITIVE)
    strategy: str = _field("Fabric strategy, e.g. \"auto\", \"ddp\".", "auto")
    log_every_n_steps: int = _field("Log training loss every N optimizer steps.", 50,
                                    check=POSITIVE)
    val_every_n_epochs: int = _field("Validate every N epochs.", 1, check=POSITIVE)
    compile: bool = _field("Wrap the model in torch.compile.", False)
    max_time: float | str | None = _field(
        "Time budget of the training loop, summed over resumes: seconds, or \"HH:MM:SS\" / "
        "\"DD:HH:MM:SS\" as Lightning's max_time; at the budget the run stops after the "
        "current step, validates, checkpoints, evaluates and samples. Unset: no budget.", None,
        check=DURATION)
    ema_decay: float = _field(
        "Decay of an exponential moving average of the weights, updated every optimizer step "
        "and used for validation, early stopping, test and sampling; 0 turns it off. "
        "openai/pixel-cnn and PixelSNAIL use 0.9995 on long runs; short runs want less "
        "(the average covers about 1 / (1 - decay) steps).", 0.0, check=FRACTION)
    threads: int | None = _field(
        "torch threads for training, evaluation and sampling in this process; unset: one per "
        "two CPU cores (on a 2-core machine one thread per process measured fastest).", None,
        check=POSITIVE)
    warmup_steps: int = _field(
        "Raise the learning rate linearly from 0 over this many optimizer steps.", 0,
        check=NON_NEGATIVE)
    accumulate_grad_batches: int = _field(
        "Optimizer step every N batches, gradients summed (Fabric's no_backward_sync under DDP).", 1,
        check=POSITIVE)


@_schema
class EvalSection:
    """``[eval]``: the final evaluation in bits/dim."""

    split: Literal["test", "val", "train"] = _field("Split to report bits/dim on.", "test")
    batch_size: int | None = _field(
        "Evaluation batch size; unset uses data.batch_size (filled in on load).", None,
        check=POSITIVE)


@_schema
class SampleSection:
    """``[sample]``: images generated at the end of a run."""

    n: int = _field("Number of samples generated at the end of the run, stored in the archive "
                    "and drawn as samples.png beside it (0: none).", 16, check=NON_NEGATIVE)
    temperature: float = _field("Softmax temperature; below 1 sharpens (at least 1e-6: below it the "
                                "logits overflow).", 1.0,
                                check=_Check((ge(MIN_TEMPERATURE),), "{a} {noun} of at least 1e-06", ">= 1e-6"))
    top_p: float = _field(
        "Nucleus sampling: keep the smallest set of intensities with this total "
        "probability; 1 samples from the full distribution.", 1.0,
        check=_interval(0, 1, "(", "]"))
    seed: int = _field("Seed of the sampling random generator.", 0)
    sampler: Literal["fast", "reference"] = _field(
        "\"fast\" uses each model's cached one-step sampler; \"reference\" recomputes the "
        "whole image per sub-pixel (slow, for checking).", "fast")
    batch_size: int = _field("Samples generated per batch.", 16, check=POSITIVE)
    tensorboard_n: int = _field(
        "Samples drawn after every epoch and logged to TensorBoard as one grid (0: none).", 4,
        check=NON_NEGATIVE)


#: The sample-quality metrics ``[score]`` and ``pixelgen score`` compute (see pixelgen.study.scoring).
SCORE_METRICS = ("fid", "is", "kid", "pr")
SCORE_FEATURES = ("inception", "classifier")


@_schema
class ScoreSection:
    """``[score]``: sample-quality metrics of the final model, computed after its samples."""

    metrics: tuple[Literal[SCORE_METRICS], ...] = _field(
        "Metrics computed at the end of the run on score.n new samples against as many training "
        "images: \"fid\" (Frechet distance), \"is\" (Inception Score), \"kid\" (kernel distance), "
        "\"pr\" (precision and recall); empty: no scoring.", ())
    n: int = _field("Samples scored, and training images they are scored against.", 1000,
                    check=_Check((ge(10),), "{a} {noun} of at least 10", ">= 10"))
    features: Literal[SCORE_FEATURES] = _field(
        "Feature space: \"inception\" (the standard Inception-v3 weights, read from a local file) or "
        "\"classifier\" (a small classifier pixelgen trains once on the data set's labels; its "
        "figures are not comparable with published ones).", "inception")
    weights_path: str | None = _field(
        "The Inception weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth); "
        "unset: $PIXELGEN_INCEPTION_WEIGHTS, then torch's hub cache (<hub>/checkpoints/).", None)
    seed: int = _field("Seed of the sampling of the scored images.", 0)


@_schema
class OutputSection:
    """``[output]``: where runs write checkpoints, logs and the archive."""

    dir: str = _field(
        "Run directory; {recipe} is replaced by the recipe file stem (\"recipe\" when "
        "there is no file) and {model} by the model name. Each run of a multi-run "
        "recipe writes to a subfolder named after the run.", "runs/{recipe}",
        check=PATH_TEMPLATE)
    archive: str = _field("Zarr archive file name inside the run directory.", "archive.zarr",
                          check=FOLDER_NAME)


@_schema
class PaperSection:
    """``[paper]``: the published figure a run reproduces, shown beside it by ``pixelgen compare``."""

    bits_per_dim: float | None = _field(
        "The published bits/dim of this run's configuration (e.g. one cell of a paper's ablation "
        "table); unset: the model's own published figure on the run's data set, if its plugin "
        "declares one (Pixel RNN, table 5, for the three CIFAR-10 models).", None,
        check=POSITIVE)
    source: str = _field(
        "Where the figure is published and on what, e.g. \"Pixel RNN, table 2 (CIFAR-10 "
        "validation)\"; shown in the comparison's footnote.", "")


@_schema
class RunSpec:
    """One trained model: the sections of a single-run recipe, or one ``[[runs]]`` entry."""

    model: ModelSection = _field("The model to train ([model]).")
    name: str = _field(
        "Run name; names the run's subfolder in a multi-run recipe.",
        attrs.Factory(lambda self: self.model.name, takes_self=True),
        check=FOLDER_NAME, default_doc="model.name")
    data: DataSection = _table(DataSection, "The data set ([data]).")
    train: TrainSection = _table(TrainSection, "Training loop settings ([train]).")
    eval: EvalSection = _table(EvalSection, "Final evaluation ([eval]).")
    sample: SampleSection = _table(SampleSection, "Samples drawn after training ([sample]).")
    score: ScoreSection = _table(ScoreSection, "Sample-quality metrics after the samples ([score]).")
    paper: PaperSection = _table(PaperSection, "The published figure the run reproduces ([paper]).")


@_schema
class Recipe:
    """A whole recipe: one or more runs sharing an output location."""

    runs: tuple[RunSpec, ...] = attrs.field(converter=tuple, metadata={
        "help": "[[runs]]: several runs to compare; each takes name, model, data, "
        "train, eval and sample tables, deep-merged over the top-level ones."})
    description: str = _field("Free text describing the recipe.", "")
    output: OutputSection = _table(OutputSection, "Output location ([output]).")
    source: str | None = attrs.field(default=None, metadata={
        "help": "Path of the recipe file, if any (not a recipe key).", "internal": True})

    @property
    def compare(self) -> bool:
        """True when the recipe trains several runs to compare."""
        return len(self.runs) > 1

    @runs.validator
    def _check_runs(self, attribute: attrs.Attribute, value: tuple) -> None:
        if not value or not all(isinstance(r, RunSpec) for r in value):
            raise RecipeError("Recipe.runs: expected at least one RunSpec")


# --------------------------------------------------------------------------------------
# cattrs: raw TOML data <-> the classes above. The structure hooks only convert (TOML ints
# to floats, arrays to tuples, "none" to None, aliases to choices); the validators judge.
# --------------------------------------------------------------------------------------


def _as_is(value: Any, tp: Any) -> Any:
    return value


def _to_float(value: Any, tp: Any) -> Any:
    return float(value) if _is_number(value) else value


def _structure_union(value: Any, tp: Any) -> Any:
    if (value is None and type(None) in typing.get_args(tp)) or _is_none_string(tp, value):
        return None
    members = [m for m in typing.get_args(tp) if m is not type(None)]
    return _converter.structure(value, members[0]) if len(members) == 1 else value


def _structure_tuple(value: Any, tp: Any) -> Any:
    args = typing.get_args(tp)
    if isinstance(value, (list, tuple)) and args[-1] is Ellipsis:
        return tuple(_converter.structure(item, args[0]) for item in value)
    if isinstance(value, (list, tuple)) and len(value) == len(args):
        return tuple(_converter.structure(item, a) for item, a in zip(value, args))
    return value


def _alias_hook(aliases: Mapping[str, str]) -> Callable[[Any, Any], Any]:
    return lambda value, tp: _alias(aliases, value) or value


def _structure_section(cls: type) -> Callable[[Any, Any], Any]:
    """cattrs' structure function for ``cls``, with its fields' aliases; a value that is
    not a table fails like any other bad value."""
    aliased = {f.name: cattrs.gen.override(struct_hook=_alias_hook(f.metadata["aliases"]))
               for f in attrs.fields(cls) if "aliases" in f.metadata}
    structure = cattrs.gen.make_dict_structure_fn(cls, _converter, **aliased)

    def hook(value: Any, tp: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise _BadValue(cls.__name__, (), "a table", value)
        return structure(value, cls)

    return hook


def _unstructure_section(cls: type) -> Callable[[Any], Any]:
    """cattrs' unstructure function for ``cls``; an unset value that the string "none"
    unsets is written as "none" (omitting its key would mean the default)."""
    nones = {f.name: cattrs.gen.override(unstruct_hook=lambda x: "none" if x is None else x)
             for f in attrs.fields(cls) if _takes_none_string(f.type) and f.default is not None}
    return cattrs.gen.make_dict_unstructure_fn(cls, _converter, **nones)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)  # detailed validation keeps key paths
    for tp in (int, str, bool):
        conv.register_structure_hook(tp, _as_is)
    conv.register_structure_hook(float, _to_float)
    conv.register_structure_hook_func(
        lambda tp: typing.get_origin(tp) is Literal or _is_free_table(tp), _as_is)
    conv.register_structure_hook_func(_is_union, _structure_union)
    conv.register_structure_hook_func(lambda tp: typing.get_origin(tp) is tuple, _structure_tuple)
    conv.register_structure_hook_factory(_is_section, _structure_section)
    conv.register_unstructure_hook_func(  # tuples become TOML arrays, free tables dicts
        lambda tp: tp is tuple or typing.get_origin(tp) is tuple,
        lambda items: [conv.unstructure(item) for item in items])
    conv.register_unstructure_hook_func(
        lambda tp: tp is FrozenTable or _is_free_table(tp),
        lambda table: {k: conv.unstructure(item) for k, item in table.items()})
    conv.register_unstructure_hook_factory(_is_section, _unstructure_section)
    return conv


_converter = _make_converter()


# --------------------------------------------------------------------------------------
# Problems at key paths, read from cattrs' exception groups.
# --------------------------------------------------------------------------------------

_MISSING = object()


class _Problem(Exception):
    """A problem at a key path; rendered into a RecipeError once the path is known."""

    def __init__(self, path: KeyPath, message: str, known: Sequence[str] | None = None):
        super().__init__(message)
        self.path, self.message, self.known = path, message, known  # known: unknown keys

    def render(self, where: Callable[[KeyPath], str] = _dotted) -> str:
        """``where(path)`` turns a key path into the dotted text the user wrote."""
        if self.known is None:
            return f"{where(self.path)}: {self.message}"
        table = where(self.path[:-1]) or "the recipe"
        return f"{where(self.path)}: {_unknown_key(str(self.path[-1]), self.known, table)}"


def _unknown_key(key: str, known: Sequence[str], table: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys of {table}: {', '.join(known)}"
    return f"unknown key; {hint}"


def _lookup(raw: Any, path: KeyPath, default: Any = _MISSING) -> Any:
    """The raw value at ``path``, or ``default`` where there is none."""
    for key in path:
        if isinstance(raw, Mapping) and key in raw:
            raw = raw[key]
        elif isinstance(raw, (list, tuple)) and isinstance(key, int) and key < len(raw):
            raw = raw[key]
        else:
            return default
    return raw


def _failures(error: Exception, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Exception]]:
    """Every ``(key path, exception)`` in a cattrs exception group, in field order."""
    if not isinstance(error, cattrs.ClassValidationError):
        yield path, error
        return
    for sub in error.exceptions:
        notes = getattr(sub, "__notes__", [])
        names = tuple(n.name for n in notes if isinstance(n, cattrs.AttributeValidationNote))
        yield from _failures(sub, path + names)


def _problem(error: Exception, path: KeyPath, raw: Any) -> _Problem:
    """The :class:`_Problem` for one failure at ``path`` while structuring ``raw``."""
    if isinstance(error, cattrs.ForbiddenExtraKeysError):
        key = next(k for k in _lookup(raw, path) if k in error.extra_fields)  # first written
        return _Problem(path + (key,), "unknown key", [f.name for f in _public_fields(error.cl)])
    if isinstance(error, KeyError):
        return _Problem(path, "required key is missing")
    if isinstance(error, _BadValue):  # quote the value as written, not as converted
        path += error.keys
        value = _lookup(raw, path, error.value)
        return _Problem(path, f"expected {error.expected}, got {value!r}")
    raise error


def _structure(raw: Any, cls: type, prefix: KeyPath = ()) -> Any:
    """``cls`` from raw TOML data, or the first problem (unknown keys first) as _Problem."""
    try:
        return _converter.structure(raw, cls)
    except (cattrs.ClassValidationError, _BadValue) as group:
        failures = list(_failures(group))
    path, error = min(failures, key=lambda f: not isinstance(f[1], cattrs.ForbiddenExtraKeysError))
    problem = _problem(error, path, raw)
    raise _Problem(prefix + problem.path, problem.message, problem.known)


# --------------------------------------------------------------------------------------
# Whole recipes: top-level tables, [[runs]] merging, registry checks.
# --------------------------------------------------------------------------------------

_RUN_KEYS = tuple(f.name for f in _public_fields(RunSpec))
_RUNS_TYPE = attrs.fields(Recipe).runs.type
_TOP_TYPES = {"description": str, **{f.name: f.type for f in _public_fields(RunSpec)},
              "output": OutputSection, "runs": _RUNS_TYPE}  # the keys of a recipe file


def _deep_merge(base: Mapping, over: Mapping) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def recipe_from_dict(data: Mapping[str, Any], source: str | None = None) -> Recipe:
    """Validate raw recipe data (as parsed from TOML) into a :class:`Recipe`.

    Args:
        data: the parsed TOML document.
        source: the recipe file it came from; its stem fills ``{recipe}`` in output.dir.

    Raises:
        RecipeError: one line, starting with the dotted key path of the first problem.
    """
    if not isinstance(data, Mapping):
        raise RecipeError(f"recipe: expected a table, got {data!r}")
    try:
        for key in data:
            if key not in _TOP_TYPES:
                raise _Problem((key,), "unknown key", known=list(_TOP_TYPES))
        output = _structure(data.get("output", {}), OutputSection, ("output",))
        shared = {k: data[k] for k in _RUN_KEYS if k in data}
        if "runs" not in data:
            runs = [_build_run(shared, ())]
        else:
            tables = data["runs"]
            if not isinstance(tables, (list, tuple)) or not tables:
                raise _Problem(("runs",), f"expected one or more [[runs]] tables, got {tables!r}")
            runs = []
            for i, table in enumerate(tables):
                if not isinstance(table, Mapping):
                    raise _Problem(("runs", i), f"expected a table, got {table!r}")
                runs.append(_build_run(_deep_merge(shared, table), ("runs", i), shared, table))
            seen: dict[str, int] = {}
            for i, run in enumerate(runs):
                if run.name in seen:
                    raise _Problem(
                        ("runs", i, "name"),
                        f"duplicate run name {run.name!r} (also run {seen[run.name]}); "
                        "run names name the run folders and must differ",
                    )
                seen[run.name] = i
        description = data.get("description", "")
        return Recipe(runs=tuple(runs), description=description, output=output, source=source)
    except _BadValue as exc:  # the description, which Recipe's own validator checks
        raise RecipeError(_problem(exc, (), data).render()) from None
    except _Problem as exc:
        raise RecipeError(exc.render()) from None


def _build_run(
    raw: Mapping[str, Any],
    prefix: KeyPath,
    shared: Mapping[str, Any] | None = None,
    own: Mapping[str, Any] | None = None,
) -> RunSpec:
    """Structure one run; errors name the table the offending value was written in."""

    def inherited(path: KeyPath) -> bool:
        return (bool(prefix) and _lookup(own, path) is _MISSING
                and _lookup(shared, path) is not _MISSING)

    def where(path: KeyPath) -> str:
        return _dotted(path if inherited(path) else prefix + tuple(path))

    try:
        run = _structure(raw, RunSpec)
        _check_registry(run)
    except _Problem as exc:
        text = exc.render(where)
        if inherited(exc.path):  # a shared value may be wrong for one run only
            text += f" (shared value, inherited by {_dotted(prefix)})"
        raise RecipeError(text) from None
    if run.eval.batch_size is None:
        run = attrs.evolve(run, eval=attrs.evolve(run.eval, batch_size=run.data.batch_size))
    return run


def _check_registry(run: RunSpec) -> None:
    """Model and data set names, hyperparameters and options must exist in the registry."""
    failures = registry.plugin_failures()
    hint = f" (plugins that failed to load: {', '.join(sorted(failures))})" if failures else ""
    models = registry.list_models()
    conflicts = registry.get_registry().conflicts
    if run.model.name in conflicts:
        raise _Problem(("model", "name"), conflicts[run.model.name])
    if run.model.name not in models:
        raise _Problem(
            ("model", "name"),
            f"unknown model {run.model.name!r}; available: {', '.join(models) or 'none'}{hint}",
        )
    known = list(registry.get_model_spec(run.model.name).defaults())
    for key in run.model.hyperparameters:
        if key not in known:
            raise _Problem(
                ("model", "hyperparameters", key),
                f"unknown hyperparameter of {run.model.name!r}; "
                f"available: {', '.join(known) or 'none'}",
            )
    datasets = registry.list_datasets()
    if run.data.name not in datasets:
        raise _Problem(
            ("data", "name"),
            f"unknown data set {run.data.name!r}; available: "
            f"{', '.join(datasets) or 'none'}{hint}",
        )
    known = list(registry.get_dataset_spec(run.data.name).options())
    for key in run.data.options:
        if key not in known:
            raise _Problem(
                ("data", "options", key),
                f"unknown option of data set {run.data.name!r}; "
                f"available: {', '.join(known) or 'none'}",
            )


# --------------------------------------------------------------------------------------
# Files and overrides.
# --------------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a TOML recipe, apply ``--set`` overrides, and validate it.

    Args:
        path: the recipe file.
        overrides: ``"dotted.key=value"`` strings, applied in order before validation.
            The value is read as a TOML value when it parses as one (``3e-4``, ``true``,
            ``[0.9, 0.99]``, ``"text"``) and as a bare string otherwise (``cpu``).
            ``runs.1.train.epochs=3`` sets a key of the second ``[[runs]]`` table; keys of
            the top-level tables apply to every run that does not set them itself.

    Raises:
        RecipeError: one line naming the file (for read and TOML errors), the override
            (``--set key: ...``) or the dotted key path of the first invalid value.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings, not a string")
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {' '.join(str(exc).split())}") from None
    for override in overrides:
        apply_override(data, override)
    return recipe_from_dict(data, source=str(path))


def _parse_value(text: str) -> Any:
    """A TOML value if ``text`` parses as one (dates excepted), else the bare string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, (str, int, float, bool, list, dict)) else text


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override to raw recipe data, in place.

    The key is checked against the schema so that a typo fails here, naming the override.
    Keys inside free tables (``model.hyperparameters.*``, ``data.options.*``) are checked
    later, against the registry.
    """
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {override}: expected KEY=VALUE, e.g. train.epochs=3")
    try:
        *tables, last = _override_path(data, key.split("."))
        target: Any = data
        for i, part in enumerate(tables):  # creating tables on the way
            target = target[part] if isinstance(part, int) else target.setdefault(part, {})
            if not isinstance(target, (dict, list)):
                raise ValueError(f"{_dotted(tables[: i + 1])} is not a table in the recipe")
    except ValueError as exc:
        raise RecipeError(f"--set {key}: {exc}") from None
    value = _parse_value(text.strip())
    existing = target[last] if isinstance(target, list) else target.get(last)
    if isinstance(value, dict) and isinstance(existing, dict):
        value = _deep_merge(existing, value)  # an inline table adds keys, it keeps the rest
    target[last] = value


def _override_path(data: Mapping[str, Any], parts: list[str]) -> list[str | int]:
    """An override's key, checked against the schema (a ValueError says what is wrong),
    with ``runs.N`` turned into an index into the recipe's ``[[runs]]`` tables."""
    if "" in parts:
        raise ValueError("empty key segment")
    path: list[str | int] = []
    node: Any = _TOP_TYPES
    for i, part in enumerate(parts):
        here = _dotted(path) or "the recipe"
        if node is _RUNS_TYPE:
            runs = data.get("runs")
            if not isinstance(runs, list) or not runs:
                raise ValueError("the recipe has no [[runs]] tables")
            if not part.isdigit() or int(part) >= len(runs):
                raise ValueError(f"runs index must be 0..{len(runs) - 1}, got {part!r}")
            path.append(int(part))
            node = RunSpec
            continue
        if _is_free_table(node):  # its keys are checked against the registry later
            if i != len(parts) - 1:
                raise ValueError(f"{here} holds plain values, not tables")
            return path + [part]
        keys = {f.name: f.type for f in _public_fields(node)} if _is_section(node) else node
        if not isinstance(keys, dict):
            raise ValueError(f"{here} is a value, not a table")
        if part not in keys:
            raise ValueError(_unknown_key(part, list(keys), here))
        path.append(part)
        node = keys[part]
    return path


# --------------------------------------------------------------------------------------
# Back to data: resolved dictionaries, TOML text, run directories.
# --------------------------------------------------------------------------------------


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Every value of ``recipe``, defaults included, as plain TOML-ready data.

    A single-run recipe keeps the top-level form; a multi-run recipe lists each run in
    full under ``runs``. ``{recipe}`` in output.dir is replaced by the source file stem, so
    the result reproduces the run wherever it is stored. ``recipe_from_dict`` of the result
    equals ``recipe`` (up to that substitution).
    """
    output = _converter.unstructure(recipe.output)
    if recipe.source is not None:
        output["dir"] = output["dir"].replace("{recipe}", Path(recipe.source).stem)
    out: dict[str, Any] = {"description": recipe.description}
    runs = [_converter.unstructure(run) for run in recipe.runs]
    if len(runs) == 1:
        out["name"] = runs[0].pop("name")
        out.update(runs[0])
    else:
        out["runs"] = [{"name": r.pop("name"), **r} for r in runs]
    out["output"] = output
    return out


def _toml_ready(value: Any, path: KeyPath) -> Any:
    """``value`` without ``None`` in its tables; a TypeError naming the key of anything
    else TOML cannot hold."""
    if isinstance(value, Mapping):
        return {k: _toml_ready(item, path + (k,)) for k, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(item, path + (i,)) for i, item in enumerate(value)]
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise TypeError(f"{_dotted(path)}: cannot write {type(value).__name__} value "
                        f"{value!r} as TOML")
    return value


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write ``data`` as TOML: tables, arrays of tables, strings, numbers, booleans and
    arrays of those. ``None`` values are left out (TOML has no null)."""
    return tomli_w.dumps(_toml_ready(data, ()))


def single_run(recipe: Recipe, run: RunSpec) -> Recipe:
    """A single-run recipe for ``run`` whose output.dir is that run's directory."""
    output = attrs.evolve(recipe.output, dir=str(run_dir(recipe, run)))
    return Recipe(runs=(run,), description=recipe.description, output=output,
                  source=recipe.source)


def run_dir(recipe: Recipe, run: RunSpec) -> Path:
    """The directory ``run`` writes to: output.dir with ``{recipe}`` (the recipe file stem,
    or "recipe" without a file) and ``{model}`` filled in, plus a subfolder named after
    the run when the recipe compares several runs."""
    stem = Path(recipe.source).stem if recipe.source is not None else "recipe"
    base = Path(recipe.output.dir.replace("{recipe}", stem).replace("{model}", run.model.name))
    return base / run.name if recipe.compare else base


# --------------------------------------------------------------------------------------
# Reference documentation.
# --------------------------------------------------------------------------------------


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if _is_section(tp):
        return "table"
    if _is_free_table(tp):
        return "table (free keys)"
    if _is_union(tp):
        return " | ".join(
            "none" if m is type(None) else _type_text(m) for m in typing.get_args(tp)
        )
    if origin is Literal:
        return " | ".join(f'"{c}"' for c in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return "array of tables" if _is_section(args[0]) else f"[{_type_text(args[0])}, ...]"
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    return {bool: "bool", int: "int", float: "float", str: "str"}[tp]


def _default_text(field: attrs.Attribute) -> str:
    default = field.default
    if "default_doc" in field.metadata:
        return field.metadata["default_doc"]
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # a table: a section, or a free table
        return "{}" if default.factory is FrozenTable else ""
    if default is None:
        return "unset"
    return _toml_literal(default)


def _toml_literal(value: Any) -> str:
    """``value`` as TOML writes it, arrays on one line."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(item) for item in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):-1]


def field_reference() -> list[tuple[str, str, str, str]]:
    """Every recipe key: ``(dotted key, type, default, help)``, for the docs reference.

    Run keys (``model.*``, ``data.*``, ``train.*``, ``eval.*``, ``sample.*``, ``name``) are
    listed without prefix; they are valid both at the top level and inside ``[[runs]]``.
    """
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        for f in _public_fields(cls):
            key = f"{prefix}{f.name}"
            type_text = _type_text(f.type)
            check = f.metadata.get("check")
            if check is not None:
                type_text += f" ({check.short})"
            rows.append((key, type_text, _default_text(f), f.metadata["help"]))
            if _is_section(f.type):
                walk(f.type, key + ".")

    fields = attrs.fields_dict(Recipe)
    rows.append(("description", "str", _default_text(fields["description"]),
                 fields["description"].metadata["help"]))
    walk(RunSpec, "")
    rows.append(("output", "table", "", fields["output"].metadata["help"]))
    walk(OutputSection, "output.")
    rows.append(("runs", _type_text(fields["runs"].type), "", fields["runs"].metadata["help"]))
    return rows
