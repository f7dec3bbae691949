"""``spikeff bench``: throughput, achieved GFLOP/s against an in-run GEMM roofline, and memory in T.

Everything is measured in one run on this machine; speeds are reported as ratios measured in the
same process (the training step against numpy matmul of the same shapes and dtype), because the
absolute numbers depend on the machine and on what else runs on it.

* **training**: samples/s of one :meth:`FFNetwork.train_batch` (neutral, positive and negative
  phase as one 3B batch, then the positive and negative phase replayed with the modulators);
* **FLOPs** counted: the GEMMs of the model only, i.e. the forward currents of every pass
  (``2 T B sum_l M_l N_l`` per pass) and the gradient GEMMs of the replay (the same count); the
  small trace-filter GEMMs and all elementwise work are overhead, not counted;
* **roofline**: numpy matmul of exactly the engine's GEMM shapes (per chunk: ``(k*rows, M) @ (M, N)``
  and ``(N, k*rows) @ (k*rows, M)``), timed in the same process, interleaved with the training
  steps; ``pct_roofline`` = time of those GEMMs alone / time of the training step;
* **inference**: ``predict`` by goodness (every label, one pass each) and by the readout (one pass);
* **memory**: tracemalloc peak of one training step for several T, each in a fresh subprocess.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_FEATURES, N_CLASSES = 784, 10

FULL = {"networks": [((500, 500), 64), ((500, 500), 512), ((2000, 2000), 64), ((2000, 2000), 512)],
        "n_steps": 50, "reps": 2, "memory": [((500, 500), 64), ((2000, 2000), 64)],
        "memory_steps": [25, 50, 100, 200], "n_inference": 128}
QUICK = {"networks": [((100, 100), 32)], "n_steps": 10, "reps": 1, "memory": [((100, 100), 16)],
         "memory_steps": [25, 50, 100, 200], "n_inference": 16}


def _config(hidden, batch, n_steps, dtype="float32", **kw):
    from .config import FFConfig
    return FFConfig(hidden_sizes=tuple(hidden), n_steps=n_steps, batch_size=batch, dtype=dtype,
                    label_repeat=1, readout=True, eval_batch_size=max(batch, 64), **kw)


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, N_FEATURES)), rng.integers(0, N_CLASSES, n)


def train_flops(sizes, batch, n_steps, readout=True) -> float:
    """GEMM FLOPs of one training step (see the module doc)."""
    per_pass = 2.0 * n_steps * sum(m * n for m, n in zip(sizes[:-1], sizes[1:]))
    forward_samples = 2 * batch + 2 * batch + (batch if readout else 0)
    return per_pass * (forward_samples + 2 * batch)


def _gemm_plan(sizes, batch, n_steps, chunk, dtype, readout=True):
    """The engine's GEMMs of one training step: list of (callable, flops, count)."""
    rng = np.random.default_rng(0)
    plan = []
    chunks = [min(chunk, n_steps - t0) for t0 in range(0, n_steps, chunk)]
    for m, n in zip(sizes[:-1], sizes[1:]):
        W = rng.standard_normal((n, m)).astype(dtype)
        # first pass: neutral + positive + negative phases as one batch; replay: pos + neg
        first_rows = (3 if readout else 2) * batch
        for rows, fwd_count, grad_count in ((first_rows, 1, 0), (2 * batch, 1, 1)):
            for k in sorted(set(chunks)):
                times_k = chunks.count(k)
                x = (rng.random((k * rows, m)) < 0.3).astype(dtype)
                u = np.empty((k * rows, n), dtype=dtype)
                dw = np.empty((n, m), dtype=dtype)
                fl = 2.0 * k * rows * m * n
                if fwd_count:
                    plan.append((lambda x=x, W=W, u=u: np.matmul(x, W.T, out=u), fl, fwd_count * times_k))
                if grad_count:
                    plan.append((lambda x=x, u=u, dw=dw: np.matmul(u.T, x, out=dw), fl, grad_count * times_k))
    return plan


def _time_plan(plan):
    """Seconds for the plan's GEMMs (each shape timed once, times its count)."""
    total = 0.0
    for f, _, count in plan:
        t0 = time.perf_counter()
        f()
        total += (time.perf_counter() - t0) * count
    return total


def bench_network(hidden, batch, n_steps, reps, n_inference, dtype="float32", log=print) -> dict:
    from .network import FFNetwork
    cfg = _config(hidden, batch, n_steps, dtype)
    net = FFNetwork(cfg).initialize(N_FEATURES, N_CLASSES)
    X, y = _data(batch)
    sizes = [N_FEATURES + N_CLASSES * cfg.label_repeat, *hidden]
    plan = _gemm_plan(sizes, batch, n_steps, cfg.chunk_steps, np.dtype(dtype))
    flops = train_flops(sizes, batch, n_steps)
    net.train_batch(X, y, seed=[0, 0])           # warm-up (allocations, BLAS threads)
    _time_plan(plan)
    steps, roofs = [], []
    for r in range(reps):                         # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        net.train_batch(X, y, seed=[0, r + 1])
        steps.append(time.perf_counter() - t0)
        roofs.append(_time_plan(plan))
    t_step, t_roof = min(steps), min(roofs)
    Xi, _ = _data(n_inference, seed=1)
    t0 = time.perf_counter()
    net.predict(Xi, "goodness")
    t_good = time.perf_counter() - t0
    t0 = time.perf_counter()
    net.predict(Xi, "readout")
    t_read = time.perf_counter() - t0
    res = {"network": f"{N_FEATURES}-{'-'.join(map(str, hidden))}", "batch": batch, "n_steps": n_steps,
           "dtype": dtype, "chunk_steps": cfg.chunk_steps, "reps": reps,
           "train_step_s": t_step, "train_step_s_all": steps,
           "train_samples_per_s": batch / t_step,
           "train_gflop": flops / 1e9, "achieved_gflops": flops / t_step / 1e9,
           "roofline_gemm_s": t_roof, "roofline_gflops": flops / t_roof / 1e9,
           "pct_roofline": 100.0 * t_roof / t_step,
           "inference_samples": n_inference,
           "predict_goodness_samples_per_s": n_inference / t_good,
           "predict_readout_samples_per_s": n_inference / t_read}
    log(f"  {res['network']:>15} B={batch:<4} train {res['train_samples_per_s']:8.1f} samples/s "
        f"{res['achieved_gflops']:7.1f} GFLOP/s = {res['pct_roofline']:5.1f}% of in-run GEMM "
        f"{res['roofline_gflops']:6.1f} GFLOP/s | predict goodness "
        f"{res['predict_goodness_samples_per_s']:7.1f}/s readout {res['predict_readout_samples_per_s']:8.1f}/s")
    return res


def _memory_child(hidden, batch, n_steps, dtype):
    """Run in a fresh process: peak traced memory of one training step (after a warm-up step)."""
    import resource
    import tracemalloc
    from .network import FFNetwork
    net = FFNetwork(_config(hidden, batch, n_steps, dtype)).initialize(N_FEATURES, N_CLASSES)
    X, y = _data(batch)
    net.train_batch(X, y, seed=[0, 0])
    tracemalloc.start()
    tracemalloc.reset_peak()
    net.train_batch(X, y, seed=[0, 1])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"peak_bytes": peak, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def bench_memory(hidden, batch, steps_list, dtype="float32", log=print) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    per_t = {}
    for T in steps_list:
        code = (f"from spikeff.bench import _memory_child; "
                f"_memory_child({tuple(hidden)!r}, {batch}, {T}, {dtype!r})")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        per_t[T] = json.loads(out.stdout.strip().splitlines()[-1])
    peaks = {T: v["peak_bytes"] for T, v in per_t.items()}
    lo, hi = min(steps_list), max(steps_list)
    ratio = peaks[hi] / peaks[lo]
    res = {"network": f"{N_FEATURES}-{'-'.join(map(str, hidden))}", "batch": batch, "dtype": dtype,
           "peak_mb": {str(T): peaks[T] / 2**20 for T in steps_list},
           "max_rss_mb": {str(T): per_t[T]["max_rss_bytes"] / 2**20 for T in steps_list},
           "ratio_max_T_to_min_T": ratio, "within_10pct": bool(ratio <= 1.10)}
    log(f"  memory {res['network']} B={batch}: peak of a training step "
        + ", ".join(f"T={T}: {peaks[T] / 2**20:.1f} MB" for T in steps_list)
        + f" -> T={hi}/T={lo} = {ratio:.3f} ({'within' if res['within_10pct'] else 'NOT within'} 10%)")
    return res


def bench_brian2(log=print) -> dict:
    """Vectorized vs Brian2 engine on a small phase, only if the Brian2 engine is present."""
    try:
        from .engines import brian2_engine  # noqa: F401  (on another branch until merged)
    except ImportError as e:
        log("  brian2: engine not available here (spikeff.engines.brian2_engine), ratio not measured")
        return {"available": False, "reason": f"spikeff.engines.brian2_engine not importable: {e}"}
    try:
        from .encoding import SpikeSource
        from .engines import get_engine
        from .goodness import get_goodness
        from .neuron import DiscreteLIF
        from .config import NeuronConfig
        rng = np.random.default_rng(0)
        W = [(rng.standard_normal((500, 794)) / math.sqrt(794)).astype(np.float32)]
        src = SpikeSource(rng.random((8, 794)), "rate", 50, 1e-3, 500.0, seed=1)
        lif, g = DiscreteLIF.from_config(NeuronConfig()), get_goodness("energy_relu")
        times = {}
        for name in ("vectorized", "brian2"):
            run = get_engine(name)
            run(W, [None], lif, g, src, 10)   # warm-up (Brian2 code generation)
            t0 = time.perf_counter()
            run(W, [None], lif, g, src, 10)
            times[name] = time.perf_counter() - t0
        res = {"available": True, "network": "794-500", "batch": 8, "n_steps": 50, "seconds": times,
               "brian2_over_vectorized": times["brian2"] / times["vectorized"]}
        log(f"  brian2: {res['brian2_over_vectorized']:.1f}x the vectorized engine's time (794-500, B=8, T=50)")
        return res
    except Exception as e:  # the other engine's failure must not lose the rest of the benchmark
        return {"available": True, "error": f"{type(e).__name__}: {e}"}


def environment() -> dict:
    from .runs import environment as run_environment, git_commit
    env = run_environment()
    env.update({"load_average_at_start": list(os.getloadavg()), "git": git_commit()})
    return env


def run_bench(quick: bool = False, out=None, shared_machine: bool = True, log=print) -> dict:
    p = QUICK if quick else FULL
    t_start = time.perf_counter()
    result = {"spikeff_bench": 1, "quick": quick, "environment": environment(),
              "shared_machine": shared_machine,
              "note": ("absolute numbers depend on the machine and its load; compare the in-run ratios "
                       "(pct_roofline, memory ratio). GPU figures: not measured here (no GPU)."),
              "flop_count": ("model GEMMs only: forward currents of every pass (neutral+pos+neg as one 3B "
                             "batch, pos+neg replayed as 2B) + gradient GEMMs of the replay"),
              "training": [], "memory": []}
    log(f"spikeff bench ({'quick' if quick else 'full'}), BLAS: {result['environment'].get('blas')}")
    for hidden, batch in p["networks"]:
        result["training"].append(bench_network(hidden, batch, p["n_steps"], p["reps"],
                                                min(p["n_inference"], batch), log=log))
    for hidden, batch in p["memory"]:
        result["memory"].append(bench_memory(hidden, batch, p["memory_steps"], log=log))
    result["brian2"] = bench_brian2(log=log)
    big = [r for r in result["training"] if r["network"].endswith("2000-2000") and r["batch"] == 512]
    result["targets"] = {
        "pct_roofline_784-2000-2000_B512_float32 (target >= 60)": big[0]["pct_roofline"] if big else None,
        "memory_T200_over_T25 (target <= 1.10)": [m["ratio_max_T_to_min_T"] for m in result["memory"]],
    }
    result["elapsed_s"] = time.perf_counter() - t_start
    log(f"spikeff bench: done in {result['elapsed_s']:.0f} s")
    if out:
        from .runs import write_json
        write_json(out, result)
        log(f"spikeff bench: wrote {out}")
    return result
