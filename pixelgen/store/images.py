"""Images as files: PNG grids of samples, and images read for completion.

::

    save_grid(images, path, n_levels)               a PNG grid, upscaled for small images
    read_image(path, channels, n_levels)            an image file as uint8 (C, H, W)
    to_display / from_display                       a model's levels <-> 0..255 pixel values

A model predicts ``n_levels`` values per sub-pixel (256, or 2 for binary data). Images are
stored in archives as those values (a binary model's samples are 0/1); image files hold
0..255, so PNGs written here map level ``k`` to ``round(255 k / (n_levels - 1))`` (0/1 to
0/255) and images read for completion are mapped back to the nearest level.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.Image import DecompressionBombError, DecompressionBombWarning
from torch import Tensor

from pixelgen.limits import MAX_IMAGE_SIDE
from pixelgen.nn.blocks import N_LEVELS
from pixelgen.sampling import SamplingError
from pixelgen.store.files import atomic_writer, read_regular

#: Grids of small images are upscaled by a whole factor so that each image is at least this wide.
MIN_GRID_IMAGE_PX = 112


def to_display(images: Tensor, n_levels: int = N_LEVELS) -> Tensor:
    """A model's values 0..n_levels-1 as uint8 pixel values 0..255 (0/1 -> 0/255; 256
    levels unchanged)."""
    if n_levels == N_LEVELS:
        return images
    return (images.float() * (255 / (n_levels - 1))).round().to(torch.uint8)


def from_display(images: Tensor, n_levels: int = N_LEVELS) -> Tensor:
    """Pixel values 0..255 as the nearest of a model's levels 0..n_levels-1 (0..127 -> 0,
    128..255 -> 1 for two levels; 256 levels unchanged)."""
    if n_levels == N_LEVELS:
        return images
    return torch.floor(images.float() * ((n_levels - 1) / 255) + 0.5).to(torch.uint8)


def read_image(path: str | os.PathLike, channels: int, n_levels: int = N_LEVELS) -> Tensor:
    """An image file (PNG, JPEG) as uint8 ``(C, H, W)``, converted to grey (``C = 1``) or
    RGB (``C = 3``) and to a model's ``n_levels`` (see :func:`from_display`).

    An image with a side over :data:`~pixelgen.limits.MAX_IMAGE_SIDE` (the largest that is
    sampled), or over PIL's decompression-bomb limit, is refused before it is decoded; so is
    anything but a regular file (a FIFO, a device: :func:`~pixelgen.store.files.read_regular`)."""
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise SamplingError(f"completion needs a grey or RGB model, this one has {channels} colours")
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; refuse those images too
            warnings.simplefilter("error", DecompressionBombWarning)
            with Image.open(io.BytesIO(read_regular(path))) as image:
                if max(image.size) > MAX_IMAGE_SIDE:
                    width, height = image.size
                    raise SamplingError(f"{path}: the image to complete is {height}x{width}; "
                                        f"sides of at most {MAX_IMAGE_SIDE} can be sampled")
                pixels = np.asarray(image.convert(modes[channels]), dtype=np.uint8)  # (H, W[, C])
    except (DecompressionBombError, DecompressionBombWarning) as exc:
        raise SamplingError(f"{path}: refused as a decompression bomb: {exc}") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise SamplingError(f"{path}: cannot read the image to complete: {exc}") from None
    image = torch.from_numpy(pixels.reshape(*pixels.shape[:2], channels).copy()).permute(2, 0, 1)  # (C, H, W)
    return from_display(image, n_levels)


def check_image_path(path: str | os.PathLike) -> Path:
    """``path`` as a file an image can be written to: not a folder, with an extension."""
    path = Path(path)
    if path.is_dir():
        raise SamplingError(f"{path}: is a folder; name a PNG file, e.g. {path / 'samples.png'}")
    if not path.suffix:
        raise SamplingError(f"{path}: the PNG file name needs an extension, e.g. {path}.png")
    return path


def save_grid(images: Tensor, path: str | os.PathLike, n_levels: int = N_LEVELS) -> Path:
    """Write uint8 images ``(n, C, H, W)`` of values 0..n_levels-1 as one PNG grid, about
    square, atomically; the values are mapped to 0..255 (:func:`to_display`: a binary
    model's 0/1 become black and white).

    Small images are upscaled by a whole factor (nearest neighbour) so that each is at
    least :data:`MIN_GRID_IMAGE_PX` pixels wide; grey stays grey.
    """
    from torchvision.utils import make_grid  # here: importing torchvision costs about a second

    path = check_image_path(path)
    images = to_display(images, n_levels)
    scale = max(1, math.ceil(MIN_GRID_IMAGE_PX / images.shape[-1]))
    big = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)  # (n, C, sH, sW)
    grid = make_grid(big, nrow=math.ceil(math.sqrt(len(images))), padding=scale, pad_value=255)  # (3, H', W')
    pixels = grid[0] if images.shape[1] == 1 else grid.permute(1, 2, 0)  # (H', W') or (H', W', 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        Image.fromarray(pixels.cpu().numpy()).save(handle, format="PNG")
    return path
