"""Speed of one FF training step, vectorized engine vs Brian2 (each code generation target).

One training step = what ``FFNetwork.train_batch`` asks of the engine (readout off): the positive
and the negative phase (a ConcatSource: on Brian2 two ``run()`` epochs of one persistent network),
then both replayed with the FF modulators (two more epochs, weight updates accumulated). Network
794 -> 500 -> 500, 50 steps, the same batch size for every engine (8 and 64): the ratio is per
sample at equal batch sizes. Brian2 simulates a batch as replicated networks (batch x 647k
synapses). The network is built once per engine and batch size (for cpp_standalone: generated and
compiled once, ``build_seconds``); the timed steps then only run it with new inputs
(``device.run(run_args=...)`` for cpp_standalone).

    python experiments/bench_engines.py [--batches 8 64] [--targets cpp_standalone cython numpy]

Writes results/bench_engines.json (with provenance and the command).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from spikeff import NeuronConfig
from spikeff.encoding import ConcatSource, SpikeSource, overlay_labels
from spikeff.engines import brian2_engine, vectorized
from spikeff.goodness import get_goodness
from spikeff.learning import ff_loss
from spikeff.neuron import DiscreteLIF
from spikeff.runs import provenance, write_json

ROOT = Path(__file__).resolve().parent.parent


def training_step(run_phase, weights, source, lif, goodness, chunk_steps=10):
    """Both phases side by side (each its own epoch on Brian2), then their replays; seconds taken."""
    t0 = time.perf_counter()
    biases = [None] * len(weights)
    res = run_phase(weights, biases, lif, goodness, source, chunk_steps)
    mods = []
    for g in res.goodness:
        gp, gn = source.split(g)
        mods.append(np.concatenate(ff_loss(gp, gn, "threshold", 1.0, 1.0)[1:]))
    run_phase(weights, biases, lif, goodness, source, chunk_steps, modulators=mods)
    return time.perf_counter() - t0


def problem(batch, dtype, n_steps, sizes, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((batch, 784)) * (rng.random((batch, 784)) < 0.2)      # sparse, MNIST-like
    y = rng.integers(0, 10, batch)
    sources = [SpikeSource(overlay_labels(X, lab, 10), "rate", n_steps, 1e-3, 200.0, [seed, k], dtype=dtype)
               for k, lab in enumerate((y, (y + 1 + rng.integers(0, 9, batch)) % 10))]
    dims = [794, *sizes]
    weights = [(rng.standard_normal((n, m)) / np.sqrt(m) * 2.0).astype(dtype) for m, n in zip(dims[:-1], dims[1:])]
    return weights, ConcatSource(sources)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 500])
    ap.add_argument("--targets", nargs="+", default=list(brian2_engine.TARGETS))
    ap.add_argument("--numpy-batches", type=int, nargs="+", default=[8],
                    help="batch sizes for the (slow) numpy target")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps of the vectorized engine (min taken)")
    ap.add_argument("--brian2-repeats", type=int, default=2, help="timed Brian2 steps after the first (min taken)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_engines.json"))
    args = ap.parse_args(argv)
    import brian2
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    res = {"vectorized": {}, "brian2": {t: {} for t in args.targets}}
    for B in args.batches:
        for dtype in ("float32", "float64"):
            W, src = problem(B, dtype, args.steps, args.sizes)
            training_step(vectorized.run_phase, W, src, lif, g)                   # warm-up
            t = min(training_step(vectorized.run_phase, W, src, lif, g) for _ in range(args.repeats))
            res["vectorized"].setdefault(dtype, {})[str(B)] = {"seconds_per_step": t, "seconds_per_sample": t / B}
            print("vectorized", dtype, B, res["vectorized"][dtype][str(B)], flush=True)
    def write(complete):
        ratios = {f"{target}_over_vectorized_{dtype}_batch{B}": res["brian2"][target][B]["seconds_per_sample"]
                  / res["vectorized"][dtype][B]["seconds_per_sample"]
                  for target in res["brian2"] for B in res["brian2"][target] for dtype in res["vectorized"]
                  if B in res["vectorized"][dtype]}
        out = {"experiment": "bench_engines", "complete": complete,
               "command": "python experiments/bench_engines.py " + " ".join(argv),
               "what": ("one FF training step as train_batch asks it of the engine (readout off): positive and "
                        "negative phase, then both replayed with modulators (on Brian2: 4 run() epochs of one "
                        "persistent network)"),
               "network": [794, *args.sizes], "n_steps": args.steps,
               "note": ("per-sample ratios at equal batch sizes (Brian2 in float64 only). build_seconds: building "
                        "the network once (cpp_standalone: code generation and compilation), paid once per "
                        "network; seconds_per_step excludes it. Times: minimum over "
                        f"{args.repeats} (vectorized) / {args.brian2_repeats} (Brian2) steps on a shared 2-core "
                        "machine (see load_average)."),
               "time_ratio_brian2_over_vectorized_per_sample": ratios, "results": res,
               "brian2_version": brian2.__version__, "load_average_1_5_15min_at_end": os.getloadavg(),
               "provenance": provenance()}
        write_json(args.out, out)
        return ratios

    for target in args.targets:
        for B in (args.numpy_batches if target == "numpy" else args.batches):
            W, src = problem(B, "float64", args.steps, args.sizes)
            engine = brian2_engine.Brian2Engine(target=target, max_replicas=B)
            first = training_step(engine, W, src, lif, g)          # includes building / compiling
            build = sum(n.build_seconds for n in engine.networks)
            t = min(training_step(engine, W, src, lif, g) for _ in range(args.brian2_repeats))
            res["brian2"][target][str(B)] = {"seconds_first_step": first, "build_seconds": build,
                                             "seconds_per_step": t, "seconds_per_sample": t / B,
                                             "replicas": engine.networks[0].R}
            print("brian2", target, B, res["brian2"][target][str(B)], flush=True)
            del engine
            write(False)
    ratios = write(True)
    print("\n".join(f"{k}: {v:.1f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
