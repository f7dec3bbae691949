"""One digits epoch with the vectorized and the Brian2 engine: same seed, same weights and accuracy?

The digits recipe as shipped (``models/digits.toml``: 500-500 LIF, T = 30, symba loss, readout on,
readout_hard negatives), trained for one epoch in float64 (Brian2 computes in float64) on the
training split less the validation split, then evaluated on validation (after the epoch) and test
(once, at the end). On Brian2 every phase of a batch is its own ``run()`` epoch of one persistent
network (neutral, positive, negative, positive replay, negative replay). Writes
results/engines_agree.json.

    python experiments/engines_agree.py [--target cpp_standalone|cython|numpy] [--hidden 500 500]
                                        [--max-batches K]

``--max-batches K``: where a whole epoch on Brian2 takes too long, the first K batches of that epoch
(the same batches, seeds and learning rate as in the epoch: ``FFNetwork.fit`` runs and is stopped
after its K-th ``train_batch``), with the recipe's layer sizes; weights and readout compared after
them, accuracies on validation and test of the networks so trained (no end-of-epoch step runs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from spikeff import FFNetwork
from spikeff.config import load_config
from spikeff.engines import brian2_engine
from spikeff.runs import VAL_FRACTION, evaluate, pinned_threads, prepare_data, provenance, write_json

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "models" / "digits.toml"


class _Stop(Exception):
    pass


def fit_first_batches(net, X, y, max_batches):
    """``net.fit(X, y)`` stopped after its ``max_batches``-th training batch (epoch 1)."""
    train_batch, done = net.train_batch, []

    def limited(*args, **kw):
        if len(done) == max_batches:
            raise _Stop
        done.append(1)
        return train_batch(*args, **kw)

    net.train_batch = limited
    try:
        net.fit(X, y)
    except _Stop:
        pass
    finally:
        del net.train_batch
    return len(done)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="cpp_standalone", choices=list(brian2_engine.TARGETS))
    ap.add_argument("--hidden", type=int, nargs="+", default=None,
                    help="hidden sizes (default: the recipe's); only for quick checks")
    ap.add_argument("--n-train", type=int, default=None, help="training subset (default: all); quick checks")
    ap.add_argument("--max-batches", type=int, default=None,
                    help="train only the first K batches of the epoch (see the module docstring)")
    ap.add_argument("--out", default=str(ROOT / "results" / "engines_agree.json"))
    args = ap.parse_args(argv)
    brian2_engine.TARGET = args.target
    import brian2
    cfg = load_config(RECIPE).replace(dtype="float64", epochs=1)
    if args.hidden:
        cfg = cfg.replace(hidden_sizes=tuple(args.hidden))
    data, (X_val, y_val) = prepare_data("digits", n_train=args.n_train, val_fraction=VAL_FRACTION, seed=cfg.seed)
    runs, nets = {}, {}
    for engine in ("vectorized", "brian2"):
        t0 = time.perf_counter()
        net = FFNetwork(cfg, engine=engine)
        if args.max_batches:
            n_batches = fit_first_batches(net, data.X_train, data.y_train, args.max_batches)
            t_fit = time.perf_counter() - t0
            t1 = time.perf_counter()
            val = evaluate(net, X_val, y_val, threads=net.threads_)
            h = {"val_acc_goodness": val["test_acc_goodness"], "val_acc_readout": val["test_acc_readout"],
                 "batches_trained": n_batches, "train_seconds": t_fit,
                 "eval_seconds": time.perf_counter() - t1}
        else:
            net.fit(data.X_train, data.y_train, X_val, y_val)
            t_fit = time.perf_counter() - t0
            h = {k: net.history_[-1][k] for k in ("val_acc_goodness", "val_acc_readout", "ff_loss",
                                                  "readout_loss", "train_seconds", "eval_seconds")}
        t1 = time.perf_counter()
        test = evaluate(net, data.X_test, data.y_test, threads=net.threads_)
        runs[engine] = {**h, **test, "test_seconds": time.perf_counter() - t1, "fit_seconds": t_fit,
                        "predictions_goodness": net.predict(data.X_test[:60], "goodness").tolist()}
        if engine == "brian2":
            eng = net._engine()
            runs[engine]["brian2_networks"] = [
                {"replicas": n.R, "sizes": n.sizes, "n_steps": n.T, "build_seconds": n.build_seconds,
                 "target": n.target} for n in eng.networks]
        nets[engine] = net
        print(engine, {k: v for k, v in runs[engine].items() if k != "predictions_goodness"}, flush=True)
    v, b = nets["vectorized"], nets["brian2"]
    w_diff = max(float(np.abs(x - y).max()) for x, y in zip(v.weights_, b.weights_))
    readout_diff = float(np.abs(v.readout_.W - b.readout_.W).max())
    w_change = max(float(np.abs(x - y).max()) for x, y in
                   zip(v.weights_, FFNetwork(cfg).initialize(data.X_train.shape[1], 10).weights_))
    acc_keys = ("val_acc_goodness", "val_acc_readout", "test_acc_goodness", "test_acc_readout")
    diff = {k: abs(runs["brian2"][k] - runs["vectorized"][k]) for k in acc_keys}
    out = {"experiment": "engines_agree",
           "command": "python experiments/engines_agree.py " + " ".join(argv),
           "dataset": (f"digits (sklearn): {len(data.X_train)} train, {len(X_val)} validation, "
                       f"{len(data.X_test)} test"),
           "recipe": ("models/digits.toml, dtype float64, "
                      + (f"the first {args.max_batches} batches of epoch 1 (of "
                         f"{-(-len(data.X_train) // cfg.batch_size)}), not the whole epoch" if args.max_batches
                         else "1 epoch")
                      + (f", hidden_sizes {list(cfg.hidden_sizes)} (not the recipe's)" if args.hidden
                         else ", layer sizes as shipped")),
           "brian2_target": args.target, "brian2_version": brian2.__version__,
           "runs": runs, "accuracy_difference": diff,
           "max_abs_weight_difference_after_epoch": w_diff,
           "max_abs_readout_weight_difference": readout_diff,
           "max_abs_weight_change_in_the_epoch": w_change,
           "same_accuracy": all(d == 0 for d in diff.values()),
           "weights_within_1e-9": w_diff <= 1e-9 and readout_diff <= 1e-9,
           "provenance": provenance(config=cfg, threads=v.threads_, recipe=RECIPE)}
    write_json(args.out, out)
    print({k: out[k] for k in ("accuracy_difference", "max_abs_weight_difference_after_epoch",
                               "max_abs_readout_weight_difference", "same_accuracy", "weights_within_1e-9")})


if __name__ == "__main__":
    main()
