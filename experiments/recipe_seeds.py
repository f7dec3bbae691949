"""A shipped recipe over several seeds: validation accuracy per epoch, test accuracy once at the end,
mean and standard deviation over seeds. Writes ``results/NAME.json`` (with provenance: git commit,
recipe and config hashes, environment, BLAS kernel and threads) and ``results/NAME_curves.png``.

    python experiments/recipe_seeds.py --config models/digits.toml --dataset digits --seeds 0 1 2
    python experiments/recipe_seeds.py --config models/fashion_mnist.toml --dataset fashion_mnist \\
        --seeds 0 1 --jobs 2 --val-methods readout
    python experiments/recipe_seeds.py --size small ...     # CI-sized (subsets, 1 epoch)

Each seed is one ``spikeff.runs.train_run`` into ``runs/recipes/NAME/seed=S`` (resumable with
``spikeff train --resume``). ``--jobs N`` trains N seeds at once in separate processes, each with
``cpus // N`` pinned threads (recorded), so the weights equal a ``spikeff train --threads`` run.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from spikeff import load_config  # noqa: E402
from spikeff.runs import (ThreadSettings, provenance, resolve_config_path, train_run, usable_cpus,  # noqa: E402
                          write_json)

SMALL = {"digits": (400, 200), "fashion_mnist": (2000, 500), "mnist": (2000, 500)}
METRICS = ("val_acc_goodness", "val_acc_readout", "test_acc_goodness", "test_acc_readout")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="digits", help="model config: a path or a name in models/ (default: digits)")
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist", "mnist"])
    p.add_argument("--data-path", default=None, help="directory with IDX files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, in processes (default: 1)")
    p.add_argument("--size", choices=["full", "small"], default="full",
                   help="full: the whole data set and the recipe's epochs; small: subsets, 1 epoch (CI)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--val-methods", nargs="+", default=None, choices=["goodness", "readout"],
                   help="per-epoch validation methods (default: all; both are evaluated after the last epoch)")
    p.add_argument("--name", default=None, help="file stem of the outputs (default: recipe_DATASET)")
    p.add_argument("--out", default=str(ROOT / "results"), help="directory for NAME.json and NAME_curves.png")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "recipes"), help="where the run directories go")
    args = p.parse_args(argv)
    args.name = args.name or f"recipe_{args.dataset}" + ("_small" if args.size == "small" else "")
    return args


def _one(job):
    config, args, seed, threads = job
    n_train, n_test = SMALL[args.dataset] if args.size == "small" else (None, None)
    run_dir = Path(args.runs_dir) / args.name / f"seed={seed}"
    t0 = time.perf_counter()
    net, summary = train_run(config.replace(seed=seed), args.dataset, run_dir, progress=False, recipe=args.recipe,
                             recipe_overrides={**args.overrides, "seed": seed},
                             n_train=n_train, n_test=n_test, data_path=args.data_path, plots=False,
                             threads=threads, val_methods=args.val_methods, command=args.command,
                             log=lambda msg: print(f"[seed {seed}] {msg}", flush=True))
    return {"seed": seed, "run_dir": str(run_dir), **{k: summary.get(k) for k in METRICS},
            "n_train": summary["n_train"], "n_val": summary["n_val"], "n_test": summary["n_test"],
            "train_seconds": sum(m["train_seconds"] for m in summary["epochs"]),
            "seconds": time.perf_counter() - t0, "threads": summary["threads"],
            "samples_per_s": [m["samples_per_s"] for m in summary["epochs"]],
            "epochs": [{k: m.get(k) for k in ("epoch", "ff_loss", "val_acc_goodness", "val_acc_readout",
                                               "train_seconds", "samples_per_s")} for m in summary["epochs"]]}


def spread(values) -> dict:
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v)),
            "min": float(v.min()), "max": float(v.max())}


def main(argv=None):
    args = parse_args(argv)
    args.command = "python " + " ".join([f"experiments/{Path(__file__).name}"] + (sys.argv[1:] if argv is None else argv))
    recipe = resolve_config_path(args.config)
    overrides = {"epochs": 1} if args.size == "small" else {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = load_config(recipe).replace(**overrides)
    jobs = max(1, min(args.jobs, len(args.seeds)))
    n = max(1, usable_cpus() // jobs)
    threads = ThreadSettings(blas=n, engine=n)
    args.recipe, args.overrides = recipe, overrides
    prov = provenance(config=config, threads=threads, recipe=recipe)      # at the start: the code that runs
    work = [(config, args, s, threads) for s in args.seeds]
    if jobs == 1:
        runs = [_one(w) for w in work]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            runs = list(pool.map(_one, work))
    result = {"experiment": "recipe_seeds", "command": args.command, "dataset": args.dataset, "size": args.size,
              "recipe_overrides": overrides,
              "seeds": args.seeds, "runs": runs, "summary": {k: spread(r[k] for r in runs) for k in METRICS},
              "provenance": prov}
    out = Path(args.out)
    write_json(out / f"{args.name}.json", result)
    _plot(runs, out / f"{args.name}_curves.png", args.name)
    for k in METRICS:
        s = result["summary"][k]
        if s["n"]:
            print(f"{k}: {100 * s['mean']:.2f} % +- {100 * s['std']:.2f} (n = {s['n']})")
    print(f"recipe_seeds: wrote {out / (args.name + '.json')}")
    return 0


def _plot(runs, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in runs:
        for key, ls in (("val_acc_goodness", "-"), ("val_acc_readout", "--")):
            vals = [m.get(key) for m in r["epochs"]]
            if any(v is not None for v in vals):
                ax.plot([m["epoch"] for m in r["epochs"]], [np.nan if v is None else v for v in vals], ls,
                        marker="o", label=f"seed {r['seed']} {key.split('_')[-1]}")
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=title)
    if ax.get_lines():
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
