"""pixelgen.load_model: a run folder, a checkpoint (float or quantized) or zoo:NAME in one
call, giving the model ``pixelgen evaluate`` would use, in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

import pixelgen
from pixelgen.errors import CheckpointError, PixelgenError
from pixelgen.recipe import recipe_from_dict, recipe_to_dict
from pixelgen.store import checkpoint as ckpt_io

TINY = dict(in_channels=1, hidden_channels=6, n_layers=1, head_channels=8)


def images() -> torch.Tensor:
    return torch.randint(0, 256, (2, 1, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def write_checkpoint(path, seed: int, ema: bool) -> torch.nn.Module:
    """A real checkpoint of a tiny Row LSTM (with an average of its weights that differs
    from them, if ``ema``); returns the model whose weights it holds as ``model_state``."""
    torch.manual_seed(seed)
    model = pixelgen.create_model("row_lstm", **TINY)
    state = {"model": ckpt_io.plain(model.pixelgen_config), "model_state": model.state_dict(), "epoch": 2,
             "recipe": recipe_to_dict(recipe_from_dict({"model": {"name": "row_lstm"}, "data": {"name": "mnist"}}))}
    if ema:
        average = AveragedModel(model)
        with torch.no_grad():
            for param in average.module.parameters():
                param.add_(0.1)
        state["ema_state"] = average.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_io.save_checkpoint(path, state)
    return model


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(images())


def evaluated_model(path, weights: str = "auto") -> torch.nn.Module:
    """The model ``pixelgen evaluate --weights weights`` runs for the checkpoint ``path``."""
    return ckpt_io.model_from_checkpoint(ckpt_io.load_checkpoint(path), weights).eval()


def test_a_run_folder_gives_its_best_checkpoints_average_in_eval_mode(tmp_path):
    raw = write_checkpoint(tmp_path / "run" / "best.ckpt", seed=0, ema=True)
    write_checkpoint(tmp_path / "run" / "last.ckpt", seed=1, ema=True)
    model = pixelgen.load_model(tmp_path / "run")
    assert not model.training and not any(m.training for m in model.modules())
    assert torch.equal(logits(model), logits(evaluated_model(tmp_path / "run" / "best.ckpt")))
    assert not torch.equal(logits(model), logits(raw.eval()))  # the average, not the trained weights
    assert torch.equal(logits(pixelgen.load_model(str(tmp_path / "run"), weights="raw")), logits(raw.eval()))
    assert torch.equal(logits(pixelgen.load_model(tmp_path / "run", weights="ema")), logits(model))


def test_a_run_folder_without_best_gives_its_last_checkpoint(tmp_path):
    raw = write_checkpoint(tmp_path / "run" / "last.ckpt", seed=1, ema=False)
    assert torch.equal(logits(pixelgen.load_model(tmp_path / "run")), logits(raw.eval()))


def test_a_float_checkpoint_gives_exactly_its_weights(tmp_path):
    path = tmp_path / "model.ckpt"
    raw = write_checkpoint(path, seed=2, ema=False)
    model = pixelgen.load_model(path, weights="raw")
    assert not model.training
    assert torch.equal(logits(model), logits(raw.eval()))
    with pytest.raises(CheckpointError, match=r"kept no average .* use raw \(--weights raw\)$"):
        pixelgen.load_model(path, weights="ema")


@pytest.mark.parametrize("to", ["int8", "float16"])
def test_a_quantized_checkpoint_gives_the_dequantized_model_evaluate_uses(tmp_path, to):
    source = tmp_path / "model.ckpt"
    raw = write_checkpoint(source, seed=3, ema=True)
    path = tmp_path / f"model-{to}.ckpt"
    ckpt_io.save_checkpoint(path, ckpt_io.quantized_checkpoint(ckpt_io.load_checkpoint(source), to))
    model = pixelgen.load_model(path)
    assert not model.training
    assert torch.equal(logits(model), logits(evaluated_model(path)))
    average = pixelgen.load_model(source)
    assert not torch.equal(logits(model), logits(average))  # rounded weights ...
    torch.testing.assert_close(logits(model), logits(average), rtol=0.05, atol=0.05)  # ... of the average
    assert not torch.equal(logits(model), logits(raw.eval()))
    with pytest.raises(CheckpointError, match="holds the ema weights only"):
        pixelgen.load_model(path, weights="raw")


def test_failures_are_one_line_checkpoint_errors(tmp_path):
    write_checkpoint(tmp_path / "run" / "best.ckpt", seed=0, ema=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    cases = {
        tmp_path / "missing": "no such run folder or checkpoint file",
        tmp_path / "empty": "no best.ckpt or last.ckpt",
        tmp_path / "broken.ckpt": "not a pixelgen checkpoint",
        "zoo:mnist_pixelcnn": "zoo:mnist_pixelcnn: no such zoo model; .*`pixelgen zoo` lists them",
    }
    for source, message in cases.items():
        with pytest.raises(PixelgenError, match=message) as caught:
            pixelgen.load_model(source)
        assert "\n" not in str(caught.value)
    with pytest.raises(CheckpointError, match="weights 'best': choose one of auto, ema, raw") as caught:
        pixelgen.load_model(tmp_path / "run", weights="best")
    assert (tmp_path / "broken.ckpt").read_bytes() == b"not a checkpoint"  # nothing is written
