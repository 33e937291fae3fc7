"""The checkpoint is checked whole: every entry a resume reads is covered by the digest,
and its structure is checked before anything is used, each failure one line naming the
key; byte-level damage to a real checkpoint file either changes nothing or is refused.

The leaves perturbed are enumerated from a real tiny checkpoint (a one-epoch PixelCNN run
with an average of its weights), not from a hand list. The fuzzing runs
``PIXELGEN_FUZZ_EXAMPLES`` examples (default 200), derandomized, and prints its counts.
"""

from __future__ import annotations

import collections
import copy
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any, Iterator

import pytest
import torch
from datafiles import write_tiny_run_recipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelgen import cli
from pixelgen.errors import CheckpointError, PixelgenError
from pixelgen.store import checkpoint as ckpt_io

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
FUZZ_EXAMPLES = int(os.environ.get("PIXELGEN_FUZZ_EXAMPLES", "200"))
# What the digest bookkeeping is: checked by the loader itself, recomputed by the writer.
BOOKKEEPING = ("format", "format_version", "digest_version", "digests", "model_digest")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Any]:
    """A finished one-epoch run with an average of its weights; its last.ckpt, read clean."""
    base = tmp_path_factory.mktemp("whole")
    recipe = write_tiny_run_recipe(base, base / "run", epochs=1, ema_decay=0.9)
    assert cli.main(["run", str(recipe)]) == 0
    path = base / "run" / "last.ckpt"
    state = ckpt_io.load_checkpoint(path)
    return {"base": base, "recipe": recipe, "path": path, "raw": path.read_bytes(), "state": state,
            "model": ckpt_io.model_from_checkpoint(state)}


# ------------------------------------------------------------------ leaves and perturbations


def leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every leaf of a checkpoint: (path of keys and list indices, value); empty dicts and
    lists count as leaves."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, (list, tuple)) and value:
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def changed(value: Any, how: str) -> Any:
    """``value`` perturbed: ``value`` (another value, same type), ``dtype`` (same value,
    another type: tensors to another dtype, ints to floats), ``type`` (another kind);
    None where the perturbation does not apply."""
    if how == "type":
        return 0 if isinstance(value, str) else "damaged"
    if isinstance(value, torch.Tensor):
        if how == "dtype":
            return value.to(torch.float32 if value.dtype == torch.float64 else torch.float64)
        if not value.numel():
            return torch.zeros(1, dtype=value.dtype)
        bumped = value.clone()
        bumped.view(-1)[0] = ~bumped.view(-1)[0] if value.dtype == torch.bool else bumped.view(-1)[0] + 1
        return bumped
    if how == "dtype":
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if math.isfinite(value) else 0.0
    if isinstance(value, str):
        return value + "x"
    return {"added": 1} if isinstance(value, (dict, list, tuple)) else 0  # None, an empty container


def perturbed(value: Any, path: tuple, how: str) -> Any:
    """``value`` (a checkpoint) with the leaf at ``path`` perturbed (``how``: see
    :func:`changed`, or ``remove``), every container on the way copied, the rest shared;
    None where that does not apply."""
    if not path:
        return changed(value, how)
    key, rest = path[0], path[1:]
    copied = dict(value) if isinstance(value, dict) else list(value)
    if not rest and how == "remove":
        del copied[key]
    else:
        new = perturbed(value[key], rest, how)
        if new is None:
            return None
        copied[key] = new
    return tuple(copied) if isinstance(value, tuple) else copied


def cases(state: dict[str, Any], hows: tuple[str, ...], skip: tuple[str, ...] = (),
          every: bool = True) -> Iterator[tuple[tuple, str, dict]]:
    """(path, how, damaged state) for every leaf outside the entries ``skip`` and every
    perturbation in ``hows`` that applies; with ``every`` False one each, taking ``hows``
    in turn from leaf to leaf."""
    for n, (path, _) in enumerate(leaves(state)):
        if path[0] in skip:
            continue
        for how in hows if every else hows[n % len(hows):] + hows[:n % len(hows)]:
            damaged = perturbed(state, path, how)
            if damaged is not None:
                yield path, how, damaged
                if not every:
                    break


def dotted(path: tuple) -> str:
    return ".".join(map(str, path))


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


# ------------------------------------------------------------------ (a) the digest covers every leaf


def test_every_leaf_of_a_checkpoint_is_covered_by_its_digest(trained, tmp_path):
    """Any leaf changed, retyped or removed and the file written without a new digest:
    refused in one line naming the entry. Each leaf once, the four ways taken in turn (a
    load takes a while); PIXELGEN_EVERY_PERTURBATION=1 tries every way on every leaf."""
    state, out = trained["state"], tmp_path / "edited.ckpt"
    assert ckpt_io.digest_version(state) == ckpt_io.DIGEST_VERSION == 2
    n_leaves = sum(1 for _ in leaves(state))
    assert n_leaves > 150  # weights, average, moments, scheduler, random states, recipe, ...
    every = os.environ.get("PIXELGEN_EVERY_PERTURBATION") == "1"
    tried = collections.Counter()
    for path, how, damaged in cases(state, ("value", "type", "remove", "dtype"), every=every):
        torch.save(damaged, out)
        with pytest.raises(CheckpointError) as refused:
            ckpt_io.load_checkpoint(out)
        message = str(refused.value)
        entries = {path[0], *path[1:2]} if path[0] == "digests" else {path[0]}  # a digest names what it covers
        assert one_line(message) and any(f"'{e}'" in message or f"{e} " in message for e in entries), \
            (dotted(path), how, message)
        tried[how] += 1
    if every:
        assert tried["value"] == tried["type"] == tried["remove"] == n_leaves and tried["dtype"] > 100
    else:
        assert sum(tried.values()) == n_leaves and min(tried.values()) > 20


def test_the_digest_is_canonical(trained):
    state = trained["state"]
    again = copy.deepcopy(state)
    again["optimizer"]["param_groups"][0]["betas"] = list(again["optimizer"]["param_groups"][0]["betas"])
    assert ckpt_io.entry_digests(again) == ckpt_io.entry_digests(state)  # a tuple read back as a list
    reordered = {key: state[key] for key in reversed(list(state))}
    assert ckpt_io.entry_digests(reordered) == ckpt_io.entry_digests(state)
    assert ckpt_io.canonical_digest({0: 1}) != ckpt_io.canonical_digest({"0": 1})
    assert ckpt_io.canonical_digest(1) != ckpt_io.canonical_digest(1.0) != ckpt_io.canonical_digest(True)
    assert ckpt_io.canonical_digest(torch.zeros(2)) != ckpt_io.canonical_digest(torch.zeros(2, dtype=torch.float64))
    assert ckpt_io.canonical_digest(torch.zeros(2, 1)) != ckpt_io.canonical_digest(torch.zeros(1, 2))


# ------------------------------------------------------------------ (b) the structure, digest recomputed


# Not read by a resume: the epoch's metrics row, and the stored recipe and model, which a
# resume compares with the recipe given (tested in test_bad_input / test_train).
NOT_RESUMED = ("metrics", "recipe", "model", *BOOKKEEPING)
# Removals a resume accepts, each for a reason: entries older pixelgens did not write
# (the run's process count; its training time, which counts from 0; early stopping's
# patience, which the recipe gives), and Adam flags older torch did not write, which
# torch fills with the defaults pixelgen trains with.
ACCEPTED_REMOVALS = {
    "world_size", "train_time_s", "early_stopping.patience",
    *(f"optimizer.param_groups.0.{flag}" for flag in
      ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay")),
}


def test_structural_damage_is_refused_before_a_resume_naming_the_key(trained, tmp_path):
    """Any leaf a resume reads retyped, of another dtype or removed (the digest written
    anew, so only the structure is wrong): refused in one line naming the key (its path or
    its entry's), except the removals of ACCEPTED_REMOVALS. In memory, every leaf every way:
    a file round trip keeps the structure (the command-line test below goes through one)."""
    state, model, out = trained["state"], trained["model"], tmp_path / "edited.ckpt"
    accepted, tried = set(), 0
    tensors = {path for path, value in leaves(state) if isinstance(value, torch.Tensor)}
    for path, how, damaged in cases(state, ("dtype", "type", "remove"), skip=NOT_RESUMED):
        if how == "dtype" and path not in tensors:
            continue  # an int where a number is read (a float) is not damage
        tried += 1
        try:
            ckpt_io.check_resumable(out, damaged, model)
        except CheckpointError as refused:
            message = str(refused)
            named = [dotted(path[:n]) for n in range(len(path), 0, -1) if f"{dotted(path[:n])}" in message]
            assert one_line(message) and named and len(named[0].split(".")) >= min(2, len(path)), \
                (dotted(path), how, message)
        else:
            assert how == "remove", (dotted(path), how)
            accepted.add(dotted(path))
    assert tried > 100 and accepted == ACCEPTED_REMOVALS


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.update(step=3.5), "step: expected an integer >= 0, got float 3.5"),
    (lambda s: s.update(step=-1), "step: expected an integer >= 0"),
    (lambda s: s.update(epoch="1"), "its 'epoch' entry is not an integer >= 0"),
    (lambda s: s.pop("optimizer"), "optimizer: missing"),
    (lambda s: s["optimizer"]["state"][0].update(step=torch.tensor(2.5)), "optimizer.state.0.step: expected a whole number"),
    (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)), "optimizer.state.0.exp_avg: expected a torch.float32 tensor of shape (8, 1, 7, 7)"),
    (lambda s: s["optimizer"]["state"][1]["exp_avg_sq"].fill_(-1.0), "optimizer.state.1.exp_avg_sq: non-finite or negative"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr=float("nan")), "optimizer.param_groups.0.lr"),
    (lambda s: s["rng"][0].update(torch=s["rng"][0]["torch"][:100]), "rng.0.torch: not a valid random state"),
    (lambda s: s["rng"][0]["torch"].fill_(0), "rng.0.torch: not a valid random state"),
    (lambda s: s["rng"][0]["numpy_rest"].__setitem__(0, 700.0), "rng.0.numpy_keys: not a valid random state"),
    (lambda s: s["rng"][0]["python"].__setitem__(625, 1000), "rng.0.python: not a valid random state"),
    (lambda s: s.update(rng=[]), "rng: expected one state per process"),
    (lambda s: s["early_stopping"].update(stopped="no"), "early_stopping.stopped: expected a bool"),
    (lambda s: s["scheduler"].update(mode=1), "scheduler.mode: expected str"),
    (lambda s: s["sampler"].update(epoch=-2), "sampler.epoch: expected an epoch number >= 0"),
    (lambda s: s.pop("ema_state"), "ema_state: missing (the run kept an average of its weights)"),
    (lambda s: s["ema_state"].update({"module.input_conv.bias": torch.zeros(3)}), "ema_state.module.input_conv.bias: expected a torch.float32 tensor of shape (8,)"),
    (lambda s: s["model_state"].update(extra=torch.zeros(1)), "model_state.extra: not a tensor of model"),
])
def test_each_structural_problem_is_one_line_naming_the_key_and_the_fix(trained, tmp_path, edit, needle):
    state = copy.deepcopy(trained["state"])
    edit(state)
    ckpt_io.save_checkpoint(tmp_path / "edited.ckpt", {k: v for k, v in state.items() if k not in BOOKKEEPING})
    with pytest.raises(CheckpointError) as refused:
        ckpt_io.check_resumable(tmp_path / "edited.ckpt", ckpt_io.load_checkpoint(tmp_path / "edited.ckpt"),
                                trained["model"])
    assert needle in str(refused.value) and one_line(str(refused.value))
    fixes = ("resume from another one (last.ckpt / best.ckpt), or pass --out DIR to train afresh",  # the schema
             "re-run training or pass another file")  # load_checkpoint's own checks (an epoch)
    assert any(fix in str(refused.value) for fix in fixes)


def test_a_damaged_resume_through_the_command_line_is_one_line_and_changes_nothing(trained, tmp_path, capsys):
    """The real ``run --resume``: refused before anything is used, the folder untouched."""
    folder = tmp_path / "run"
    state = copy.deepcopy(trained["state"])
    state["optimizer"]["state"][2]["exp_avg"] = state["optimizer"]["state"][2]["exp_avg"].double()
    folder.mkdir()
    ckpt_io.save_checkpoint(folder / "last.ckpt", {k: v for k, v in state.items() if k not in BOOKKEEPING})
    before = (folder / "last.ckpt").read_bytes()
    assert cli.main(["run", str(trained["recipe"]), "--out", str(folder), "--resume", "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.state.2.exp_avg: expected a torch.float32 tensor" in err
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"] and (folder / "last.ckpt").read_bytes() == before


def test_a_weights_only_dtype_change_is_refused_for_evaluation_too(trained, tmp_path):
    state = copy.deepcopy(trained["state"])
    state["ema_state"]["module.head.logits.bias"] = state["ema_state"]["module.head.logits.bias"].double()
    with pytest.raises(CheckpointError, match=r"ema_state.module.head.logits.bias: expected a torch.float32"):
        ckpt_io.model_from_checkpoint(state)


# ------------------------------------------------------------------ older checkpoints


@pytest.mark.parametrize("fixture, version", [
    ("legacy_v0_1/runs/pixelcnn/best.ckpt", 0), ("legacy_v0_1/runs/row_lstm/last.ckpt", 0),
    ("diagonal_v0_2/runs/last.ckpt", 1),
])
def test_older_checkpoints_have_their_digest_version_and_still_resume(fixture, version, tmp_path):
    state = ckpt_io.load_checkpoint(FIXTURES / fixture)
    assert ckpt_io.digest_version(state) == version and "digests" not in state
    ckpt_io.check_resumable(FIXTURES / fixture, state, ckpt_io.model_from_checkpoint(state))
    resaved = ckpt_io.save_checkpoint(tmp_path / "again.ckpt", dict(state))
    again = ckpt_io.load_checkpoint(resaved)
    assert ckpt_io.digest_version(again) == 2
    assert {k: ckpt_io.canonical_digest(v) for k, v in again.items() if k not in BOOKKEEPING} == \
        {k: ckpt_io.canonical_digest(v) for k, v in state.items() if k not in BOOKKEEPING}


def test_an_older_checkpoint_with_damaged_moments_passes_its_weights_digest_but_not_its_structure(tmp_path):
    state = torch.load(FIXTURES / "diagonal_v0_2/runs/last.ckpt", weights_only=True)
    state["optimizer"]["state"][0]["exp_avg_sq"] = state["optimizer"]["state"][0]["exp_avg_sq"][:1]
    state["optimizer"]["state"][0]["step"] = torch.tensor(1.5)
    torch.save(state, tmp_path / "old.ckpt")
    loaded = ckpt_io.load_checkpoint(tmp_path / "old.ckpt")  # version 1: the weights' digest holds
    assert ckpt_io.digest_version(loaded) == 1
    with pytest.raises(CheckpointError, match=r"optimizer.state.0.step: expected a whole number"):
        ckpt_io.check_resumable(tmp_path / "old.ckpt", loaded, ckpt_io.model_from_checkpoint(loaded))


def test_a_digest_version_from_a_newer_pixelgen_says_upgrade(trained, tmp_path):
    state = dict(trained["state"], digest_version=3)
    torch.save(state, tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointError, match="digest_version 3 is not one this pixelgen reads.*upgrade pixelgen"):
        ckpt_io.load_checkpoint(tmp_path / "newer.ckpt")


def test_a_quantized_checkpoint_is_digested_whole_and_its_record_checked(trained, tmp_path):
    small = ckpt_io.quantized_checkpoint(trained["state"], "int8")
    ckpt_io.save_checkpoint(tmp_path / "q.ckpt", small)
    state = ckpt_io.load_checkpoint(tmp_path / "q.ckpt")
    assert ckpt_io.digest_version(state) == 2 and set(state["digests"]) >= {"quantization", "model_state", "recipe"}
    for path, how, damaged in cases(state, ("value", "remove"), skip=BOOKKEEPING):
        torch.save(damaged, tmp_path / "edited.ckpt")
        with pytest.raises(CheckpointError):
            ckpt_io.load_checkpoint(tmp_path / "edited.ckpt")
    name = next(iter(small["quantization"]["scales"]))
    small["model_state"][name] = small["model_state"][name].float()
    ckpt_io.save_checkpoint(tmp_path / "q.ckpt", small)
    with pytest.raises(CheckpointError, match=f"model_state.{name}: expected int8 values"):
        ckpt_io.load_checkpoint(tmp_path / "q.ckpt")


# ------------------------------------------------------------------ byte-level fuzzing


def damage(raw: bytes, kind: str, offset: int, length: int, noise: bytes) -> bytes:
    """``raw`` with ``length`` bytes from ``offset`` xor-ed with ``noise`` (never zero),
    cut at ``offset``, or with ``noise`` appended."""
    if kind == "truncate":
        return raw[:offset % len(raw)]
    if kind == "append":
        return raw + noise
    start = offset % len(raw)
    flipped = bytearray(raw)
    for i in range(start, min(len(raw), start + length)):
        flipped[i] ^= noise[(i - start) % len(noise)] or 0xA5
    return bytes(flipped)


def loaded_result(path: pathlib.Path, model: torch.nn.Module) -> tuple[dict[str, str], torch.Tensor]:
    """What evaluation, sampling and a resume read from ``path``: the checkpoint (every
    entry's digest) after the same checks, and the log-likelihoods of the loaded model."""
    state = ckpt_io.load_checkpoint(path)
    rebuilt = ckpt_io.model_from_checkpoint(state)
    ckpt_io.check_resumable(path, state, model)
    x = torch.arange(28 * 28).reshape(1, 1, 28, 28) % 256
    with torch.no_grad():
        return ckpt_io.entry_digests(state), rebuilt(x)


class Hang(Exception):
    pass


def _hang(signum: int, frame: Any) -> None:
    raise Hang


def test_byte_level_damage_loads_identically_or_is_refused_in_one_line(trained, tmp_path_factory):
    raw, model = trained["raw"], trained["model"]
    want_digests, want_logits = loaded_result(trained["path"], model)
    out = tmp_path_factory.mktemp("fuzz") / "damaged.ckpt"
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(["flip", "flip", "truncate", "append"]),
           offset=st.integers(0, len(raw) - 1), length=st.integers(1, 64),
           noise=st.binary(min_size=1, max_size=64))
    def one(kind: str, offset: int, length: int, noise: bytes) -> None:
        out.write_bytes(damage(raw, kind, offset, length, noise))
        previous = signal.signal(signal.SIGALRM, _hang)
        signal.alarm(20)
        try:
            digests, logits = loaded_result(out, model)
        except PixelgenError as refused:
            assert one_line(str(refused)), str(refused)
            outcomes[(kind, "refused: " + refusal_kind(str(refused)))] += 1
        else:
            assert digests == want_digests and torch.equal(logits, want_logits), (kind, offset, length)
            outcomes[(kind, "loaded, identical")] += 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    one()
    total = sum(outcomes.values())
    assert total >= FUZZ_EXAMPLES  # hypothesis runs each example at least once
    print(f"\nbyte-level fuzzing of a {len(raw):,}-byte checkpoint: {total} damaged files ->",
          json.dumps({f"{k} / {o}": n for (k, o), n in sorted(outcomes.items())}, indent=1))


def refusal_kind(message: str) -> str:
    """Which check refused a damaged file (for the printed counts): the digest of the
    weights (which version 1 checked too) or of another entry (new in version 2), torch's
    reader of the file, or the structure."""
    if "digest" in message:
        weights = any(f"'{entry}'" in message for entry in ("model_state", "ema_state", "model_digest"))
        return "digest of the weights" if weights or "the weights do not match" in message else "digest of another entry"
    if "is not a pixelgen checkpoint" in message:
        return "torch's reader"
    return "structure"


def test_byte_level_damage_through_the_command_line(trained, tmp_path, capsys):
    """``pixelgen eval`` of damaged files in real processes (damage in the pickle, in a
    tensor's bytes, cut short, with bytes appended): the clean figures, or one line and
    status 2."""
    raw = trained["raw"]
    assert cli.main(["eval", str(trained["path"]), "--json", "--accelerator", "cpu"]) == 0
    clean = json.loads(capsys.readouterr().out)
    env = {**os.environ, "PIXELGEN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    outcomes = []
    for kind, where in [("flip", 0.05), ("flip", 0.5), ("truncate", 0.7), ("append", 1.0)]:
        damaged = tmp_path / f"{kind}-{where}.ckpt"
        damaged.write_bytes(damage(raw, kind, int(where * (len(raw) - 1)), 16, bytes(range(1, 17))))
        got = subprocess.run([sys.executable, "-m", "pixelgen", "eval", str(damaged), "--json", "--accelerator", "cpu"],
                             capture_output=True, text=True, timeout=300, env=env, cwd=trained["base"])
        if got.returncode == 0:
            assert {**json.loads(got.stdout), "checkpoint": clean["checkpoint"]} == clean
        else:
            assert got.returncode == 2 and got.stderr.startswith("pixelgen: error: "), got.stderr
            assert got.stderr.count("\n") == 1, got.stderr
        outcomes.append(got.returncode)
    assert outcomes[0] == outcomes[1] == outcomes[2] == 2 and outcomes[3] == 0  # appended bytes: ignored


def test_random_states_saved_as_views_of_one_storage_check_and_restore():
    """A two-process checkpoint loads its processes' states as views into one storage; the
    second sits at an offset, which torch's ``set_state`` reads from the wrong place (it
    crashed the process). The check and the restore both take copies."""
    from pixelgen.store.checkpoint_schema import _rng_problem

    one = ckpt_io.rng_state()
    stacked = {key: torch.stack([value, value]) for key, value in one.items()}
    states = [{key: value[rank] for key, value in stacked.items()} for rank in range(2)]
    assert states[1]["torch"].storage_offset() > 0
    assert _rng_problem(states) is None
    before = torch.get_rng_state()
    ckpt_io.set_rng_state(states[1])
    assert torch.equal(torch.get_rng_state(), one["torch"])
    torch.set_rng_state(before)
