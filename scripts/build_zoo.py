"""Build the model zoo's models from their recipes, or check the files against the manifest.

    python3 scripts/build_zoo.py fmnist_pixelcnn fmnist_diag fmnist_binarized
    python3 scripts/build_zoo.py fmnist_pixelcnn --reuse      # a finished runs/zoo_fmnist_pixelcnn
    python3 scripts/build_zoo.py --check                      # every file's SHA-256, nothing else

For each NAME: ``pixelgen run recipes/zoo_NAME.toml`` (into runs/zoo_NAME; a step budget,
one thread and a fixed seed make it exact; an interrupted run resumes from its last.ckpt),
``pixelgen quantize`` of its best checkpoint to int8, the float and the int8 models evaluated
on the recipe's test split, the int8 file copied into the zoo folder as NAME.ckpt and the
manifest's entry for NAME rewritten (both atomically: a reader sees the old or the new).
The zoo folder is pixelgen/zoo/, or $PIXELGEN_ZOO_DIR, or --zoo-dir.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tomllib

from pixelgen.cli import main as pixelgen_main
from pixelgen.errors import PixelgenError
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store import zoo
from pixelgen.store.files import atomic_writer
from pixelgen.store.runs import METRICS_JSON, final_checkpoint
from pixelgen.study.from_checkpoint import evaluate_checkpoint, quantize_checkpoint

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
#: Each zoo model's size limit (the issue: "each at most about 300 KB").
MAX_BYTES = 320 * 1024


def _train(recipe: pathlib.Path, run_dir: pathlib.Path, reuse: bool) -> None:
    """The recipe's run in ``run_dir``: trained, resumed, or (``reuse``) taken as it is if finished."""
    if reuse and (run_dir / METRICS_JSON).is_file():
        print(f"{run_dir}: finished; reused", flush=True)
        return
    resume = ["--resume"] if (run_dir / "last.ckpt").is_file() else []
    if pixelgen_main(["run", str(recipe), "--out", str(run_dir), *resume]) != 0:
        raise PixelgenError(f"{recipe}: pixelgen run failed (above)")


def _data_label(recipe_data: dict) -> str:
    """The data set's name and the options the recipe gives it (e.g. ``fashion_mnist binarize=true``)."""
    options = recipe_data.get("options", {})
    return " ".join([recipe_data["name"], *(f"{k}={str(v).lower()}" for k, v in sorted(options.items()))])


def build(name: str, recipes: pathlib.Path, runs: pathlib.Path, folder: pathlib.Path, reuse: bool) -> zoo.ZooModel:
    """Train, quantize, evaluate and install zoo model ``name``; its manifest entry."""
    recipe = recipes / f"zoo_{name}.toml"
    if not recipe.is_file():
        raise PixelgenError(f"{name}: no recipe {recipe}")
    source = tomllib.loads(recipe.read_text())
    run_dir = runs / f"zoo_{name}"
    _train(recipe, run_dir, reuse)
    best = final_checkpoint(run_dir)
    if best is None:
        raise PixelgenError(f"{run_dir}: no best.ckpt or last.ckpt after the run")
    int8 = run_dir / f"{best.stem}-int8.ckpt"
    quantize_checkpoint(best, "int8", int8, force=True)
    float_figures = evaluate_checkpoint(best, "test", accelerator="cpu")
    int8_figures = evaluate_checkpoint(int8, "test", accelerator="cpu")
    state = ckpt_io.load_checkpoint(int8)
    model = ckpt_io.model_from_checkpoint(state)
    _compare_weights(name, state["model_digest"], folder)
    target = folder / f"{name}.ckpt"
    with atomic_writer(target) as handle:
        handle.write(int8.read_bytes())
    record = zoo.ZooModel(
        name=name, file=target.name, sha256=zoo.sha256_of(target), weights_sha256=state["model_digest"],
        bytes=target.stat().st_size,
        model=source["model"]["name"], data=_data_label(source["data"]),
        parameters=sum(p.numel() for p in model.parameters()),
        bits_per_dim=round(int8_figures["bits_per_dim"], 6), bits_per_dim_float=round(float_figures["bits_per_dim"], 6),
        test_images=int8_figures["n_images"], recipe=_relative(recipe),
        command=f"python3 scripts/build_zoo.py {name}",
        description=source.get("description", "").removeprefix("Zoo: "),
    )
    zoo.write_entry(record, folder)
    return record


def _compare_weights(name: str, weights_sha256: str, folder: pathlib.Path) -> None:
    """Say whether the rebuilt weights are the ones the manifest records for ``name`` (a rebuild
    from the recipe reproduces them bit for bit; the file's own SHA-256 also covers timings)."""
    previous = zoo.read_manifest(folder).get(name)
    if previous is not None:
        same = previous.weights_sha256 == weights_sha256
        print(f"{name}: rebuilt weights {'are' if same else 'DIFFER from'} the recorded ones "
              f"({previous.weights_sha256[:16]}...)", file=sys.stdout if same else sys.stderr, flush=True)


def _relative(path: pathlib.Path) -> str:
    """``path`` relative to the repository where it lies in it (as the manifest records recipes)."""
    path = path.resolve()
    return str(path.relative_to(REPOSITORY)) if REPOSITORY in path.parents else str(path)


def check(folder: pathlib.Path) -> int:
    """Verify every zoo file's SHA-256 against the manifest: 0 if all match, 1 otherwise."""
    failures = 0
    for model in zoo.list_zoo(folder):
        try:
            zoo.verified_file(model, folder)
            print(f"ok     {model.name}  {model.file}  {model.sha256}")
        except zoo.ZooError as exc:
            failures += 1
            print(f"FAILED {exc}")
    return 1 if failures else 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="zoo models to build (recipes/zoo_NAME.toml)")
    parser.add_argument("--check", action="store_true", help="only verify every file's SHA-256")
    parser.add_argument("--zoo-dir", type=pathlib.Path, help="zoo folder (default: $PIXELGEN_ZOO_DIR, else pixelgen/zoo)")
    parser.add_argument("--recipes", type=pathlib.Path, default=REPOSITORY / "recipes", help="folder of zoo_NAME.toml")
    parser.add_argument("--runs", type=pathlib.Path, default=pathlib.Path("runs"), help="where runs go (default: runs)")
    parser.add_argument("--reuse", action="store_true", help="take a finished run folder as it is")
    args = parser.parse_args(argv)
    if not args.check and not args.names:
        parser.error("name the models to build, or pass --check")
    return args


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    folder = args.zoo_dir or zoo.zoo_dir()
    try:
        if args.check:
            return check(folder)
        for name in args.names:
            record = build(name, args.recipes, args.runs, folder, args.reuse)
            print(f"{zoo.PREFIX}{name}: {record.bytes:,} bytes, {record.bits_per_dim:.4f} bits/dim int8 "
                  f"({record.bits_per_dim_float:.4f} float) on {record.test_images} test images, "
                  f"sha256 {record.sha256}", flush=True)
            if record.bytes > MAX_BYTES:
                print(f"warning: {name} is {record.bytes:,} bytes, over the zoo's {MAX_BYTES:,}", file=sys.stderr)
    except PixelgenError as exc:
        print(f"build_zoo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(run())
