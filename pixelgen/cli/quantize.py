"""``pixelgen quantize``: write a smaller checkpoint (int8, float16 or bfloat16 weights)."""

from __future__ import annotations

import argparse

from pixelgen.study.from_checkpoint import quantize_checkpoint


def cmd_quantize(args: argparse.Namespace) -> int:
    result = quantize_checkpoint(args.checkpoint, args.to, args.out, weights=args.weights, force=args.force)
    ratio = result["bytes_after"] / result["bytes_before"]
    print(f"{result['out']}: {result['to']}, {result['bytes_after']:,} bytes = {ratio:.1%} of "
          f"{result['checkpoint']} ({result['bytes_before']:,} bytes)")
    print(f"  {result['weights']} weights, {result['scheme']}")
    return 0
