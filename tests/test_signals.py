"""SIGINT and SIGTERM stop every command the same way, through the real command line in a
real process: exit status 130 / 143, exactly one line on stderr ("pixelgen: error: SIGINT:
stopped"), no traceback, and nothing half-written: the run folder's files are as they were
and its archive opens with whole sample batches only.

Two moments: while the command's modules load (just after ``python -m pixelgen`` has set
its handlers, seen in ``/proc/PID/status``), and while ``sample`` draws images (torch loaded,
seen in ``/proc/PID/maps``), and likewise while ``score`` measures and ``compress`` codes.
``run`` is covered by tests/test_kill_resume.py.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from datafiles import write_tiny_run_recipe

from pixelgen import load_model
from pixelgen.store.archive import RunArchive

pytestmark = pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux /proc")

WAIT_S = 60  # generous: module loading on two busy cores


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
    """A finished one-epoch run of a tiny PixelCNN, with one sample batch in its archive."""
    base = tmp_path_factory.mktemp("signals")
    recipe = write_tiny_run_recipe(base, base / "run", epochs=1)
    done = subprocess.run([sys.executable, "-m", "pixelgen", "run", str(recipe)], env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return base / "run"


def environment() -> dict[str, str]:
    return {**os.environ, "PIXELGEN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def start(args: list[str]) -> subprocess.Popen:
    # SIGINT back to its default in the child: a shell starts a background job (pytest run
    # with &) ignoring it, and pixelgen rightly keeps a signal it was started ignoring ignored
    return subprocess.Popen([sys.executable, "-m", "pixelgen", *args], env=environment(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until(process: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready(process.pid):
        assert process.poll() is None, f"ended before the signal: {process.communicate()}"
        assert time.monotonic() < deadline, "the command never got that far"
        time.sleep(0.01)


def catches_sigterm(pid: int) -> bool:
    """pixelgen's handlers are set (Python itself catches SIGINT, never SIGTERM)."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def torch_loaded(pid: int) -> bool:
    return "libtorch" in pathlib.Path(f"/proc/{pid}/maps").read_text()


def snapshot(folder: pathlib.Path) -> dict[str, str]:
    """Every file outside the archive (the lock file aside: it names its last holder) by content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "archive.zarr" not in p.parts
            and p.name != ".pixelgen.lock"}


def assert_stopped(process: subprocess.Popen, signum: int) -> None:
    _, err = process.communicate(timeout=WAIT_S)
    assert process.returncode == 128 + signum, err
    lines = err.splitlines()
    assert lines == [f"pixelgen: error: {signal.Signals(signum).name}: stopped"], err
    assert "Traceback" not in err


COMMANDS = {
    "sample": lambda run: ["sample", str(run / "best.ckpt"), "-n", "2000", "--batch-size", "2000",
                           "--sampler", "reference", "--seed", "1", "--png", str(run / "grid.png")],
    "score": lambda run: ["score", str(run), "--features", "classifier", "--n", "10"],
    "eval": lambda run: ["eval", str(run / "best.ckpt")],
}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_signal_while_the_modules_load_stops_with_one_line(run_dir, command, signum):
    before = snapshot(run_dir)
    process = start(COMMANDS[command](run_dir))
    wait_until(process, catches_sigterm)
    process.send_signal(signum)
    assert_stopped(process, signum)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_sampling_leaves_no_partial_file(run_dir, signum):
    before = snapshot(run_dir)
    batches = RunArchive.open(run_dir / "archive.zarr").sample_batches()
    process = start(COMMANDS["sample"](run_dir))
    wait_until(process, torch_loaded)
    time.sleep(1.0)  # past loading the checkpoint, into drawing 2,000 images one sub-pixel at a time
    process.send_signal(signum)
    assert_stopped(process, signum)
    assert snapshot(run_dir) == before  # no grid.png, whole or partial
    archive = RunArchive.open(run_dir / "archive.zarr")
    assert archive.sample_batches() == batches
    assert all(archive.read_samples(key).shape[0] > 0 for key, _ in batches)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_scoring_leaves_no_partial_file(run_dir, signum):
    before = snapshot(run_dir)
    batches = RunArchive.open(run_dir / "archive.zarr").sample_batches()
    data = run_dir.parent / "data"
    process = start(["score", str(run_dir), "--features", "classifier", "--n", "1000", "--batch-size", "1000"])
    wait_until(process, torch_loaded)
    time.sleep(1.5)  # into training the feature classifier or drawing the 1,000 samples
    process.send_signal(signum)
    assert_stopped(process, signum)
    assert snapshot(run_dir) == before
    archive = RunArchive.open(run_dir / "archive.zarr")
    assert archive.sample_batches() == batches
    # a classifier is kept only whole (one trained to the end before the signal may stay)
    assert not [p.name for p in data.rglob("*") if "tmp" in p.name], "a partial classifier file"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_coding_leaves_no_partial_file(run_dir, signum):
    """``compress`` stopped while it codes: no .pgz, whole or partial, and no temporary file."""
    folder = run_dir.parent / f"codec-{signum}"
    folder.mkdir()
    channels = load_model(run_dir).in_channels
    images = np.random.default_rng(0).integers(0, 256, (2000, channels, 16, 16), dtype=np.uint8)  # tens of seconds
    np.save(folder / "images.npy", images)
    before = snapshot(run_dir)
    process = start(["compress", str(run_dir / "best.ckpt"), str(folder / "images.npy"), "-o",
                     str(folder / "images.pgz")])
    wait_until(process, torch_loaded)
    time.sleep(1.5)  # into coding 2,000 images one sub-pixel at a time
    process.send_signal(signum)
    assert_stopped(process, signum)
    assert sorted(p.name for p in folder.iterdir()) == ["images.npy"]
    assert snapshot(run_dir) == before


def test_an_error_a_signal_caused_reports_the_signal(monkeypatch, capsys):
    """A signal raised inside an import can leave a module half-made, and what surfaces is
    another error (numpy's lazy submodules gave a RecursionError under load): after a
    signal, the command line reports the signal, 143, in one line."""
    from pixelgen import cli, errors
    from pixelgen.cli import plugins as plugins_command

    monkeypatch.setattr(errors, "_RECEIVED", [])  # this process has handled no signal yet

    def broken_by_a_signal(args):
        try:
            errors.raise_interrupted(signal.SIGTERM, None)
        except errors.Interrupted:
            raise RecursionError("maximum recursion depth exceeded") from None

    monkeypatch.setattr(plugins_command, "cmd_plugins", broken_by_a_signal)
    assert cli.main(["plugins"]) == 143
    assert capsys.readouterr().err.splitlines() == ["pixelgen: error: SIGTERM: stopped"]
    monkeypatch.setattr(errors, "_RECEIVED", [])
    monkeypatch.setattr(plugins_command, "cmd_plugins", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # without a signal, a bug stays a bug
        cli.main(["plugins"])
