"""Fashion-MNIST with a convolutional spiking FF network (models/fashion_mnist_conv.toml).

Trains on a training subset, holds out a stratified validation split of the training set (the
recipe is judged on it), evaluates the test set once at the end, and writes
results/fashion_mnist_conv.json with validation and test accuracy, time, samples/s, provenance
and the command. Accuracy is measured with the configured ``predict_method`` only (the readout:
one pass per sample, two with ``readout_mirror``; "goodness" costs n_classes passes per sample).
With ``readout_final_epochs`` the linear readout is refit on the final features after the last
epoch (counted in the training time; no epoch is started that would leave no time within
``--minutes`` for the refit: its pass over the training set, estimated from the validation pass
(two passes with ``readout_mirror``: the training images and their mirror images), and its epochs,
estimated after the first epoch by timing one epoch of a throwaway readout on the validation
features (outside the training time, as the validation passes)).

    python experiments/fashion_mnist_conv.py --n-train 2000 --n-val 500 --n-test 500 --epochs 1   # smoke run
    python experiments/fashion_mnist_conv.py --n-train 20000 --minutes 60                            # long run

Needs the IDX files (Debian: apt-get install dataset-fashion-mnist, or --data-path).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spikeff import FFNetwork, load_config  # noqa: E402
from spikeff.data import load_dataset  # noqa: E402
from spikeff.readout import LinearReadout  # noqa: E402
from spikeff.runs import ThreadSettings, pinned_threads, provenance, write_json  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "models" / "fashion_mnist_conv.toml"))
    p.add_argument("--data-path", default=None)
    p.add_argument("--n-train", type=int, default=None, help="training subset (before the validation split)")
    p.add_argument("--n-val", type=int, default=5000, help="validation samples held out of the training set")
    p.add_argument("--n-test", type=int, default=None, help="test subset (default: all 10k)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--minutes", type=float, default=60.0, help="training budget: no epoch is started that would end after it (by the last epoch's time)")
    p.add_argument("--out", default=str(ROOT / "results" / "fashion_mnist_conv.json"))
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "fashion_mnist_conv"), help="checkpoint per epoch")
    p.add_argument("--no-test", action="store_true",
                   help="validation only (for choosing among recipes): the test set is not evaluated")
    p.add_argument("--figures-only", default=None, metavar="MODEL",
                   help="only draw the kernels and conv-layer rasters of a saved model into results/figures")
    args = p.parse_args(argv)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    if args.figures_only:
        return figures(FFNetwork.load(args.figures_only), load_dataset("fashion_mnist", args.data_path),
                       Path(args.out).parent / "figures")

    config = load_config(args.config)
    if args.epochs is not None:
        config = config.replace(epochs=args.epochs)
    data = load_dataset("fashion_mnist", args.data_path)
    train, (X_val, y_val) = data.split_validation(args.n_val / len(data.X_train), seed=config.seed)
    rng = np.random.default_rng(config.seed)
    tr = rng.permutation(len(train.X_train))[:args.n_train] if args.n_train else slice(None)
    X, y = train.X_train[tr], train.y_train[tr]
    te = rng.permutation(len(data.X_test))[:args.n_test] if args.n_test else slice(None)
    X_test, y_test = data.X_test[te], data.y_test[te]
    threads = ThreadSettings.default()
    method = config.predict_method
    result = {"command": command, "dataset": "fashion_mnist", "n_train": len(X), "n_val": len(X_val),
              "n_test": len(X_test), "predict_method": method, "budget_minutes": args.minutes,
              "provenance": provenance(config=config, threads=threads, recipe=args.config), "epochs": []}
    if args.epochs is not None:     # the config is the recipe with this change (tests/test_results.py checks it)
        result["recipe_overrides"] = {"epochs": args.epochs}
    out, run_dir = Path(args.out), Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"{len(X)} train / {len(X_val)} val / {len(X_test)} test; layers {config.hidden_sizes}", flush=True)
    net = FFNetwork(config).initialize(X.shape[1], data.n_classes)
    net.threads_ = threads
    t_train, refit_row_seconds = 0.0, None
    with pinned_threads(threads):
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            m = net.train_epoch(X, y, epoch, progress=False)
            dt = time.perf_counter() - t0
            t_train += dt
            net.epochs_done_ = epoch + 1
            t1 = time.perf_counter()
            val = net.score(X_val, y_val, method=method)
            m.update(val_acc=val, train_seconds=dt, samples_per_s=len(X) / dt, val_eval_seconds=time.perf_counter() - t1)
            result["epochs"].append(m)
            result.update(val_acc=val, train_seconds=t_train, samples_per_s=len(X) * (epoch + 1) / t_train)
            net.save(run_dir / "model.npz")
            write_json(out, result)
            print(f"epoch {epoch + 1}: FF loss {m['ff_loss']} val acc {val:.4f} | {dt:.0f} s, "
                  f"{len(X) / dt:.1f} samples/s", flush=True)
            # reserve the refit inside the budget: its neutral pass over the training set (with
            # readout_mirror over the mirror images too; the validation pass during the epochs sees
            # the images only: the online readout has no mirror) and its epochs over those rows
            passes = 2 if config.readout_mirror else 1
            refit = 0.0
            if config.readout_final_epochs:
                if refit_row_seconds is None:
                    refit_row_seconds = readout_epoch_seconds_per_row(net, X_val, y_val)
                    result["refit_epoch_seconds_per_row_estimate"] = refit_row_seconds
                refit = passes * len(X) * (m["val_eval_seconds"] / len(X_val)
                                           + config.readout_final_epochs * refit_row_seconds)
            if epoch + 1 < config.epochs and t_train + dt + refit > args.minutes * 60:
                print(f"stopping: another epoch ({dt / 60:.0f} min) would pass the budget of "
                      f"{args.minutes} min", flush=True)
                break
        refit = net.final_readout(X, y)      # the linear readout refit on the final (fixed) features
        if refit is not None:
            loss, dt = refit
            t_train += dt
            t1 = time.perf_counter()
            val = net.score(X_val, y_val, method=method)
            result.update(val_acc=val, train_seconds=t_train, readout_final={
                "epochs": config.readout_final_epochs, "schedule": config.readout_final_schedule,
                "loss": loss, "seconds": dt, "val_acc": val, "val_eval_seconds": time.perf_counter() - t1})
            net.save(run_dir / "model.npz")
            write_json(out, result)
            print(f"readout refit ({config.readout_final_epochs} epochs): val acc {val:.4f} | {dt:.0f} s",
                  flush=True)
        if args.no_test:
            result["test_acc"] = None                                       # not evaluated
        else:
            t1 = time.perf_counter()
            result["test_acc"] = net.score(X_test, y_test, method=method)  # once, at the end
            result["test_eval_seconds"] = time.perf_counter() - t1
            result["gap_to_92.4"] = 0.924 - result["test_acc"]
    write_json(out, result)
    acc = "test not evaluated" if args.no_test else f"test accuracy ({method}) {result['test_acc']:.4f}"
    print(f"{acc}, validation {result['val_acc']:.4f} after {len(result['epochs'])} epochs, "
          f"{t_train / 60:.1f} min of training", flush=True)


def readout_epoch_seconds_per_row(net, X_val, y_val) -> float:
    """Seconds per feature row of one epoch of the readout refit, timed on a throwaway readout
    fitting the validation features (in the refit's dtype; the network's readout is untouched),
    after one warm-up epoch."""
    c = net.config
    F = net.readout_features(X_val)
    if c.readout_mirror:
        F = F.astype(np.float32)       # as the mirror refit stores its features
    probe = LinearReadout(F.shape[1], net.n_classes_, c.readout_learning_rate)
    order = np.random.default_rng(0).permutation(len(F))
    probe.fit_epoch(F, np.asarray(y_val), order)            # warm-up (threads, buffers); labels 0..9
    t0 = time.perf_counter()
    probe.fit_epoch(F, np.asarray(y_val), order, label_smoothing=c.readout_final_label_smoothing)
    return (time.perf_counter() - t0) / len(F)


def figures(net, data, out_dir):
    """Kernels of the first conv layer and rasters of each layer (positive vs negative label) for
    the first test image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from spikeff.plot import plot_conv_kernels, plot_raster_phases
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "fashion_mnist_conv_kernels.png"]
    plt.close(plot_conv_kernels(net.weights_[0], net.geometries[0], path=written[0]))
    x, y = data.X_test[:1], data.y_test[:1]
    pos, neg = net.simulate(x, y, seed=1), net.simulate(x, (y + 1) % 10, seed=1)
    for l in range(len(net.weights_)):
        written.append(out_dir / f"fashion_mnist_conv_raster_layer{l + 1}.png")
        plt.close(plot_raster_phases(pos.record["spikes"][l][:, 0], neg.record["spikes"][l][:, 0],
                                     title=f"layer {l + 1} ({net.config.layers[l].kind}), label {y[0]} vs "
                                           f"{(y[0] + 1) % 10}", path=written[-1]))
    print("wrote " + ", ".join(map(str, written)))
    return written


if __name__ == "__main__":
    main()
