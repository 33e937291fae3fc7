"""Time the README's "First steps in Python" block exactly as written, beside torch's import.

The block is read from README.md (its first ``python`` code block) and run in a fresh
process, in a temporary copy of ``recipes/`` so that its run folder lands there, not in the
checkout; ``python -c "import torch"`` is timed in the same run. Run from the checkout's root::

    python3 benchmarks/readme_first_steps.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def first_python_block(readme: Path) -> str:
    match = re.search(r"^```python\n(.*?)^```", readme.read_text(), re.S | re.M)
    if match is None:
        raise SystemExit(f"{readme}: no python code block")
    return match.group(1)


def seconds(argv: list[str], cwd: Path) -> tuple[float, float]:
    """``(wall s, user + sys CPU s)`` of one child process (its own rusage, from ``os.wait4``)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:2]} failed in {cwd}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    code = first_python_block(ROOT / "README.md")
    snippet, torch_import = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            shutil.copytree(ROOT / "recipes", Path(folder) / "recipes")
            torch_import.append(seconds([sys.executable, "-c", "import torch"], Path(folder)))
            snippet.append(seconds([sys.executable, "-c", code], Path(folder)))
    for what, k in (("wall", 0), ("CPU (user + sys)", 1)):
        s, t = statistics.median(r[k] for r in snippet), statistics.median(r[k] for r in torch_import)
        print(f"README first steps, {what}: {s:.1f} s (median of {args.repeats}); import torch: {t:.1f} s; "
              f"ratio {s / t:.1f}x")
    load = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {load:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
