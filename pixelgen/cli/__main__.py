"""``python -m pixelgen``: the same as the ``pixelgen`` command."""

import sys

from pixelgen.cli import main

sys.exit(main())
