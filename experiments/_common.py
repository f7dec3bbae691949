"""Shared set-up of the neuroscience experiments (goodness_functions, negative_strategies, sleep,
time_and_encoding, activity_energy): sizes, data, training, evaluation and output files.

Every experiment starts from ``models/digits.toml`` (the tuned recipe, with the ``threshold`` loss:
see :func:`base_config`) on the embedded digits:

* ``--size small`` (CI): 300 training / 200 test samples, layers of 100, 2 epochs;
* ``--size full``: all 1437 / 360 samples, the recipe's 500 -> 500 layers, fewer epochs than the
  recipe's 12 (each experiment says how many) so that one experiment takes a few minutes.
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
from spikeff.negatives import random_wrong_labels  # noqa: E402
from spikeff.runs import config_hash, provenance, write_json  # noqa: E402

RECIPE = ROOT / "models" / "digits.toml"

SIZES = {"small": {"n_train": 300, "n_test": 200, "hidden_sizes": (100, 100), "epochs": 2},
         "full": {"n_train": None, "n_test": None, "hidden_sizes": None, "epochs": 6}}


def parse_args(name: str, doc: str, argv=None, epochs_full: int | None = None):
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["small", "full"], default="small",
                   help="small: CI-sized (seconds); full: the numbers in the README (minutes)")
    p.add_argument("--out", default=str(ROOT / "results"), help="directory for NAME.json and NAME.png")
    p.add_argument("--epochs", type=int, default=None, help="override the size's number of epochs")
    args = p.parse_args(argv)
    size = dict(SIZES[args.size])
    if args.size == "full" and epochs_full is not None:
        size["epochs"] = epochs_full
    if args.epochs is not None:
        size["epochs"] = args.epochs
    args.sizes = size
    args.provenance = provenance(recipe=RECIPE)          # at the start: the code that runs
    args.command = f"python experiments/{name}.py --size {args.size}" + (
        f" --epochs {args.epochs}" if args.epochs is not None else "")
    return args


def base_config(args, **changes):
    """The digits recipe at the experiment's size, with ``changes``. The loss is pinned to Hinton's
    ``threshold`` loss (the recipe's loss when these experiments were run; the recipe has since
    moved to SymBa): the goodness threshold and the single-phase "sleep" updates need it."""
    c = load_config(RECIPE).replace(loss="threshold")
    size = {"epochs": args.sizes["epochs"]}
    if args.sizes["hidden_sizes"] is not None:
        size["hidden_sizes"] = args.sizes["hidden_sizes"]
    config = c.replace(**{**size, **changes})
    # recorded in the results file: tests/test_results.py re-derives each config from the recipe and
    # these changes and fails when the recipe or this function no longer gives the same config
    if not hasattr(args, "configs"):
        args.configs = []
    args.configs.append({"changes": dict(changes), "config_hash": config_hash(config)})
    return config


def load_data(args):
    data = load_dataset("digits")
    if args.sizes["n_train"] or args.sizes["n_test"]:
        data = data.subset(args.sizes["n_train"], args.sizes["n_test"], seed=0)
    return data


def train(config, data, **fit_kw):
    """A network trained on ``data`` (no per-epoch validation) and the training seconds."""
    t0 = time.perf_counter()
    net = FFNetwork(config).fit(data.X_train, data.y_train, n_classes=data.n_classes, **fit_kw)
    return net, time.perf_counter() - t0


def label_scores(net, X, seed: int = 0):
    """Per candidate label: goodness and spikes per neuron of every layer, both (B, C, L).
    Every label sees the same image spikes (same seed), as in :meth:`FFNetwork.goodness_per_label`."""
    G, S = [], []
    for k in range(net.n_classes_):
        res = net.simulate(X, labels=np.full(len(X), k), seed=seed, record=False)
        G.append(np.stack(res.goodness, axis=1))
        S.append(np.stack([c.sum(axis=1) / c.shape[1] for c in res.spike_counts], axis=1))
    return np.stack(G, axis=1), np.stack(S, axis=1)


def separation(pos: np.ndarray, neg: np.ndarray) -> list:
    """Per layer: mean(pos - neg) / std(pos - neg), paired samples, ``pos``/``neg`` (B, L)."""
    d = np.asarray(pos, dtype=np.float64) - np.asarray(neg, dtype=np.float64)
    return (d.mean(axis=0) / np.maximum(d.std(axis=0), 1e-12)).tolist()


def evaluate_scores(scores: np.ndarray, y: np.ndarray, seed: int = 1) -> dict:
    """Accuracy of ``argmax over labels of the score summed over layers``, and the per-layer
    separation of the true label's score from a random wrong label's."""
    rng = np.random.default_rng(seed)
    y_neg = random_wrong_labels(y, scores.shape[1], rng)
    idx = np.arange(len(y))
    return {"accuracy": float(np.mean(np.argmax(scores.sum(axis=2), axis=1) == y)),
            "separation": separation(scores[idx, y], scores[idx, y_neg])}


def write_results(args, name: str, results: dict, fig) -> tuple:
    """``OUT/name.json`` (with the command and the size) and ``OUT/name.png``; returns both paths."""
    import matplotlib.pyplot as plt
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"experiment": name, "command": args.command, "size": args.size, "epochs_arg": args.epochs,
               "sizes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.sizes.items()},
               **results, "configs": getattr(args, "configs", []),
               "provenance": getattr(args, "provenance", None) or provenance(recipe=RECIPE)}
    jp, pp = out / f"{name}.json", out / f"{name}.png"
    write_json(jp, results)
    fig.tight_layout()
    fig.savefig(pp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    print(f"{name}: wrote {jp} and {pp}")
    return jp, pp


def table(rows: list, cols: list) -> str:
    """A markdown table of ``rows`` (dicts) with ``cols`` [(header, key or function)]."""
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for _, k in cols:
            v = k(r) if callable(k) else r.get(k)
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
