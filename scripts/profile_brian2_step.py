"""Where one FF training step of the Brian2 engine spends its time (a diagnostic, not a benchmark).

Builds the engine's network for ``B`` replicas of 794 -> sizes, ``T`` steps (the problem of
experiments/bench_engines.py), runs one step to build it, then one more step under cProfile. For
cpp_standalone it prints, per run of the binary (EPOCHS_PER_RUN phases each), the wall time and the CPU time of
the binary (user and system: on a shared machine the CPU time is the steadier measure); with
``--perf FILE`` the binary runs under ``perf record`` (inspect with ``perf report -i FILE`` in the
build folder, kept with SPIKEFF_BRIAN2_BUILD_DIR).

    python scripts/profile_brian2_step.py --batch 8 --steps 50 --sizes 500 500 [--target cython]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

from bench_engines import problem, training_step  # noqa: E402

from spikeff import NeuronConfig  # noqa: E402
from spikeff.engines import brian2_engine  # noqa: E402
from spikeff.goodness import get_goodness  # noqa: E402
from spikeff.neuron import DiscreteLIF  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 500])
    ap.add_argument("--target", default="cpp_standalone", choices=list(brian2_engine.TARGETS))
    ap.add_argument("--perf", default=None, help="cpp_standalone: perf record the binary into this file")
    args = ap.parse_args(argv)
    import brian2 as b2
    lif, g = DiscreteLIF.from_config(NeuronConfig()), get_goodness("energy_relu")
    W, src = problem(args.batch, "float64", args.steps, args.sizes)
    engine = brian2_engine.Brian2Engine(target=args.target, max_replicas=args.batch)
    first = training_step(engine, W, src, lif, g)
    [net] = engine.networks
    print(f"first step {first:.2f} s (build {net.build_seconds:.2f} s), load {os.getloadavg()}", flush=True)
    if net.standalone:
        run = net.device.run

        def timed_run(*a, **kw):
            c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            out = run(*a, **kw)
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f"  device.run {time.perf_counter() - t0:.3f} s, binary {net.device.timers['run_binary']:.3f} s"
                  f" (CPU user {c1.ru_utime - c0.ru_utime:.3f} s, system {c1.ru_stime - c0.ru_stime:.3f} s)",
                  flush=True)
            return out

        net.device.run = timed_run
        if args.perf:
            b2.prefs.devices.cpp_standalone.run_cmd_unix = ["perf", "record", "-q", "-o", args.perf, "./main"]
    prof = cProfile.Profile()
    prof.enable()
    t = training_step(engine, W, src, lif, g)
    prof.disable()
    print(f"step {t:.2f} s, load {os.getloadavg()}")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
