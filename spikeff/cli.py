"""The ``spikeff`` command line: ``train``, ``eval``, ``demo``, ``export``, ``import``, ``plot``, ``sweep``, ``bench``.

Run ``spikeff COMMAND --help`` for the options of each command.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import available_recipes, choices
from .data import DATASETS, EVENT_DATASETS, IMAGE_DATASETS
from .runs import (VAL_FRACTION, ThreadSettings, check_data_matches, load_run, resolve_config_path,
                   train_run, write_json)


class UsageError(ValueError):
    """Command-line options that cannot be used together."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def cmd_train(args):
    from .config import load_config
    threads = None
    if args.threads is not None:
        threads = ThreadSettings(blas=args.threads, engine=args.threads)
    if args.resume is not None:
        fixed = [f"--{k.replace('_', '-')}" for k in ("config", "dataset", "seed", "engine", "n_train", "n_test",
                                                     "val_fraction", "threads")
                 if getattr(args, k) is not None]
        if fixed:
            raise UsageError(f"--resume takes {', '.join(fixed)} from the run directory; leave "
                             f"{'it' if len(fixed) == 1 else 'them'} out (only --epochs, --data-path and "
                             "--no-progress may be given)")
        net, summary = load_run(Path(args.resume))
        config = net.config if args.epochs is None else net.config.replace(epochs=args.epochs)
        da = summary["data_args"]
        out = Path(args.resume)
        train_run(config, da["dataset"], out, progress=not args.no_progress, n_train=da.get("n_train"),
                  n_test=da.get("n_test"), data_path=args.data_path or da.get("data_path"),
                  resume=(net, summary))
    else:
        recipe = resolve_config_path(args.config or "digits")
        config = load_config(recipe)
        changes = {k: v for k, v in (("seed", args.seed), ("engine", args.engine), ("epochs", args.epochs))
                   if v is not None}
        config = config.replace(**changes) if changes else config
        out = Path(args.out)
        train_run(config, args.dataset or "digits", out, progress=not args.no_progress,
                  n_train=args.n_train, n_test=args.n_test, data_path=args.data_path,
                  val_fraction=VAL_FRACTION if args.val_fraction is None else args.val_fraction,
                  threads=threads, recipe=recipe, recipe_overrides=changes)
    print(f"spikeff: wrote {out}/metrics.json, model.npz, training_curves.png")
    return 0


def cmd_eval(args):
    from .data import load_dataset
    from .network import FFNetwork
    net = FFNetwork.load(args.model)
    data = load_dataset(args.dataset, args.data_path)
    check_data_matches(net, data, args.model)
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
        write_json(Path(args.out), res)
    return 0


def cmd_demo(args):
    from .config import load_config
    out = Path(args.out)
    recipe = resolve_config_path("digits")
    changes = {} if args.epochs is None else {"epochs": args.epochs}
    config = load_config(recipe).replace(**changes)
    net, summary = train_run(config, "digits", out, progress=not args.no_progress, recipe=recipe,
                             recipe_overrides=changes)
    from .plot import make_run_figures
    make_run_figures(out, n_samples=360)           # the whole digits test split
    print(f"spikeff demo: test accuracy {summary['test_acc']:.4f} ({config.predict_method}; validation "
          f"{summary['val_acc']:.4f}) after {len(net.history_)} epochs in {summary['elapsed_seconds']:.1f} s "
          f"(readout: test {summary['test_acc_readout']:.4f}, validation {summary['val_acc_readout']:.4f}); "
          f"metrics and model in {out}/, figures in {out}/figures/")
    return 0


def cmd_export(args):
    """Export a saved network to Lava (parameters .npz, float + Loihi 2 fixed point) or NIR (.nir)."""
    from .network import FFNetwork
    net = FFNetwork.load(args.model)
    out = Path(args.out)
    if args.to == "nir":
        from .export.nir import export_nir
        g = export_nir(net, out, dt=args.dt, flavour=args.nir_flavour, delay=args.nir_delay)
        print(f"spikeff export: wrote NIR graph of {len(net.weights_)} layers to {out} ({args.nir_flavour} "
              f"flavour, dt = {g.metadata['dt']:g} s, delay {args.nir_delay})")
        return 0
    from .export.lava import export_lava
    X_calib = None
    if args.calib_dataset:
        from .data import load_dataset
        X_calib = load_dataset(args.calib_dataset, args.data_path).X_train[:args.n_calib]
    report = export_lava(net, out, X_calib=X_calib, headroom=args.headroom)
    report_path = out.with_suffix(".quantization.json")
    write_json(report_path, report)
    for l, info in enumerate(report["layers"]):
        print(f"layer {l}: weight_exp {info['weight_exp']}, vth {info['vth']}, {info['scale_int_per_mV']:.0f} "
              f"units/mV, {info['weights_clipped']} weights clipped, du {info['du']}, dv {info['dv']}")
    print(f"spikeff export: wrote Lava parameters to {out} and the quantization report to {report_path}")
    return 0


def cmd_import(args):
    """A NIR graph (spikeff's, or Linear -> CubaLIF chains from snnTorch/Norse) as a spikeff model.npz."""
    from .export.nir import import_nir
    net = import_nir(args.graph, dt=args.dt, convention=args.convention, n_classes=args.n_classes,
                     label_repeat=args.label_repeat, n_steps=args.n_steps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out)
    n = net.config.neuron
    print(f"spikeff import: {len(net.weights_)} layers {list(net.config.hidden_sizes)}, {net.weights_[0].shape[1]} "
          f"inputs ({net.n_classes_} classes x {net.config.label_repeat} label channels), dt = {n.dt:g} s, "
          f"tau_syn = {n.tau_syn:.4g} s, tau_mem = {n.tau_mem:.4g} s; wrote {out}")
    return 0


def cmd_plot(args):
    """All figures of a saved run (model.npz + metrics.json) into RUN_DIR/figures/ (or --out)."""
    from .plot import make_run_figures
    make_run_figures(args.run_dir, out_dir=args.out, n_samples=args.n_samples, data_path=args.data_path)
    return 0


def cmd_sweep(args):
    from .sweep import STATUSES, run_sweep
    rows = run_sweep(args.sweep, args.out, scheduler=args.scheduler, n_workers=args.workers)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    print(f"spikeff sweep: {len(rows)} runs: {counts['ok']} trained, {counts['skipped']} completed before, "
          f"{counts['failed']} failed; table in sweep.csv, sweep.json, plot in sweep.png")
    return 1 if counts["failed"] else 0


def cmd_bench(args):
    from .bench import run_bench
    from .bench import DEFAULT_SECTIONS, SECTIONS
    sections = DEFAULT_SECTIONS if args.only is None else tuple(x for x in args.only.split(",") if x)
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        raise UsageError(f"--only: {bad} are not sections; choose from {list(SECTIONS)}")
    if args.against and not (Path(args.against) / "spikeff" / "__init__.py").is_file():
        raise UsageError(f"--against {args.against}: no spikeff checkout there (make one with "
                         f"'git worktree add --detach {args.against} COMMIT')")
    run_bench(quick=args.quick, out=args.out, shared_machine=not args.dedicated, against=args.against,
              tta=args.time_to_accuracy, sections=sections, recipe=args.recipe, dataset=args.dataset,
              target=args.target, command="spikeff " + " ".join(args.argv))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .export.nir import CONVENTIONS, DELAYS, FLAVOURS          # light: nir itself is imported on use
    p = argparse.ArgumentParser(prog="spikeff", description=(
        "Train spiking neural networks with Forward-Forward, evaluate them, and run the demo."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a network on a data set",
                       description="Train a network from a model config; writes metrics.json (one entry "
                                   "per epoch: accuracy, FF loss per layer, seconds, samples/s), "
                                   "model.npz (checkpoint after each epoch) and training_curves.png.")
    t.add_argument("--config", default=None, help=f"model config: a TOML path or a recipe name, one of "
                                                  f"{', '.join(available_recipes())} (default: digits)")
    t.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help=f"data set (default: digits, embedded); {', '.join(EVENT_DATASETS)}: event data from "
                        "--data-path (events_npz: train.npz and test.npz event files, the others read by tonic)")
    t.add_argument("--data-path", default=None,
                   help=f"directory with IDX files (fashion_mnist/mnist) or event data ({', '.join(EVENT_DATASETS)})")
    t.add_argument("--epochs", type=int, default=None, help="override the config's number of epochs")
    t.add_argument("--seed", type=int, default=None, help="override the config's seed")
    t.add_argument("--engine", default=None, choices=list(choices()["engine"]),
                   help="simulation engine: vectorized (fast) or brian2 (slow reference; Brian2 "
                        "target from $SPIKEFF_BRIAN2_TARGET=numpy|cython)")
    t.add_argument("--n-train", type=_positive_int, default=None, help="use a random subset of the training set")
    t.add_argument("--n-test", type=_positive_int, default=None, help="use a random subset of the test set")
    t.add_argument("--val-fraction", type=_fraction, default=None,
                   help=f"share of the training set held out (stratified, seeded by the config's seed) for "
                        f"per-epoch validation; the test set is evaluated once, at the end "
                        f"(default: {VAL_FRACTION}; 0: no validation split)")
    t.add_argument("--threads", type=_positive_int, default=None,
                   help="BLAS and engine threads, pinned while training and recorded in the run; float "
                        "results depend on the BLAS thread count (default: $SPIKEFF_NUM_THREADS or the "
                        "usable CPUs, at most 8)")
    t.add_argument("--out", default="runs/train", help="output directory (default: runs/train)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from RUN_DIR/model.npz (config, weights, optimizer "
                        "state) and metrics.json (data set); writes into RUN_DIR and gives the same weights "
                        "as an uninterrupted run. --epochs may raise the number of epochs")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a saved network",
                       description="Test accuracy of a saved model (goodness over all labels, and the "
                                   "one-pass readout when the model has one).")
    e.add_argument("model", help="model.npz written by train")
    e.add_argument("--dataset", default="digits", choices=list(DATASETS))
    e.add_argument("--data-path", default=None, help="directory with IDX files or event data")
    e.add_argument("--n-test", type=_positive_int, default=None, help="first N test samples only")
    e.add_argument("--out", default=None, help="write the results as JSON here")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="train on the embedded digits and write plots",
                       description="Train models/digits.toml on scikit-learn's digits, evaluate on the "
                                   "held-out split and write metrics, the model and all figures of "
                                   "'spikeff plot' (rasters, membrane traces, goodness, confusion matrix...).")
    d.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    d.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    x = sub.add_parser("export", help="export a saved network to Lava or NIR",
                       description="Export a saved network: --to lava writes float and Loihi 2 fixed-point "
                                   "parameters (.npz) and a quantization report (.quantization.json); "
                                   "--to nir writes a NIR graph (HDF5).")
    x.add_argument("model", help="model.npz written by train")
    x.add_argument("--to", required=True, choices=["lava", "nir"], help="target format")
    x.add_argument("--out", required=True, help="output file")
    x.add_argument("--nir-flavour", default="euler", choices=list(FLAVOURS),
                   help="NIR: euler (default) writes parameters that forward-Euler simulators (Norse, snnTorch) "
                        "step exactly as spikeff; exact writes exponential-integration time constants")
    x.add_argument("--dt", type=float, default=None,
                   help="NIR: time step in seconds the graph describes (default: 1e-4, snnTorch's fixed dt, for "
                        "euler; the model's dt for exact); spikeff's per-step dynamics are kept at any dt")
    x.add_argument("--nir-delay", default="none", choices=list(DELAYS),
                   help="NIR: node adds a Delay node of dt before each Linear (spikeff's one-step delay; Norse 1.1 "
                        "and snnTorch 1.0 cannot import it); none (default) leaves it out")
    x.add_argument("--calib-dataset", default=None, choices=list(IMAGE_DATASETS),
                   help="Lava: calibrate the u/v ranges on this data set's training samples "
                        "(default: a worst-case bound)")
    x.add_argument("--data-path", default=None, help="directory with IDX files")
    x.add_argument("--n-calib", type=int, default=32, help="Lava: calibration samples (default: 32)")
    x.add_argument("--headroom", type=float, default=2.0, help="Lava: state range headroom factor (default: 2)")
    x.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="read a NIR graph into a spikeff model",
                        description="Read a NIR graph (written by spikeff, or a Linear/Affine -> CubaLIF or LIF chain "
                                    "written by snnTorch's export_to_nir or Norse's to_nir) into a spikeff "
                                    "model.npz for eval and FF training. Node types spikeff cannot represent are "
                                    "refused with an error naming the node.")
    im.add_argument("graph", help="NIR file (.nir, HDF5)")
    im.add_argument("--out", required=True, help="model.npz to write")
    im.add_argument("--convention", default="auto", choices=list(CONVENTIONS),
                    help="how the graph's CubaLIFs were stepped: auto (spikeff's metadata, else euler: NIR's "
                         "simulators and snnTorch), euler, exact, norse (Norse 1.1's to_nir)")
    im.add_argument("--dt", type=float, default=None,
                    help="time step in seconds (default: the graph's metadata, else 1e-4; 1e-3 for norse)")
    im.add_argument("--n-classes", type=int, default=None,
                    help="label channels: the last n_classes * label_repeat inputs (default: spikeff's metadata, else 0)")
    im.add_argument("--label-repeat", type=_positive_int, default=None, help="copies of each label channel")
    im.add_argument("--n-steps", type=_positive_int, default=None, help="time steps per sample (default: metadata, else 20)")
    im.set_defaults(func=cmd_import)

    pl = sub.add_parser("plot", help="make the figures of a saved run",
                        description="Training curves, spike rasters and membrane traces (positive vs "
                                    "negative phase), goodness histograms, goodness per label, layer-1 "
                                    "receptive fields and confusion matrices of a run directory written by "
                                    "train/demo (model.npz + metrics.json, which names the data set).")
    pl.add_argument("run_dir", help="run directory with model.npz and metrics.json")
    pl.add_argument("--out", default=None, help="output directory (default: RUN_DIR/figures)")
    pl.add_argument("--n-samples", type=_positive_int, default=300, help="test samples used (default: 300)")
    pl.add_argument("--data-path", default=None, help="directory with IDX files")
    pl.set_defaults(func=cmd_plot)

    s = sub.add_parser("sweep", help="run a parameter sweep on dask.distributed",
                       description="Expand a sweep file (models/sweeps/*.toml: base config, data set, grid "
                                   "and/or variants, seeds) into runs, train each as a dask task and collect "
                                   "sweep.csv, sweep.json and sweep.png. Re-running skips completed runs.")
    s.add_argument("sweep", help="sweep file (TOML), e.g. models/sweeps/digits_sharpness.toml")
    s.add_argument("--scheduler", default=None,
                   help="address of an existing dask scheduler, e.g. tcp://127.0.0.1:8786 (default: a local cluster)")
    s.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default: 2; ignored with --scheduler)")
    s.add_argument("--out", default=None, help="sweep directory (default: runs/sweeps/NAME)")
    s.set_defaults(func=cmd_sweep)

    b = sub.add_parser("bench", help="measure training/inference throughput and memory",
                       description="Training and inference throughput of 784-500-500 and 784-2000-2000 "
                                   "networks, achieved GFLOP/s against an in-run numpy GEMM roofline, "
                                   "and peak memory of a training step for T = 25..200.")
    b.add_argument("--quick", action="store_true", help="small CI-sized smoke run")
    b.add_argument("--out", default="results/bench.json", help="JSON output (default: results/bench.json)")
    b.add_argument("--dedicated", action="store_true", help="record that the machine was not shared")
    b.add_argument("--only", default=None, metavar="SECTIONS",
                   help="comma-separated sections to run (gemm,recipe,store,switches,training,memory,kernels,brian2; "
                        "default: all but store and switches, which need the recipe's data set; '' for none)")
    b.add_argument("--against", default=None, metavar="DIR",
                   help="also time the recipe's training step with the spikeff checkout in DIR (e.g. "
                        "'git worktree add /tmp/perf-base ac39769'), alternating with this one")
    b.add_argument("--time-to-accuracy", action="store_true",
                   help="also measure the wall time of the recipe to reach --target validation accuracy")
    b.add_argument("--recipe", default="models/fashion_mnist.toml", help="recipe for --against/--time-to-accuracy")
    b.add_argument("--dataset", default="fashion_mnist", help="data set for --against/--time-to-accuracy")
    b.add_argument("--target", type=float, default=0.86, help="validation accuracy for --time-to-accuracy")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    from .config import ConfigError
    from .data import DataError
    from .export.nir import NIRError
    from .io import CheckpointError
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = [str(a) for a in argv]          # the command as typed, recorded in results
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, UsageError, OSError, FloatingPointError, ImportError,
            NIRError) as e:
        print(f"spikeff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikeff {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
