"""benchmarks/compression.py: its codec row is the codec's own output (a file that round
trips, of payload + header + framing bytes, the payload the NLL), its baselines are checked
lossless, and the set's mosaic puts every image in its place."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
import torch

import pixelgen
from pixelgen.recipe import recipe_from_dict, recipe_to_dict
from pixelgen.store.checkpoint import plain, save_checkpoint
from pixelgen.study.codec import FORMAT_VERSION, compress, header_bytes, read_container

pytest.importorskip("imagecodecs", reason="benchmarks/compression.py needs imagecodecs (pip install 'pixelgen[bench]')")

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "compression.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("compression_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny RGB PixelCNN's checkpoint, 5 images of 6x5 as a .npy, the model and images."""
    folder = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = pixelgen.create_model("pixelcnn", in_channels=3, hidden_channels=6, n_layers=2, head_channels=16)
    recipe = recipe_from_dict({"model": {"name": "pixelcnn"}, "data": {"name": "cifar10"}})
    save_checkpoint(folder / "best.ckpt", {"model": plain(model.pixelgen_config), "model_state": model.state_dict(),
                                            "recipe": recipe_to_dict(recipe), "epoch": 1})
    images = torch.randint(0, 256, (5, 3, 6, 5), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    np.save(folder / "images.npy", images.numpy())
    return folder, model.eval(), images


def test_the_codec_row_is_the_codecs_own_file(bench, tiny, capsys):
    folder, model, images = tiny
    assert bench.main(["--checkpoint", str(folder / "best.ckpt"), "--images-from", str(folder / "images.npy"),
                       "--batch-size", "2", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    data = compress(model, images, batch_size=2)
    header_size = len(header_bytes(read_container(data)[0]))
    assert (result["count"], result["shape"], result["alone"]) == (5, [3, 6, 5], 5)
    assert result["file"] == len(data) == result["payload"] + header_size + bench.FRAMING
    assert result["payload"] == 4 * len(read_container(data)[1])
    singles = [compress(model, images[k:k + 1]) for k in range(5)]
    assert result["alone_file"] == [len(d) for d in singles]
    assert result["alone_payload"] == [4 * len(read_container(d)[1]) for d in singles]
    nll = sum(result["nll_bits"])  # the payload is the NLL to within the coder's last words
    assert nll - 1 <= 8 * result["payload"] <= nll + 64 + 0.001 * nll
    png = result["baselines"]["PNG (Pillow, optimize)"]
    assert len(png["alone"]) == 5 and png["alone"][0] == len(bench.png(images[0].permute(1, 2, 0).numpy()))
    assert FORMAT_VERSION == 2


def test_the_table_names_every_coder_and_the_nll_row_is_one(bench, tiny, capsys):
    folder, _, _ = tiny
    assert bench.main(["--checkpoint", str(folder), "--images-from", str(folder / "images.npy"), "--alone", "2"]) == 0
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"coder", "model NLL / 8", "pgz payload", "pgz file (header included)",
                         *(name for name, _, _ in bench.BASELINES)}
    assert rows["model NLL / 8"][-1] == "1.000 |"
    assert "the first 2 coded alone" in table and "images/s" in table


def test_bad_input_and_a_lossy_coder_are_refused_in_one_line(bench, tiny, monkeypatch, capsys):
    """A lossy coder, a missing checkpoint or image file and a missing imagecodecs."""
    folder = tiny[0]
    pictures = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    assert bench.baseline(bench.webp, bench.imagecodecs.webp_decode, pictures)["set"] > 0  # grey through RGB
    with pytest.raises(bench.BenchError, match="was not lossless"):
        bench.baseline(bench.png, lambda data: bench.unpng(data) // 2 * 2, pictures)
    assert bench.main(["--checkpoint", "no-such.ckpt"]) == 2
    assert capsys.readouterr().err == "compression.py: error: no-such.ckpt: no checkpoint there\n"
    assert bench.main(["--checkpoint", str(folder), "--images-from", str(folder / "none.npy")]) == 2
    assert capsys.readouterr().err == f"compression.py: error: {folder / 'none.npy'}: no .npy there, nor PNG files in it\n"
    monkeypatch.setattr(bench, "imagecodecs", None)
    assert bench.main(["--checkpoint", "x.ckpt"]) == 2
    assert capsys.readouterr().err == bench.INSTALL + "\n"


@pytest.mark.parametrize("n, rows, cols", [(6, 3, 2), (12, 4, 3), (7, 3, 3), (1, 1, 1)])
def test_the_mosaic_puts_every_picture_in_its_place_and_the_rest_black(bench, n, rows, cols):
    pictures = np.random.default_rng(0).integers(1, 256, (n, 2, 3, 3), dtype=np.uint8)  # (N, H, W, 3), no zeros
    grid = bench.mosaic(pictures)
    assert grid.shape == (rows * 2, cols * 3, 3)
    for k in range(rows * cols):
        tile = grid[k // cols * 2:(k // cols + 1) * 2, k % cols * 3:(k % cols + 1) * 3]
        assert np.array_equal(tile, pictures[k]) if k < n else not tile.any()
    assert math.isclose(grid.mean() * grid.size, pictures.sum(dtype=np.int64))
