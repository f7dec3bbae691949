"""Float vs Loihi 2 fixed-point (Lava bit-accurate) accuracy of a digits network.

Trains ``models/digits.toml`` on scikit-learn digits (or loads ``--model``), quantizes it to Loihi 2
bit widths (:func:`spikeff.export.lava.quantize_network`, calibrated on training samples), and
measures on the digits test split:

- float test accuracy (spikeff's engine) by goodness and by readout;
- fixed-point test accuracy, decisions from the bit-exact numpy model of Lava's fixed-point
  Dense + LIF (:func:`spikeff.export.lava.simulate_fixed_numpy`) on the whole test split, and the
  agreement of float and fixed decisions;
- on a subset (``--n-lava`` samples x every label), Lava itself: fixed_pt spikes and potentials
  compared bit for bit with the numpy model, floating_pt spikes compared with spikeff's engine
  (float64 copy of the network), and Lava's own decisions.

    PYTHONPATH=. python experiments/lava_quantization.py --out results/lava_quantization.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spikeff import FFNetwork, load_config  # noqa: E402
from spikeff.data import load_digits_dataset  # noqa: E402
from spikeff.export import lava as lx  # noqa: E402
from spikeff.runs import provenance, write_json  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "models" / "digits.toml"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a trained model.npz (default: train models/digits.toml)")
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs when training")
    ap.add_argument("--n-calib", type=int, default=32, help="training samples for the u/v range calibration")
    ap.add_argument("--headroom", type=float, default=2.0)
    ap.add_argument("--n-lava", type=int, default=5, help="test samples also run on Lava itself")
    ap.add_argument("--out", default="results/lava_quantization.json")
    ap.add_argument("--save-model", default=None, help="save the trained model here")
    args = ap.parse_args(argv)

    d = load_digits_dataset()
    res = {"command": "python " + " ".join(["experiments/lava_quantization.py"] + (sys.argv[1:] if argv is None else list(argv))),
           "dataset": d.name, "n_test": len(d.X_test)}
    t0 = time.perf_counter()
    if args.model:
        net = FFNetwork.load(args.model)
        res["model"] = args.model
    else:
        overrides = {} if args.epochs is None else {"epochs": args.epochs}
        cfg = load_config(RECIPE).replace(**overrides)
        res["recipe_overrides"] = overrides
        net = FFNetwork(cfg).fit(d.X_train, d.y_train)
        res["model"] = f"trained here: models/digits.toml, {cfg.epochs} epochs, seed {cfg.seed}"
        if args.save_model:
            net.save(args.save_model)
    res["train_seconds"] = time.perf_counter() - t0
    res["config"] = net.config.to_dict()
    res["provenance"] = provenance(config=net.config, recipe=None if args.model else RECIPE)

    X, y = d.X_test, d.y_test
    methods = ["goodness"] + (["readout"] if net.readout_ is not None else [])
    q = lx.quantize_network(net, X_calib=d.X_train[:args.n_calib], headroom=args.headroom)
    res["quantization"] = q.report
    for m in methods:
        t1 = time.perf_counter()
        p_float = net.predict(X, method=m)
        t2 = time.perf_counter()
        p_fixed = lx.predict(net, X, method=m, mode="fixed_pt", quant=q, backend="numpy")
        t3 = time.perf_counter()
        res[m] = {"float_acc": float(np.mean(p_float == y)), "fixed_acc": float(np.mean(p_fixed == y)),
                  "agreement": float(np.mean(p_float == p_fixed)),
                  "fixed_minus_float_points": 100.0 * float(np.mean(p_fixed == y) - np.mean(p_float == y)),
                  "float_seconds": t2 - t1, "fixed_numpy_seconds": t3 - t2}
        print(f"{m}: float {res[m]['float_acc']:.4f}  fixed {res[m]['fixed_acc']:.4f}  "
              f"agreement {res[m]['agreement']:.4f}", flush=True)
    res["fixed_backend"] = ("bit-exact numpy reimplementation of Lava 0.10's fixed_pt Dense + LIF "
                            "(simulate_fixed_numpy) on the whole test split; validated against Lava on the "
                            "subset in 'lava_validation'")

    # spike statistics, float vs fixed, on the eval spikes of a few samples
    if args.n_lava > 0:
        n = min(args.n_lava, len(X))
        C = net.n_classes_
        from spikeff.network import PHASE_IDS
        src = net._source(np.repeat(X[:n], C, axis=0), np.tile(np.arange(C), n),
                          seed=[net.config.seed, PHASE_IDS["eval"], 0, 0], rows_per_noise=C)
        spikes = src.all_steps()
        val = {"n_samples": n, "runs": n, "copies_per_run": C, "layers": []}
        t1 = time.perf_counter()
        fx_np = lx.simulate_fixed_numpy(q, spikes)                          # integers
        fl_np = lx.simulate(net, spikes, "floating_pt", None, "numpy")     # float64 spikeff engine
        fl32 = net._run(src, record=True)                                   # spikeff's own engine
        lava_fx, lava_fl = [], []
        for k in range(n):
            sl = slice(k * C, (k + 1) * C)
            lava_fx.append(lx.simulate(net, spikes[:, sl], "fixed_pt", q, "lava"))
            lava_fl.append(lx.simulate(net, spikes[:, sl], "floating_pt", None, "lava"))
        val["lava_seconds"] = time.perf_counter() - t1
        for l in range(len(net.weights_)):
            lf_s = np.concatenate([r["spikes"][l] for r in lava_fx], axis=1)
            lf_v = np.concatenate([r["v_int"][l] for r in lava_fx], axis=1)
            ll_s = np.concatenate([r["spikes"][l] for r in lava_fl], axis=1)
            ll_v = np.concatenate([r["v"][l] for r in lava_fl], axis=1)
            val["layers"].append({
                "fixed_lava_vs_numpy_spikes_identical": bool(np.array_equal(lf_s, fx_np["spikes"][l])),
                "fixed_lava_vs_numpy_v_identical": bool(np.array_equal(lf_v, fx_np["v"][l])),
                "float_lava_vs_spikeff64_spikes_identical": bool(np.array_equal(ll_s, fl_np["spikes"][l])),
                "float_lava_vs_spikeff64_max_abs_dv_mV": float(np.abs(ll_v - fl_np["v"][l]).max()),
                "float_lava_vs_spikeff_float32_spike_mismatch_frac": float(np.mean(ll_s != fl32.record["spikes"][l])),
                "fixed_vs_float_spike_mismatch_frac": float(np.mean(lf_s != ll_s)),
                "spike_count_float": int(ll_s.sum()), "spike_count_fixed": int(lf_s.sum()),
                **fx_np["saturation"][l],
            })
        # Lava's own goodness decisions on the subset (fixed and float)
        from spikeff.engines.base import PhaseResult
        from spikeff.inference import goodness_decision
        goodness = net._model()[1]
        dec = {}
        for name, runs in (("fixed_pt", lava_fx), ("floating_pt", lava_fl)):
            G = np.stack([np.stack(PhaseResult.from_potentials(r["v"], goodness).goodness, axis=1)
                          for r in runs])                               # (n, C, L)
            dec[name] = goodness_decision(G, net._layer_mask())
        p_float = net.predict(X[:n], "goodness")
        p_fixed_np = lx.predict(net, X[:n], "goodness", "fixed_pt", q, "numpy")
        val["decisions"] = {"lava_fixed": dec["fixed_pt"].tolist(), "numpy_fixed": p_fixed_np.tolist(),
                            "lava_float": dec["floating_pt"].tolist(), "spikeff_float": p_float.tolist(),
                            "labels": y[:n].tolist()}
        res["lava_validation"] = val
        print(json.dumps(val["layers"], indent=1))
    res["elapsed_seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
