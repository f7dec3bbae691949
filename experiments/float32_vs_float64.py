"""float32 vs float64 on digits: train models/digits.toml with both dtypes (same seed), write
results/float32_vs_float64.json with the test accuracies, the gap and the training time.

    python experiments/float32_vs_float64.py [--epochs N] [--out results/float32_vs_float64.json]

Target: float32 within 0.3 accuracy point of float64.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spikeff import FFNetwork, load_config  # noqa: E402
from spikeff.runs import provenance, write_json as _write_json  # noqa: E402
from spikeff.data import load_digits_dataset  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "models" / "digits.toml"))
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--out", default=str(ROOT / "results" / "float32_vs_float64.json"))
    args = p.parse_args(argv)
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    base = load_config(args.config).replace(**overrides)
    d = load_digits_dataset()
    runs = {}
    for dtype in ("float32", "float64"):
        t0 = time.perf_counter()
        net = FFNetwork(base.replace(dtype=dtype)).fit(d.X_train, d.y_train)
        train_s = time.perf_counter() - t0
        runs[dtype] = {"test_acc_goodness": net.score(d.X_test, d.y_test, "goodness"),
                       "test_acc_readout": net.score(d.X_test, d.y_test, "readout") if net.readout_ else None,
                       "train_seconds": train_s,
                       "samples_per_s": [h["samples_per_s"] for h in net.history_]}
        print(f"{dtype}: test acc goodness {runs[dtype]['test_acc_goodness']:.4f}, readout "
              f"{runs[dtype]['test_acc_readout']}, {train_s:.1f} s training", flush=True)
    gap = {k: 100 * (runs["float32"][k] - runs["float64"][k])
           for k in ("test_acc_goodness", "test_acc_readout") if runs["float32"][k] is not None}
    res = {"command": " ".join(["python", *sys.argv]), "config": base.to_dict(), "dataset": "digits",
           "n_train": len(d.X_train), "n_test": len(d.X_test), "runs": runs,
           "gap_points_float32_minus_float64": gap,
           "within_0.3_points": {k: abs(v) <= 0.3 for k, v in gap.items()},
           "speedup_float32": runs["float64"]["train_seconds"] / runs["float32"]["train_seconds"],
           "recipe_overrides": overrides,
           "provenance": provenance(config=base, recipe=args.config),
           "note": ("timings on a shared 2-core machine; accuracies are deterministic for the seed, BLAS "
                    "kernel and thread count; trained on the whole training split, no tuning here")}
    _write_json(Path(args.out), res)
    print(f"gap (points, float32 - float64): {gap}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
