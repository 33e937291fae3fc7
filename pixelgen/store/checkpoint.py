"""Checkpoint files: written atomically, read without executing code.

A checkpoint is one ``torch.save`` file holding only tensors, dicts, lists, numbers and
strings, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``: a
file from elsewhere can never run code on load. Its top-level keys::

    format, format_version   "pixelgen-checkpoint", 1
    model                    {"name": ..., "hyperparameters": {...}}: rebuilds the model
    model_state              the model's state dict
    recipe                   the resolved single-run recipe (recipe.recipe_to_dict)
    epoch, step              epochs completed (1-based count) and optimizer steps taken
    optimizer, scheduler     their state dicts; precision: the AMP grad scaler's, if any
    early_stopping           {"monitor", "best", "bad_epochs", "stopped"}
    sampler                  {"seed", "epoch"}: the shuffling order is a function of these
    rng                      one entry per process rank: torch, cuda, numpy and python
                             random states, as tensors (see :func:`rng_state`)
    metrics                  the epoch's metrics row
    model_digest             SHA-256 of the weights (:func:`weights_digest`): their identity
    digest_version, digests  2, and every other entry's SHA-256 (:func:`entry_digests`)

The checkpoint is checked whole: :func:`load_checkpoint` refuses, in one line naming the
entry, a file whose entries (weights, averaged weights, optimizer moments and step,
scheduler, random states, counters, data order, recipe, metrics) do not match their
digests, or an entry missing or added. Before a resume, :func:`check_resumable` checks the
structure of everything the trainer reads (keys, types, dtypes, shapes against the
model's parameters, ranges; :mod:`pixelgen.store.checkpoint_schema`), and
:func:`model_from_checkpoint` the weights it loads. Older checkpoints keep working:
digest version 1 (a ``model_digest`` and no ``digest_version`` key: every checkpoint written
before the whole one was digested) covers the weights only, which are checked; the
checkpoints of pixelgen 0.1.0 (version 0) have no digest. Both evaluate and sample
as before, and resume when their structure passes the same checks.

A quantized checkpoint (:func:`quantized_checkpoint`, ``pixelgen quantize``) keeps
``model``, ``recipe``, ``epoch``, ``step`` and ``metrics``, stores ``model_state`` in its
smaller form and adds ``quantization`` (``{"to", "scheme", "weights", ...}``, see
:mod:`pixelgen.store.quantization`); it has no optimizer, random or averaged state, so it cannot
be resumed. :func:`model_from_checkpoint` dequantizes it on load.

The file is written to a temporary name in the same folder, flushed to disk and renamed
over the target with ``os.replace``, so a kill at any moment leaves either the previous
checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelgen.errors import CheckpointError
from pixelgen.registry import create_model
from pixelgen.store.checkpoint_schema import quantization_problem, resume_problem, weights_problem
from pixelgen.store.files import atomic_writer, not_a_file, write_failure
from pixelgen.store.quantization import (
    SCHEMES,
    QuantizationError,
    dequantize_state,
    quantize_state,
)

FORMAT = "pixelgen-checkpoint"
FORMAT_VERSION = 1
#: The digest version written now, which covers every entry (``digests`` maps each
#: entry to the SHA-256 of :func:`canonical_digest`). Version 1 (a ``model_digest``, no
#: ``digest_version`` key) covers the weights only, and pixelgen 0.1.0 wrote none.
DIGEST_VERSION = 2
#: The entries of a checkpoint that describe it rather than hold its contents.
_DIGEST_KEYS = ("digests",)


# --------------------------------------------------------------------------- random state


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random states as CPU tensors only (loadable with weights_only).

    Keys: ``torch`` (uint8), ``cuda`` (uint8, current device; empty without CUDA),
    ``numpy_keys`` (int64 (624,)), ``numpy_rest`` (float64: pos, has_gauss,
    cached_gaussian), ``python`` (int64: version, 625 state words, has_gauss), and
    ``python_gauss`` (float64 (1,)).
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    cuda = (
        torch.cuda.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else torch.empty(0, dtype=torch.uint8)
    )
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
        "python": torch.tensor([version, *words, gauss_next is not None], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss_next or 0.0], dtype=torch.float64),
    }


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned (tensors may sit on any device)."""
    state = {k: v.cpu() for k, v in state.items()}
    torch.set_rng_state(state["torch"].to(torch.uint8).clone())  # a copy: see checkpoint_schema._try_torch
    if state["cuda"].numel() and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8).clone())
    pos, has_gauss, cached = state["numpy_rest"].tolist()
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    python = state["python"].tolist()
    gauss_next = float(state["python_gauss"][0]) if python[-1] else None
    random.setstate((python[0], tuple(python[1:-1]), gauss_next))


# --------------------------------------------------------------------------- files


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists and mappings into dicts (recursively), so
    that it compares equal to what a JSON or checkpoint round trip gives back."""
    return json.loads(json.dumps(value, default=_not_plain))


def _not_plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint: {value!r}")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> pathlib.Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    ``state`` must hold only what :func:`load_checkpoint` can read back with
    ``weights_only=True``: tensors, dicts, lists, tuples, numbers, strings, None.
    """
    path = pathlib.Path(path)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state, "digest_version": DIGEST_VERSION}
    if "model_state" in state:
        state["model_digest"] = weights_digest(_all_weights(state))
    state["digests"] = entry_digests(state)
    try:
        with atomic_writer(path) as handle:
            torch.save(state, handle)
    except RuntimeError as exc:  # torch's writer reports a failed write (a full disk) this way
        raise write_failure(path, OSError(str(exc).split("\n")[0])) from None
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a pixelgen checkpoint onto the CPU without executing any code from it.

    Raises:
        CheckpointError: one line, for a missing file, a truncated or foreign file (any
            file ``torch.load(weights_only=True)`` refuses or that lacks the pixelgen
            format key), or a newer format version.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {not_a_file(path, 'checkpoint file')}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled classes: all refused
        raise CheckpointError(_not_ours(path, _load_failure(exc))) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(_not_ours(path, "no pixelgen format marker"))
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is newer than this pixelgen reads "
            f"({FORMAT_VERSION}); upgrade pixelgen"
        )
    _check_digests(path, state)
    missing = [key for key in ("model", "model_state", "recipe", "epoch") if key not in state]
    if missing:
        raise CheckpointError(_not_ours(path, f"missing {', '.join(missing)}"))
    _check_contents(path, state)
    return state


def canonical_digest(value: Any) -> str:
    """SHA-256 of ``value`` serialised canonically: mapping keys sorted, every tensor as its
    dtype, shape and bytes, floats exactly (``float.hex``), each item tagged with its kind,
    so equal contents give equal digests on any machine and any change gives another."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}|".encode())
        for key in sorted(value, key=repr):  # repr: 0 and "0" sort (and hash) apart
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):  # a round trip may turn one into the other
        digest.update(f"L{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, float):
        digest.update(f"F{value.hex()}|".encode())
    elif isinstance(value, str):
        digest.update(f"S{len(value)}|{value}".encode())
    else:  # None, bool, int, and what else torch's weights-only reader allows (dtypes, sizes)
        digest.update(f"O{type(value).__qualname__}|{value!r}|".encode())


def entry_digests(state: dict[str, Any]) -> dict[str, str]:
    """Every entry's :func:`canonical_digest` (digest version 2), by entry name."""
    return {key: canonical_digest(value) for key, value in state.items() if key not in _DIGEST_KEYS}


def digest_version(state: dict[str, Any]) -> int:
    """What ``state``'s digest covers (see :data:`DIGEST_VERSION`): 2, 1 or 0 (none)."""
    if "digest_version" in state or "digests" in state:
        return state.get("digest_version")  # a damaged one is refused by _check_digests
    return 1 if "model_digest" in state else 0


def _check_digests(path: pathlib.Path, state: dict[str, Any]) -> None:
    """Version 2: every entry matches its digest, none is missing or added."""
    version = digest_version(state)
    if version in (0, 1):
        return
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version > DIGEST_VERSION):
        raise CheckpointError(f"{path}: checkpoint digest_version {version!r} is not one this pixelgen reads "
                              f"(up to {DIGEST_VERSION}); upgrade pixelgen, or use another checkpoint")
    recorded = state.get("digests")
    if not (isinstance(recorded, dict) and all(isinstance(v, str) for v in recorded.values())):
        raise CheckpointError(f"{path}: its 'digests' entry is damaged; {_TAKE_ANOTHER}")
    actual = entry_digests(state)
    for key in sorted(set(recorded) | set(actual), key=str):
        if recorded.get(key) != actual.get(key):
            what = ("is missing" if key not in actual else "is not covered by its digest" if key not in recorded
                    else "does not match its recorded digest")
            raise CheckpointError(f"{path}: its {key!r} entry {what} (the file was damaged or edited); "
                                  f"{_TAKE_ANOTHER}")


_TAKE_ANOTHER = "use another checkpoint (last.ckpt / best.ckpt) or train again"


def _all_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trained weights and, for a run with an average of them, the average; for an
    int8 checkpoint also the scales (everything the stored weights are made of)."""
    ema = state.get("ema_state") or {}
    quantization = state.get("quantization")
    scales = quantization.get("scales") or {} if isinstance(quantization, dict) else {}
    return {**state["model_state"], **{f"ema:{k}": v for k, v in ema.items() if isinstance(v, torch.Tensor)},
            **{f"scale:{k}": v for k, v in scales.items() if isinstance(v, torch.Tensor)}}


def weights_digest(model_state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(model_state):
        tensor = model_state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _check_contents(path: pathlib.Path, state: dict[str, Any]) -> None:
    """The entries a checkpoint is trusted for, checked: types, the weights' digest
    (checkpoints from pixelgen 0.1.0 have none) and finite weights."""
    model, weights = state["model"], state["model_state"]
    if not (isinstance(model, dict) and isinstance(model.get("name"), str)
            and isinstance(model.get("hyperparameters"), dict)):
        raise CheckpointError(_not_ours(path, "its 'model' entry is not {name, hyperparameters}"))
    if not (isinstance(weights, dict) and all(isinstance(v, torch.Tensor) for v in weights.values())):
        raise CheckpointError(_not_ours(path, "its 'model_state' entry is not a dict of tensors"))
    if not isinstance(state["epoch"], int) or isinstance(state["epoch"], bool) or state["epoch"] < 0:
        raise CheckpointError(_not_ours(path, "its 'epoch' entry is not an integer >= 0"))
    if not isinstance(state["recipe"], dict):
        raise CheckpointError(_not_ours(path, "its 'recipe' entry is not a dict"))
    ema = state.get("ema_state")
    if ema is not None and not (isinstance(ema, dict) and all(isinstance(v, torch.Tensor) for v in ema.values())):
        raise CheckpointError(_not_ours(path, "its 'ema_state' entry is not a dict of tensors"))
    problem = quantization_problem(state)
    if problem:
        raise CheckpointError(f"{path}: {problem}; quantize the original checkpoint again")
    recorded = state.get("model_digest")
    if recorded is not None and recorded != weights_digest(_all_weights(state)):
        raise CheckpointError(
            f"{path}: the weights do not match their recorded digest (the file was damaged or "
            f"edited); {_TAKE_ANOTHER}"
        )
    bad = [name for name, v in _all_weights(state).items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{path}: non-finite weights in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
            f"this checkpoint cannot be used: take an earlier one or train again"
        )


def _load_failure(exc: Exception) -> str:
    """torch.load's long error messages, said in a few words."""
    text = " ".join(str(exc).split())
    if "PytorchStreamReader" in text or "zip archive" in text:
        return "an incomplete or damaged zip archive"
    named = re.search(r"(?:unsupported|Unsupported) GLOBAL ([\w.]+)", text)
    if named:
        return f"it pickles {named.group(1)}, which a weights-only load refuses to run"
    if "Weights only load failed" in text:
        return "neither a torch zip archive nor plain pickled tensors"
    if isinstance(exc, OSError):
        return f"unreadable ({exc.strerror or text})"
    return text[:160] or type(exc).__name__


def _not_ours(path: pathlib.Path, reason: str) -> str:
    return (
        f"{path.name} is not a pixelgen checkpoint (truncated or foreign file): {reason}; "
        f"re-run training or pass another file ({path})"
    )


def check_resumable(path: str | os.PathLike, state: dict[str, Any], model: nn.Module) -> None:
    """Refuse, in one line naming the entry, a checkpoint ``state`` (read from ``path``) that
    the trainer cannot resume ``model`` from: every entry a resume reads is checked
    (:func:`pixelgen.store.checkpoint_schema.resume_problem`) before any is used.

    Raises:
        CheckpointError: ``path: key.path: what is wrong; what to do``.
    """
    problem = resume_problem(state, model)
    if problem:
        raise CheckpointError(f"{path}: {problem}; this checkpoint cannot be resumed: resume from another "
                              f"one (last.ckpt / best.ckpt), or pass --out DIR to train afresh")


WEIGHTS = ("auto", "ema", "raw")


def model_from_checkpoint(state: dict[str, Any], weights: str = "auto") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (on the CPU).

    Needs only the checkpoint: the registered model name and its hyperparameters are
    stored in ``state["model"]`` (``model.pixelgen_config``). ``weights``: ``"ema"`` the
    exponential moving average of a run with ``train.ema_decay > 0``, ``"raw"`` the
    trained weights themselves, ``"auto"`` the average where there is one. A quantized
    checkpoint holds one set, dequantized here (``"ema"``/``"raw"`` must name that set).
    """
    if weights not in WEIGHTS:
        raise CheckpointError(f"weights {weights!r}: choose one of {', '.join(WEIGHTS)}")
    entry, prefix = "model_state", ""
    if state.get("quantization") is not None:
        chosen = _dequantized(state, weights)
    else:
        has_ema = bool(state.get("ema_state"))
        if weights == "ema" and not has_ema:
            raise CheckpointError("weights ema: this run kept no average of its weights (train.ema_decay = 0); "
                                  "use raw (--weights raw)")
        if has_ema and weights != "raw":
            entry, prefix = "ema_state", "module."
        chosen = state[entry]
    config = state["model"]
    try:
        model = create_model(config["name"], **config["hyperparameters"])
        problem = weights_problem(entry, chosen, model, prefix)
        if problem:
            raise ValueError(problem)
        model.load_state_dict(ema_weights(chosen) if prefix else chosen)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise CheckpointError(
            f"checkpoint model {config.get('name')!r} cannot be rebuilt: {reason}"
        ) from None
    return model


def ema_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict inside an ``AveragedModel``'s (keys ``module.*``)."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def weights_used(state: dict[str, Any], weights: str = "auto") -> str:
    """``"ema"`` or ``"raw"``: the set :func:`model_from_checkpoint` loads for ``weights``."""
    quantization = state.get("quantization")
    if isinstance(quantization, dict):
        return quantization.get("weights", "raw")
    return "ema" if weights != "raw" and state.get("ema_state") else "raw"


def _dequantized(state: dict[str, Any], weights: str) -> dict[str, torch.Tensor]:
    """The float32 state dict of a quantized checkpoint; ``weights`` must fit the set it holds."""
    held = weights_used(state)
    if weights not in ("auto", held):
        raise CheckpointError(f"weights {weights}: this quantized checkpoint holds the {held} weights only; "
                              f"use auto or {held} (--weights auto)")
    try:
        return dequantize_state(state["model_state"], state["quantization"])
    except (QuantizationError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"quantized checkpoint cannot be read: {exc}; quantize the original again") from None


def quantized_checkpoint(state: dict[str, Any], to: str, weights: str = "auto") -> dict[str, Any]:
    """A checkpoint of the model of ``state`` with its weights in format ``to`` (one of
    :data:`pixelgen.store.quantization.SCHEMES`): the chosen weights (``weights``: see
    :func:`model_from_checkpoint`) only, no optimizer, random or averaged state."""
    if to not in SCHEMES:
        raise CheckpointError(f"--to {to!r}: choose one of {', '.join(SCHEMES)}")
    if state.get("quantization") is not None:
        raise CheckpointError(f"this checkpoint is already quantized ({state['quantization'].get('to')}); "
                              f"quantize the original one")
    model = model_from_checkpoint(state, weights)
    stored, record = quantize_state(model, {k: v.detach().cpu() for k, v in model.state_dict().items()}, to)
    record.update(weights=weights_used(state, weights), source_digest=state.get("model_digest"))
    kept = {key: state[key] for key in ("model", "recipe", "epoch", "step", "metrics") if key in state}
    return {**kept, "model_state": stored, "quantization": record}
