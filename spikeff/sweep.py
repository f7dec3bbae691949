"""Parameter sweeps, one dask task per run, on a local or an existing ``dask.distributed`` cluster.

A sweep file (TOML, see ``models/sweeps/``) names a base model config, a data set, the parameters
to vary and the seeds::

    config = "digits"              # a path (relative to the sweep file, or the working directory)
                                   # or a name in models/
    dataset = "digits"
    n_train = 300                  # optional random subsets (per seed), and an epochs override
    n_test = 200
    epochs = 2
    seeds = [0, 1, 2]

    [overrides]                    # optional: changes applied to every run (not part of run names)
    hidden_sizes = [100, 100]

    [grid]                         # cartesian product of these values
    loss_sharpness = [1.0, 3.0, 10.0]
    "neuron.tau_mem" = ["10 ms", "20 ms"]

    [[variants]]                   # and/or explicit variants (crossed with the grid when both exist)
    goodness = "energy"

Keys are config fields (``loss_sharpness``), neuron fields (``neuron.tau_mem``) or fields qualified
by their TOML section (``training.learning_rate``); values are written as in ``models/*.toml``.

Each run trains with :func:`spikeff.runs.train_run` into ``OUT/runs/NAME/`` (NAME derived from its
parameters and seed) and marks its ``metrics.json`` ``"completed": true`` at the end; a later
invocation skips completed runs whose config is unchanged. A run that fails is recorded with its
error and does not stop the others. The results are collected in ``OUT/sweep.csv``,
``OUT/sweep.json`` and ``OUT/sweep.png``.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import re
import threading
import time
import traceback
import uuid
from pathlib import Path

from .config import SECTIONS, ConfigError, FFConfig, NeuronConfig, read_toml
from .runs import VAL_FRACTION, resolve_config_path, write_json

TOP_KEYS = ("name", "config", "dataset", "data_path", "n_train", "n_test", "epochs", "seeds",
            "overrides", "grid", "variants", "val_fraction", "threads")
STATUSES = ("ok", "skipped", "failed")
RESULT_COLUMNS = ("status", "val_acc", "val_acc_goodness", "val_acc_readout", "test_acc", "test_acc_goodness",
                  "test_acc_readout", "seconds", "error", "run_dir")
_PLOT_LOCK = threading.Lock()  # pyplot is not thread-safe; workers may be threads of one process


class SweepError(ConfigError):
    """A sweep file that cannot be expanded into runs (unknown keys, empty value lists, ...)."""


def _import_distributed():
    try:
        import distributed
    except ImportError as e:
        raise ImportError("spikeff sweep needs dask.distributed; install it with "
                          "`pip install 'spikeff[sweep]'` (or `pip install dask distributed`)") from e
    return distributed


# -- reading and expanding a sweep file -------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict:
    """{"neuron": {"tau_mem": x}} -> {"neuron.tau_mem": x} (TOML reads unquoted dotted keys as tables)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


_FIELDS = tuple(f.name for f in dataclasses.fields(FFConfig) if f.name != "neuron")
_NEURON_FIELDS = tuple(f.name for f in dataclasses.fields(NeuronConfig))


def _canonical_key(key: str, where: str) -> str:
    """``loss_sharpness`` / ``goodness.loss_sharpness`` -> ``loss_sharpness``; ``neuron.tau_mem`` stays."""
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "neuron" and parts[1] in _NEURON_FIELDS:
        return key
    if len(parts) == 2 and parts[0] in SECTIONS and parts[1] in _FIELDS:
        return parts[1]
    if len(parts) == 1 and parts[0] in _FIELDS:
        return key
    raise SweepError(f"{where}: unknown config key {key!r}; use a field of FFConfig ({', '.join(_FIELDS)}) "
                     f"or neuron.FIELD ({', '.join(_NEURON_FIELDS)})")


def _changes(d, where: str) -> dict:
    if not isinstance(d, dict):
        raise SweepError(f"{where}: expected a table of config keys, got {type(d).__name__}")
    out = {}
    for k, v in _flatten(d).items():
        ck = _canonical_key(k, where)
        if ck in out:
            raise SweepError(f"{where}: key {ck!r} given twice")
        out[ck] = v
    return out


def _apply(base: dict, changes: dict) -> dict:
    """Apply flat changes to a TOML-style config dict (sections flattened, neuron kept as a table)."""
    d = {}
    for k, v in base.items():
        if k in SECTIONS and isinstance(v, dict):
            d.update(v)
        else:
            d[k] = dict(v) if isinstance(v, dict) else v
    for k, v in changes.items():
        if k.startswith("neuron."):
            d.setdefault("neuron", {})[k.split(".", 1)[1]] = v
        else:
            d[k] = v
    return d


def _resolve_model(name: str, sweep_dir: Path | None) -> Path:
    if sweep_dir is not None and (sweep_dir / name).is_file():
        return sweep_dir / name
    return resolve_config_path(name)


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt_value(x) for x in v)
    return str(v)


def run_name(params: dict, seed: int, digest: bool = False) -> str:
    """Stable directory name of a run: ``loss_sharpness=3__neuron.tau_mem=20ms__seed=0``; long names
    (or, with ``digest``, any) end in a hash of the parameters."""
    parts = [f"{k}={_fmt_value(v)}" for k, v in params.items()] + [f"seed={seed}"]
    name = re.sub(r"[^A-Za-z0-9._=+-]", "", "__".join(parts))
    if digest or len(name) > 100:
        digest = hashlib.sha1(json.dumps([params, seed], sort_keys=True, default=str).encode()).hexdigest()
        name = f"{name[:80]}__{digest[:10]}"
    return name


def load_sweep(spec) -> dict:
    """Read a sweep file (path) or dict and check its keys. Returns a normalized spec dict."""
    sweep_dir = None
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        raw = read_toml(path, "sweep file")
        sweep_dir = path.resolve().parent
        raw.setdefault("name", path.stem)
    elif isinstance(spec, dict):
        raw = dict(spec)
    else:
        raise TypeError(f"sweep: expected a path or a dict, got {type(spec).__name__}")
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise SweepError(f"sweep: unknown keys {sorted(unknown)}; valid keys are {list(TOP_KEYS)}")
    if "config" not in raw:
        raise SweepError("sweep: 'config' (the base model config, a path or a name in models/) is required")
    out = {"name": str(raw.get("name", "sweep")), "dataset": raw.get("dataset", "digits"),
           "data_path": raw.get("data_path"), "n_train": raw.get("n_train"), "n_test": raw.get("n_test"),
           "epochs": raw.get("epochs"), "val_fraction": raw.get("val_fraction", VAL_FRACTION),
           "threads": raw.get("threads", 1)}
    vf = out["val_fraction"]
    if not (isinstance(vf, (int, float)) and not isinstance(vf, bool) and 0 <= vf < 1):
        raise SweepError(f"sweep: val_fraction must be a number in [0, 1), got {vf!r}")
    th = out["threads"]
    if not (isinstance(th, int) and not isinstance(th, bool) and th >= 1):
        raise SweepError(f"sweep: threads must be an integer >= 1, got {th!r}")
    for k in ("n_train", "n_test", "epochs"):
        v = out[k]
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= (0 if k == "epochs" else 1)):
            raise SweepError(f"sweep: {k} must be an integer >= {0 if k == 'epochs' else 1}, got {v!r}")
    base = raw["config"]
    if isinstance(base, str):
        base = read_toml(_resolve_model(base, sweep_dir), "model config")
    elif not isinstance(base, dict):
        raise SweepError(f"sweep: config must be a path, a name in models/ or a table, got {base!r}")
    out["base"] = base
    out["overrides"] = _changes(raw.get("overrides", {}), "overrides")
    grid = _changes(raw.get("grid", {}), "grid")
    for k, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid: {k!r} must be a non-empty list of values, got {values!r}")
    out["grid"] = grid
    variants = raw.get("variants", [])
    if not isinstance(variants, list):
        raise SweepError("variants: expected a list of tables ([[variants]] in TOML)")
    out["variants"] = [_changes(v, f"variants[{i}]") for i, v in enumerate(variants)]
    for i, v in enumerate(out["variants"]):
        both = sorted(set(v) & set(grid))
        if both:
            raise SweepError(f"variants[{i}]: {both} also in [grid]; a key is either swept or set per variant")
    for where, d in [("overrides", out["overrides"]), ("grid", grid)] + [
            (f"variants[{i}]", v) for i, v in enumerate(out["variants"])]:
        if "seed" in d:
            raise SweepError(f"{where}: set seeds with the top-level 'seeds' list, not 'seed'")
    seeds = raw.get("seeds", [None])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not isinstance(seeds, list) or not seeds or not all(
            s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 0) for s in seeds):
        raise SweepError(f"sweep: seeds must be a non-empty list of integers >= 0, got {raw.get('seeds')!r}")
    out["seeds"] = seeds
    return out


def expand(spec: dict) -> list:
    """The runs of a normalized sweep spec: dicts with name, params, seed, config (or config_error)."""
    keys = list(spec["grid"])
    grid_points = [dict(zip(keys, vals)) for vals in itertools.product(*(spec["grid"][k] for k in keys))]
    variants = spec["variants"] or [{}]
    runs, names = [], {}
    for variant in variants:
        for point in grid_points:
            params = {**point, **variant}  # grid keys first: the plot's x axis is the first one
            for seed in spec["seeds"]:
                changes = dict(spec["overrides"])
                if spec["epochs"] is not None:
                    changes["epochs"] = spec["epochs"]
                changes.update(params)  # swept values win over overrides and the epochs setting
                if seed is not None:
                    changes["seed"] = seed
                run = {"params": params, "config": None, "config_error": None}
                try:
                    run["config"] = FFConfig.from_dict(_apply(spec["base"], changes))
                    run["seed"] = run["config"].seed
                except (ConfigError, ValueError, TypeError) as e:
                    run["config_error"] = f"{type(e).__name__}: {e}"
                    run["seed"] = seed
                run["name"] = run_name(params, run["seed"])
                if run["name"] in names:
                    other = names[run["name"]]
                    if _json_roundtrip([other["params"], other["seed"]]) == _json_roundtrip([params, run["seed"]]):
                        raise SweepError(f"sweep: two runs with the same parameters and seed ({run['name']}); "
                                         "remove the duplicate value or variant")
                    run["name"] = run_name(params, run["seed"], digest=True)  # names equal once sanitized
                names[run["name"]] = run
                runs.append(run)
    return runs


# -- one run (a dask task) ----------------------------------------------------------------------

def _json_roundtrip(obj):
    return json.loads(json.dumps(obj))


def _record(spec: dict, run: dict) -> dict:
    """What identifies a run's result: compared with ``metrics.json`` to decide whether to skip it."""
    return _json_roundtrip({"name": run["name"], "params": run["params"], "seed": run["seed"],
                            "dataset": spec["dataset"], "n_train": spec["n_train"], "n_test": spec["n_test"],
                            "val_fraction": spec["val_fraction"], "threads": spec["threads"]})


def _completed(run_dir: Path, record: dict, config: FFConfig):
    """The metrics of a run that finished earlier with the same config, else None."""
    try:
        m = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    ok = (m.get("completed") is True and m.get("sweep") == record
          and m.get("config") == _json_roundtrip(config.to_dict()) and len(m.get("epochs", [])) == config.epochs)
    return m if ok else None


def _row(run: dict, status: str, metrics: dict | None = None, seconds=None, error="", run_dir="") -> dict:
    metrics = metrics or {}
    return {"run": run["name"], **run["params"], "seed": run["seed"], "status": status,
            "val_acc": metrics.get("val_acc"), "val_acc_goodness": metrics.get("val_acc_goodness"),
            "val_acc_readout": metrics.get("val_acc_readout"), "test_acc": metrics.get("test_acc"), "test_acc_goodness": metrics.get("test_acc_goodness"),
            "test_acc_readout": metrics.get("test_acc_readout"), "seconds": seconds, "error": error,
            "run_dir": run_dir}


def _write_error(run_dir: Path, error: str, tb: str = ""):
    write_json(run_dir / "error.json", {"error": error, "traceback": tb})


def train_one(task: dict) -> dict:
    """Train one run of a sweep (executed on a dask worker). Never raises: failures become a row."""
    from .runs import ThreadSettings, train_run
    run, run_dir = task["run"], Path(task["run_dir"])
    t0 = time.perf_counter()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.json").unlink(missing_ok=True)
        with open(run_dir / "train.log", "w") as logf:
            def log(msg):
                print(msg, file=logf, flush=True)
            net, summary = train_run(run["config"], task["dataset"], run_dir, progress=False,
                                     n_train=task["n_train"], n_test=task["n_test"], data_path=task["data_path"],
                                     command=f"spikeff sweep {task['sweep']} ({run['name']})", plots=False, log=log,
                                     val_fraction=task["val_fraction"],
                                     threads=ThreadSettings(blas=task["threads"], engine=task["threads"]))
        if net.history_:
            from .plot import plot_training_curves
            with _PLOT_LOCK:
                import matplotlib.pyplot as plt
                plt.close(plot_training_curves(net.history_, path=run_dir / "training_curves.png"))
        seconds = time.perf_counter() - t0
        summary.update({"sweep": task["record"], "sweep_seconds": seconds, "completed": True})
        write_json(run_dir / "metrics.json", summary)
        return _row(run, "ok", summary, seconds, run_dir=task["rel_dir"])
    except Exception as e:  # noqa: BLE001 - a failed run is a result, not the end of the sweep
        error = f"{type(e).__name__}: {e}"
        try:
            _write_error(run_dir, error, traceback.format_exc())
        except OSError:
            pass
        return _row(run, "failed", seconds=time.perf_counter() - t0, error=error, run_dir=task["rel_dir"])


# -- the table and the figure -----------------------------------------------------------------

def _columns(param_keys: list) -> list:
    return ["run", *param_keys, "seed", *RESULT_COLUMNS]


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return v


def write_table(rows: list, param_keys: list, out_dir: Path):
    """Write ``sweep.csv`` and ``sweep.json`` (one row per run)."""
    from .io import atomic_write_bytes
    cols = _columns(param_keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _csv_value(r.get(c)) for c in cols})
    atomic_write_bytes(out_dir / "sweep.csv", buf.getvalue().encode())
    write_json(out_dir / "sweep.json", {"columns": cols, "rows": rows})


def plot_sweep(rows: list, param_keys: list, path=None, metric: str = "val_acc"):
    """Accuracy against the first swept parameter: mean and standard deviation over seeds, one line
    per combination of the other parameters; the single seeds as dots. Returns the figure."""
    from matplotlib.figure import Figure  # no pyplot: safe outside the main thread
    import numpy as np
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    done = [r for r in rows if r["status"] != "failed" and isinstance(r.get(metric), (int, float))]
    if not param_keys:
        param_keys = ["seed"]
    xkey, others = param_keys[0], param_keys[1:]
    xs = list(dict.fromkeys(_csv_value(r.get(xkey)) for r in rows))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    pos = (lambda v: v) if numeric else (lambda v: xs.index(_csv_value(v)))
    groups = {}
    for r in done:
        groups.setdefault(tuple(_csv_value(r.get(k)) for k in others), []).append(r)
    for g, rs in groups.items():
        by_x = {}
        for r in rs:
            by_x.setdefault(pos(r.get(xkey)), []).append(r[metric])
        xv = sorted(by_x)
        mean = np.array([np.mean(by_x[x]) for x in xv])
        std = np.array([np.std(by_x[x]) for x in xv])
        label = ", ".join(f"{k}={v}" for k, v in zip(others, g) if v != "") or "mean ± std over seeds"
        line, = ax.plot(xv, mean, marker="o", label=label)
        ax.fill_between(xv, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.scatter([pos(r.get(xkey)) for r in rs], [r[metric] for r in rs], color=line.get_color(), s=10, alpha=0.6)
    if not numeric:
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([str(x) for x in xs])
    elif xs and min(xs) > 0 and max(xs) / min(xs) >= 20:
        ax.set_xscale("log")
    n_failed = sum(r["status"] == "failed" for r in rows)
    ax.set(xlabel=xkey, ylabel=metric.replace("_", " "),
           title=f"{len(done)} runs" + (f", {n_failed} failed" if n_failed else ""))
    if groups:
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# -- the sweep --------------------------------------------------------------------------------

def _client(scheduler, n_workers: int, processes: bool):
    """(client, cluster or None). ``scheduler``: None (a new LocalCluster), an address or a Client."""
    distributed = _import_distributed()
    if scheduler is None:
        # loopback only, random ports; the scheduler's HTTP server would otherwise try port 8787
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                                           protocol="tcp://", host="127.0.0.1", dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        return distributed.Client(cluster), cluster
    if isinstance(scheduler, distributed.Client):
        return scheduler, None
    return distributed.Client(scheduler), None


def run_sweep(sweep, out_dir=None, scheduler=None, n_workers: int = 2, processes: bool = True,
              log=print) -> list:
    """Run a sweep (a TOML path or a dict, see the module docstring) and return its table: one dict
    per run with the swept parameters, ``seed``, ``status`` ("ok", "skipped": completed by an earlier
    invocation, "failed"), validation and test accuracies, ``seconds``, ``error`` and ``run_dir``.

    ``scheduler``: None starts a ``LocalCluster`` of ``n_workers`` single-threaded workers
    (``processes=False``: threads of this process); an address (``"tcp://host:8786"``) or a
    ``distributed.Client`` uses an existing cluster, whose workers must import spikeff and see
    ``out_dir``. ``out_dir`` defaults to ``runs/sweeps/NAME``.
    """
    if not (isinstance(n_workers, int) and n_workers >= 1):
        raise SweepError(f"n_workers must be an integer >= 1, got {n_workers!r}")
    spec = load_sweep(sweep)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs/sweeps") / spec["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = expand(spec)
    param_keys = list(dict.fromkeys(k for r in runs for k in r["params"]))
    rows, tasks = {}, []
    for run in runs:
        rel_dir = f"runs/{run['name']}"
        run_dir = out_dir / rel_dir
        if run["config_error"]:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_error(run_dir, run["config_error"])
            rows[run["name"]] = _row(run, "failed", error=run["config_error"], run_dir=rel_dir)
            continue
        record = _record(spec, run)
        m = _completed(run_dir, record, run["config"])
        if m is not None:
            rows[run["name"]] = _row(run, "skipped", m, m.get("sweep_seconds"), run_dir=rel_dir)
            continue
        tasks.append({"run": run, "run_dir": str(run_dir.resolve()), "rel_dir": rel_dir, "record": record,
                      "sweep": spec["name"], "dataset": spec["dataset"], "n_train": spec["n_train"],
                      "n_test": spec["n_test"], "data_path": spec["data_path"],
                      "val_fraction": spec["val_fraction"], "threads": spec["threads"]})
    log(f"spikeff sweep {spec['name']}: {len(runs)} runs ({len(tasks)} to train, "
        f"{sum(r['status'] == 'skipped' for r in rows.values())} completed before, "
        f"{sum(r['status'] == 'failed' for r in rows.values())} invalid) -> {out_dir}")

    def table():
        return [rows[r["name"]] for r in runs if r["name"] in rows]

    if tasks:
        distributed = _import_distributed()
        client, cluster = _client(scheduler, n_workers, processes)
        try:
            futures = {client.submit(train_one, t, key=f"spikeff-sweep-{t['run']['name']}-{uuid.uuid4().hex[:8]}",
                                     pure=False): t for t in tasks}
            for fut in distributed.as_completed(futures):
                t = futures[fut]
                try:
                    row = fut.result()
                except Exception as e:  # the task itself died (worker lost, unpicklable, ...)
                    row = _row(t["run"], "failed", error=f"{type(e).__name__}: {e}", run_dir=t["rel_dir"])
                rows[row["run"]] = row
                acc = row["val_acc"]
                log(f"  {row['status']:7s} {row['run']}" + (f"  val acc {acc:.4f}" if acc is not None else "")
                    + (f"  {row['seconds']:.1f} s" if row["seconds"] is not None else "")
                    + (f"  {row['error']}" if row["error"] else ""))
                write_table(table(), param_keys, out_dir)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    result = table()
    write_table(result, param_keys, out_dir)
    plot_sweep(result, param_keys, out_dir / "sweep.png")
    return result
