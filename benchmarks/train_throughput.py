"""Training throughput of the three models against the convolutional limit.

For each model: forward+backward images/s, peak memory and FLOPs per image (counted by
torch.utils.flop_counter), at the paper's CIFAR-10 shape and at the small CPU recipes'
shape, for several batch sizes; at the paper's shape also the time one CIFAR-10 training
epoch would take at that rate (45,000 images: the training set less the 10% validation
split). Beside each model:

* ``bare``: the same network with every masked convolution replaced by a plain one
  (the limit for PixelCNN: what its masks cost);
* ``pixelcnn@params``: a PixelCNN of about the same parameter count (the yardstick for
  the recurrent models).

``--config equal-depth`` instead trains the three models side by side at equal depth
and (about) equal parameter count: 28x28x1, batch 32, 5 layers each, head 32, PixelCNN
h=64 (~286k parameters) and each recurrent model at the width whose parameter count is
nearest it. It prints full training steps per second (forward, backward, Adam step),
the models' steps taken in turn so that load on the machine falls on all of them alike,
and the two ratios to the PixelCNN; on the CPU both by the wall clock and by the
process's CPU time (which other processes on a shared machine disturb less).

Usage::

    python benchmarks/train_throughput.py --shape small --batch-sizes 16
    python benchmarks/train_throughput.py --shape paper --batch-sizes 16 64 --device cuda --precision bf16-mixed
    python benchmarks/train_throughput.py --config equal-depth --threads 1 --repeats 15
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

import pixelgen
from pixelgen.nn.layers import MaskedConv2d
from pixelgen.study.analysis import saved_activation_bytes

SHAPES = {
    # name: (channels, height, width, hyperparameters shared by the three models)
    "paper": (3, 32, 32, dict(hidden_channels=128, head_channels=1024)),
    "small": (1, 28, 28, dict(hidden_channels=32, head_channels=128)),
}
CIFAR10_TRAIN_IMAGES = 45_000  # 50,000 less the recipes' 10% validation split
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # Lightning's names
DEPTHS = {
    "paper": {"pixelcnn": 15, "row_lstm": 12, "diagonal_bilstm": 12},
    "small": {"pixelcnn": 4, "row_lstm": 4, "diagonal_bilstm": 4},
}


def unmasked(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every MaskedConv2d replaced by a plain Conv2d of the same shape."""
    bare = copy.deepcopy(model)
    for name, module in list(bare.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, MaskedConv2d):
                plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                  padding=child.padding, bias=child.bias is not None)
                plain.load_state_dict({k: v for k, v in child.state_dict().items() if k != "mask"})
                setattr(module, child_name, plain)
    return bare


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pixelcnn_like(target: nn.Module, channels: int, hyper: dict) -> nn.Module:
    """The PixelCNN (same h and head) whose depth brings its parameter count nearest the target's."""
    goal = n_params(target)
    best = None
    for depth in range(1, 64):
        candidate = pixelgen.create_model("pixelcnn", in_channels=channels, n_layers=depth, **hyper)
        if best is None or abs(n_params(candidate) - goal) < abs(n_params(best) - goal):
            best = candidate
        if n_params(candidate) > goal:
            break
    return best


def count_onednn_products() -> None:
    """Teach FlopCounterMode oneDNN's inner product, ``y = x @ w.T``, through which
    :func:`pixelgen.nn.scans.matmul` runs the recurrent models' products on the CPU."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return  # not in this torch build; pixelgen.nn.scans then uses torch.mm, which is counted

    @register_flop_formula(op)
    def inner_product_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(x_shape) * w_shape[0]


def flops_per_image(model: nn.Module, x: torch.Tensor) -> float:
    """Forward + backward FLOPs per image (matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).float().logsumexp(1).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def measure(model: nn.Module, x: torch.Tensor, repeats: int, precision: str) -> tuple[float, float]:
    """Median seconds per forward+backward step, and memory in bytes.

    Memory: on CUDA the peak allocated during the steps; on the CPU the activations
    autograd keeps for the backward pass (:func:`pixelgen.study.analysis.saved_activation_bytes`),
    since a process's peak resident size only grows from one measurement to the next.
    """
    device = x.device
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def step():
        with autocast:
            loss = pixelgen.bits_per_dim(model(x), x)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = saved_activation_bytes(model, x)
    return statistics.median(times), peak


EQUAL_DEPTH = {"channels": 1, "height": 28, "width": 28, "batch": 32, "n_layers": 5, "head_channels": 32,
               "pixelcnn_width": 64}


def matching_width(name: str, goal: int, hyper: dict) -> int:
    """The hidden width whose model's parameter count is nearest ``goal`` (counts grow with the width)."""
    counts = {}
    for h in range(1, 1025):
        counts[h] = n_params(pixelgen.create_model(name, hidden_channels=h, **hyper))
        if counts[h] >= goal:
            break
    return min(counts, key=lambda h: abs(counts[h] - goal))


def equal_depth(device: torch.device, repeats: int) -> None:
    """Training steps/s of the three models at equal depth and parameter count, interleaved."""
    c = EQUAL_DEPTH
    hyper = {"in_channels": c["channels"], "n_layers": c["n_layers"], "head_channels": c["head_channels"]}
    goal = n_params(pixelgen.create_model("pixelcnn", hidden_channels=c["pixelcnn_width"], **hyper))
    widths = {"pixelcnn": c["pixelcnn_width"]}
    widths.update({name: matching_width(name, goal, hyper) for name in ("row_lstm", "diagonal_bilstm")})
    x = torch.randint(0, 256, (c["batch"], c["channels"], c["height"], c["width"]), device=device)
    steps = {}
    for name, h in widths.items():
        torch.manual_seed(0)
        model = pixelgen.create_model(name, hidden_channels=h, **hyper).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps[name] = (model, optimizer)
        print(f"{name:<16} h={h:<4} {n_params(model):>9,} parameters")

    def train_step(name: str) -> tuple[float, float]:
        """Wall-clock and process CPU seconds of one training step."""
        model, optimizer = steps[name]
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        pixelgen.bits_per_dim(model(x), x).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - start_cpu

    for name in steps:  # warm-up
        train_step(name)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name in steps:
            times[name].append(train_step(name))
    print(f"{c['height']}x{c['width']}x{c['channels']}, batch {c['batch']}, {c['n_layers']} layers, "
          f"{torch.get_num_threads()} threads, median of {repeats} interleaved training steps")
    clocks = ["wall"] + (["CPU"] if device.type == "cpu" else [])  # CPU: this process's time, less
    for k, clock in enumerate(clocks):  # disturbed by other processes on a shared machine
        rate = {name: 1 / statistics.median(t[k] for t in steps_times) for name, steps_times in times.items()}
        for name in steps:
            ratio = "" if name == "pixelcnn" else f"   {name} / pixelcnn = {rate[name] / rate['pixelcnn']:.2f}"
            print(f"{clock + ' clock':<10} {name:<16} {rate[name]:7.2f} steps/s{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["shapes", "equal-depth"], default="shapes",
                        help="shapes: the table below; equal-depth: training steps/s at equal depth and parameters")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--models", nargs="+", default=["pixelcnn", "row_lstm", "diagonal_bilstm"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="32-true",
                        help="as Lightning names them: bf16-mixed and 16-mixed run under autocast")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config == "equal-depth":
        equal_depth(torch.device(args.device), args.repeats)
        return
    count_onednn_products()
    channels, height, width, hyper = SHAPES[args.shape]
    device = torch.device(args.device)
    print(f"shape {args.shape}: {channels}x{height}x{width}, {hyper}, device {device}, {args.precision}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    epoch = args.shape == "paper"  # the CIFAR-10 shape: an epoch's time means something
    print(f"{'model':<26}{'batch':>6}{'params':>11}{'img/s':>10}{'ms/step':>10}{'GFLOP/img':>11}"
          f"{'GFLOP/s':>9}{'mem MB':>9}" + (f"{'epoch min':>10}" if epoch else "") + "  ratio")
    print("img/s: forward + backward; mem MB: CUDA peak allocated on a GPU, on the CPU the activations saved "
          "for backward" + ("; epoch min: one CIFAR-10 training epoch (45,000 images) at this rate" if epoch else ""))
    for name in args.models:
        torch.manual_seed(0)
        model = pixelgen.create_model(name, in_channels=channels, n_layers=DEPTHS[args.shape][name], **hyper)
        variants = {name: model}
        if name == "pixelcnn":
            variants["  bare conv stack"] = unmasked(model)
        else:
            variants["  pixelcnn@params"] = pixelcnn_like(model, channels, hyper)
        for batch in args.batch_sizes:
            x = torch.randint(0, 256, (batch, channels, height, width), device=device)
            rates = {}
            for label, net in variants.items():
                net = net.to(device).train()
                try:
                    seconds, peak = measure(net, x, args.repeats, args.precision)
                except torch.OutOfMemoryError:
                    print(f"{label:<26}{batch:>6}  out of memory")
                    continue
                flops = flops_per_image(net, x[: min(batch, 4)])
                rates[label] = batch / seconds
                ratio = "" if label == name else f"  {name} / this = {rates[name] / rates[label]:.2f}"
                epoch_min = f"{CIFAR10_TRAIN_IMAGES * seconds / batch / 60:>10.1f}" if epoch else ""
                print(f"{label:<26}{batch:>6}{n_params(net):>11,}{batch / seconds:>10.1f}{seconds * 1e3:>10.1f}"
                      f"{flops / 1e9:>11.3f}{flops * batch / seconds / 1e9:>9.1f}{peak / 2**20:>9.0f}{epoch_min}{ratio}")


if __name__ == "__main__":
    main()
