"""``pixelgen compress`` and ``pixelgen decompress``: lossless image coding with a checkpoint's model."""

from __future__ import annotations

import argparse

from pixelgen.errors import progress_bar_enabled
from pixelgen.study.codec import compress_files, decompress_file


def cmd_compress(args: argparse.Namespace) -> int:
    result = compress_files(args.checkpoint, args.images, args.out, batch_size=args.batch_size,
                            label=args.label, weights=args.weights, force=args.force, progress=progress_bar_enabled())
    bits = 8 * result["bytes"] / result["raw_bytes"]
    print(f"{result['out']}: {result['count']} images {result['shape']}, {result['bytes']:,} bytes "
          f"({bits:.3f} bits/dim with the header; raw {result['raw_bytes']:,} bytes)")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    result = decompress_file(args.checkpoint, args.compressed, args.out, weights=args.weights, force=args.force,
                             progress=progress_bar_enabled())
    print(f"{result['out']}: {result['count']} images {result['shape']}, decoded bit for bit")
    return 0
