"""Run bookkeeping in one place: thread pinning, environment and provenance, result files.

Used by the command line, sweeps, the benchmark and the experiments (none of them writes its own):

* :class:`ThreadSettings` and :func:`pinned_threads`: the BLAS threads (OpenBLAS/MKL, through
  threadpoolctl) and the engine's elementwise threads that training runs with. Float results of a
  GEMM depend on the BLAS kernel *and* its thread count, so training pins both to values that are
  recorded in the run (``metrics.json`` and the checkpoint) and restored by ``--resume``.
* :func:`environment`: Python, numpy, CPU count, load, BLAS libraries (kernel, version, threads)
  and the OpenBLAS environment variables.
* :func:`provenance`: git commit (and whether the tree had uncommitted changes), the config and
  its hash, the environment and the thread settings: what every results file records.
* :func:`write_json`: an atomic JSON write (temporary file, read back, rename).
* :func:`config_hash`: a stable SHA-256 of a config's dict (or of any JSON-able object).

What is bit-exact and what is not (see the README, "Reproducibility"): same machine, BLAS kernel
and thread settings give identical weights; another kernel or thread count gives float32 results
within about 1e-6 relative per step, which training may amplify over epochs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import MODELS_DIR, PREDICT_METHODS, recipe_path  # noqa: F401  (MODELS_DIR: where the recipes are)

ROOT = Path(__file__).resolve().parent.parent
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS", "SPIKEFF_NUM_THREADS")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadSettings:
    """Threads of a training run: ``blas`` for the GEMMs, ``engine`` for the elementwise work.

    The engine's results do not depend on ``engine`` (every reduction is done per sample, or in
    one fixed order); the GEMMs' last bits depend on ``blas`` and on the BLAS kernel."""

    blas: int
    engine: int

    def __post_init__(self):
        for name in ("blas", "engine"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"threads.{name}: must be a positive integer, got {v!r}")

    @classmethod
    def default(cls) -> "ThreadSettings":
        """``SPIKEFF_NUM_THREADS`` if set, else the usable CPUs (at most 8), for both."""
        env = os.environ.get("SPIKEFF_NUM_THREADS")
        n = int(env) if env else min(8, usable_cpus())
        return cls(blas=max(1, n), engine=max(1, n))

    @classmethod
    def from_dict(cls, d) -> "ThreadSettings":
        if not isinstance(d, dict) or set(d) != {"blas", "engine"}:
            raise ValueError(f"threads: expected {{'blas': n, 'engine': n}}, got {d!r}")
        return cls(blas=d["blas"], engine=d["engine"])

    def to_dict(self) -> dict:
        return asdict(self)


_PIN = {"depth": 0, "threads": None, "limits": None}      # the process's pinned threads (see pinned_threads)
_PIN_LOCK = threading.Lock()


def engine_threads() -> int:
    """Threads for the engine's elementwise work: the pinned value inside :func:`pinned_threads`,
    else ``SPIKEFF_NUM_THREADS``, else the usable CPUs (at most 8)."""
    if _PIN["threads"] is not None:
        return _PIN["threads"].engine
    return ThreadSettings.default().engine


def blas_info() -> list:
    """The BLAS libraries numpy uses: kernel (architecture), version and current threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a core dependency
        return []
    libs = [dict({k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")},
                 numpy="numpy" in str(i.get("filepath", "")))
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return sorted(libs, key=lambda i: not i["numpy"])      # numpy's own BLAS first


def blas_kernel() -> str | None:
    """numpy's BLAS library, version and kernel, e.g. ``"openblas 0.3.23.dev Zen"`` (the one that
    runs spikeff's GEMMs; scipy may load another)."""
    info = blas_info()
    if not info:
        return None
    i = info[0]
    return " ".join(str(i.get(k)) for k in ("internal_api", "version", "architecture") if i.get(k))


@contextlib.contextmanager
def pinned_threads(threads: ThreadSettings | None):
    """Run the body with the BLAS pool at ``threads.blas`` threads (threadpoolctl; it can raise
    the count above an ``OPENBLAS_NUM_THREADS`` set at start-up) and the engine at
    ``threads.engine``. ``None`` changes nothing.

    BLAS thread limits belong to the whole process: nested or concurrent uses (runs in threads of
    one process, e.g. an in-process dask cluster) share one pin and must ask for equal settings,
    else RuntimeError (a silent change of another run's threads would change its bits)."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits
    with _PIN_LOCK:
        if _PIN["depth"] == 0:
            _PIN["limits"] = threadpool_limits(limits=int(threads.blas), user_api="blas")
            _PIN["threads"] = threads
        elif _PIN["threads"] != threads:
            raise RuntimeError(f"threads: this process already runs with {_PIN['threads'].to_dict()} pinned; "
                               f"a run asking for {threads.to_dict()} at the same time would change its "
                               "results. Use worker processes (a sweep's default) or equal thread settings")
        _PIN["depth"] += 1
    try:
        yield
    finally:
        with _PIN_LOCK:
            _PIN["depth"] -= 1
            if _PIN["depth"] == 0:
                _PIN["limits"].restore_original_limits()
                _PIN["limits"], _PIN["threads"] = None, None


def check_resume_threads(recorded: dict | None, kernel: str | None, log=None) -> ThreadSettings:
    """Thread settings for resuming a run that recorded ``recorded`` (and ran on BLAS ``kernel``).

    The recorded thread counts are restored. When the BLAS kernel differs, the resumed run cannot
    be bit-identical to an uninterrupted one: a warning says so (results then agree within float
    tolerance, not bit for bit)."""
    threads = ThreadSettings.from_dict(recorded) if recorded else ThreadSettings.default()
    now = blas_kernel()
    if kernel is not None and now is not None and kernel != now:
        msg = (f"resuming on BLAS kernel {now!r}, but the run was trained on {kernel!r}: weights will "
               f"agree with an uninterrupted run within float tolerance, not bit for bit")
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if log is not None:
            log(f"spikeff: warning: {msg}")
    if recorded is None and log is not None:
        log("spikeff: warning: the checkpoint records no thread settings (older spikeff); using "
            f"{threads.to_dict()}: weights may differ in the last bits from an uninterrupted run")
    return threads


def environment() -> dict:
    """Where a result was computed: Python, numpy, machine, CPUs, load, BLAS and its env settings."""
    env = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
           "platform": platform.platform(), "cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
           "blas": blas_info(),
           "env": {k: os.environ.get(k) for k in OPENBLAS_ENV if os.environ.get(k) is not None}}
    if hasattr(os, "getloadavg"):
        env["load_average_1min_at_start"] = round(os.getloadavg()[0], 2)   # other work on the machine
    return env


def git_commit(root: Path = ROOT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository spikeff runs from."""
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"commit": sha, "dirty": dirty if sha else None}


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config) -> str:
    """SHA-256 (hex, first 16 digits) of a config (``FFConfig`` or its dict, or any JSON-able
    object): equal configs give equal hashes on every machine."""
    d = config.to_dict() if hasattr(config, "to_dict") else config
    return hashlib.sha256(_canonical(d).encode()).hexdigest()[:16]


def recipe_hash(path) -> str:
    """:func:`config_hash` of the config a recipe file (``models/*.toml``) reads as now."""
    from .config import load_config
    return config_hash(load_config(path))


def provenance(config=None, threads: ThreadSettings | None = None, recipe=None, **extra) -> dict:
    """What a results file records: git commit, environment, threads and (when given) the config,
    its hash, and the recipe file it came from with that recipe's hash as read now."""
    p = {"git": git_commit(), "environment": environment()}
    if threads is not None:
        p["threads"] = threads.to_dict()
    if config is not None:
        p["config"] = config.to_dict() if hasattr(config, "to_dict") else config
        p["config_hash"] = config_hash(config)
    if recipe is not None:
        rp = Path(recipe)
        try:
            rel = str(rp.resolve().relative_to(ROOT))
        except ValueError:
            rel = str(rp)
        p["recipe"] = {"path": rel, "config_hash": recipe_hash(rp)}
    p.update(extra)
    return p


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (parents made); returns the path."""
    from .io import atomic_write_bytes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())
    return path


# -- run directories: train, checkpoint per epoch, resume --------------------------------------

VAL_FRACTION = 0.1          # default share of the training set held out for validation


def resolve_config_path(name) -> Path:
    """A model config: a TOML path, or a recipe name in ``models/`` (see :func:`spikeff.config.recipe_path`)."""
    return recipe_path(name)


@contextlib.contextmanager
def sigint_deferred():
    """Hold Ctrl-C while a checkpoint and its metrics are written (raised right after), so that
    model.npz and metrics.json always describe the same completed epoch."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)     # not always Python's default (Brian2 sets its own)
    caught = []
    signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def check_data_matches(net, data, model_path):
    """DataError when ``data`` has other inputs or classes than the saved network."""
    from .data import DataError
    if data.X_train.shape[1] != net.n_features_in_ or data.n_classes != net.n_classes_:
        raise DataError(f"{model_path}: the network was built for {net.n_features_in_} inputs and "
                        f"{net.n_classes_} classes, but data set {data.name} has {data.X_train.shape[1]} "
                        f"inputs and {data.n_classes} classes")


def load_run(run_dir):
    """The network (config, weights, optimizer state, history, threads) and the run's summary,
    from ``run_dir/model.npz`` and ``run_dir/metrics.json``."""
    from .io import CheckpointError
    from .network import FFNetwork
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run directory")
    net = FFNetwork.load(run_dir / "model.npz")
    try:
        summary = json.loads((run_dir / "metrics.json").read_text())
        summary["data_args"]["dataset"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir}/metrics.json: missing; it names the data set to resume on") from None
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{run_dir}/metrics.json: corrupt, or written by a spikeff without "
                              "resume information (data_args)") from None
    return net, summary


def prepare_data(dataset, data_path=None, n_train=None, n_test=None, val_fraction=VAL_FRACTION,
                 seed: int = 0):
    """``(data, (X_val, y_val) or None)``: the data set (a random subset when ``n_train``/``n_test``
    are given), with ``val_fraction`` of its training set held out for validation (0: none)."""
    from .data import load_dataset
    data = load_dataset(dataset, data_path)
    if n_train or n_test:
        data = data.subset(n_train, n_test, seed=seed)
    if not val_fraction:
        return data, None
    return data.split_validation(val_fraction, seed=seed)


def train_run(config, dataset, out_dir, epochs=None, progress=True, n_train=None, n_test=None,
              data_path=None, command=None, plots=True, log=print, resume=None,
              val_fraction: float = VAL_FRACTION, threads: ThreadSettings | None = None, val_methods=None,
              recipe=None, recipe_overrides: dict | None = None):
    """Train on a data set, writing ``metrics.json``, ``model.npz`` (after every epoch) and plots
    into ``out_dir``. Returns (network, summary dict). Used by ``train``, ``demo`` and sweeps.

    ``val_fraction`` of the training set (stratified, seeded by ``config.seed``) is held out: the
    accuracy on it is recorded per epoch (``val_acc_*``); the test set is evaluated once, after the
    last epoch (``test_acc_*``) by every method. ``val_methods``: the per-epoch validation methods
    (default: goodness and readout; ``["readout"]`` is one pass per sample). ``threads`` (default: :meth:`ThreadSettings.default`) are pinned
    while training and recorded in metrics.json and the checkpoint.

    ``recipe``: the model config file the config came from, with ``recipe_overrides`` (the changes
    made to it): recorded so that a test can tell when the recipe changed after the run.

    ``resume``: (network, summary) from :func:`load_run`; training continues from the network's last
    completed epoch with the recorded data split and threads, and gives the same weights as an
    uninterrupted run (bit for bit on the same BLAS kernel). On Ctrl-C the checkpoint of the last
    completed epoch stays in ``out_dir`` (the write of a checkpoint is never cut in half) and
    KeyboardInterrupt is re-raised after a message."""
    import sys
    import time
    from .network import FFNetwork
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume is not None:
        net, old = resume
        val_fraction = old.get("data_args", {}).get("val_fraction", 0) or 0
        threads = check_resume_threads(getattr(net, "threads_recorded_", None),
                                       getattr(net, "blas_kernel_", None), log=log)
    threads = threads or ThreadSettings.default()
    data, val = prepare_data(dataset, data_path, n_train, n_test, val_fraction, seed=config.seed)
    log(f"spikeff: {data.name}: {len(data.X_train)} train / {0 if val is None else len(val[0])} validation / "
        f"{len(data.X_test)} test samples; network {data.X_train.shape[1]}+{data.n_classes * config.label_repeat}"
        f" -> {' -> '.join(map(str, config.hidden_sizes))} LIF, T = {config.n_steps} steps, "
        f"engine {config.engine}, {config.dtype}; threads {threads.to_dict()}")
    summary = {"command": command or " ".join(sys.argv), "dataset": data.name,
               "n_train": len(data.X_train), "n_val": 0 if val is None else len(val[0]),
               "n_test": len(data.X_test), "config": config.to_dict(), "threads": threads.to_dict(),
               "blas_kernel": blas_kernel(), "epochs": [],
               "provenance": provenance(config=config, threads=threads, recipe=recipe),
               "data_args": {"dataset": dataset, "n_train": n_train, "n_test": n_test,
                             "data_path": None if data_path is None else str(data_path),
                             "val_fraction": val_fraction, "split_seed": config.seed}}
    if recipe is not None:
        summary["recipe_overrides"] = dict(recipe_overrides or {})
    elapsed_before = 0.0
    if resume is not None:
        check_data_matches(net, data, out_dir / "model.npz")
        elapsed_before = float(old.get("elapsed_seconds") or 0.0)
        summary["resumed"] = old.get("resumed", []) + [{"command": summary["command"],
                                                        "from_epoch": net.epochs_done_,
                                                        "provenance": summary["provenance"]}]
        for k in ("command", "provenance", "recipe_overrides"):
            if k in old:
                summary[k] = old[k]
    t_start = time.perf_counter()
    saved = {"epoch": None}
    X_val, y_val = val if val is not None else (None, None)

    def on_epoch(net, m):
        summary["epochs"] = net.history_
        summary["elapsed_seconds"] = elapsed_before + time.perf_counter() - t_start
        with sigint_deferred():
            net.save(out_dir / "model.npz")
            write_json(out_dir / "metrics.json", summary)
            saved["epoch"] = net.epochs_done_      # before a held Ctrl-C is raised
        acc = ""
        if m.get("val_acc_goodness") is not None or m.get("val_acc_readout") is not None:
            acc = " | val acc " + ", ".join(f"{k} {m[f'val_acc_{k}']:.4f}" for k in PREDICT_METHODS
                                           if m.get(f"val_acc_{k}") is not None)
        log(f"epoch {m['epoch']:3d}: FF loss {' '.join(f'{x:.3f}' for x in m['ff_loss'])}{acc} | "
            f"{m['samples_per_s']:.0f} samples/s")

    try:
        if resume is None:
            net = FFNetwork(config)
            net.fit(data.X_train, data.y_train, X_val, y_val, epochs=epochs, progress=progress,
                    callback=on_epoch, n_classes=data.n_classes, threads=threads, val_methods=val_methods)
        else:
            net.config = config
            net.threads_ = threads
            net.continue_fit(data.X_train, data.y_train, X_val, y_val, epochs=epochs,
                             progress=progress, callback=on_epoch, val_methods=val_methods)
    except KeyboardInterrupt:
        done = saved["epoch"] if saved["epoch"] is not None else (resume[0].epochs_done_ if resume else None)
        if done:
            print(f"spikeff: interrupted; {out_dir}/model.npz holds epoch {done} (the last completed one). "
                  f"Resume with: spikeff train --resume {out_dir}", file=sys.stderr)
        else:
            print("spikeff: interrupted before the first epoch finished; no checkpoint was written",
                  file=sys.stderr)
        raise
    except FloatingPointError as e:
        if saved["epoch"]:
            raise FloatingPointError(f"{e}; {out_dir}/model.npz still holds the last good epoch "
                                     f"({saved['epoch']})") from None
        raise
    final = net.history_[-1] if net.history_ else {}
    summary.update({k: final.get(k) for k in ("val_acc", "val_acc_goodness", "val_acc_readout")})
    if val is not None and net.history_:          # methods not monitored per epoch, after the last one
        missing = [m for m in default_methods(net) if summary.get(f"val_acc_{m}") is None]
        if missing:
            v = evaluate(net, X_val, y_val, methods=missing, threads=threads)
            summary.update({f"val_acc_{m}": v[f"test_acc_{m}"] for m in missing})
            summary["val_acc"] = summary.get(f"val_acc_{net.config.predict_method}")
    t0 = time.perf_counter()
    test = evaluate(net, data.X_test, data.y_test, threads=threads)      # the test set, once
    summary.update(test)
    summary.update({"test_eval_seconds": time.perf_counter() - t0,
                    "elapsed_seconds": elapsed_before + time.perf_counter() - t_start, "epochs": net.history_})
    write_json(out_dir / "metrics.json", summary)
    log("test accuracy (evaluated once, after training): " + ", ".join(
        f"{k} {summary[f'test_acc_{k}']:.4f}" for k in PREDICT_METHODS if summary.get(f"test_acc_{k}") is not None))
    if plots and net.history_:
        from .plot import plot_training_curves
        import matplotlib.pyplot as plt
        plt.close(plot_training_curves(net.history_, path=out_dir / "training_curves.png"))
    return net, summary


def default_methods(net) -> list:
    """Decision methods of a network: goodness over labels (unless its negatives are unsupervised)
    and the readout (when it has one)."""
    return ((["goodness"] if net.config.negatives != "hybrid" else [])
            + (["readout"] if net.readout_ is not None else []))


def evaluate(net, X, y, methods=None, threads: ThreadSettings | None = None) -> dict:
    """``{"test_acc_METHOD": accuracy, ..., "test_acc": the config's predict_method}`` on (X, y)
    for ``methods`` (default: goodness unless the negatives are unsupervised, and the readout when
    the network has one)."""
    methods = default_methods(net) if methods is None else methods
    out = {}
    with pinned_threads(threads):
        for m in methods:
            out[f"test_acc_{m}"] = net.score(X, y, method=m)
    out["test_acc"] = out.get(f"test_acc_{net.config.predict_method}")
    return out
