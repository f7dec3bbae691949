"""Speed of the conv engine (im2col GEMMs) against the dense engine running the same network as its
equivalent dense expansion (same spikes), one training phase (forward + replay with gradients) of
the Fashion-MNIST conv recipe's layers. Prints the ratio measured in this run and writes
results/bench_conv.json.

    python experiments/bench_conv.py [--batch 50] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "models" / "fashion_mnist_conv.toml"))
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "bench_conv.json"))
    args = p.parse_args(argv)
    config = load_config(args.config)
    net = FFNetwork(config).initialize(784, 10)
    rng = np.random.default_rng(0)
    X, y = rng.random((args.batch, 784)) * (rng.random((args.batch, 784)) < 0.5), rng.integers(0, 10, args.batch)
    src = net._source(X, y, seed=1)
    g, lif, geos = get_goodness(config.goodness), net.lif, net.geometries
    Wd, bd = net.dense_equivalent()
    Wd = [w.astype(net.dtype) for w in Wd]
    mods = [rng.normal(size=args.batch) for _ in geos]
    threads = ThreadSettings.default()
    times = {"conv": [], "dense_expansion": []}
    with pinned_threads(threads):
        for _ in range(args.repeats):
            for name, fn in (("conv", lambda: [conv_phase(net.weights_, [None] * 2, lif, g, src, config.chunk_steps,
                                                          modulators=m, geometries=geos) for m in (None, mods)]),
                             ("dense_expansion", lambda: [dense_phase(Wd, [None] * 2, lif, g, src, config.chunk_steps,
                                                                      modulators=m) for m in (None, mods)])):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    ratio = best["dense_expansion"] / best["conv"]
    print(f"batch {args.batch}, T = {config.n_steps}: conv engine {best['conv']:.2f} s, dense expansion "
          f"{best['dense_expansion']:.2f} s per phase + replay: conv is {ratio:.1f}x faster")
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    write_json(args.out, {"command": command, "batch": args.batch, "n_steps": config.n_steps,
                          "seconds": times, "best_seconds": best, "speedup_conv_over_dense_expansion": ratio,
                          "dense_expansion_weights": [list(w.shape) for w in Wd],
                          "conv_weights": [list(w.shape) for w in net.weights_],
                          "provenance": provenance(config=config, threads=threads, recipe=args.config)})


if __name__ == "__main__":
    main()
