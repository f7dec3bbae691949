"""A biologically plausible regime next to the shipped recipe, on the embedded digits.

The shipped recipe (``models/digits.toml``) steps at dt = 1 ms with no refractory period and
rate-codes pixels at up to 1000 Hz: input and first hidden layer fire on a large share of the
steps. ``models/digits_bio.toml`` keeps the method and changes only the regime: dt = 0.1 ms, a
2 ms refractory period (``neuron.refractory``, held at reset for 20 steps by the model of
:mod:`spikeff.neuron`), input and label channels at <= 100 Hz (``max_rate``), a longer window in
more steps, and weights scaled down so that hidden neurons fire at cortical rates.

Both regimes train the same layer sizes for the same number of epochs (those of the bio recipe;
the shipped recipe's own 500-500 for 12 epochs would take 10x as long at dt = 0.1 ms), on all
digits with 20 % of the training split held out for validation. For each regime: test accuracy (goodness over all labels, one-pass readout; the test set is
evaluated once, after training; the recipe was tuned on a validation split only), firing rates
in Hz per layer on the test set (mean over neurons and samples, the most active neuron's mean,
the single highest (neuron, sample) rate), input rates, and synaptic operations per inference
(SOPs: every presynaptic spike times its fan-out, summed over layers; one neutral-label pass for
the readout, one pass per candidate label for goodness).

    python experiments/biological_regime.py --size small   # CI-sized (seconds)
    python experiments/biological_regime.py --size full    # results/biological_regime.{json,png}
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from spikeff import FFNetwork, load_config  # noqa: E402
from spikeff.data import load_dataset  # noqa: E402
from spikeff.encoding import NEUTRAL  # noqa: E402
from spikeff.runs import ThreadSettings, config_hash, pinned_threads, provenance, write_json  # noqa: E402

NAME = "biological_regime"
RECIPES = {"shipped": ROOT / "models" / "digits.toml", "biological": ROOT / "models" / "digits_bio.toml"}
SIZES = {"small": {"n_train": 150, "n_test": 60, "n_eval": 20, "hidden_sizes": (20, 20), "epochs": 1,
                   "bio_steps": 100},
         "full": {"n_train": None, "n_test": None, "n_eval": 100, "hidden_sizes": None, "epochs": None,
                  "bio_steps": None}}


def activity(net, X, labels, seed: int = 0) -> dict:
    """Rates (Hz) and SOPs of one pass of every sample of X with ``labels``."""
    c = net.config
    res = net.simulate(X, labels=labels, seed=seed, record=True)
    window = c.n_steps * c.neuron.dt
    inp = np.asarray(res.record["input"], dtype=np.float64)          # (T, B, M + label channels)
    n_img = net.n_features_in_
    pre = [inp] + [np.asarray(s, dtype=np.float64) for s in res.record["spikes"][:-1]]
    layers = []
    for l, W in enumerate(net.weights_):
        rate = res.spike_counts[l] / window                             # (B, N) Hz
        layers.append({"layer": l + 1, "neurons": int(W.shape[0]), "mean_hz": float(rate.mean()),
                       "max_neuron_mean_hz": float(rate.mean(axis=0).max()), "peak_hz": float(rate.max()),
                       "silent_fraction": float((rate.mean(axis=0) == 0).mean()),
                       "sops": float(pre[l].sum() / len(X) * W.shape[0])})
    return {"input_image_mean_hz": float(inp[:, :, :n_img].mean() / c.neuron.dt),
            "input_image_max_hz": float(inp[:, :, :n_img].mean(axis=(0, 1)).max() / c.neuron.dt),
            "input_label_mean_hz": float(inp[:, :, n_img:].mean() / c.neuron.dt),
            "layers": layers, "sops": float(sum(r["sops"] for r in layers)),
            "raster_layer1": res.record["spikes"][0][:, 0, :100].astype(np.uint8)}


def run_regime(name, config, data, val, threads):
    t0 = time.perf_counter()
    net = FFNetwork(config).fit(data.X_train, data.y_train, *val, n_classes=data.n_classes, threads=threads,
                                val_methods=["readout"])        # one pass per sample: goodness would cost 10
    train_s = time.perf_counter() - t0
    with pinned_threads(threads):
        t0 = time.perf_counter()
        acc = {m: net.score(data.X_test, data.y_test, m) for m in ("goodness", "readout")}
        eval_s = time.perf_counter() - t0
        X, y = data.X_test[:SIZE["n_eval"]], data.y_test[:SIZE["n_eval"]]
        neutral = activity(net, X, np.full(len(X), NEUTRAL))
        true = activity(net, X, y)
        goodness_sops = sum(activity(net, X, np.full(len(X), k))["sops"] for k in range(net.n_classes_))
    raster = neutral.pop("raster_layer1")
    true.pop("raster_layer1")
    c = config
    out = {"regime": name, "dt_ms": c.neuron.dt * 1e3, "refractory_ms": c.neuron.refractory * 1e3,
           "n_steps": c.n_steps, "window_ms": c.n_steps * c.neuron.dt * 1e3, "max_rate_hz": c.max_rate,
           "hidden_sizes": list(c.hidden_sizes), "epochs": c.epochs,
           "test_acc_goodness": acc["goodness"], "test_acc_readout": acc["readout"],
           "val_acc_goodness": net.history_[-1].get("val_acc_goodness"),
           "val_acc_readout": net.history_[-1].get("val_acc_readout"),
           "train_seconds": train_s, "test_eval_seconds": eval_s,
           "neutral_pass": neutral, "true_label_pass": true,
           "sops_per_inference": {"readout": neutral["sops"], "goodness": goodness_sops},
           "config": c.to_dict()}
    print(f"{name}: test acc goodness {acc['goodness']:.4f}, readout {acc['readout']:.4f}; hidden mean rates "
          + ", ".join(f"{r['mean_hz']:.1f}" for r in neutral["layers"]) + " Hz, max neuron "
          + ", ".join(f"{r['max_neuron_mean_hz']:.1f}" for r in neutral["layers"]) + " Hz; input "
          f"{neutral['input_image_mean_hz']:.1f} Hz; SOPs/inference readout {neutral['sops']:.3g}, "
          f"goodness {goodness_sops:.3g}; {train_s:.0f} s training", flush=True)
    return out, raster


def figure(rows, rasters, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    names = [r["regime"] for r in rows]
    x = np.arange(len(rows))
    ax = axes[0, 0]
    ax.bar(x - 0.2, [r["test_acc_goodness"] for r in rows], 0.4, label="goodness (all labels)")
    ax.bar(x + 0.2, [r["test_acc_readout"] for r in rows], 0.4, label="readout (one pass)")
    ax.set(xticks=x, xticklabels=[f"{r['regime']}\ndt {r['dt_ms']:g} ms, T {r['n_steps']}" for r in rows],
           ylim=(0, 1), ylabel="test accuracy", title="accuracy")
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[0, 1]
    L = len(rows[0]["neutral_pass"]["layers"])
    w = 0.8 / len(rows)
    for i, r in enumerate(rows):
        lay = r["neutral_pass"]["layers"]
        xs = np.arange(L + 1) + (i - (len(rows) - 1) / 2) * w
        mean = [r["neutral_pass"]["input_image_mean_hz"]] + [q["mean_hz"] for q in lay]
        mx = [r["neutral_pass"]["input_image_max_hz"]] + [q["max_neuron_mean_hz"] for q in lay]
        bars = ax.bar(xs, mean, w, label=f"{r['regime']}: mean")
        ax.scatter(xs, mx, marker="v", color=bars.patches[0].get_facecolor(), zorder=3,
                   label=f"{r['regime']}: most active")
    ax.axhspan(0.1, 30, color="green", alpha=0.08, label="cortical range (0.1-30 Hz)")
    ax.set(xticks=np.arange(L + 1), xticklabels=["input"] + [f"layer {l + 1}" for l in range(L)],
           yscale="log", ylabel="rate (Hz)", title="firing rates (neutral-label pass)")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    ax.bar(x - 0.2, [r["sops_per_inference"]["readout"] for r in rows], 0.4, label="readout: 1 pass")
    ax.bar(x + 0.2, [r["sops_per_inference"]["goodness"] for r in rows], 0.4, label="goodness: 1 pass per label")
    ax.set(xticks=x, xticklabels=names, yscale="log", ylabel="synaptic operations per inference", title="SOPs")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    off = 0
    for r, ras in zip(rows, rasters):
        t, n = np.nonzero(ras)
        ax.scatter(t * r["dt_ms"], n + off, s=2, marker="|", label=f"{r['regime']} ({int(ras.sum())} spikes)")
        off += ras.shape[1] + 10
    ax.set(xlabel="time (ms)", ylabel="layer-1 neuron (100 shown per regime)",
           title="layer 1, one test sample, neutral label")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    global SIZE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args(argv)
    SIZE = SIZES[args.size]
    command = f"python experiments/{NAME}.py --size {args.size}"
    data = load_dataset("digits")
    if SIZE["n_train"]:
        data = data.subset(SIZE["n_train"], SIZE["n_test"], seed=0)
    data, val = data.split_validation(0.2, seed=0)
    threads = ThreadSettings.default()
    rows, rasters, configs = [], [], {}
    bio = load_config(RECIPES["biological"])
    for name, recipe in RECIPES.items():
        c = load_config(recipe)
        # same layers and epochs in both regimes: the bio recipe's at full size, tiny ones for CI
        changes = {k: SIZE[k] if SIZE[k] is not None else getattr(bio, k) for k in ("hidden_sizes", "epochs")}
        if name == "biological" and SIZE["bio_steps"]:
            changes["n_steps"] = SIZE["bio_steps"]              # CI: a 10 ms window
        c = c.replace(**changes)
        configs[name] = c
        row, ras = run_regime(name, c, data, val, threads)
        row["recipe"] = str(recipe.relative_to(ROOT))
        rows.append(row)
        rasters.append(ras)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jp, pp = out / f"{NAME}.json", out / f"{NAME}.png"
    figure(rows, rasters, pp)
    result = {"experiment": NAME, "command": command, "size": args.size,
              "n_train": len(data.X_train), "n_val": len(val[0]), "n_test": len(data.X_test),
              "n_activity_samples": min(SIZE["n_eval"], len(data.X_test)),
              "regimes": rows,
              "provenance": provenance(threads=threads, recipes={k: str(v.relative_to(ROOT)) for k, v in RECIPES.items()},
                                       config_hashes={k: config_hash(c) for k, c in configs.items()})}
    write_json(jp, result)
    print(f"{NAME}: wrote {jp} and {pp}")
    return result


SIZE = SIZES["small"]

if __name__ == "__main__":
    main()
