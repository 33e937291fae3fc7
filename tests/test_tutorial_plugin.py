"""The plugin tutorial (docs/tutorials/model-plugin.md) works when followed literally.

The tutorial builds a package, ``my-package``, from code blocks captioned with the file
each belongs to, and tells the reader to type commands in that folder. This test follows
it in order, as a reader would: it writes every file block (a block captioned with a
path, ```my-package/PATH```, is added to the end of that file, after two blank lines; one
captioned ```my-package/PATH`, in class `NAME``` to the end of that class, after one)
and runs every command of every ``bash``
block, exactly as written, in a fresh virtual environment that sees this Python's
packages, so that ``python3 -m pip install -e .`` installs into it and nowhere else.

What differs from a reader's machine is only what a test machine needs:

* pip is told, through its environment, to use no package index and to build without
  isolation (the build needs setuptools, which this Python has);
* ``pixelgen`` on the PATH runs this checkout's pixelgen with the environment's Python;
* ``pixelgen run`` gets :data:`QUICK` appended, so that the run takes a few steps, not
  minutes, and, where Debian's Fashion-MNIST is not installed, small IDX files written
  here as its data.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shlex
import site
import subprocess
import sys
from typing import NamedTuple

import pytest
from datafiles import write_tiny_mnist

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorials" / "model-plugin.md"
PACKAGE = "my-package"
FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
# Appended to the tutorial's `pixelgen run`: a few steps, small evaluations, two samples.
QUICK = ["--set", "train.max_steps=3", "--set", "data.limit_val=64", "--set", "data.limit_test=64",
         "--set", "sample.n=2"]

FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<body>.*?)^```$", re.M | re.S)
CAPTION = re.compile(rf"^`{PACKAGE}/(?P<path>[^`]+)`(?:, in class `(?P<cls>\w+)`)?$")


class FileBlock(NamedTuple):
    path: str  # relative to my-package/
    cls: str | None  # None: add to the end of the file; else to the end of this class
    code: str


class Commands(NamedTuple):
    lines: list[str]


def tutorial_steps(text: str) -> list[FileBlock | Commands]:
    """The tutorial's file blocks and command blocks, in the order a reader meets them."""
    steps: list[FileBlock | Commands] = []
    for fence in FENCE.finditer(text):
        info, body = fence["info"].strip(), fence["body"]
        if info in ("sh", "shell", "console", "{code-block} bash"):
            raise AssertionError(f"commands belong in ```bash blocks, the ones this test runs: {info}")
        if info == "bash":
            joined = body.replace("\\\n", " ")
            steps.append(Commands([line.strip() for line in joined.splitlines()
                                   if line.strip() and not line.strip().startswith("#")]))
        elif info.startswith("{code-block}"):
            lines, options = body.split("\n"), {}
            while lines and (option := re.match(r"^:(\w+): (.*)$", lines[0])):
                options[option[1]] = option[2]
                lines.pop(0)
            if lines and not lines[0].strip():  # the blank line between options and code
                lines.pop(0)
            caption = CAPTION.match(options.get("caption", ""))
            assert caption, f"a code block without a caption naming its file in {PACKAGE}/: {body[:80]!r}"
            steps.append(FileBlock(caption["path"], caption["cls"], "\n".join(lines)))
    return steps


def add_block(package: pathlib.Path, block: FileBlock) -> None:
    path = package / block.path
    path.parent.mkdir(parents=True, exist_ok=True)
    if block.cls is None:
        before = path.read_text().rstrip("\n") + "\n\n\n" if path.exists() else ""
        path.write_text(before + block.code)
        return
    lines = path.read_text().splitlines(keepends=True)
    (cls,) = [node for node in ast.parse("".join(lines)).body
              if isinstance(node, ast.ClassDef) and node.name == block.cls]
    path.write_text("".join(lines[: cls.end_lineno]) + "\n" + block.code + "".join(lines[cls.end_lineno:]))


def reader_environment(tmp_path: pathlib.Path) -> dict[str, str]:
    """A virtual environment in ``tmp_path/venv`` that sees this Python's packages and
    this checkout's pixelgen; the environment variables that put it first on the PATH."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    # This Python's own site folders too, with their .pth files (an editable pixelgen, an
    # outer virtual environment, whose packages --system-site-packages would not reach).
    folders = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    adds = "; ".join(f"site.addsitedir({folder!r})" for folder in folders)
    (purelib / "_outer_site.pth").write_text(f"import site; {adds}\n")  # one line: site runs it
    shim = venv / "bin" / "pixelgen"
    shim.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python3"}" -m pixelgen "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONHOME"))}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",  # pip reads this inverted: 0 means --no-build-isolation
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIXELGEN_PROGRESS="0",
        OMP_NUM_THREADS="1",
    )
    return env


def test_the_tutorial_names_its_files_and_commands():
    steps = tutorial_steps(TUTORIAL.read_text())
    files = sorted({step.path for step in steps if isinstance(step, FileBlock)})
    assert files == ["my_package/__init__.py", "my_package/wide_cnn.py", "pyproject.toml",
                     "tests/test_wide_cnn.py", "wide_cnn.toml"]
    commands = [line for step in steps if isinstance(step, Commands) for line in step.lines]
    assert commands[0] == "python3 -m pip install -e ."
    assert [c.split()[1] for c in commands if c.startswith("pixelgen ")] == [
        "plugins", "check", "check", "run", "sample"]
    pyproject = next(s.code for s in steps if isinstance(s, FileBlock) and s.path == "pyproject.toml")
    for table in ("[build-system]", "[project]", "[project.entry-points.pixelgen]"):
        assert table in pyproject
    assert 'name = "my-package"' in pyproject and 'version = "0.1.0"' in pyproject


@pytest.mark.slow
def test_following_the_tutorial_literally_builds_installs_checks_trains_and_samples(tmp_path):
    env = reader_environment(tmp_path)
    package = tmp_path / PACKAGE
    package.mkdir()
    quick = list(QUICK)
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        write_tiny_mnist(tmp_path / "fashion-mnist", n_train=96, n_test=16)
        quick += ["--set", f"data.root={tmp_path / 'fashion-mnist'}"]
    outputs: list[tuple[str, str]] = []  # (command as written, its output)
    for step in tutorial_steps(TUTORIAL.read_text()):
        if isinstance(step, FileBlock):
            add_block(package, step)
            continue
        for command in step.lines:
            ran = command + (" " + shlex.join(quick) if command.startswith("pixelgen run ") else "")
            done = subprocess.run(ran, shell=True, executable="/bin/bash", cwd=package, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{ran}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            outputs.append((command, done.stdout))

    def output(start: str) -> str:
        return next(out for command, out in outputs if command.startswith(start))

    assert "  wide_cnn  (plugin wide_cnn) Residual 5x5 mask-B convolutions" in output("pixelgen plugins")
    check = output("pixelgen check wide_cnn")
    assert "wide_cnn: causal for C=1 at 6x7" in check and "wide_cnn: causal for C=3 at 6x7" in check
    assert "2 passed" in output("python3 -m pytest tests")
    run = package / "runs" / "wide_cnn"
    assert (run / "best.ckpt").is_file() and (run / "metrics.json").is_file()
    sample = output("pixelgen sample ")
    assert "16 samples (1, 28, 28)" in sample and "(fast sampler)" in sample  # the plugin's own fast sampler
    grid = run / "samples-000001.png"
    assert f"grid     {grid.relative_to(package)}" in sample and grid.is_file()
    assert str(grid.relative_to(package)) in TUTORIAL.read_text()  # where the tutorial says it is
