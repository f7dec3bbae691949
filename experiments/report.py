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


def main():
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
