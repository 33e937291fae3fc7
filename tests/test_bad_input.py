"""Bad input anywhere, table-driven: one line naming the problem and the fix, status 2 (or
the status the case names), no traceback, and nothing already written changes.

Every case starts from a private copy of ``tests/fixtures/legacy_v0_1`` (a finished
PixelCNN run and a Row LSTM run on tiny IDX data, its recipe with relative paths) as the
working directory, prepares what it breaks, snapshots every file, runs the real command
line in-process and compares the files afterwards.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import shutil
import types
from typing import Callable

import pytest
import torch
from datafiles import working_copy

import pixelgen
from pixelgen import cli, registry
from pixelgen.blocks import Hyperparameter
from pixelgen.errors import Interrupted
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.files import RunLock

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "legacy_v0_1"
CKPT = "runs/pixelcnn/best.ckpt"
RUN = "runs/pixelcnn"


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    return working_copy(FIXTURE, tmp_path / "w", monkeypatch)


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".pixelgen.lock" and "__pycache__" not in p.parts
    }


# ------------------------------------------------------------------ ways to break things


def write(path: str, text: str) -> None:
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_text(text)


def recipe(extra: str = "", base: str = "legacy.toml") -> Callable[[pathlib.Path], None]:
    def make(folder: pathlib.Path) -> None:
        write("bad.toml", pathlib.Path(base).read_text() + "\n" + extra)
    return make


def tiny_recipe(body: str) -> Callable[[pathlib.Path], None]:
    return lambda folder: write("bad.toml", body)


TINY = '[model]\nname = "pixelcnn"\n[model.hyperparameters]\nhidden_channels = 4\nn_layers = 1\nhead_channels = 8\n' \
       '[data]\nname = "fashion_mnist"\nroot = "data"\nbatch_size = 6\ndownload = false\n[train]\nepochs = 1\naccelerator = "cpu"\n'


def resaved(edit: Callable[[dict], None], path: str = "new.ckpt") -> Callable[[pathlib.Path], None]:
    """The fixture's checkpoint, edited, saved with today's format (with a weights digest)."""
    def make(folder: pathlib.Path) -> None:
        state = ckpt_io.load_checkpoint(CKPT)
        state = {k: v for k, v in state.items() if k not in ("format", "format_version")}
        edit(state)
        ckpt_io.save_checkpoint(folder / RUN / path, state)
    return make


def tampered(edit: Callable[[dict], None]) -> Callable[[pathlib.Path], None]:
    """A today's-format checkpoint whose weights are changed after the digest was taken."""
    def make(folder: pathlib.Path) -> None:
        resaved(lambda s: None)(folder)
        state = torch.load(folder / RUN / "new.ckpt", weights_only=True)
        edit(state)
        torch.save(state, folder / RUN / "new.ckpt")
    return make


def flip_a_weight(state: dict) -> None:
    weight = state["model_state"]["input_conv.weight"]
    weight.view(-1)[0] = weight.view(-1)[0] + 1.0


def nan_weights(state: dict) -> None:
    state["model_state"]["input_conv.weight"].fill_(float("nan"))


def truncate(path: str, keep: int = 200) -> Callable[[pathlib.Path], None]:
    return lambda folder: pathlib.Path(path).write_bytes(pathlib.Path(path).read_bytes()[:keep])


def garbage(path: str, data: bytes = b"\x00\x01 not what it should be {") -> Callable[[pathlib.Path], None]:
    return lambda folder: pathlib.Path(path).write_bytes(data)


def corrupt_gzip(path: str) -> Callable[[pathlib.Path], None]:
    def make(folder: pathlib.Path) -> None:
        raw = bytearray(pathlib.Path(path).read_bytes())
        raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16  # inside the deflate stream
        pathlib.Path(path).write_bytes(bytes(raw))
    return make


def both(*makers: Callable[[pathlib.Path], None]) -> Callable[[pathlib.Path], None]:
    def make(folder: pathlib.Path) -> None:
        for maker in makers:
            maker(folder)
    return make


def nothing(folder: pathlib.Path) -> None:
    pass


def a_file(path: str) -> Callable[[pathlib.Path], None]:
    return lambda folder: write(path, "I am a file\n")


def a_folder(path: str) -> Callable[[pathlib.Path], None]:
    return lambda folder: pathlib.Path(path).mkdir(parents=True, exist_ok=True)


def pickled_class(folder: pathlib.Path) -> None:
    torch.save({"format": "pixelgen-checkpoint", "payload": types.SimpleNamespace(a=1)}, "evil.ckpt")


# ------------------------------------------------------------------ the table
# (id, prepare, argv, needles the one line must contain)
CASES = [
    # the command line
    ("sample-n-0", nothing, ["sample", CKPT, "-n", "0"], ["number of images"]),
    ("sample-n-negative", nothing, ["sample", CKPT, "-n", "-1"], ["number of images"]),
    ("sample-n-huge", nothing, ["sample", CKPT, "-n", str(2**70)], ["number of images"]),
    ("sample-n-word", nothing, ["sample", CKPT, "-n", "many"], ["number of images"]),
    ("sample-seed-huge", nothing, ["sample", CKPT, "--seed", str(2**70)], ["seed"]),
    ("sample-seed-negative", nothing, ["sample", CKPT, "--seed", "-3"], ["seed"]),
    ("sample-png-folder", a_folder("grids"), ["sample", CKPT, "-n", "1", "--no-archive", "--png", "grids"], ["folder"]),
    ("sample-png-no-extension", nothing, ["sample", CKPT, "-n", "1", "--no-archive", "--png", "grid"], ["extension"]),
    ("sample-device-unknown", nothing, ["sample", CKPT, "--device", "tpu9"], ["--device"]),
    ("sample-device-cuda-absent", nothing, ["sample", CKPT, "--device", "cuda"], ["--device"]),
    ("sample-temperature-denormal", nothing, ["sample", CKPT, "-n", "1", "--no-archive", "--temperature", "1e-320"], ["temperature"]),
    ("sample-temperature-negative", nothing, ["sample", CKPT, "-n", "1", "--no-archive", "--temperature", "-1"], ["temperature"]),
    ("sample-top-p-zero", nothing, ["sample", CKPT, "-n", "1", "--no-archive", "--top-p", "0"], ["--top-p"]),
    ("sample-top-p-above-one", nothing, ["sample", CKPT, "-n", "1", "--no-archive", "--top-p", "1.5"], ["--top-p"]),
    ("sample-batch-size-zero", nothing, ["sample", CKPT, "--batch-size", "0"], ["batch size"]),
    ("sample-size-zero", nothing, ["sample", CKPT, "--size", "0x3"], ["HEIGHTxWIDTH"]),
    ("sample-label-unconditional", nothing, ["sample", CKPT, "-n", "1", "--label", "3"], ["not class-conditional"]),
    ("sample-complete-missing-image", nothing, ["sample", CKPT, "-n", "1", "--complete", "nope.png", "--rows", "2"], ["nope.png"]),
    ("sample-rows-without-image", nothing, ["sample", CKPT, "-n", "1", "--rows", "2"], ["--complete"]),
    ("sample-missing-checkpoint", nothing, ["sample", "runs/none.ckpt"], ["no such checkpoint"]),
    ("sample-folder-as-checkpoint", nothing, ["sample", RUN], ["directory"]),
    ("sample-archive-and-no-archive", nothing, ["sample", CKPT, "--archive", "a.zarr", "--no-archive"], ["exclude"]),
    ("eval-bad-split", nothing, ["eval", CKPT, "--split", "bogus"], ["invalid choice"]),
    ("eval-negative-limit", nothing, ["eval", CKPT, "--limit", "-1"], ["non-negative"]),
    ("eval-missing-checkpoint", nothing, ["eval", "x.ckpt"], ["no such checkpoint"]),
    ("eval-empty-data-root", a_folder("empty"), ["eval", CKPT, "--data-root", "empty"], ["empty"]),
    ("compare-out-is-a-file", a_file("report.txt"), ["compare", RUN, "runs/row_lstm", "--out", "report.txt"], ["report.txt"]),
    ("compare-missing-run", nothing, ["compare", RUN, "runs/nope"], ["runs/nope"]),
    ("analyse-missing-checkpoint", nothing, ["analyse", "x.ckpt"], ["no such checkpoint"]),
    ("check-unknown-model", nothing, ["check", "no_such_model"], ["unknown model"]),
    ("check-unknown-hyperparameter", nothing, ["check", "pixelcnn", "--hp", "nosuch=1"], ["nosuch"]),
    ("plugins-extra-argument", nothing, ["plugins", "extra"], ["unrecognized"]),
    # recipes
    ("recipe-missing", nothing, ["run", "nope.toml"], ["nope.toml"]),
    ("recipe-bad-toml", tiny_recipe("[model\nname = 1"), ["run", "bad.toml"], ["bad.toml"]),
    ("recipe-unknown-key", tiny_recipe(TINY + "[train.optimiser]\nlr = 1\n"), ["run", "bad.toml"], ["optimiser"]),
    ("recipe-wrong-type", tiny_recipe(TINY + '[train.optimizer]\nlr = "fast"\n'), ["run", "bad.toml"], ["train.optimizer.lr"]),
    ("recipe-negative-lr", tiny_recipe(TINY + "[train.optimizer]\nlr = -1.0\n"), ["run", "bad.toml"], ["train.optimizer.lr"]),
    ("recipe-unknown-model", tiny_recipe(TINY.replace('"pixelcnn"', '"pixelcnnn"')), ["run", "bad.toml"], ["pixelcnnn"]),
    ("recipe-unknown-dataset", tiny_recipe(TINY.replace('"fashion_mnist"', '"fashion"')), ["run", "bad.toml"], ["fashion"]),
    ("recipe-unknown-hyperparameter", tiny_recipe(TINY.replace("n_layers = 1", "n_layer = 1")), ["run", "bad.toml"], ["n_layer"]),
    ("recipe-set-without-value", tiny_recipe(TINY), ["run", "bad.toml", "--set", "train.epochs"], ["train.epochs"]),
    ("recipe-set-unknown-key", tiny_recipe(TINY), ["run", "bad.toml", "--set", "train.epoch=2"], ["train.epoch"]),
    ("recipe-epochs-zero", tiny_recipe(TINY), ["run", "bad.toml", "--set", "train.epochs=0"], ["train.epochs"]),
    ("recipe-validation-fraction-one", tiny_recipe(TINY), ["run", "bad.toml", "--set", "data.validation_fraction=1.0"], ["validation_fraction"]),
    ("recipe-in-channels-mismatch", tiny_recipe(TINY), ["run", "bad.toml", "--set", "model.hyperparameters.in_channels=3"], ["in_channels"]),
    ("run-out-below-a-file", both(tiny_recipe(TINY), a_file("blocker")), ["run", "bad.toml", "--out", "blocker/run"], ["blocker"]),
    ("run-out-is-a-file", both(tiny_recipe(TINY), a_file("blocker")), ["run", "bad.toml", "--out", "blocker"], ["blocker"]),
    ("run-existing-without-resume", nothing, ["run", "legacy.toml"], ["--resume"]),
    ("run-archive-is-foreign", both(tiny_recipe(TINY), a_file("foreign/archive.zarr/x")), ["run", "bad.toml", "--out", "foreign"], ["archive.zarr"]),
    ("resume-other-model", nothing, ["run", "legacy.toml", "--resume", "--set", "model.hyperparameters.n_layers=2"], ["n_layers"]),
    ("resume-other-data-root", a_folder("elsewhere"), ["run", "legacy.toml", "--resume", "--set", "data.root=elsewhere"], ["data.root"]),
    # checkpoints
    ("ckpt-truncated", truncate(CKPT), ["eval", CKPT], ["not a pixelgen checkpoint"]),
    ("ckpt-random-bytes", garbage(CKPT), ["eval", CKPT], ["not a pixelgen checkpoint"]),
    ("ckpt-empty", garbage(CKPT, b""), ["sample", CKPT], ["not a pixelgen checkpoint"]),
    ("ckpt-pickled-class", pickled_class, ["eval", "evil.ckpt"], ["not a pixelgen checkpoint"]),
    ("ckpt-flipped-weight", tampered(flip_a_weight), ["eval", RUN + "/new.ckpt"], ["digest"]),
    ("ckpt-nan-weights", resaved(nan_weights), ["eval", RUN + "/new.ckpt"], ["non-finite"]),
    ("ckpt-model-entry-wrong-type", resaved(lambda s: s.update(model="pixelcnn")), ["sample", RUN + "/new.ckpt"], ["'model' entry"]),
    ("ckpt-unknown-model-name", resaved(lambda s: s.update(model={"name": "gone", "hyperparameters": {}})), ["eval", RUN + "/new.ckpt"], ["gone"]),
    ("ckpt-weights-do-not-fit", resaved(lambda s: s["model"]["hyperparameters"].update(hidden_channels=5)), ["eval", RUN + "/new.ckpt"], ["cannot be rebuilt"]),
    ("ckpt-archive-path-traversal", resaved(lambda s: s["recipe"]["output"].update(archive="../../escape.zarr")), ["sample", RUN + "/new.ckpt", "-n", "1"], ["plain name"]),
    ("ckpt-archive-absolute-path", resaved(lambda s: s["recipe"]["output"].update(archive="/tmp/escape.zarr")), ["sample", RUN + "/new.ckpt", "-n", "1"], ["plain name"]),
    ("ckpt-newer-format", resaved(lambda s: None), ["eval", RUN + "/future.ckpt"], ["newer"]),
    ("resume-damaged-best", both(garbage(RUN + "/best.ckpt"), a_file("marker")), ["run", "legacy.toml", "--resume", "--set", "train.epochs=2"], ["best.ckpt"]),
    # archives
    ("archive-root-json-damaged", garbage(RUN + "/archive.zarr/zarr.json"), ["compare", RUN, "runs/row_lstm"], ["archive"]),
    ("archive-metrics-attrs-damaged", garbage(RUN + "/archive.zarr/metrics/zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {"n_epochs": "many"}}'), ["compare", RUN, "runs/row_lstm"], ["archive"]),
    ("archive-chunk-damaged", garbage(RUN + "/archive.zarr/metrics/train_bits_per_dim/c/0"), ["compare", RUN, "runs/row_lstm"], ["archive"]),
    ("archive-sample-chunk-damaged", garbage(RUN + "/archive.zarr/samples/000000/c/0/0/0/0"), ["compare", RUN, "runs/row_lstm"], ["archive"]),
    ("archive-is-a-file", both(lambda f: shutil.rmtree(RUN + "/archive.zarr"), a_file(RUN + "/archive.zarr")), ["sample", CKPT, "-n", "1"], ["archive.zarr"]),
    ("recipe-archive-outside-the-run", tiny_recipe(TINY + '[output]\narchive = "../../x.zarr"\n'), ["run", "bad.toml"], ["output.archive"]),
    # scoring and quantizing
    ("score-unknown-metric", nothing, ["score", RUN, "--metrics", "fid,fud"], ["--metrics", "fud"]),
    ("score-too-few-images", nothing, ["score", RUN, "--n", "5"], ["--n"]),
    ("score-inception-weights-missing", nothing, ["score", RUN, "--n", "10", "--inception-weights", "none.pth"], ["none.pth", "weights-inception-2015-12-05-6726825d.pth"]),
    ("score-more-test-images-than-there-are", nothing, ["score", RUN, "--features", "classifier", "--baseline", "test", "--n", "20"], ["test split"]),
    ("score-more-training-images-than-there-are", nothing, ["score", RUN, "--features", "classifier", "--n", "5000"], ["train split"]),
    ("score-missing-run", nothing, ["score", "runs/nope"], ["runs/nope"]),
    ("score-run-without-checkpoint", a_folder("runs/empty"), ["score", "runs/empty"], ["no best.ckpt"]),
    ("quantize-unknown-format", nothing, ["quantize", CKPT, "--to", "int4"], ["int4"]),
    ("quantize-out-is-a-folder", nothing, ["quantize", CKPT, "--to", "int8", "--out", RUN], ["folder"]),
    ("quantize-over-itself", nothing, ["quantize", CKPT, "--to", "int8", "--out", CKPT], ["being read"]),
    ("quantize-missing-checkpoint", nothing, ["quantize", "x.ckpt", "--to", "int8"], ["no such checkpoint"]),
    ("quantize-damaged-checkpoint", garbage(CKPT), ["quantize", CKPT, "--to", "int8"], ["not a pixelgen checkpoint"]),
    # data files
    ("data-root-missing", nothing, ["eval", CKPT, "--data-root", "no/such/folder"], ["no/such/folder"]),
    ("data-idx-gzip-corrupt", corrupt_gzip("data/t10k-images-idx3-ubyte.gz"), ["eval", CKPT], ["t10k-images-idx3-ubyte.gz"]),
    ("data-idx-truncated", truncate("data/t10k-images-idx3-ubyte.gz", 30), ["eval", CKPT], ["t10k-images-idx3-ubyte.gz"]),
    ("data-idx-wrong-magic", garbage("data/t10k-labels-idx1-ubyte.gz", gzip.compress(b"\x00\x00\x09\x09" + b"\x00" * 20)), ["eval", CKPT], ["t10k-labels-idx1-ubyte.gz"]),
]


@pytest.mark.parametrize("name, prepare, argv, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(legacy, capsys, name, prepare, argv, needles):
    prepare(legacy)
    if name == "ckpt-newer-format":
        state = torch.load(legacy / RUN / "new.ckpt", weights_only=True)
        state["format_version"] = 99
        torch.save(state, legacy / RUN / "future.ckpt")
    before = snapshot(legacy)
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert "Traceback" not in err, err
    # progress lines may come first (compare says what it measures); the error is one line, the last
    assert [line for line in lines if "error" in line] == lines[-1:], err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    assert snapshot(legacy) == before, "files changed"


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60


# ------------------------------------------------------------------ one writer per run folder


def test_a_run_into_a_folder_in_use_fails_at_once_naming_the_holder(legacy, capsys):
    before = snapshot(legacy)
    with RunLock(legacy / RUN):  # this process plays the running trainer
        status = cli.main(["run", "legacy.toml", "--resume", "--set", "train.epochs=2"])
        held = cli.main(["sample", CKPT, "-n", "1"])
    err = capsys.readouterr().err
    assert status == held == 2
    assert err.count("in use by pixelgen process") == 2 and "Traceback" not in err
    assert snapshot(legacy) == before


def test_a_stale_lock_does_not_block(legacy):
    (legacy / RUN / ".pixelgen.lock").write_text("999999\n")  # a killed holder's file
    assert cli.main(["sample", CKPT, "-n", "1", "--seed", "0"]) == 0


# ------------------------------------------------------------------ plugins that fail


def spec(name: str, **extra) -> pixelgen.ModelSpec:
    return pixelgen.ModelSpec(name, lambda **hp: None, "test", hyperparameters={"in_channels": Hyperparameter(1, "c")}, **extra)


class ReturnsNotAList:
    @pixelgen.hookimpl
    def pixelgen_models(self):
        return spec("lonely")


class Exits:
    @pixelgen.hookimpl
    def pixelgen_models(self):
        raise SystemExit(3)


class Doomed(BaseException):
    """Not an Exception: what a careless plugin may raise."""


class RaisesBaseException:
    @pixelgen.hookimpl
    def pixelgen_models(self):
        raise Doomed("the plugin gave up")


class Misspelt:
    @pixelgen.hookimpl(optionalhook=False)
    def pixelgen_modles(self):
        return [spec("misspelt")]


class WrongSignature:
    @pixelgen.hookimpl
    def pixelgen_models(self, surprise):
        return [spec("wrong_signature")]


class BadHyperparameters:
    @pixelgen.hookimpl
    def pixelgen_models(self):
        return [pixelgen.ModelSpec("bad_hp", lambda **hp: None, "test", hyperparameters={"h": 3})]


class ClaimsPixelCNN:
    @pixelgen.hookimpl
    def pixelgen_models(self):
        return [spec("pixelcnn")]


@pytest.mark.parametrize("plugin, needle", [
    (ReturnsNotAList(), "not a list"),
    (Exits(), "SystemExit"),
    (RaisesBaseException(), "Doomed: the plugin gave up"),
    (Misspelt(), "pixelgen_modles"),
    (WrongSignature(), "surprise"),
    (BadHyperparameters(), "Hyperparameter"),
])
def test_a_broken_plugin_is_listed_and_breaks_nothing_else(plugin, needle, capsys):
    registry.register_plugin(plugin, name="broken_test_plugin")
    try:
        assert "broken_test_plugin" in pixelgen.plugin_failures()
        assert needle in pixelgen.plugin_failures()["broken_test_plugin"]
        assert {"pixelcnn", "row_lstm", "diagonal_bilstm"} <= set(pixelgen.list_models())
        capsys.readouterr()
        assert cli.main(["plugins"]) == 0
        assert "broken_test_plugin" in capsys.readouterr().out
    finally:
        registry.unregister_plugin("broken_test_plugin")
    assert "broken_test_plugin" not in pixelgen.plugin_failures()


class FakeEntryPoint:
    """An entry point whose module raises ``error`` when it is imported."""

    name, dist = "fake_entry_point", None

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def load(self):
        raise self.error


def test_a_plugin_raising_any_base_exception_at_import_is_recorded():
    reg = registry.Registry(registry.new_plugin_manager())
    registry._load_entry_point(reg, FakeEntryPoint(Doomed("no import for you")))
    assert reg.failures["fake_entry_point"] == "Doomed: no import for you"


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Interrupted("SIGTERM: stopped", 15)])
def test_the_user_stopping_a_plugin_import_still_stops_the_command(stop):
    reg = registry.Registry(registry.new_plugin_manager())
    with pytest.raises(type(stop)):
        registry._load_entry_point(reg, FakeEntryPoint(stop))
    assert not reg.failures


def test_a_name_claimed_twice_is_given_to_neither(legacy, capsys):
    registry.register_plugin(ClaimsPixelCNN(), name="impostor")
    try:
        assert "pixelcnn" not in pixelgen.list_models()
        assert cli.main(["eval", CKPT]) == 2
        err = capsys.readouterr().err
        assert "'pixelcnn' is claimed by 2 plugins" in err and "impostor" in err and "distribution pixelgen" in err
    finally:
        registry.unregister_plugin("impostor")
    assert "pixelcnn" in pixelgen.list_models()


def test_a_worker_error_is_the_worker_message_alone():
    wrapped = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\npixelgen.errors.DataError: data/x.png: cannot read the image; replace it\n')
    assert cli.one_line(wrapped) == "data/x.png: cannot read the image; replace it"


def test_non_finite_gradients_stop_with_advice_not_a_traceback(legacy, capsys, monkeypatch):
    write("bad.toml", TINY + '[output]\ndir = "fresh"\n')
    real = torch.Tensor.backward

    def poisoned(self, *args, **kwargs):  # finite loss, non-finite gradients
        real(self * float("inf"), *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", poisoned)
    assert cli.main(["run", "bad.toml"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "train.optimizer.lr" in err


def test_disk_full_during_a_checkpoint_write_is_one_line(legacy, capsys, monkeypatch):
    write("bad.toml", TINY + '[output]\ndir = "fresh"\n')

    def full(obj, handle, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    assert cli.main(["run", "bad.toml"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert not [p for p in (legacy / "fresh").iterdir() if p.suffix == ".tmp" or p.name.endswith(".ckpt")]


def test_metrics_json_damaged_after_training_is_evaluated_again(legacy, capsys):
    (legacy / RUN / "metrics.json").write_text("{ half a json")
    assert cli.main(["run", "legacy.toml", "--resume"]) == 0
    figures = json.loads((legacy / RUN / "metrics.json").read_text())
    assert figures["n_images"] == 6


class Leaky(torch.nn.Module):
    """Sees its own sub-pixel: a plain convolution in place of a masked one."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.in_channels, self.n_classes = in_channels, 0
        self.conv = torch.nn.Conv2d(in_channels, 256 * in_channels, 3, padding=1)

    def forward(self, x, labels=None):
        logits = self.conv(x.to(self.conv.weight.dtype) / 255)
        return logits.view(len(x), self.in_channels, 256, *x.shape[2:]).transpose(1, 2)


class LeakyPlugin:
    @pixelgen.hookimpl
    def pixelgen_models(self):
        return [pixelgen.ModelSpec("leaky", Leaky, "not causal", hyperparameters={"in_channels": Hyperparameter(1, "c")})]


def test_check_of_a_non_causal_model_is_one_line(capsys):
    registry.register_plugin(LeakyPlugin(), name="leaky_plugin")
    try:
        assert cli.main(["check", "leaky", "--height", "3", "--width", "3", "--channels", "1"]) == 2
    finally:
        registry.unregister_plugin("leaky_plugin")
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "not autoregressive" in err


def test_written_files_follow_the_umask(legacy):
    old = os.umask(0o022)
    try:
        assert cli.main(["sample", CKPT, "-n", "1", "--seed", "0", "--png", "grid.png"]) == 0
    finally:
        os.umask(old)
    assert (legacy / "grid.png").stat().st_mode & 0o777 == 0o644
