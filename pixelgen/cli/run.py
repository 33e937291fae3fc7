"""``pixelgen run``: train, evaluate and sample every run of a recipe, then compare them.

The recipe was loaded and validated by the parser (:func:`pixelgen.cli.main`) before this
module loads the training stack (torch, Lightning Fabric, zarr, matplotlib), so a mistyped
key answers at once.
"""

from __future__ import annotations

import argparse
import functools

from pixelgen.api import run_recipe
from pixelgen.study import report


def cmd_run(args: argparse.Namespace) -> int:
    recipe = args.loaded_recipe
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
