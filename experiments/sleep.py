""""Sleep": the negative phase done offline, far from the positive phase (Hinton 2022, section 6).

Training alternates K batches of *positive-only* updates ("awake": real data with the true label;
the negative data of each batch are drawn then, as the sample is seen) with the same K batches of
*negative-only* updates ("asleep"), each update one :meth:`FFNetwork.train_phase` step (the same
local rule and optimizer as normal training). K = 0 is normal training: both phases of a batch
in one update (:meth:`FFNetwork.train_batch`). K larger than the number of batches of an epoch
means a whole epoch awake, then a whole epoch's negatives asleep. Readout off (goodness accuracy).

    python experiments/sleep.py --size small   # CI (seconds): K = 0, 1, 4
    python experiments/sleep.py --size full    # all digits, 500-500, 6 epochs: K = 0, 1, 4, 16, 64
"""
from __future__ import annotations

import numpy as np

from _common import base_config, evaluate_scores, load_data, parse_args, table, train, write_results

from spikeff import FFNetwork
from spikeff.learning import lr_factor
from spikeff.network import PHASE_IDS

NAME = "sleep"


def train_sleep(net: FFNetwork, X, y, K: int, n_classes: int, epochs: int):
    """Train ``net`` from scratch with K positive-only batches, then their K negative-only batches.
    Batch order, negative data and seeds as in :meth:`FFNetwork.train_epoch`. Returns ``net``."""
    c = net.config
    net.initialize(X.shape[1], n_classes)
    for epoch in range(epochs):
        order = np.random.default_rng(np.random.SeedSequence([c.seed, 1, epoch])).permutation(len(X))
        for opt in net.optimizers_:
            opt.lr = c.learning_rate * lr_factor(c.lr_schedule, epoch, epochs)
        batches = [order[i:i + c.batch_size] for i in range(0, len(X), c.batch_size)]
        for g0 in range(0, len(batches), K):
            asleep = []
            for bi in range(g0, min(g0 + K, len(batches))):          # awake: positive phase only
                idx, seed = batches[bi], [c.seed, 2, epoch, bi]
                rng = np.random.default_rng(np.random.SeedSequence(seed + [0]))
                y_pos, X_neg, y_neg = net.negative_data(X[idx], y[idx], seed, rng)
                net.train_phase(X[idx], y_pos, seed + [PHASE_IDS["positive"]], "positive")
                asleep.append((X_neg, y_neg, seed))
            for X_neg, y_neg, seed in asleep:                         # asleep: negative phase only
                net.train_phase(X_neg, y_neg, seed + [PHASE_IDS["negative"]], "negative")
        net.epochs_done_ = epoch + 1
    return net


def main(argv=None):
    args = parse_args(NAME, __doc__, argv)
    data = load_data(args)
    Ks = [0, 1, 4] if args.size == "small" else [0, 1, 4, 16, 64]
    # hard negatives from the goodness of every label (the readout, and so readout_hard, is off here)
    config = base_config(args, readout=False, negatives="hard")
    n_batches = int(np.ceil(len(data.X_train) / config.batch_size))
    rows = []
    for K in Ks:
        if K == 0:
            net, secs = train(config, data)
        else:
            import time
            t0 = time.perf_counter()
            net = train_sleep(FFNetwork(config), data.X_train, data.y_train, K, data.n_classes, config.epochs)
            secs = time.perf_counter() - t0
        G = net.goodness_per_label(data.X_test)
        ev = evaluate_scores(G, data.y_test)
        rows.append({"K": K, "schedule": "paired (normal)" if K == 0 else
                     (f"{K} batches awake / {K} asleep" if K < n_batches else f"whole epoch ({n_batches} batches)"),
                     "accuracy": ev["accuracy"], "separation": ev["separation"], "train_seconds": secs})
        print(f"K = {K:3d}: goodness acc {ev['accuracy']:.3f} separation {np.round(ev['separation'], 2)} "
              f"{secs:.0f} s", flush=True)
    md = table(rows, [("K", "K"), ("schedule", "schedule"), ("acc. goodness", "accuracy"),
                      ("separation, layers", lambda r: " / ".join(f"{x:.2f}" for x in r["separation"]))])
    print(md)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(rows))
    labels = ["paired" if r["K"] == 0 else str(min(r["K"], n_batches)) for r in rows]
    axes[0].plot(x, [r["accuracy"] for r in rows], "o-")
    axes[0].axhline(0.1, color="0.6", ls=":", label="chance")
    axes[0].set(xticks=x, xlabel="K (batches between positive and negative phase)", ylabel="test accuracy",
                title="sleep: accuracy vs phase separation", ylim=(0, 1))
    axes[0].set_xticklabels(labels)
    axes[0].legend(fontsize=7)
    sep = np.array([r["separation"] for r in rows])
    for l in range(sep.shape[1]):
        axes[1].plot(x, sep[:, l], "o-", label=f"layer {l + 1}")
    axes[1].set(xticks=x, xlabel="K", ylabel="mean(pos - neg) / std", title="separation true vs wrong label")
    axes[1].set_xticklabels(labels)
    axes[1].legend(fontsize=7)
    write_results(args, NAME, {"n_batches_per_epoch": n_batches, "rows": rows, "table": md}, fig)
    return rows


if __name__ == "__main__":
    main()
