"""Goodness functions compared: the membrane-energy variants of the registry (spikeff.goodness), each
trained with the digits recipe, evaluated by goodness accuracy (every label tried, highest summed
goodness wins), readout accuracy, and the separation of the true label's goodness from a random
wrong label's (mean(G_pos - G_neg) / std(G_pos - G_neg) per layer, test set).

The spike count (spikes per neuron in the window) is compared as an *evaluation-only* goodness on
the same networks: spikes are not differentiable, so it has no exact local gradient to train with
(the engines' rule is the exact subthreshold gradient of a function of v), and it is not added to
the registry.

    python experiments/goodness_functions.py --size small   # CI (seconds)
    python experiments/goodness_functions.py --size full    # all digits, 500-500, 6 epochs
"""
from __future__ import annotations

import numpy as np

from _common import base_config, evaluate_scores, label_scores, load_data, parse_args, table, train, write_results

from spikeff.goodness import available_goodness, get_goodness

NAME = "goodness_functions"


def main(argv=None):
    args = parse_args(NAME, __doc__, argv)
    data = load_data(args)
    rows = []
    for name in available_goodness():
        net, secs = train(base_config(args, goodness=name), data)
        G, S = label_scores(net, data.X_test)
        ev_g, ev_s = evaluate_scores(G, data.y_test), evaluate_scores(S, data.y_test)
        row = {"goodness": name, "doc": get_goodness(name).doc, "train_seconds": secs,
               "acc_goodness": ev_g["accuracy"], "separation_goodness": ev_g["separation"],
               "acc_readout": net.score(data.X_test, data.y_test, method="readout"),
               "acc_spike_count": ev_s["accuracy"], "separation_spike_count": ev_s["separation"]}
        rows.append(row)
        print(f"{name:18s} goodness acc {row['acc_goodness']:.3f} readout {row['acc_readout']:.3f} "
              f"spike-count acc {row['acc_spike_count']:.3f} separation "
              f"{np.round(row['separation_goodness'], 2)} (spikes {np.round(row['separation_spike_count'], 2)}) "
              f"{secs:.0f} s", flush=True)
    md = table(rows, [("goodness (trained with)", "goodness"), ("acc. goodness", "acc_goodness"),
                      ("acc. readout", "acc_readout"), ("acc. spike count (eval only)", "acc_spike_count"),
                      ("separation G, layers", lambda r: " / ".join(f"{x:.2f}" for x in r["separation_goodness"])),
                      ("separation spikes, layers",
                       lambda r: " / ".join(f"{x:.2f}" for x in r["separation_spike_count"]))])
    print(md)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(rows))
    for i, (key, lab) in enumerate((("acc_goodness", "goodness"), ("acc_readout", "readout"),
                                    ("acc_spike_count", "spike count (eval only)"))):
        axes[0].bar(x + (i - 1) * 0.27, [r[key] for r in rows], 0.27, label=lab)
    axes[0].set(xticks=x, ylabel="test accuracy", title="accuracy by prediction measure")
    axes[0].set_xticklabels([r["goodness"] for r in rows], fontsize=8)
    axes[0].legend(fontsize=7)
    L = len(rows[0]["separation_goodness"])
    for l in range(L):
        axes[1].bar(x + (l - L / 2 + 0.5) * 0.2 - 0.2, [r["separation_goodness"][l] for r in rows], 0.2,
                    label=f"goodness, layer {l + 1}")
        axes[1].bar(x + (l - L / 2 + 0.5) * 0.2 + 0.2, [r["separation_spike_count"][l] for r in rows], 0.2,
                    label=f"spike count, layer {l + 1}", hatch="//", alpha=0.7)
    axes[1].set(xticks=x, ylabel="mean(pos - neg) / std", title="separation true vs wrong label")
    axes[1].set_xticklabels([r["goodness"] for r in rows], fontsize=8)
    axes[1].legend(fontsize=6)
    write_results(args, NAME, {"rows": rows, "table": md}, fig)
    return rows


if __name__ == "__main__":
    main()
