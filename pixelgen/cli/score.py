"""``pixelgen score``: sample-quality metrics (FID, IS, KID, precision/recall) of a model's samples."""

from __future__ import annotations

import argparse
import json
import math

from pixelgen.cli import to_stderr
from pixelgen.study.from_checkpoint import score_checkpoint
from pixelgen.study.scoring import FIGURES, metric_name
from pixelgen.training.evaluation import progress_bar_enabled


def with_spread(value: float, spread: float | None) -> str:
    """``value ± spread`` to the same decimals, the spread's two significant digits
    (``1.530 ± 0.097``); ``value`` alone to four significant digits without one."""
    if spread is None or not math.isfinite(spread) or spread <= 0 or not math.isfinite(value):
        return f"{value:.4g}" + ("" if spread is None else f" ± {spread:.2g}")
    decimals = max(0, 1 - math.floor(math.log10(spread)))
    return f"{value:.{decimals}f} ± {spread:.{decimals}f}"


def cmd_score(args: argparse.Namespace) -> int:
    figures = score_checkpoint(
        args.target, args.metrics, n=args.n, features=args.features, inception_weights=args.inception_weights,
        baseline=args.baseline, data_root=args.data_root, device=args.device, seed=args.seed,
        batch_size=args.batch_size, weights=args.weights, progress=progress_bar_enabled(), report=to_stderr,
    )
    if args.json:
        print(json.dumps(figures))
        return 0
    what = f"baseline {args.baseline}" if args.baseline else f"{figures['n_samples']} samples"
    # the feature space (and, for the classifier, that the figures are not comparable with
    # published ones) is said once, here, not on every line
    print(f"{figures['checkpoint']} (epoch {figures['epoch']}): {what} against {figures['n_reference']} "
          f"training images, {figures['label']}")
    for name in FIGURES:
        if name in figures:
            print(f"  {metric_name(name):<24} {with_spread(figures[name], figures.get(name + '_std'))}")
    if figures["archive"] is not None:
        print(f"  stored in {figures['archive']} (score/{figures['features']})")
    return 0
