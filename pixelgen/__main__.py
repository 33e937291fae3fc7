"""``python -m pixelgen`` and the ``pixelgen`` command (its entry point is :func:`run`).

A signal that arrives while the command line's modules load (a fraction of a second, before
:func:`pixelgen.cli.main` sets its handlers) stops it the same way as later: one line on
stderr and 130/143, not a traceback or the raw signal. So the handlers are set first, from
:mod:`pixelgen.errors`, which loads nothing heavy, and ``pixelgen.cli`` is loaded inside
them by ``importlib``, as ``main`` loads a command's module.
"""

import importlib
import sys

from pixelgen.errors import Interrupted, interrupted_by_signals, signal_received


def run() -> int:
    """The ``pixelgen`` command: :func:`pixelgen.cli.main`, its modules loaded under the handlers."""
    with interrupted_by_signals():
        try:
            cli = importlib.import_module("pixelgen.cli")
        except Interrupted as exc:
            print(f"pixelgen: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except Exception:  # a module the signal left half-imported fails another way: the signal's
            interrupted = signal_received()
            if interrupted is None:
                raise
            print(f"pixelgen: error: {interrupted}", file=sys.stderr)
            return interrupted.exit_code
        return cli.main()  # inside the block: no moment without a handler between the two


if __name__ == "__main__":
    sys.exit(run())
