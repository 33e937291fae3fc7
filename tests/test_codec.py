"""Lossless coding with a model's likelihood (pixelgen.study.codec): bit-exact round trips for
every built-in model and a third-party one, a coded size that is the NLL, and a container
that refuses every damage, another model and another library version with one line."""

from __future__ import annotations

import doctest
import hashlib
import math
import pathlib
import re
import shlex
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from datafiles import write_tiny_mnist
from hypothesis import strategies as st

import pixelgen
from pixelgen.cli import main
from pixelgen.errors import PixelgenError
from pixelgen.recipe import recipe_from_dict, recipe_to_dict
from pixelgen.store.checkpoint import plain, save_checkpoint
from pixelgen.study import codec
from pixelgen.study.codec import CodecError, compress, decompress, read_container

TINY = dict(hidden_channels=6, n_layers=2, head_channels=16)
MULTISCALE = dict(small_n_layers=1, upsample_channels=6)


def tiny_model(name: str, channels: int, n_levels: int = 256, seed: int = 0, **hyperparameters) -> torch.nn.Module:
    torch.manual_seed(seed)
    extra = MULTISCALE if name == "multiscale" else {}
    levels = {} if n_levels == 256 else {"n_levels": n_levels}
    return pixelgen.create_model(name, in_channels=channels, **TINY, **extra, **levels, **hyperparameters)


def random_images(n: int, channels: int, height: int, width: int, n_levels: int = 256, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_levels, (n, channels, height, width), generator=generator, dtype=torch.uint8)


def nll_bits(model: torch.nn.Module, images: torch.Tensor) -> float:
    """The images' negative log2-likelihood under ``model``, summed over every sub-pixel."""
    with torch.no_grad():
        return F.cross_entropy(model(images.long()), images.long(), reduction="sum").item() / math.log(2)


BUILT_IN = ["pixelcnn", "row_lstm", "diagonal_bilstm", "multiscale"]


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("channels, n_levels", [(1, 256), (3, 256), (1, 2)], ids=["grey", "rgb", "binary"])
def test_every_built_in_model_round_trips_bit_for_bit(name, channels, n_levels):
    model = tiny_model(name, channels, n_levels)
    images = random_images(5, channels, 5, 7, n_levels)  # odd sizes; 2 + 2 + 1 images per batch
    data = compress(model, images, batch_size=2)
    decoded = decompress(model, data)
    assert decoded.dtype == torch.uint8 and torch.equal(decoded, images)


@pytest.mark.parametrize("name", ["pixelcnn", "pixelcnn_pp"])
def test_the_logistic_mixture_codes_bit_for_bit_at_its_nll(name):
    """The codec reads probabilities through the model's likelihood: PixelCNN++ (its
    default mixture, with dropout, which the codec's eval mode turns off) and a PixelCNN
    with the mixture round-trip, and the payload is their NLL in bits."""
    torch.manual_seed(0)
    sizes = dict(hidden_channels=6, n_resnet=1) if name == "pixelcnn_pp" else dict(TINY, likelihood="logistic_mixture")
    model = pixelgen.create_model(name, in_channels=3, **sizes)
    images = random_images(3, 3, 4, 5)
    data = compress(model, images, batch_size=2)
    assert torch.equal(decompress(model, data), images)
    with torch.no_grad():
        expected = -model.eval().likelihood.log_prob(model(images), images).sum().item() / math.log(2)
    payload_bits = 32 * len(read_container(data)[1])
    assert expected - 1 <= payload_bits <= expected + 64 + 0.001 * expected


def test_a_third_party_model_round_trips_bit_for_bit():
    pytest.importorskip("pixelgen_gated")
    for channels in (1, 3):
        torch.manual_seed(0)
        model = pixelgen.create_model("gated_pixelcnn", in_channels=channels, hidden_channels=12, n_layers=2,
                                      head_channels=12)
        images = random_images(3, channels, 6, 5)
        assert torch.equal(decompress(model, compress(model, images, batch_size=2)), images)


def test_the_top_level_names_and_one_image_of_one_pixel():
    model = tiny_model("pixelcnn", 3)
    images = random_images(1, 3, 1, 1)
    assert torch.equal(pixelgen.decompress(model, pixelgen.compress(model, images)), images)


def test_the_coded_size_is_the_nll_in_bits():
    """The payload is the images' NLL to within the range coder's last words and the
    quantization of the tables: a few bytes on 8 RGB 8x8 images (about 1.5 kB of NLL)."""
    model = tiny_model("pixelcnn", 3)
    images = random_images(8, 3, 8, 8)
    data = compress(model, images, batch_size=4)
    header, words = read_container(data)
    payload_bits = 32 * len(words)
    expected = nll_bits(model, images)
    assert expected - 1 <= payload_bits <= expected + 64 + 0.001 * expected
    assert len(data) == codec._PREFIX.size + len(codec.header_bytes(header)) + 4 * len(words) + 4


def test_the_header_is_short_and_reads_back_as_written():
    """The binary header costs 81 bytes plus its seven texts (one byte of length each; the
    likelihood's entry as compact JSON) and four bytes a label: what a file coding one small
    image alone pays beside its payload."""
    model = tiny_model("pixelcnn", 1, n_levels=2)
    header, _ = read_container(compress(model, random_images(3, 1, 4, 5, n_levels=2), batch_size=2))
    texts = sum(1 + len(header[key].encode()) for key in ("pixelgen", "torch", "constriction", "device", "dtype",
                                                           "model"))
    texts += 1 + len(b'{"name":"categorical"}')
    assert len(codec.header_bytes(header)) == 2 * 4 + 2 * 4 + 2 * 32 + 1 + texts
    assert {k: header[k] for k in ("n_levels", "shape", "count", "batch_size", "labels", "device", "model")} == {
        "n_levels": 2, "shape": [1, 4, 5], "count": 3, "batch_size": 2, "labels": None, "device": "cpu",
        "model": "pixelcnn"}
    assert header["likelihood"] == {"name": "categorical"}
    assert codec._parse_header(codec.header_bytes({**header, "labels": [7, 0, 2**32 - 1]}))["labels"] == [
        7, 0, 2**32 - 1]


MIXTURE = {"name": "logistic_mixture", "n_mixtures": 3}


def log_prob_bits(model: torch.nn.Module, images: torch.Tensor) -> float:
    """The images' negative log2-likelihood under ``model``'s own likelihood (its ``log_prob``)."""
    with torch.no_grad():
        return -model.likelihood.log_prob(model(images), images).double().sum().item() / math.log(2)


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("channels, n_levels", [(1, 256), (3, 256), (1, 2)], ids=["grey", "rgb", "binary"])
def test_every_built_in_model_round_trips_bit_for_bit_with_the_logistic_mixture(name, channels, n_levels):
    """A per-pixel likelihood: each pixel's outputs once, each colour coded given the
    colours of the pixel coded before it, the same on both sides."""
    model = tiny_model(name, channels, n_levels, likelihood=MIXTURE)
    images = random_images(5, channels, 5, 7, n_levels)  # odd sizes; 2 + 2 + 1 images per batch
    data = compress(model, images, batch_size=2)
    assert read_container(data)[0]["likelihood"] == MIXTURE
    assert torch.equal(decompress(model, data), images)


def test_the_coded_size_is_the_nll_in_bits_with_the_logistic_mixture():
    """As for the categorical: the payload is the likelihood's own NLL (its log_prob) to
    within a few bytes, on 8 RGB 8x8 images, from the untrained model and from one that
    puts every colour near 127.5 (scale e^-3 of the range [-1, 1], about 6 levels)."""
    model = tiny_model("pixelcnn", 3, likelihood=MIXTURE)
    confident = tiny_model("pixelcnn", 3, likelihood=MIXTURE)
    with torch.no_grad():  # outputs: 3 mixture logits, 9 means, 9 log-scales, 9 coefficients
        confident.head.logits.weight.zero_()
        confident.head.logits.bias.zero_()
        confident.head.logits.bias[12:21] = -3.0
    near_the_middle = random_images(8, 3, 8, 8, n_levels=16) + 120
    for coder, images in ((model, random_images(8, 3, 8, 8)), (confident, near_the_middle)):
        _, words = read_container(compress(coder, images, batch_size=4))
        expected = log_prob_bits(coder, images)
        assert expected - 1 <= 32 * len(words) <= expected + 64 + 0.001 * expected
    assert 32 * len(words) < 5 * images.numel()  # fewer than 5 bits per sub-pixel where the model is sure


def test_a_model_with_another_likelihood_is_refused_by_name():
    """A categorical model of 6 levels and a mixture of 2 logistics have heads of the same
    size, so the same weights: the header's likelihood tells them apart."""
    categorical = tiny_model("pixelcnn", 1, n_levels=6)
    mixture = tiny_model("pixelcnn", 1, n_levels=6, likelihood={"name": "logistic_mixture", "n_mixtures": 2})
    mixture.load_state_dict(categorical.state_dict())
    images = random_images(2, 1, 3, 3, 6)
    data = compress(mixture, images)
    assert torch.equal(decompress(mixture, data), images)
    with pytest.raises(CodecError, match=r"^coded with the logistic_mixture \(n_mixtures=2\) likelihood, but this "
                                         r"model's is categorical; use the checkpoint that compressed it$"):
        decompress(categorical, data)
    with pytest.raises(CodecError, match=r"the logistic_mixture \(n_mixtures=5\) likelihood, but this model's is "
                                         r"logistic_mixture \(n_mixtures=2\)"):
        decompress(mixture, with_header(data, likelihood={"name": "logistic_mixture", "n_mixtures": 5}))
    header, _ = read_container(data)
    for broken in ({"likelihood": "logistic_mixture"}, {"likelihood": {"n_mixtures": 2}}):
        with pytest.raises(CodecError, match="header lacks entries or holds wrong types"):
            decompress(mixture, with_header(data, **broken))


def test_a_confident_model_codes_likely_images_below_one_bit_per_sub_pixel():
    """With a model that puts most of its mass on 0, an image of zeros costs far less than
    a byte per sub-pixel, and an unlikely value is still coded (never a zero frequency)."""
    model = tiny_model("pixelcnn", 1, n_levels=2)
    with torch.no_grad():
        model.head.logits.bias.copy_(torch.tensor([12.0, -12.0]))  # P(0) = 1 - 4e-11 everywhere
        model.head.logits.weight.zero_()
    zeros = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    _, words = read_container(compress(model, zeros))
    assert len(words) <= 2  # 1024 sub-pixels in at most 64 bits
    surprise = zeros.clone()
    surprise[0, 0, 3, 4] = 1
    assert torch.equal(decompress(model, compress(model, surprise)), surprise)


def test_coding_leaves_the_callers_threads_determinism_and_mode_as_they_were():
    model = tiny_model("row_lstm", 1)
    model.train()
    images = random_images(2, 1, 4, 4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        data = compress(model, images)
        assert torch.get_num_threads() == 2 and model.training
        assert not torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
        assert compress(model, images) == data  # the same bytes whatever the caller's threads
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------ refusals


def test_images_the_model_cannot_code_are_refused():
    model = tiny_model("pixelcnn", 3, n_levels=2)
    cases = [
        (random_images(2, 1, 4, 4, 2), "1 colours, the model 3"),
        (random_images(2, 3, 4, 4, 256, seed=3), "model codes 0..1"),
        (random_images(2, 3, 4, 4, 2).float(), "uint8 tensor"),
        (torch.zeros(0, 3, 4, 4, dtype=torch.uint8), "no images"),
    ]
    for images, message in cases:
        with pytest.raises(CodecError, match=message):
            compress(model, images)
    with pytest.raises(CodecError, match="batch_size"):
        compress(model, random_images(2, 3, 4, 4, 2), batch_size=0)
    conditional = pixelgen.create_model("pixelcnn", in_channels=1, n_classes=2, **TINY)
    with pytest.raises(PixelgenError, match="class-conditional .2 classes.: pass labels"):
        compress(conditional, random_images(1, 1, 2, 2))
    with pytest.raises(PixelgenError, match="labels must lie in 0..1"):
        compress(conditional, random_images(1, 1, 2, 2), labels=2)


def test_a_class_conditional_model_codes_with_the_labels_stored_in_the_file():
    torch.manual_seed(0)
    model = pixelgen.create_model("row_lstm", in_channels=3, n_classes=3, **TINY)
    with torch.no_grad():  # class biases start at zero: make the classes differ
        for name, parameter in model.named_parameters():
            if "embedding" in name:
                parameter.normal_()
    images = random_images(5, 3, 4, 5)
    labels = torch.tensor([0, 2, 1, 1, 0])
    data = compress(model, images, labels=labels, batch_size=2)
    assert read_container(data)[0]["labels"] == [0, 2, 1, 1, 0]
    assert torch.equal(decompress(model, data), images)
    assert compress(model, images, labels=labels.flip(0), batch_size=2) != data  # the labels condition the code
    with pytest.raises(CodecError, match="do not match the recorded checksum"):
        decompress(model, with_header(data, labels=[0, 2, 1, 1, 1]))


@pytest.fixture(scope="module")
def coded():
    """A small file, the model and images it holds."""
    model = tiny_model("pixelcnn", 1)
    images = random_images(3, 1, 3, 4)
    return model, images, compress(model, images, batch_size=2)


def with_header(data: bytes, **changes) -> bytes:
    """``data`` with header entries changed and a valid crc32: a well-formed file that lies."""
    header, words = read_container(data)
    return codec._container({**header, **changes}, words)


def test_another_model_is_refused(coded):
    model, _, data = coded
    other = tiny_model("pixelcnn", 1, seed=1)
    with pytest.raises(CodecError, match="coded with another model: pixelcnn"):
        decompress(other, data)


@pytest.mark.parametrize("key", ["torch", "constriction", "pixelgen", "dtype"])
def test_another_library_version_or_dtype_is_refused(coded, key):
    model, _, data = coded
    with pytest.raises(CodecError, match=f"coded with {key} 0.0.1 \\(here "):
        decompress(model, with_header(data, **{key: "0.0.1"}))


def test_a_header_that_lies_about_the_pixels_is_caught_by_their_checksum(coded):
    """A valid crc32 over wrong entries never gives wrong pixels: the recorded SHA-256 of the
    pixels is checked after decoding."""
    model, images, data = coded
    for changes in ({"batch_size": 1}, {"shape": [1, 4, 3]}, {"count": 2},
                    {"pixels_sha256": hashlib.sha256(b"").hexdigest()}):
        with pytest.raises(CodecError, match="do not match the recorded checksum|cannot be decoded"):
            decompress(model, with_header(data, **changes))


def with_header_blob(data: bytes, blob: bytes) -> bytes:
    """``data`` with its header replaced by ``blob`` and a valid crc32."""
    words = read_container(data)[1]
    body = codec._PREFIX.pack(codec.MAGIC, codec.FORMAT_VERSION, len(blob)) + blob + words.tobytes()
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_another_format_and_a_header_without_its_entries_are_refused(coded):
    model, _, data = coded
    for version in (1, 3):  # 1: the earlier JSON header
        other = data[:8] + version.to_bytes(2, "little") + data[10:]
        with pytest.raises(CodecError, match=f"format version {version}; this pixelgen reads version 2"):
            decompress(model, other)
    header, _ = read_container(data)
    blob = codec.header_bytes(header)
    fixed = codec._FIXED.size
    labelled = codec.header_bytes({**header, "labels": [0] * header["count"]})
    broken = [blob[:-1], blob + b"\0", blob[:fixed], blob[:10],  # cut, one byte too many, no texts
              codec.header_bytes({**header, "count": 0}), codec.header_bytes({**header, "shape": [1, 0, 3]}),
              blob[:fixed - 1] + b"\2" + blob[fixed:],  # a labels flag of 2
              blob[:fixed - 1] + b"\1" + blob[fixed:],  # labels announced, none there
              labelled[:-4],  # one label short
              blob[:fixed + 1] + b"\xff" + blob[fixed + 2:]]  # a text that is not UTF-8
    for damaged in broken:
        with pytest.raises(CodecError, match="header lacks entries or holds wrong types"):
            decompress(model, with_header_blob(data, damaged))
    assert torch.equal(decompress(model, with_header_blob(data, blob)), coded[1])  # the helper keeps a good one


@settings(max_examples=150, deadline=None)
@given(offset=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_damaged_byte_is_refused(coded, offset, flip):
    model, _, data = coded
    offset %= len(data)
    damaged = data[:offset] + bytes([data[offset] ^ flip]) + data[offset + 1:]
    with pytest.raises(CodecError):
        decompress(model, damaged)


def test_a_file_cut_at_any_length_is_refused(coded):
    model, _, data = coded
    for length in range(len(data)):
        with pytest.raises(CodecError):
            read_container(data[:length])


# ------------------------------------------------------------------------ command line


def pixelgen_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelgen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def write_checkpoint(path, model) -> None:
    recipe = recipe_from_dict({"model": {"name": model.pixelgen_config["name"]}, "data": {"name": "mnist"}})
    save_checkpoint(path, {"model": plain(model.pixelgen_config), "model_state": model.state_dict(),
                           "recipe": recipe_to_dict(recipe), "epoch": 1})


def test_cli_round_trip_through_pngs_and_npy(tmp_path, monkeypatch):
    from PIL import Image

    model = tiny_model("pixelcnn", 3)
    write_checkpoint(tmp_path / "model.ckpt", model)
    images = random_images(3, 3, 5, 7)
    for k, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"in{k}.png")
    done = pixelgen_cli("compress", "model.ckpt", "in0.png", "in1.png", "in2.png", "-o", "x.pgz", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.pgz").read_bytes() == compress(model, images)
    monkeypatch.chdir(tmp_path)
    assert main(["decompress", "model.ckpt", "x.pgz", "-o", "out"]) == 0
    for k in range(3):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{k:06d}.png")),
                              np.asarray(Image.open(tmp_path / f"in{k}.png")))
    assert main(["decompress", "model.ckpt", "x.pgz", "-o", "out.npy"]) == 0
    assert np.array_equal(np.load(tmp_path / "out.npy"), images.numpy())


def test_cli_refusals_are_one_line_and_leave_files_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_checkpoint(tmp_path / "model.ckpt", tiny_model("pixelcnn", 1, n_levels=2))
    write_checkpoint(tmp_path / "other.ckpt", tiny_model("pixelcnn", 1, n_levels=2, seed=5))
    np.save(tmp_path / "x.npy", random_images(2, 1, 3, 3, 2).numpy()[:, 0])  # (N, H, W) for grey
    assert main(["compress", "model.ckpt", "x.npy", "-o", "x.pgz"]) == 0
    data = (tmp_path / "x.pgz").read_bytes()
    (tmp_path / "cut.pgz").write_bytes(data[:-5])
    done = pixelgen_cli("decompress", "other.ckpt", "x.pgz", "-o", "out", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("pixelgen: error: coded with another model: pixelcnn with weights ")
    cases = [
        (["compress", "model.ckpt", "x.npy", "-o", "x.pgz"], "-o x.pgz: already exists; pass --force"),
        (["decompress", "model.ckpt", "cut.pgz", "-o", "out"], "damaged or truncated"),
        (["decompress", "model.ckpt", "model.ckpt", "-o", "out"], "not a pixelgen compressed file"),
        (["decompress", "model.ckpt", "x.pgz", "-o", "x.npy"], "-o x.npy: already exists"),
    ]
    capsys.readouterr()
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pixelgen: error: ") and message in err, err
    assert (tmp_path / "x.pgz").read_bytes() == data and not (tmp_path / "out").exists()
    assert main(["compress", "model.ckpt", "x.npy", "-o", "x.pgz", "--force", "--batch-size", "1"]) == 0
    assert (tmp_path / "x.pgz").read_bytes() != data  # another batch size: another file, same images
    assert main(["decompress", "model.ckpt", "x.pgz", "-o", "x.npy", "--force"]) == 0
    assert np.load(tmp_path / "x.npy").shape == (2, 1, 3, 3)


def test_png_values_or_colours_the_model_cannot_keep_are_refused(tmp_path):
    from PIL import Image

    model = tiny_model("pixelcnn", 1, n_levels=2)
    Image.fromarray(np.array([[0, 255], [100, 0]], dtype=np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(CodecError, match="cannot keep"):
        codec.read_images([tmp_path / "grey.png"], 1, 2)
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(CodecError, match="rgb.png: PIL mode RGB; this model codes grey .L. images"):
        codec.read_images([tmp_path / "rgb.png"], 1, 2)
    with pytest.raises(CodecError, match="grey.png: PIL mode L; this model codes RGB images"):
        codec.read_images([tmp_path / "grey.png"], 3, 256)
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(tmp_path / "bw.png")
    images = codec.read_images([tmp_path / "bw.png"], 1, 2)
    assert images.tolist() == [[[[0, 1], [1, 0]]]]
    assert torch.equal(decompress(model, compress(model, images)), images)


# ------------------------------------------------------------------------ the tutorial and the reference

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<body>.*?)^```$", re.M | re.S)
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def test_the_codec_tutorial_runs_as_written(tmp_path, monkeypatch):
    """docs/tutorials/codec.md: its doctest blocks in order in one namespace, from the setup
    of docs/conf.py (exception messages compared in full), then its commands in a fresh
    folder. Two stand-ins keep it fast: ``pixelgen run`` writes a tiny untrained checkpoint
    where the quickstart's best.ckpt goes, and Fashion-MNIST is a tiny folder written here."""
    blocks = [(m["info"].strip(), m["body"]) for m in FENCE.finditer((DOCS / "tutorials" / "codec.md").read_text())]
    namespace: dict = {}
    exec("import torch\nimport pixelgen\ntorch.manual_seed(0)", namespace)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1)
    doctests = [body for info, body in blocks if info.startswith("{doctest}")]
    runner.run(doctest.DocTestParser().get_doctest("\n".join(doctests), namespace, "codec.md", None, 0))
    assert runner.summarize(verbose=False).failed == 0 and len(doctests) == 3
    monkeypatch.chdir(tmp_path)
    data_root = tmp_path / "fashion-mnist"
    write_tiny_mnist(data_root, n_test=32)
    commands = [line for info, body in blocks if info == "bash" for line in body.splitlines() if line.strip()]
    assert [shlex.split(line)[:2] for line in commands] == [
        ["pixelgen", "run"], ["python3", "-c"], ["pixelgen", "compress"], ["pixelgen", "decompress"]]
    for line in commands:
        argv = shlex.split(line)
        if argv[:2] == ["pixelgen", "run"]:
            (tmp_path / "runs" / "quickstart").mkdir(parents=True)
            write_checkpoint(tmp_path / "runs" / "quickstart" / "best.ckpt", tiny_model("pixelcnn", 1))
        elif argv[0] == "python3":
            exec(argv[2].replace(FASHION_MNIST, str(data_root)), {})
        else:
            assert main(argv[1:]) == 0, line
    from PIL import Image

    coded = np.load(tmp_path / "test32.npy")
    assert coded.shape == (32, 1, 28, 28)
    decoded = np.stack([np.asarray(Image.open(tmp_path / "decoded" / f"{k:06d}.png")) for k in range(32)])
    assert np.array_equal(decoded, coded[:, 0])


def test_the_reference_lists_every_header_entry(coded):
    """docs/reference/compressed-files.md names exactly the header's keys, and the magic."""
    page = (DOCS / "reference" / "compressed-files.md").read_text()
    table = page[page.index("| key | bytes | meaning |"):]
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    header, _ = read_container(coded[2])
    assert sorted(documented) == sorted(header) and len(documented) == len(set(documented))
    assert " ".join(f"{b:02X}" for b in codec.MAGIC) in page


def test_cli_codes_a_class_conditional_checkpoints_images_with_one_label(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    write_checkpoint(tmp_path / "model.ckpt", pixelgen.create_model("pixelcnn", in_channels=1, n_classes=2, **TINY))
    images = random_images(3, 1, 4, 4)
    np.save(tmp_path / "x.npy", images.numpy())
    assert main(["compress", "model.ckpt", "x.npy", "-o", "x.pgz"]) == 2
    assert "pass labels" in capsys.readouterr().err
    assert main(["compress", "model.ckpt", "x.npy", "-o", "x.pgz", "--label", "1"]) == 0
    assert read_container((tmp_path / "x.pgz").read_bytes())[0]["labels"] == [1, 1, 1]
    assert main(["decompress", "model.ckpt", "x.pgz", "-o", "y.npy"]) == 0
    assert np.array_equal(np.load(tmp_path / "y.npy"), images.numpy())
