"""Settings for the whole test session.

One torch thread per process: on the two-core machines the suite is written for, two
threads per process were several times slower than one whenever anything else ran, and
pytest-xdist's two workers (``-n 2`` in pyproject's ``addopts``) use both cores. The
environment variable carries the setting into the ``python -m pixelgen`` processes the
tests start.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the variable, which torch reads when it loads)

torch.set_num_threads(1)
