"""``python -m pixelgen``: the same as the ``pixelgen`` command.

A signal that arrives while the command line's modules load (a fraction of a second, before
:func:`pixelgen.cli.main` sets its handlers) stops it the same way as later: one line on
stderr and 130/143, not a traceback or the raw signal. So the handlers are set first, from
:mod:`pixelgen.errors`, which loads nothing heavy, and ``pixelgen.cli`` is loaded inside
them by ``importlib`` (an import statement in a block would read as one in the wrong room).
"""

import importlib
import sys

from pixelgen.errors import Interrupted, interrupted_by_signals

with interrupted_by_signals():
    try:
        cli = importlib.import_module("pixelgen.cli")
    except Interrupted as exc:
        print(f"pixelgen: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
sys.exit(cli.main())
