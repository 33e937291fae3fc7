"""The run archive: one zarr (v3) group holding everything a run measured and generated.

On-disk layout (also written into the root attributes as ``attrs["layout"]``)::

    <archive>/                 root group; attrs: format, format_version, layout
      metrics/                 group; attrs: n_epochs (committed rows), columns (in order)
        epoch                  int64   (n_epochs,)  -1 where a row did not give it
        <name>                 float64 (n_epochs,)  NaN where a row did not give it
      test/                    group; attrs: final evaluation figures (number or list)
      samples/                 group
        000000, 000001, ...    uint8 (N, C, H, W), chunks (min(N, 16), C, H, W), values
                               0..n_levels-1 (0/1 from a binary model: PNGs map them to
                               0/255); attrs: created (ISO time) and whatever the caller
                               passed (model, checkpoint, recipe, n_levels, temperature,
                               top_p, seed, ...)
      score/                   group, made by the first score (older archives have none);
                               attrs: feature space ("inception", "classifier") -> the
                               sample-quality figures measured in it (pixelgen.study.scoring)
      cache/                   group, made by the first cached measurement (older archives
                               have none); attrs: "<measurement>@<checkpoint file>" ->
                               {"key": what it was measured on and with, "value": the
                               result}; a reader that finds another key measures again

Crash safety. Every file zarr writes to a local store is replaced atomically, so a crash
leaves each file either old or new; the archive orders its writes so that any mix is
consistent:

* A metrics row is appended by growing and filling every column first and only then
  raising ``metrics.attrs["n_epochs"]``. Readers take the first ``n_epochs`` entries, so a
  half-written row is invisible.
* A sample batch is written whole into ``samples/.tmp-<hex>`` and then renamed to its key
  with one ``os.rename``: the batch is either absent or complete.

:meth:`RunArchive.create_or_open` tidies what a crash left behind (trailing rows, stray
columns, temporary batches, zarr's own ``*.partial`` files); readers never need it.

Damage. zarr reads a missing chunk as the array's fill value, so a chunk lost or deleted
would read as "no value" (``epoch`` -1, NaN, black images) rather than fail. Every array is
therefore written with all its chunks stored (``write_empty_chunks``), and every group or
array whose attributes a reader trusts carries ``attrs[".sha256"]``: ``{"attrs": the SHA-256
of its other attributes, "data": the SHA-256 of its committed values}`` (for ``metrics``,
one per column), written in the same metadata write as what it guards. Every read goes
through one helper that checks the array's dtype and shape, that every chunk the read needs
exists, and both digests, and refuses a damaged or partial archive with one line naming the
array. Archives written before the digests existed are read without them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import uuid
from datetime import datetime, timezone
from numbers import Real
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import zarr

from pixelgen.errors import PixelgenError
from pixelgen.store.files import check_tree, refuse_link

FORMAT = "pixelgen-archive"
FORMAT_VERSION = 2  # 2: every chunk stored, digests in attrs[".sha256"]; 1 is read too
#: Path -> description of what it holds, for every path of an archive (also ``attrs["layout"]``).
LAYOUT = {
    "metrics": "group; attrs n_epochs = committed rows, columns = names in order",
    "metrics/epoch": "int64 (n_epochs,), -1 where missing; read only [:n_epochs]",
    "metrics/<name>": "float64 (n_epochs,), NaN where missing; read only [:n_epochs]",
    "test": "group; attrs = final evaluation figures (number or list of numbers)",
    "samples/<6 digits>": "uint8 (N, C, H, W) generated images, one array per batch, values "
    "0..n_levels-1 (0/1 from a binary model); attrs = created (ISO time), model, checkpoint, "
    "recipe, n_levels, temperature, top_p, seed, ...",
    "samples/.tmp-*": "a batch being written or abandoned by a crash; ignore",
    "score": "group (absent before the first score); attrs = feature space -> sample-quality figures "
    "(fid, is, kid, precision, recall, n, sample batch, ...)",
    "cache": "group (absent before the first cached measurement); attrs = '<measurement>@<checkpoint file>' "
    "-> {key: the checkpoint's identity and the measurement's settings, value: the result}, e.g. "
    "'scaling@best.ckpt', 'sampling@best.ckpt' (pixelgen compare's scaling sweep and sampler timings); "
    "measured again when the key differs",
}
INT_COLUMNS = {"epoch": -1}  # column name -> value for rows that did not give it
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # no dots: no clash with zarr.json
_SAMPLE_KEY = re.compile(r"^\d{6,}$")
_TMP_PREFIX = ".tmp-"
_NOT_A_GROUP = (
    FileNotFoundError, FileExistsError, NotADirectoryError,
    zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError,
)
_ZARR_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr's own temporary files
_CHECK = ".sha256"  # the reserved attribute holding a group's or array's digests
_ALL_CHUNKS = {"array.write_empty_chunks": True}  # so that a missing chunk is always damage


class ArchiveError(PixelgenError):
    """A run archive is missing, not a pixelgen archive, read-only, or given bad data."""


def _jsonable(value: Any, where: str) -> Any:
    """Convert numpy scalars, paths and tuples to plain JSON types; fail naming ``where``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        kind = type(value).__name__
        raise ArchiveError(f"{where}: cannot store a {kind} as an attribute") from None
    return value


_DAMAGE = (ValueError, KeyError, TypeError, RuntimeError, IndexError, zarr.errors.BaseZarrError)


def _damaged(where: os.PathLike | str, detail: str) -> ArchiveError:
    """The one-line refusal of a damaged archive; ``where`` names the group or array."""
    return ArchiveError(
        f"{where}: the run archive is damaged ({detail}); move it aside to keep what it holds "
        f"(the checkpoints are separate and intact) and run again"
    )


@contextlib.contextmanager
def _reading(where: os.PathLike | str) -> Iterator[None]:
    """zarr's, numpy's or JSON's error on a damaged file, as the refusal naming ``where``."""
    try:
        yield
    except PixelgenError:
        raise
    except _DAMAGE as exc:
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise _damaged(where, f"{type(exc).__name__}: {detail}") from None


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, allow_nan=True).encode()).hexdigest()


def _sha256_array(values: np.ndarray) -> str:
    """Digest of an array's dtype, shape and values (C order)."""
    head = f"{values.dtype.str}{values.shape}".encode()
    return hashlib.sha256(head + np.ascontiguousarray(values).tobytes()).hexdigest()


def _with_check(attrs: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """``attrs`` with its digests added: of the attributes themselves and of ``data`` (a
    digest, or a dict of them, of the values the attributes describe)."""
    plain = {k: v for k, v in attrs.items() if k != _CHECK}
    return {**plain, _CHECK: {"attrs": _sha256_json(plain), "data": data}}


def _checked_attrs(node: zarr.Group | zarr.Array, where: Path, required: bool) -> tuple[dict[str, Any], Any]:
    """A group's or array's attributes without the digests, and its data digest (None for
    an archive written before digests); a mismatch, or no digests where ``required``, is damage."""
    with _reading(where):
        attrs = node.attrs.asdict()
    check = attrs.pop(_CHECK, None)
    if check is None:
        if required:
            raise _damaged(where, "its attributes lack their SHA-256")
        return attrs, None
    if not isinstance(check, dict) or check.get("attrs") != _sha256_json(attrs):
        raise _damaged(where, "its attributes do not match their SHA-256")
    return attrs, check.get("data")


def _read_array(group: zarr.Group, name: str, where: Path, dtype: str, ndim: int, rows: int | None,
                digest: str | None) -> np.ndarray:
    """The first ``rows`` entries (None: all) of array ``name`` of ``group``, refused as damage
    unless its dtype and number of dimensions are as written, it holds those rows, every
    chunk they lie in is stored (zarr would read a missing one as its fill value), and the
    values match ``digest`` (None: an archive written before digests)."""
    with _reading(where):
        return _read_checked(group[name], where, dtype, ndim, rows, digest)


def _read_checked(array: zarr.Array | zarr.Group, where: Path, dtype: str, ndim: int, rows: int | None,
                  digest: str | None) -> np.ndarray:
    if not isinstance(array, zarr.Array) or array.dtype != np.dtype(dtype) or array.ndim != ndim:
        raise _damaged(where, f"expected a {dtype} array of {ndim} dimensions")
    rows = array.shape[0] if rows is None else rows
    if array.shape[0] < rows:
        raise _damaged(where, f"{array.shape[0]} rows where {rows} were committed")
    if digest is not None:
        n_chunks = [-(-rows // array.chunks[0]), *array.cdata_shape[1:]]
        for coords in itertools.product(*map(range, n_chunks)):
            key = array.metadata.encode_chunk_key(coords)
            if not (where / key).is_file():
                raise _damaged(where, f"chunk {key} is missing")
    values = array[:rows]
    if digest is not None and digest != _sha256_array(values):
        raise _damaged(where, "its values do not match their SHA-256")
    return values


def _damage_is_one_line(method: Callable[..., Any]) -> Callable[..., Any]:
    """An archive whose files were damaged (bad JSON, bad attributes, bad chunks) raises an
    :class:`ArchiveError` naming the archive, not zarr's or numpy's traceback."""

    @functools.wraps(method)
    def checked(self_or_cls: Any, *args: Any, **kwargs: Any) -> Any:
        path = getattr(self_or_cls, "path", None) or next(
            (a for a in (self_or_cls, *args) if isinstance(a, (str, os.PathLike))), "the run archive")
        with _reading(path):
            return method(self_or_cls, *args, **kwargs)

    return checked


def _check_plain(path: Path) -> None:
    """ArchiveError unless the archive at ``path`` and everything in it are plain folders and
    regular files: zarr follows links (a write would land outside the run folder) and
    blocks on a FIFO."""
    try:
        refuse_link(path)
        check_tree(path)
    except PixelgenError as exc:
        raise ArchiveError(f"{exc}; move the archive aside and run again") from None


class RunArchive:
    """A run's metrics, test figures and generated samples in a local zarr v3 group."""

    def __init__(self, path: Path, writable: bool, checked: bool = True) -> None:
        """Use :meth:`create_or_open` or :meth:`open`; ``checked``: every group and array read
        carries its digests (format version 2 on)."""
        self.path = path
        self._writable = writable
        self._checked = checked

    @classmethod
    @_damage_is_one_line
    def create_or_open(cls, path: str | os.PathLike) -> RunArchive:
        """Open the archive at ``path`` for appending, creating it on first use."""
        path = Path(path)
        cls.check_reusable(path)
        for partial in path.glob("*.partial") if path.is_dir() else ():  # a kill inside zarr's first write
            if _ZARR_PARTIAL.search(partial.name):
                partial.unlink()
        try:
            root = zarr.open_group(path, mode="a", zarr_format=3)
        except _NOT_A_GROUP:
            raise ArchiveError(f"{path}: cannot create a run archive here (not a group)") from None
        if "format" not in root.attrs and set(root.keys()) <= {"metrics", "test", "samples"}:
            # New, or a creation that a crash interrupted: (re)initialise idempotently.
            metrics = root.require_group("metrics")
            if "n_epochs" not in metrics.attrs:
                metrics.attrs.put(_with_check({"n_epochs": 0, "columns": []}, {}))
            root.require_group("test").attrs.put(_with_check({}))
            root.require_group("samples")
            # The format attrs go last: a group without them is not yet an archive.
            root.attrs.put({"format": FORMAT, "format_version": FORMAT_VERSION, "layout": LAYOUT})
        archive = cls.open(path, mode="r+")
        archive._recover()
        return archive

    @staticmethod
    @_damage_is_one_line
    def check_reusable(path: Path) -> None:
        """ArchiveError unless ``path`` is free, a run archive, or one whose creation a kill
        interrupted (nothing but zarr's own files in it); writes nothing."""
        if not os.path.lexists(path):
            return
        _check_plain(path)
        if not path.is_dir():
            raise ArchiveError(f"{path}: exists and is not a run archive (a file); move it aside or pass --out DIR")
        entries = [p.name for p in path.iterdir() if not _ZARR_PARTIAL.search(p.name)]
        if entries and "zarr.json" not in entries:
            raise ArchiveError(f"{path}: cannot create a run archive in a non-empty folder; move it aside or pass --out DIR")
        if "zarr.json" in entries:
            root = zarr.open_group(path, mode="r", zarr_format=3)
            if root.attrs.get("format") != FORMAT and not set(root.keys()) <= {"metrics", "test", "samples"}:
                raise ArchiveError(f"{path}: a zarr group, but not a {FORMAT} (attrs['format']); pass --out DIR")

    @classmethod
    @_damage_is_one_line
    def open(cls, path: str | os.PathLike, mode: str = "r") -> RunArchive:
        """Open an existing archive; ``mode`` is ``"r"`` (read-only) or ``"r+"``."""
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ArchiveError(f"{path}: mode must be 'r' or 'r+', got {mode!r}")
        _check_plain(path)
        try:
            root = zarr.open_group(path, mode=mode, zarr_format=3)
        except _NOT_A_GROUP:
            raise ArchiveError(f"{path}: no run archive here (no zarr v3 group)") from None
        if root.attrs.get("format") != FORMAT:
            raise ArchiveError(f"{path}: a zarr group, but not a {FORMAT} (attrs['format'])")
        version = root.attrs.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArchiveError(
                f"{path}: archive format_version {version!r} is newer than this pixelgen "
                f"reads ({FORMAT_VERSION}); upgrade pixelgen"
            )
        return cls(path, writable=mode == "r+", checked=version >= 2)

    # -- metrics -------------------------------------------------------------------------

    def _group(self, name: str) -> zarr.Group:
        # Reopened on every call so that attrs written by another process are seen.
        with _reading(self.path / name):
            return zarr.open_group(self.path / name, mode="r+" if self._writable else "r")

    def _check_writable(self) -> None:
        if not self._writable:
            raise ArchiveError(f"{self.path}: archive was opened read-only")

    def _metrics_state(self) -> tuple[zarr.Group, int, list[str], dict[str, str] | None]:
        """The metrics group, its committed rows and columns, and each column's digest (None
        for an archive written before digests), checked to be what a commit writes."""
        group = self._group("metrics")
        attrs, digests = _checked_attrs(group, self.path / "metrics", self._checked)
        n, columns = attrs.get("n_epochs"), attrs.get("columns")
        if (not isinstance(n, int) or n < 0 or not isinstance(columns, list)
                or not all(isinstance(c, str) and _METRIC_NAME.match(c) for c in columns)
                or (digests is None and self._checked)
                or (digests is not None and (not isinstance(digests, dict) or set(digests) != set(columns)))):
            raise _damaged(self.path / "metrics", "its n_epochs, columns or digests are malformed")
        return group, n, list(columns), digests

    def _column(self, group: zarr.Group, name: str, rows: int, digest: str | None) -> np.ndarray:
        dtype = "int64" if name in INT_COLUMNS else "float64"
        return _read_array(group, name, self.path / "metrics" / name, dtype, 1, rows, digest)

    def _commit_metrics(self, group: zarr.Group, n: int, columns: list[str]) -> None:
        """The commit of ``n`` rows: one metadata write (attrs.update would write once per key)
        of the row count, the columns and the digest of each column's first ``n`` values."""
        digests = {name: _sha256_array(group[name][:n]) for name in columns}
        group.attrs.put(_with_check({"n_epochs": n, "columns": columns}, digests))

    @property
    @_damage_is_one_line
    def n_epochs(self) -> int:
        """Number of committed metrics rows."""
        return self._metrics_state()[1]

    @_damage_is_one_line
    def append_metrics(self, row: dict[str, float]) -> None:
        """Append one epoch's metrics; a key never seen before is back-filled with NaN."""
        self._check_writable()
        values = {}
        for name, value in row.items():
            if not isinstance(name, str) or not _METRIC_NAME.match(name):
                raise ArchiveError(f"metrics: bad metric name {name!r} (letters, digits, _ and -)")
            if hasattr(value, "item") and np.ndim(value) == 0:  # numpy or torch scalar
                value = value.item()
            if not isinstance(value, Real):
                raise ArchiveError(f"metrics.{name}: expected a number, got {value!r}")
            if name in INT_COLUMNS and not float(value).is_integer():
                raise ArchiveError(f"metrics.{name}: expected a whole number, got {value!r}")
            values[name] = value
        group, n, columns, _ = self._metrics_state()
        with zarr.config.set(_ALL_CHUNKS):
            for name in columns:
                array = group[name]
                array.resize((n + 1,))  # also drops any half-written row a crash left
                array[n] = values.get(name, INT_COLUMNS.get(name, np.nan))
            for name in [name for name in values if name not in columns]:
                fill = INT_COLUMNS.get(name, np.nan)
                array = group.create_array(
                    name, shape=(n + 1,), chunks=(256,), fill_value=fill, overwrite=True,
                    dtype="int64" if name in INT_COLUMNS else "float64",
                )
                array[:] = np.append(np.full(n, fill), values[name])  # every chunk stored
                columns.append(name)
        self._commit_metrics(group, n + 1, columns)

    @_damage_is_one_line
    def metrics(self) -> dict[str, np.ndarray]:
        """Committed metrics: column name -> array of shape (n_epochs,), in column order."""
        group, n, columns, digests = self._metrics_state()
        return {name: self._column(group, name, n, digests and digests[name]) for name in columns}

    @_damage_is_one_line
    def truncate_metrics(self, n_epochs: int) -> None:
        """Keep only the first ``n_epochs`` rows (on resume, those the checkpoint has seen)."""
        self._check_writable()
        group, n, columns, _ = self._metrics_state()
        if not 0 <= n_epochs <= n:
            raise ArchiveError(
                f"{self.path}: cannot truncate metrics to {n_epochs} rows; it has {n}"
            )
        self._commit_metrics(group, n_epochs, columns)  # commit first; shrinking the arrays is tidying
        self._recover()

    # -- test figures --------------------------------------------------------------------

    @_damage_is_one_line
    def set_test_metrics(self, figures: dict[str, float | list[float]]) -> None:
        """Replace the final evaluation figures (name -> number or list of numbers)."""
        self._check_writable()
        for name, value in figures.items():
            flat = np.ravel(np.asarray(value, dtype=object))
            if not all(isinstance(v, (Real, np.number)) for v in flat):
                raise ArchiveError(
                    f"test.{name}: expected a number or list of numbers, got {value!r}"
                )
        self._group("test").attrs.put(_with_check(_jsonable(figures, "test")))

    @_damage_is_one_line
    def test_metrics(self) -> dict[str, Any]:
        """The final evaluation figures, ``{}`` before :meth:`set_test_metrics`."""
        return _checked_attrs(self._group("test"), self.path / "test", self._checked)[0]

    # -- sample-quality scores ------------------------------------------------------------

    @_damage_is_one_line
    def set_score(self, features: str, figures: dict[str, Any]) -> None:
        """Store the sample-quality figures measured in feature space ``features``
        (replacing earlier ones of that space); the ``score`` group is made on first use."""
        self._check_writable()
        if not isinstance(features, str) or not _METRIC_NAME.match(features):
            raise ArchiveError(f"score: bad feature space name {features!r} (letters, digits, _ and -)")
        kept = self.scores()
        group = zarr.open_group(self.path, mode="r+").require_group("score")
        group.attrs.put(_with_check({**kept, features: _jsonable(figures, f"score.{features}")}))

    @_damage_is_one_line
    def scores(self) -> dict[str, dict[str, Any]]:
        """Feature space -> its sample-quality figures; ``{}`` for an archive never scored
        (archives written before scoring existed have no ``score`` group)."""
        if not (self.path / "score" / "zarr.json").exists():
            return {}
        return _checked_attrs(self._group("score"), self.path / "score", self._checked)[0]

    # -- cached measurements --------------------------------------------------------------

    @_damage_is_one_line
    def set_cached(self, name: str, key: dict[str, Any], value: dict[str, Any]) -> None:
        """Keep ``value``, the result of measurement ``name`` (e.g. ``"scaling@best.ckpt"``),
        with ``key``, what it was measured on and with (replacing an earlier entry of that
        name); the ``cache`` group is made on first use, and a damaged one is made anew."""
        self._check_writable()
        if not isinstance(name, str) or not name or "/" in name:
            raise ArchiveError(f"cache: bad measurement name {name!r}")
        entry = {"key": _jsonable(key, f"cache.{name}.key"), "value": _jsonable(value, f"cache.{name}.value")}
        try:
            group = zarr.open_group(self.path, mode="r+").require_group("cache")
            kept = _checked_attrs(group, self.path / "cache", False)[0]
        except (*_DAMAGE, ArchiveError):  # a cache is only ever a copy of what can be measured again
            shutil.rmtree(self.path / "cache", ignore_errors=True)
            group, kept = zarr.open_group(self.path, mode="r+").require_group("cache"), {}
        group.attrs.put(_with_check({**kept, name: entry}))

    def cached(self, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The value :meth:`set_cached` kept for ``name`` if it was kept with this same
        ``key``; None when there is none, its key differs, or the cache is damaged."""
        if not (self.path / "cache" / "zarr.json").exists():
            return None
        try:
            entry = _checked_attrs(self._group("cache"), self.path / "cache", self._checked)[0].get(name)
        except (*_DAMAGE, ArchiveError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), dict):
            return None
        return entry["value"] if entry.get("key") == _jsonable(key, f"cache.{name}.key") else None

    # -- samples -------------------------------------------------------------------------

    @_damage_is_one_line
    def append_samples(self, images: Any, **attributes: Any) -> str:
        """Store a batch of generated images, uint8 (N, C, H, W); returns its key.

        ``attributes`` (model, checkpoint, recipe, temperature, top_p, seed, sampler,
        seconds_per_image, ...) are stored with the batch, plus ``created`` (ISO time).
        """
        self._check_writable()
        if hasattr(images, "detach"):  # a torch tensor; no torch import needed
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] == 0:
            raise ArchiveError(
                f"samples: expected uint8 images of shape (N, C, H, W) with N > 0, "
                f"got {images.dtype} {images.shape}"
            )
        attrs = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        attrs.update(_jsonable(attributes, "samples"))
        samples_dir = self.path / "samples"
        keys = [key for key, _ in self.sample_batches()]
        key = f"{int(keys[-1]) + 1 if keys else 0:06d}"
        tmp = samples_dir / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        with zarr.config.set(_ALL_CHUNKS):
            array = zarr.create_array(
                tmp, shape=images.shape, dtype="uint8", zarr_format=3,
                chunks=(min(images.shape[0], 16), *images.shape[1:]),
            )
            array[:] = images
        array.attrs.put(_with_check(attrs, _sha256_array(images)))
        os.rename(tmp, samples_dir / key)  # the commit: atomic on one file system
        return key

    @_damage_is_one_line
    def sample_batches(self) -> list[tuple[str, dict[str, Any]]]:
        """Committed batches as (key, attributes), oldest first."""
        # Listing the directory ourselves skips .tmp-* entries without asking zarr about them.
        committed = [d.name for d in (self.path / "samples").iterdir() if _SAMPLE_KEY.match(d.name)]
        group = self._group("samples")
        return [(key, self._batch(group, key)[0]) for key in sorted(committed, key=int)]

    def _batch(self, group: zarr.Group, key: str) -> tuple[dict[str, Any], Any]:
        """Batch ``key``'s attributes and the digest of its images (None: not recorded)."""
        return _checked_attrs(group[key], self.path / "samples" / key, self._checked)

    @_damage_is_one_line
    def read_samples(self, key: str) -> np.ndarray:
        """The images of batch ``key``: uint8 array of shape (N, C, H, W)."""
        if not _SAMPLE_KEY.match(key) or not (self.path / "samples" / key / "zarr.json").exists():
            raise ArchiveError(f"{self.path}: no sample batch {key!r}")
        group = self._group("samples")
        digest = self._batch(group, key)[1]
        if self._checked and not isinstance(digest, str):
            raise _damaged(self.path / "samples" / key, "its images lack their SHA-256")
        return _read_array(group, key, self.path / "samples" / key, "uint8", 4, None, digest)

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Remove what an interrupted write left: trailing rows, stray columns, temp batches."""
        for partial in self.path.rglob("*.partial"):
            if _ZARR_PARTIAL.search(partial.name):
                partial.unlink(missing_ok=True)
        for tmp in (self.path / "samples").glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(tmp, ignore_errors=True)
        group, n, columns, _ = self._metrics_state()
        for name in list(group.array_keys()):
            if name not in columns:
                shutil.rmtree(self.path / "metrics" / name)
            elif group[name].shape[0] != n:
                group[name].resize((n,))
