"""The run archive: round trip through plain zarr, back-filling, resume, and crash safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import zarr
import zarr.storage._local as zarr_local

from pixelgen.errors import PixelgenError
from pixelgen.store.archive import FORMAT, FORMAT_VERSION, ArchiveError, RunArchive


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 5, 4), dtype=np.uint8)


def _filled(path) -> RunArchive:
    """An archive with two epochs of metrics and one batch of samples."""
    archive = RunArchive.create_or_open(path)
    archive.append_metrics({"epoch": 0, "step": 100, "train_bits_per_dim": 5.5, "lr": 1e-3})
    archive.append_metrics({"epoch": 1, "step": 200, "train_bits_per_dim": 4.25, "lr": 5e-4})
    archive.append_samples(_images(3), model="pixelcnn", seed=7)
    return archive


def test_round_trip_through_plain_zarr(tmp_path):
    path = tmp_path / "archive.zarr"
    archive = RunArchive.create_or_open(path)
    for epoch, bits_per_dim in enumerate([5.0, 4.0]):
        archive.append_metrics({
            "epoch": epoch, "step": 10 * (epoch + 1),
            "train_bits_per_dim": bits_per_dim, "val_bits_per_dim": bits_per_dim - 0.5,
        })
    archive.set_test_metrics({"bits_per_dim": 3.25, "bits_per_dim_per_channel": [3.0, 3.25, 3.5]})
    images = _images(20)
    recipe = {"model": {"name": "pixelcnn", "n_layers": 4}}
    key = archive.append_samples(
        torch.from_numpy(images), model="pixelcnn", checkpoint="ckpt/epoch_1.pt", recipe=recipe,
        temperature=0.9, top_p=None, seed=np.int64(3), sampler="cached", seconds_per_image=0.5,
    )
    assert key == "000000"

    root = zarr.open_group(path, mode="r")
    assert root.metadata.zarr_format == 3
    assert root.attrs["format"] == FORMAT and root.attrs["format_version"] == FORMAT_VERSION
    assert {"metrics/<name>", "samples/<6 digits>", "test"} <= set(root.attrs["layout"])
    metrics = root["metrics"]
    assert metrics.attrs["n_epochs"] == 2
    assert metrics.attrs["columns"] == ["epoch", "step", "train_bits_per_dim", "val_bits_per_dim"]
    assert metrics["epoch"].dtype == np.int64 and metrics["step"].dtype == np.float64
    np.testing.assert_array_equal(metrics["epoch"][:], [0, 1])
    np.testing.assert_array_equal(metrics["train_bits_per_dim"][:], [5.0, 4.0])
    assert root["test"].attrs["bits_per_dim_per_channel"] == [3.0, 3.25, 3.5]

    batch = root["samples/000000"]
    assert batch.dtype == np.uint8 and batch.chunks == (16, 3, 5, 4)
    np.testing.assert_array_equal(batch[:], images)
    attrs = batch.attrs.asdict()
    assert attrs["recipe"] == recipe and attrs["seed"] == 3 and attrs["top_p"] is None
    assert attrs["checkpoint"] == "ckpt/epoch_1.pt" and attrs["sampler"] == "cached"
    assert attrs["created"].endswith("+00:00")

    reopened = RunArchive.open(path)
    assert reopened.test_metrics()["bits_per_dim_per_channel"] == [3.0, 3.25, 3.5]
    assert [k for k, _ in reopened.sample_batches()] == ["000000"]
    np.testing.assert_array_equal(reopened.read_samples("000000"), images)


def test_new_metric_keys_are_back_filled(tmp_path):
    archive = RunArchive.create_or_open(tmp_path / "a.zarr")
    archive.append_metrics({"epoch": 0, "train_bits_per_dim": 5.0})
    archive.append_metrics({"train_bits_per_dim": 4.0, "val_bits_per_dim": 3.9})
    metrics = archive.metrics()
    assert list(metrics) == ["epoch", "train_bits_per_dim", "val_bits_per_dim"]
    np.testing.assert_array_equal(metrics["epoch"], [0, -1])  # -1: row gave no epoch
    np.testing.assert_array_equal(metrics["val_bits_per_dim"], [np.nan, 3.9])
    assert {len(v) for v in metrics.values()} == {2}


def test_create_or_open_is_idempotent_and_truncate_resumes(tmp_path):
    path = tmp_path / "a.zarr"
    _filled(path)
    archive = RunArchive.create_or_open(path)
    assert archive.n_epochs == 2 and len(archive.sample_batches()) == 1
    archive.truncate_metrics(1)
    assert zarr.open_array(path / "metrics" / "lr", mode="r").shape == (1,)
    archive.append_metrics({"epoch": 1, "step": 150, "lr": 7e-4})
    metrics = RunArchive.open(path).metrics()
    np.testing.assert_array_equal(metrics["step"], [100, 150])
    np.testing.assert_array_equal(metrics["train_bits_per_dim"], [5.5, np.nan])
    assert archive.append_samples(_images(1)) == "000001"
    with pytest.raises(ArchiveError, match="cannot truncate"):
        archive.truncate_metrics(5)


def test_open_refuses_what_is_not_an_archive(tmp_path):
    with pytest.raises(PixelgenError, match="missing"):
        RunArchive.open(tmp_path / "missing")
    zarr.open_group(tmp_path / "other", mode="w", zarr_format=3)
    with pytest.raises(ArchiveError, match="not a pixelgen-archive"):
        RunArchive.open(tmp_path / "other")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"")
    with pytest.raises(ArchiveError, match="non-empty"):
        RunArchive.create_or_open(tmp_path / "run")
    assert not (tmp_path / "run" / "zarr.json").exists()
    newer = RunArchive.create_or_open(tmp_path / "newer")
    zarr.open_group(newer.path, mode="r+").attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ArchiveError, match="newer"):
        RunArchive.open(newer.path)


def test_bad_input_fails_with_its_name(tmp_path):
    archive = _filled(tmp_path / "a.zarr")
    with pytest.raises(ArchiveError, match="metrics.lr: expected a number"):
        archive.append_metrics({"lr": "fast"})
    with pytest.raises(ArchiveError, match="metrics.epoch: expected a whole number"):
        archive.append_metrics({"epoch": 1.5})
    with pytest.raises(ArchiveError, match="bad metric name"):
        archive.append_metrics({"a/b": 1.0})
    with pytest.raises(ArchiveError, match="bad metric name"):
        archive.append_metrics({"zarr.json": 1.0})
    with pytest.raises(ArchiveError, match="uint8"):
        archive.append_samples(_images(2).astype(np.int64))
    with pytest.raises(ArchiveError, match="uint8"):
        archive.append_samples(_images(2)[0])
    with pytest.raises(ArchiveError, match="samples.note"):
        archive.append_samples(_images(2), note=object())
    with pytest.raises(ArchiveError, match="test.bpd"):
        archive.set_test_metrics({"bpd": "low"})
    with pytest.raises(ArchiveError, match="read-only"):
        RunArchive.open(archive.path).append_metrics({"epoch": 3})
    assert archive.n_epochs == 2 and len(archive.sample_batches()) == 1


class _Crash(Exception):
    pass


def _crash_after(monkeypatch, n_writes: int) -> list[int]:
    """Make zarr's n_writes-th file write from now on raise, before the file lands."""
    real_put, count = zarr_local._put, [0]

    def put(*args, **kwargs):
        count[0] += 1
        if count[0] == n_writes:
            raise _Crash
        return real_put(*args, **kwargs)

    monkeypatch.setattr(zarr_local, "_put", put)
    return count


def _assert_intact(path, metrics: dict, images: np.ndarray) -> None:
    """Earlier entries read back equal through RunArchive and through plain zarr."""
    archive = RunArchive.open(path)
    assert archive.metrics().keys() == metrics.keys()
    for name, values in metrics.items():
        np.testing.assert_array_equal(archive.metrics()[name], values)
    assert [k for k, _ in archive.sample_batches()] == ["000000"]
    np.testing.assert_array_equal(archive.read_samples("000000"), images)
    group = zarr.open_group(path, mode="r")
    n = group["metrics"].attrs["n_epochs"]
    for name, values in metrics.items():
        np.testing.assert_array_equal(group["metrics"][name][:n], values)
    np.testing.assert_array_equal(group["samples/000000"][:], images)


def test_crash_at_every_write_of_a_metrics_append_is_harmless(tmp_path, monkeypatch):
    crashes = 0
    for n_writes in range(1, 100):
        path = tmp_path / f"run{n_writes}.zarr"
        archive = _filled(path)
        before = archive.metrics()
        _crash_after(monkeypatch, n_writes)
        try:
            archive.append_metrics({"epoch": 2, "step": 300, "lr": 1e-4, "val_bits_per_dim": 4.0})
        except _Crash:
            crashes += 1
        else:
            break  # every write position has been tried
        finally:
            monkeypatch.undo()
        _assert_intact(path, before, _images(3))
        archive.append_metrics({"epoch": 2, "step": 300})  # the same process carries on
        reopened = RunArchive.create_or_open(path)  # so does a resumed one
        reopened.append_metrics({"epoch": 3, "val_bits_per_dim": 3.0})
        metrics = RunArchive.open(path).metrics()
        np.testing.assert_array_equal(metrics["epoch"], [0, 1, 2, 3])
        np.testing.assert_array_equal(metrics["val_bits_per_dim"], [np.nan, np.nan, np.nan, 3.0])
        assert {zarr.open_array(path / "metrics" / k, mode="r").shape for k in metrics} == {(4,)}
    assert crashes >= 5


def test_crash_while_writing_samples_leaves_no_partial_batch(tmp_path, monkeypatch):
    crashes = 0
    for n_writes in range(1, 100):
        path = tmp_path / f"run{n_writes}.zarr"
        archive = _filled(path)
        before = archive.metrics()
        _crash_after(monkeypatch, n_writes)
        try:
            archive.append_samples(_images(20, seed=1), model="pixelcnn")
        except _Crash:
            crashes += 1
        else:
            break
        finally:
            monkeypatch.undo()
        _assert_intact(path, before, _images(3))
        assert RunArchive.create_or_open(path).append_samples(_images(2)) == "000001"
        assert not list((path / "samples").glob(".tmp-*"))
    assert crashes >= 3


def test_crash_at_the_rename_commit(tmp_path, monkeypatch):
    archive = _filled(tmp_path / "a.zarr")

    def rename(src, dst):
        raise _Crash

    monkeypatch.setattr("pixelgen.store.archive.os.rename", rename)
    with pytest.raises(_Crash):
        archive.append_samples(_images(4))
    monkeypatch.undo()
    assert list((archive.path / "samples").glob(".tmp-*"))  # left behind, but ignored
    _assert_intact(archive.path, archive.metrics(), _images(3))
    assert archive.append_samples(_images(4)) == "000001"


KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import zarr.storage._local as zarr_local
    from pixelgen.store.archive import RunArchive

    path, what, n_writes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    archive = RunArchive.create_or_open(path)
    archive.append_metrics({"epoch": 0, "lr": 1e-3})
    archive.append_samples(np.full((2, 1, 3, 3), 9, dtype=np.uint8))
    real_put, count = zarr_local._put, [0]

    def put(file, value, exclusive=False):
        count[0] += 1
        if count[0] == n_writes:
            # Die half-way through writing a file, the way a killed process would.
            file.with_suffix(".0123456789abcdef0123456789abcdef.partial").write_bytes(b"{")
            os._exit(17)
        return real_put(file, value, exclusive)

    zarr_local._put = put
    if what == "metrics":
        archive.append_metrics({"epoch": 1, "lr": 5e-4, "val_bits_per_dim": 3.0})
    else:
        archive.append_samples(np.full((20, 1, 3, 3), 5, dtype=np.uint8))  # not the fill value
    """
)


@pytest.mark.parametrize(("what", "n_writes"), [("metrics", 3), ("samples", 4)])
def test_process_killed_mid_write(tmp_path, what, n_writes):
    path = tmp_path / "a.zarr"
    script = [sys.executable, "-c", KILLED_MID_WRITE, str(path), what, str(n_writes)]
    assert subprocess.run(script, timeout=120).returncode == 17
    _assert_intact(path, {"epoch": [0], "lr": [1e-3]}, np.full((2, 1, 3, 3), 9, dtype=np.uint8))
    archive = RunArchive.create_or_open(path)
    assert not list(path.rglob("*.partial")) and not list((path / "samples").glob(".tmp-*"))
    archive.append_metrics({"epoch": 1, "lr": 5e-4})
    assert archive.append_samples(np.zeros((1, 1, 3, 3), dtype=np.uint8)) == "000001"
    np.testing.assert_array_equal(RunArchive.open(path).metrics()["epoch"], [0, 1])
