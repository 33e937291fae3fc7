"""Does the pipeline learn as much per step as a plain loop? (issue 23, point 6)

For each seed, both sides train the budget race's PixelCNN (``recipes/fmnist_budget.toml``'s
first run: Fashion-MNIST 28x28x1, 5 layers, h = 64, head 32, 286,496 parameters) for the
same number of Adam steps and are scored the same way, test bits/dim on the first 2000
test images:

* **pipeline**: ``pixelgen.train`` of that run as the recipe has it (batch 32, Adam 3e-3,
  100 warm-up steps, gradient clipping at norm 1, a 10% validation split, data order and
  initial weights from ``train.seed``), with ``train.max_steps`` instead of the 4-minute
  budget; its ``metrics.json`` is the score (best checkpoint; with fewer steps than an
  epoch the one validation is at the end, so best is last).
* **loop**: :func:`plain_loop`, twenty lines of PyTorch: ``torch.manual_seed(seed)``, the
  registry's model, Adam 3e-3 with the same linear warm-up, batch 32 drawn from the same
  90% of the training set in a random order, no clipping unless ``--loop-clip``, scored
  after the last step.

A fixed step count, not the 240-second budget, makes the comparison independent of the
machine's load; each side's seconds are printed too (the pipeline's include its
evaluation, samples and archive). Runs go two at a time, one torch thread each::

    python3 benchmarks/pipeline_vs_loop.py --steps 400 --seeds 0 1 2 3 4 --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import statistics
import tempfile
import time
import tomllib
from pathlib import Path

import torch

import pixelgen
from pixelgen.data import train_val_split

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "fmnist_budget.toml"
N_TEST = 2000


def pixelcnn_recipe(seed: int, steps: int, out: str) -> dict:
    """The budget race's PixelCNN run as one recipe, ``steps`` steps instead of 4 minutes."""
    data = tomllib.loads(RECIPE.read_text())
    run = data.pop("runs")[0]
    data.update({"name": run["name"], "model": run["model"]})
    data["train"].pop("max_time")
    data["train"].update(seed=seed, max_steps=steps)
    data["output"] = {"dir": out}
    return data


def pipeline(seed: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        recipe = pixelcnn_recipe(seed, steps, folder)
        start = time.perf_counter()
        (metrics,) = pixelgen.train(recipe, report=None)
        seconds = time.perf_counter() - start
    if metrics["n_images"] != N_TEST:
        raise RuntimeError(f"scored on {metrics['n_images']} test images, not {N_TEST}")
    return {"bits_per_dim": metrics["bits_per_dim"], "seconds": seconds}


def plain_loop(seed: int, steps: int, clip: float | None) -> dict:
    recipe = pixelcnn_recipe(seed, steps, "unused")
    batch, lr, warmup = recipe["data"]["batch_size"], recipe["train"]["optimizer"]["lr"], recipe["train"]["warmup_steps"]
    root = recipe["data"]["root"]
    start = time.perf_counter()
    train = pixelgen.create_dataset("fashion_mnist", root, "train")
    kept, _ = train_val_split(len(train), recipe["data"]["validation_fraction"], seed)
    images = train.images[kept]  # (54000, 1, 28, 28) uint8
    test = pixelgen.create_dataset("fashion_mnist", root, "test").images[:N_TEST]
    torch.manual_seed(seed)
    model = pixelgen.create_model("pixelcnn", in_channels=1, **recipe["model"]["hyperparameters"])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    warm = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    for step in range(steps):
        x = images[order[step * batch % len(images):][:batch]]  # (B, 1, 28, 28)
        loss = pixelgen.bits_per_dim(model(x), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        warm.step()
    model.eval()
    with torch.no_grad():
        nats = sum(pixelgen.nll_nats(model(x), x).sum().item() for x in test.split(250))
    return {"bits_per_dim": nats / (test.numel() * math.log(2)), "seconds": time.perf_counter() - start}


def one(side: str, seed: int, steps: int, clip: float | None) -> dict:
    torch.set_num_threads(1)
    figures = pipeline(seed, steps) if side == "pipeline" else plain_loop(seed, steps, clip)
    return {"side": side, "seed": seed, "steps": steps, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sides", nargs="+", default=["pipeline", "loop"], choices=["pipeline", "loop"])
    parser.add_argument("--loop-clip", type=float, default=None, help="clip the loop's gradients too")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", help="also append each result as a JSON line to this file")
    args = parser.parse_args()
    tasks = [(side, seed) for seed in args.seeds for side in args.sides]
    results = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [pool.submit(one, side, seed, args.steps, args.loop_clip) for side, seed in tasks]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results.append(result)
            print(json.dumps(result), flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(result) + "\n")
    print(f"\n{args.steps} steps, test bits/dim on the first {N_TEST} test images")
    print("| side | seeds | bits/dim per seed | mean | sd | seconds (mean) |")
    print("|---|---|---|---:|---:|---:|")
    for side in args.sides:
        mine = sorted((r for r in results if r["side"] == side), key=lambda r: r["seed"])
        bpd = [r["bits_per_dim"] for r in mine]
        sd = statistics.stdev(bpd) if len(bpd) > 1 else float("nan")
        print(f"| {side} | {' '.join(str(r['seed']) for r in mine)} | {' '.join(f'{b:.3f}' for b in bpd)} "
              f"| {statistics.mean(bpd):.4f} | {sd:.4f} | {statistics.mean(r['seconds'] for r in mine):.0f} |")


if __name__ == "__main__":
    main()
