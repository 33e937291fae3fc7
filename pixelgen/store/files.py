"""Files that outlive a process, written so that a kill at any instant is harmless.

Every file pixelgen writes into a run folder goes through :func:`atomic_writer`: the
bytes go to a temporary file beside the target (``.NAME.XXXX.tmp``), are flushed to disk,
and replace the target in one ``os.replace``. A reader sees the old file or the new one,
never half of one. A kill leaves at most a temporary file, which
:func:`remove_temporary_files` clears on the next start.

Nothing is written through a symbolic link: a target that is a link is refused
(:func:`refuse_link`), the temporary file is created exclusively (``O_EXCL`` never follows a
link) and the lock is opened with ``O_NOFOLLOW``. Files read whole (:func:`read_regular`) are
regular files of a bounded size: a FIFO, a device or a socket is refused before it is read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import stat
import tempfile
from typing import IO, Any, Iterator

from pixelgen.errors import PixelgenError, RunLockedError
from pixelgen.limits import MAX_SMALL_FILE_BYTES

TEMPORARY_SUFFIX = ".tmp"


class FileWriteError(PixelgenError):
    """A file could not be written: a full disk, a read-only folder, a path that is a file."""


class FileReadError(PixelgenError):
    """A file to read is not a regular file (a FIFO, a device, a socket), or is too big."""


def refuse_link(path: str | os.PathLike) -> None:
    """FileWriteError if ``path`` is a symbolic link: pixelgen writes through none, so no
    output lands outside the folder it names."""
    if os.path.islink(path):
        raise FileWriteError(f"{path}: is a symbolic link; pixelgen writes through no link; "
                             f"name the file itself or another path")


def not_a_file(path: pathlib.Path, what: str) -> str:
    """Why ``path``, not a regular file, is no ``what`` (a checkpoint file, ...): a folder, a
    FIFO or a device, or nothing at all."""
    if path.is_dir():
        return f"is a directory, not a {what}"
    return f"not a regular file (a FIFO, a device or a socket), not a {what}" if path.exists() else f"no such {what}"


def read_regular(path: str | os.PathLike, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``; a FIFO, a device or a
    socket is refused without blocking (opened ``O_NONBLOCK``, checked by ``fstat``).

    Raises:
        FileReadError: one line, for anything but a regular file of that size.
        OSError: a missing or unreadable file (the caller names what it is).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileReadError(f"{path}: not a regular file (a FIFO, a device or a socket); name a file")
        if info.st_size > max_bytes:
            raise FileReadError(f"{path}: {info.st_size:,} bytes; at most {max_bytes:,} are read")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while being read
        raise FileReadError(f"{path}: over {max_bytes:,} bytes; at most that many are read")
    return data


def check_tree(folder: str | os.PathLike) -> None:
    """FileReadError unless every entry under ``folder`` (a zarr store) is a plain folder or a
    regular file: a link could carry a write out of the folder, a FIFO could block a read."""
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            mode = os.lstat(os.path.join(root, name)).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise FileReadError(f"{os.path.join(root, name)}: not a plain file or folder (a link, a FIFO, "
                                    f"a device); pixelgen reads and writes no such entry in {folder}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_failure(path: str | os.PathLike, exc: OSError) -> FileWriteError:
    """The one-line error for an ``OSError`` met while writing ``path``."""
    reason = exc.strerror or type(exc).__name__
    return FileWriteError(
        f"{path}: cannot write it ({reason}); free disk space, or choose a writable folder "
        f"(--out DIR); nothing already written was changed"
    )


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends cleanly.

    On any exception (or a kill) ``path`` keeps its old content. The new file gets the
    permissions an ordinary ``open`` would give it (0666 less the umask). An ``OSError``
    (disk full, read-only folder) becomes a one-line :class:`FileWriteError`; a ``path``
    that is a symbolic link is refused (:func:`refuse_link`).
    """
    path = pathlib.Path(path)
    refuse_link(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    except OSError as exc:
        raise write_failure(path, exc) from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, exc) from None
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Replace ``path``'s content with ``text`` (UTF-8) atomically."""
    with atomic_writer(path, "w") as handle:
        handle.write(text)
    return pathlib.Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any, **dump_options: Any) -> pathlib.Path:
    """Replace ``path``'s content with ``data`` as JSON atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, **dump_options) + "\n")


def remove_temporary_files(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Delete the temporary files an interrupted :func:`atomic_writer` left in ``folder``."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.glob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for stale in removed:
        stale.unlink(missing_ok=True)
    return removed


LOCK_NAME = ".pixelgen.lock"


class RunLock:
    """One writer per run folder: an exclusive ``fcntl.flock`` on ``folder/.pixelgen.lock``.

    The holder writes its PID into the file, so that the refusal names it. The operating
    system drops the lock when the holder exits or is killed, so a stale lock never blocks
    the next run; the file itself is left in place (removing it would race a new holder).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = pathlib.Path(folder) / LOCK_NAME
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        refuse_link(self.path)
        try:  # O_NOFOLLOW: a link put there since is refused too (ELOOP), never followed
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            raise write_failure(self.path, exc) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileWriteError(f"{self.path}: not a regular file; remove it, it is the run folder's lock")
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(
                f"run folder {self.path.parent} is in use by pixelgen process {holder}; wait for "
                f"it to finish (or stop it), or pass --out DIR to write elsewhere"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
