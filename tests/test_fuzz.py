"""Property-based fuzzing (hypothesis) of what a user hands pixelgen: recipe files, ``--set``
overrides, and run archives damaged byte by byte.

Every case holds the same invariants: the result is right (a valid Recipe, an archive read
exactly as it was written), or the refusal is a :class:`~pixelgen.errors.PixelgenError`
whose message is one line; through the command line, exit 0 or 2 with one line on stderr and
no traceback; files the command did not create keep their bytes; nothing runs past a bound.

Deterministic (``derandomize=True``): the same examples on every run. The default run tries
``PIXELGEN_FUZZ_EXAMPLES`` examples per property (default 200); the long twins, on request,
try ten times as many (``PIXELGEN_FUZZ_LONG=1 python3 -m pytest tests/test_fuzz.py -k long``). Outcomes are counted and
printed at the end of the module (``-s`` shows them), for docs/results.md.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import tomli_w
from datafiles import write_tiny_mnist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelgen import cli
from pixelgen.errors import PixelgenError
from pixelgen.recipe import Recipe, RunSpec, dump_toml, load_recipe, recipe_from_dict, recipe_to_dict
from pixelgen.recipe.convert import TOP_TYPES
from pixelgen.recipe.schema import public_fields
from pixelgen.store.archive import ArchiveError
from pixelgen.study.records import ArchiveRecord

EXAMPLES = int(os.environ.get("PIXELGEN_FUZZ_EXAMPLES", "200"))
#: The long run, on request only (CI runs the default examples): ten times as many.
LONG = pytest.mark.skipif(os.environ.get("PIXELGEN_FUZZ_LONG", "0") in ("", "0"),
                          reason="the long fuzzing run, on request: PIXELGEN_FUZZ_LONG=1")
ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
#: outcome counts per property, printed once the module ends
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def fuzz_settings(examples: int = EXAMPLES):
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _print_outcomes():
    yield
    for name, counts in sorted(OUTCOMES.items()):
        print(f"\nfuzz {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def one_line_refusal(exc: PixelgenError) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message, repr(message)
    return message


# ------------------------------------------------------------------ generated values


def _section_paths(node, prefix=()) -> list[tuple[str, ...]]:
    """Every dotted key a recipe file may hold, tables included (``runs`` as ``runs.0``)."""
    keys = {f.name: f.type for f in public_fields(node)} if hasattr(node, "__attrs_attrs__") else node
    paths = []
    for name, kind in keys.items():
        paths.append((*prefix, name))
        if name == "runs":
            paths += _section_paths(RunSpec, (*prefix, "runs", "0"))
        elif hasattr(kind, "__attrs_attrs__"):
            paths += _section_paths(kind, (*prefix, name))
    return paths


KEY_PATHS = _section_paths(TOP_TYPES)
# Values near every bound a validator guards, and far beyond: TOML holds any integer, nan, inf.
NUMBERS = st.one_of(
    st.integers(-3, 70), st.sampled_from([0, 1, 2**31, 2**32, 2**63 - 1, -(2**63), 10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-7, 1e-300, 1e308]),
)
TEXT = st.one_of(
    st.text(max_size=12), st.sampled_from(["pixelcnn", "row_lstm", "diagonal_bilstm", "fashion_mnist", "cifar10",
                                           "cpu", "auto", "ddp", "32", "1h", "bf16-mixed", "{recipe}", ""]),
    st.text(min_size=300, max_size=3000, alphabet=st.characters(codec="utf-8")),
)
SCALARS = st.one_of(st.booleans(), NUMBERS, TEXT)
KEYS = st.one_of(st.sampled_from(sorted({p[-1] for p in KEY_PATHS})), st.text(min_size=1, max_size=10))
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)
DEEP = st.integers(20, 60).map(lambda depth: _nest(depth))  # beyond MAX_RECIPE_DEPTH, and below it


def _nest(depth: int):
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _set(data: dict, path: tuple[str, ...], value) -> None:
    """``data`` with ``value`` at ``path``, tables made on the way (a list's index clamped)."""
    node = data
    for part in path[:-1]:
        if isinstance(node, list):
            node = node[min(int(part) if part.isdigit() else 0, len(node) - 1)] if node else {}
        child = node.get(part) if isinstance(node, dict) else None
        if part == "runs" and not isinstance(child, list):
            child = node[part] = [{}]
        elif not isinstance(child, (dict, list)):
            child = node[part] = {}
        node = child
    if isinstance(node, list):
        node = node[0] if node and isinstance(node[0], dict) else {}
    if isinstance(node, dict):
        node[path[-1]] = value


BASE = tomllib.loads(QUICKSTART.read_text())
MUTATIONS = st.lists(st.tuples(st.one_of(st.sampled_from(KEY_PATHS), st.lists(KEYS, min_size=1, max_size=4)
                                         .map(tuple)), st.one_of(VALUES, DEEP)), max_size=4)


@st.composite
def recipes(draw) -> dict:
    """The quickstart recipe (or nothing) with up to four keys (known or not, at any depth)
    set to any value."""
    data = copy.deepcopy(BASE) if draw(st.integers(0, 4)) else {}
    for path, value in draw(MUTATIONS):
        _set(data, path, value)
    return data


def _outcome(name: str, load) -> Recipe | None:
    try:
        recipe = load()
    except PixelgenError as exc:
        one_line_refusal(exc)
        OUTCOMES[name]["refused (one line)"] += 1
        return None
    assert isinstance(recipe, Recipe)
    OUTCOMES[name]["valid recipe"] += 1
    return recipe


# ------------------------------------------------------------------ (a) recipe files


def check_recipe_document(tmp_path, data: dict) -> None:
    path = tmp_path / "fuzzed.toml"
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError, RecursionError):
        return  # not a TOML document (tomli_w's own limits); the raw-text property covers junk
    path.write_text(text, encoding="utf-8")
    recipe = _outcome("recipe files", lambda: load_recipe(path))
    if recipe is not None:  # a valid recipe survives its own round trip (what a run stores)
        assert recipe_from_dict(recipe_to_dict(recipe)).runs == recipe.runs


@fuzz_settings()
@given(data=recipes())
def test_generated_recipe_files_load_or_fail_in_one_line(tmp_path, data):
    check_recipe_document(tmp_path, data)


@fuzz_settings()
@given(text=st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
                      st.builds(lambda t, cut: t[:cut], st.just(QUICKSTART.read_text()), st.integers(0, 1200))))
def test_raw_recipe_text_loads_or_fails_in_one_line(tmp_path, text):
    path = tmp_path / "raw.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _outcome("raw recipe text", lambda: load_recipe(path))


# ------------------------------------------------------------------ (b) --set overrides


def _override_text(value) -> str:
    try:
        return tomli_w.dumps({"v": value}).partition("=")[2].strip() if not isinstance(value, dict) else \
            "{" + ", ".join(f"{tomli_w.dumps({k: v}).strip()}" for k, v in value.items()) + "}"
    except (TypeError, ValueError, RecursionError):
        return str(value)


OVERRIDES = st.lists(st.one_of(
    st.builds(lambda path, value: ".".join(path) + "=" + _override_text(value), st.sampled_from(KEY_PATHS), VALUES),
    st.builds(lambda key, text: f"{key}={text}", st.text(max_size=20), st.text(max_size=40)),
    st.text(max_size=40),
), min_size=1, max_size=4)


@fuzz_settings()
@given(overrides=OVERRIDES)
def test_generated_overrides_apply_or_fail_in_one_line(overrides):
    _outcome("--set overrides", lambda: load_recipe(QUICKSTART, overrides))


# ------------------------------------------------------------------ (c) the command line


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIXELGEN_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pixelgen", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def assert_cli_invariants(result: subprocess.CompletedProcess) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        assert len(lines) == 1 and lines[0].startswith("pixelgen"), result.stderr


def cli_in_process(*argv: str) -> tuple[int, str, str]:
    """``pixelgen ARGV`` in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code
    return status, out.getvalue(), err.getvalue()


def check_command_line(tmp_path: pathlib.Path, data: dict, overrides: list[str]) -> None:
    """``recipe show`` agrees with the loader: exit 0 with TOML that shows as the same text
    again, or exit 2 with the loader's own message as its one line; ``run`` of a recipe the
    loader refuses refuses it the same way, and neither leaves a file behind."""
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError, RecursionError):
        text = "[model\n"
    path = tmp_path / "cli.toml"
    path.write_text(text, encoding="utf-8")
    before = sorted(tmp_path.rglob("*"))
    sets = [f"--set={o}" for o in overrides]
    status, shown, err = cli_in_process("recipe", "show", str(path), *sets)
    assert status in (0, 2) and "Traceback" not in err
    try:
        load_recipe(path, overrides)
    except PixelgenError as exc:
        assert status == 2 and err == f"pixelgen: error: {exc}\n"
        assert cli_in_process("run", str(path), *sets)[::2] == (2, err)
        OUTCOMES["command line"]["refused (one line)"] += 1
    else:
        assert status == 0 and err == "", err
        path.write_text(shown, encoding="utf-8")
        assert cli_in_process("recipe", "show", str(path))[:2] == (0, shown)
        OUTCOMES["command line"]["shown, and shown again as the same text"] += 1
    path.unlink()
    assert sorted(tmp_path.rglob("*")) == sorted(set(before) - {path})  # no run folder, nothing left


@fuzz_settings(max(EXAMPLES // 4, 10))
@given(data=recipes(), overrides=st.one_of(st.just([]), OVERRIDES))
def test_recipe_show_and_run_through_the_command_line(tmp_path, data, overrides):
    check_command_line(tmp_path, data, overrides)


def test_nasty_input_through_a_real_process():
    """One through a real ``python -m pixelgen`` process: exit 2, one line, no traceback."""
    result = run_cli("check", "pixelcnn", "--hp", "n_layers=inf")  # was a TypeError traceback
    assert_cli_invariants(result)
    assert result.returncode == 2 and "n_layers: expected an integer in 1..16,384, got inf" in result.stderr


@pytest.mark.parametrize("argv", [
    ["recipe", "show", "recipes/quickstart.toml", "--set", "model.name=\r\u2028x"],
    ["recipe", "show", "recipes/quickstart.toml", "--set", "train.epochs=" + "9" * 400],
    ["run", "recipes/quickstart.toml", "--set", "train.optimizer.lr=nan", "--out", "/nonexistent/never"],
    ["check", "pixelcnn", "--hp", "n_layers=2.5"],  # was a TypeError traceback
    ["check", "pixelcnn", "--hp", "kernel_size=2"],  # was the factory's ValueError traceback
    ["check", "pixelcnn", "--hp", "n_levels=1"],  # the same
    ["recipe", "show", "recipes/quickstart.toml", "--set", "a" + ".a" * 40 + "=1"],
])
def test_nasty_input_through_the_command_line(argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, _, err = cli_in_process(*argv)
    assert status == 2 and err.count("\n") == 1 and err.startswith("pixelgen: error: "), err


# ------------------------------------------------------------------ (d) damaged archives


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> pathlib.Path:
    """A tiny finished run (two epochs of a one-layer PixelCNN on 12 Fashion-MNIST images)
    whose archive holds metrics, test figures and a batch of samples."""
    base = tmp_path_factory.mktemp("fuzz-run")
    write_tiny_mnist(base / "data", n_train=16, n_test=4)
    recipe = {
        "model": {"name": "pixelcnn", "hyperparameters": {"hidden_channels": 4, "n_layers": 1, "head_channels": 8}},
        "data": {"name": "fashion_mnist", "root": str(base / "data"), "batch_size": 4,
                 "validation_fraction": 0.25, "download": False},
        "train": {"epochs": 2, "accelerator": "cpu"}, "sample": {"n": 20, "batch_size": 20},
        "output": {"dir": str(base / "run")},
    }
    (base / "tiny.toml").write_text(dump_toml(recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXELGEN_PROGRESS", "0")
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["run", str(base / "tiny.toml")]) == 0
    return base / "run"


def archive_files(archive: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())


def same_record(a: ArchiveRecord, b: ArchiveRecord) -> bool:
    return (list(a.metrics) == list(b.metrics)
            and all(np.array_equal(a.metrics[k], b.metrics[k], equal_nan=a.metrics[k].dtype.kind == "f")
                    for k in a.metrics)
            and a.test == b.test and a.samples == b.samples and a.scores == b.scores
            and np.array_equal(a.last_samples, b.last_samples))


DAMAGE = st.one_of(
    st.tuples(st.just("remove"), st.just(0), st.just(0)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("append"), st.just(0), st.integers(0, 255)),
    st.tuples(st.just("garbage"), st.floats(0, 1), st.integers(0, 2**32 - 1)),
)


def damage(path: pathlib.Path, how: tuple[str, float, int]) -> None:
    """Remove ``path``, cut it, flip one of its bytes, append a byte or overwrite it with junk."""
    kind, where, value = how
    data = path.read_bytes()
    at = min(int(where * len(data)), max(len(data) - 1, 0))
    if kind == "remove":
        path.unlink()
    elif kind == "truncate":
        path.write_bytes(data[:at])
    elif kind == "flip" and data:
        path.write_bytes(data[:at] + bytes([data[at] ^ value]) + data[at + 1:])
    elif kind == "append":
        path.write_bytes(data + bytes([value]))
    else:
        path.write_bytes(np.random.default_rng(value).bytes(max(len(data), 1)))


def check_damaged_archive(archive: pathlib.Path, pristine: ArchiveRecord, damages: list) -> None:
    """Damage files of ``archive`` (each restored after), read it as ``compare`` does: the
    same record, or a one-line ArchiveError naming a path inside the archive."""
    files = archive_files(archive)
    saved = {}
    try:
        for pick, how in damages:
            name = files[pick % len(files)]
            if (archive / name).exists():
                saved.setdefault(name, (archive / name).read_bytes())
                damage(archive / name, how)
        after = {name: (archive / name).read_bytes() for name in saved if (archive / name).exists()}
        try:
            record = ArchiveRecord.read(archive)
        except ArchiveError as exc:
            assert str(archive) in one_line_refusal(exc)
            OUTCOMES["damaged archives"]["refused (one line)"] += 1
        else:
            assert same_record(record, pristine), f"damage to {list(saved)} read as other values"
            OUTCOMES["damaged archives"]["read as written"] += 1
        # reading wrote nothing: the damaged files keep their (damaged) bytes, the others theirs
        assert {name: (archive / name).read_bytes() for name in after} == after
        assert archive_files(archive) == sorted(set(files) - set(saved) | set(after))
    finally:
        for name, content in saved.items():
            (archive / name).write_bytes(content)


@pytest.fixture(scope="module")
def fuzzed_archive(finished_run, tmp_path_factory):
    """A private copy of the finished run's archive and what it reads as undamaged."""
    archive = tmp_path_factory.mktemp("fuzz-archive") / "archive.zarr"
    shutil.copytree(finished_run / "archive.zarr", archive)
    pristine = ArchiveRecord.read(archive)
    assert pristine.samples and len(pristine.metrics["epoch"]) == 2 and pristine.test
    return archive, pristine


ARCHIVE_DAMAGES = st.lists(st.tuples(st.integers(0, 10**6), DAMAGE), min_size=1, max_size=3)


@fuzz_settings()
@given(damages=ARCHIVE_DAMAGES)
def test_damaged_archives_read_as_written_or_refused_in_one_line(fuzzed_archive, damages):
    archive, pristine = fuzzed_archive
    snapshot = {n: (archive / n).read_bytes() for n in archive_files(archive)}
    check_damaged_archive(archive, pristine, damages)
    assert {n: (archive / n).read_bytes() for n in archive_files(archive)} == snapshot


def test_every_file_of_the_archive_removed_is_refused_and_flipped_is_refused_or_harmless(fuzzed_archive):
    """Exhaustive over the files: each one removed is refused (no file is read as its
    absence); each with its middle byte flipped is refused, or read exactly as written
    (a flip inside text no reader uses, such as the root's ``layout``)."""
    archive, pristine = fuzzed_archive
    harmless = []
    for name in archive_files(archive):
        for how in (("remove", 0, 0), ("flip", 0.5, 0x55)):
            saved = (archive / name).read_bytes()
            damage(archive / name, how)
            try:
                record = ArchiveRecord.read(archive)
            except ArchiveError as exc:
                assert str(archive) in one_line_refusal(exc)
            else:
                assert how[0] == "flip" and same_record(record, pristine), (name, how)
                harmless.append(name)
            finally:
                (archive / name).write_bytes(saved)
    assert set(harmless) <= {"zarr.json", "samples/zarr.json"}, harmless


def run_files(run: pathlib.Path) -> dict[str, bytes]:
    """Every file of a run folder but the run lock's (each command writes its holder in it)."""
    return {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".pixelgen.lock"}


def test_missing_metrics_chunk_through_compare(finished_run, tmp_path):
    """The issue's case: a metrics chunk removed, ``pixelgen compare`` refuses it in one line
    naming the array (it used to report ``epochs: -1``), and writes nothing, not even --out."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "archive.zarr" / "metrics" / "epoch" / "c" / "0").unlink()
    before = run_files(run)
    status, _, err = cli_in_process("compare", str(run), "--out", str(tmp_path / "report"))
    assert status == 2 and err.count("\n") == 1
    assert f"{run}/archive.zarr/metrics/epoch: the run archive is damaged (chunk c/0 is missing)" in err
    assert run_files(run) == before and not (tmp_path / "report").exists()


@pytest.mark.parametrize("name", ["test/zarr.json", "samples/000000/zarr.json", "samples/000000/c/0/0/0/0",
                                  "metrics/zarr.json"])
def test_damaged_archive_through_sample_and_score(finished_run, tmp_path, name):
    """``sample`` (which appends to the archive) and ``score`` of a run folder, on an archive
    with one file damaged: exit 0 or a one-line refusal, and every file already there keeps
    its bytes (a sample batch may be added)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(run / "archive.zarr" / name, ("flip", 0.5, 0x01))
    before = run_files(run)
    for argv in (["sample", str(run / "best.ckpt"), "-n", "1", "--device", "cpu", "--seed", "0"],
                 ["score", str(run), "--features", "classifier", "--n", "10", "--device", "cpu"]):
        status, _, err = cli_in_process(*argv)
        assert status in (0, 2) and "Traceback" not in err, err
        if status == 2:
            assert err.count("\n") == 1 and "archive.zarr" in err, err
        OUTCOMES["damaged archives through the command line"][f"{argv[0]} exit {status}"] += 1
        after = run_files(run)
        assert {k: after.get(k) for k in before} == before, argv


@LONG
@fuzz_settings(EXAMPLES * 10)
@given(damages=ARCHIVE_DAMAGES)
def test_damaged_archives_long(fuzzed_archive, damages):
    check_damaged_archive(fuzzed_archive[0], fuzzed_archive[1], damages)


@LONG
@fuzz_settings(EXAMPLES * 10)
@given(data=recipes(), overrides=OVERRIDES)
def test_recipes_and_overrides_long(tmp_path, data, overrides):
    check_recipe_document(tmp_path, data)
    _outcome("--set overrides", lambda: load_recipe(QUICKSTART, overrides))

