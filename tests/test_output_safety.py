"""What a command writes, through the real command line in a subprocess (issue 21).

Class 1, links and special files: nothing is written through a symbolic link (the lock, a
PNG, a checkpoint, an archive's entries, a report's files), and a FIFO or a device named where
a file is read is refused at once, never read.

Class 2, outputs on a run's own files and writers without the lock: no output of any
command lands on one of a run folder's own files (:data:`pixelgen.store.runs.RUN_FILES`),
even with ``--force``; an existing file is replaced only with ``--force``; a command that
writes into a run folder another process holds stops at once, naming that process.

Every refusal is one line on stderr, status 2, no traceback, and every file that was there
before (and every link's target outside the folder) keeps its bytes. Each case starts from
a private copy of ``tests/fixtures/legacy_v0_1`` (two finished runs on tiny IDX data). The
tables run through :func:`pixelgen.cli.main` in this process (a subprocess costs seconds of
start-up per case); :func:`test_each_class_through_a_subprocess` runs cases of each table
through ``python -m pixelgen``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import pytest

from pixelgen import cli
from pixelgen.api import train
from pixelgen.errors import PixelgenError
from pixelgen.recipe import SampleSection
from pixelgen.store.files import LOCK_NAME, RunLock
from pixelgen.store.runs import RUN_FILES
from pixelgen.study.from_checkpoint import load_model, quantize_checkpoint, sample_checkpoint

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "legacy_v0_1"
RUN = "runs/pixelcnn"
CKPT = f"{RUN}/best.ckpt"

#: Each command that writes a named output: its arguments around the output path. Files
#: first (sample's grid, quantize's checkpoint), then report folders (compare, analyse).
WRITERS = {
    "sample --png": lambda out: ["sample", CKPT, "-n", "1", "--no-archive", "--png", out],
    "quantize --out": lambda out: ["quantize", CKPT, "--to", "int8", "--out", out],
    "compare --out": lambda out: ["compare", RUN, "--out", out],
    "analyse --out": lambda out: ["analyse", CKPT, "--out", out],
}

#: Every run file, anything inside the archive, and the run folder itself.
RUN_TARGETS = [*RUN_FILES, "archive.zarr/zarr.json", "archive.zarr/metrics", "."]


@pytest.fixture
def work(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the fixture with a lock file and a samples.png in the run folder (every run
    file present), and ``outside/`` holding files that links may point to."""
    shutil.copytree(FIXTURE, tmp_path / "w")
    for run in ("pixelcnn", "row_lstm"):
        (tmp_path / "w/runs" / run / LOCK_NAME).write_text("1\n")
        (tmp_path / "w/runs" / run / "samples.png").write_bytes(b"the run's own samples")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/target").write_bytes(b"outside the run folder")
    return tmp_path / "w"


def digests(*folders: pathlib.Path) -> dict[str, str]:
    """The md5 of every file (and the text of every link) under ``folders``; of a lock file,
    only that it is one (its holder writes its PID into it)."""
    found = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_symlink():
                found[str(p)] = "link to " + os.readlink(p)
            elif p.is_file() and p.name == LOCK_NAME:
                found[str(p)] = "a lock"
            elif p.is_file():
                found[str(p)] = hashlib.md5(p.read_bytes()).hexdigest()
    return found


def pixelgen(work: pathlib.Path, *argv: str) -> types.SimpleNamespace:
    """The command line run in this process in ``work``: ``returncode``, ``stderr``."""
    stderr, cwd = io.StringIO(), os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(list(argv))
    except SystemExit as exc:  # a usage error: argparse exits
        status = exc.code
    finally:
        os.chdir(cwd)
    return types.SimpleNamespace(returncode=status, stderr=stderr.getvalue())


def pixelgen_process(work: pathlib.Path, *argv: str) -> subprocess.CompletedProcess:
    """The command line as a user runs it: ``python -m pixelgen`` in ``work``."""
    env = {**os.environ, "PIXELGEN_PROGRESS": "0", "PIXELGEN_DEBUG": "0"}
    return subprocess.run([sys.executable, "-m", "pixelgen", *argv], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)


def assert_refused(done: subprocess.CompletedProcess | types.SimpleNamespace, *needles: str) -> None:
    """Status 2, one line on stderr naming the problem, no traceback."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and re.match(r"pixelgen( \w+)?: error: ", lines[0]), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def unchanged(work: pathlib.Path):
    """A check that nothing under the working copy or ``outside/`` changed since this call."""
    before = digests(work, work.parent / "outside")
    return lambda: digests(work, work.parent / "outside") == before


# ------------------------------------------------------------------ class 2: outputs


@pytest.mark.parametrize("target", RUN_TARGETS)
@pytest.mark.parametrize("writer", WRITERS)
def test_no_output_lands_on_a_run_file_even_with_force(work, writer, target):
    check = unchanged(work)
    done = pixelgen(work, *WRITERS[writer](f"{RUN}/{target}"), "--force")
    assert_refused(done, f"{RUN}/{target}".rstrip("/."))
    assert check()


@pytest.mark.parametrize("writer", WRITERS)
def test_an_existing_output_is_replaced_only_with_force(work, writer):
    (work / "mine").mkdir()
    (work / "mine/notes.md").write_text("the user's own")
    out = "mine/notes.md" if writer in ("sample --png", "quantize --out") else "mine"
    check = unchanged(work)
    assert_refused(pixelgen(work, *WRITERS[writer](out)), "--force", out)
    assert check()


def test_default_outputs_replace_nothing(work):
    """sample's default grid takes a free name (never the run's samples.png, nor an earlier
    grid); quantize's default file, once there, is replaced only with --force."""
    check = unchanged(work)
    for _ in range(2):
        assert pixelgen(work, "sample", CKPT, "-n", "1", "--no-archive", "--seed", "0").returncode == 0
    assert pixelgen(work, "quantize", CKPT, "--to", "int8").returncode == 0
    quantized = digests(work / RUN)[str(work / RUN / "best-int8.ckpt")]
    assert_refused(pixelgen(work, "quantize", CKPT, "--to", "int8", "--weights", "raw"), "--force")
    assert digests(work / RUN)[str(work / RUN / "best-int8.ckpt")] == quantized
    new = {p.name for p in (work / RUN).iterdir()} - {p.name for p in (FIXTURE / RUN).iterdir()}
    assert new == {LOCK_NAME, "samples.png", "samples-seed0.png", "samples-seed0-2.png", "best-int8.ckpt"}
    for name in ("samples-seed0.png", "samples-seed0-2.png", "best-int8.ckpt"):
        (work / RUN / name).unlink()
    assert check()


@pytest.mark.parametrize("target", RUN_FILES)
def test_the_library_refuses_run_files_too(work, target, monkeypatch):
    """The same rule from Python, where no parser checked the path first."""
    monkeypatch.chdir(work)
    check = unchanged(work)
    with pytest.raises(PixelgenError, match=target.replace(".", r"\.")):
        quantize_checkpoint(CKPT, "int8", f"{RUN}/{target}", force=True)
    with pytest.raises(PixelgenError, match=target.replace(".", r"\.")):
        sample_checkpoint(CKPT, SampleSection(n=1, seed=0), archive=False, png=f"{RUN}/{target}", force=True)
    assert check()


#: Each command that writes into the run folder of CKPT, by default.
RUN_WRITERS = {
    "sample": ["sample", CKPT, "-n", "1", "--seed", "0"],
    "sample --no-archive": ["sample", CKPT, "-n", "1", "--seed", "0", "--no-archive"],
    "quantize": ["quantize", CKPT, "--to", "float16"],
    "run --resume": ["run", "legacy.toml", "--resume", "--set", "train.epochs=2"],
}


@pytest.mark.parametrize("writer", RUN_WRITERS)
def test_every_writer_into_a_run_folder_takes_its_lock(work, writer):
    check = unchanged(work)
    with RunLock(work / RUN):  # this process plays a trainer still writing the run
        done = pixelgen(work, *RUN_WRITERS[writer])
    assert_refused(done, f"in use by pixelgen process {os.getpid()}")
    assert check()


# ------------------------------------------------------------------ class 1: links


def link(work: pathlib.Path, path: str, to: str = "../outside/target") -> None:
    """Make ``path`` (in the working copy) a symbolic link to ``to`` (relative to ``work``)."""
    full = work / path
    full.parent.mkdir(parents=True, exist_ok=True)
    if full.is_dir() and not full.is_symlink():
        shutil.rmtree(full)
    else:
        full.unlink(missing_ok=True)
    full.symlink_to(pathlib.Path(os.path.relpath(work / to, full.parent)))


def a_report(work: pathlib.Path, marker: str) -> None:
    (work / "report").mkdir()
    (work / "report" / marker).write_text("{}")


#: A link where a command writes, and the command: (what to set up, argv, needle).
LINKED_OUTPUTS = {
    "the run lock": (lambda w: link(w, f"{RUN}/{LOCK_NAME}"), RUN_WRITERS["sample"], "symbolic link"),
    "the run lock, training": (lambda w: link(w, f"{RUN}/{LOCK_NAME}"), RUN_WRITERS["run --resume"], "symbolic link"),
    "a grid": (lambda w: link(w, "grid.png"), WRITERS["sample --png"]("grid.png") + ["--force"], "symbolic link"),
    "a checkpoint": (lambda w: link(w, "small.ckpt"), WRITERS["quantize --out"]("small.ckpt") + ["--force"],
                     "symbolic link"),
    "an archive entry": (lambda w: link(w, f"{RUN}/archive.zarr/samples/zarr.json"), RUN_WRITERS["sample"], "link"),
    "the archive": (lambda w: link(w, f"{RUN}/archive.zarr", "../outside"), RUN_WRITERS["sample"], "symbolic link"),
    "a comparison's file": (lambda w: (a_report(w, "comparison.json"), link(w, "report/report.md")),
                            WRITERS["compare --out"]("report"), "link"),
    "an analysis's figure": (lambda w: (a_report(w, "analysis.json"), link(w, "report/receptive_field.png")),
                             WRITERS["analyse --out"]("report"), "link"),
    "a report folder": (lambda w: link(w, "report", "../outside"), WRITERS["compare --out"]("report"),
                        "symbolic link"),
}


@pytest.mark.parametrize("case", LINKED_OUTPUTS)
def test_nothing_is_written_through_a_link(work, case):
    prepare, argv, needle = LINKED_OUTPUTS[case]
    prepare(work)
    check = unchanged(work)
    assert_refused(pixelgen(work, *argv), needle)
    assert check()
    assert (work.parent / "outside/target").read_bytes() == b"outside the run folder"


#: Each command that writes one named file, around its output path.
FILE_WRITERS = {
    "sample --png": WRITERS["sample --png"],
    "quantize --out": WRITERS["quantize --out"],
    "compress -o": lambda out: ["compress", CKPT, "legacy.toml", "-o", out],
}


@pytest.mark.parametrize("writer", FILE_WRITERS)
def test_a_file_output_named_as_a_folder_is_refused(work, writer):
    """``new/`` names a folder: a command that writes one file refuses it rather than
    writing a file called ``new`` (pathlib drops the separator that said so)."""
    check = unchanged(work)
    assert_refused(pixelgen(work, *FILE_WRITERS[writer]("new/")), "names a folder")
    assert check() and not (work / "new").exists()


# ------------------------------------------------------------------ class 1: special files


def fifo(work: pathlib.Path, path: str) -> str:
    full = work / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.unlink(missing_ok=True)
    os.mkfifo(full)
    return path


#: A FIFO or a device where a file is read: (what to set up, returning the argv; needle).
SPECIAL_READS = {
    "completion image, FIFO": (lambda w: ["sample", CKPT, "-n", "1", "--no-archive", "--rows", "1",
                                          "--complete", fifo(w, "photo.png")], "not a regular file"),
    "completion image, /dev/zero": (lambda w: ["sample", CKPT, "-n", "1", "--no-archive", "--rows", "1",
                                               "--complete", "/dev/zero"], "not a regular file"),
    "checkpoint, FIFO": (lambda w: ["eval", fifo(w, "model.ckpt")], "not a regular file"),
    "checkpoint, /dev/zero": (lambda w: ["quantize", "/dev/zero", "--to", "int8"], "not a regular file"),
    "checkpoint to compare, FIFO": (lambda w: ["compare", fifo(w, "model.ckpt")], "not a"),
    "recipe, FIFO": (lambda w: ["run", fifo(w, "fifo.toml")], "not a regular file"),
    "recipe, /dev/zero": (lambda w: ["recipe", "show", "/dev/zero"], "not a regular file"),
    "archive's JSON, FIFO": (lambda w: (fifo(w, f"{RUN}/archive.zarr/metrics/zarr.json"),
                                        RUN_WRITERS["sample"])[1], "FIFO"),
    "images to code, FIFO .npy": (lambda w: ["compress", CKPT, fifo(w, "images.npy"), "-o", "x.pgz"],
                                  "not a regular file"),
    "images to code, FIFO .png": (lambda w: ["compress", CKPT, fifo(w, "shirt.png"), "-o", "x.pgz"],
                                  "not a regular file"),
    "images to code, /dev/zero": (lambda w: ["compress", CKPT, "/dev/zero", "-o", "x.pgz"], "not a regular file"),
    "file to decode, FIFO": (lambda w: ["decompress", CKPT, fifo(w, "x.pgz"), "-o", "x.npy"],
                             "not a regular file"),
}


@pytest.mark.parametrize("case", SPECIAL_READS)
def test_a_fifo_or_a_device_is_refused_not_read(work, case):
    prepare, needle = SPECIAL_READS[case]
    argv = prepare(work)
    check = unchanged(work)
    assert_refused(pixelgen(work, *argv), needle)  # a FIFO read would block: the timeout fails it
    assert check()


def test_load_model_names_a_fifo_or_a_device_for_what_it_is(work):
    for source in (work / fifo(work, "model.ckpt"), "/dev/null"):
        with pytest.raises(PixelgenError, match="not a regular file"):
            load_model(source)


# ------------------------------------------------------------------ the same, as a user runs it


#: A case of each table above: (its setup, argv, needle). All but the lock's are refused by
#: the parser, before torch loads; the lock's loads the checkpoint first (seconds).
PROCESS_CASES = {
    "a run file": (None, WRITERS["quantize --out"](f"{RUN}/last.ckpt") + ["--force"], "last.ckpt"),
    "an existing file": (None, WRITERS["sample --png"]("legacy.toml"), "--force"),
    "a held lock": ("lock", RUN_WRITERS["sample --no-archive"], "in use by pixelgen process"),
    "a linked grid": (LINKED_OUTPUTS["a grid"][0], LINKED_OUTPUTS["a grid"][1], "symbolic link"),
    "a FIFO recipe": (lambda w: fifo(w, "fifo.toml"), ["run", "fifo.toml"], "not a regular file"),
}


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_each_class_through_a_subprocess(work, case):
    prepare, argv, needle = PROCESS_CASES[case]
    if prepare not in (None, "lock"):
        prepare(work)
    check = unchanged(work)
    with RunLock(work / RUN) if prepare == "lock" else contextlib.nullcontext():
        done = pixelgen_process(work, *argv)
    assert_refused(done, needle)
    assert check()


def test_a_fifo_recipe_given_to_pixelgen_train_is_refused_not_read(work):
    with pytest.raises(PixelgenError, match="not a regular file"):
        train(work / fifo(work, "fifo.toml"))  # pixelgen.train
