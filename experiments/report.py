"""Print the README's "Results" tables from results/*.json (the files the experiments write).

    python experiments/report.py            # markdown on stdout
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = [("goodness_functions", ["table"]), ("negative_strategies", ["table"]), ("sleep", ["table"]),
         ("time_and_encoding", ["table"]), ("activity_energy", ["table_neutral", "table_totals"]),
         ("nir_interop", ["table"])]


HEADLINE = [("recipe_digits", "digits (`models/digits.toml`)"),
            ("fashion_mnist", "Fashion-MNIST (`models/fashion_mnist.toml`)"),
            ("fashion_mnist_conv", "Fashion-MNIST, conv (`models/fashion_mnist_conv.toml`)")]


def _pm(s):
    if not s or not s.get("n"):
        return "-"
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} % (n = {s['n']})"


def headline() -> str:
    """Validation and test accuracy, mean ± std over seeds, from results/recipe_*.json-style files."""
    lines = ["| recipe | validation (goodness) | validation (readout) | test (goodness) | test (readout) | "
             "training time per seed | command |", "|---|---|---|---|---|---|---|"]
    for name, label in HEADLINE:
        path = ROOT / "results" / f"{name}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        if "summary" not in res:
            continue
        s = res["summary"]
        mins = [r["train_seconds"] / 60 for r in res["runs"]]
        lines.append(f"| {label} | {_pm(s['val_acc_goodness'])} | {_pm(s['val_acc_readout'])} | "
                     f"{_pm(s['test_acc_goodness'])} | {_pm(s['test_acc_readout'])} | "
                     f"{min(mins):.1f}-{max(mins):.1f} min | `{res['command']}` |")
    return "\n".join(lines)


def main():
    print("### Headline\n\n" + headline() + "\n")
    for name, keys in ORDER:
        path = ROOT / "results" / f"{name}.json"
        if not path.exists():
            print(f"<!-- {name}: results/{name}.json missing; run python experiments/{name}.py --size full -->\n")
            continue
        res = json.loads(path.read_text())
        figure = f"\n\n![{name}](results/{name}.png)" if (ROOT / "results" / f"{name}.png").exists() else ""
        print(f"### {name}\n\n`{res['command']}`{figure}\n")
        for k in keys:
            print(res[k] + "\n")


if __name__ == "__main__":
    main()
