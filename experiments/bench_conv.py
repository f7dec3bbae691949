"""Speed of the conv engine on the Fashion-MNIST conv recipe (models/fashion_mnist_conv.toml):

1. **train step**: ``FFNetwork.train_batch`` of the recipe (neutral-label pass, positive and negative
   pass, update) at ``--train-batch`` (default: the recipe's batch) on Fashion-MNIST training images
   (random images when the IDX files are absent), timed ``--train-steps`` times after a warm-up
   step in a fresh process; with ``--baseline PATH`` (a checkout of another commit, e.g.
   ``git worktree add /tmp/conv-main main``) the same step of that code, the processes alternating
   (``--rounds``), so both see the same machine load: samples/s of each and their ratio;
   ``--stages`` adds the seconds spent in the engine's stages (functions timed by wrapping them;
   work done in engine threads is summed over the threads);
2. **phase**: the conv engine against the dense engine running the same network as its equivalent
   dense expansion (same spikes), one training phase (forward + replay with gradients) at
   ``--batch``.

Prints the ratios measured in this run and writes results/bench_conv.json (with the load average
before and after every timed process: the machine is shared).

    python experiments/bench_conv.py [--batch 50] [--repeats 3] [--baseline /tmp/conv-main --rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spikeff import FFNetwork, load_config  # noqa: E402
from spikeff.engines.conv import run_phase as conv_phase  # noqa: E402
from spikeff.engines.vectorized import run_phase as dense_phase  # noqa: E402
from spikeff.goodness import get_goodness  # noqa: E402
from spikeff.runs import ThreadSettings, pinned_threads, provenance, write_json  # noqa: E402


# One train step of the recipe, timed in a fresh process on the code at ROOT (argv: root, config,
# images .npy, labels .npy, batch, steps, threads, stages). Uses only API that both this commit and
# the baseline have.
CHILD = r"""
import json, os, sys, time, collections
root, config, xs, ys, batch, steps, threads, stages = sys.argv[1:9]
batch, steps, threads = int(batch), int(steps), int(threads)
sys.path.insert(0, root)
import numpy as np
import spikeff
from spikeff import FFNetwork, load_config
from spikeff.runs import ThreadSettings, pinned_threads
import spikeff.engines.conv as conv
X, y = np.load(xs), np.load(ys)
acc = collections.defaultdict(float)
if stages == "1":
    def wrap(owner, name):
        f = getattr(owner, name)
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[name] += time.perf_counter() - t
        setattr(owner, name, timed)
    mods = [conv] + [m for m in (sys.modules.get("spikeff.engines.conv_numpy"),) if m is not None]
    for name in ("conv_currents", "conv_kernel_grad", "conv_currents_np", "conv_kernel_grad_np", "patches_t",
                 "pool_spikes", "lif_scan", "trace_scan", "run_phase", "grads_from_store"):
        for m in mods:
            if name in vars(m):
                wrap(m, name)
    for name in ("run_chunk", "_traces", "_neurons_np", "post", "accumulate"):
        if name in vars(conv._Layer):
            wrap(conv._Layer, name)
net = FFNetwork(load_config(config)).initialize(X.shape[1], 10)
out = {"spikeff": spikeff.__file__, "seconds": [], "cpu_seconds": [], "load_before": os.getloadavg()}
with pinned_threads(ThreadSettings(blas=threads, engine=threads)):
    net.train_batch(X[:batch], y[:batch], seed=[0, 0])            # warm-up: buffers, thread pools
    acc.clear()
    for i in range(steps):
        rows = slice((i + 1) * batch, (i + 2) * batch)
        c, t = time.process_time(), time.perf_counter()
        m = net.train_batch(X[rows], y[rows], seed=[0, i + 1])
        out["seconds"].append(time.perf_counter() - t)
        out["cpu_seconds"].append(time.process_time() - c)
out.update(load_after=os.getloadavg(), update=m.get("update"), stages={k: v / steps for k, v in acc.items()})
print("RESULT " + json.dumps(out))
"""


def _git(root, *args):
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def train_step(config_path, batch, steps, rounds, baseline, stages, threads):
    """Samples/s of the recipe's train step on this tree (and ``baseline``), alternating processes."""
    try:
        from spikeff.data import load_dataset
        d = load_dataset("fashion_mnist")
        X, y, data = d.X_train[:batch * (steps + 1)], d.y_train[:batch * (steps + 1)], "fashion_mnist"
    except Exception as e:                      # no IDX files: random images, recorded as such
        rng = np.random.default_rng(0)
        n = batch * (steps + 1)
        X, y, data = rng.random((n, 784)) * (rng.random((n, 784)) < 0.5), rng.integers(0, 10, n), f"random ({e})"
    trees = {"this": ROOT} | ({"baseline": Path(baseline).resolve()} if baseline else {})
    runs = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        xs, ys = os.path.join(tmp, "X.npy"), os.path.join(tmp, "y.npy")
        np.save(xs, np.asarray(X, dtype=np.float64))
        np.save(ys, np.asarray(y, dtype=np.int64))
        for r in range(rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                cmd = [sys.executable, "-c", CHILD, str(trees[name]), str(config_path), xs, ys, str(batch),
                       str(steps), str(threads), "1" if stages else "0"]
                res = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
                if res.returncode or not line:
                    raise RuntimeError(f"train step on {trees[name]} failed:\n{res.stderr[-3000:]}")
                runs[name].append(json.loads(line[-1][len("RESULT "):]))
                best = min(runs[name][-1]["seconds"])
                print(f"round {r}, {name}: best {best:.2f} s per step of {batch} ({batch / best:.1f} samples/s), "
                      f"load {runs[name][-1]['load_before'][0]:.1f}", flush=True)
    out = {"data": data, "batch": batch, "steps_per_process": steps, "rounds": rounds, "threads": threads, "trees": {}}
    for name, rs in runs.items():
        secs = [s for r in rs for s in r["seconds"]]
        out["trees"][name] = {"path": str(trees[name]), "commit": _git(trees[name], "rev-parse", "HEAD"),
                              "dirty": bool(_git(trees[name], "status", "--porcelain", "--untracked-files=no")),
                              "seconds": secs, "cpu_seconds": [s for r in rs for s in r["cpu_seconds"]],
                              "best_seconds": min(secs), "median_seconds": float(np.median(secs)),
                              "samples_per_s_best": batch / min(secs), "samples_per_s_median": batch / float(np.median(secs)),
                              "update": rs[-1]["update"], "load_average_before_after": [[r["load_before"], r["load_after"]] for r in rs],
                              "stages_seconds_per_step": rs[-1]["stages"] if stages else None}
    if baseline:
        t, b = out["trees"]["this"], out["trees"]["baseline"]
        out["speedup_best"] = b["best_seconds"] / t["best_seconds"]
        out["speedup_median"] = b["median_seconds"] / t["median_seconds"]
        out["speedup_cpu_median"] = float(np.median(b["cpu_seconds"]) / np.median(t["cpu_seconds"]))
        print(f"train step, batch {batch}: this {t['samples_per_s_best']:.1f} samples/s, baseline "
              f"{b['samples_per_s_best']:.1f} samples/s (best of {len(t['seconds'])}): {out['speedup_best']:.2f}x "
              f"(median {out['speedup_median']:.2f}x, CPU time {out['speedup_cpu_median']:.2f}x)")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "models" / "fashion_mnist_conv.toml"))
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "bench_conv.json"))
    p.add_argument("--train-batch", type=int, default=None, help="train step batch (default: the recipe's)")
    p.add_argument("--train-steps", type=int, default=2, help="timed train steps per process")
    p.add_argument("--rounds", type=int, default=3, help="processes per tree (alternating with the baseline)")
    p.add_argument("--baseline", default=None, help="checkout of the code to compare the train step with")
    p.add_argument("--stages", action="store_true", help="time the engine's stages in the train step")
    p.add_argument("--no-phase", action="store_true", help="skip the conv vs dense-expansion phase benchmark")
    args = p.parse_args(argv)
    config = load_config(args.config)
    threads = ThreadSettings.default()
    step = train_step(args.config, args.train_batch or config.batch_size, args.train_steps, args.rounds,
                      args.baseline, args.stages, threads.engine)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    if args.no_phase:
        write_json(args.out, {"command": command, "train_step": step,
                              "provenance": provenance(config=config, threads=threads, recipe=args.config)})
        return
    net = FFNetwork(config).initialize(784, 10)
    rng = np.random.default_rng(0)
    X, y = rng.random((args.batch, 784)) * (rng.random((args.batch, 784)) < 0.5), rng.integers(0, 10, args.batch)
    src = net._source(X, y, seed=1)
    g, lif, geos = get_goodness(config.goodness), net.lif, net.geometries
    Wd, bd = net.dense_equivalent()
    Wd = [w.astype(net.dtype) for w in Wd]
    mods = [rng.normal(size=args.batch) for _ in geos]
    times = {"conv": [], "dense_expansion": []}
    with pinned_threads(threads):
        for _ in range(args.repeats):
            for name, fn in (("conv", lambda: [conv_phase(net.weights_, [None] * len(geos), lif, g, src, config.chunk_steps,
                                                          modulators=m, geometries=geos) for m in (None, mods)]),
                             ("dense_expansion", lambda: [dense_phase(Wd, [None] * len(geos), lif, g, src, config.chunk_steps,
                                                                      modulators=m) for m in (None, mods)])):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    ratio = best["dense_expansion"] / best["conv"]
    print(f"batch {args.batch}, T = {config.n_steps}: conv engine {best['conv']:.2f} s, dense expansion "
          f"{best['dense_expansion']:.2f} s per phase + replay: conv is {ratio:.1f}x faster")
    write_json(args.out, {"command": command, "train_step": step, "batch": args.batch, "n_steps": config.n_steps,
                          "seconds": times, "best_seconds": best, "speedup_conv_over_dense_expansion": ratio,
                          "dense_expansion_weights": [list(w.shape) for w in Wd],
                          "conv_weights": [list(w.shape) for w in net.weights_],
                          "provenance": provenance(config=config, threads=threads, recipe=args.config)})


if __name__ == "__main__":
    main()
