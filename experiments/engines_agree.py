"""One epoch on sklearn digits with the vectorized and the Brian2 engine: same seed, same accuracy?

The digits model (models/digits.toml) with smaller hidden layers so that Brian2 finishes in a few
minutes, in float64 (Brian2 computes in float64). Writes results/engines_agree.json.

    PYTHONPATH=. python experiments/engines_agree.py [--hidden 100 100] [--target numpy]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from spikeff import FFNetwork
from spikeff.config import load_config
from spikeff.data import load_digits_dataset
from spikeff.engines import brian2_engine

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    ap.add_argument("--target", default="numpy", choices=list(brian2_engine.TARGETS))
    ap.add_argument("--out", default=str(ROOT / "results" / "engines_agree.json"))
    args = ap.parse_args(argv)
    brian2_engine.TARGET = args.target
    import brian2
    data = load_digits_dataset()
    cfg = load_config(ROOT / "models" / "digits.toml").replace(
        hidden_sizes=tuple(args.hidden), dtype="float64", epochs=1)
    runs, nets = {}, {}
    for engine in ("vectorized", "brian2"):
        t0 = time.perf_counter()
        net = FFNetwork(cfg, engine=engine).fit(data.X_train, data.y_train, data.X_test, data.y_test)
        h = net.history_[-1]
        runs[engine] = {"test_acc_goodness": h["test_acc_goodness"],
                        "test_acc_readout": h.get("test_acc_readout"),
                        "ff_loss": h["ff_loss"], "train_seconds": h["train_seconds"],
                        "eval_seconds": h["eval_seconds"], "total_seconds": time.perf_counter() - t0}
        nets[engine] = net
        print(engine, json.dumps(runs[engine]))
    diff = {k: 100 * abs(runs["brian2"][k] - runs["vectorized"][k])
            for k in ("test_acc_goodness", "test_acc_readout") if runs["vectorized"][k] is not None}
    w_diff = max(float(np.abs(a - b).max()) for a, b in
                 zip(nets["vectorized"].weights_, nets["brian2"].weights_))
    out = {"experiment": "engines_agree", "dataset": "digits (sklearn, 1437 train / 360 test)",
           "config": cfg.to_dict(), "brian2_target": args.target, "brian2_version": brian2.__version__,
           "numpy_version": np.__version__, "python": platform.python_version(),
           "runs": runs, "accuracy_difference_points": diff,
           "max_abs_weight_difference_after_epoch": w_diff,
           "agree_within_0.5_points": all(d <= 0.5 for d in diff.values())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("accuracy_difference_points", "max_abs_weight_difference_after_epoch",
                                          "agree_within_0.5_points")}))


if __name__ == "__main__":
    main()
