"""Regenerate every committed result (``results/*.json`` and figures) from the current recipes.

    python experiments/run_all.py                  # full size: the README's figures (hours on 2 cores)
    python experiments/run_all.py --size small --out /tmp/results   # CI-sized: minutes, not committed
    python experiments/run_all.py --list           # the steps and their commands
    python experiments/run_all.py --only sleep goodness_functions

Each step is the command recorded in the file it writes (run from the repository root); the files
record their provenance (commit, recipe and config hashes, environment, threads), and
``tests/test_results.py`` fails when a committed file no longer matches its recipe. Steps whose
optional dependency is missing (Brian2 targets, Lava, the NIR importers of the `interop` extra, the
Fashion-MNIST files) fail alone: the others still run, and the exit status is 1. Some committed
files were made with other options than these defaults (smaller runs on a loaded machine: see the
command each file records, and the README's headline table).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# name: (full-size command, small-size command or None); "{out}" is the output directory
STEPS = {
    "goodness_functions": ("experiments/goodness_functions.py --size full --out {out}",
                           "experiments/goodness_functions.py --size small --out {out}"),
    "negative_strategies": ("experiments/negative_strategies.py --size full --out {out}",
                            "experiments/negative_strategies.py --size small --out {out}"),
    "sleep": ("experiments/sleep.py --size full --out {out}", "experiments/sleep.py --size small --out {out}"),
    "time_and_encoding": ("experiments/time_and_encoding.py --size full --out {out}",
                          "experiments/time_and_encoding.py --size small --out {out}"),
    "activity_energy": ("experiments/activity_energy.py --size full --out {out}",
                        "experiments/activity_energy.py --size small --out {out}"),
    "float32_vs_float64": ("experiments/float32_vs_float64.py --out {out}/float32_vs_float64.json",
                           "experiments/float32_vs_float64.py --epochs 1 --out {out}/float32_vs_float64.json"),
    "lava_quantization": ("experiments/lava_quantization.py --out {out}/lava_quantization.json",
                          "experiments/lava_quantization.py --epochs 1 --n-lava 1 --out {out}/lava_quantization.json"),
    "engines_agree": ("experiments/engines_agree.py --target cython --out {out}/engines_agree.json", None),
    "bench_engines": ("experiments/bench_engines.py --targets cpp_standalone cython numpy --repeats 2 "
                      "--brian2-repeats 1 --max-step-seconds 60 --out {out}/bench_engines.json", None),
    "kernel_spread": ("experiments/kernel_spread.py --out {out}/kernel_spread.json",
                      "experiments/kernel_spread.py --kernels default --threads 2 1 --epochs 1 --out {out}/kernel_spread.json"),
    "bench": ("-m spikeff bench --out {out}/bench.json", "-m spikeff bench --quick --out {out}/bench.json"),
    "recipe_digits": ("experiments/recipe_seeds.py --config models/digits.toml --dataset digits --seeds 0 1 2 --out {out}",
                      "experiments/recipe_seeds.py --config models/digits.toml --dataset digits --seeds 0 1 "
                      "--size small --out {out}"),
    "digits_figures": ("-m spikeff train --config models/digits.toml --out runs/digits --no-progress && "
                       "{py} -m spikeff plot runs/digits --n-samples 360 --out {out}/digits_figures && "
                       "cp runs/digits/metrics.json {out}/digits_figures/metrics.json", None),
    "bench_store": ("-m spikeff bench --only store --out {out}/bench_store.json", None),
    "nir_interop": ("experiments/nir_interop.py --size full --out {out}/nir_interop.json",
                    "experiments/nir_interop.py --size small --out {out}/nir_interop.json"),
    "biological_regime": ("experiments/biological_regime.py --size full --out {out}",
                          "experiments/biological_regime.py --size small --out {out}"),
    "bench_conv": ("experiments/bench_conv.py --batch 50 --repeats 2 --out {out}/bench_conv.json", None),
    "fashion_mnist_conv": ("experiments/fashion_mnist_conv.py --out {out}/fashion_mnist_conv.json", None),
    "fashion_mnist": ("experiments/fashion_mnist.py --seeds 0 1 --jobs 2 --out {out}",
                      "experiments/fashion_mnist.py --size small --out {out}"),
}


def command(name: str, size: str, out: str) -> str | None:
    full, small = STEPS[name]
    cmd = full if size == "full" else small
    if cmd is None:
        return None
    return f"{shlex.quote(PY)} " + cmd.format(out=shlex.quote(out), py=shlex.quote(PY))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["full", "small"], default="full")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    p.add_argument("--skip", nargs="+", choices=list(STEPS), default=[], help="leave these steps out")
    p.add_argument("--list", action="store_true", help="print the steps and their commands, run nothing")
    args = p.parse_args(argv)
    names = [n for n in (args.only or STEPS) if n not in args.skip]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        cmd = command(name, args.size, args.out)
        if args.list:
            print(f"{name}: {cmd or '(full size only)'}")
            continue
        if cmd is None:
            print(f"run_all: {name}: no {args.size} version (full size only); skipped", flush=True)
            continue
        print(f"run_all: {name}: {cmd}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, shell=True, cwd=ROOT).returncode
        print(f"run_all: {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
