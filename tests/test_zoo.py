"""The model zoo (pixelgen.store.zoo, pixelgen zoo, scripts/build_zoo.py): a tiny zoo built
in a temporary folder ($PIXELGEN_ZOO_DIR) by the build script from a tiny recipe, then
zoo:NAME read wherever a checkpoint is, its SHA-256 checked, and nothing written into it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import attrs
import numpy as np
import pytest
import torch
from datafiles import write_tiny_mnist

import pixelgen
from pixelgen.cli import main
from pixelgen.recipe import dump_toml
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store import zoo
from pixelgen.store.runs import beside, quantized_path
from pixelgen.study.from_checkpoint import evaluate_checkpoint
from pixelgen.study.report import default_compare_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _build_zoo_module():
    spec = importlib.util.spec_from_file_location("build_zoo", ROOT / "scripts" / "build_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_zoo = _build_zoo_module()


def write_zoo_recipe(base: pathlib.Path) -> pathlib.Path:
    """``base/recipes/zoo_tiny.toml``: a tiny PixelCNN on tiny Fashion-MNIST files under ``base/data``."""
    write_tiny_mnist(base / "data", n_train=24, n_test=6, seed=5)
    (base / "recipes").mkdir()
    recipe = base / "recipes" / "zoo_tiny.toml"
    recipe.write_text(dump_toml({
        "description": "Zoo: a tiny PixelCNN",
        "model": {"name": "pixelcnn", "hyperparameters": {"hidden_channels": 4, "n_layers": 1, "head_channels": 8}},
        "data": {"name": "fashion_mnist", "root": str(base / "data"), "batch_size": 6,
                 "validation_fraction": 0.25, "download": False},
        "train": {"epochs": 1, "accelerator": "cpu", "seed": 0, "threads": 1},
        "sample": {"n": 2},
    }))
    return recipe


def build(base: pathlib.Path, runs: str, zoo_dir: pathlib.Path, *extra: str) -> int:
    zoo_dir.mkdir(exist_ok=True)
    return build_zoo.run(["tiny", "--recipes", str(base / "recipes"), "--runs", str(base / runs),
                          "--zoo-dir", str(zoo_dir), *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> pathlib.Path:
    """A folder holding recipes/, runs/zoo_tiny/ and zoo/ (tiny.ckpt and zoo.toml), built once."""
    base = tmp_path_factory.mktemp("zoo")
    write_zoo_recipe(base)
    assert build(base, "runs", base / "zoo") == 0
    return base


@pytest.fixture
def tiny_zoo(built, tmp_path, monkeypatch) -> pathlib.Path:
    """A copy of the built zoo, named by $PIXELGEN_ZOO_DIR; the test works in ``tmp_path/work``."""
    folder = shutil.copytree(built / "zoo", tmp_path / "zoo")
    monkeypatch.setenv(zoo.ZOO_ENV, str(folder))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return folder


def contents(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_build_records_the_files_digests_and_the_figures_it_measured(built):
    (record,) = zoo.list_zoo(built / "zoo")
    path = built / "zoo" / "tiny.ckpt"
    state = ckpt_io.load_checkpoint(path)
    assert record.name == "tiny" and record.file == "tiny.ckpt" and record.model == "pixelcnn"
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and record.bytes == path.stat().st_size
    assert record.weights_sha256 == state["model_digest"] and state["quantization"]["to"] == "int8"
    assert record.parameters == sum(p.numel() for p in ckpt_io.model_from_checkpoint(state).parameters())
    int8 = evaluate_checkpoint(path, "test", accelerator="cpu")
    best = evaluate_checkpoint(built / "runs" / "zoo_tiny" / "best.ckpt", "test", accelerator="cpu")
    assert (record.bits_per_dim, record.bits_per_dim_float) == (round(int8["bits_per_dim"], 6),
                                                                round(best["bits_per_dim"], 6))
    assert record.test_images == int8["n_images"] == 6 and record.description == "a tiny PixelCNN"
    assert record.command == "python3 scripts/build_zoo.py tiny"


def test_a_rebuild_from_the_recipe_gives_the_same_weights(built, tmp_path, capsys):
    again = shutil.copytree(built / "zoo", tmp_path / "zoo")
    before = zoo.read_manifest(again)["tiny"]
    assert build(built, "runs-again", again) == 0  # trained afresh in another folder
    after = zoo.read_manifest(again)["tiny"]
    assert after.weights_sha256 == before.weights_sha256 and after.bits_per_dim == before.bits_per_dim
    assert "tiny: rebuilt weights are the recorded ones" in capsys.readouterr().out


def test_pixelgen_zoo_and_list_zoo_list_the_models(tiny_zoo, capsys):
    assert [m.name for m in pixelgen.list_zoo()] == ["tiny"]
    assert main(["zoo"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[:4] == ["name", "model", "data", "params"]
    assert row.split()[:4] == ["zoo:tiny", "pixelcnn", "fashion_mnist", "3,000"] and row.endswith("a tiny PixelCNN")
    assert main(["zoo", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry == attrs.asdict(zoo.read_manifest()["tiny"])
    assert entry["sha256"] == zoo.sha256_of(tiny_zoo / "tiny.ckpt")


def test_eval_sample_compress_and_decompress_take_a_zoo_name(tiny_zoo, capsys):
    before = contents(tiny_zoo)
    assert main(["eval", "zoo:tiny", "--json", "--accelerator", "cpu"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main(["eval", str(tiny_zoo / "tiny.ckpt"), "--json", "--accelerator", "cpu"]) == 0
    assert by_name == json.loads(capsys.readouterr().out)
    assert by_name["bits_per_dim"] == pytest.approx(zoo.read_manifest()["tiny"].bits_per_dim, abs=1e-6)

    assert main(["sample", "zoo:tiny", "-n", "2", "--seed", "0", "--size", "4x4"]) == 0
    assert sorted(os.listdir()) == ["samples-seed0.png"]  # the current folder; no archive
    images = np.random.default_rng(0).integers(0, 256, size=(2, 1, 5, 4), dtype=np.uint8)
    np.save("images.npy", images)
    assert main(["compress", "zoo:tiny", "images.npy", "-o", "images.pgz"]) == 0
    assert main(["decompress", "zoo:tiny", "images.pgz", "-o", "decoded.npy"]) == 0
    assert np.array_equal(np.load("decoded.npy"), images)
    assert contents(tiny_zoo) == before


def test_load_model_takes_a_zoo_name(tiny_zoo):
    by_name = pixelgen.load_model("zoo:tiny")
    by_path = pixelgen.load_model(tiny_zoo / "tiny.ckpt")
    assert not by_name.training
    x = torch.randint(0, 256, (2, 1, 4, 4))
    assert torch.equal(by_name(x), by_path(x))
    (tiny_zoo / "tiny.ckpt").write_bytes((tiny_zoo / "tiny.ckpt").read_bytes() + b"x")
    with pytest.raises(zoo.ZooError, match="SHA-256"):
        pixelgen.load_model("zoo:tiny")


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and not captured.out, captured
    return lines[0]


@pytest.mark.parametrize("command", [["eval", "zoo:tiny"], ["sample", "zoo:tiny", "-n", "1"],
                                     ["compress", "zoo:tiny", "x.npy", "-o", "x.pgz"], ["score", "zoo:tiny"],
                                     ["analyse", "zoo:tiny"], ["compare", "zoo:tiny"]])
def test_a_damaged_zoo_file_is_refused_by_its_digest(tiny_zoo, capsys, command):
    data = bytearray((tiny_zoo / "tiny.ckpt").read_bytes())
    data[len(data) // 2] ^= 1
    (tiny_zoo / "tiny.ckpt").write_bytes(bytes(data))
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert "zoo:tiny:" in line and "SHA-256" in line and "refused" in line, line
    assert os.listdir() == []


def test_an_unknown_name_gets_a_did_you_mean_and_where_to_look(tiny_zoo, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "zoo:tiyn"])
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert "zoo:tiyn: no such zoo model; did you mean 'tiny'?" in line and "`pixelgen zoo` lists them" in line


def test_resolving_a_name_reads_no_torch(tiny_zoo):
    probe = ("import sys, pixelgen.store.zoo as z; p = z.resolve('zoo:tiny'); "
             "print(p.name, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["tiny.ckpt", "False"]
    (tiny_zoo / "tiny.ckpt").write_bytes(b"damaged")  # refused by the parser, before torch loads
    probe = ("import sys, pixelgen.cli\ntry: pixelgen.cli.main(['eval', 'zoo:tiny'])\nexcept SystemExit as e: "
             "print(e.code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "False"]
    assert zoo.resolve("runs/a/best.ckpt") == pathlib.Path("runs/a/best.ckpt")  # a path is a path


@pytest.mark.parametrize("command", [["sample", "zoo:tiny", "-n", "1", "--size", "2x2", "--png", "{zoo}/grid.png"],
                                     ["compress", "zoo:tiny", "images.npy", "-o", "{zoo}/x.pgz"],
                                     ["analyse", "zoo:tiny", "--out", "{zoo}/analysis"]])
def test_no_output_lands_in_the_zoo_folder(tiny_zoo, capsys, command):
    np.save("images.npy", np.zeros((1, 1, 3, 3), dtype=np.uint8))
    before = contents(tiny_zoo)
    assert main([part.format(zoo=tiny_zoo) for part in command]) == 2
    assert "lies in the model zoo's folder" in one_error_line(capsys)
    assert contents(tiny_zoo) == before


def test_a_manifest_that_does_not_validate_is_one_line(tiny_zoo, capsys):
    manifest = tiny_zoo / zoo.MANIFEST
    manifest.write_text(manifest.read_text().replace('file = "tiny.ckpt"', 'file = "../tiny.ckpt"'))
    assert main(["zoo"]) == 2
    line = one_error_line(capsys)
    assert "not a zoo manifest" in line and "expected a plain file name" in line, line


def test_build_zoo_check_verifies_every_file(tiny_zoo, capsys):
    assert build_zoo.run(["--check"]) == 0
    assert capsys.readouterr().out.startswith("ok     tiny  tiny.ckpt")
    (tiny_zoo / "tiny.ckpt").write_bytes(b"not a checkpoint")
    assert build_zoo.run(["--check"]) == 1
    assert "FAILED zoo:tiny:" in capsys.readouterr().out


def test_every_packaged_zoo_model_verifies_its_sha256(monkeypatch):
    monkeypatch.delenv(zoo.ZOO_ENV, raising=False)
    models = zoo.list_zoo(zoo.PACKAGED_ZOO)
    if not models:
        pytest.skip("the packaged zoo (pixelgen/zoo/zoo.toml) lists no models yet: scripts/build_zoo.py adds them")
    for model in models:
        path = zoo.resolve(f"zoo:{model.name}")
        assert path.parent == zoo.PACKAGED_ZOO and model.bytes == path.stat().st_size <= build_zoo.MAX_BYTES
        assert (ROOT / model.recipe).is_file() and model.command == f"python3 scripts/build_zoo.py {model.name}"
        assert ckpt_io.load_checkpoint(path)["model_digest"] == model.weights_sha256


def test_outputs_that_default_beside_the_checkpoint_go_to_the_current_folder_for_a_zoo_model(tiny_zoo, tmp_path):
    assert beside(tiny_zoo / "tiny.ckpt") == pathlib.Path(".")
    assert quantized_path(tiny_zoo / "tiny.ckpt", "float16") == pathlib.Path("tiny-float16.ckpt")
    assert quantized_path(tmp_path / "run" / "best.ckpt", "int8") == tmp_path / "run" / "best-int8.ckpt"
    assert default_compare_dir([tiny_zoo / "tiny.ckpt"]) == pathlib.Path("compare")
