"""Fashion-MNIST with spiking Forward-Forward: a recipe (default ``models/fashion_mnist.toml``) over
one or more seeds, validation accuracy per epoch (10 % of the training set held out), the 10k test
set once at the end. Writes ``results/NAME.json`` (NAME: the config's file stem) and
``results/NAME_curves.png`` through :mod:`recipe_seeds`.

    python experiments/fashion_mnist.py --seeds 0 1 --jobs 2          # the README's figures (~40 min)
    python experiments/fashion_mnist.py --config models/fashion_mnist_conv.toml
    python experiments/fashion_mnist.py --size small                   # CI-sized smoke run

Per epoch only the one-pass readout is validated (cheap); goodness over all labels after the last
epoch. Needs the IDX files (Debian: apt-get install dataset-fashion-mnist, or --data-path).
All options of ``recipe_seeds.py`` apply (--epochs, --val-methods, --name, --out, --runs-dir).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe_seeds  # noqa: E402


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)

    def given(flag):
        return any(a == flag or a.startswith(flag + "=") for a in argv)
    config = "models/fashion_mnist.toml"
    if given("--config"):
        i = next(i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config="))
        config = argv[i].split("=", 1)[1] if "=" in argv[i] else argv[i + 1]
    defaults = ["--dataset", "fashion_mnist"] + ([] if given("--config") else ["--config", config])
    defaults += [] if given("--seeds") else ["--seeds", "0"]
    defaults += [] if given("--val-methods") else ["--val-methods", "readout"]
    if not given("--name"):
        small = any(a in ("small", "--size=small") for a in argv) and given("--size")
        defaults += ["--name", Path(config).stem + ("_small" if small else "")]
    sys.argv = [sys.argv[0]] + argv            # the recorded command is the one typed
    return recipe_seeds.main(defaults + argv)


if __name__ == "__main__":
    sys.exit(main())
