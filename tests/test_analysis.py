"""The measurements of pixelgen.study.analysis, pinned against theory and crafted inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from receptive_fields import FIELDS

import pixelgen
from pixelgen.study import analysis

TINY = dict(hidden_channels=6, n_layers=2, head_channels=16)
BUILT_IN = ("pixelcnn", "row_lstm", "diagonal_bilstm")


def tiny_model(name: str, channels: int = 1, **overrides):
    torch.manual_seed(0)
    return pixelgen.create_model(name, in_channels=channels, **{**TINY, **overrides})


def expected_map(name: str, channels: int, height: int, width: int, pixel: tuple[int, int]):
    """The paper's field (tests/receptive_fields.py), reduced to pixels as the map is."""
    i, j = pixel
    return FIELDS[name](channels, height, width, TINY["n_layers"])[:, i, j].any(0).any(0)


# ------------------------------------------------------------------ receptive fields

H, W, PIXEL = 7, 13, (3, 6)  # a wide canvas: room for the triangle and the blind spot
CANVAS = {"pixelcnn": (H, W), "row_lstm": (H, W), "diagonal_bilstm": (5, 7)}  # the BiLSTM is slow


@pytest.fixture(scope="module")
def centre_maps():
    """Each tiny model's map of the centre pixel on its canvas, measured once: the tests
    below read the same map (each measurement takes a whole Jacobian, seconds on a CPU)."""
    return {name: analysis.receptive_field_map(tiny_model(name), 1, *CANVAS[name]) for name in BUILT_IN}


@pytest.mark.parametrize("name", BUILT_IN)
def test_receptive_field_map_equals_the_paper_field(name, centre_maps):
    h, w = CANVAS[name]
    got = centre_maps[name]  # default pixel: the centre
    assert got.shape == (h, w) and got.dtype == torch.bool
    assert torch.equal(got, expected_map(name, 1, h, w, (h // 2, w // 2)))


def test_pixelcnn_map_has_the_blind_spot_above_right(centre_maps):
    assert CANVAS["pixelcnn"] == (H, W) and PIXEL == (H // 2, W // 2)
    seen = centre_maps["pixelcnn"]
    assert seen[2, 9], "one row up, three to the right: inside the 7x7 input convolution"
    assert not seen[2, 10] and not seen[2, 12], "one row up, four or more to the right: blind"
    assert seen[1, 10], "but farther up in the same column it is seen again"
    assert seen[:, 1].any() and not seen[:, 0].any(), "bounded: 3 columns (7x7) + 1 per layer to the left"


def test_row_lstm_map_is_a_triangle(centre_maps):
    assert CANVAS["row_lstm"] == (H, W) and PIXEL == (H // 2, W // 2)
    seen = centre_maps["row_lstm"]
    assert seen[0, :12].all() and not seen[0, 12], "three rows up the triangle spans 6 to the right"
    assert not seen[2, 10] and seen[1, 10], "its right edge widens going up"
    assert not seen[3, 0] and seen[3, 1], "own row: 3 + one pixel per layer to the left"


def test_diagonal_bilstm_map_is_the_whole_context(centre_maps):
    assert CANVAS["diagonal_bilstm"] == (5, 7)
    earlier = torch.arange(5 * 7).view(5, 7) < 2 * 7 + 3  # before the centre (2, 3)
    seen = centre_maps["diagonal_bilstm"]
    assert torch.equal(seen, earlier)


def test_colours_put_the_pixel_itself_in_its_map():
    seen = analysis.receptive_field_map(tiny_model("pixelcnn", 3), 3, 3, 3)
    assert seen[1, 1], "G and B of the centre pixel see its R"


def test_receptive_field_map_rejects_a_pixel_off_the_canvas():
    with pytest.raises(ValueError, match="outside"):
        analysis.receptive_field_map(tiny_model("pixelcnn"), 1, 4, 4, pixel=(4, 0))


def test_receptive_field_figure_is_a_png(tmp_path):
    maps = {name: expected_map(name, 1, H, W, PIXEL) for name in BUILT_IN}
    path = analysis.receptive_field_figure(maps, tmp_path / "fields.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ gradients and cost


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("skip", [False, True])
def test_gradient_flow_gives_a_finite_positive_norm_per_layer(name, skip):
    model = tiny_model(name, 3, skip=skip)
    batch = torch.randint(0, 256, (2, 3, 4, 5), generator=torch.Generator().manual_seed(1))
    flow = analysis.gradient_flow(model, batch)
    assert [layer for layer, _ in flow] == ["input_conv", "layers.0", "layers.1", "head"]
    assert all(math.isfinite(norm) and norm > 0 for _, norm in flow), flow
    assert all(p.grad is None for p in model.parameters()), "the model is left untouched"


def test_layer_groups_cover_every_parameter_once():
    model = tiny_model("row_lstm", skip=True, n_classes=3)
    grouped = [id(p) for group in analysis.layer_groups(model).values() for p in group]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("name, steps", [("pixelcnn", 1), ("row_lstm", 5), ("diagonal_bilstm", 5 + 8 - 1)])
def test_sequential_steps_per_layer(name, steps):
    assert analysis.sequential_steps(tiny_model(name), 5, 8) == steps


def test_growth_exponent_recovers_a_known_power_law():
    x = [2.0, 4.0, 8.0, 16.0]
    assert analysis.growth_exponent(x, [3 * v**2.5 for v in x]) == pytest.approx(2.5, abs=1e-9)
    noisy = [3 * v**1.5 * f for v, f in zip(x, [1.02, 0.98, 1.01, 0.99])]
    assert analysis.growth_exponent(x, noisy) == pytest.approx(1.5, abs=0.03)
    assert math.isnan(analysis.growth_exponent([4, 4], [1, 2]))


def test_scaling_activation_memory_grows_with_the_area():
    def factory(depth):
        return pixelgen.create_model("pixelcnn", in_channels=1, **{**TINY, "n_layers": depth})

    result = analysis.scaling(factory, sizes=(4, 8, 16), depths=(1, 2), batch=1, repeats=1, warmup=0)
    rows = result.rows
    assert [(r["size"], r["depth"]) for r in rows] == [(4, 1), (8, 1), (16, 1), (4, 2)]
    assert all(r["seconds"] > 0 and r["saved_bytes"] > 0 and r["peak_bytes"] is None for r in rows)
    # Saved: fixed masked weights plus (B, channels, H, W) maps, so a + b * size^2 exactly.
    saved = [r["saved_bytes"] for r in rows[:3]]
    assert (saved[2] - saved[1]) == 4 * (saved[1] - saved[0]) > 0
    assert 0 < result.exponents["saved_bytes_vs_size"] < 2
    assert rows[3]["saved_bytes"] > rows[0]["saved_bytes"], "a deeper stack keeps more"
    assert "saved_bytes" in result.memory


# ------------------------------------------------------------------ samples


def test_constant_images_are_flagged_as_constant_repeated_duplicates():
    samples = np.full((4, 1, 5, 6), 7, dtype=np.uint8)
    data = np.stack([np.full((1, 5, 6), v, dtype=np.uint8) for v in (7, 9)])
    stats = analysis.sample_statistics(samples, data)
    assert stats["artifacts"] == {"constant_rows": 1.0, "repeated_rows": 1.0, "saturated": 0.0, "duplicate": 1.0}
    assert stats["sample_mean"] == [7.0] and stats["sample_std"] == [0.0]
    assert stats["data_mean"] == [8.0] and stats["data_std"] == [1.0]
    assert stats["sample_diversity"] == 0.0
    assert stats["nearest_train_distance"] == [0.0] * 4, "a copy of a training image"
    assert stats["data_artifacts"]["duplicate"] == 0.0


def test_known_means_saturation_distances_and_duplicates():
    rng = np.random.default_rng(0)
    mid = rng.integers(1, 255, size=(3, 3, 4, 4), dtype=np.uint8)  # no 0 or 255
    black, white = np.zeros((1, 3, 4, 4), np.uint8), np.full((1, 3, 4, 4), 255, np.uint8)
    samples = np.concatenate([black, white, mid, mid[:1]])  # 6 images, the last a copy
    stats = analysis.sample_statistics(samples, data=black, held_out=white)
    assert stats["artifacts"]["saturated"] == pytest.approx(2 / 6)
    assert stats["artifacts"]["duplicate"] == pytest.approx(2 / 6)  # the copy and its original
    assert stats["nearest_train_distance"][:2] == [0.0, pytest.approx(math.sqrt(48))]  # 48 sub-pixels, each 1 apart
    assert stats["held_out_nearest_train_distance"] == [pytest.approx(math.sqrt(48))]
    expected_mean = samples.astype(float).mean(axis=(0, 2, 3))
    assert stats["sample_mean"] == pytest.approx(expected_mean.tolist())
    two = analysis.sample_statistics(np.concatenate([black, white]), data=black)
    assert two["sample_mean"] == [127.5] * 3 and two["sample_std"] == [127.5] * 3
    assert two["sample_diversity"] == pytest.approx(math.sqrt(48))


def test_repeated_rows_differ_from_constant_rows():
    stripes = np.tile(np.arange(6, dtype=np.uint8)[None, None, None, :] * 40, (2, 1, 5, 1))  # (2, 1, 5, 6)
    flags = analysis.artifact_flags(stripes)
    assert not flags["constant_rows"].any() and flags["repeated_rows"].all()


def test_value_histogram_and_figure(tmp_path):
    images = np.array([[[[0, 0], [255, 3]]]], dtype=np.uint8)  # (1, 1, 2, 2)
    hist = analysis.value_histogram(images)
    assert hist.shape == (1, 256) and hist[0, 0] == 0.5 and hist[0, 3] == 0.25 and hist[0, 255] == 0.25
    path = analysis.histogram_figure({"model": images}, images, tmp_path / "hist.png")
    assert path.stat().st_size > 0


def test_sample_statistics_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ"):
        analysis.sample_statistics(np.zeros((1, 1, 4, 4), np.uint8), np.zeros((1, 3, 4, 4), np.uint8))
