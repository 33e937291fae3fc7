"""``pixelgen compare`` and ``pixelgen analyse``: reports on trained runs and checkpoints."""

from __future__ import annotations

import argparse
import json

from pixelgen.cli import to_stderr
from pixelgen.study import report
from pixelgen.study.options import CompareOptions


def _compare_options(args: argparse.Namespace) -> CompareOptions:
    names = ("field_size", "scaling_sizes", "scaling_depths", "timing_images", "device")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    given["time_reference"] = args.time_reference
    given["scaling"] = args.scaling or "scaling_sizes" in given or "scaling_depths" in given
    for name in ("scaling_sizes", "scaling_depths"):
        if name in given:
            given[name] = tuple(given[name])
    return CompareOptions(**given)


def cmd_compare(args: argparse.Namespace) -> int:
    comparison = report.compare(args.run_dirs, args.out, _compare_options(args), report=to_stderr, force=args.force)
    if args.json:
        print(json.dumps({"out": comparison["out"], "dataset": comparison["dataset"], "runs": comparison["runs"]}))
    else:
        print(f"comparison: {comparison['out']}/report.md, report.html")
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    summary = report.analyse(args.checkpoint, args.out, _compare_options(args), report=to_stderr, force=args.force)
    print(f"analysis: {summary['out']}/analysis.md")
    return 0
