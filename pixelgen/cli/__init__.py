"""The ``pixelgen`` command line: parses arguments, checks what is cheap to check, then runs
the command.

A command pays only for what it uses. Parsing loads no torch, so ``pixelgen --help`` and
``pixelgen COMMAND --help`` answer at once; path arguments are checked by the parser (a
missing checkpoint answers without loading torch), and a recipe with its ``--set``
overrides is loaded and validated here too, before the command's module loads the training
stack. The command itself is ``cmd_<command>`` in its own module, ``pixelgen.cli.<module>``
of :data:`COMMAND_MODULES`, loaded when it runs (the one deliberately lazy import in
pixelgen): each module imports at its top what that command needs and nothing more.

Output paths are checked here too, by the functions the library checks them with
(:mod:`pixelgen.store.runs`): no command writes onto a run's own file, and none replaces an
existing file unless ``--force`` is given.

Every user error is a :class:`pixelgen.errors.PixelgenError`; :func:`main` prints it as one
line on stderr and exits with status 2, never with a traceback (``PIXELGEN_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import pathlib
import re
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import attrs

from pixelgen.errors import (
    CausalityError,
    Interrupted,
    PixelgenError,
    interrupted_by_signals,
    one_line,
    signal_received,
)
from pixelgen.limits import (
    MAX_BATCH_SIZE,
    MAX_HYPERPARAMETER,
    MAX_IMAGE_SIDE,
    MAX_MEASURE_SIDE,
    MAX_SAMPLES,
    MAX_SCALING_POINTS,
    MAX_SEED,
    MIN_SEED,
)
from pixelgen.recipe import SampleSection, load_recipe
from pixelgen.store.files import not_a_file
from pixelgen.store.zoo import PREFIX as ZOO_PREFIX  # not "zoo": the name of the module pixelgen.cli.zoo
from pixelgen.store.zoo import ZOO_ENV, ZooError, resolve
from pixelgen.store.runs import check_output_file, check_output_folder, quantized_path
from pixelgen.study.options import ANALYSIS_JSON, COMPARISON_JSON, CompareOptions

#: The module under ``pixelgen.cli`` that holds each command's ``cmd_<command>``.
COMMAND_MODULES = {
    "plugins": "plugins", "check": "check", "sample": "sample", "run": "run", "eval": "evaluate",
    "compare": "report", "analyse": "report", "score": "score", "quantize": "quantize", "recipe_show": "recipe",
    "compress": "compress", "decompress": "compress", "zoo": "zoo",
}


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _bounded_int(low: int, high: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} in {low}..{high:,}, got {text}")
        return value
    return parse


def _zoo_file(text: str) -> str:
    """``zoo:NAME``'s file, its SHA-256 checked (:func:`pixelgen.store.zoo.resolve`); any other
    text as it is."""
    try:
        return str(resolve(text)) if text.startswith(ZOO_PREFIX) else text
    except ZooError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _checkpoint_file(text: str) -> str:
    """A checkpoint argument (a file, or ``zoo:NAME``: its file), checked to be a file before
    anything loads torch."""
    text = _zoo_file(text)
    path = pathlib.Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {not_a_file(path, 'checkpoint file')}")
    return text


def _run_or_checkpoint(text: str) -> str:
    """A run folder or a checkpoint file (or ``zoo:NAME``: its file), checked to exist before
    anything loads torch."""
    text = _zoo_file(text)
    path = pathlib.Path(text)
    if not (path.is_dir() or path.is_file()):
        raise argparse.ArgumentTypeError(f"{text}: {not_a_file(path, 'run folder or checkpoint file')}")
    return text


def _did_you_mean(message: str) -> str:
    """argparse's "invalid choice: 'rn' (choose from ...)" with the closest choice named."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found is None:
        return message
    choices = re.findall(r"'([^']*)'", found[2]) or [c.strip() for c in found[2].split(",")]
    close = difflib.get_close_matches(found[1], choices, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (status 2), like every other pixelgen error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_did_you_mean(message)} (see {self.prog} --help)\n")


def _size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or not int(height) or not int(width):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 32x32, got {text!r}")
    if max(int(height), int(width)) > MAX_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"expected sides of at most {MAX_IMAGE_SIDE}, got {text!r}")
    return int(height), int(width)


def _add_force(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what} (never a run's own file)")


def _check_report_folder(marker: str):
    """The ``prepare`` of a report command: its sweeps and ``--out`` checked before torch loads."""
    def prepare(args: argparse.Namespace) -> None:
        _check_sweeps(args)
        if args.out is not None:
            check_output_folder(args.out, marker, force=args.force)
    return prepare


def _add_measure_options(p: argparse.ArgumentParser, marker: str) -> None:
    default = {f.name: f.default for f in attrs.fields(CompareOptions)}
    p.add_argument("--out", metavar="DIR", help=f"output folder (new, empty, or an earlier report: its {marker})")
    _add_force(p, "write into an --out folder of other files")
    p.set_defaults(prepare=_check_report_folder(marker))
    p.add_argument("--device", help=f"where to measure: cpu, cuda, ... (default: {default['device']})")
    side, depth = _bounded_int(1, MAX_MEASURE_SIDE, "a side"), _bounded_int(1, MAX_HYPERPARAMETER, "a depth")
    p.add_argument("--field-size", type=side, metavar="N",
                   help=f"receptive-field canvas side (default: {default['field_size']})")
    p.add_argument("--scaling", action="store_true",
                   help="measure the scaling sweep: forward + backward time and activation memory against image "
                        "size and depth, on random images (off by default: it measures the architecture, not "
                        "the trained weights, and takes longer than the rest)")
    p.add_argument("--scaling-sizes", type=side, nargs="+", metavar="N",
                   help=f"image sizes of the scaling sweep, at most {MAX_SCALING_POINTS}; implies --scaling "
                        f"(default: {' '.join(map(str, default['scaling_sizes']))})")
    p.add_argument("--scaling-depths", type=depth, nargs="+", metavar="N",
                   help=f"layer counts of the scaling sweep, at most {MAX_SCALING_POINTS}; implies --scaling "
                        f"(default: {' '.join(map(str, default['scaling_depths']))})")
    p.add_argument("--timing-images", type=_bounded_int(1, MAX_SAMPLES, "a number of images"), metavar="N",
                   help=f"images per sampler timing (default: {default['timing_images']})")
    p.add_argument("--time-reference", action="store_true",
                   help="time the reference sampler on whole images (minutes per image for an LSTM on a CPU); "
                        f"by default its time is extrapolated from {default['reference_subpixels']} sub-pixels")


def _check_sweeps(args: argparse.Namespace) -> None:
    """At most MAX_SCALING_POINTS points per scaling sweep, before anything is measured."""
    for option in ("scaling_sizes", "scaling_depths"):
        given = getattr(args, option) or ()
        if len(given) > MAX_SCALING_POINTS:
            raise PixelgenError(f"--{option.replace('_', '-')}: {len(given)} values; a sweep times at most "
                                f"{MAX_SCALING_POINTS}")


EXAMPLES = {
    "pixelgen": """examples:
  pixelgen run recipes/quickstart.toml           train, evaluate and sample a small PixelCNN (about a minute)
  pixelgen sample runs/quickstart/best.ckpt -n 16
  pixelgen plugins                               the models and data sets installed
  pixelgen COMMAND --help                        each command's options and examples""",
    "plugins": """examples:
  pixelgen plugins""",
    "zoo": """examples:
  pixelgen zoo                                        the pretrained models installed
  pixelgen eval zoo:fmnist_pixelcnn                   any checkpoint argument takes zoo:NAME
  pixelgen sample zoo:fmnist_pixelcnn -n 16 --seed 0  the grid goes to the current folder""",
    "check": """examples:
  pixelgen check pixelcnn
  pixelgen check row_lstm --hp hidden_channels=8 --hp n_layers=2 --channels 3 --height 5 --width 5
  pixelgen check diagonal_bilstm --full-width --channels 3""",
    "sample": """examples:
  pixelgen sample runs/quickstart/best.ckpt -n 16 --seed 0
  pixelgen sample runs/quickstart/best.ckpt -n 8 --temperature 0.9 --png grid.png --no-archive
  pixelgen sample runs/cifar_diag/best.ckpt -n 4 --complete photo.png --rows 16""",
    "run": """examples:
  pixelgen run recipes/quickstart.toml
  pixelgen run recipes/quickstart.toml --set train.epochs=5 --out runs/longer
  pixelgen run recipes/quickstart.toml --resume         continue after a stop, a kill or a time budget
  pixelgen run recipes/cifar_diag.toml --set train.devices=4 --set train.strategy=ddp""",
    "eval": """examples:
  pixelgen eval runs/quickstart/best.ckpt
  pixelgen eval runs/quickstart/best.ckpt --split val --json --limit 0""",
    "compare": """examples:
  pixelgen compare runs/fmnist_compare/pixelcnn runs/fmnist_compare/row_lstm --out report/""",
    "score": """examples:
  pixelgen score runs/quickstart --features classifier          FID, IS, KID, precision/recall of 1000 samples
  pixelgen score runs/quickstart --metrics fid,kid --n 5000 --inception-weights ~/weights/
  pixelgen score runs/quickstart --features classifier --baseline test    the floor: test images
  pixelgen score runs/quickstart/best-int8.ckpt --features classifier --json""",
    "quantize": """examples:
  pixelgen quantize runs/quickstart/best.ckpt --to int8                  writes runs/quickstart/best-int8.ckpt
  pixelgen quantize runs/quickstart/best.ckpt --to bfloat16 --out small.ckpt && pixelgen eval small.ckpt""",
    "compress": """examples:
  pixelgen compress runs/quickstart/best.ckpt images.npy -o images.pgz     a uint8 array (N, C, H, W) or (N, H, W)
  pixelgen compress runs/quickstart/best.ckpt shirt.png boot.png -o two.pgz""",
    "decompress": """examples:
  pixelgen decompress runs/quickstart/best.ckpt images.pgz -o decoded/     000000.png, 000001.png, ...
  pixelgen decompress runs/quickstart/best.ckpt images.pgz -o images.npy""",
    "analyse": """examples:
  pixelgen analyse runs/quickstart/best.ckpt --out analysis/
  pixelgen analyse runs/quickstart/best.ckpt --scaling     with the scaling sweep""",
    "recipe": """examples:
  pixelgen recipe show recipes/quickstart.toml                       every key, defaults included
  pixelgen recipe show recipes/quickstart.toml --set train.epochs=5 > mine.toml && pixelgen run mine.toml""",
}


def _package_version() -> str:
    try:
        return version("pixelgen")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _command(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, epilog=EXAMPLES[name],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _load_recipe(args: argparse.Namespace) -> None:
    """Load and validate the recipe with its ``--set`` overrides (``args.loaded_recipe``),
    before the command's module loads torch, Fabric, zarr and matplotlib: a mistyped key
    answers at once."""
    args.loaded_recipe = load_recipe(args.recipe, args.set)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="pixelgen", description="PixelRNN-family image models: train, "
                            "evaluate, sample and compare from TOML recipes", epilog=EXAMPLES["pixelgen"],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pixelgen {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_plugins(sub)
    _add_zoo(sub)
    _add_check(sub)
    _add_sample(sub)
    _add_run(sub)
    _add_eval(sub)
    _add_compare(sub)
    _add_analyse(sub)
    _add_score(sub)
    _add_quantize(sub)
    _add_compress(sub)
    _add_decompress(sub)
    _add_recipe(sub)
    return parser


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "plugins", "list models and data sets with their plugins and hyperparameters")
    p.set_defaults(command_function="plugins")


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "zoo", "list the pretrained models of the zoo, each loaded as zoo:NAME")
    p.description += (
        " wherever a checkpoint path is accepted (eval, sample, score, compress, decompress, analyse, "
        "compare, quantize); its file's SHA-256 is checked against the manifest first. Outputs that "
        "default to the checkpoint's folder go to the current folder instead (sample writes no archive "
        f"unless --archive is given). ${ZOO_ENV} names another zoo folder."
    )
    p.add_argument("--json", action="store_true", help="print the records as one JSON list")
    p.set_defaults(command_function="zoo")


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "check", "prove a registered model autoregressive by its Jacobian")
    p.description += (
        ", at the model's real depth, kernel sizes and other hyperparameters but its narrowest "
        "widths: every width (a *_channels hyperparameter other than in_channels) not given "
        "with --hp becomes the smallest multiple of the colours C, at least 4 channels per "
        "colour group, that the model builds with. Width cannot change which sub-pixels depend "
        "on which: masks and scans connect colour groups by kernel position, an output depends "
        "on an input exactly when a path joins them through that graph (its shape set by the "
        "kernels, the masks and the depth, not by how many channels a group holds), and at "
        "random, perturbed weights a path contributes unless a ReLU switches a unit on it off "
        "for every input, which a few channels per group and four draws, each with its own "
        "random weights, prevent: the narrowed check sees what the declared widths see "
        "(docs/models.md). "
        "--full-width checks at the declared widths instead (slow: minutes)."
    )
    p.add_argument("model", help="a registered model name (see pixelgen plugins)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyperparameter of the model, e.g. --hp n_layers=2 (repeatable)")
    p.add_argument("--channels", type=_bounded_int(1, 4, "a number of colours"), nargs="+", default=[1, 3],
                   help="colours C to check, each in turn (default: 1 3)")
    p.add_argument("--height", type=_bounded_int(1, 32, "an image height"), default=6,
                   help="image height of the check (default: 6)")
    p.add_argument("--width", type=_bounded_int(1, 32, "an image width"), default=7,
                   help="image width of the check (default: 7)")
    p.add_argument("--full-width", action="store_true",
                   help="check at the declared widths, not the narrowest (slow)")
    p.set_defaults(command_function="check")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "sample", "draw images from a checkpoint into a PNG grid and the run's archive")
    p.add_argument("checkpoint", type=_checkpoint_file, help="a .ckpt file written by pixelgen run, or zoo:NAME (see pixelgen zoo)")
    p.add_argument("-n", type=_bounded_int(1, MAX_SAMPLES, "a number of images"), default=64,
                   help="number of images (default: 64)")
    # The sampling settings' defaults are the recipe's [sample] ones, from the one place they live
    default = {f.name: f.default for f in attrs.fields(SampleSection)}
    p.add_argument("--temperature", type=float, default=default["temperature"],
                   help=f"softmax temperature (default: {default['temperature']})")
    p.add_argument("--top-p", type=float, default=default["top_p"],
                   help=f"nucleus sampling mass; 1 is off (default: {default['top_p']})")
    p.add_argument("--seed", type=_bounded_int(MIN_SEED, MAX_SEED, "a seed"),
                   help="seed of the sampling generator (default: random, recorded)")
    p.add_argument("--sampler", choices=["fast", "reference"], default=default["sampler"],
                   help="fast: cached one-pixel steps; reference: a full forward pass per sub-pixel "
                        f"(default: {default['sampler']})")
    p.add_argument("--label", type=_bounded_int(0, MAX_HYPERPARAMETER - 1, "a class"),
                   help="class of every image (conditional models; default: 0, 1, ... in turn)")
    p.add_argument("--complete", metavar="IMAGE", help="image file whose top --rows rows every sample keeps")
    p.add_argument("--rows", type=_bounded_int(1, MAX_IMAGE_SIDE, "a number of rows"), help="rows of --complete to keep")
    p.add_argument("--size", type=_size, metavar="HxW",
                   help="image size (default: the --complete image's, else the run's data set's)")
    p.add_argument("--png", metavar="PATH", help="a new grid file (default: samples-<key>.png beside the checkpoint)")
    p.add_argument("--archive", metavar="PATH", help="archive to append to (default: the run's, next to the checkpoint)")
    p.add_argument("--no-archive", action="store_true", help="do not archive the samples")
    p.add_argument("--batch-size", type=_bounded_int(1, MAX_BATCH_SIZE, "a batch size"), default=default["batch_size"],
                   help=f"images generated at once (default: {default['batch_size']})")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda where available)")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="ema: the run's average of its weights; raw: the trained weights (default: ema where kept)")
    _add_force(p, "an existing --png file")
    p.set_defaults(command_function="sample", prepare=_check_png)


def _check_png(args: argparse.Namespace) -> None:
    if args.png is not None:
        check_output_file(args.png, force=args.force, flag="--png", reading=args.checkpoint)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "run", "train and evaluate every run of a TOML recipe on Lightning Fabric")
    p.add_argument("recipe", help="recipe file, e.g. recipes/quickstart.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output folder in place of the recipe's output.dir")
    p.add_argument("--resume", action="store_true",
                   help="continue each run from its last.ckpt exactly where it stopped")
    p.set_defaults(command_function="run", prepare=_load_recipe)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "eval", "NLL and bits/dim of a checkpoint on a data split")
    p.add_argument("checkpoint", type=_checkpoint_file, help="a .ckpt file written by pixelgen run, or zoo:NAME (see pixelgen zoo)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test",
                   help="the data split scored: test, val (the run's validation images) or train (default: test)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-root", metavar="DIR", help="data folder in place of the recorded data.root")
    p.add_argument("--limit", type=_non_negative_int, metavar="N",
                   help="first N images (default: the run's data.limit_<split>; 0: all)")
    p.add_argument("--accelerator", default="auto", help="Fabric accelerator (default: auto)")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="the run's average of its weights (ema) or the trained weights (raw); "
                        "default: the average where the run kept one")
    p.set_defaults(command_function="eval")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "compare", "compare trained runs: report.md, report.html and figures")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=_run_or_checkpoint,
                   help="run folders written by pixelgen run, or checkpoint files (e.g. quantized copies, zoo:NAME)")
    p.add_argument("--json", action="store_true", help="print the table numbers as one JSON object")
    _add_measure_options(p, COMPARISON_JSON)
    p.set_defaults(command_function="compare")


def _add_analyse(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "analyse", "one checkpoint's receptive field, gradient flow and (--scaling) scaling")
    p.add_argument("checkpoint", type=_checkpoint_file, help="a .ckpt file written by pixelgen run, or zoo:NAME (see pixelgen zoo)")
    _add_measure_options(p, ANALYSIS_JSON)
    p.set_defaults(command_function="analyse")


METRICS = ("fid", "is", "kid", "pr")  # pixelgen.recipe.SCORE_METRICS, without loading the recipes


def _metrics(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(METRICS)}, got {text!r}")
    return names


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "score", "sample-quality metrics (FID, IS, KID, precision/recall) of a model's samples")
    p.add_argument("target", metavar="CKPT_OR_RUN_DIR", type=_run_or_checkpoint,
                   help="a run folder (figures stored in its archive) or a checkpoint file (or zoo:NAME)")
    p.add_argument("--metrics", type=_metrics, default=METRICS, metavar="LIST",
                   help="comma-separated, of fid, is, kid, pr (default: all)")
    p.add_argument("--n", type=_bounded_int(10, MAX_SAMPLES, "a number of images"), default=1000,
                   help="samples scored, against as many training images (default: 1000)")
    p.add_argument("--features", choices=["inception", "classifier"], default="inception",
                   help="inception: the standard Inception-v3 weights (a local file); classifier: a small "
                        "classifier of the data set (trained once; not comparable with published figures)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="weights-inception-2015-12-05-6726825d.pth or its folder (default: "
                        "$PIXELGEN_INCEPTION_WEIGHTS, then torch's hub cache)")
    p.add_argument("--baseline", choices=["test", "histogram"],
                   help="score data instead of the model: test images (the floor) or the per-position "
                        "histogram model (a ceiling)")
    p.add_argument("--seed", type=_bounded_int(MIN_SEED, MAX_SEED, "a seed"), default=0,
                   help="seed of the scored samples (default: 0)")
    p.add_argument("--batch-size", type=_bounded_int(1, MAX_BATCH_SIZE, "a batch size"), default=16,
                   help="images generated at once (default: 16)")
    p.add_argument("--data-root", metavar="DIR", help="data folder in place of the recorded data.root")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda where available)")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="the run's average of its weights (ema) or the trained ones (raw); default: ema where kept")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(command_function="score")


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "quantize", "write a smaller checkpoint: int8, float16 or bfloat16 weights")
    p.add_argument("checkpoint", type=_checkpoint_file, help="a .ckpt file written by pixelgen run, or zoo:NAME (see pixelgen zoo)")
    p.add_argument("--to", required=True, choices=["int8", "float16", "bfloat16"],
                   help="int8: per-output-channel symmetric weight-only (convolutions and linear maps); "
                        "float16, bfloat16: every weight cast")
    p.add_argument("--out", metavar="FILE", help="the new checkpoint (default: <name>-<to>.ckpt beside it)")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="which weights to keep (default: the run's average where it kept one)")
    _add_force(p, "an existing --out file")
    p.set_defaults(command_function="quantize", prepare=_check_quantized)


def _check_quantized(args: argparse.Namespace) -> None:
    out = args.out if args.out is not None else quantized_path(args.checkpoint, args.to)
    check_output_file(out, force=args.force, reading=args.checkpoint)


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "compress", "code images losslessly with a checkpoint's model (about its NLL in bits)")
    p.add_argument("checkpoint", type=_checkpoint_file, help="a .ckpt file written by pixelgen run, or zoo:NAME (see pixelgen zoo)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files of one size (PNG, ...), or one .npy of the model's values")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the compressed file, e.g. images.pgz")
    p.add_argument("--batch-size", type=_bounded_int(1, MAX_BATCH_SIZE, "a batch size"), default=16,
                   help="images coded together (default: 16; recorded in the file)")
    p.add_argument("--label", type=int, help="class of every image (class-conditional models; recorded in the file)")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="ema: the run's average of its weights; raw: the trained weights (default: ema where kept)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(command_function="compress")


def _add_decompress(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "decompress", "decode a file of pixelgen compress with the same checkpoint, bit for bit")
    p.add_argument("checkpoint", type=_checkpoint_file, help="the checkpoint the file was compressed with (a .ckpt file or zoo:NAME)")
    p.add_argument("compressed", metavar="FILE", help="a file written by pixelgen compress")
    p.add_argument("-o", "--out", required=True, metavar="DIR_OR_NPY",
                   help="a folder for PNGs (000000.png, ...) or a .npy file of the model's values")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="the weights the file was compressed with (default: ema where kept)")
    p.add_argument("--force", action="store_true", help="replace output files that exist")
    p.set_defaults(command_function="decompress")


def _add_recipe(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "recipe", "inspect a recipe")
    verbs = p.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="print the fully resolved recipe, every default included, as TOML "
                            "that pixelgen run accepts", epilog=EXAMPLES["recipe"],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("recipe", help="recipe file")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe key (repeatable)")
    show.set_defaults(command_function="recipe_show", prepare=_load_recipe)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors are one line on stderr and exit status 2
    (``PIXELGEN_DEBUG=1`` shows the traceback too), SIGINT/SIGTERM exit 130/143.

    The signal handlers are set first and held until the command returns, so that every
    command, and each of its phases (parsing, loading its module and torch, the work, the
    files it writes), stops the same way: one line and 130/143, never the raw signal."""
    debug = os.environ.get("PIXELGEN_DEBUG", "0") not in ("", "0")
    with interrupted_by_signals():
        try:
            args = build_parser().parse_args(argv)
            prepare = getattr(args, "prepare", None)
            if prepare is not None:  # the cheap checks, before the command's module loads anything heavy
                prepare(args)
            module = importlib.import_module(f"pixelgen.cli.{COMMAND_MODULES[args.command_function]}")
            return getattr(module, f"cmd_{args.command_function}")(args)
        except Interrupted as exc:
            return _fail(exc, debug, exc.exit_code)
        except KeyboardInterrupt:  # a SIGINT handler of the command's own that re-raises Ctrl-C
            print("pixelgen: error: SIGINT: stopped", file=sys.stderr)
            return 130
        except (PixelgenError, CausalityError) as exc:
            return _fail(exc, debug, 2)
        except BrokenPipeError:  # the reader went away (`pixelgen ... | head`): nothing to say to it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return 141  # 128 + SIGPIPE, as a shell reports a command its pipe's reader closed
        except OSError as exc:
            return _os_error(exc, debug)
        except Exception:
            interrupted = signal_received()
            if interrupted is None:
                raise
            return _fail(interrupted, debug, interrupted.exit_code)  # what the signal broke, not the signal


def _os_error(exc: OSError, debug: bool) -> int:
    """A full disk, a read-only folder, a path through a file: one line, unless a signal
    caused it (:func:`~pixelgen.errors.signal_received`)."""
    interrupted = signal_received()
    if interrupted is not None:
        return _fail(interrupted, debug, interrupted.exit_code)
    where = f"{exc.filename}: " if exc.filename else ""
    return _fail(PixelgenError(f"{where}{exc.strerror or exc}; free space or choose another path"), debug, 2)


def to_stderr(line: str) -> None:
    """A progress line on stderr, the commands' ``report`` callback (stdout keeps the results)."""
    print(line, file=sys.stderr, flush=True)


def _fail(exc: BaseException, debug: bool, code: int) -> int:
    if debug:
        traceback.print_exc()
    print(f"pixelgen: error: {one_line(exc)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
