"""Time the getting-started guide's examples (docs/getting-started.md) as written, beside
torch's import, and the sampler's thread use on a small batch.

Each ``{doctest}`` group of the guide (its ``{testsetup}``, its examples, its
``{testcleanup}``) runs in one fresh process through :mod:`doctest`, which checks every
output as Sphinx's doctest builder does (tests/test_docs.py runs them there); then
``pixelgen.sample`` of the README's Diagonal BiLSTM (4 images of 8x8) is timed with one torch
thread and with two, in one process. Wall and user + sys CPU time, medians; run from the
checkout's root::

    python3 benchmarks/getting_started.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "getting-started.md"
BLOCK = re.compile(r"^```\{(doctest|testsetup|testcleanup)\}[ \t]*(\S*)\n(.*?)^```", re.S | re.M)

RUNNER = """
import doctest, sys
failed = 0
for group, setup, examples, cleanup in GROUPS:
    namespace = {}
    exec(setup, namespace)
    test = doctest.DocTestParser().get_doctest(examples, namespace, group or "default", None, 0)
    failed += doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test).failed
    exec(cleanup, namespace)
sys.exit(1 if failed else 0)
"""

THREADS = """
import resource, time, torch, pixelgen
model = pixelgen.create_model("diagonal_bilstm", in_channels=3, hidden_channels=32, n_layers=2)
pixelgen.sample(model, 1, 2, 2, seed=0)  # warm-up
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
for threads in (1, 2):
    torch.set_num_threads(threads)
    pixelgen.sampling.sampling_threads = lambda n, device: None  # time the count set here, not the one sample() picks
    wall, used = time.perf_counter(), cpu()
    pixelgen.sample(model, 4, 8, 8, seed=0)
    print(f"  pixelgen.sample(diagonal_bilstm, 4, 8, 8) with {threads} thread(s): "
          f"{time.perf_counter() - wall:.2f} s wall, {cpu() - used:.2f} s CPU")
"""


def groups(text: str) -> list[tuple[str, str, str, str]]:
    """``(group, setup code, doctest examples, cleanup code)`` of each doctest group, in order."""
    found: dict[str, dict[str, str]] = {}
    for kind, group, body in BLOCK.findall(text):
        parts = found.setdefault(group, {"testsetup": "", "doctest": "", "testcleanup": ""})
        parts[kind] += body
    return [(g, p["testsetup"], p["doctest"], p["testcleanup"]) for g, p in found.items()]


def seconds(argv: list[str]) -> tuple[float, float]:
    """``(wall s, user + sys CPU s)`` of one child process (its own rusage, from ``os.wait4``)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[:2])} failed: run it by hand to see why")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    script = f"GROUPS = {groups(GUIDE.read_text())!r}\n{RUNNER}"
    guide, torch_import = [], []
    for _ in range(args.repeats):
        torch_import.append(seconds([sys.executable, "-c", "import torch"]))
        guide.append(seconds([sys.executable, "-c", script]))
    for what, k in (("wall", 0), ("CPU (user + sys)", 1)):
        s, t = statistics.median(r[k] for r in guide), statistics.median(r[k] for r in torch_import)
        print(f"getting-started examples, {what}: {s:.1f} s (median of {args.repeats}); "
              f"import torch: {t:.1f} s; ratio {s / t:.1f}x")
    print("the sampler on a small batch, by torch threads:", flush=True)
    subprocess.run([sys.executable, "-c", THREADS], cwd=ROOT, check=True)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
