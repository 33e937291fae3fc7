"""Recipes: declarative TOML files that say what to train, on what, and how.

A recipe is data. :func:`load_recipe` parses the TOML with :mod:`tomllib`, applies
``--set dotted.key=value`` overrides, and structures the result into the frozen attrs
classes below, validating every value on the way. Any problem is a one-line
:class:`~pixelgen.errors.RecipeError` that starts with the dotted key path::

    train.optimizer.lr: expected a positive number, got 'fast'

Defaults live in one place, the attrs classes. :func:`recipe_to_dict` writes every value
back out, defaults included, and :func:`write_resolved` stores that in each run directory
(as TOML, written by :mod:`tomli_w`) so that a run can be reproduced from its outputs alone.

A recipe describes either one run, with the top-level tables ``[model] [data] [train]
[eval] [sample] [output]``, or several runs to compare, with ``[[runs]]`` tables whose
``model``/``data``/``train``/``eval``/``sample`` tables are deep-merged over the top-level
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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import tomli_w

from pixelgen import registry
from pixelgen.errors import RecipeError
from pixelgen.files import atomic_write_text

__all__ = [
    "DataSection",
    "EvalSection",
    "FrozenTable",
    "ModelSection",
    "OptimizerSection",
    "OutputSection",
    "Recipe",
    "RunSpec",
    "SampleSection",
    "SchedulerSection",
    "TrainSection",
    "apply_override",
    "dump_toml",
    "field_reference",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
    "run_dir",
    "single_run",
    "write_resolved",
]


# --------------------------------------------------------------------------------------
# Value checks attached to fields (metadata "check"); they also phrase what they expect.
# --------------------------------------------------------------------------------------


@attrs.frozen
class _Bound:
    """A numeric range; ``None`` ends are open to infinity."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    nouns = ("number", "integer")

    def ok(self, value: Any) -> bool:
        if not _is_number(value):
            return True  # the check is about numbers; other union members pass
        if self.low is not None and not (
            value >= self.low if self.low_inclusive else value > self.low
        ):
            return False
        if self.high is not None and not (
            value <= self.high if self.high_inclusive else value < self.high
        ):
            return False
        return value == value  # NaN fails every range

    def phrase(self, noun: str) -> str:
        """``noun`` is "number" or "integer"."""
        article = "an" if noun == "integer" else "a"
        if self.high is None and self.low == 0:
            return f"a positive {noun}" if not self.low_inclusive else f"a non-negative {noun}"
        if self.high is None:
            return f"{article} {noun} {'>=' if self.low_inclusive else '>'} {_num(self.low)}"
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"{article} {noun} in {left}{_num(self.low)}, {_num(self.high)}{right}"

    def describe(self) -> str:
        if self.high is None:
            return f"{'>=' if self.low_inclusive else '>'} {_num(self.low)}"
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"


@attrs.frozen
class _FolderName:
    """A string usable as one path component (run names become folder names)."""

    nouns = ("string",)

    def ok(self, value: Any) -> bool:
        return not isinstance(value, str) or (
            value not in ("", ".", "..") and "/" not in value and "\\" not in value
        )

    def phrase(self, noun: str) -> str:
        return "a folder name (not empty, no '/')"

    def describe(self) -> str:
        return "folder name"


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS = ("recipe", "model")


@attrs.frozen
class _Template:
    """A path that may use only the ``{recipe}`` and ``{model}`` placeholders."""

    nouns = ("string",)

    def ok(self, value: Any) -> bool:
        return not isinstance(value, str) or (
            value != "" and all(m in _PLACEHOLDERS for m in _PLACEHOLDER.findall(value))
        )

    def phrase(self, noun: str) -> str:
        return "a path using only the {recipe} and {model} placeholders"

    def describe(self) -> str:
        return "placeholders {recipe}, {model}"


POSITIVE = _Bound(low=0, low_inclusive=False)
NON_NEGATIVE = _Bound(low=0)


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
# Field helper: every field carries its help text; the validator is the same walker that
# structures TOML, so Python construction is checked exactly like a recipe file.
# --------------------------------------------------------------------------------------


def _validate(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Check a value given in Python exactly as a recipe value would be checked."""
    owner = type(instance).__name__
    try:
        converted = _convert(attribute.type, value, (attribute.name,), attribute.metadata)
    except _Invalid as exc:
        raise RecipeError(f"{owner}.{exc.render(_dotted)}") from None
    if converted != value:  # an alias, or a dict where a section belongs
        raise RecipeError(
            f"{owner}.{attribute.name}: expected {converted!r} (the canonical form), "
            f"got {value!r}"
        )


def _to_table(value: Any) -> Any:
    return FrozenTable(value) if isinstance(value, Mapping) else value


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _field(help: str, default: Any = attrs.NOTHING, **metadata: Any) -> Any:
    """An attrs field with ``metadata["help"]`` (and optional ``check``/``aliases``)."""
    kwargs: dict[str, Any] = {}
    if isinstance(default, attrs.Factory):
        kwargs["default"] = default
    elif isinstance(default, Mapping):
        kwargs["factory"] = FrozenTable
    elif default is not attrs.NOTHING:
        kwargs["default"] = default
    if isinstance(default, Mapping):
        kwargs["converter"] = _to_table
    if isinstance(default, tuple):
        kwargs["converter"] = _to_tuple
    return attrs.field(validator=_validate, metadata={"help": help, **metadata}, **kwargs)


def _table(cls: type, help: str) -> Any:
    return attrs.field(factory=cls, validator=_validate, metadata={"help": help})


# --------------------------------------------------------------------------------------
# The schema.
# --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ModelSection:
    """``[model]``: which registered architecture to build, and with what."""

    name: str = _field("Registered model name (see `pixelgen plugins`), e.g. \"pixelcnn\".")
    hyperparameters: Mapping[str, Any] = _field(
        "Keyword hyperparameters passed to the model factory ([model.hyperparameters]); "
        "keys must be parameters of that model, omitted ones keep the model's defaults.",
        {},
    )


@attrs.frozen(kw_only=True)
class DataSection:
    """``[data]``: the data set, its split and how it is batched."""

    name: str = _field("Registered data set name, e.g. \"cifar10\" or \"mnist\".", "cifar10")
    root: str | None = _field(
        "Directory holding (or receiving) the data; unset means the user cache directory.",
        None,
    )
    batch_size: int = _field("Training batch size per device.", 16, check=POSITIVE)
    validation_fraction: float = _field(
        "Fraction of the training split held out for validation when the data set has "
        "no validation split of its own.",
        0.1,
        check=_Bound(low=0, high=1, high_inclusive=False),
    )
    flips: bool = _field("Random horizontal flips of training images.", False)
    num_workers: int = _field("DataLoader worker processes (0 loads in the main process).",
                              0, check=NON_NEGATIVE)
    image_size: int | None = _field(
        "Resize images to this square size (image folders); unset keeps the stored size.",
        None,
        check=POSITIVE,
    )
    options: Mapping[str, Any] = _field(
        "Extra keyword options for the data set factory ([data.options]); keys must be "
        "options of that data set.",
        {},
    )
    download: bool = _field("Download the data set if it is not found under root.", True)
    limit_train: int | None = _field(
        "Use only the first N training images (quick runs); unset uses all.", None,
        check=POSITIVE,
    )
    limit_val: int | None = _field(
        "Use only the first N validation images; unset uses all.", None, check=POSITIVE
    )
    limit_test: int | None = _field(
        "Use only the first N test images; unset uses all.", None, check=POSITIVE
    )


@attrs.frozen(kw_only=True)
class OptimizerSection:
    """``[train.optimizer]``."""

    name: Literal["adam"] = _field("Optimizer; only \"adam\" for now.", "adam")
    lr: float = _field("Learning rate.", 1e-3, check=POSITIVE)
    weight_decay: float = _field("L2 weight decay.", 0.0, check=NON_NEGATIVE)
    betas: tuple[float, float] = _field(
        "Adam coefficients for the running averages of the gradient and its square.",
        (0.9, 0.999),
        check=_Bound(low=0, high=1, high_inclusive=False),
    )


@attrs.frozen(kw_only=True)
class SchedulerSection:
    """``[train.scheduler]``: learning-rate schedule, stepped on validation loss."""

    name: Literal["plateau", "none"] = _field(
        "\"plateau\" multiplies the learning rate by factor when validation loss stops "
        "improving; \"none\" keeps it constant.",
        "plateau",
    )
    factor: float = _field(
        "Multiplier applied to the learning rate on a plateau.", 0.5,
        check=_Bound(low=0, high=1, low_inclusive=False, high_inclusive=False),
    )
    patience: int = _field(
        "Validations without improvement before the learning rate is reduced.", 2,
        check=NON_NEGATIVE,
    )
    min_lr: float = _field("Lower bound on the learning rate.", 0.0, check=NON_NEGATIVE)


@attrs.frozen(kw_only=True)
class TrainSection:
    """``[train]``: the optimisation loop and the hardware it runs on."""

    epochs: int = _field("Maximum number of passes over the training data.", 100,
                         check=POSITIVE)
    max_steps: int | None = _field(
        "Stop after this many optimizer steps in total; unset means no step limit.",
        None,
        check=POSITIVE,
    )
    optimizer: OptimizerSection = _table(OptimizerSection, "Optimizer settings.")
    scheduler: SchedulerSection = _table(SchedulerSection, "Learning-rate schedule.")
    early_stopping_patience: int = _field(
        "Stop after this many validations without improvement; 0 disables early stopping.",
        10,
        check=NON_NEGATIVE,
    )
    gradient_clip_norm: float | None = _field(
        "Clip the global gradient norm to this value; \"none\" disables clipping.", 1.0,
        check=POSITIVE,
    )
    seed: int = _field("Seed for parameter initialisation, data order and augmentation.", 0)
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true"] = _field(
        "Lightning Fabric precision; \"32\", \"bf16\", \"16\" and \"64\" are accepted as "
        "aliases.",
        "32-true",
        aliases={"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "64": "64-true"},
    )
    accelerator: str = _field("Fabric accelerator: \"auto\", \"cpu\", \"cuda\", \"mps\".",
                              "auto")
    devices: int | str = _field(
        "Number of devices, or a Fabric device string such as \"auto\" or \"0,1\".", 1,
        check=POSITIVE,
    )
    num_nodes: int = _field("Number of machines.", 1, check=POSITIVE)
    strategy: str = _field("Fabric strategy, e.g. \"auto\", \"ddp\".", "auto")
    log_every_n_steps: int = _field("Log training loss every N optimizer steps.", 50,
                                    check=POSITIVE)
    val_every_n_epochs: int = _field("Validate every N epochs.", 1, check=POSITIVE)
    compile: bool = _field("Wrap the model in torch.compile.", False)


@attrs.frozen(kw_only=True)
class EvalSection:
    """``[eval]``: the final evaluation in bits/dim."""

    split: Literal["test", "val", "train"] = _field("Split to report bits/dim on.", "test")
    batch_size: int | None = _field(
        "Evaluation batch size; unset uses data.batch_size (filled in on load).", None,
        check=POSITIVE,
    )


@attrs.frozen(kw_only=True)
class SampleSection:
    """``[sample]``: images generated at the end of a run."""

    n: int = _field("Number of samples generated at the end of the run (0: none).", 0,
                    check=NON_NEGATIVE)
    temperature: float = _field("Softmax temperature; below 1 sharpens.", 1.0,
                                check=POSITIVE)
    top_p: float = _field(
        "Nucleus sampling: keep the smallest set of intensities with this total "
        "probability; 1 samples from the full distribution.",
        1.0,
        check=_Bound(low=0, high=1, low_inclusive=False),
    )
    seed: int = _field("Seed of the sampling random generator.", 0)
    sampler: Literal["fast", "reference"] = _field(
        "\"fast\" uses each model's cached one-step sampler; \"reference\" recomputes the "
        "whole image per sub-pixel (slow, for checking).",
        "fast",
    )
    batch_size: int = _field("Samples generated per batch.", 16, check=POSITIVE)


@attrs.frozen(kw_only=True)
class OutputSection:
    """``[output]``: where runs write checkpoints, logs and the archive."""

    dir: str = _field(
        "Run directory; {recipe} is replaced by the recipe file stem (\"recipe\" when "
        "there is no file) and {model} by the model name. Each run of a multi-run "
        "recipe writes to a subfolder named after the run.",
        "runs/{recipe}",
        check=_Template(),
    )
    archive: str = _field("Zarr archive file name inside the run directory.", "archive.zarr",
                          check=_FolderName())


@attrs.frozen(kw_only=True)
class RunSpec:
    """One trained model: the sections of a single-run recipe, or one ``[[runs]]`` entry."""

    model: ModelSection = _field("The model to train ([model]).")
    name: str = _field(
        "Run name; names the run's subfolder in a multi-run recipe.",
        attrs.Factory(lambda self: self.model.name, takes_self=True),
        check=_FolderName(),
        default_doc="model.name",
    )
    data: DataSection = _table(DataSection, "The data set ([data]).")
    train: TrainSection = _table(TrainSection, "Training loop settings ([train]).")
    eval: EvalSection = _table(EvalSection, "Final evaluation ([eval]).")
    sample: SampleSection = _table(SampleSection, "Samples drawn after training ([sample]).")


@attrs.frozen(kw_only=True)
class Recipe:
    """A whole recipe: one or more runs sharing an output location."""

    runs: tuple[RunSpec, ...] = attrs.field(
        converter=tuple,
        metadata={
            "help": "[[runs]]: several runs to compare; each takes name, model, data, "
            "train, eval and sample tables, deep-merged over the top-level ones."
        },
    )
    description: str = _field("Free text describing the recipe.", "")
    output: OutputSection = _table(OutputSection, "Output location ([output]).")
    source: str | None = attrs.field(
        default=None,
        metadata={"help": "Path of the recipe file, if any (not a recipe key).",
                  "internal": True},
    )

    @property
    def compare(self) -> bool:
        """True when the recipe trains several runs to compare."""
        return len(self.runs) > 1

    @runs.validator
    def _check_runs(self, attribute: attrs.Attribute, value: tuple) -> None:
        if not value or not all(isinstance(r, RunSpec) for r in value):
            raise RecipeError("Recipe.runs: expected at least one RunSpec")


# --------------------------------------------------------------------------------------
# The structuring walker: raw TOML data -> attrs objects, one generic function.
# --------------------------------------------------------------------------------------

KeyPath = tuple  # str keys and int indices into arrays


class _Invalid(Exception):
    """A problem at a key path; rendered into a RecipeError once the path is known."""

    def __init__(self, path: KeyPath, message: str, known: Sequence[str] | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.known = known  # set for unknown keys

    def render(self, where: Any) -> str:
        """``where(path) -> str`` turns a key path into the dotted text the user wrote."""
        if self.known is None:
            return f"{where(self.path)}: {self.message}"
        key = str(self.path[-1])
        close = difflib.get_close_matches(key, list(self.known), n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        else:
            table = where(self.path[:-1]) or "the recipe"
            hint = f"known keys of {table}: {', '.join(self.known)}"
        return f"{where(self.path)}: unknown key; {hint}"


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and attrs.has(tp)


def _is_free_table(tp: Any) -> bool:
    return tp is dict or tp is Mapping or typing.get_origin(tp) in (dict, Mapping)


def _takes_none_string(tp: Any) -> bool:
    """TOML has no null: optional non-string fields take the string "none" for unset."""
    members = typing.get_args(tp)
    return type(None) in members and str not in members


def _public_fields(cls: type) -> list[attrs.Attribute]:
    return [f for f in attrs.fields(cls) if not f.metadata.get("internal")]


def _structure(cls: type, raw: Any, path: KeyPath) -> Any:
    """Build ``cls`` from a TOML table, checking every key against the attrs fields."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise _Invalid(path, f"expected a table, got {raw!r}")
    fields = _public_fields(cls)
    names = [f.name for f in fields]
    for key in raw:
        if key not in names:
            raise _Invalid(path + (key,), "unknown key", known=names)
    kwargs = {}
    for f in fields:
        if f.name in raw:
            kwargs[f.name] = _convert(f.type, raw[f.name], path + (f.name,), f.metadata)
        elif f.default is attrs.NOTHING:
            raise _Invalid(path + (f.name,), "required key is missing")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: KeyPath, meta: Mapping[str, Any]) -> Any:
    """Check ``value`` against the annotation ``tp`` (and the field's check); return it
    converted (ints to floats, arrays to tuples, aliases to canonical choices)."""
    origin = typing.get_origin(tp)
    check = meta.get("check")
    if _is_section(tp):
        return _structure(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if value is None or (
            _takes_none_string(tp) and isinstance(value, str) and value.lower() == "none"
        ):
            if type(None) in members:
                return None
        for member in members:
            if member is type(None):
                continue
            try:
                return _convert(member, value, path, meta)
            except _Invalid:
                continue
        raise _Invalid(path, f"expected {_expected(tp, check)}, got {value!r}")
    if origin is Literal:
        aliases = meta.get("aliases", {})
        key = str(value) if _is_number(value) else value
        if isinstance(key, str) and key in aliases:
            value = aliases[key]
        if isinstance(value, str) and value in typing.get_args(tp):
            return value
        raise _Invalid(path, f"expected {_expected(tp, check, aliases)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, (list, tuple)) or (
            not variadic and len(value) != len(args)
        ):
            raise _Invalid(path, f"expected {_expected(tp, check)}, got {value!r}")
        items = [args[0]] * len(value) if variadic else args
        out = []
        for i, (item_tp, item) in enumerate(zip(items, value)):
            try:
                out.append(_convert(item_tp, item, path + (i,), meta))
            except _Invalid:
                raise _Invalid(path, f"expected {_expected(tp, check)}, got {value!r}")
        return tuple(out)
    if _is_free_table(tp):
        if not isinstance(value, Mapping):
            raise _Invalid(path, f"expected a table, got {value!r}")
        for key, item in value.items():
            _check_free_value(item, path + (key,))
        return FrozenTable(value)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: _is_number,
        str: lambda v: isinstance(v, str),
    }[tp]
    if not ok(value) or (check is not None and not check.ok(value)):
        raise _Invalid(path, f"expected {_expected(tp, check)}, got {value!r}")
    return float(value) if tp is float else value


def _check_free_value(value: Any, path: KeyPath) -> None:
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_free_value(item, path + (i,))
    elif not isinstance(value, (str, int, float, bool)):
        raise _Invalid(path, f"expected a TOML string, number, boolean or array, got {value!r}")


def _expected(tp: Any, check: Any = None, aliases: Mapping[str, str] | None = None) -> str:
    """What a value of annotation ``tp`` looks like, in words, for error messages."""
    origin = typing.get_origin(tp)
    if _is_section(tp) or _is_free_table(tp):
        return "a table"
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        text = " or ".join(_expected(m, check) for m in members)
        if type(None) in typing.get_args(tp) and str not in members:
            text += ' or "none"'
        return text
    if origin is Literal:
        choices = ", ".join(repr(c) for c in typing.get_args(tp))
        text = f"one of {choices}" if len(typing.get_args(tp)) > 1 else choices
        if aliases:
            text += f" (or an alias: {', '.join(repr(a) for a in aliases)})"
        return text
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"an array of {_expected(args[0], check)}s"
        return f"an array of {len(args)} items, each {_expected(args[0], check)}"
    noun = {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]
    if tp is bool:
        return "true or false"
    if check is not None and noun in check.nouns:
        return check.phrase(noun)
    return {"integer": "an integer", "number": "a number", "string": "a string"}[noun]


# --------------------------------------------------------------------------------------
# Whole recipes: top-level tables, [[runs]] merging, registry checks.
# --------------------------------------------------------------------------------------

_RUN_KEYS = tuple(f.name for f in _public_fields(RunSpec))
_TOP_KEYS = ("description", *_RUN_KEYS, "output", "runs")


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)


def _has_path(raw: Any, path: KeyPath) -> bool:
    for key in path:
        if not isinstance(raw, Mapping) or key not in raw:
            return False
        raw = raw[key]
    return True


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
            if key not in _TOP_KEYS:
                raise _Invalid((key,), "unknown key", known=_TOP_KEYS)
        description = _convert(str, data.get("description", ""), ("description",), {})
        output = _structure(OutputSection, data.get("output", {}), ("output",))
        shared = {k: data[k] for k in _RUN_KEYS if k in data}
        if "runs" not in data:
            runs = [_build_run(shared, ())]
        else:
            tables = data["runs"]
            if not isinstance(tables, (list, tuple)) or not tables:
                raise _Invalid(
                    ("runs",), f"expected one or more [[runs]] tables, got {tables!r}"
                )
            runs = []
            for i, table in enumerate(tables):
                if not isinstance(table, Mapping):
                    raise _Invalid(("runs", i), f"expected a table, got {table!r}")
                runs.append(_build_run(_deep_merge(shared, table), ("runs", i), shared, table))
            seen: dict[str, int] = {}
            for i, run in enumerate(runs):
                if run.name in seen:
                    raise _Invalid(
                        ("runs", i, "name"),
                        f"duplicate run name {run.name!r} (also run {seen[run.name]}); "
                        "run names name the run folders and must differ",
                    )
                seen[run.name] = i
    except _Invalid as exc:
        raise RecipeError(exc.render(_dotted)) from None
    return Recipe(runs=tuple(runs), description=description, output=output, source=source)


class _Rendered(_Invalid):
    """An :class:`_Invalid` whose message already carries its path."""

    def __init__(self, text: str):
        super().__init__((), text)

    def render(self, where: Any) -> str:
        return self.message


def _build_run(
    raw: Mapping[str, Any],
    prefix: KeyPath,
    shared: Mapping[str, Any] | None = None,
    own: Mapping[str, Any] | None = None,
) -> RunSpec:
    """Structure one run; errors name the table the offending value was written in."""

    def inherited(path: KeyPath) -> bool:
        return bool(prefix) and not _has_path(own, path) and _has_path(shared, path)

    def where(path: KeyPath) -> str:
        return _dotted(path if inherited(path) else prefix + tuple(path))

    try:
        run = _structure(RunSpec, raw, ())
        _check_registry(run)
    except _Invalid as exc:
        text = exc.render(where)
        if inherited(exc.path):  # a shared value may be wrong for one run only
            text += f" (shared value, inherited by {_dotted(prefix)})"
        raise _Rendered(text) from None
    if run.eval.batch_size is None:
        run = attrs.evolve(run, eval=attrs.evolve(run.eval, batch_size=run.data.batch_size))
    return run


def _check_registry(run: RunSpec) -> None:
    """Model and data set names, hyperparameters and options must exist in the registry."""
    failures = registry.plugin_failures()
    hint = f" (plugins that failed to load: {', '.join(sorted(failures))})" if failures else ""
    models = registry.list_models()
    if run.model.name not in models:
        raise _Invalid(
            ("model", "name"),
            f"unknown model {run.model.name!r}; available: {', '.join(models) or 'none'}{hint}",
        )
    known = list(registry.get_model_spec(run.model.name).hyperparameters())
    for key in run.model.hyperparameters:
        if key not in known:
            raise _Invalid(
                ("model", "hyperparameters", key),
                f"unknown hyperparameter of {run.model.name!r}; "
                f"available: {', '.join(known) or 'none'}",
            )
    datasets = registry.list_datasets()
    if run.data.name not in datasets:
        raise _Invalid(
            ("data", "name"),
            f"unknown data set {run.data.name!r}; available: "
            f"{', '.join(datasets) or 'none'}{hint}",
        )
    known = list(registry.get_dataset_spec(run.data.name).options())
    for key in run.data.options:
        if key not in known:
            raise _Invalid(
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
        raise RecipeError(f"{path}: invalid TOML: {_one_line(str(exc))}") from None
    for override in overrides:
        apply_override(data, override)
    return recipe_from_dict(data, source=str(path))


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
    parts: list[str | int] = key.split(".")
    if any(p == "" for p in parts):
        raise RecipeError(f"--set {key}: empty key segment")

    def fail(message: str) -> RecipeError:
        return RecipeError(f"--set {key}: {message}")

    # Walk the schema alongside the data.
    node: Any = "top"
    for i, part in enumerate(parts):
        here = _dotted(parts[:i]) or "the recipe"
        if node == "runs":
            runs = data.get("runs")
            if not isinstance(runs, list) or not runs:
                raise fail("the recipe has no [[runs]] tables")
            if not part.isdigit() or int(part) >= len(runs):
                raise fail(f"runs index must be 0..{len(runs) - 1}, got {part!r}")
            parts[i] = int(part)
            node = RunSpec
            continue
        if node == "top":
            known = {
                "description": str,
                **{f.name: f.type for f in _public_fields(RunSpec)},
                "output": OutputSection,
                "runs": "runs",
            }
        elif _is_section(node):
            known = {f.name: f.type for f in _public_fields(node)}
        elif _is_free_table(node):
            if i != len(parts) - 1:
                raise fail(f"{here} holds plain values, not tables")
            break
        else:
            raise fail(f"{here} is a value, not a table")
        if part not in known:
            close = difflib.get_close_matches(part, list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"known keys of {here}: {', '.join(known)}"
            )
            raise fail(f"unknown key; {hint}")
        node = known[part]

    # Set the value, creating tables on the way.
    value = _parse_value(text.strip())
    target: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = target[part] if isinstance(part, int) else target.setdefault(part, {})
        if not isinstance(nxt, (dict, list)):
            raise fail(f"{_dotted(parts[: i + 1])} is not a table in the recipe")
        target = nxt
    last = parts[-1]
    existing = target[last] if isinstance(target, list) else target.get(last)
    if isinstance(value, dict) and isinstance(existing, dict):
        value = _deep_merge(existing, value)  # an inline table adds keys, it keeps the rest
    target[last] = value


# --------------------------------------------------------------------------------------
# Back to data: resolved dictionaries, TOML text, run directories.
# --------------------------------------------------------------------------------------


def _unstructure(obj: Any) -> Any:
    if attrs.has(type(obj)):
        out = {}
        for f in _public_fields(type(obj)):
            value = getattr(obj, f.name)
            if value is None and f.default is not None and _takes_none_string(f.type):
                value = "none"  # TOML has no null; omitting the key would mean the default
            out[f.name] = _unstructure(value)
        return out
    if isinstance(obj, Mapping):
        return {k: _unstructure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_unstructure(v) for v in obj]
    return obj


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Every value of ``recipe``, defaults included, as plain TOML-ready data.

    A single-run recipe keeps the top-level form; a multi-run recipe lists each run in
    full under ``runs``. ``{recipe}`` in output.dir is replaced by the source file stem, so
    the result reproduces the run wherever it is stored. ``recipe_from_dict`` of the result
    equals ``recipe`` (up to that substitution).
    """
    output = _unstructure(recipe.output)
    if recipe.source is not None:
        output["dir"] = output["dir"].replace("{recipe}", Path(recipe.source).stem)
    out: dict[str, Any] = {"description": recipe.description}
    runs = [_unstructure(run) for run in recipe.runs]
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
    """Write ``data`` as TOML (with :mod:`tomli_w`): tables, arrays of tables, strings,
    numbers, booleans and arrays of those. ``None`` values are left out (TOML has no null)."""
    return tomli_w.dumps(_toml_ready(data, ()))


def write_resolved(recipe: Recipe, run_dir: str | Path, run: RunSpec | None = None) -> Path:
    """Write the fully resolved recipe to ``run_dir/recipe.toml`` atomically.

    Args:
        recipe: the loaded recipe.
        run_dir: the directory to write into (created if missing).
        run: if given, write a single-run recipe for just this run, with output.dir set to
            the directory it writes to, so the folder reproduces that run on its own.

    Returns:
        the path of the written file.
    """
    if run is not None:
        recipe = single_run(recipe, run)
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "recipe.toml"
    text = dump_toml(recipe_to_dict(recipe))
    atomic_write_text(target, text)
    return target


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
    if origin in (typing.Union, types.UnionType):
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
    if "default_doc" in field.metadata:
        return field.metadata["default_doc"]
    default = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):
        default = default.factory()
        if attrs.has(type(default)):
            return ""
    if default is None:
        return "unset"
    if isinstance(default, Mapping):
        return "{}"
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
                type_text += f" ({check.describe()})"
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
