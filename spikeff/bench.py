"""``spikeff bench``: throughput, the machine's GEMM peak and the share of it reached, the share of
step time spent in GEMMs, memory in T, spike-kernel crossover, speed against another commit, and
time to accuracy.

Everything is measured in one run on this machine; speeds are reported as ratios measured in the
same process (or in processes run alternately), because the absolute numbers depend on the machine
and on what else runs on it (the load average is recorded).

* **peak GEMM**: numpy float32 matmul of large square matrices (best of a few): the machine's
  reachable GEMM FLOP/s; ``fraction_of_peak`` = the training step's model FLOP/s / that peak;
* **training**: samples/s of one :meth:`FFNetwork.train_batch` (store mode, see
  :mod:`spikeff.engines.vectorized`: neutral, positive and negative phase as one 3B batch, then the
  gradient GEMMs from the kept factors; replay mode adds a 2B forward pass);
* **FLOPs** counted: the GEMMs of the model only, i.e. the forward currents of every pass
  (``2 T B sum_l M_l N_l`` per pass) and the gradient GEMMs (the same count per row); the
  trace and membrane recurrences and all elementwise work are overhead, not counted;
* **GEMM share**: numpy matmul of exactly the engine's GEMM shapes (per chunk: ``(k*rows, M) @ (M, N)``
  and ``(N, k*rows) @ (k*rows, M)``), timed alone in the same process, interleaved with the
  training steps; ``gemm_share_pct`` = time of those GEMMs alone / time of the training step;
* **inference**: ``predict`` by goodness (every label, one pass each) and by the readout (one pass);
* **memory**: tracemalloc peak of one training step for several T, each in a fresh subprocess, in
  replay mode (``store_budget_mb = 0``: flat in T) and with the default budget (grows with T up to
  the budget, then falls back to replay);
* **spike kernels**: ``W @ x`` for 0/1 spikes ``x`` as a dense float32 GEMM against a sparse
  product (scipy.sparse CSR: the sum of the selected columns) at several densities: the crossover;
* **switches** (section ``switches``, needs the data set): the gain of each of the engine's speed
  switches (the fused membrane + goodness pass, Adam per cached block, leaving out the GEMM rows
  of silent steps, the parallel random numbers, work buffers reused across calls), each turned
  off in turn against all on, alternately in this process;
* **store vs replay** (section ``store``, needs the data set): the recipe trained with the default
  store budget and with ``store_budget_mb = 0``, alternately on the same batches: the gain of
  keeping the first pass, and whether the weights stay bit-identical;
* **against** (``--against DIR``): the Fashion-MNIST recipe's training step of the checkout in DIR
  and of this one, in two persistent processes run alternately on the same batches;
* **time to accuracy** (``--time-to-accuracy``): wall time of the shipped Fashion-MNIST recipe to
  reach the target validation accuracy (readout), with samples/s per epoch.
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
        "n_steps": 50, "reps": 2, "memory": [((500, 500), 64), ((1000, 1000), 100)],
        "memory_steps": [25, 50, 100, 200], "n_inference": 128}
QUICK = {"networks": [((100, 100), 32)], "n_steps": 10, "reps": 1, "memory": [((100, 100), 16)],
         "memory_steps": [25, 200], "n_inference": 16}


def _config(hidden, batch, n_steps, dtype="float32", **kw):
    from .config import FFConfig
    return FFConfig(hidden_sizes=tuple(hidden), n_steps=n_steps, batch_size=batch, dtype=dtype,
                    label_repeat=1, readout=True, eval_batch_size=max(batch, 64), **kw)


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, N_FEATURES)), rng.integers(0, N_CLASSES, n)


def train_flops(sizes, batch, n_steps, readout=True, store=True) -> float:
    """GEMM FLOPs of one training step (see the module doc): forward currents of the first pass
    ((2 or 3) B rows), of the replay (2B rows, replay mode only), and the gradient GEMMs (2B rows)."""
    per_pass = 2.0 * n_steps * sum(m * n for m, n in zip(sizes[:-1], sizes[1:]))
    forward_samples = 2 * batch + (0 if store else 2 * batch) + (batch if readout else 0)
    return per_pass * (forward_samples + 2 * batch)


def peak_gemm(sizes=(2048, 3072), dtype="float32", reps=3, log=print) -> dict:
    """The machine's float32 GEMM FLOP/s at large square sizes (numpy matmul, best of ``reps``)."""
    rng = np.random.default_rng(0)
    per = {}
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        c = np.empty((n, n), dtype=dtype)
        np.matmul(a, b, out=c)
        best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(reps))
        per[str(n)] = 2.0 * n ** 3 / best / 1e9
    res = {"dtype": dtype, "gflops_by_size": per, "peak_gflops": max(per.values()), "reps": reps}
    log(f"  peak GEMM ({dtype}, n = {', '.join(per)}): {res['peak_gflops']:.1f} GFLOP/s")
    return res


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _gemm_plan(sizes, batch, n_steps, chunk, dtype, readout=True, store=True):
    """The engine's GEMMs of one training step: list of (callable, flops, count)."""
    rng = np.random.default_rng(0)
    plan = []
    chunks = [min(chunk, n_steps - t0) for t0 in range(0, n_steps, chunk)]
    for m, n in zip(sizes[:-1], sizes[1:]):
        W = rng.standard_normal((n, m)).astype(dtype)
        # first pass: neutral + positive + negative phases as one batch; then the gradient GEMMs
        # of pos + neg (from the kept factors, or in a replay that also recomputes the currents)
        first_rows = (3 if readout else 2) * batch
        passes = ((first_rows, 1, 0), (2 * batch, 0, 1)) if store else ((first_rows, 1, 0), (2 * batch, 1, 1))
        for rows, fwd_count, grad_count in passes:
            for k in sorted(set(chunks)):
                times_k = chunks.count(k)
                x = (rng.random((k * rows, m)) < 0.3).astype(dtype)
                u = rng.random((k * rows, n)).astype(dtype)     # post factors for the gradient GEMM
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


def bench_network(hidden, batch, n_steps, reps, n_inference, dtype="float32", log=print,
                  peak_gflops=None, cfg=None) -> dict:
    """One network's training step and inference; ``cfg`` (e.g. a recipe) replaces the generic config."""
    from .network import FFNetwork
    cfg = cfg or _config(hidden, batch, n_steps, dtype)
    hidden, batch, n_steps, dtype = cfg.hidden_sizes, cfg.batch_size, cfg.n_steps, cfg.dtype
    net = FFNetwork(cfg).initialize(N_FEATURES, N_CLASSES)
    X, y = _data(batch)
    sizes = [N_FEATURES + N_CLASSES * cfg.label_repeat, *hidden]
    store = net.store_fits(2 * batch)
    readout = cfg.readout
    plan = _gemm_plan(sizes, batch, n_steps, cfg.chunk_steps, np.dtype(dtype), readout=readout, store=store)
    flops = train_flops(sizes, batch, n_steps, readout=readout, store=store)
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
    res = {"network": f"{sizes[0]}-{'-'.join(map(str, hidden))}", "batch": batch, "n_steps": n_steps,
           "dtype": dtype, "chunk_steps": cfg.chunk_steps, "reps": reps,
           "update": "store" if store else "replay", "store_budget_mb": net.store_budget_mb,
           "train_step_s": t_step, "train_step_s_all": steps,
           "train_samples_per_s": batch / t_step,
           "train_gflop": flops / 1e9, "achieved_gflops": flops / t_step / 1e9,
           "gemms_alone_s": t_roof, "gemms_alone_gflops": flops / t_roof / 1e9,
           "gemm_share_pct": 100.0 * t_roof / t_step,
           "inference_samples": n_inference,
           "predict_goodness_samples_per_s": n_inference / t_good,
           "predict_readout_samples_per_s": n_inference / t_read}
    if peak_gflops:
        res["peak_gflops"] = peak_gflops
        res["fraction_of_peak"] = res["achieved_gflops"] / peak_gflops
    log(f"  {res['network']:>15} B={batch:<4} train {res['train_samples_per_s']:8.1f} samples/s "
        f"{res['achieved_gflops']:7.1f} GFLOP/s"
        + (f" = {100 * res['fraction_of_peak']:5.1f}% of peak" if peak_gflops else "")
        + f" | GEMMs {res['gemm_share_pct']:5.1f}% of step time | predict goodness "
        f"{res['predict_goodness_samples_per_s']:7.1f}/s readout {res['predict_readout_samples_per_s']:8.1f}/s")
    return res


def _memory_child(hidden, batch, n_steps, dtype, store_budget_mb=0.0):
    """Run in a fresh process: peak traced memory of one training step (after a warm-up step)."""
    import resource
    import tracemalloc
    from .engines import vectorized
    from .network import FFNetwork
    # every buffer of the step allocated within it (not kept from the warm-up step), so the traced
    # peak is the step's whole working set
    vectorized.REUSE_BUFFERS = False
    cfg = _config(hidden, batch, n_steps, dtype)
    net = FFNetwork(cfg, store_budget_mb=store_budget_mb).initialize(N_FEATURES, N_CLASSES)
    X, y = _data(batch)
    net.train_batch(X, y, seed=[0, 0])
    tracemalloc.start()
    tracemalloc.reset_peak()
    net.train_batch(X, y, seed=[0, 1])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"peak_bytes": peak, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def bench_memory(hidden, batch, steps_list, dtype="float32", log=print, store_budget_mb=0.0) -> dict:
    """Peak memory of a training step per T. ``store_budget_mb = 0``: replay mode (flat in T);
    otherwise the kept factors grow with T up to the budget."""
    from .engines.vectorized import store_bytes
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    per_t = {}
    sizes = [N_FEATURES + N_CLASSES, *hidden]
    shapes = [np.empty((n, m), dtype=dtype) for m, n in zip(sizes[:-1], sizes[1:])]
    for T in steps_list:
        code = (f"from spikeff.bench import _memory_child; "
                f"_memory_child({tuple(hidden)!r}, {batch}, {T}, {dtype!r}, {float(store_budget_mb)!r})")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        per_t[T] = json.loads(out.stdout.strip().splitlines()[-1])
    peaks = {T: v["peak_bytes"] for T, v in per_t.items()}
    lo, hi = min(steps_list), max(steps_list)
    ratio = peaks[hi] / peaks[lo]
    mode = {str(T): ("store" if store_bytes(shapes, 2 * batch, T) <= store_budget_mb * 2**20 else "replay")
            for T in steps_list}
    res = {"network": f"{N_FEATURES}-{'-'.join(map(str, hidden))}", "batch": batch, "dtype": dtype,
           "store_budget_mb": store_budget_mb, "update_by_T": mode,
           "peak_mb": {str(T): peaks[T] / 2**20 for T in steps_list},
           "max_rss_mb": {str(T): per_t[T]["max_rss_bytes"] / 2**20 for T in steps_list},
           "ratio_max_T_to_min_T": ratio, "within_10pct": bool(ratio <= 1.10)}
    log(f"  memory {res['network']} B={batch} budget {store_budget_mb:g} MiB: peak of a training step "
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


def bench_spike_kernels(rows=2000, m=1000, n=1000, densities=(0.3, 0.2, 0.1, 0.05, 0.02, 0.01),
                        reps=3, log=print) -> dict:
    """``x @ W`` for 0/1 spikes ``x`` (rows, m): dense float32 GEMM against scipy.sparse CSR (the sum
    of the columns each row selects). Returns the times per density and the crossover: the highest
    measured density at which the sparse product is faster (None: dense wins at every density)."""
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    W = rng.standard_normal((m, n)).astype(np.float32)
    per = []
    for d in densities:
        x = (rng.random((rows, m)) < d).astype(np.float32)
        xs = sp.csr_matrix(x)
        np.testing.assert_allclose(xs @ W, x @ W, rtol=1e-4, atol=1e-3)   # the same product
        t_dense = min(_timed(lambda: x @ W) for _ in range(reps))
        t_sparse = min(_timed(lambda: xs @ W) for _ in range(reps))
        per.append({"density": d, "dense_s": t_dense, "sparse_csr_s": t_sparse,
                    "sparse_over_dense": t_sparse / t_dense})
    faster = [r["density"] for r in per if r["sparse_over_dense"] < 1.0]
    res = {"shape": [rows, m, n], "dtype": "float32", "per_density": per,
           "crossover_density": max(faster) if faster else None,
           "note": ("engine inputs: the currents are W @ e_u with the (dense, real-valued) presynaptic "
                    "traces, and the spikes themselves fire on 10-30% of entries; the dense float32 "
                    "GEMM stays the engine's path unless spikes are sparser than the crossover")}
    log("  spike kernels (x @ W, 0/1 x, " + f"{rows}x{m} @ {m}x{n}): sparse/dense time "
        + ", ".join(f"{r['density']:g}: {r['sparse_over_dense']:.2f}" for r in per)
        + f" -> crossover density {res['crossover_density']}")
    return res


_AGAINST_CHILD = r"""
import json, sys, time
import numpy as np
from spikeff.config import load_config
from spikeff.data import load_dataset
from spikeff.network import FFNetwork
import spikeff
cfg = load_config(sys.argv[1])
ds = load_dataset(sys.argv[2])
B = cfg.batch_size
X, y = ds.X_train, ds.y_train
net = FFNetwork(cfg).initialize(X.shape[1], int(y.max()) + 1)
net.train_batch(X[:B], y[:B], seed=[0, 0])
n_inf = int(sys.argv[3])
X_inf = ds.X_test[:n_inf]
net.predict(X_inf[:cfg.eval_batch_size], "readout")
print(json.dumps({"ready": spikeff.__file__}), flush=True)
i = 1
for line in sys.stdin:
    if line.startswith("readout"):      # inference by readout on the test images (current weights)
        t0 = time.perf_counter()
        pred = net.predict(X_inf, "readout")
        t = time.perf_counter() - t0
        print(json.dumps({"seconds": t, "predictions": pred.tolist()}), flush=True)
        continue
    k = int(line)
    times = []
    for _ in range(k):
        idx = slice((i * B) % (len(X) - B), (i * B) % (len(X) - B) + B)
        t0 = time.perf_counter()
        net.train_batch(X[idx], y[idx], seed=[0, i])
        times.append(time.perf_counter() - t0)
        i += 1
    print(json.dumps({"times": times}), flush=True)
"""


def bench_against(base_dir, recipe="models/fashion_mnist.toml", dataset="fashion_mnist", rounds=6,
                  steps_per_round=3, log=print, n_inference=2000) -> dict:
    """Training samples/s of the recipe with the spikeff of ``base_dir`` (a checkout of another
    commit, e.g. ``git worktree add /tmp/perf-base ac39769``, main when issue #14 was filed) and
    with this one: two persistent processes, run alternately (round by round) on the same batches
    and seeds; each trains the
    recipe file at the same path in its own tree when there is one (``base_recipe``). After each
    round's training steps, also inference by readout (``predict(X, "readout")``) on the first
    ``n_inference`` test images with the weights trained so far (0: not measured); both checkouts
    have trained on the same batches, so their predictions are compared too."""
    from .runs import git_commit
    here = Path(__file__).resolve().parent.parent
    base = Path(base_dir).resolve()
    if not (base / "spikeff" / "__init__.py").is_file():
        raise FileNotFoundError(f"--against {base_dir}: no spikeff package there (expected {base}/spikeff)")
    recipe = Path(recipe).resolve()
    # each checkout trains the recipe file of its own tree (the base may not read keys added since)
    recipes = {"this": recipe, "base": recipe}
    if recipe.is_relative_to(here) and (base / recipe.relative_to(here)).is_file():
        recipes["base"] = base / recipe.relative_to(here)
    procs, times = {}, {"base": [], "this": []}
    try:
        for name, root in (("base", base), ("this", here)):
            env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            procs[name] = subprocess.Popen([sys.executable, "-c", _AGAINST_CHILD, str(recipes[name]), dataset,
                                            str(int(n_inference))],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                           env=env, cwd=str(root))
        files = {}
        for name, pr in procs.items():
            files[name] = json.loads(pr.stdout.readline())["ready"]
            if not files[name].startswith(str(base if name == "base" else here)):
                raise RuntimeError(f"{name}: imported spikeff from {files[name]}, not from its checkout")
        per_round, inference, same_predictions = [], {"base": [], "this": []}, []
        for r in range(rounds):
            order = ("base", "this") if r % 2 == 0 else ("this", "base")
            got, preds = {}, {}
            for name in order:
                procs[name].stdin.write(f"{steps_per_round}\n")
                procs[name].stdin.flush()
                got[name] = json.loads(procs[name].stdout.readline())["times"]
                times[name] += got[name]
            per_round.append(float(np.median(got["base"]) / np.median(got["this"])))
            if n_inference:
                for name in order:
                    procs[name].stdin.write("readout\n")
                    procs[name].stdin.flush()
                    answer = json.loads(procs[name].stdout.readline())
                    inference[name].append(answer["seconds"])
                    preds[name] = answer["predictions"]
                same_predictions.append(preds["base"] == preds["this"])
    finally:
        for pr in procs.values():
            if pr.stdin:
                pr.stdin.close()
            pr.wait(timeout=60)
    from .config import load_config
    B = load_config(recipe).batch_size
    sps = {k: B / float(np.median(v)) for k, v in times.items()}
    res = {"recipe": str(recipe.relative_to(here)) if recipe.is_relative_to(here) else str(recipe),
           "base_recipe": str(recipes["base"]),
           "dataset": dataset, "batch_size": B, "rounds": rounds, "steps_per_round": steps_per_round,
           "base": {"dir": str(base), "git": git_commit(base), "spikeff_file": files["base"]},
           "this": {"git": git_commit(here), "spikeff_file": files["this"]},
           "step_s": times, "samples_per_s_median": sps,
           "ratio_this_over_base": sps["this"] / sps["base"], "ratio_per_round": per_round,
           "load_average_at_end": list(os.getloadavg())}
    log(f"  against {base} ({res['base']['git']['commit']}): training samples/s (median) base "
        f"{sps['base']:.1f}, this {sps['this']:.1f} -> ratio {res['ratio_this_over_base']:.2f} "
        f"(per round {', '.join(f'{x:.2f}' for x in per_round)})")
    if n_inference:
        inf = {k: n_inference / float(np.median(v)) for k, v in inference.items()}
        res["readout_inference"] = {
            "samples": int(n_inference), "images": f"{dataset} test set, first {int(n_inference)}",
            "seconds": inference, "samples_per_s_median": inf,
            "ratio_this_over_base": inf["this"] / inf["base"],
            "same_predictions_every_round": bool(all(same_predictions))}
        log(f"  against {base}: inference by readout ({n_inference} test images) samples/s (median) base "
            f"{inf['base']:.0f}, this {inf['this']:.0f} -> ratio {inf['this'] / inf['base']:.2f}; "
            f"same predictions every round: {all(same_predictions)}")
    return res


def bench_store_vs_replay(recipe="models/fashion_mnist.toml", dataset="fashion_mnist", rounds=6,
                          steps_per_round=2, log=print) -> dict:
    """The gain of store over replay: two networks of the recipe (the same initial weights), one
    with the default store budget and one with ``store_budget_mb = 0``, trained alternately on the
    same batches; also whether their weights are still bit-identical at the end."""
    from .config import load_config
    from .data import load_dataset
    from .network import FFNetwork
    cfg = load_config(recipe)
    ds = load_dataset(dataset)
    X, y = ds.X_train, ds.y_train
    B = cfg.batch_size
    nets = {"store": FFNetwork(cfg).initialize(X.shape[1], ds.n_classes),
            "replay": FFNetwork(cfg, store_budget_mb=0).initialize(X.shape[1], ds.n_classes)}
    times, modes = {k: [] for k in nets}, {k: set() for k in nets}
    for name, net in nets.items():
        net.train_batch(X[:B], y[:B], seed=[0, 0])
    i = 1
    for r in range(rounds):
        for name in (("store", "replay") if r % 2 == 0 else ("replay", "store")):
            for j in range(steps_per_round):
                idx = slice((i + j) * B, (i + j + 1) * B)
                t0 = time.perf_counter()
                modes[name].add(nets[name].train_batch(X[idx], y[idx], seed=[0, i + j])["update"])
                times[name].append(time.perf_counter() - t0)
        i += steps_per_round
    same = all(np.array_equal(a, b) for a, b in zip(nets["store"].weights_, nets["replay"].weights_))
    med = {k: float(np.median(v)) for k, v in times.items()}
    res = {"recipe": recipe, "dataset": dataset, "batch_size": B, "rounds": rounds,
           "steps_per_round": steps_per_round, "updates": {k: sorted(v) for k, v in modes.items()},
           "step_s": times, "samples_per_s_median": {k: B / v for k, v in med.items()},
           "speedup_store_over_replay": med["replay"] / med["store"],
           "weights_bit_identical_after": same, "steps": 1 + rounds * steps_per_round}
    log(f"  store vs replay ({recipe}): {res['samples_per_s_median']['store']:.1f} vs "
        f"{res['samples_per_s_median']['replay']:.1f} samples/s -> {res['speedup_store_over_replay']:.2f}x; "
        f"weights bit-identical after {res['steps']} steps: {same}")
    return res


def _switches():
    """The engine's speed switches (module attributes) and the value that turns each off."""
    from . import encoding, learning
    from .engines import vectorized
    return {"fused_pass": (vectorized, "FUSED_PASS", False),
            "blocked_adam": (learning, "FAST_ADAM", False),
            "skip_silent_steps": (vectorized, "SKIP_SILENT_STEPS", False),
            "parallel_random": (encoding, "_MIN_PARALLEL_DRAWS", 1 << 62),
            "reuse_buffers": (vectorized, "REUSE_BUFFERS", False)}


def bench_switches(recipe="models/fashion_mnist.toml", dataset="fashion_mnist", rounds=4, n_inference=1000,
                   log=print) -> dict:
    """The gain of each of the engine's speed switches, measured in this process: the recipe's
    training step (one network, the same batch and seed every time) and inference by readout on
    ``n_inference`` test images, with every switch on and with one switch off, alternately (ABAB)
    for ``rounds`` rounds. ``gain`` = median time with the switch off / median time with all on."""
    from .config import load_config
    from .data import load_dataset
    from .network import FFNetwork
    cfg = load_config(recipe)
    ds = load_dataset(dataset)
    B = cfg.batch_size
    net = FFNetwork(cfg).initialize(ds.X_train.shape[1], ds.n_classes)
    X, y, Xi = ds.X_train[:2 * B], ds.y_train[:2 * B], ds.X_test[:n_inference]
    net.train_batch(X[:B], y[:B], seed=[0, 0])
    net.predict(Xi[:cfg.eval_batch_size], "readout")
    switches = _switches()
    settings = ["all_on"] + [f"{name}_off" for name in switches]
    t_train, t_read = {k: [] for k in settings}, {k: [] for k in settings}
    for r in range(rounds):
        for setting in (settings if r % 2 == 0 else settings[::-1]):
            saved = {name: getattr(mod, attr) for name, (mod, attr, _) in switches.items()}
            try:
                for name, (mod, attr, off) in switches.items():
                    if setting == f"{name}_off":
                        setattr(mod, attr, off)
                t_train[setting].append(_timed(lambda: net.train_batch(X[B:], y[B:], seed=[0, 1])))
                t_read[setting].append(_timed(lambda: net.predict(Xi, "readout")))
            finally:
                for name, (mod, attr, _) in switches.items():
                    setattr(mod, attr, saved[name])
    med_t = {k: float(np.median(v)) for k, v in t_train.items()}
    med_r = {k: float(np.median(v)) for k, v in t_read.items()}
    res = {"recipe": recipe, "dataset": dataset, "rounds": rounds, "inference_samples": n_inference,
           "train_step_s": t_train, "readout_s": t_read,
           "train_samples_per_s_median": {k: B / v for k, v in med_t.items()},
           "readout_samples_per_s_median": {k: n_inference / v for k, v in med_r.items()},
           "gain": {name: {"train": med_t[f"{name}_off"] / med_t["all_on"],
                           "readout": med_r[f"{name}_off"] / med_r["all_on"]} for name in switches},
           "load_average_at_end": list(os.getloadavg())}
    log("  switches (gain = time off / time on; train step, readout inference): "
        + ", ".join(f"{n} {g['train']:.2f}/{g['readout']:.2f}" for n, g in res["gain"].items())
        + f"; all on: train {res['train_samples_per_s_median']['all_on']:.0f} samples/s, readout "
        f"{res['readout_samples_per_s_median']['all_on']:.0f} samples/s")
    return res


class _Reached(Exception):
    pass


def time_to_accuracy(recipe="models/fashion_mnist.toml", dataset="fashion_mnist", target=0.86,
                     val_fraction=0.1, max_epochs=None, n_inference=5000, n_train=None, log=print,
                     checkpoint=None) -> dict:
    """Wall time for ``recipe`` to reach ``target`` validation accuracy (its ``predict_method``,
    checked after every epoch on a held-out split of the training set; the test set is not used).
    Counts training and the per-epoch validation; stops at the first epoch that reaches the target
    or after ``max_epochs`` (default: the recipe's epochs). Also times inference by readout.
    ``n_train``: a random subset of the training set (for tests; default all of it).
    ``checkpoint(partial)``: called after every epoch with the results so far (a long run on a
    busy machine leaves its progress behind even when it is stopped)."""
    from .config import load_config
    from .network import FFNetwork
    from .runs import prepare_data
    cfg = load_config(recipe)
    data, (X_val, y_val) = prepare_data(dataset, n_train=n_train, val_fraction=val_fraction, seed=cfg.seed)
    epochs = max_epochs or cfg.epochs
    per_epoch, reached = [], {}
    t0 = time.perf_counter()

    def on_epoch(net, m):
        row = {"epoch": m["epoch"], "samples_per_s": m["samples_per_s"], "train_seconds": m["train_seconds"],
               "eval_seconds": m.get("eval_seconds"), "val_acc": m["val_acc"],
               "wall_seconds": time.perf_counter() - t0, "load_average_1min": round(os.getloadavg()[0], 2)}
        per_epoch.append(row)
        if checkpoint is not None:
            checkpoint({"recipe": recipe, "dataset": dataset, "target_val_acc": target, "complete": False,
                        "per_epoch": per_epoch})
        log(f"  epoch {row['epoch']}: {row['samples_per_s']:.0f} samples/s, val_acc {row['val_acc']:.4f}, "
            f"wall {row['wall_seconds'] / 60:.1f} min, load {row['load_average_1min']}")
        if row["val_acc"] >= target:
            reached.update(row)
            raise _Reached

    net = FFNetwork(cfg)
    try:
        net.fit(data.X_train, data.y_train, X_val, y_val, epochs=epochs, callback=on_epoch,
                val_methods=[cfg.predict_method])
    except _Reached:
        pass
    Xi = X_val[:n_inference]
    net.predict(Xi[:cfg.eval_batch_size], "readout")
    t_inf = _timed(lambda: net.predict(Xi, "readout"))
    res = {"recipe": recipe, "dataset": dataset, "target_val_acc": target, "val_fraction": val_fraction,
           "complete": True, "n_train": int(len(data.X_train)), "n_val": int(len(X_val)), "method": cfg.predict_method,
           "reached": bool(reached), "wall_seconds_to_target": reached.get("wall_seconds"),
           "wall_minutes_to_target": reached["wall_seconds"] / 60 if reached else None,
           "epochs_to_target": reached.get("epoch"), "per_epoch": per_epoch,
           "inference_readout_samples_per_s": len(Xi) / t_inf, "inference_samples": int(len(Xi))}
    log(f"  time to {target:.0%} validation accuracy: "
        + (f"{res['wall_minutes_to_target']:.1f} min ({res['epochs_to_target']} epochs)" if reached
           else f"not reached in {epochs} epochs")
        + f"; inference by readout {res['inference_readout_samples_per_s']:.0f} samples/s")
    return res


def environment() -> dict:
    from .runs import environment as run_environment, git_commit
    env = run_environment()
    env.update({"load_average_at_start": list(os.getloadavg()), "git": git_commit()})
    return env


SECTIONS = ("gemm", "recipe", "store", "switches", "training", "memory", "kernels", "brian2")
DEFAULT_SECTIONS = ("gemm", "recipe", "training", "memory", "kernels", "brian2")   # "store", "switches": need the data set


def run_bench(quick: bool = False, out=None, shared_machine: bool = True, log=print, against=None,
              tta: bool = False, sections=DEFAULT_SECTIONS, recipe="models/fashion_mnist.toml",
              dataset="fashion_mnist", target=0.86, command=None) -> dict:
    from .config import load_config
    from .runs import provenance
    bad = set(sections) - set(SECTIONS)
    if bad:
        raise ValueError(f"sections: {sorted(bad)} are not valid; choose from {list(SECTIONS)}")
    p = QUICK if quick else FULL
    t_start = time.perf_counter()
    cfg = load_config(recipe) if (against or tta or {"recipe", "store", "switches"} & set(sections)) else None
    result = {"spikeff_bench": 2, "quick": quick, "command": command or " ".join(sys.argv),
              "provenance": provenance(config=cfg, recipe=recipe if cfg is not None else None),
              "environment": environment(), "shared_machine": shared_machine,
              "note": ("absolute numbers depend on the machine and its load; compare the in-run ratios "
                       "(fraction of peak, GEMM share, memory ratio, against). GPU figures: not measured "
                       "here (no GPU on this machine, none lent to this task)."),
              "flop_count": ("model GEMMs only: forward currents of every pass (neutral+pos+neg as one 3B "
                             "batch; in replay mode pos+neg again as 2B) + gradient GEMMs (2B rows)"),
              "sections": list(sections), "training": [], "memory": []}
    log(f"spikeff bench ({'quick' if quick else 'full'}), BLAS: {result['environment'].get('blas')}")
    peak = None
    if "gemm" in sections:
        result["peak_gemm"] = peak_gemm(sizes=(256, 512) if quick else (2048, 3072), log=log)
        peak = result["peak_gemm"]["peak_gflops"]
    if "recipe" in sections:       # the recipe's own shape (random data of its size)
        from .config import load_config as _load
        rcfg = _load(recipe)
        result["recipe_step"] = bench_network(None, None, None, 1 if quick else 4, 64 if quick else 500,
                                              log=log, peak_gflops=peak, cfg=rcfg)
        result["recipe_step"]["recipe"] = recipe
    if "store" in sections:
        result["store_vs_replay"] = bench_store_vs_replay(recipe, dataset, log=log)
    if "switches" in sections:
        result["switches"] = bench_switches(recipe, dataset, rounds=1 if quick else 4,
                                            n_inference=100 if quick else 1000, log=log)
    if "training" in sections:
        for hidden, batch in p["networks"]:
            result["training"].append(bench_network(hidden, batch, p["n_steps"], p["reps"],
                                                    min(p["n_inference"], batch), log=log, peak_gflops=peak))
    if "memory" in sections:
        for hidden, batch in p["memory"]:
            for budget in (0.0, 1024.0):
                result["memory"].append(bench_memory(hidden, batch, p["memory_steps"], log=log,
                                                     store_budget_mb=budget))
    if "kernels" in sections:
        result["spike_kernels"] = (bench_spike_kernels(rows=200, m=200, n=200, reps=1, log=log) if quick
                                   else bench_spike_kernels(log=log))
    if "brian2" in sections:
        result["brian2"] = bench_brian2(log=log)
    if against:
        result["against"] = bench_against(against, recipe, dataset, log=log)
    if tta:
        def checkpoint(partial):
            if out:
                from .runs import write_json
                write_json(out, dict(result, time_to_accuracy=partial,
                                     elapsed_s=time.perf_counter() - t_start))
        result["time_to_accuracy"] = time_to_accuracy(recipe, dataset, target, log=log, checkpoint=checkpoint)
    big = [r for r in result["training"] if r["network"].endswith("2000-2000") and r["batch"] == 512]
    replay_mem = [m for m in result["memory"] if m["store_budget_mb"] == 0]
    result["targets"] = {
        "fraction_of_peak_784-2000-2000_B512_float32": big[0].get("fraction_of_peak") if big else None,
        "memory_T200_over_T25_replay (target <= 1.10)": [m["ratio_max_T_to_min_T"] for m in replay_mem],
    }
    if "recipe_step" in result:
        r = result["recipe_step"]
        result["targets"]["recipe_fraction_of_peak"] = r.get("fraction_of_peak")
        result["targets"]["recipe_gemm_share_pct"] = r["gemm_share_pct"]
    if against:
        result["targets"]["train_samples_per_s_over_base (target >= 2)"] = result["against"]["ratio_this_over_base"]
        if "readout_inference" in result["against"]:
            ri = result["against"]["readout_inference"]
            result["targets"]["inference_readout_samples_per_s_fashion_mnist (target >= 2000)"] = \
                ri["samples_per_s_median"]["this"]
    if tta:
        t = result["time_to_accuracy"]
        result["targets"]["minutes_to_86pct_val (target <= 7)"] = t["wall_minutes_to_target"]
        result["targets"]["inference_readout_samples_per_s (target >= 2000)"] = t["inference_readout_samples_per_s"]
    result["elapsed_s"] = time.perf_counter() - t_start
    log(f"spikeff bench: done in {result['elapsed_s']:.0f} s")
    if out:
        from .runs import write_json
        write_json(out, result)
        log(f"spikeff bench: wrote {out}")
    return result
