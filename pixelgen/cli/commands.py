"""What each ``pixelgen`` command does: parsed arguments in, library calls, printed results.

:mod:`pixelgen.cli` parses the command line without loading torch (so that ``--help``
answers at once) and calls the function here named after the command; each is a thin
layer over the library, so that everything it does can be done from Python too.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from collections.abc import Sequence

from pixelgen import registry
from pixelgen.api import run_recipe
from pixelgen.errors import PixelgenError, RecipeError
from pixelgen.nn.blocks import generation_order_of, raster_order
from pixelgen.recipe import SampleSection, dump_toml, load_recipe, parse_value, recipe_to_dict
from pixelgen.registry.causality import allowed_dependencies, check_causality
from pixelgen.sampling import SamplingError
from pixelgen.study import report
from pixelgen.study.from_checkpoint import (
    evaluate_checkpoint,
    quantize_checkpoint,
    sample_checkpoint,
    score_checkpoint,
)
from pixelgen.study.options import CompareOptions
from pixelgen.study.scoring import FIGURES, metric_label
from pixelgen.training.evaluation import progress_bar_enabled


def _parse_assignments(items: Sequence[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PixelgenError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(value.strip())
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


def field_picture(support, channels: int, i: int, j: int, order=None) -> str:
    """ASCII map of the pixels that output pixel ``(i, j)`` depends on (any colour).

    ``#`` seen, ``.`` earlier but not seen, ``x`` the pixel itself, blank: later, in
    ``order`` (the model's generation order ``(C, H, W)``; ``None``: raster order).
    """
    seen = support[:, i, j].any(dim=0).any(dim=0)  # (H, W) over output and input colours
    height, width = seen.shape
    rank = (order if order is not None else raster_order(channels, height, width))[0]  # (H, W): each pixel's turn
    lines = []
    for r in range(height):
        row = []
        for c in range(width):
            if (r, c) == (i, j):
                row.append("x")
            elif rank[r, c] > rank[i, j]:
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
        order = generation_order_of(model, channels, args.height, args.width)  # (C, H, W)
        allowed = int(allowed_dependencies(channels, args.height, args.width, order).sum())
        print(
            f"{args.model}: causal for C={channels} at {args.height}x{args.width}: "
            f"{int(support.sum())} of {allowed} allowed sub-pixel dependencies seen, none forbidden"
        )
    i, j = args.height - 1, args.width // 2
    print(f"  receptive field of pixel ({i}, {j}) ('#' seen, '.' earlier but unseen):")
    print(field_picture(support, channels, i, j, order))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.set)
    say = functools.partial(print, flush=True)
    results = run_recipe(recipe, out=args.out, resume=args.resume, report=say)
    finished = [r for r in results if r is not None]
    if len(recipe.runs) > 1 and finished:
        print("summary:")
        for r in finished:
            print(f"  {r['run']:<20} {r['split']} {r['bits_per_dim']:.4f} bits/dim")
    if recipe.compare:
        comparison = report.compare_recipe(recipe, run_out=args.out, report=say)
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


def _sample_settings(args: argparse.Namespace) -> SampleSection:
    """The ``[sample]`` settings of ``pixelgen sample``: the options given, the recipe's
    defaults for the others, and a random seed (recorded) unless ``--seed`` is given."""
    given = {name: getattr(args, name) for name in ("temperature", "top_p", "sampler", "batch_size")
             if getattr(args, name) is not None}
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    try:
        return SampleSection(n=args.n, seed=seed, **given)
    except RecipeError as exc:  # name the option, not the recipe key
        raise SamplingError(re.sub(r"^SampleSection\.(\w+)", lambda m: "--" + m[1].replace("_", "-"),
                                   str(exc))) from None


def cmd_sample(args: argparse.Namespace) -> int:
    if args.archive is not None and args.no_archive:
        raise PixelgenError("--archive and --no-archive exclude each other")
    result = sample_checkpoint(
        args.checkpoint, _sample_settings(args), size=args.size, label=args.label, complete=args.complete,
        rows=args.rows, archive=False if args.no_archive else (args.archive or True), png=args.png or True,
        device=args.device, progress=progress_bar_enabled(), weights=args.weights,
    )
    images = result["images"]
    print(f"{len(images)} samples {tuple(images.shape[1:])}, seed {result['seed']}, "
          f"{result['seconds_per_image']:.3f} s/image ({result['sampler']} sampler)")
    if result["archive"] is not None:
        print(f"  archive  {result['archive']} samples/{result['key']}")
    print(f"  grid     {result['png']}")
    return 0


def _compare_options(args: argparse.Namespace):
    names = ("field_size", "scaling_sizes", "scaling_depths", "timing_images", "device")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    given["time_reference"] = args.time_reference
    for name in ("scaling_sizes", "scaling_depths"):
        if name in given:
            given[name] = tuple(given[name])
    return CompareOptions(**given)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_compare(args: argparse.Namespace) -> int:
    comparison = report.compare(args.run_dirs, args.out, _compare_options(args), report=_to_stderr)
    if args.json:
        print(json.dumps({"out": comparison["out"], "dataset": comparison["dataset"], "runs": comparison["runs"]}))
    else:
        print(f"comparison: {comparison['out']}/report.md, report.html")
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    summary = report.analyse(args.checkpoint, args.out, _compare_options(args), report=_to_stderr)
    print(f"analysis: {summary['out']}/analysis.md")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    figures = score_checkpoint(
        args.target, args.metrics, n=args.n, features=args.features, inception_weights=args.inception_weights,
        baseline=args.baseline, data_root=args.data_root, device=args.device, seed=args.seed,
        batch_size=args.batch_size, weights=args.weights, progress=progress_bar_enabled(), report=_to_stderr,
    )
    if args.json:
        print(json.dumps(figures))
        return 0
    what = f"baseline {args.baseline}" if args.baseline else f"{figures['n_samples']} samples"
    print(f"{figures['checkpoint']} (epoch {figures['epoch']}): {what} against {figures['n_reference']} "
          f"training images, {figures['label']}")
    for name in FIGURES:
        if name in figures:
            spread = f" +- {figures[name + '_std']:.4g}" if name + "_std" in figures else ""
            print(f"  {metric_label(name, figures['features']):<72} {figures[name]:.4g}{spread}")
    if figures["archive"] is not None:
        print(f"  stored in {figures['archive']} (score/{figures['features']})")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    result = quantize_checkpoint(args.checkpoint, args.to, args.out, weights=args.weights)
    ratio = result["bytes_after"] / result["bytes_before"]
    print(f"{result['out']}: {result['to']}, {result['bytes_after']:,} bytes = {ratio:.1%} of "
          f"{result['checkpoint']} ({result['bytes_before']:,} bytes)")
    print(f"  {result['weights']} weights, {result['scheme']}")
    return 0


def cmd_recipe_show(args: argparse.Namespace) -> int:
    """Print the fully resolved recipe, every default filled in, as TOML ``run`` accepts."""
    print(dump_toml(recipe_to_dict(load_recipe(args.recipe, args.set))), end="")
    return 0
