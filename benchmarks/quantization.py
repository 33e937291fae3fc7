"""File size, test bits/dim and fast-sampler speed of checkpoints before and after quantizing.

    python benchmarks/quantization.py runs/pixelcnn/best.ckpt runs/row_lstm/best.ckpt ...
    python benchmarks/quantization.py CKPT --to int8 --timing-images 8 --json
    python benchmarks/quantization.py --paper-sizes     # int8 size of the paper's CIFAR-10 models


For each checkpoint: ``pixelgen quantize`` to each format (written beside it as
``<stem>-<to>.ckpt``), then every file is evaluated as ``pixelgen eval`` evaluates it (the
run's test split and limit) and its fast sampler timed on whole images. Two sizes are
given for the original: the checkpoint as training wrote it (with the optimizer's state)
and its weights alone in float32 (the same entries a quantized file keeps), the fair
baseline of the quantized files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from pixelgen.recipe import recipe_from_dict, recipe_to_dict
from pixelgen.registry import create_model
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.quantization import SCHEMES
from pixelgen.study.from_checkpoint import evaluate_checkpoint, quantize_checkpoint
from pixelgen.study.measure import sampling_seconds
from pixelgen.training.evaluation import set_threads


def float_weights_bytes(state: dict) -> int:
    """Size of the checkpoint's chosen weights alone, float32, as a quantized file holds them."""
    model = ckpt_io.model_from_checkpoint(state)
    kept = {key: state[key] for key in ("model", "recipe", "epoch", "step", "metrics") if key in state}
    with tempfile.TemporaryDirectory() as folder:
        path = ckpt_io.save_checkpoint(Path(folder) / "float32.ckpt", {**kept, "model_state": model.state_dict()})
        return path.stat().st_size


def measure(path: Path, timing_images: int) -> dict:
    """Test bits/dim and fast-sampler seconds per image of one checkpoint file."""
    state = ckpt_io.load_checkpoint(path)
    figures = evaluate_checkpoint(path, accelerator="cpu")
    model = ckpt_io.model_from_checkpoint(state).eval()
    shape = (model.in_channels, 28, 28) if "mnist" in state["recipe"]["data"]["name"] else (model.in_channels, 32, 32)
    timing = sampling_seconds(model, shape, n_images=timing_images, repeats=3)
    return {"file": str(path), "bytes": path.stat().st_size, "bits_per_dim": figures["bits_per_dim"],
            "test_images": figures["n_images"], "fast_s_per_image": timing.fast_sampling_s_per_image}


def paper_sizes() -> None:
    """int8 file size against float32 weights for the paper-sized CIFAR-10 models (fresh
    weights: only the sizes mean something), where the per-file overhead no longer counts."""
    print("| model | parameters | float32 weights (bytes) | int8 (bytes) | int8 / float32 |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name in ("pixelcnn", "row_lstm", "diagonal_bilstm"):
            torch.manual_seed(0)
            model = create_model(name, in_channels=3)  # the paper's CIFAR-10 settings are the defaults
            state = {"model": ckpt_io.plain(model.pixelgen_config), "model_state": model.state_dict(),
                     "recipe": recipe_to_dict(recipe_from_dict({"model": {"name": name}})), "epoch": 0, "step": 0}
            plain = ckpt_io.save_checkpoint(Path(folder) / "float32.ckpt", state).stat().st_size
            small = ckpt_io.save_checkpoint(Path(folder) / "int8.ckpt", ckpt_io.quantized_checkpoint(state, "int8"))
            parameters = sum(p.numel() for p in model.parameters())
            print(f"| {name} | {parameters:,} | {plain:,} | {small.stat().st_size:,} | "
                  f"{small.stat().st_size / plain:.1%} |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--paper-sizes", action="store_true", help="sizes of the paper-sized models only")
    parser.add_argument("--to", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--timing-images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.paper_sizes:
        paper_sizes()
        return 0
    set_threads(args.threads)
    rows = []
    for checkpoint in args.checkpoints:
        name = ckpt_io.load_checkpoint(checkpoint)["model"]["name"]
        original = {**measure(checkpoint, args.timing_images), "model": name, "format": "float32 (as trained)",
                    "weights_only_bytes": float_weights_bytes(ckpt_io.load_checkpoint(checkpoint))}
        rows.append(original)
        for to in args.to:
            out = Path(quantize_checkpoint(checkpoint, to)["out"])
            rows.append({**measure(out, args.timing_images), "model": name, "format": to,
                         "of_file": out.stat().st_size / original["bytes"],
                         "of_weights": out.stat().st_size / original["weights_only_bytes"],
                         "delta_bits_per_dim": None})
            rows[-1]["delta_bits_per_dim"] = rows[-1]["bits_per_dim"] - original["bits_per_dim"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| model | format | file (bytes) | of the checkpoint | of float32 weights | test bits/dim | change | fast sampler (s/image) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["format"].startswith("float32"):
            print(f"| {r['model']} | {r['format']} | {r['bytes']:,} (weights alone {r['weights_only_bytes']:,}) | 100% | "
                  f"| {r['bits_per_dim']:.4f} | | {r['fast_s_per_image']:.4f} |")
        else:
            print(f"| {r['model']} | {r['format']} | {r['bytes']:,} | {r['of_file']:.1%} | {r['of_weights']:.1%} | "
                  f"{r['bits_per_dim']:.4f} | {r['delta_bits_per_dim']:+.4f} | {r['fast_s_per_image']:.4f} |")
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main(sys.argv[1:]))
