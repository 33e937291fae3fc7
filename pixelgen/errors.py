"""User-facing errors, the report function through which the library speaks, and whether
it draws progress bars.

Every error a user can cause (a bad recipe, an unknown model, missing data, a corrupt
checkpoint) is a :class:`PixelgenError`. The command line prints its message on one line
and exits non-zero; library callers catch it like any other exception.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Callable, Iterable

#: Where a long job's progress lines go (``print``, or :func:`silent`).
Report = Callable[[str], None]


def silent(line: str) -> None:
    """A report function that says nothing (every rank but 0)."""


def progress_bar_enabled() -> bool:
    """Progress bars on stderr: only on a terminal, and not with ``PIXELGEN_PROGRESS=0``
    (elsewhere the epoch lines are the plain progress). Here, below every layer that
    draws one, so that there is one definition."""
    return os.environ.get("PIXELGEN_PROGRESS", "1") != "0" and sys.stderr.isatty()


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """An error message as one line of at most ``limit`` characters (None: any length).

    White space runs (newlines included) become one space; an exception without a message
    is named by its type; a longer message is cut and ends in "...". For an error that a
    DataLoader worker re-raises ("Caught DataError in DataLoader worker process 0. Original
    Traceback ..."), the worker's own message.
    """
    message = str(error)
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(message.split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` naming the closest of ``known`` to ``name``; ``""`` where none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class PixelgenError(Exception):
    """An error caused by input the user can fix; the message says what and how, on one
    line: a message that quotes the user's text (a path, a key, a ``--set``) with a line
    break in it is made one line here (:func:`~pixelgen.errors.one_line`), once for every error."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(one_line(a) if isinstance(a, str) else a for a in args))


class RecipeError(PixelgenError):
    """A recipe key is missing, unknown or of the wrong type."""


class RegistryError(PixelgenError):
    """An unknown model or data set name, or an unknown hyperparameter."""


class HyperparameterError(RegistryError, ValueError):
    """A model refuses a hyperparameter's value: the rule every model shares, or the model's
    own check. A :class:`ValueError` too, as a model's constructor raises one."""


class DataError(PixelgenError):
    """Data files are missing, incomplete or fail their checksum."""


class CheckpointError(PixelgenError):
    """A checkpoint is missing, truncated, or was not written by pixelgen."""


class CausalityError(AssertionError):
    """A model output depends on a sub-pixel that the autoregressive order forbids."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a command; ``exit_code`` is 128 + the signal number.

    A :class:`KeyboardInterrupt`, not an :class:`Exception` (nor a :class:`PixelgenError`):
    raised by a signal handler wherever the process happens to be, it must pass through
    every ``except Exception`` on its way up (a library's optional import, a checkpoint
    reader refusing a damaged file) as Ctrl-C does, not become another error or vanish."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class RunLockedError(PixelgenError):
    """Another pixelgen process is writing into the same run folder."""


#: The :class:`Interrupted` of the first signal :func:`raise_interrupted` handled in this
#: process (a list of at most one, so that it is set without a global statement).
_RECEIVED: list[Interrupted] = []


def raise_interrupted(signum: int, frame: object) -> None:
    """A signal handler: SIGINT or SIGTERM becomes :class:`Interrupted` (exit 130 / 143)."""
    interrupted = Interrupted(f"{signal.Signals(signum).name}: stopped", signum)
    if not _RECEIVED:
        _RECEIVED.append(interrupted)
    raise interrupted


def signal_received() -> Interrupted | None:
    """The :class:`Interrupted` of the first SIGINT or SIGTERM this process handled, if any.

    A signal raises wherever the process happens to be; raised inside an import (numpy's
    lazy submodules, say), it can leave a module half-made, and what surfaces is then
    another error (a ``RecursionError``, an ``ImportError``), not the signal. The command
    line asks this before reporting such an error: after a signal, the signal is the cause.
    """
    return _RECEIVED[0] if _RECEIVED else None


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block, the previous handlers
    back after it. A signal the process was started ignoring (a shell's background job
    ignores SIGINT, ``nohup`` SIGHUP) stays ignored; outside the main thread, where Python
    cannot set handlers, nothing changes."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
