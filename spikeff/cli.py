"""The ``spikeff`` command line: ``train``, ``eval``, ``demo``, ``bench``.

Run ``spikeff COMMAND --help`` for the options of each command.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def _resolve_config_path(name: str) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    for cand in (MODELS_DIR / name, MODELS_DIR / f"{name}.toml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"model config {name!r} not found (give a path, or a name in {MODELS_DIR})")


def _write_json(path: Path, obj):
    from .io import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _environment() -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine()}
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                       for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # pragma: no cover
        pass
    return env


def train_run(config, dataset, out_dir: Path, epochs=None, progress=True, n_train=None, n_test=None,
              data_path=None, command=None, plots=True, log=print):
    """Train on a data set, writing ``metrics.json``, ``model.npz`` (after every epoch) and plots
    into ``out_dir``. Returns (network, summary dict). Used by ``train`` and ``demo``."""
    from .data import load_dataset
    from .network import FFNetwork
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset, data_path)
    if n_train or n_test:
        data = data.subset(n_train, n_test, seed=config.seed)
    log(f"spikeff: {data.name}: {len(data.X_train)} train / {len(data.X_test)} test samples; "
        f"network {data.X_train.shape[1]}+{data.n_classes * config.label_repeat} -> "
        f"{' -> '.join(map(str, config.hidden_sizes))} LIF, T = {config.n_steps} steps, "
        f"engine {config.engine}, {config.dtype}")
    summary = {"command": command or " ".join(sys.argv), "dataset": data.name,
               "n_train": len(data.X_train), "n_test": len(data.X_test), "config": config.to_dict(),
               "environment": _environment(), "epochs": []}
    t_start = time.perf_counter()

    def on_epoch(net, m):
        summary["epochs"] = net.history_
        summary["elapsed_seconds"] = time.perf_counter() - t_start
        net.save(out_dir / "model.npz")
        _write_json(out_dir / "metrics.json", summary)
        log(f"epoch {m['epoch']:3d}: FF loss {' '.join(f'{x:.3f}' for x in m['ff_loss'])} | "
            f"test acc goodness {m.get('test_acc_goodness', float('nan')):.4f}"
            + (f", readout {m['test_acc_readout']:.4f}" if m.get("test_acc_readout") is not None else "")
            + f" | {m['samples_per_s']:.0f} samples/s")

    net = FFNetwork(config)
    net.fit(data.X_train, data.y_train, data.X_test, data.y_test, epochs=epochs, progress=progress,
            callback=on_epoch, n_classes=data.n_classes)
    final = net.history_[-1] if net.history_ else {}
    summary.update({"test_acc": final.get("test_acc"), "test_acc_goodness": final.get("test_acc_goodness"),
                    "test_acc_readout": final.get("test_acc_readout"),
                    "elapsed_seconds": time.perf_counter() - t_start, "epochs": net.history_})
    _write_json(out_dir / "metrics.json", summary)
    if plots and net.history_:
        from .plot import plot_training_curves
        import matplotlib.pyplot as plt
        plt.close(plot_training_curves(net.history_, path=out_dir / "training_curves.png"))
    return net, summary


def cmd_train(args):
    from .config import load_config
    config = load_config(_resolve_config_path(args.config))
    changes = {k: v for k, v in (("seed", args.seed), ("engine", args.engine), ("epochs", args.epochs))
               if v is not None}
    config = config.replace(**changes) if changes else config
    train_run(config, args.dataset, Path(args.out), progress=not args.no_progress,
              n_train=args.n_train, n_test=args.n_test, data_path=args.data_path)
    print(f"spikeff: wrote {args.out}/metrics.json, model.npz, training_curves.png")
    return 0


def cmd_eval(args):
    from .data import load_dataset
    from .network import FFNetwork
    net = FFNetwork.load(args.model)
    data = load_dataset(args.dataset, args.data_path)
    X, y = data.X_test, data.y_test
    if args.n_test:
        X, y = X[:args.n_test], y[:args.n_test]
    methods = ["goodness"] + (["readout"] if net.readout_ is not None else [])
    res = {"model": str(args.model), "dataset": data.name, "n_test": len(X)}
    for m in methods:
        t0 = time.perf_counter()
        res[f"test_acc_{m}"] = net.score(X, y, method=m)
        res[f"seconds_{m}"] = time.perf_counter() - t0
        print(f"{data.name} test accuracy ({m}): {res[f'test_acc_{m}']:.4f} on {len(X)} samples")
    if args.out:
        _write_json(Path(args.out), res)
    return 0


def cmd_demo(args):
    from .config import load_config
    out = Path(args.out)
    config = load_config(_resolve_config_path("digits"))
    if args.epochs is not None:
        config = config.replace(epochs=args.epochs)
    net, summary = train_run(config, "digits", out, progress=not args.no_progress)
    from .data import load_digits_dataset
    from .plot import plot_raster_phases
    import matplotlib.pyplot as plt
    d = load_digits_dataset()
    x, y = d.X_test[:1], d.y_test[:1]
    pos = net.simulate(x, labels=y, seed=1)
    neg = net.simulate(x, labels=(y + 1) % net.n_classes_, seed=1)
    for l in range(len(net.weights_)):
        plt.close(plot_raster_phases(pos.record["spikes"][l][:, 0], neg.record["spikes"][l][:, 0],
                                     dt=config.neuron.dt, title=f"layer {l + 1}, digit {y[0]}",
                                     path=out / f"raster_layer{l + 1}.png"))
    print(f"spikeff demo: test accuracy {summary['test_acc']:.4f} ({config.predict_method}) after "
          f"{len(net.history_)} epochs in {summary['elapsed_seconds']:.1f} s; figures and metrics in {out}/")
    return 0


def cmd_bench(args):
    from .bench import run_bench
    run_bench(quick=args.quick, out=args.out, shared_machine=not args.dedicated)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikeff", description=(
        "Train spiking neural networks with Forward-Forward, evaluate them, and run the demo."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a network on a data set",
                       description="Train a network from a model config; writes metrics.json (one entry "
                                   "per epoch: accuracy, FF loss per layer, seconds, samples/s), "
                                   "model.npz (checkpoint after each epoch) and training_curves.png.")
    t.add_argument("--config", default="digits", help="model config: a TOML path or a name in models/ (default: digits)")
    t.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist", "mnist"],
                   help="data set (default: digits, embedded)")
    t.add_argument("--data-path", default=None, help="directory with IDX files (fashion_mnist/mnist)")
    t.add_argument("--epochs", type=int, default=None, help="override the config's number of epochs")
    t.add_argument("--seed", type=int, default=None, help="override the config's seed")
    t.add_argument("--engine", default=None, choices=["vectorized", "brian2"], help="simulation engine")
    t.add_argument("--n-train", type=int, default=None, help="use a random subset of the training set")
    t.add_argument("--n-test", type=int, default=None, help="use a random subset of the test set")
    t.add_argument("--out", default="runs/train", help="output directory (default: runs/train)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a saved network",
                       description="Test accuracy of a saved model (goodness over all labels, and the "
                                   "one-pass readout when the model has one).")
    e.add_argument("model", help="model.npz written by train")
    e.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist", "mnist"])
    e.add_argument("--data-path", default=None, help="directory with IDX files")
    e.add_argument("--n-test", type=int, default=None, help="first N test samples only")
    e.add_argument("--out", default=None, help="write the results as JSON here")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="train on the embedded digits and write plots",
                       description="Train models/digits.toml on scikit-learn's digits, evaluate on the "
                                   "held-out split and write metrics, training curves and spike rasters.")
    d.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    d.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="measure training/inference throughput and memory",
                       description="Training and inference throughput of 784-500-500 and 784-2000-2000 "
                                   "networks, achieved GFLOP/s against an in-run numpy GEMM roofline, "
                                   "and peak memory of a training step for T = 25..200.")
    b.add_argument("--quick", action="store_true", help="small CI-sized smoke run")
    b.add_argument("--out", default="results/bench.json", help="JSON output (default: results/bench.json)")
    b.add_argument("--dedicated", action="store_true", help="record that the machine was not shared")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    from .config import ConfigError
    from .data import DataError
    from .io import CheckpointError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError, FloatingPointError, ImportError) as e:
        print(f"spikeff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikeff {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
