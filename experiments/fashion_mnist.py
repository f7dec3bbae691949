"""Fashion-MNIST with spiking Forward-Forward: train models/fashion_mnist.toml, evaluate on the
full 10k test set, write results/fashion_mnist.json (with the command that made it) and a
training-curve figure.

    python experiments/fashion_mnist.py                 # full run (budget: --minutes, default 30)
    python experiments/fashion_mnist.py --size small    # CI-sized smoke run (subsets, 1 epoch)

Needs the IDX files (Debian: apt-get install dataset-fashion-mnist, or --data-path).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spikeff import FFNetwork, load_config  # noqa: E402
from spikeff.runs import environment as _environment, write_json as _write_json  # noqa: E402
from spikeff.data import load_dataset  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "models" / "fashion_mnist.toml"), help="model config")
    p.add_argument("--data-path", default=None, help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--size", choices=["full", "small"], default="full",
                   help="full: all 60k/10k samples; small: 2000/500 samples, 1 epoch (CI)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--minutes", type=float, default=30.0,
                   help="stop starting new epochs once this training budget (minutes) is spent")
    p.add_argument("--out", default=str(ROOT / "results"), help="directory for the JSON and figure")
    p.add_argument("--name", default="fashion_mnist", help="file stem of the outputs")
    p.add_argument("--n-train", type=int, default=None, help="random training subset (default: all)")
    p.add_argument("--n-test", type=int, default=None, help="random test subset (default: all 10k)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    config = load_config(args.config)
    data = load_dataset("fashion_mnist", args.data_path)
    if args.size == "small":
        data = data.subset(2000, 500, seed=0)
        config = config.replace(epochs=1)
    elif args.n_train or args.n_test:
        data = data.subset(args.n_train, args.n_test, seed=0)
    if args.epochs is not None:
        config = config.replace(epochs=args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    result = {"command": command, "dataset": "fashion_mnist", "size": args.size,
              "n_train": len(data.X_train), "n_test": len(data.X_test), "config": config.to_dict(),
              "environment": _environment(), "budget_minutes": args.minutes}
    t0 = time.perf_counter()

    def on_epoch(net, m):
        elapsed = time.perf_counter() - t0
        print(f"epoch {m['epoch']}: FF loss {np.round(m['ff_loss'], 3).tolist()}  test readout "
              f"{m.get('test_acc_readout') or float('nan'):.4f}"
              f"  {m['samples_per_s']:.0f} samples/s  elapsed {elapsed / 60:.1f} min", flush=True)
        result.update(epochs=net.history_, elapsed_seconds=elapsed)
        _write_json(out / f"{args.name}.json", result)
        if elapsed > args.minutes * 60 and net.epochs_done_ + 1 < config.epochs:
            raise _Budget()

    net = FFNetwork(config)
    try:
        # per epoch: the cheap one-pass readout; goodness over all 10 labels once, at the end
        net.fit(data.X_train, data.y_train, data.X_test, data.y_test, progress=not args.no_progress,
                callback=on_epoch, n_classes=10, val_methods=["readout"])
    except _Budget:
        result["stopped_by_budget"] = True
    result["train_seconds"] = time.perf_counter() - t0
    final = net.history_[-1]
    t1 = time.perf_counter()
    final["test_acc_goodness"] = net.score(data.X_test, data.y_test, "goodness")
    result["goodness_eval_seconds"] = time.perf_counter() - t1
    result.update(epochs=net.history_, elapsed_seconds=time.perf_counter() - t0,
                  epochs_done=len(net.history_),
                  test_acc_goodness=final.get("test_acc_goodness"),
                  test_acc_readout=final.get("test_acc_readout"),
                  best_method=max((k for k in ("test_acc_goodness", "test_acc_readout") if final.get(k) is not None),
                                  key=lambda k: final[k]))
    _write_json(out / f"{args.name}.json", result)
    from spikeff.plot import plot_training_curves
    plot_training_curves(net.history_, path=out / f"{args.name}_curves.png")
    print(json.dumps({k: result[k] for k in ("test_acc_goodness", "test_acc_readout", "elapsed_seconds",
                                              "epochs_done")}, indent=1))
    return 0


class _Budget(Exception):
    pass


if __name__ == "__main__":
    sys.exit(main())
