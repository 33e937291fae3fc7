"""Files that outlive a process, written so that a kill at any instant is harmless.

Every file pixelgen writes into a run folder goes through :func:`atomic_writer`: the
bytes go to a temporary file beside the target (``.NAME.XXXX.tmp``), are flushed to disk,
and replace the target in one ``os.replace``. A reader sees the old file or the new one,
never half of one. A kill leaves at most a temporary file, which
:func:`remove_temporary_files` clears on the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import tempfile
from typing import IO, Any, Iterator

from pixelgen.errors import PixelgenError, RunLockedError

TEMPORARY_SUFFIX = ".tmp"


class FileWriteError(PixelgenError):
    """A file could not be written: a full disk, a read-only folder, a path that is a file."""


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
    (disk full, read-only folder) becomes a one-line :class:`FileWriteError`.
    """
    path = pathlib.Path(path)
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
        try:
            handle = open(self.path, "a+")
        except OSError as exc:
            raise write_failure(self.path, exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(
                f"{self.path.parent} is in use by pixelgen process {holder}; wait for it to "
                f"finish (or stop it), or pass --out DIR to write elsewhere"
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
