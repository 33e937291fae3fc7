"""The recipe schema: frozen attrs sections, each field with its default, its help and
the validator that guards it. A section built in Python is checked exactly as a value
read from a recipe; a refused value raises :class:`BadValue`, a one-line
:class:`~pixelgen.errors.RecipeError` (``TrainSection.epochs: expected a positive
integer, got 0``) that :mod:`pixelgen.recipe.convert` rewrites with the key path the
recipe wrote.
"""

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs
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

from pixelgen.errors import RecipeError
from pixelgen.limits import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_HYPERPARAMETER,
    MAX_IMAGE_SIDE,
    MAX_IMAGES,
    MAX_MEASURE_SIDE,
    MAX_SAMPLES,
    MAX_SCALING_POINTS,
    MAX_SEED,
    MAX_STEPS,
    MAX_WORKERS,
    MIN_SEED,
    MIN_TEMPERATURE,
)
from pixelgen.nn.hyperparameters import LIKELIHOOD

#: The sample-quality metrics ``[score]`` and ``pixelgen score`` compute (see pixelgen.study.scoring).
SCORE_METRICS = ("fid", "is", "kid", "pr")
SCORE_FEATURES = ("inception", "classifier")

#: Every precision Lightning Fabric accepts (``lightning_fabric.connector._PRECISION_INPUT``),
#: passed to it as written. Copied, not imported: loading a recipe loads no Fabric
#: (tests/test_recipe.py checks the copy against Fabric's own list).
FABRIC_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true", "16-true", "bf16-true",
                     "transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16",
                     64, 32, 16)


class BadValue(RecipeError):
    """A value a field refuses; ``keys`` lead from the section to the value."""

    def __init__(self, owner: str, keys: tuple, expected: str, value: Any) -> None:
        super().__init__(f"{owner}.{'.'.join(map(str, keys))}: expected {expected}, got {value!r}")
        self.keys, self.expected, self.value = keys, expected, value


@attrs.frozen
class Expect:
    """A field's validator: the attrs ``validators`` decide, ``words`` say what passes."""

    words: str
    validators: tuple[Any, ...]

    def __call__(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        try:
            for validator in self.validators:
                validator(instance, attribute, value)
        except (TypeError, ValueError):
            raise BadValue(type(instance).__name__, (attribute.name,), self.words, value) from None


def expect(words: str, *validators: Any) -> Expect:
    return Expect(words, validators)


def unset_or(check: Expect) -> Expect:
    """``check``, or None: written "none" in a recipe (TOML has no null), None in Python."""

    def python_says_none(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, str) and value.lower() == "none":
            raise BadValue(type(instance).__name__, (attribute.name,), "None (the canonical form)", value)

    return expect(f'{check.words} or "none"', python_says_none, optional(and_(*check.validators)))


def _not_bool(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")


def _predicate(test: Any) -> Any:
    def validator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not test(value):
            raise ValueError(value)
    return validator


def one_of(*choices: Any) -> Expect:
    words = f"one of {', '.join(map(repr, choices))}" if len(choices) > 1 else repr(choices[0])
    return expect(words, _predicate(lambda v: not isinstance(v, (bool, float))), in_(choices))


def duration_seconds(value: float | str | None) -> float | None:
    """A time budget in seconds: a number of seconds, or ``"[DD:]HH:MM:SS"`` text as
    Lightning's ``max_time`` takes it; None for None or an unreadable value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 and _finite(value) else None
    if not isinstance(value, str):
        return None
    parts = value.split(":")
    if not 3 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        return None
    seconds = sum(int(p) * unit for p, unit in zip(reversed(parts), (1, 60, 3600, 86400)))
    return float(seconds) if seconds > 0 else None


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float: no optimizer or clock can use it
        return False


INTEGER = and_(instance_of(int), _not_bool)
NUMBER = and_(instance_of((int, float)), _not_bool, _predicate(_finite))


def integer_in(low: int, high: int) -> Expect:
    """An integer in ``low..high``; the bounds come from :mod:`pixelgen.limits`."""
    return expect(f"an integer in {low:,}..{high:,}", INTEGER, ge(low), le(high))


SEED = integer_in(MIN_SEED, MAX_SEED)
BATCH_SIZE = integer_in(1, MAX_BATCH_SIZE)
A_STRING = expect("a string", instance_of(str))
TRUE_OR_FALSE = expect("true or false", instance_of(bool))
POSITIVE = expect("a positive number", NUMBER, gt(0))
NON_NEGATIVE = expect("a non-negative number", NUMBER, ge(0))
FRACTION = expect("a number in [0, 1)", NUMBER, ge(0), lt(1))
FOLDER_NAME = expect(  # run names become folder names
    "a folder name (not empty, no '/')", instance_of(str),
    _predicate(lambda s: s not in ("", ".", "..") and "/" not in s and "\\" not in s))
PATH_TEMPLATE = expect(
    "a path using only the {recipe} and {model} placeholders", instance_of(str),
    _predicate(lambda s: s != "" and all(m in ("recipe", "model") for m in re.findall(r"\{([^{}]*)\}", s))))
DURATION = expect('a positive number of seconds or "[DD:]HH:MM:SS"',
                  optional(_predicate(lambda v: duration_seconds(v) is not None)))


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
    if isinstance(value, Mapping):
        return FrozenTable(value)  # a table inside, e.g. model.hyperparameters.likelihood
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def _toml_values(instance: Any, attribute: attrs.Attribute, table: Any) -> None:
    """Free tables hold TOML values: strings, numbers, booleans and arrays of those; a model's
    ``likelihood`` may also be a table (its name and options, see
    :func:`pixelgen.registry.likelihood_choice`)."""
    owner = type(instance).__name__

    def check(value: Any, keys: tuple) -> None:
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                check(item, keys + (i,))
        elif isinstance(value, Mapping) and keys == ("hyperparameters", LIKELIHOOD):
            for key, item in value.items():
                check(item, keys + (key,))
        elif not isinstance(value, (str, int, float)):  # bool is an int
            raise BadValue(owner, keys, "a TOML string, number, boolean or array", value)

    if not isinstance(table, Mapping):
        raise BadValue(owner, (attribute.name,), "a table", table)
    for key, value in table.items():
        check(value, (attribute.name, key))


def _field(help: str, default: Any = attrs.NOTHING, validator: Any = None, array: bool = False,
           **metadata: Any) -> Any:
    """A recipe key: its default, its validator and its ``help`` (read by the docs); an
    ``array`` (or a key whose default is a tuple) stores a list as a tuple."""
    array = array or isinstance(default, tuple)
    converter = (lambda v: tuple(v) if isinstance(v, list) else v) if array else None
    return attrs.field(default=default, validator=validator, converter=converter,
                       metadata={"help": help, **metadata})


def _free_table(help: str) -> Any:
    """A table of keys the registry knows (model hyperparameters, data set options)."""
    return attrs.field(factory=FrozenTable, validator=_toml_values, metadata={"help": help},
                       converter=lambda v: FrozenTable(v) if isinstance(v, Mapping) else v)


def _table(cls: type, help: str, required: bool = False) -> Any:
    default = attrs.NOTHING if required else attrs.Factory(cls)
    return _field(help, default, expect(f"an instance of {cls.__name__}", instance_of(cls)))


_schema = attrs.frozen(kw_only=True)


@_schema
class ModelSection:
    """``[model]``: which registered architecture to build, and with what."""

    name: str = _field("Registered model name (see `pixelgen plugins`), e.g. \"pixelcnn\".",
                       validator=A_STRING)
    hyperparameters: Mapping[str, Any] = _free_table(
        "Keyword hyperparameters passed to the model factory ([model.hyperparameters]); "
        "keys must be parameters of that model, omitted ones keep the model's defaults.")


@_schema
class DataSection:
    """``[data]``: the data set, its split and how it is batched."""

    name: str = _field("Registered data set name, e.g. \"cifar10\" or \"mnist\".", "cifar10", A_STRING)
    root: str | None = _field(
        "Directory holding (or receiving) the data; unset means the user cache directory.", None,
        expect("a string", optional(instance_of(str))))
    batch_size: int = _field("Training batch size per device.", 16, BATCH_SIZE)
    validation_fraction: float = _field(
        "Fraction of the training split held out for validation when the data set has "
        "no validation split of its own.", 0.1, FRACTION)
    flips: bool = _field("Random horizontal flips of training images.", False, TRUE_OR_FALSE)
    num_workers: int = _field("DataLoader worker processes (0 loads in the main process).",
                              0, integer_in(0, MAX_WORKERS))
    image_size: int | None = _field(
        "Resize images to this square size (image folders); unset keeps the stored size.",
        None, unset_or(integer_in(1, MAX_IMAGE_SIDE)))
    options: Mapping[str, Any] = _free_table(
        "Extra keyword options for the data set factory ([data.options]); keys must be "
        "options of that data set.")
    download: bool = _field("Download the data set if it is not found under root.", True, TRUE_OR_FALSE)
    limit_train: int | None = _field(
        "Use only the first N training images (quick runs); unset uses all.", None,
        unset_or(integer_in(1, MAX_IMAGES)))
    limit_val: int | None = _field(
        "Use only the first N validation images; unset uses all.", None,
        unset_or(integer_in(1, MAX_IMAGES)))
    limit_test: int | None = _field(
        "Use only the first N test images; unset uses all.", None,
        unset_or(integer_in(1, MAX_IMAGES)))


@_schema
class OptimizerSection:
    """``[train.optimizer]``."""

    name: Literal["adam"] = _field("Optimizer; only \"adam\" for now.", "adam", one_of("adam"))
    lr: float = _field("Learning rate.", 1e-3, POSITIVE)
    weight_decay: float = _field("L2 weight decay.", 0.0, NON_NEGATIVE)
    betas: tuple[float, float] = _field(
        "Adam coefficients for the running averages of the gradient and its square.", (0.9, 0.999),
        expect("an array of 2 items, each a number in [0, 1)",
               deep_iterable(and_(*FRACTION.validators), and_(instance_of(tuple), min_len(2), max_len(2)))))


@_schema
class SchedulerSection:
    """``[train.scheduler]``: learning-rate schedule, stepped on validation loss."""

    name: Literal["plateau", "none"] = _field(
        "\"plateau\" multiplies the learning rate by factor when validation loss stops "
        "improving; \"none\" keeps it constant.", "plateau", one_of("plateau", "none"))
    factor: float = _field("Multiplier applied to the learning rate on a plateau.", 0.5,
                           expect("a number in (0, 1)", NUMBER, gt(0), lt(1)))
    patience: int = _field(
        "Validations without improvement before the learning rate is reduced.", 2, integer_in(0, MAX_EPOCHS))
    min_lr: float = _field("Lower bound on the learning rate.", 0.0, NON_NEGATIVE)


@_schema
class TrainSection:
    """``[train]``: the optimisation loop and the hardware it runs on."""

    epochs: int = _field("Maximum number of passes over the training data.", 100,
                        integer_in(1, MAX_EPOCHS))
    max_steps: int | None = _field(
        "Stop after this many optimizer steps in total; unset means no step limit.", None,
        unset_or(integer_in(1, MAX_STEPS)))
    optimizer: OptimizerSection = _table(OptimizerSection, "Optimizer settings.")
    scheduler: SchedulerSection = _table(SchedulerSection, "Learning-rate schedule.")
    early_stopping_patience: int = _field(
        "Stop after this many validations without improvement; 0 disables early stopping.",
        10, integer_in(0, MAX_EPOCHS))
    gradient_clip_norm: float | None = _field(
        "Clip the global gradient norm to this value; \"none\" disables clipping.", 1.0,
        unset_or(POSITIVE))
    seed: int = _field("Seed for parameter initialisation, data order and augmentation.", 0, SEED)
    precision: Literal[FABRIC_PRECISIONS] = _field(
        "Lightning Fabric precision, any that Fabric accepts, passed to it as written.", "32-true",
        one_of(*FABRIC_PRECISIONS))
    accelerator: str = _field("Fabric accelerator: \"auto\", \"cpu\", \"cuda\", \"mps\".",
                              "auto", A_STRING)
    devices: int | str = _field(
        "Number of devices, or a Fabric device string such as \"auto\" or \"0,1\".", 1,
        expect(f"an integer in 1..{MAX_WORKERS:,} or a string", or_(and_(INTEGER, gt(0), le(MAX_WORKERS)), instance_of(str))))
    num_nodes: int = _field("Number of machines.", 1, integer_in(1, MAX_WORKERS))
    strategy: str = _field("Fabric strategy, e.g. \"auto\", \"ddp\".", "auto", A_STRING)
    log_every_n_steps: int = _field("Log training loss every N optimizer steps.", 50,
                                     integer_in(1, MAX_STEPS))
    val_every_n_epochs: int = _field("Validate every N epochs.", 1, integer_in(1, MAX_EPOCHS))
    compile: bool = _field("Wrap the model in torch.compile.", False, TRUE_OR_FALSE)
    max_time: float | str | None = _field(
        "Time budget of the training loop, summed over resumes: seconds, or \"HH:MM:SS\" / "
        "\"DD:HH:MM:SS\" as Lightning's max_time; at the budget the run stops after the "
        "current step, validates, checkpoints, evaluates and samples. Unset: no budget.", None,
        DURATION)
    ema_decay: float = _field(
        "Decay of an exponential moving average of the weights, updated every optimizer step "
        "and used for validation, early stopping, test and sampling; 0 turns it off. "
        "openai/pixel-cnn and PixelSNAIL use 0.9995 on long runs; short runs want less "
        "(the average covers about 1 / (1 - decay) steps, and the first step's weights keep a "
        "share of decay ** steps: 0.999 over 800 steps leaves them 45%).", 0.0, FRACTION)
    threads: int | None = _field(
        "torch threads for training, evaluation and sampling in this process (a batch of at most "
        "16 images is sampled on the CPU with one); unset: one per two CPU cores (on a 2-core "
        "machine one thread per process measured fastest).", None,
        unset_or(integer_in(1, MAX_WORKERS)))
    warmup_steps: int = _field(
        "Raise the learning rate linearly from 0 over this many optimizer steps.", 0,
        integer_in(0, MAX_STEPS))
    accumulate_grad_batches: int = _field(
        "Optimizer step every N batches, gradients summed (Fabric's no_backward_sync under DDP).", 1,
        integer_in(1, MAX_STEPS))


@_schema
class EvalSection:
    """``[eval]``: the final evaluation in bits/dim."""

    split: Literal["test", "val", "train"] = _field("Split to report bits/dim on.", "test",
                                                    one_of("test", "val", "train"))
    batch_size: int | None = _field(
        "Evaluation batch size; unset uses data.batch_size (filled in on load).", None,
        unset_or(BATCH_SIZE))


@_schema
class SampleSection:
    """``[sample]``: images generated at the end of a run."""

    n: int = _field("Number of samples generated at the end of the run, stored in the archive "
                    "and drawn as samples.png beside it (0: none).", 16,
                    integer_in(0, MAX_SAMPLES))
    temperature: float = _field(
        "Softmax temperature; below 1 sharpens (at least 1e-6: below it the logits overflow).", 1.0,
        expect(f"a number of at least {MIN_TEMPERATURE!r}", NUMBER, ge(MIN_TEMPERATURE)))
    top_p: float = _field(
        "Nucleus sampling: keep the smallest set of intensities with this total "
        "probability; 1 samples from the full distribution.", 1.0,
        expect("a number in (0, 1]", NUMBER, gt(0), le(1)))
    seed: int = _field("Seed of the sampling random generator.", 0, SEED)
    sampler: Literal["fast", "reference"] = _field(
        "\"fast\" uses each model's cached one-step sampler; \"reference\" recomputes the "
        "whole image per sub-pixel (slow, for checking).", "fast", one_of("fast", "reference"))
    batch_size: int = _field("Samples generated per batch.", 16, BATCH_SIZE)
    tensorboard_n: int = _field(
        "Samples drawn after every epoch and logged to TensorBoard as one grid (0: none).", 4,
        integer_in(0, MAX_SAMPLES))


@_schema
class ScoreSection:
    """``[score]``: sample-quality metrics of the final model, computed after its samples."""

    metrics: tuple[Literal[SCORE_METRICS], ...] = _field(
        "Metrics computed at the end of the run on score.n new samples against as many training "
        "images: \"fid\" (Frechet distance), \"is\" (Inception Score), \"kid\" (kernel distance), "
        "\"pr\" (precision and recall); empty: no scoring.", (),
        expect(f"an array whose items are each {one_of(*SCORE_METRICS).words}",
               deep_iterable(in_(SCORE_METRICS), instance_of(tuple))))
    n: int = _field("Samples scored, and training images they are scored against.", 1000,
                    integer_in(10, MAX_SAMPLES))
    features: Literal[SCORE_FEATURES] = _field(
        "Feature space: \"inception\" (the standard Inception-v3 weights, read from a local file) or "
        "\"classifier\" (a small classifier pixelgen trains once on the data set's labels; its "
        "figures are not comparable with published ones).", "inception", one_of(*SCORE_FEATURES))
    weights_path: str | None = _field(
        "The Inception weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth); "
        "unset: $PIXELGEN_INCEPTION_WEIGHTS, then torch's hub cache (<hub>/checkpoints/).", None,
        expect("a string", optional(instance_of(str))))
    seed: int = _field("Seed of the sampling of the scored images.", 0, SEED)


@_schema
class OutputSection:
    """``[output]``: where runs write checkpoints, logs and the archive."""

    dir: str = _field(
        "Run directory; {recipe} is replaced by the recipe file stem (\"recipe\" when "
        "there is no file) and {model} by the model name. Each run of a multi-run "
        "recipe writes to a subfolder named after the run.", "runs/{recipe}", PATH_TEMPLATE)
    archive: str = _field("Zarr archive file name inside the run directory.", "archive.zarr",
                          FOLDER_NAME)


@_schema
class PaperSection:
    """``[paper]``: the published figure a run reproduces, shown beside it by ``pixelgen compare``."""

    bits_per_dim: float | None = _field(
        "The published bits/dim of this run's configuration (e.g. one cell of a paper's ablation "
        "table); unset: the model's own published figure on the run's data set, if its plugin "
        "declares one (Pixel RNN, table 5, for the three CIFAR-10 models).", None,
        unset_or(POSITIVE))
    source: str = _field(
        "Where the figure is published and on what, e.g. \"Pixel RNN, table 2 (CIFAR-10 "
        "validation)\"; shown in the comparison's footnote.", "", A_STRING)


def _points(high: int, what: str) -> Expect:
    """An array of 1 to MAX_SCALING_POINTS integers in 1..high, or "none"."""
    return unset_or(expect(
        f"an array of 1 to {MAX_SCALING_POINTS} {what} in 1..{high:,}",
        deep_iterable(and_(INTEGER, ge(1), le(high)), and_(instance_of(tuple), min_len(1),
                                                           max_len(MAX_SCALING_POINTS)))))


@_schema
class ReportSection:
    """``[report]``: what the comparison that ends a multi-run recipe measures beyond each
    run's own figures (``pixelgen compare`` takes the same choices as options)."""

    scaling: bool = _field(
        "Measure the scaling sweep: forward + backward time and activation memory against image "
        "size and depth, on random images (it measures the architectures, not the trained "
        "weights; off by default, as in pixelgen compare --scaling).", False, TRUE_OR_FALSE)
    scaling_sizes: tuple[int, ...] | None = _field(
        "Image sides of the scaling sweep; unset: the comparison's default (8, 16, 32). Setting "
        "it measures the sweep.", None, _points(MAX_MEASURE_SIDE, "sides"), array=True)
    scaling_depths: tuple[int, ...] | None = _field(
        "Layer counts of the scaling sweep; unset: the comparison's default (1, 2, 4). Setting "
        "it measures the sweep.", None, _points(MAX_HYPERPARAMETER, "depths"), array=True)
    time_reference: bool = _field(
        "Time the reference sampler on whole images instead of extrapolating from a few "
        "sub-pixels (minutes per image for the recurrent models on a CPU).", False, TRUE_OR_FALSE)


@_schema
class RunSpec:
    """One trained model: the sections of a single-run recipe, or one ``[[runs]]`` entry."""

    model: ModelSection = _table(ModelSection, "The model to train ([model]).", required=True)
    name: str = _field(
        "Run name; names the run's subfolder in a multi-run recipe.",
        attrs.Factory(lambda self: self.model.name, takes_self=True), FOLDER_NAME,
        default_doc="model.name")
    data: DataSection = _table(DataSection, "The data set ([data]).")
    train: TrainSection = _table(TrainSection, "Training loop settings ([train]).")
    eval: EvalSection = _table(EvalSection, "Final evaluation ([eval]).")
    sample: SampleSection = _table(SampleSection, "Samples drawn after training ([sample]).")
    score: ScoreSection = _table(ScoreSection, "Sample-quality metrics after the samples ([score]).")
    paper: PaperSection = _table(PaperSection, "The published figure the run reproduces ([paper]).")


def _runs(instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    if not value or not all(isinstance(r, RunSpec) for r in value):
        raise RecipeError("Recipe.runs: expected at least one RunSpec")


@_schema
class Recipe:
    """A whole recipe: one or more runs sharing an output location."""

    runs: tuple[RunSpec, ...] = attrs.field(converter=tuple, validator=_runs, metadata={
        "help": "[[runs]]: several runs to compare; each takes name, model, data, "
        "train, eval and sample tables, deep-merged over the top-level ones."})
    description: str = _field("Free text describing the recipe.", "", A_STRING)
    output: OutputSection = _table(OutputSection, "Output location ([output]).")
    report: ReportSection = _table(
        ReportSection, "What the comparison of a multi-run recipe measures ([report]).")
    source: str | None = attrs.field(default=None, metadata={
        "help": "Path of the recipe file, if any (not a recipe key).", "internal": True})

    @property
    def compare(self) -> bool:
        """True when the recipe trains several runs to compare."""
        return len(self.runs) > 1


def public_fields(cls: type) -> list[attrs.Attribute]:
    """The fields of ``cls`` a recipe may set."""
    return [f for f in attrs.fields(cls) if not f.metadata.get("internal")]
