"""Seconds per image of the fast and the reference sampler, per model, image size and batch.

    python benchmarks/sampling.py                      # CPU-recipe size: h=32, 4 layers, head 128
    python benchmarks/sampling.py --paper              # the paper's: h=128, 15/12/12 layers, head 1024
    python benchmarks/sampling.py --models pixelcnn --sizes 32x32x3 --batch-sizes 16
    python benchmarks/sampling.py --equal-size         # the three models at ~286k parameters each

The fast sampler is timed generating whole images with :func:`pixelgen.sample`. The
reference sampler costs one full forward pass per sub-pixel (3072 for 32x32x3), so by
default it is timed on ``--reference-subpixels`` sub-pixels spread over the image (one
forward pass and one draw each) and extrapolated to the whole image; the table says so.
``--full-reference`` times it generating whole images instead.

``--equal-size`` compares the fast samplers of the three models at equal parameters and
depth (28x28x1, batch 16, 5 layers, head 32: PixelCNN h=64, Row LSTM h=38, Diagonal
BiLSTM h=40, about 286k parameters each) with one and with two threads: seconds and
images per second per model and the ratio to the PixelCNN's time per image, the best of
``--rounds`` rounds that take the models in turn, so that every ratio comes from one run.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import pixelgen
from pixelgen.sampling import ReferenceState, draw

PAPER_LAYERS = {"pixelcnn": 15, "row_lstm": 12, "diagonal_bilstm": 12}
EQUAL_SIZE_HIDDEN = {"pixelcnn": 64, "row_lstm": 38, "diagonal_bilstm": 40}  # ~286k parameters each
EQUAL_SIZE = dict(in_channels=1, n_layers=5, head_channels=32)


def parse_size(text: str) -> tuple[int, int, int]:
    height, width, channels = (int(v) for v in text.lower().split("x"))
    return channels, height, width


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fast(model, n: int, channels: int, height: int, width: int, device: str) -> float:
    """Seconds per image generating ``n`` whole images."""
    pixelgen.sample(model, n, 1, width, seed=0)  # warm-up: allocations, kernels
    synchronize(device)
    start = time.perf_counter()
    pixelgen.sample(model, n, height, width, seed=0)
    synchronize(device)
    return (time.perf_counter() - start) / n


def time_reference(model, n: int, channels: int, height: int, width: int, device: str, subpixels: int | None) -> float:
    """Seconds per image of the reference sampler, timed on ``subpixels`` sub-pixels and
    extrapolated to all ``C * H * W`` of them (``None``: whole images)."""
    if subpixels is None:
        synchronize(device)
        start = time.perf_counter()
        pixelgen.sample(model, n, height, width, seed=0, sampler="reference")
        synchronize(device)
        return (time.perf_counter() - start) / n
    total = channels * height * width
    positions = torch.linspace(0, total - 1, subpixels).long().tolist()  # spread over the image
    state = ReferenceState(model, None)
    x = torch.zeros(n, channels, height, width, dtype=torch.uint8, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        state.logits(x, 0, 0)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for k in positions:
            pixel, c = divmod(k, channels)
            i, j = divmod(pixel, width)
            x[:, c, i, j] = draw(state.logits(x, i, j)[:, :, c], 1.0, 1.0, generator).to(torch.uint8)
        synchronize(device)
    return (time.perf_counter() - start) / len(positions) * total / n


def equal_size(threads: list[int], rounds: int, n: int = 16, height: int = 28, width: int = 28) -> None:
    """Print the fast samplers' seconds and images/s per model at equal size, and the ratio
    to the PixelCNN, the best of ``rounds`` rounds over the models in turn, per thread count."""
    models = {}
    for name, hidden in EQUAL_SIZE_HIDDEN.items():
        torch.manual_seed(0)
        models[name] = pixelgen.create_model(name, hidden_channels=hidden, **EQUAL_SIZE).eval()
    print(f"equal size: {height}x{width}x1, batch {n}, {EQUAL_SIZE['n_layers']} layers, head "
          f"{EQUAL_SIZE['head_channels']}, float32, fast sampler, best of {rounds} rounds")
    header = f"{'threads':<9}{'model':<17}{'h':>4}{'parameters':>12}{'s/img':>9}{'img/s':>8}{'x PixelCNN':>12}"
    print(header)
    print("-" * len(header))
    for count in threads:
        torch.set_num_threads(count)
        best = dict.fromkeys(models, float("inf"))
        for model in models.values():
            pixelgen.sample(model, n, 1, width, seed=0)  # warm-up: allocations, kernels
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                pixelgen.sample(model, n, height, width, seed=0)
                best[name] = min(best[name], (time.perf_counter() - start) / n)
        for name, model in models.items():
            parameters = sum(p.numel() for p in model.parameters())
            print(f"{count:<9}{name:<17}{EQUAL_SIZE_HIDDEN[name]:>4}{parameters:>12,}{best[name]:>9.4f}"
                  f"{1 / best[name]:>8.1f}{best[name] / best['pixelcnn']:>11.2f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pixelcnn", "row_lstm", "diagonal_bilstm"])
    parser.add_argument("--sizes", nargs="+", default=["32x32x3", "28x28x1"], help="HxWxC")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--hidden", type=int, default=32, help="h (default 32; the paper: 128)")
    parser.add_argument("--layers", type=int, default=4, help="layers (default 4; the paper: 15/12/12)")
    parser.add_argument("--head", type=int, default=128, help="output head width (default 128; the paper: 1024)")
    parser.add_argument("--paper", action="store_true", help="the paper's sizes: h=128, 15/12/12 layers, head 1024")
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda where available")
    parser.add_argument("--reference-subpixels", type=int, default=12,
                        help="sub-pixels the reference is timed on, then extrapolated (default 12)")
    parser.add_argument("--full-reference", action="store_true", help="time the reference on whole images")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--equal-size", action="store_true",
                        help="compare the three models' fast samplers at ~286k parameters, 1 and 2 threads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --equal-size, the best kept (default 3)")
    args = parser.parse_args(argv)
    if args.equal_size:
        print("command: python " + " ".join(sys.argv))
        print(f"torch {torch.__version__}")
        equal_size([args.threads] if args.threads else [1, 2], args.rounds)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    subpixels = None if args.full_reference else args.reference_subpixels

    print("command: python " + " ".join(sys.argv))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices {', '.join(devices)}")
    size_text = "paper size (h=128, 15/12/12 layers, head 1024)" if args.paper else (
        f"h={args.hidden}, {args.layers} layers, head {args.head}")
    reference_text = "whole images" if subpixels is None else f"{subpixels} sub-pixels per image, extrapolated"
    print(f"models: {size_text}, float32; reference timed on {reference_text}")
    header = f"{'device':<7}{'model':<17}{'image':<10}{'batch':>6}{'reference s/img':>17}{'fast s/img':>12}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    for device in devices:
        for name in args.models:
            hidden, layers, head = (128, PAPER_LAYERS[name], 1024) if args.paper else (args.hidden, args.layers, args.head)
            for size in args.sizes:
                channels, height, width = parse_size(size)
                torch.manual_seed(0)
                model = pixelgen.create_model(
                    name, in_channels=channels, hidden_channels=hidden, n_layers=layers, head_channels=head
                ).to(device).eval()
                for n in args.batch_sizes:
                    reference = time_reference(model, n, channels, height, width, device, subpixels)
                    fast = time_fast(model, n, channels, height, width, device)
                    print(f"{device:<7}{name:<17}{size:<10}{n:>6}{reference:>17.3f}{fast:>12.4f}{reference / fast:>9.0f}x",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
