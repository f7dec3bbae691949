"""Activity and operation counts: spikes per inference and synaptic operations (SOPs: every
presynaptic spike x its fan-out, i.e. the accumulates an event-driven chip performs) per layer,
against the multiply-accumulates (MACs) of an equivalent ANN (the same dense layers, one
evaluation: fan-in x fan-out), for the trained digits network.

One *pass* is one T-step simulation of one sample (T = the recipe's n_steps). The one-pass
readout needs one pass with the neutral label (+ the readout's MACs, counted for both); goodness
prediction needs one pass per candidate label (x n_classes), as would an ANN trained with FF. The
neuron state updates per pass (T x neurons, each a few multiply-adds) are listed too: on a
time-stepped (non event-driven) simulator they, not the SOPs, dominate.

    python experiments/activity_energy.py --size small   # CI (seconds)
    python experiments/activity_energy.py --size full    # all digits, 500-500, 6 epochs
"""
from __future__ import annotations

import numpy as np

from _common import base_config, load_data, parse_args, table, train, write_results

from spikeff.encoding import NEUTRAL

NAME = "activity_energy"


def operation_counts(net, X, labels, seed: int = 0) -> list:
    """Per layer, per sample of one pass: presynaptic spikes, postsynaptic spikes, SOPs, ANN MACs,
    neuron updates."""
    res = net.simulate(X, labels=labels, seed=seed, record=True)
    B, T = len(X), net.config.n_steps
    pre = [res.record["input"]] + [res.record["spikes"][l] for l in range(len(net.weights_) - 1)]
    rows = []
    for l, W in enumerate(net.weights_):
        N, M = W.shape
        s_in = float(np.asarray(pre[l]).sum() / B)
        s_out = float(res.spike_counts[l].sum() / B)
        rows.append({"layer": l + 1, "fan_in": M, "neurons": N, "pre_spikes": s_in, "spikes": s_out,
                     "spikes_per_neuron_per_step": s_out / (N * T), "sops": s_in * N, "ann_macs": float(M * N),
                     "neuron_updates": float(T * N)})
    return rows


def main(argv=None):
    args = parse_args(NAME, __doc__, argv)
    data = load_data(args)
    net, secs = train(base_config(args), data)
    X, y = data.X_test[:100], data.y_test[:100]
    acc = {"goodness": net.score(data.X_test, data.y_test, "goodness"),
           "readout": net.score(data.X_test, data.y_test, "readout")}
    per_label = operation_counts(net, X, y)                       # a pass with the (true) label
    neutral = operation_counts(net, X, np.full(len(X), NEUTRAL))  # the readout's pass
    C = net.n_classes_
    readout_macs = float(sum(net.config.hidden_sizes) * C)
    totals = {
        "readout": {"passes": 1, "spikes": sum(r["spikes"] for r in neutral),
                    "sops": sum(r["sops"] for r in neutral) + readout_macs,
                    "ann_macs": sum(r["ann_macs"] for r in neutral) + readout_macs},
        "goodness": {"passes": C, "spikes": C * sum(r["spikes"] for r in per_label),
                     "sops": C * sum(r["sops"] for r in per_label),
                     "ann_macs": C * sum(r["ann_macs"] for r in per_label)}}
    for t in totals.values():
        t["sops_per_mac"] = t["sops"] / t["ann_macs"]
    print(f"accuracy goodness {acc['goodness']:.3f}, readout {acc['readout']:.3f} ({secs:.0f} s training)")
    cols = [("layer", "layer"), ("fan-in x neurons", lambda r: f"{r['fan_in']} x {r['neurons']}"),
            ("input spikes / pass", lambda r: f"{r['pre_spikes']:.0f}"),
            ("spikes / pass", lambda r: f"{r['spikes']:.0f}"),
            ("spikes / neuron / step", lambda r: f"{r['spikes_per_neuron_per_step']:.3f}"),
            ("SOPs / pass", lambda r: f"{r['sops']:.3g}"), ("ANN MACs", lambda r: f"{r['ann_macs']:.3g}"),
            ("SOPs / MACs", lambda r: f"{r['sops'] / r['ann_macs']:.2f}"),
            ("neuron updates / pass", lambda r: f"{r['neuron_updates']:.3g}")]
    md_neutral, md_label = table(neutral, cols), table(per_label, cols)
    md_tot = table([{"method": k, **v} for k, v in totals.items()],
                   [("prediction", "method"), ("passes", "passes"), ("spikes", lambda r: f"{r['spikes']:.0f}"),
                    ("SOPs", lambda r: f"{r['sops']:.3g}"), ("ANN MACs", lambda r: f"{r['ann_macs']:.3g}"),
                    ("SOPs / MACs", lambda r: f"{r['sops_per_mac']:.2f}")])
    print("neutral-label pass (readout):\n" + md_neutral + "\n\npass with the true label (goodness):\n"
          + md_label + "\n\nper prediction:\n" + md_tot)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    L = len(neutral)
    x = np.arange(L)
    for i, (rows, lab) in enumerate(((neutral, "neutral label"), (per_label, "true label"))):
        axes[0].bar(x + (i - 0.5) * 0.4, [r["spikes"] for r in rows], 0.4, label=lab)
    axes[0].set(xticks=x, xticklabels=[f"layer {r['layer']}" for r in neutral], ylabel="spikes per sample and pass",
                title=f"activity (T = {net.config.n_steps})")
    axes[0].legend(fontsize=7)
    w = 0.27
    axes[1].bar(x - w, [r["sops"] for r in neutral], w, label="SOPs (neutral)")
    axes[1].bar(x, [r["sops"] for r in per_label], w, label="SOPs (true label)")
    axes[1].bar(x + w, [r["ann_macs"] for r in neutral], w, label="ANN MACs")
    axes[1].set(xticks=x, xticklabels=[f"layer {r['layer']}" for r in neutral], yscale="log",
                ylabel="operations per sample and pass", title="synaptic operations vs ANN MACs")
    axes[1].legend(fontsize=7)
    write_results(args, NAME, {"accuracy": acc, "n_steps": net.config.n_steps, "train_seconds": secs,
                               "neutral_pass": neutral, "label_pass": per_label, "per_prediction": totals,
                               "table_neutral": md_neutral, "table_label": md_label, "table_totals": md_tot}, fig)
    return totals


if __name__ == "__main__":
    main()
