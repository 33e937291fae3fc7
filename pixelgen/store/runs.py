"""A run folder's files: their names, the checkpoint a run is judged by, the resolved recipe.

::

    run_folder/
      recipe.toml        every value of the run's recipe, defaults included (write_resolved)
      last.ckpt          the newest epoch's checkpoint (LAST)
      best.ckpt          the best epoch's (BEST), by the monitored figure
      metrics.json       the final figures; written last, it marks the run finished (METRICS_JSON)
      samples.png        the end-of-run samples (SAMPLES_PNG)
      archive.zarr       metrics, samples and scores (pixelgen.store.archive)
      tensorboard/       TensorBoard's event files (TENSORBOARD)
      csv/               the metrics as CSV (CSV_LOGS)
      .pixelgen.lock     the run lock: one writer at a time (pixelgen.store.files.RunLock)

These are the run's own files: only ``pixelgen run`` writes them, and no other command's
output lands on one, nor in the model zoo's folder (:mod:`pixelgen.store.zoo`). A command names its outputs through :func:`check_output_file` or
:func:`check_output_folder` (a run's own file is always refused, an existing file unless the
user passed ``--force``) or :func:`fresh_path` (a default name that replaces nothing), and
writes them inside :func:`writing_into`, which holds the lock of every run folder written to.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Iterable, Iterator

import attrs

from pixelgen.errors import PixelgenError
from pixelgen.recipe import OutputSection, Recipe, RunSpec, dump_toml, recipe_to_dict, single_run
from pixelgen.store.files import LOCK_NAME, RunLock, atomic_write_text, check_tree, refuse_link
from pixelgen.store.zoo import in_zoo

RECIPE_TOML = "recipe.toml"
LAST = "last.ckpt"
BEST = "best.ckpt"
METRICS_JSON = "metrics.json"
SAMPLES_PNG = "samples.png"
ARCHIVE = attrs.fields(OutputSection).archive.default
TENSORBOARD = "tensorboard"
CSV_LOGS = "csv"

#: A run folder's own files, which no command but ``pixelgen run`` writes.
RUN_FILES = (RECIPE_TOML, LAST, BEST, METRICS_JSON, SAMPLES_PNG, ARCHIVE, TENSORBOARD, CSV_LOGS, LOCK_NAME)
#: The files only ``pixelgen run`` makes, which mark a folder as a run folder (a recipe.toml
#: or a samples.png alone may be anyone's).
_RUN_MARKS = (LAST, BEST, METRICS_JSON, ARCHIVE, LOCK_NAME)


class OutputError(PixelgenError):
    """An output path that would replace a run's own file, or a file the user did not ask
    to replace."""


def is_run_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a file only ``pixelgen run`` makes (a checkpoint, metrics.json,
    the archive, the lock)."""
    return any(os.path.lexists(pathlib.Path(folder) / name) for name in _RUN_MARKS)


def run_file_at(path: str | os.PathLike) -> pathlib.Path | None:
    """The run's own file that ``path`` is or lies inside (``runs/a/archive.zarr/metrics``:
    the archive), else None."""
    path = pathlib.Path(os.path.abspath(path))
    return next((p for p in (path, *path.parents) if p.name in RUN_FILES and is_run_folder(p.parent)), None)


def _refuse_run_file(path: pathlib.Path, flag: str) -> None:
    refuse_link(path)
    if in_zoo(path):
        raise OutputError(f"{flag} {path}: lies in the model zoo's folder, which only scripts/build_zoo.py "
                          f"writes; {flag} another path")
    own = run_file_at(path)
    if own is not None:
        where = "is" if own == pathlib.Path(os.path.abspath(path)) else "lies in"
        raise OutputError(f"{flag} {path}: {where} {own.name} of run folder {own.parent}, which only pixelgen "
                          f"run writes; {flag} another path")


def check_output_file(
    path: str | os.PathLike, *, force: bool = False, flag: str = "--out", reading: str | os.PathLike | None = None
) -> pathlib.Path:
    """``path`` as a new file a command may write: not a run's own file (ever), not a link,
    not a folder, not the file ``reading`` the command reads, and not an existing file unless
    ``force`` (the user's ``--force``).

    Raises:
        OutputError, FileWriteError: one line naming ``flag``, the file and the fix.
    """
    text = os.fspath(path)
    if text.endswith(("/", os.sep)):  # pathlib would drop the separator that says "a folder"
        raise OutputError(f"{flag} {text}: names a folder; name a file (e.g. {flag} {os.path.join(text, 'FILE')})")
    path = pathlib.Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; name a file in it")
    if reading is not None and path.exists() and os.path.samefile(path, reading):
        raise OutputError(f"{flag} {path}: is the file being read; name another file")
    _refuse_run_file(path, flag)
    if path.exists() and not force:
        raise OutputError(f"{flag} {path}: already exists; pass --force to replace it, or {flag} another path")
    return path


def check_output_folder(
    path: str | os.PathLike, marker: str, *, force: bool = False, flag: str = "--out"
) -> pathlib.Path:
    """``path`` as a folder a report may be written into: not a run folder or anything in
    one, not a link, not a file, holding no link or special file, and, unless ``force``,
    either new, empty, or an earlier report of the same command (holding its ``marker``
    file, e.g. comparison.json), whose files it rewrites.

    Raises:
        OutputError, FileWriteError, FileReadError: one line naming the folder and the fix.
    """
    path = pathlib.Path(path)
    _refuse_run_file(path, flag)
    if is_run_folder(path):
        raise OutputError(f"{flag} {path}: is a run folder, whose files only pixelgen run writes; "
                          f"{flag} another folder")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file; name a folder")
    if path.is_dir() and not force and not (path / marker).is_file() and any(path.iterdir()):
        raise OutputError(f"{flag} {path}: holds other files and no {marker} (not a report of this command); "
                          f"pass --force to write into it, or {flag} another folder")
    if path.is_dir():
        check_tree(path)  # no report file written through a link, none read from a FIFO
    return path


def beside(checkpoint: str | os.PathLike) -> pathlib.Path:
    """The folder of a command's default outputs "beside the checkpoint": its folder, or the
    current folder for a zoo model (:mod:`pixelgen.store.zoo`, where nothing is written)."""
    folder = pathlib.Path(checkpoint).parent
    return pathlib.Path(".") if in_zoo(folder) else folder


def fresh_path(folder: str | os.PathLike, stem: str, suffix: str) -> pathlib.Path:
    """``folder/stem+suffix``, or ``stem-2``, ``stem-3``, ...: the first name that is free
    (a default output name that replaces nothing)."""
    folder = pathlib.Path(folder)
    names = (f"{stem}{suffix}", *(f"{stem}-{k}{suffix}" for k in range(2, 10_000)))
    return next(folder / n for n in names if not os.path.lexists(folder / n) and run_file_at(folder / n) is None)


@contextlib.contextmanager
def writing_into(*paths: str | os.PathLike | None, folders: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """Hold the run lock (:class:`~pixelgen.store.files.RunLock`) of every run folder that
    one of ``paths`` (files to be written, or files beside them; None is skipped) lies in,
    and of each of ``folders``, for the ``with`` block: a command writes into no run folder that another
    process writes into. Raises RunLockedError (one line naming the holder) at once if one
    is held."""
    parents = {pathlib.Path(p).parent for p in paths if p is not None}
    locked = {os.path.abspath(f) for f in (*folders, *(p for p in parents if is_run_folder(p)))}
    with contextlib.ExitStack() as stack:
        for folder in sorted(locked):  # one order everywhere: two commands never wait on each other
            stack.enter_context(RunLock(folder))
        yield


def quantized_path(checkpoint: str | os.PathLike, to: str) -> pathlib.Path:
    """Where ``pixelgen quantize`` writes by default: ``<stem>-<to>.ckpt`` beside the checkpoint
    (:func:`beside`)."""
    checkpoint = pathlib.Path(checkpoint)
    return beside(checkpoint) / f"{checkpoint.stem}-{to}.ckpt"


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
    target = folder / RECIPE_TOML
    atomic_write_text(target, dump_toml(recipe_to_dict(recipe)))
    return target
