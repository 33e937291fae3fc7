"""Lossless image coding with any pixelgen model: the model's likelihood drives an entropy coder.

An autoregressive model gives, for every sub-pixel in its generation order, a probability
for each of its ``n_levels`` values given the sub-pixels before it: its likelihood's
(:mod:`pixelgen.nn.likelihoods`: a softmax per sub-pixel for the categorical; for the
logistic mixture, a mixture over the pixel, each colour given the earlier ones). A range
coder (``constriction.stream.queue``, over ``constriction.stream.model.Categorical``) spends
about ``-log2 p`` bits on the value that occurs, so an image costs about its NLL in bits,
and the model is the codec (Pixel RNN, section 1: the likelihood is a code length)::

    compress(model, images) -> bytes       uint8 (N, C, H, W), values 0..n_levels-1
    decompress(model, data) -> images      the same tensor, bit for bit

Encoder and decoder must compute the very same probabilities, bit for bit: one rounding
difference gives the range coder a different table and every later pixel comes out wrong.
So both run one function, ``_code_batches``, which walks the sub-pixels with the sampler's
own loop (:func:`pixelgen.sampling.fill_pixels`: the model's cached state, its generation
order, the outputs computed once per pixel for a per-pixel likelihood) over a buffer that
starts at zero and receives each sub-pixel once it is coded: the encoder writes the true
value there, the decoder the value it decoded, so the model and the likelihood see the
same inputs on both sides. The images go through in batches of the same size (recorded
in the file), with one torch thread and torch's deterministic algorithms, on the CPU, with
the model's weights as stored (float32). The probabilities are the likelihood's own, in
float64 (:func:`subpixel_probabilities`, the one place they are computed); constriction
turns each table into integer frequencies the same way on both sides and gives every value
a frequency of at least one, so a value the model deems impossible is still coded (at a
high price), never refused.

The container (``.pgz``), little-endian::

    magic            8 bytes   b"\\x89PGZ\\r\\n\\x1a\\n"
    format version   uint16    2
    header length    uint32    L
    header           L bytes   binary (see below)
    payload          4k bytes  the range coder's 32-bit words
    crc32            uint32    zlib.crc32 of everything before it

The header holds what must match on the decoding machine and what the images are, about
155 bytes: ``n_levels``, ``shape`` (C, H, W) as four uint16, ``count`` (N) and
``batch_size`` as two uint32, ``weights_sha256``
(:func:`pixelgen.store.checkpoint.weights_digest` of the model's state dict) and
``pixels_sha256`` (SHA-256 of the uint8 images, checked after decoding) as 32 bytes each,
a byte saying whether ``labels`` follow; then ``pixelgen``, ``torch`` and ``constriction``
(the versions that coded it), ``device`` ("cpu"), ``dtype`` (of the weights), ``model``
(its registered name) and ``likelihood`` (its name and options as compact JSON,
:func:`likelihood_entry`), each one byte of length and UTF-8; then a class-conditional
model's ``labels``, N uint32. :func:`read_container` gives it back as a dict of those
keys (digests in hex, ``shape`` and ``labels`` as lists, ``labels`` None when absent). A
file from another model or likelihood, another version of any of the three libraries, or a
damaged or truncated file is refused with one line (:class:`CodecError`): never wrong pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import constriction
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from pixelgen.errors import PixelgenError
from pixelgen.limits import MAX_COMPRESSED_BYTES, MAX_IMAGES_NPY_BYTES
from pixelgen.nn.blocks import likelihood_of, n_levels_of
from pixelgen.nn.likelihoods import Likelihood
from pixelgen.sampling import channels_of, check_labels, fill_pixels, sampler_state, visiting_order
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.checkpoint import weights_digest
from pixelgen.store.files import atomic_writer, read_regular
from pixelgen.store.images import read_image, to_display
from pixelgen.store.runs import check_output_file

MAGIC = b"\x89PGZ\r\n\x1a\n"
FORMAT_VERSION = 2  # 1: the same fields as JSON (about 370 bytes of header, not read any more)
_PREFIX = struct.Struct("<8sHI")  # magic, format version, header length
_CRC = struct.Struct("<I")
#: n_levels, C, H, W, count, batch_size, weights_sha256, pixels_sha256, labels follow (0 or 1).
_FIXED = struct.Struct("<4H2I32s32sB")
#: The header's texts, in their order after the fixed part (one byte of length each).
_TEXTS = ("pixelgen", "torch", "constriction", "device", "dtype", "model", "likelihood")
_SIDE = 2 ** 16 - 1  # the largest C, H, W and n_levels a uint16 holds
#: Images coded together by default (one batch of the cached sampler).
DEFAULT_BATCH_SIZE = 16
#: Header keys that must equal the decoding side's own values.
_ENVIRONMENT = ("pixelgen", "torch", "constriction", "device", "dtype")


class CodecError(PixelgenError):
    """Images that cannot be coded, or a compressed file that cannot be decoded exactly."""


def subpixel_probabilities(likelihood: Likelihood, at_pixel: Tensor, x_pixel: Tensor, c: int) -> np.ndarray:
    """The table colour ``c`` of a pixel is coded with: float64 ``(n, n_levels)``, the
    likelihood's own :meth:`~pixelgen.nn.likelihoods.Likelihood.subpixel_probabilities`
    at temperature 1 (what the sampler draws from).

    Args:
        likelihood: the model's likelihood (:func:`~pixelgen.nn.blocks.likelihood_of`).
        at_pixel: the likelihood's outputs at the pixel (for the categorical the logits
            ``(n, n_levels, C)``, for the logistic mixture ``(n, P)``).
        x_pixel: the pixel's values ``(n, C)`` so far: the colours before ``c`` are known
            (a per-pixel likelihood's means depend on them) and the rest are 0.
        c: the colour.
    """
    return likelihood.subpixel_probabilities(at_pixel, x_pixel, c).to(torch.float64).numpy()


def likelihood_entry(likelihood: Likelihood) -> dict[str, Any]:
    """The header's ``likelihood``: ``{"name": ..., **options}`` as JSON gives it back."""
    return json.loads(json.dumps({"name": likelihood.name, **likelihood.options()}, sort_keys=True))


def _library_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _environment(model: nn.Module) -> dict[str, str]:
    """What must be the same where a file is decoded as where it was coded."""
    parameter = next(model.parameters(), None)
    return {"pixelgen": _library_version("pixelgen"), "torch": torch.__version__,
            "constriction": _library_version("constriction"), "device": "cpu",
            "dtype": str(parameter.dtype).removeprefix("torch.") if parameter is not None else "none"}


@contextlib.contextmanager
def _deterministic(model: nn.Module) -> Iterator[None]:
    """One torch thread, deterministic algorithms, eval mode, no gradients; restored after."""
    threads, was_training = torch.get_num_threads(), model.training
    strict = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)  # a reduction split over threads may round differently
    torch.use_deterministic_algorithms(True)
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict, warn_only=warn_only)
        model.train(was_training)


Code = Callable[[np.ndarray, int, int, int, int], Tensor]  # (probabilities, start, c, i, j) -> values (n,)


def _code_batches(model: nn.Module, shape: tuple[int, int, int], count: int, batch_size: int,
                  labels: Tensor | None, code: Code, progress: bool) -> Tensor:
    """Walk every sub-pixel of ``count`` images of ``shape`` (C, H, W) in batches, in the
    model's generation order, asking ``code`` for each sub-pixel's values given its
    probabilities; the encoder's and the decoder's one loop. ``labels`` ``(count,)``: the
    classes of a class-conditional model's images, else None.

    Returns:
        uint8 ``(count, C, H, W)``: the values ``code`` gave.
    """
    channels, height, width = shape
    order = visiting_order(model, channels, height, width)
    likelihood = likelihood_of(model)
    bar = tqdm(total=count * height, unit="row", file=sys.stderr, disable=not progress,
               desc=f"coding {count}x{channels}x{height}x{width}")
    batches = []
    with _deterministic(model), bar:
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            x = torch.zeros(n, channels, height, width, dtype=torch.uint8)  # what the decoder knows so far
            batch_labels = None if labels is None else labels[start:start + n]
            state = sampler_state(model, "fast", n, height, width, batch_labels)

            def pick(outputs: Tensor, x_pixel: Tensor, c: int, i: int, j: int, start: int = start) -> Tensor:
                return code(subpixel_probabilities(likelihood, outputs, x_pixel, c), start, c, i, j)

            for pixels in order:
                fill_pixels(state, likelihood, x, pixels, pick)  # the sampler's loop, coding instead of drawing
                bar.update(n)
            batches.append(x)
    return torch.cat(batches)


def _check_images(model: nn.Module, images: Tensor) -> None:
    channels, n_levels = channels_of(model), n_levels_of(model)
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        what = getattr(images, "dtype", type(images).__name__)
        raise CodecError(f"images must be a uint8 tensor (N, C, H, W), got {what} of shape "
                         f"{tuple(getattr(images, 'shape', ()))}")
    if images.shape[1] != channels:
        raise CodecError(f"the images have {images.shape[1]} colours, the model {channels}")
    if 0 in images.shape:
        raise CodecError(f"no images to code: shape {tuple(images.shape)}")
    if max(images.shape[1:]) > _SIDE:
        raise CodecError(f"images of at most {_SIDE} pixels a side are coded, got {tuple(images.shape[1:])}")
    if int(images.max()) >= n_levels:
        raise CodecError(f"the images hold the value {int(images.max())}, but the model codes 0..{n_levels - 1}; "
                         f"map them to its levels first (pixelgen.store.images.from_display)")


def _model_on_cpu(model: nn.Module) -> nn.Module:
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device.type != "cpu":
        raise CodecError("the codec runs on the CPU (the same arithmetic on both ends); pass model.cpu()")
    return model


def compress(model: nn.Module, images: Tensor, *, labels: Tensor | int | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> bytes:
    """Code ``images`` losslessly with ``model``'s likelihood.

    Args:
        model: a pixelgen model on the CPU.
        images: uint8 ``(N, C, H, W)``, values 0..n_levels-1 (the model's levels).
        labels: ``(N,)`` classes, or one for all, for a class-conditional model (stored
            in the file, so the decoder needs only the model and the bytes).
        batch_size: images coded together (the decoder uses the same, from the file).
        progress: a progress bar over rows on stderr.

    Returns:
        the container: a header (see the module docstring) and the range coder's words;
        its payload is about the images' NLL in bits / 8.
    """
    model = _model_on_cpu(model)
    _check_images(model, images)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size < 2 ** 32:
        raise CodecError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = images.cpu().contiguous()
    labels = check_labels(model, labels, len(images), torch.device("cpu"))
    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)  # fast quantization, never a zero frequency

    def encode(probabilities: np.ndarray, start: int, c: int, i: int, j: int) -> Tensor:
        values = images[start:start + len(probabilities), c, i, j]  # (n,)
        encoder.encode(values.numpy().astype(np.int32), family, probabilities)
        return values

    _code_batches(model, tuple(images.shape[1:]), len(images), batch_size, labels, encode, progress)
    header = {**_environment(model), "model": _model_name(model),
              "likelihood": likelihood_entry(likelihood_of(model)), "weights_sha256": weights_digest(model.state_dict()),
              "shape": list(images.shape[1:]), "n_levels": n_levels_of(model), "count": len(images),
              "batch_size": batch_size, "labels": None if labels is None else labels.tolist(),
              "pixels_sha256": _pixels_digest(images)}
    return _container(header, encoder.get_compressed())


def _pixels_digest(images: Tensor) -> str:
    """SHA-256 of uint8 images ``(N, C, H, W)`` as contiguous bytes."""
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "pixelgen_config", None)
    return config["name"] if isinstance(config, dict) and "name" in config else type(model).__name__


def _container(header: dict[str, Any], words: np.ndarray) -> bytes:
    blob = header_bytes(header)
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob + words.astype("<u4").tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def _text(value: str | dict[str, Any]) -> str:
    """A header text: a string as it is, the likelihood's entry as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def header_bytes(header: dict[str, Any]) -> bytes:
    """The binary header (the module docstring's layout) of a header dict, as
    :func:`read_container` gives it back."""
    labels = header["labels"]
    try:
        texts = [_text(header[key]).encode() for key in _TEXTS]
    except TypeError as exc:  # a third-party likelihood's option that JSON cannot hold
        raise CodecError(f"the likelihood's options cannot be written into a .pgz header ({exc})") from None
    if any(len(text) > 255 for text in texts):
        raise CodecError(f"a header text is over 255 bytes: {[key for key, t in zip(_TEXTS, texts) if len(t) > 255]}")
    try:
        fixed = _FIXED.pack(header["n_levels"], *header["shape"], header["count"], header["batch_size"],
                            bytes.fromhex(header["weights_sha256"]), bytes.fromhex(header["pixels_sha256"]),
                            labels is not None)
    except struct.error as exc:
        raise CodecError(f"the header's numbers do not fit the .pgz format ({exc})") from None
    return (fixed + b"".join(bytes([len(text)]) + text for text in texts)
            + (b"" if labels is None else np.asarray(labels, dtype="<u4").tobytes()))


def read_container(data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """The header and the words of a ``.pgz`` container, checked whole (magic, format
    version, crc32, header entries); :class:`CodecError` names what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"compressed data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise CodecError("not a pixelgen compressed file (no .pgz magic number)")
    if len(data) < _PREFIX.size + _CRC.size:
        raise CodecError(f"the compressed file is truncated ({len(data)} bytes)")
    _, file_version, header_length = _PREFIX.unpack_from(data)
    if file_version != FORMAT_VERSION:
        raise CodecError(f"compressed file format version {file_version}; this pixelgen reads version {FORMAT_VERSION}")
    if _CRC.unpack_from(data, len(data) - _CRC.size)[0] != zlib.crc32(data[:-_CRC.size]):
        raise CodecError("the compressed file is damaged or truncated (its crc32 does not match)")
    payload = len(data) - _PREFIX.size - header_length - _CRC.size
    if payload < 0 or payload % 4:
        raise CodecError("the compressed file is damaged (its header length does not fit the file)")
    header = _parse_header(data[_PREFIX.size:_PREFIX.size + header_length])
    words = np.frombuffer(data, dtype="<u4", count=payload // 4, offset=_PREFIX.size + header_length)
    return header, words.astype(np.uint32)


def _parse_header(blob: bytes) -> dict[str, Any]:
    """The header dict of a binary header; every byte must belong to an entry, every
    number be positive and every text UTF-8."""
    try:
        n_levels, *shape, count, batch_size, weights, pixels, has_labels = _FIXED.unpack_from(blob)
        header: dict[str, Any] = {"n_levels": n_levels, "shape": shape, "count": count, "batch_size": batch_size,
                                  "weights_sha256": weights.hex(), "pixels_sha256": pixels.hex()}
        at = _FIXED.size
        for key in _TEXTS:
            length = blob[at]
            text = blob[at + 1:at + 1 + length]
            if len(text) != length:
                raise IndexError(key)
            header[key] = json.loads(text) if key == "likelihood" else text.decode()
            at += 1 + length
    except (struct.error, IndexError, UnicodeDecodeError, json.JSONDecodeError):
        raise CodecError("the compressed file's header lacks entries or holds wrong types") from None
    entry = header["likelihood"]
    if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
        raise CodecError("the compressed file's header lacks entries or holds wrong types")
    rest = blob[at:]
    if min(n_levels, *shape, count, batch_size) < 1 or has_labels > 1 or len(rest) != 4 * count * has_labels:
        raise CodecError("the compressed file's header lacks entries or holds wrong types")
    header["labels"] = np.frombuffer(rest, dtype="<u4").tolist() if has_labels else None
    return header


def _described(entry: dict[str, Any]) -> str:
    """A header's ``likelihood`` in words: ``logistic_mixture (n_mixtures=3)``."""
    options = ", ".join(f"{key}={value!r}" for key, value in entry.items() if key != "name")
    return f"{entry['name']} ({options})" if options else entry["name"]


def _check_model(model: nn.Module, header: dict[str, Any]) -> None:
    """Refuse to decode with anything but the model and libraries that coded the file."""
    here = _environment(model)
    differ = [f"{key} {header[key]} (here {here[key]})" for key in _ENVIRONMENT if header[key] != here[key]]
    if differ:
        raise CodecError(f"coded with {', '.join(differ)}: decode it where these match")
    likelihood = likelihood_entry(likelihood_of(model))
    if header["likelihood"] != likelihood:
        raise CodecError(f"coded with the {_described(header['likelihood'])} likelihood, but this model's is "
                         f"{_described(likelihood)}; use the checkpoint that compressed it")
    if header["weights_sha256"] != weights_digest(model.state_dict()):
        raise CodecError(f"coded with another model: {header['model']} with weights "
                         f"{header['weights_sha256'][:12]}..., not this {_model_name(model)} with weights "
                         f"{weights_digest(model.state_dict())[:12]}...; use the checkpoint that compressed it")
    if header["shape"][0] != channels_of(model) or header["n_levels"] != n_levels_of(model):
        raise CodecError("the file's colours or levels do not fit this model")


def decompress(model: nn.Module, data: bytes, *, progress: bool = False) -> Tensor:
    """The images :func:`~pixelgen.study.codec.compress` coded into ``data``, bit for bit: uint8 ``(N, C, H, W)``.

    Raises:
        CodecError: another model or library version, a damaged or truncated file, or
            pixels whose SHA-256 differs from the recorded one.
    """
    model = _model_on_cpu(model)
    header, words = read_container(data)
    _check_model(model, header)
    decoder = constriction.stream.queue.RangeDecoder(words)
    family = constriction.stream.model.Categorical(perfect=False)

    def decode(probabilities: np.ndarray, start: int, c: int, i: int, j: int) -> Tensor:
        try:
            values = decoder.decode(family, probabilities)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise CodecError(f"the compressed words cannot be decoded ({exc})") from None
        return torch.from_numpy(values.astype(np.uint8))

    shape = tuple(header["shape"])
    labels = check_labels(model, header["labels"], header["count"], torch.device("cpu"))
    images = _code_batches(model, shape, header["count"], header["batch_size"], labels, decode, progress)
    if _pixels_digest(images) != header["pixels_sha256"]:
        raise CodecError("the decoded pixels do not match the recorded checksum (the model or its arithmetic "
                         "differs from the coding side's)")
    return images


# --------------------------------------------------------------------------- files


def read_images(paths: Sequence[str | os.PathLike], channels: int, n_levels: int) -> Tensor:
    """Images to code, from PNG files of one size or one ``.npy`` array, as uint8
    ``(N, C, H, W)`` in the model's levels.

    A ``.npy`` holds the model's values (0..n_levels-1, as archives store samples),
    ``(N, C, H, W)``, or ``(N, H, W)`` for grey. Image files hold 0..255 and are mapped to
    the levels (:func:`~pixelgen.store.images.from_display`), which must lose nothing.
    """
    if len(paths) == 1 and Path(paths[0]).suffix == ".npy":
        return _read_npy(Path(paths[0]), channels)
    images = []
    for path in paths:
        _check_mode(path, channels)
        image = read_image(path, channels, n_levels)  # (C, H, W)
        if images and image.shape != images[0].shape:
            raise CodecError(f"{path}: {tuple(image.shape[1:])}, but {paths[0]} is {tuple(images[0].shape[1:])}; "
                             f"images coded together must have one size")
        if not torch.equal(to_display(image, n_levels), read_image(path, channels, 256)):
            raise CodecError(f"{path}: holds values the model's {n_levels} levels cannot keep; it cannot be coded "
                             f"losslessly with this model")
        images.append(image)
    return torch.stack(images)


#: The image modes (PIL's) a grey and an RGB model code without converting colours.
LOSSLESS_MODES = {1: ("L", "1"), 3: ("RGB",)}


def _check_mode(path: str | os.PathLike, channels: int) -> None:
    """Refuse an image file whose colours the model would have to convert (an RGB photo
    for a grey model, a grey one or one with alpha for an RGB model): that is not lossless."""
    try:
        with Image.open(io.BytesIO(read_regular(path))) as image:  # no FIFO or device: it would block
            mode = image.mode
    except OSError as exc:
        raise CodecError(f"{path}: cannot read the image ({exc})") from None
    if mode not in LOSSLESS_MODES.get(channels, ()):
        wanted = {1: "grey (L)", 3: "RGB"}.get(channels, f"{channels}-colour")
        raise CodecError(f"{path}: PIL mode {mode}; this model codes {wanted} images, and converting "
                         f"would not be lossless: convert it first, or pass a .npy")


def _read_npy(path: Path, channels: int) -> Tensor:
    try:  # read whole, as a regular file of bounded size: a FIFO or a device would block np.load
        array = np.load(io.BytesIO(read_regular(path, MAX_IMAGES_NPY_BYTES)), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CodecError(f"{path}: cannot read it as a .npy array ({exc})") from None
    if array.ndim == 3 and channels == 1:
        array = array[:, None]
    if array.dtype != np.uint8 or array.ndim != 4:
        raise CodecError(f"{path}: expected a uint8 array (N, C, H, W), got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


def compress_files(checkpoint: str | os.PathLike, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   batch_size: int = DEFAULT_BATCH_SIZE, label: int | None = None, weights: str = "auto",
                   force: bool = False, progress: bool = False) -> dict[str, Any]:
    """What ``pixelgen compress`` does: code image files with a checkpoint's model into ``out``
    (``label``: the class of every image, for a class-conditional model).

    Returns:
        ``{"out", "count", "shape", "bytes", "raw_bytes"}`` (raw: one byte per sub-pixel).
    """
    out = check_output_file(out, force=force, flag="-o")
    model = ckpt_io.model_from_checkpoint(ckpt_io.load_checkpoint(checkpoint), weights)
    images = read_images(inputs, channels_of(model), n_levels_of(model))
    data = compress(model, images, labels=label, batch_size=batch_size, progress=progress)
    with atomic_writer(out) as handle:
        handle.write(data)
    return {"out": str(out), "count": len(images), "shape": tuple(images.shape[1:]), "bytes": len(data),
            "raw_bytes": images.numel()}


def decompress_file(checkpoint: str | os.PathLike, path: str | os.PathLike, out: str | os.PathLike, *,
                    weights: str = "auto", force: bool = False, progress: bool = False) -> dict[str, Any]:
    """What ``pixelgen decompress`` does: decode ``path`` with a checkpoint's model into
    ``out``: a ``.npy`` file (the model's values) or a folder of PNGs ``000000.png``, ...

    Returns:
        ``{"out", "count", "shape", "files"}``.
    """
    out = Path(out)
    if out.suffix == ".npy":
        check_output_file(out, force=force, flag="-o")
    try:
        data = read_regular(path, MAX_COMPRESSED_BYTES)
    except OSError as exc:
        raise CodecError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    model = ckpt_io.model_from_checkpoint(ckpt_io.load_checkpoint(checkpoint), weights)
    header, _ = read_container(data)  # refused before the slow part
    names = [out / f"{k:06d}.png" for k in range(header["count"])] if out.suffix != ".npy" else [out]
    for name in names:
        check_output_file(name, force=force, flag="-o")
    images = decompress(model, data, progress=progress)
    if out.suffix == ".npy":
        with atomic_writer(out) as handle:
            np.save(handle, images.numpy())
    else:
        _write_pngs(images, names, n_levels_of(model))
    return {"out": str(out), "count": len(images), "shape": tuple(images.shape[1:]), "files": len(names)}


def _write_pngs(images: Tensor, names: list[Path], n_levels: int) -> None:
    names[0].parent.mkdir(parents=True, exist_ok=True)
    for image, name in zip(to_display(images, n_levels), names):
        pixels = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)  # (H, W) or (H, W, C)
        with atomic_writer(name) as handle:
            Image.fromarray(pixels.numpy()).save(handle, format="PNG")
