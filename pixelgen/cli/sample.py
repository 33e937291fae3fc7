"""``pixelgen sample``: draw images from a checkpoint into a PNG grid and the run's archive."""

from __future__ import annotations

import argparse
import os
import re

from pixelgen.errors import PixelgenError, RecipeError
from pixelgen.recipe import SampleSection
from pixelgen.sampling import SamplingError
from pixelgen.study.from_checkpoint import sample_checkpoint
from pixelgen.training.evaluation import progress_bar_enabled


def _sample_settings(args: argparse.Namespace) -> SampleSection:
    """The ``[sample]`` settings of ``pixelgen sample``: the options given (the parser's defaults
    are the recipe's), and a random seed (recorded) unless ``--seed`` is given."""
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
        device=args.device, progress=progress_bar_enabled(), weights=args.weights, force=args.force,
    )
    images = result["images"]
    print(f"{len(images)} samples {tuple(images.shape[1:])}, seed {result['seed']}, "
          f"{result['seconds_per_image']:.3f} s/image ({result['sampler']} sampler)")
    if result["archive"] is not None:
        print(f"  archive  {result['archive']} samples/{result['key']}")
    print(f"  grid     {result['png']}")
    return 0
