"""``pixelgen eval``: NLL and bits/dim of a checkpoint on a data split."""

from __future__ import annotations

import argparse
import json

from pixelgen.study.from_checkpoint import evaluate_checkpoint


def cmd_eval(args: argparse.Namespace) -> int:
    figures = evaluate_checkpoint(
        args.checkpoint, args.split, data_root=args.data_root, limit=args.limit,
        accelerator=args.accelerator, weights=args.weights,
    )
    if args.json:
        print(json.dumps(figures))
        return 0
    per_channel = ", ".join(f"{v:.4f}" for v in figures["bits_per_dim_per_channel"])
    print(f"{figures['checkpoint']} ({figures['model']}, epoch {figures['epoch']})")
    print(f"  split      {figures['split']} ({figures['n_images']} images)")
    print(f"  NLL        {figures['nll_nats']:.2f} nats/image")
    print(f"  bits/dim   {figures['bits_per_dim']:.4f} (per colour: {per_channel})")
    return 0
