"""The ``pixelgen`` command line: parses arguments and calls library functions.

Every user error is a :class:`pixelgen.errors.PixelgenError`; :func:`main` prints it as
one line on stderr and exits with status 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import threading
import tomllib
import traceback
from typing import Sequence

from pixelgen import registry
from pixelgen.errors import CausalityError, Interrupted, PixelgenError
from pixelgen.from_checkpoint import evaluate_checkpoint, sample_checkpoint
from pixelgen.recipe import load_recipe
from pixelgen.report import CompareOptions, analyse, compare, compare_recipe
from pixelgen.testing import allowed_dependencies, check_causality
from pixelgen.train import run_recipe
from pixelgen.trainer import progress_bar_enabled


def _parse_value(text: str):
    """A ``key=value`` value as a TOML scalar where it parses (``3``, ``true``, ``1e-3``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_assignments(items: Sequence[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PixelgenError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = _parse_value(value.strip())
    return out


def cmd_plugins(args: argparse.Namespace) -> int:
    reg = registry.get_registry()
    print("models:")
    for name in registry.list_models():
        spec, plugin = reg.models[name]
        print(f"  {name}  (plugin {plugin}) {spec.description}")
        for key, default in spec.defaults().items():
            print(f"      {key} = {default!r}")
    print("data sets:")
    for name in registry.list_datasets():
        spec, plugin = reg.datasets[name]
        options = ", ".join(f"{k}={v!r}" for k, v in spec.options().items())
        print(f"  {name}  (plugin {plugin}) {spec.description}" + (f" [{options}]" if options else ""))
    for name, error in sorted(reg.failures.items()):
        print(f"plugin {name} failed to load: {error}")
    return 0


def field_picture(support, channels: int, i: int, j: int) -> str:
    """ASCII map of the pixels that output pixel ``(i, j)`` depends on (any colour).

    ``#`` seen, ``.`` earlier but not seen, ``x`` the pixel itself, blank: later.
    """
    seen = support[:, i, j].any(dim=0).any(dim=0)  # (H, W) over output and input colours
    height, width = seen.shape
    lines = []
    for r in range(height):
        row = []
        for c in range(width):
            if (r, c) == (i, j):
                row.append("x")
            elif (r, c) > (i, j):
                row.append(" ")
            else:
                row.append("#" if seen[r, c] else ".")
        lines.append("    " + " ".join(row).rstrip())
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    hyper = _parse_assignments(args.hp, "--hp")
    for channels in args.channels:
        model = registry.create_model(args.model, **{**hyper, "in_channels": channels})
        support = check_causality(model, channels, args.height, args.width)
        allowed = int(allowed_dependencies(channels, args.height, args.width).sum())
        print(
            f"{args.model}: causal for C={channels} at {args.height}x{args.width}: "
            f"{int(support.sum())} of {allowed} allowed sub-pixel dependencies seen, none forbidden"
        )
    i, j = args.height - 1, args.width // 2
    print(f"  receptive field of pixel ({i}, {j}) ('#' seen, '.' earlier but unseen):")
    print(field_picture(support, channels, i, j))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.set)
    report = functools.partial(print, flush=True)
    results = run_recipe(recipe, out=args.out, resume=args.resume, report=report)
    finished = [r for r in results if r is not None]
    if len(recipe.runs) > 1 and finished:
        print("summary:")
        for r in finished:
            print(f"  {r['run']:<20} {r['split']} {r['bits_per_dim']:.4f} bits/dim")
    if recipe.compare:
        comparison = compare_recipe(recipe, run_out=args.out, report=report)
        print(f"comparison: {comparison['out']}/report.md, report.html")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    figures = evaluate_checkpoint(
        args.checkpoint, args.split, data_root=args.data_root, limit=args.limit,
        accelerator=args.accelerator, weights=args.weights,
    )
    if args.json:
        print(json.dumps(figures))
        return 0
    per_channel = ", ".join(f"{v:.4f}" for v in figures["bits_per_dim_per_channel"])
    print(f"{figures['checkpoint']} ({figures['model']}, epoch {figures['epoch']})")
    print(f"  split      {figures['split']} ({figures['n_images']} images)")
    print(f"  NLL        {figures['nll_nats']:.2f} nats/image")
    print(f"  bits/dim   {figures['bits_per_dim']:.4f} (per colour: {per_channel})")
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


MAX_SAMPLES = 100_000  # a grid and an archive batch of more images is a typo, not a wish


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


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (status 2), like every other pixelgen error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or not int(height) or not int(width):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 32x32, got {text!r}")
    return int(height), int(width)


def cmd_sample(args: argparse.Namespace) -> int:
    if args.archive is not None and args.no_archive:
        raise PixelgenError("--archive and --no-archive exclude each other")
    result = sample_checkpoint(
        args.checkpoint, args.n, size=args.size, batch_size=args.batch_size,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, sampler=args.sampler,
        label=args.label, complete=args.complete, rows=args.rows,
        archive=False if args.no_archive else (args.archive or True), png=args.png or True,
        device=args.device, progress=progress_bar_enabled(), weights=args.weights,
    )
    images = result["images"]
    print(f"{len(images)} samples {tuple(images.shape[1:])}, seed {result['seed']}, "
          f"{result['seconds_per_image']:.3f} s/image ({args.sampler})")
    if result["archive"] is not None:
        print(f"  archive  {result['archive']} samples/{result['key']}")
    print(f"  grid     {result['png']}")
    return 0


def _compare_options(args: argparse.Namespace):
    names = ("field_size", "scaling_sizes", "scaling_depths", "timing_images", "device")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    for name in ("scaling_sizes", "scaling_depths"):
        if name in given:
            given[name] = tuple(given[name])
    return CompareOptions(**given)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_compare(args: argparse.Namespace) -> int:
    comparison = compare(args.run_dirs, args.out, _compare_options(args), report=_to_stderr)
    if args.json:
        print(json.dumps({"out": comparison["out"], "dataset": comparison["dataset"], "runs": comparison["runs"]}))
    else:
        print(f"comparison: {comparison['out']}/report.md, report.html")
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    summary = analyse(args.checkpoint, args.out, _compare_options(args), report=_to_stderr)
    print(f"analysis: {summary['out']}/analysis.md")
    return 0


def _add_measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", help="output folder")
    p.add_argument("--device", help="where to measure: cpu (default), cuda, ...")
    p.add_argument("--field-size", type=int, metavar="N", help="receptive-field canvas side (default: 15)")
    p.add_argument("--scaling-sizes", type=int, nargs="+", metavar="N", help="image sizes timed (default: 8 16 32)")
    p.add_argument("--scaling-depths", type=int, nargs="+", metavar="N", help="layer counts timed (default: 1 2 4)")
    p.add_argument("--timing-images", type=int, metavar="N", help="images per sampler timing (default: 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="pixelgen", description="PixelRNN-family image models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list models and data sets with their plugins and hyperparameters")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("check", help="prove a registered model autoregressive by its Jacobian")
    p.add_argument("model")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter")
    p.add_argument("--channels", type=int, nargs="+", default=[1, 3])
    p.add_argument("--height", type=int, default=6)
    p.add_argument("--width", type=int, default=7)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("sample", help="draw images from a checkpoint into a PNG grid and the run's archive")
    p.add_argument("checkpoint", help="a .ckpt file written by pixelgen run")
    p.add_argument("-n", type=_bounded_int(1, MAX_SAMPLES, "a number of images"), default=64,
                   help="number of images (default: 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default: 1)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1, off)")
    p.add_argument("--seed", type=_bounded_int(0, 2**63 - 1, "a seed"),
                   help="seed of the sampling generator (default: random, recorded)")
    p.add_argument("--sampler", choices=["fast", "reference"], default="fast",
                   help="fast: cached one-pixel steps; reference: a full forward pass per sub-pixel")
    p.add_argument("--label", type=int, help="class of every image (conditional models; default: 0, 1, ... in turn)")
    p.add_argument("--complete", metavar="IMAGE", help="image file whose top --rows rows every sample keeps")
    p.add_argument("--rows", type=int, help="rows of --complete to keep")
    p.add_argument("--size", type=_size, metavar="HxW",
                   help="image size (default: the --complete image's, else the run's data set's)")
    p.add_argument("--png", metavar="PATH", help="grid file (default: samples-<key>.png next to the checkpoint)")
    p.add_argument("--archive", metavar="PATH", help="archive to append to (default: the run's, next to the checkpoint)")
    p.add_argument("--no-archive", action="store_true", help="do not archive the samples")
    p.add_argument("--batch-size", type=_bounded_int(1, MAX_SAMPLES, "a batch size"), default=16,
                   help="images generated at once (default: 16)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda where available)")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="ema: the run's average of its weights; raw: the trained weights (default: ema where kept)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("run", help="train and evaluate every run of a TOML recipe on Lightning Fabric")
    p.add_argument("recipe", help="recipe file, e.g. recipes/quickstart.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output folder in place of the recipe's output.dir")
    p.add_argument("--resume", action="store_true",
                   help="continue each run from its last.ckpt exactly where it stopped")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="NLL and bits/dim of a checkpoint on a data split")
    p.add_argument("checkpoint", help="a .ckpt file written by pixelgen run")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-root", metavar="DIR", help="data folder in place of the recorded data.root")
    p.add_argument("--limit", type=_non_negative_int, metavar="N",
                   help="first N images (default: the run's data.limit_<split>; 0: all)")
    p.add_argument("--accelerator", default="auto", help="Fabric accelerator (default: auto)")
    p.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                   help="the run's average of its weights (ema) or the trained weights (raw); "
                        "default: the average where the run kept one")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="compare trained runs: report.md, report.html and figures")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by pixelgen run")
    p.add_argument("--json", action="store_true", help="print the table numbers as one JSON object")
    _add_measure_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("analyse", help="one checkpoint's receptive field, gradient flow and scaling")
    p.add_argument("checkpoint", help="a .ckpt file written by pixelgen run")
    _add_measure_options(p)
    p.set_defaults(func=cmd_analyse)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors are one line on stderr and exit status 2
    (``PIXELGEN_DEBUG=1`` shows the traceback too), SIGINT/SIGTERM exit 130/143."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("PIXELGEN_DEBUG", "0") not in ("", "0")
    previous = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    try:
        return args.func(args)
    except Interrupted as exc:
        return _fail(exc, debug, exc.exit_code)
    except KeyboardInterrupt:
        print("pixelgen: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except (PixelgenError, CausalityError) as exc:
        return _fail(exc, debug, 2)
    except OSError as exc:  # a full disk, a read-only folder, a path through a file
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(PixelgenError(f"{where}{exc.strerror or exc}; free space or choose another path"), debug, 2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _terminate(signum: int, frame: object) -> None:
    raise Interrupted("SIGTERM: stopped", signum)


def _fail(exc: BaseException, debug: bool, code: int) -> int:
    if debug:
        traceback.print_exc()
    print(f"pixelgen: error: {one_line(str(exc))}", file=sys.stderr)
    return code


def one_line(message: str) -> str:
    """An error message on one line; for an error re-raised by a DataLoader worker
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."), the
    worker's own message."""
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
