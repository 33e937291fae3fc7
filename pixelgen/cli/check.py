"""``pixelgen check``: prove a registered model autoregressive by its Jacobian.

The other commands each have their own module beside this one (see
:data:`pixelgen.cli.COMMAND_MODULES`), so that each loads only what it uses; every one is a
thin layer over the library, so that everything it does can be done from Python too.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pixelgen import registry
from pixelgen.errors import PixelgenError, progress_bar_enabled
from pixelgen.nn.blocks import generation_order_of, likelihood_of, raster_order
from pixelgen.recipe import parse_value
from pixelgen.registry.causality import allowed_dependencies, check_causality, narrow_model


def _parse_assignments(items: Sequence[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PixelgenError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(value.strip())
    return out


def field_picture(support, channels: int, i: int, j: int, order=None) -> str:
    """ASCII map of the pixels that output pixel ``(i, j)`` depends on (any colour).

    ``#`` seen, ``.`` earlier but not seen, ``x`` the pixel itself, blank: later, in
    ``order`` (the model's generation order ``(C, H, W)``; ``None``: raster order).
    """
    seen = support[:, i, j].any(dim=0).any(dim=0)  # (H, W) over output and input colours
    height, width = seen.shape
    rank = (order if order is not None else raster_order(channels, height, width))[0]  # (H, W): each pixel's turn
    lines = []
    for r in range(height):
        row = []
        for c in range(width):
            if (r, c) == (i, j):
                row.append("x")
            elif rank[r, c] > rank[i, j]:
                row.append(" ")
            else:
                row.append("#" if seen[r, c] else ".")
        lines.append("    " + " ".join(row).rstrip())
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    hyper = _parse_assignments(args.hp, "--hp")
    declared = registry.get_model_spec(args.model).defaults()
    for channels in args.channels:
        if args.full_width:
            model, narrowed = registry.create_model(args.model, **{**hyper, "in_channels": channels}), {}
        else:
            model, narrowed = narrow_model(args.model, channels, hyper)
        support = check_causality(model, channels, args.height, args.width, progress=progress_bar_enabled())
        order = generation_order_of(model, channels, args.height, args.width)  # (C, H, W)
        per_pixel = likelihood_of(model).per_pixel  # every output of a pixel sees earlier pixels only
        allowed = int(allowed_dependencies(channels, args.height, args.width, order, per_pixel=per_pixel).sum())
        print(
            f"{args.model}: causal for C={channels} at {args.height}x{args.width}: "
            f"{int(support.sum())} of {allowed} allowed sub-pixel dependencies seen, none forbidden",
            flush=True,
        )
        if narrowed:
            widths = ", ".join(f"{key}={value} (declared {declared[key]})" for key, value in narrowed.items())
            print(f"  at narrowed widths {widths}; every other hyperparameter as declared or given", flush=True)
    i, j = args.height - 1, args.width // 2
    print(f"  receptive field of pixel ({i}, {j}) ('#' seen, '.' earlier but unseen):")
    print(field_picture(support, channels, i, j, order))
    return 0
