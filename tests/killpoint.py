"""Run the pixelgen command line and die, as ``kill -9`` would, at the k-th file commit.

Every file pixelgen and zarr write is committed by ``os.replace`` or ``os.rename``; this
script counts those calls and ends the process with ``os._exit(137)`` just before or just
after the ``KILL_AT``-th one (``KILL_WHEN=before|after``). ``KILL_AT=0`` kills nothing and
prints the number of commits to stderr at the end, so a test can spread its kill points
over a whole run.

    KILL_AT=5 KILL_WHEN=after python tests/killpoint.py run tiny.toml --out run
"""

import atexit
import os
import sys

from pixelgen.cli import main

KILL_AT = int(os.environ.get("KILL_AT", "0"))
KILL_WHEN = os.environ.get("KILL_WHEN", "before")
commits = 0


def killing(real):
    def commit(src, dst, *args, **kwargs):
        global commits
        commits += 1
        if commits == KILL_AT and KILL_WHEN == "before":
            os._exit(137)
        result = real(src, dst, *args, **kwargs)
        if commits == KILL_AT and KILL_WHEN == "after":
            os._exit(137)
        return result
    return commit


os.replace = killing(os.replace)
os.rename = killing(os.rename)
if KILL_AT == 0:
    atexit.register(lambda: print(f"commits: {commits}", file=sys.stderr))
sys.exit(main(sys.argv[1:]))
