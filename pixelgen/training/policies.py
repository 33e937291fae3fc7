"""The small objects the training loop asks (:mod:`pixelgen.training.trainer`): when to stop
(early stopping), how fast to start (learning-rate warm-up), and when a signal may stop it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from typing import Any

import attrs

from pixelgen.errors import Interrupted


@attrs.define
class EarlyStopping:
    """Stop when the monitored figure has not improved for ``patience`` epochs (0: never)."""

    monitor: str
    patience: int
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, value: float, epoch: int) -> bool:
        """Record epoch ``epoch``'s figure; True if it is a new best."""
        improved = value < self.best
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped = self.patience > 0 and self.bad_epochs >= self.patience
        return improved

    def state_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("monitor", "best", "best_epoch", "bad_epochs", "stopped"):
            setattr(self, key, state[key])


@attrs.define
class Warmup:
    """Raise the learning rate linearly from 0 to its set value over ``steps`` optimizer steps."""

    steps: int
    base_lrs: list[float] | None = None

    def apply(self, optimizer: Any, step: int) -> None:
        """Set the rate of optimizer step ``step`` (0-based) before it is taken."""
        if step > self.steps or not self.steps:
            return
        if self.base_lrs is None:
            self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        for group, base in zip(optimizer.param_groups, self.base_lrs):
            group["lr"] = base * min(1.0, (step + 1) / self.steps)


class SignalGuard:
    """SIGINT and SIGTERM raise :class:`~pixelgen.errors.Interrupted` at once, except
    inside :meth:`SignalGuard.deferred` (a pair of checkpoint writes), which they wait for. Every
    file is written atomically, so the run folder is resumable at either point."""

    def __init__(self, folder: os.PathLike) -> None:
        self.folder = folder
        self.pending: int | None = None
        self.deferring = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum: int, frame: Any) -> None:
        if self.deferring:
            self.pending = signum
            return
        self.raise_interrupted(signum)

    def raise_interrupted(self, signum: int) -> None:
        name = signal.Signals(signum).name
        raise Interrupted(f"{name}: stopped; {self.folder} holds the last completed epoch; "
                          f"run the same command with --resume to continue", signum)

    @contextlib.contextmanager
    def deferred(self) -> Any:
        """Hold a signal that arrives inside the block until the block has ended."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending is not None:
            self.raise_interrupted(self.pending)
