"""Time the README's "First steps in Python" block exactly as written, beside torch's import.

The block is read from README.md (its first ``python`` code block) and run in a fresh
process, in a temporary copy of ``recipes/`` so that its run folder lands there, not in the
checkout; ``python -c "import torch"`` is timed in the same run. Run from the checkout's root::

    python3 benchmarks/readme_first_steps.py [--repeats 3]
"""

from __future__ import annotations

import argparse
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


def wall_seconds(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    code = first_python_block(ROOT / "README.md")
    snippet, torch_import = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            shutil.copytree(ROOT / "recipes", Path(folder) / "recipes")
            torch_import.append(wall_seconds([sys.executable, "-c", "import torch"], Path(folder)))
            snippet.append(wall_seconds([sys.executable, "-c", code], Path(folder)))
    s, t = statistics.median(snippet), statistics.median(torch_import)
    print(f"README first steps: {s:.1f} s (median of {args.repeats}); import torch: {t:.1f} s; ratio {s / t:.1f}x")


if __name__ == "__main__":
    main()
