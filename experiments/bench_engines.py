"""Speed of one FF training step, vectorized engine vs Brian2 (each code generation target).

One training step = the 4 ``run_phase`` calls of ``FFNetwork.train_batch``: positive and negative
phase, then both replayed with the FF modulators (weight updates accumulated). Network 784 -> 500
-> 500 (+10 label channels), 50 steps, batch 64 for the vectorized engine. Brian2 simulates a
batch as replicated networks (batch * 647k synapses), so it may be run on a smaller batch
(``--brian2-batch``); the ratio is then taken per sample, and the JSON says so.

    PYTHONPATH=. python experiments/bench_engines.py [--brian2-batch 8] [--targets numpy cython]

Writes results/bench_engines.json (with the BLAS set-up from threadpoolctl).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from spikeff import NeuronConfig
from spikeff.encoding import SpikeSource, overlay_labels
from spikeff.engines import brian2_engine, vectorized
from spikeff.goodness import get_goodness
from spikeff.learning import ff_loss
from spikeff.neuron import DiscreteLIF

ROOT = Path(__file__).resolve().parent.parent


def training_step(run_phase, weights, sources, lif, goodness, chunk_steps=10):
    """The 4 run_phase calls of one FF step; returns the seconds taken."""
    t0 = time.perf_counter()
    biases = [None] * len(weights)
    pos = run_phase(weights, biases, lif, goodness, sources[0], chunk_steps)
    neg = run_phase(weights, biases, lif, goodness, sources[1], chunk_steps)
    mods = [ff_loss(gp, gn, "threshold", 1.0, 1.0)[1:] for gp, gn in zip(pos.goodness, neg.goodness)]
    run_phase(weights, biases, lif, goodness, sources[0], chunk_steps, modulators=[m[0] for m in mods])
    run_phase(weights, biases, lif, goodness, sources[1], chunk_steps, modulators=[m[1] for m in mods])
    return time.perf_counter() - t0


def problem(batch, dtype, n_steps, sizes, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((batch, 784)) * (rng.random((batch, 784)) < 0.2)      # sparse, MNIST-like
    y = rng.integers(0, 10, batch)
    sources = [SpikeSource(overlay_labels(X, lab, 10), "rate", n_steps, 1e-3, 200.0, [seed, k], dtype=dtype)
               for k, lab in enumerate((y, (y + 1 + rng.integers(0, 9, batch)) % 10))]
    dims = [794, *sizes]
    weights = [(rng.standard_normal((n, m)) / np.sqrt(m) * 2.0).astype(dtype) for m, n in zip(dims[:-1], dims[1:])]
    return weights, sources


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--brian2-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 500])
    ap.add_argument("--targets", nargs="+", default=list(brian2_engine.TARGETS))
    ap.add_argument("--repeats", type=int, default=3, help="timed steps of the vectorized engine (min taken)")
    ap.add_argument("--brian2-repeats", type=int, default=2, help="timed Brian2 steps after the first (min taken)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_engines.json"))
    args = ap.parse_args(argv)
    import brian2
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    res = {"vectorized": {}, "brian2": {}}
    for dtype in ("float32", "float64"):
        W, src = problem(args.batch, dtype, args.steps, args.sizes)
        training_step(vectorized.run_phase, W, src, lif, g)                   # warm-up
        t = min(training_step(vectorized.run_phase, W, src, lif, g) for _ in range(args.repeats))
        res["vectorized"][dtype] = {"batch": args.batch, "seconds_per_step": t,
                                    "seconds_per_sample": t / args.batch}
        print("vectorized", dtype, res["vectorized"][dtype], flush=True)
    W, src = problem(args.brian2_batch, "float64", args.steps, args.sizes)
    for target in args.targets:
        brian2_engine.TARGET = target
        first = training_step(brian2_engine.run_phase, W, src, lif, g)      # includes code generation/compile
        t = min(training_step(brian2_engine.run_phase, W, src, lif, g) for _ in range(args.brian2_repeats))
        res["brian2"][target] = {"batch": args.brian2_batch, "seconds_first_step": first,
                                 "seconds_per_step": t, "seconds_per_sample": t / args.brian2_batch}
        print("brian2", target, res["brian2"][target], flush=True)
    ratios = {f"{target}_vs_vectorized_{dtype}": res["brian2"][target]["seconds_per_sample"]
              / res["vectorized"][dtype]["seconds_per_sample"]
              for target in res["brian2"] for dtype in res["vectorized"]}
    out = {"experiment": "bench_engines",
           "what": "one FF training step = 4 run_phase calls (2 phases, 2 replays with modulators)",
           "network": [794, *args.sizes], "n_steps": args.steps,
           "note": (f"vectorized at batch {args.batch}, Brian2 at batch {args.brian2_batch} (replicated "
                    f"networks: {args.brian2_batch} x {sum(a * b for a, b in zip([794, *args.sizes], args.sizes))} synapses)"
                    + ("; ratios are per sample" if args.brian2_batch != args.batch else "")
                    + ". Brian2 times include building the network in every run_phase call; "
                    "seconds_first_step also includes code generation / compilation. Times are the minimum over "
                    f"{args.repeats} (vectorized) / {args.brian2_repeats} (Brian2) steps on a shared 2-core machine."),
           "speed_ratio_vectorized_over_brian2": ratios, "results": res,
           "brian2_version": brian2.__version__, "numpy_version": np.__version__,
           "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "load_average_1_5_15min_at_end": os.getloadavg(),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
           "threadpool_info": threadpool_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
