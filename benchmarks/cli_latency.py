"""What a ``pixelgen`` command costs before it does anything: wall time, CPU time and peak
memory of each command's start-up, its error paths and a few small jobs, beside
``python -c "import torch"`` timed in the same run, as ratios.

    python benchmarks/cli_latency.py                  # 5 repeats of every case
    python benchmarks/cli_latency.py --repeats 9

Run it from the root of the checkout being timed: ``python -m`` puts the current folder
first on ``sys.path``, ahead of PYTHONPATH and any installed pixelgen.

Every case is a fresh process (``python -m pixelgen ...``); its peak RSS and CPU time are that
child's own, from ``os.wait4``. The repeats go round the cases in turn, so that a load
spike on a shared machine touches every case alike; the table shows medians. ``eval``
reads a tiny checkpoint this script trains first in a temporary folder (a one-step
quickstart on at most 32 images).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(ROOT / "recipes" / "quickstart.toml")
TINY = ["--set", "train.max_steps=1", "--set", "train.epochs=1", "--set", "data.limit_train=32",
        "--set", "data.limit_val=32", "--set", "data.limit_test=32", "--set", "sample.n=1",
        "--set", "train.accelerator='cpu'"]


def cases(checkpoint: str) -> list[tuple[str, str, list[str]]]:
    """``(group, label, argv)``; argv after ``python``."""
    cli = ["-m", "pixelgen"]
    return [
        ("baseline", 'python -c "import torch"', ["-c", "import torch"]),
        ("start-up", "pixelgen --help", cli + ["--help"]),
        ("start-up", "pixelgen run --help", cli + ["run", "--help"]),
        ("start-up", "pixelgen sample --help", cli + ["sample", "--help"]),
        ("error", "pixelgen eval /nonexistent/best.ckpt", cli + ["eval", "/nonexistent/best.ckpt"]),
        ("error", "pixelgen rn (unknown command)", cli + ["rn"]),
        ("error", "pixelgen run quickstart --set train.epoch=1", cli + ["run", QUICKSTART, "--set", "train.epoch=1"]),
        ("job", "pixelgen plugins", cli + ["plugins"]),
        ("job", "pixelgen recipe show quickstart", cli + ["recipe", "show", QUICKSTART]),
        ("job", "pixelgen eval tiny.ckpt --limit 32", cli + ["eval", checkpoint, "--limit", "32",
                                                             "--accelerator", "cpu"]),
    ]


def measure(argv: list[str]) -> tuple[float, float, float, int]:
    """``(wall s, CPU s, peak RSS MiB, exit status)`` of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PIXELGEN_PROGRESS": "0"})
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not every child's
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, child.returncode


def train_tiny(folder: Path) -> str:
    out = folder / "run"
    done = subprocess.run([sys.executable, "-m", "pixelgen", "run", QUICKSTART, "--out", str(out), *TINY],
                          capture_output=True, text=True, env={**os.environ, "PIXELGEN_PROGRESS": "0"})
    if done.returncode != 0:
        sys.exit(f"training the tiny checkpoint failed:\n{done.stderr}")
    return str(out / "best.ckpt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of every case (default: 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        table = cases(train_tiny(Path(folder)))
        results: dict[str, list[tuple[float, float, float, int]]] = {label: [] for _, label, _ in table}
        for _ in range(args.repeats):
            for _, label, argv in table:
                results[label].append(measure(argv))
    load = os.getloadavg()
    print(f"{platform.node() or 'this machine'}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) at the end; "
          f"medians of {args.repeats} runs\n")
    base_wall = statistics.median(r[0] for r in results[table[0][1]])
    base_cpu = statistics.median(r[1] for r in results[table[0][1]])
    print("| case | command | wall s | wall / torch | CPU s | CPU / torch | peak RSS MiB | exit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for group, label, _ in table:
        runs = results[label]
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        rss = statistics.median(r[2] for r in runs)
        codes = sorted({r[3] for r in runs})
        print(f"| {group} | `{label}` | {wall:.2f} | {wall / base_wall:.2f}x | {cpu:.2f} | {cpu / base_cpu:.2f}x "
              f"| {rss:.0f} | {','.join(map(str, codes))} |")


if __name__ == "__main__":
    main()
