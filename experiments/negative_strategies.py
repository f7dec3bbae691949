"""Negative data compared (spikeff.negatives):

* ``random``: the real image with a wrong label drawn uniformly;
* ``hard``: a wrong label drawn by the network's current goodness of every label;
* ``readout_hard``: the same sampling from the linear readout's logits (the digits recipe's choice);
* ``hybrid`` (unsupervised, Hinton 2022 section 3.2): real images as positives and *hybrid images*
  (two images mixed by a smooth random mask) as negatives, both with the neutral label: the
  spiking layers never see a label, only the linear readout does (it is trained on the neutral-label
  activities in every variant);
* ``no FF learning`` (baseline): the readout on the untrained random network (learning_rate 1e-9),
  to tell how much of the readout accuracy the FF features add.

Measures: goodness accuracy (supervised only), readout accuracy, and per layer the separation
mean(pos - neg)/std(pos - neg) of true vs wrong label (neutral-free) and of real vs hybrid image
(neutral label).

    python experiments/negative_strategies.py --size small   # CI (seconds)
    python experiments/negative_strategies.py --size full    # all digits, 500-500, 6 epochs
"""
from __future__ import annotations

import numpy as np

from _common import base_config, evaluate_scores, load_data, parse_args, separation, table, train, write_results

from spikeff.encoding import NEUTRAL
from spikeff.negatives import hybrid_images

NAME = "negative_strategies"

VARIANTS = [("random", {"negatives": "random"}), ("hard", {"negatives": "hard"}),
            ("readout_hard", {"negatives": "readout_hard"}),
            ("hybrid (unsupervised)", {"negatives": "hybrid", "predict_method": "readout"}),
            ("no FF learning (readout only)", {"negatives": "random", "learning_rate": 1e-9})]


def main(argv=None):
    args = parse_args(NAME, __doc__, argv)
    data = load_data(args)
    X, y = data.X_test, data.y_test
    X_hyb = hybrid_images(X, np.random.default_rng(123))
    neutral = np.full(len(X), NEUTRAL)
    rows = []
    for name, changes in VARIANTS:
        net, secs = train(base_config(args, **changes), data)
        G = net.goodness_per_label(X)
        ev = evaluate_scores(G, y)
        row = {"negatives": name, "changes": changes, "train_seconds": secs,
               "acc_goodness": ev["accuracy"] if changes["negatives"] != "hybrid" else None,
               "acc_readout": net.score(X, y, method="readout"),
               "separation_label": ev["separation"],
               "separation_hybrid": separation(net.goodness(X, neutral, seed=4), net.goodness(X_hyb, neutral, seed=4))}
        rows.append(row)
        print(f"{name:30s} goodness acc {row['acc_goodness']} readout {row['acc_readout']:.3f} separation label "
              f"{np.round(row['separation_label'], 2)} hybrid {np.round(row['separation_hybrid'], 2)} {secs:.0f} s",
              flush=True)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    md = table(rows, [("negatives", "negatives"), ("acc. goodness", lambda r: fmt(r["acc_goodness"])),
                      ("acc. readout", "acc_readout"),
                      ("separation true/wrong label", lambda r: " / ".join(f"{x:.2f}" for x in r["separation_label"])),
                      ("separation real/hybrid image", lambda r: " / ".join(f"{x:.2f}" for x in r["separation_hybrid"]))])
    print(md)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(11, 3.4))
    gs = fig.add_gridspec(2, 6)
    ax = fig.add_subplot(gs[:, :4])
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [np.nan if r["acc_goodness"] is None else r["acc_goodness"] for r in rows], 0.4, label="goodness")
    ax.bar(x + 0.2, [r["acc_readout"] for r in rows], 0.4, label="readout")
    ax.set(xticks=x, ylabel="test accuracy", title="negative data: test accuracy", ylim=(0, 1))
    ax.set_xticklabels([r["negatives"] for r in rows], fontsize=8)
    ax.legend(fontsize=7)
    for k in range(4):
        a = fig.add_subplot(gs[k // 2, 4 + k % 2])
        a.imshow(X_hyb[k].reshape(data.image_shape), cmap="gray_r")
        a.axis("off")
    fig.text(0.83, 0.97, "hybrid negatives", ha="center", fontsize=9)
    write_results(args, NAME, {"rows": rows, "table": md}, fig)
    return rows


if __name__ == "__main__":
    main()
