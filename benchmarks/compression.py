"""Lossless coding with a model's likelihood against PNG, WebP lossless and JPEG XL lossless.

    python3 benchmarks/compression.py --checkpoint runs/fmnist/best.ckpt --images 1000
    python3 benchmarks/compression.py --checkpoint runs/natural_patches \\
        --images-from data/natural-patches/test          # a folder of PNGs, or a .npy
    python3 benchmarks/compression.py --checkpoint A.ckpt --checkpoint B.ckpt --json

For each checkpoint (a ``.ckpt`` file, or a run folder: its best.ckpt), the images are the
first ``--images`` of its data set's test split (or of ``--images-from``), and each coder
is measured on the whole set and per image:

* model NLL / 8: the images' negative log2-likelihood under the model (one full forward
  pass, float64 log-softmax), the size an ideal entropy coder would reach;
* pgz payload and pgz file: :func:`pixelgen.compress` of the whole set as one file, and of
  each image alone (one file per image, header included: the per-image columns); the
  file must decode to the same pixels, which is checked;
* PNG (Pillow, ``optimize=True``), WebP lossless (imagecodecs, ``method=6``, level 100;
  grey images as RGB, since WebP has no grey mode) and JPEG XL lossless (imagecodecs,
  ``distance=0``, effort 10), each per image and on one mosaic of the whole set (the
  images tiled on a grid, empty cells black); every one is decoded and checked lossless.

The codec's encode and decode speed is images per second on one torch thread (the codec's
own setting), whole set, ``--batch-size`` images coded together. Needs the ``bench`` extra:
``pip install 'pixelgen[bench]'``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixelgen.data import load_data, stack_split
from pixelgen.errors import PixelgenError
from pixelgen.nn.blocks import call_model, n_classes_of, n_levels_of
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.images import to_display
from pixelgen.store.runs import final_checkpoint
from pixelgen.study.codec import DEFAULT_BATCH_SIZE, compress, decompress, read_container, read_images
from pixelgen.study.from_checkpoint import stored_run

try:
    import imagecodecs
except ImportError:
    imagecodecs = None

class BenchError(Exception):
    """What the benchmark refuses to go on with (one line on stderr, exit status 2)."""


INSTALL = "compression.py: error: needs imagecodecs (WebP, JPEG XL): pip install 'pixelgen[bench]'"
#: Bytes of a .pgz file around its header and payload: magic, version, header length, crc32.
FRAMING = 8 + 2 + 4 + 4


# --------------------------------------------------------------------------- the images


def checkpoint_path(text: str) -> Path:
    """A ``.ckpt`` file, or a run folder's best (else last) checkpoint."""
    path = Path(text)
    found = final_checkpoint(path) if path.is_dir() else path
    if found is None or not found.is_file():
        raise BenchError(f"{text}: no checkpoint there")
    return found


def test_images(state: dict[str, Any], path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of the checkpoint's test split: uint8 ``(n, C, H, W)``, labels ``(n,)``."""
    run = stored_run(state, path)
    run = attrs.evolve(run, data=attrs.evolve(run.data, limit_test=None))
    return stack_split(load_data(run)["test"], n)


def image_set(state: dict[str, Any], path: Path, model: torch.nn.Module, args: argparse.Namespace
              ) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """A description, the images ``(N, C, H, W)`` in the model's levels and their labels
    (None unless the model is class-conditional)."""
    if args.images_from:
        source = Path(args.images_from)
        files = [source] if source.suffix == ".npy" else sorted(source.glob("*.png"))
        if not files or not files[0].is_file():
            raise BenchError(f"{source}: no .npy there, nor PNG files in it")
        images = read_images(files, model.in_channels, n_levels_of(model))[:args.images]
        labels = None
        where = f"{source}"
    else:
        images, labels = test_images(state, path, args.images)
        where = f"{state['recipe']['data']['name']} test split"
    if n_classes_of(model) and labels is None:
        raise BenchError("a class-conditional model needs its data set's labels; leave out --images-from")
    return where, images, (labels if n_classes_of(model) else None)


# --------------------------------------------------------------------------- the coders


def nll_bits(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
    """Each image's negative log2-likelihood: float64 ``(N,)``, one forward pass per batch of 100."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 100):
            x = images[start:start + 100].long()
            logits = call_model(model, x, None if labels is None else labels[start:start + 100])  # (B, L, C, H, W)
            nats = F.cross_entropy(logits.double(), x, reduction="none").flatten(1).sum(1)  # (B,)
            out.append(nats.numpy() / math.log(2))
    return np.concatenate(out)


def pgz(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int,
        alone: int) -> dict[str, Any]:
    """The codec on the whole set (timed, and checked to decode exactly) and on the first
    ``alone`` images coded one per file."""
    start = time.perf_counter()
    data = compress(model, images, labels=labels, batch_size=batch_size)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decompress(model, data)
    decode_s = time.perf_counter() - start
    if not torch.equal(decoded, images):
        raise BenchError("the codec did not give back the same pixels")
    singles = [compress(model, images[k:k + 1], labels=None if labels is None else labels[k:k + 1])
               for k in range(alone)]
    return {"file": len(data), "payload": payload_bytes(data),
            "alone_file": [len(d) for d in singles], "alone_payload": [payload_bytes(d) for d in singles],
            "encode_images_per_s": len(images) / encode_s, "decode_images_per_s": len(images) / decode_s}


def payload_bytes(data: bytes) -> int:
    """The range coder's words in a .pgz file."""
    return 4 * len(read_container(data)[1])


def mosaic(pictures: np.ndarray) -> np.ndarray:
    """Pictures ``(N, H, W[, 3])`` tiled on a grid (a divisor of N columns where one keeps
    the grid within 1:4, else ceil(sqrt N), empty cells black): ``(rows*H, cols*W[, 3])``."""
    n = len(pictures)
    cols = max(c for c in range(1, math.isqrt(n) + 1) if n % c == 0)
    if n // cols > 4 * cols:
        cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * cols, *pictures.shape[1:]), dtype=np.uint8)
    grid[:n] = pictures
    height, width, *colours = pictures.shape[1:]
    grid = grid.reshape(rows, cols, height, width, *colours).swapaxes(1, 2)  # (rows, H, cols, W[, 3])
    return grid.reshape(rows * height, cols * width, *colours)


def png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def unpng(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def webp(picture: np.ndarray) -> bytes:
    rgb = picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=-1)  # WebP has no grey
    return imagecodecs.webp_encode(rgb, level=100, lossless=True, method=6)


def jpegxl(picture: np.ndarray) -> bytes:
    return imagecodecs.jpegxl_encode(picture, effort=10, distance=0, lossless=True)


#: name, encode, decode: each (H, W) grey or (H, W, 3) uint8 picture to bytes and back.
BASELINES: list[tuple[str, Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]] = [
    ("PNG (Pillow, optimize)", png, unpng),
    ("WebP lossless (method 6)", webp, imagecodecs.webp_decode if imagecodecs else None),
    ("JPEG XL lossless (effort 10)", jpegxl, imagecodecs.jpegxl_decode if imagecodecs else None),
]


def pictures_of(images: torch.Tensor, n_levels: int) -> np.ndarray:
    """The images as 0..255 pictures: ``(N, H, W)`` grey or ``(N, H, W, 3)``."""
    display = to_display(images, n_levels)  # (N, C, H, W)
    return display[:, 0].numpy() if display.shape[1] == 1 else display.permute(0, 2, 3, 1).contiguous().numpy()


def baseline(encode: Callable, decode: Callable, pictures: np.ndarray) -> dict[str, Any]:
    """Bytes of each picture alone and of their mosaic, every one checked lossless."""
    sizes = []
    for picture in [*pictures, mosaic(pictures)]:
        data = encode(picture)
        back = decode(data)
        if back.ndim == picture.ndim + 1:  # a grey picture given back as RGB
            back = back if (back == back[..., :1]).all() else back[..., :0]
            back = back[..., 0] if back.shape[-1] else back
        if not np.array_equal(back, picture):
            raise BenchError(f"{encode.__name__} was not lossless")
        sizes.append(len(data))
    return {"alone": sizes[:-1], "set": sizes[-1]}


# --------------------------------------------------------------------------- the table


def measure(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every coder's bytes on one checkpoint's image set, and the codec's speed."""
    state = ckpt_io.load_checkpoint(path)
    model = ckpt_io.model_from_checkpoint(state).eval()
    where, images, labels = image_set(state, path, model, args)
    alone = len(images) if args.alone is None else min(args.alone, len(images))
    codec = pgz(model, images, labels, args.batch_size, alone)
    nll = nll_bits(model, images, labels)
    pictures = pictures_of(images, n_levels_of(model))
    return {"checkpoint": str(path), "model": state["model"]["name"], "images": where, "count": len(images),
            "shape": list(images.shape[1:]), "alone": alone, "nll_bits": nll.tolist(), **codec,
            "baselines": {name: baseline(enc, dec, pictures) for name, enc, dec in BASELINES}}


def table(result: dict[str, Any]) -> str:
    """A markdown table of one :func:`measure` result."""
    n, alone, dims = result["count"], result["alone"], math.prod(result["shape"])
    nll_set = sum(result["nll_bits"]) / 8
    header = result["file"] - result["payload"] - FRAMING

    def row(name: str, whole: float, each: float) -> str:
        return (f"| {name} | {whole:,.0f} | {8 * whole / (n * dims):.3f} | {each:,.1f} | {8 * each / dims:.3f} | "
                f"{whole / nll_set:.3f} |")

    lines = [f"{result['model']} ({result['checkpoint']}) on {n} images of {result['images']}, "
             f"{'x'.join(map(str, result['shape']))} (raw {n * dims:,} bytes); per image: "
             f"{'each' if alone == n else f'the first {alone}'} coded alone", "",
             "| coder | whole set (bytes) | bits/dim | per image, mean (bytes) | bits/dim | set / NLL |",
             "|---|---:|---:|---:|---:|---:|",
             row("model NLL / 8", nll_set, nll_set / n),
             row("pgz payload", result["payload"], np.mean(result["alone_payload"])),
             row("pgz file (header included)", result["file"], np.mean(result["alone_file"]))]
    lines += [row(name, b["set"], np.mean(b["alone"])) for name, b in result["baselines"].items()]
    lines += ["", f"pgz: encode {result['encode_images_per_s']:.1f} images/s, decode "
              f"{result['decode_images_per_s']:.1f} images/s (one thread, batches of {result['batch_size']}); "
              f"header {header} bytes, framing {FRAMING}; file minus header and framing = NLL/8 "
              f"{(result['payload'] / nll_set - 1):+.2%}"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="a .ckpt file or a run folder")
    parser.add_argument("--images", type=int, default=1000, help="the first N images (default 1000)")
    parser.add_argument("--images-from", help="a folder of PNGs or a .npy instead of the test split")
    parser.add_argument("--alone", type=int, help="code only the first N images one per file (default: all)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)
    if imagecodecs is None:
        print(INSTALL, file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        results = [{**measure(checkpoint_path(c), args), "batch_size": args.batch_size} for c in args.checkpoint]
    except (BenchError, PixelgenError) as exc:
        print(f"compression.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=1) if args.json else "\n\n".join(map(table, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
