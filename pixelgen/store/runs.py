"""A run folder's files: their names, the checkpoint a run is judged by, the resolved recipe.

::

    run_folder/
      recipe.toml        every value of the run's recipe, defaults included (write_resolved)
      last.ckpt          the newest epoch's checkpoint (LAST)
      best.ckpt          the best epoch's (BEST), by the monitored figure
      metrics.json       the final figures; written last, it marks the run finished (METRICS_JSON)
      samples.png        the end-of-run samples (SAMPLES_PNG)
      archive.zarr       metrics, samples and scores (pixelgen.store.archive)
"""

from __future__ import annotations

import os
import pathlib

from pixelgen.recipe import Recipe, RunSpec, dump_toml, recipe_to_dict, single_run
from pixelgen.store.files import atomic_write_text

LAST = "last.ckpt"
BEST = "best.ckpt"
METRICS_JSON = "metrics.json"
SAMPLES_PNG = "samples.png"


def final_checkpoint(folder: os.PathLike) -> pathlib.Path | None:
    """The checkpoint a run folder's model is judged by: ``best.ckpt``, else ``last.ckpt``
    (None: neither is there)."""
    return next((pathlib.Path(folder) / name for name in (BEST, LAST) if (pathlib.Path(folder) / name).is_file()), None)


def write_resolved(recipe: Recipe, run_dir: str | os.PathLike, run: RunSpec | None = None) -> pathlib.Path:
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
    folder = pathlib.Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "recipe.toml"
    atomic_write_text(target, dump_toml(recipe_to_dict(recipe)))
    return target
