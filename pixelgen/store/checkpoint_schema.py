"""The structure of a checkpoint, checked before anything of it is used.

A checkpoint that passes its digest can still be malformed: written by hand, by an older
pixelgen, or edited and its digest recomputed. :func:`resume_problem` checks every entry a
resume reads (keys, types, dtypes, shapes against the model's parameters, ranges) and
:func:`weights_problem` the weights evaluation and sampling load; each names the first
problem as ``key.path: what is wrong``, and :mod:`pixelgen.store.checkpoint` turns it into
one line with the fix. The random states are tried on throwaway generators (torch, numpy
and Python check their own formats best), the scheduler's entries against a fresh
``ReduceLROnPlateau``'s.

Written by hand because no validation library knows tensors: a dtype and a shape are
part of the type here.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pixelgen.store.quantization import SCHEMES

#: The dtype and shape of each entry of one process's random state (a shape of None
#: means any 1-D length).
RNG_LAYOUT: dict[str, tuple[torch.dtype, tuple[int, ...] | None]] = {
    "torch": (torch.uint8, None),  # the size is the CPU generator's, checked on a throwaway one
    "cuda": (torch.uint8, None),  # empty without CUDA
    "numpy_keys": (torch.int64, (624,)),
    "numpy_rest": (torch.float64, (3,)),
    "python": (torch.int64, (627,)),
    "python_gauss": (torch.float64, (1,)),
}
_ADAM_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_ADAM_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: Any, least: int = 0) -> bool:
    return _is_int(value) and value >= least


def _finite_at_least(value: Any, least: float) -> bool:
    return _is_number(value) and math.isfinite(value) and value >= least


def _fields(key: str, value: Any, fields: dict[str, tuple[Callable[[Any], bool], str]],
            optional: tuple[str, ...] = ()) -> str | None:
    """The first problem of dict ``value`` (entry ``key``) against ``fields``: name -> (test,
    what it should be); keys in ``optional`` may be absent, no others may be added."""
    if not isinstance(value, dict):
        return f"{key}: expected a dict, got {type(value).__name__}"
    for name, (test, want) in fields.items():
        if name not in value:
            if name not in optional:
                return f"{key}.{name}: missing"
        elif not test(value[name]):
            return f"{key}.{name}: expected {want}, got {_short(value[name])}"
    extra = sorted(map(str, set(value) - set(fields)))
    return f"{key}.{extra[0]}: not an entry pixelgen writes" if extra else None


def _short(value: Any) -> str:
    """``value`` in a few words on one line: a tensor's dtype and shape, a container's size."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:4]))
        return f"a dict of {len(value)} ({keys}{', ...' if len(value) > 4 else ''})"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    text = " ".join(repr(value).split())
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _tensor(key: str, value: Any, dtype: torch.dtype, shape: tuple[int, ...] | None) -> str | None:
    """``value`` a tensor of ``dtype`` and ``shape`` (None: 1-D of any length)."""
    if not isinstance(value, torch.Tensor):
        return f"{key}: expected a tensor, got {_short(value)}"
    if value.dtype != dtype or (value.dim() != 1 if shape is None else tuple(value.shape) != shape):
        return f"{key}: expected a {dtype} tensor of shape {shape or '(n,)'}, got {_short(value)}"
    return None


# --------------------------------------------------------------------------- weights


def weights_problem(key: str, saved: Any, model: nn.Module, prefix: str = "") -> str | None:
    """The first problem of ``saved`` (a state dict, entry ``key``; only its keys starting
    with ``prefix``) as ``model``'s weights, or None: every tensor of the model's dtype and shape, none unknown, and any the
    checkpoint lacks filled by the model's own upgrade of older state dicts."""
    if not isinstance(saved, dict):
        return f"{key}: expected a dict of tensors, got {type(saved).__name__}"
    expected = model.state_dict()
    own = {name[len(prefix):]: value for name, value in saved.items() if isinstance(name, str) and name.startswith(prefix)}
    for name, value in own.items():
        if name not in expected:
            return f"{key}.{prefix}{name}: not a tensor of model {type(model).__name__}"
        problem = _tensor(f"{key}.{prefix}{name}", value, expected[name].dtype, tuple(expected[name].shape))
        if problem:
            return problem
    if set(expected) - set(own):
        try:  # an older layer's state dict may lack what its model now fills on load
            copy.deepcopy(model).load_state_dict(own)
        except RuntimeError:
            return f"{key}.{prefix}{sorted(set(expected) - set(own))[0]}: missing"
    return None


def _ema_problem(state: dict[str, Any], model: nn.Module) -> str | None:
    """The weights' average, which a run that kept one (``train.ema_decay > 0`` in its
    recipe) must have: the model's tensors under ``module.``, a count and its decay."""
    ema = state.get("ema_state")
    if ema is None:
        kept = _at(state, "recipe", "train", "ema_decay")
        return "ema_state: missing (the run kept an average of its weights)" if _is_number(kept) and kept > 0 else None
    if not isinstance(ema, dict) or set(ema) - {"n_averaged"} - {k for k in ema if str(k).startswith("module.")}:
        return "ema_state: expected the model's tensors as module.* and n_averaged"
    problem = weights_problem("ema_state", ema, model, prefix="module.")
    if problem or "n_averaged" not in ema:
        return problem or "ema_state.n_averaged: missing"
    n = ema["n_averaged"]
    if _tensor("ema_state.n_averaged", n, torch.int64, ()) or n.item() < 0:
        return f"ema_state.n_averaged: expected a count (an int64 tensor >= 0), got {_short(n)}"
    if not (_is_number(state.get("ema_decay")) and 0 < state["ema_decay"] < 1):
        return f"ema_decay: expected a number in (0, 1), got {_short(state.get('ema_decay'))}"
    return None


# --------------------------------------------------------------------------- the optimizer


def _group_problem(key: str, group: Any) -> str | None:
    """One Adam parameter group: its numbers in range, its flags bools; a flag this torch's
    Adam has and pixelgen does not know is accepted as written (None or a bool)."""
    flags = {name: (lambda v: v is None or isinstance(v, bool), "a bool or None")
             for name in {*_ADAM_FLAGS, "foreach", "fused", *_fresh_adam_group()} - set(_ADAM_GROUP)}
    return _fields(key, group, {**_ADAM_GROUP, **flags}, optional=tuple(flags))


_ADAM_GROUP = {
    "params": (lambda v: isinstance(v, list) and all(_count(i) for i in v) and len(set(v)) == len(v),
               "distinct parameter indices"),
    "lr": (lambda v: _finite_at_least(v, 0), "a learning rate >= 0"),
    "betas": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_finite_at_least(b, 0) and b < 1 for b in v),
              "two numbers in [0, 1)"),
    "eps": (lambda v: _finite_at_least(v, 0), "a number >= 0"),
    "weight_decay": (lambda v: _finite_at_least(v, 0), "a number >= 0"),
}


def _fresh_adam_group() -> dict[str, Any]:
    return torch.optim.Adam([torch.zeros(1, requires_grad=True)]).param_groups[0]


def _moments_problem(key: str, entry: Any, shape: tuple[int, ...] | None) -> str | None:
    """One parameter's Adam state: ``step`` a count, the moments float32 tensors of the
    parameter's ``shape`` (None: unchecked), the second ones >= 0."""
    if not isinstance(entry, dict):
        return f"{key}: expected a dict of step, exp_avg and exp_avg_sq, got {_short(entry)}"
    missing = [name for name in ("step", "exp_avg", "exp_avg_sq") if name not in entry]
    if missing:
        return f"{key}.{missing[0]}: missing"
    extra = sorted(map(str, set(entry) - {"step", *_ADAM_MOMENTS}))
    if extra:
        return f"{key}.{extra[0]}: not an entry of Adam's state"
    step = entry["step"]
    if not (isinstance(step, torch.Tensor) and step.dim() == 0 and step.dtype == torch.float32
            and math.isfinite(step.item()) and step.item() >= 0 and step.item() == int(step.item())):
        return f"{key}.step: expected a whole number >= 0 as a torch.float32 tensor, got {_short(step)}"
    for name in _ADAM_MOMENTS:
        moment = entry.get(name)
        if moment is None and name == "max_exp_avg_sq":
            continue
        if not isinstance(moment, torch.Tensor) or moment.dtype != torch.float32 or (
                shape is not None and tuple(moment.shape) != shape):
            return f"{key}.{name}: expected a torch.float32 tensor of shape {shape}, got {_short(moment)}"
        if not torch.isfinite(moment).all() or (name != "exp_avg" and (moment < 0).any()):
            return f"{key}.{name}: non-finite{' or negative' if name != 'exp_avg' else ''} values"
    return None


def optimizer_problem(saved: Any, model: nn.Module) -> str | None:
    """The Adam state dict the trainer writes, for ``model``'s parameters (moments of each
    parameter's shape; unchecked where the checkpoint's model had fewer parameters, whose
    moments a resume discards)."""
    problem = _fields("optimizer", saved, {"state": (lambda v: isinstance(v, dict), "a dict"),
                                           "param_groups": (lambda v: isinstance(v, list) and v, "a list of groups")})
    if problem:
        return problem
    for g, group in enumerate(saved["param_groups"]):
        problem = _group_problem(f"optimizer.param_groups.{g}", group)
        if problem:
            return problem
    indices = [i for group in saved["param_groups"] for i in group["params"]]
    if sorted(indices) != list(range(len(indices))):  # torch numbers the parameters 0..n-1
        return f"optimizer.param_groups.{len(saved['param_groups']) - 1}.params: expected the indices 0..{len(indices) - 1}"
    shapes = [tuple(p.shape) for p in model.parameters()]
    same_model = len(indices) == len(shapes)
    for index, entry in saved["state"].items():
        if index not in indices:
            return f"optimizer.param_groups: no parameter {index!r} for optimizer.state.{index}"
        problem = _moments_problem(f"optimizer.state.{index}", entry, shapes[index] if same_model else None)
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------- the rest


def _scheduler_problem(saved: Any, n_groups: int) -> str | None:
    """Empty (no scheduler) or a ReduceLROnPlateau's entries, each of the fresh one's kind,
    its lists one number per parameter group (``n_groups``)."""
    if saved == {}:
        return None
    fresh = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([torch.zeros(1, requires_grad=True)])).state_dict()
    problem = _fields("scheduler", saved, {name: _same_kind(value) for name, value in fresh.items()})
    short = [name for name, value in fresh.items() if isinstance(value, list) and len(saved[name]) != n_groups]
    return problem or (f"scheduler.{short[0]}: expected one number per parameter group ({n_groups})" if short else None)


def _same_kind(template: Any) -> tuple[Callable[[Any], bool], str]:
    if _is_number(template):
        return _is_number, "a number"
    if isinstance(template, list):
        return (lambda v: isinstance(v, list) and all(_is_number(x) for x in v)), "a list of numbers"
    return (lambda v: type(v) is type(template)), type(template).__name__


def _rng_problem(rngs: Any) -> str | None:
    """One process's random states each: the layout :data:`RNG_LAYOUT`, and accepted by
    throwaway torch, numpy and Python generators (their own format checks)."""
    if not isinstance(rngs, list) or not rngs:
        return f"rng: expected one state per process (a list), got {_short(rngs)}"
    for rank, state in enumerate(rngs):
        key = f"rng.{rank}"
        if not isinstance(state, dict) or set(state) != set(RNG_LAYOUT):
            return f"{key}: expected the entries {', '.join(RNG_LAYOUT)}"
        for name, (dtype, shape) in RNG_LAYOUT.items():
            problem = _tensor(f"{key}.{name}", state[name], dtype, shape)
            if problem:
                return problem
        for name, restore in (("torch", _try_torch), ("numpy_keys", _try_numpy), ("python", _try_python)):
            try:
                restore(state)
            except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
                return f"{key}.{name}: not a valid random state ({' '.join(str(exc).split())[:80]})"
    return None


def _try_torch(state: dict[str, torch.Tensor]) -> None:
    # a copy: torch's set_state reads a view into a shared storage (the second process's
    # state, loaded from one stacked tensor) from the wrong place, and crashes the process
    torch.Generator().set_state(state["torch"].clone())


def _try_numpy(state: dict[str, torch.Tensor]) -> None:
    pos, has_gauss, cached = state["numpy_rest"].tolist()
    keys = state["numpy_keys"]
    if not (0 <= pos <= 624 and pos == int(pos) and has_gauss in (0, 1)) or (keys < 0).any() or (keys >= 2**32).any():
        raise ValueError("numpy_rest or numpy_keys out of range")
    np.random.RandomState().set_state(("MT19937", keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))


def _try_python(state: dict[str, torch.Tensor]) -> None:
    python = state["python"].tolist()
    if python[-1] not in (0, 1) or not all(0 <= word < 2**32 for word in python[1:-1]):
        raise ValueError("python state words out of range")
    random.Random().setstate((python[0], tuple(python[1:-1]), None))


_CAST = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def quantization_problem(state: dict[str, Any]) -> str | None:
    """A quantized checkpoint's ``quantization`` record and stored weights (None: fits, or
    not quantized): a known scheme, and for int8 one float32 scale per output channel of
    each int8 weight; for a cast, every floating tensor in its format."""
    record = state.get("quantization")
    if record is None:
        return None
    problem = _fields("quantization", record, {
        "to": (lambda v: v in SCHEMES, f"one of {', '.join(SCHEMES)}"),
        "scheme": (lambda v: isinstance(v, str), "a description"),
        "weights": (lambda v: v in ("ema", "raw"), "ema or raw"),
        "source_digest": (lambda v: v is None or isinstance(v, str), "a digest"),
        "scales": (lambda v: isinstance(v, dict), "a dict of tensors"),
    }, optional=("weights", "source_digest", "scales"))
    if problem:
        return problem
    if record["to"] in _CAST:
        for name, value in state["model_state"].items():
            if value.is_floating_point() and value.dtype != _CAST[record["to"]]:
                return f"model_state.{name}: expected {_CAST[record['to']]}, got {_short(value)}"
        return None
    scales = record.get("scales")
    if scales is None:
        return "quantization.scales: missing"
    for name, scale in scales.items():
        q = state["model_state"].get(name)
        if not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32:
            return f"quantization.scales.{name}: expected a torch.float32 tensor, got {_short(scale)}"
        if not isinstance(q, torch.Tensor) or q.dtype != torch.int8 or tuple(q.shape[:scale.dim()]) != tuple(scale.shape):
            return f"model_state.{name}: expected int8 values with one scale per output channel, got {_short(q)}"
    return None


_EARLY_STOPPING = {
    "monitor": (lambda v: isinstance(v, str), "a metric name"),
    "best": (lambda v: _is_number(v) and not math.isnan(v), "a number"),
    "best_epoch": (_count, "an epoch number >= 0"),
    "bad_epochs": (_count, "a count >= 0"),
    "stopped": (lambda v: isinstance(v, bool), "a bool"),
    "patience": (_count, "a count >= 0"),
}
_SAMPLER = {"seed": (_is_int, "an integer seed"), "epoch": (_count, "an epoch number >= 0")}


_SCALARS = {
    "epoch": (_count, "an integer >= 0"),
    "step": (_count, "an integer >= 0"),
    "world_size": (lambda v: _count(v, 1), "an integer >= 1"),
    "train_time_s": (lambda v: _finite_at_least(v, 0), "a number of seconds >= 0"),
    "precision": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) for k, x in v.items()),
                  "a dict of numbers (the grad scaler's state)"),
    "scheduler": (lambda v: isinstance(v, dict), "a dict"),
}


def _at(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where an entry is missing or not a dict."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def resume_problem(state: dict[str, Any], model: nn.Module) -> str | None:
    """The first problem, as ``key.path: what is wrong``, of ``state`` as a checkpoint the
    trainer resumes ``model`` from (:meth:`pixelgen.training.trainer.Trainer.restore`
    reads exactly these entries); None when it fits."""
    for name in ("epoch", "step", "optimizer", "scheduler", "precision", "early_stopping", "sampler", "rng"):
        if name not in state:
            return f"{name}: missing"
    for name, (test, want) in _SCALARS.items():  # world_size and train_time_s may be absent (older runs)
        if name in state and not test(state[name]):
            return f"{name}: expected {want}, got {_short(state[name])}"
    lr = _at(state, "recipe", "train", "optimizer", "lr")
    checks = (
        lambda: None if _finite_at_least(lr, 0) else f"recipe.train.optimizer.lr: expected a number, got {_short(lr)}",
        lambda: weights_problem("model_state", state["model_state"], model),
        lambda: _ema_problem(state, model),
        lambda: optimizer_problem(state["optimizer"], model),
        lambda: _scheduler_problem(state["scheduler"], len(state["optimizer"]["param_groups"])),
        lambda: _fields("early_stopping", state["early_stopping"], _EARLY_STOPPING, optional=("patience",)),
        lambda: _fields("sampler", state["sampler"], _SAMPLER),
        lambda: _rng_problem(state["rng"]),
    )
    for check in checks:
        problem = check()
        if problem:
            return problem
    return None
