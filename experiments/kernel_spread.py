"""How far apart are results on other BLAS kernels and thread counts? (the README's tolerances)

Each configuration (``OPENBLAS_CORETYPE`` forcing a kernel, and a pinned thread count) runs in its
own process, since OpenBLAS reads the kernel at load time: one float32 GEMM of the training step's
shape, the weights after ONE training batch, and after a short training run (digits recipe, smaller,
float32) with its validation accuracy. Everything is compared with the first configuration
(the machine's own kernel, 2 threads). Writes ``results/kernel_spread.json``.

    python experiments/kernel_spread.py                      # kernels: default, Haswell, Sandybridge
    python experiments/kernel_spread.py --kernels default Haswell --epochs 1    # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from spikeff import load_config  # noqa: E402
from spikeff.runs import provenance, write_json  # noqa: E402

RECIPE = ROOT / "models" / "digits.toml"
OVERRIDES = {"hidden_sizes": (200, 200), "dtype": "float32"}

CHILD = r"""
import json, sys, numpy as np
sys.path.insert(0, {root!r})
from spikeff import FFNetwork, load_config
from spikeff.data import load_dataset
from spikeff.runs import ThreadSettings, blas_kernel, pinned_threads
threads = ThreadSettings(blas={threads}, engine={threads})
cfg = load_config({recipe!r}).replace(**{overrides!r}, epochs={epochs})
data = load_dataset("digits")
train, (Xv, yv) = data.split_validation(0.1, seed=cfg.seed)
rng = np.random.default_rng(0)
A = rng.standard_normal((2 * 64 * 30, 94)).astype(np.float32); B = rng.standard_normal((94, 500)).astype(np.float32)
with pinned_threads(threads):
    gemm = A @ B
one = FFNetwork(cfg)
one.initialize(64, 10); one.threads_ = threads
with pinned_threads(threads):
    one.train_batch(train.X_train[:cfg.batch_size], train.y_train[:cfg.batch_size], seed=[cfg.seed, 2, 0, 0])
net = FFNetwork(cfg).fit(train.X_train, train.y_train, Xv, yv, threads=threads, val_methods=["goodness", "readout"])
np.savez({out!r}, gemm=gemm, **{{f"one{{i}}": np.asarray(w) for i, w in enumerate(one.weights_)}},
         **{{f"W{{i}}": np.asarray(w) for i, w in enumerate(net.weights_)}})
print(json.dumps({{"kernel": blas_kernel(), "val_acc_goodness": net.history_[-1]["val_acc_goodness"],
                  "val_acc_readout": net.history_[-1]["val_acc_readout"]}}))
"""


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", nargs="+", default=["default", "Haswell", "Sandybridge"],
                   help="OPENBLAS_CORETYPE values ('default': the machine's own choice)")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="pinned BLAS thread counts")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the short training run (default: 3)")
    p.add_argument("--out", default=str(ROOT / "results" / "kernel_spread.json"))
    args = p.parse_args(argv)
    overrides = {**OVERRIDES, "epochs": args.epochs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in args.kernels:
            for threads in args.threads:
                out = f"{tmp}/{kernel}_{threads}.npz"
                env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")}
                if kernel != "default":
                    env["OPENBLAS_CORETYPE"] = kernel
                code = CHILD.format(root=str(ROOT), recipe=str(RECIPE), overrides=OVERRIDES, epochs=args.epochs,
                                    threads=threads, out=out)
                r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    rows.append({"coretype": kernel, "threads": threads, "error": r.stderr.strip().splitlines()[-1:]})
                    print(f"{kernel} x {threads} threads: failed: {rows[-1]['error']}", flush=True)
                    continue
                row = {"coretype": kernel, "threads": threads, **json.loads(r.stdout.strip().splitlines()[-1])}
                arrays = dict(np.load(out))
                if not rows or "error" in rows[0]:
                    ref = arrays
                    row["reference"] = True
                else:
                    row["gemm_max_rel_diff"] = _rel(arrays["gemm"], ref["gemm"])
                    row["weights_after_one_batch_max_rel_diff"] = max(
                        _rel(arrays[k], ref[k]) for k in arrays if k.startswith("one"))
                    row["weights_after_training_max_rel_diff"] = max(
                        _rel(arrays[k], ref[k]) for k in arrays if k.startswith("W"))
                    row["identical_weights"] = all(np.array_equal(arrays[k], ref[k]) for k in arrays
                                                   if k.startswith("W"))
                rows.append(row)
                print(json.dumps(row), flush=True)
    config = load_config(RECIPE).replace(**overrides)
    ok = [r for r in rows if "error" not in r and not r.get("reference")]
    res = {"experiment": "kernel_spread",
           "command": "python " + " ".join(["experiments/kernel_spread.py"] + (sys.argv[1:] if argv is None else list(argv))),
           "rows": rows, "recipe_overrides": overrides,
           "summary": {"gemm_max_rel_diff": max((r["gemm_max_rel_diff"] for r in ok), default=None),
                       "one_batch_max_rel_diff": max((r["weights_after_one_batch_max_rel_diff"] for r in ok), default=None),
                       "after_training_max_rel_diff": max((r["weights_after_training_max_rel_diff"] for r in ok), default=None),
                       "val_acc_goodness_range": [min(r["val_acc_goodness"] for r in rows if "error" not in r),
                                                  max(r["val_acc_goodness"] for r in rows if "error" not in r)]},
           "provenance": provenance(config=config, recipe=RECIPE)}
    write_json(args.out, res)
    print(json.dumps(res["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
