"""Speed of one FF training step, vectorized engine vs Brian2 (each code generation target).

One training step = what ``FFNetwork.train_batch`` asks of the engine (readout off): the positive
and the negative phase (a ConcatSource: on Brian2 two ``run()`` epochs of one persistent network),
then both replayed with the FF modulators (two more epochs, weight updates accumulated). Network
794 -> 500 -> 500, 50 steps, the same batch size for every engine (8 and 64): the ratio is per
sample at equal batch sizes. Brian2 simulates a batch as replicated networks, with the engine's
own replica cap (replicas x 647k synapses; runtime targets up to 64 replicas, cpp_standalone up to
8, the rest of a batch as further run() epochs, recorded as ``replicas`` and ``epochs_per_run``).
The network is built once per engine and batch size (for cpp_standalone: generated and
compiled once, ``build_seconds``); the timed steps then only run it with new inputs
(``device.run(run_args=...)`` for cpp_standalone). Each cell records the wall time and the CPU time
(process and children) of its steps with the load average: on a shared machine the CPU time is the
steadier measure. A Brian2 target whose timed step at one batch size exceeds ``--max-step-seconds``
skips its larger batch sizes (listed under ``skipped``; ``complete`` is then false).

    python experiments/bench_engines.py [--batches 8 64] [--targets cpp_standalone cython numpy]

Writes results/bench_engines.json (with provenance and the command).
"""
from __future__ import annotations

import argparse
import os
import resource
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


def _cpu_seconds():
    """CPU time of this process and its finished children (the cpp_standalone binary runs as one)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_step(run_phase, weights, source, lif, goodness):
    """One training step: wall seconds, CPU seconds (process and children; less disturbed by the
    other jobs on a shared machine than the wall time) and the load average at its end."""
    c0, t0 = _cpu_seconds(), time.perf_counter()
    training_step(run_phase, weights, source, lif, goodness)
    return time.perf_counter() - t0, _cpu_seconds() - c0, os.getloadavg()[0]


def best_of(run_phase, weights, source, lif, goodness, repeats):
    """The step with the least wall time among ``repeats`` (with its CPU time and load)."""
    steps = [timed_step(run_phase, weights, source, lif, goodness) for _ in range(repeats)]
    t, cpu, load = min(steps)
    return {"seconds_per_step": t, "cpu_seconds_per_step": cpu, "load_average_1min": load,
            "all_steps_seconds": [s[0] for s in steps]}


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
    ap.add_argument("--numpy-batches", type=int, nargs="+", default=[8, 64],
                    help="batch sizes for the (slow) numpy target")
    ap.add_argument("--max-step-seconds", type=float, default=600.0,
                    help="a Brian2 target whose timed step (the build excluded) at one batch size takes "
                         "longer than this skips its larger batch sizes (recorded under 'skipped')")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps of the vectorized engine (min taken)")
    ap.add_argument("--brian2-repeats", type=int, default=2, help="timed Brian2 steps after the first (min taken)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_engines.json"))
    args = ap.parse_args(argv)
    import brian2
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    prov = provenance()          # at the start: the intermediate writes below change the output file
    res = {"vectorized": {}, "brian2": {t: {} for t in args.targets}}

    def time_vectorized(when):
        """The vectorized engine's cells, timed before and again after the Brian2 targets: each
        cell keeps its faster round (the ratios are not flattered by a slow moment of the machine)
        and records both rounds' times."""
        for B in args.batches:
            for dtype in ("float32", "float64"):
                W, src = problem(B, dtype, args.steps, args.sizes)
                training_step(vectorized.run_phase, W, src, lif, g)                   # warm-up
                cell = best_of(vectorized.run_phase, W, src, lif, g, args.repeats)
                cell["seconds_per_sample"] = cell["seconds_per_step"] / B
                old = res["vectorized"].setdefault(dtype, {}).get(str(B))
                rounds = (old["seconds_per_step_by_round"] if old else []) + [cell["seconds_per_step"]]
                if old is None or cell["seconds_per_step"] < old["seconds_per_step"]:
                    res["vectorized"][dtype][str(B)] = cell
                res["vectorized"][dtype][str(B)]["seconds_per_step_by_round"] = rounds
                print("vectorized", when, dtype, B, cell, flush=True)

    time_vectorized("before")
    skipped = {}

    def write(complete):
        ratios, cpu_ratios = {}, {}
        for target, cells in res["brian2"].items():
            for B, cell in cells.items():
                for dtype, vec in res["vectorized"].items():
                    if B in vec:
                        key = f"{target}_over_vectorized_{dtype}_batch{B}"
                        ratios[key] = cell["seconds_per_sample"] / vec[B]["seconds_per_sample"]
                        cpu_ratios[key] = cell["cpu_seconds_per_step"] / vec[B]["cpu_seconds_per_step"]
        out = {"experiment": "bench_engines", "complete": complete and not skipped,
               "command": "python experiments/bench_engines.py " + " ".join(argv),
               "what": ("one FF training step as train_batch asks it of the engine (readout off): positive and "
                        "negative phase, then both replayed with modulators (on Brian2: 4 run() epochs of one "
                        "persistent network)"),
               "network": [794, *args.sizes], "n_steps": args.steps,
               "note": ("per-sample ratios at equal batch sizes (Brian2 in float64 only). build_seconds: building "
                        "the network once (cpp_standalone: code generation and compilation), paid once per "
                        "network; seconds_per_step excludes it. cpu_seconds_per_step: CPU time of the process and its "
                        "children (the standalone binary) in that step; BLAS may use 2 threads in the vectorized "
                        f"engine, the standalone program {brian2_engine.OPENMP_THREADS} OpenMP threads (which spin "
                        "while one of them propagates spikes), the runtime targets one; the time ratio is what a "
                        "user waits. Times: minimum over "
                        f"{args.repeats} (vectorized) / {args.brian2_repeats} (Brian2) steps on a shared 2-core "
                        "machine (see load_average); the vectorized engine is timed before and again after the "
                        "Brian2 targets (seconds_per_step_by_round) and its faster round is kept."),
               "time_ratio_brian2_over_vectorized_per_sample": ratios,
               "cpu_time_ratio_brian2_over_vectorized_per_sample": cpu_ratios,
               "skipped": skipped, "results": res,
               "brian2_version": brian2.__version__, "load_average_1_5_15min_at_end": os.getloadavg(),
               "provenance": prov}
        write_json(args.out, out)
        return ratios

    for target in args.targets:
        too_slow = None
        for B in (args.numpy_batches if target == "numpy" else args.batches):
            if too_slow:
                skipped.setdefault(target, {})[str(B)] = too_slow
                print("brian2", target, B, "skipped:", too_slow, flush=True)
                continue
            W, src = problem(B, "float64", args.steps, args.sizes)
            engine = brian2_engine.Brian2Engine(target=target)    # the engine's own replica cap
            first = training_step(engine, W, src, lif, g)          # includes building / compiling
            build = sum(n.build_seconds for n in engine.networks)
            cell = best_of(engine, W, src, lif, g, args.brian2_repeats)
            cell.update(seconds_first_step=first, build_seconds=build, replicas=engine.networks[0].R,
                        epochs_per_run=engine.networks[0].E,
                        seconds_per_sample=cell["seconds_per_step"] / B)
            res["brian2"][target][str(B)] = cell
            print("brian2", target, B, cell, flush=True)
            if cell["seconds_per_step"] > args.max_step_seconds:
                too_slow = (f"a step at batch {B} took {cell['seconds_per_step']:.0f} s (> --max-step-seconds "
                            f"{args.max_step_seconds:g}); larger batches not run")
            del engine
            write(False)
    time_vectorized("after")
    ratios = write(True)
    print("\n".join(f"{k}: {v:.1f}" for k, v in ratios.items()))
    if skipped:
        print("skipped:", skipped)


if __name__ == "__main__":
    main()
