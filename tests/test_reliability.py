"""Reliability: clear errors for bad input, safe checkpoints, exact resume, Ctrl-C, determinism,
and property tests of the encoders, goodness functions and the vectorized engine."""
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeff import CheckpointError, ConfigError, DataError, FFConfig, FFNetwork, NeuronConfig, load_config
from spikeff import cli, runs
from spikeff.data import load_idx_dataset
from spikeff.encoding import SpikeSource
from spikeff.engines.vectorized import run_phase
from spikeff.goodness import available_goodness, get_goodness
from spikeff.neuron import DiscreteLIF

REPO = Path(__file__).resolve().parent.parent

TINY_TOML = """
[network]
hidden_sizes = [24, 16]
n_steps = 8
dtype = "float32"
[encoding]
label_repeat = 2
[training]
batch_size = 50
epochs = {epochs}
lr_schedule = "{schedule}"
seed = 7
"""


def tiny_toml(tmp_path, epochs=3, schedule="cosine", name="tiny.toml"):
    p = tmp_path / name
    p.write_text(TINY_TOML.format(epochs=epochs, schedule=schedule))
    return p


TINY = FFConfig(hidden_sizes=(12, 8), n_steps=5, epochs=1, batch_size=40, label_repeat=1, seed=1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    FFNetwork(TINY).fit(digits.X_train[:80], digits.y_train[:80], n_classes=10).save(path)
    return path


# -- bad configs --------------------------------------------------------------------------------
@pytest.mark.parametrize("d, match", [
    ({"neuron": {"dt": "0 ms"}}, "neuron.dt: must be a finite number > 0"),
    ({"neuron": {"dt": "-1 ms"}}, "neuron.dt"),
    ({"neuron": {"tau_mem": "0.5 ms"}}, "neuron.tau_mem: must be >= dt"),
    ({"neuron": {"tau_syn": "0.1 ms"}}, "neuron.tau_syn: must be >= dt"),
    ({"neuron": {"v_threshold": "inf mV"}}, "neuron.v_threshold"),
    ({"neuron": {"v_threshold": "nan mV"}}, "neuron.v_threshold"),
    ({"neuron": {"v_reset": "2 mV"}}, "neuron.v_reset: must be finite and below v_threshold"),
    ({"neuron": {"tau_syn": "5 mV"}}, "neuron.tau_syn: unit 'mV' is not a time unit"),
    ({"neuron": {"dt": True}}, "neuron.dt"),
    ({"neuron": {"tau": "5 ms"}}, "neuron: unknown keys ['tau']"),
    ({"neuron": 5}, "neuron: must be a [neuron] table"),
    ({"goodness_threshold": float("nan")}, "goodness_threshold: must be a finite number"),
    ({"goodness_threshold": float("inf")}, "goodness_threshold"),
    ({"hidden_sizes": []}, "hidden_sizes: must be a non-empty list"),
    ({"hidden_sizes": [10, 0]}, "hidden_sizes: layer 1 size must be a positive integer"),
    ({"hidden_sizes": [-5]}, "hidden_sizes: layer 0"),
    ({"hidden_sizes": [1.5]}, "hidden_sizes: layer 0"),
    ({"hidden_sizes": "500"}, "hidden_sizes"),
    ({"n_steps": 0}, "n_steps: must be a positive integer"),
    ({"n_steps": "20"}, "n_steps: must be a positive integer, got '20'"),
    ({"batch_size": -1}, "batch_size"),
    ({"epochs": -1}, "epochs: must be an integer >= 0"),
    ({"seed": True}, "seed"),
    ({"learning_rate": -0.1}, "learning_rate: must be a finite number > 0"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"readout": "yes"}, "readout: must be true or false"),
    ({"goodness": "nope"}, "goodness: 'nope' is not valid; choose one of"),
    ({"encoding": "morse"}, "encoding: 'morse' is not valid"),
    ({"loss": "hinge"}, "loss"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"engine": "loihi"}, "engine"),
    ({"dtype": 32}, "dtype"),
    ({"max_rate": "2 kHz"}, "max_rate: max_rate * neuron.dt is the spike probability"),
    ({"max_rate": "500 ms"}, "max_rate: unit 'ms' is not a rate unit"),
    ({"trainig": {"epochs": 3}}, "config: unknown keys ['trainig']"),
])
def test_bad_config_gets_clear_error(d, match):
    with pytest.raises(ConfigError) as e:
        FFConfig.from_dict(d)
    assert match in str(e.value)


def test_bad_config_files(tmp_path):
    (tmp_path / "bad.toml").write_text("[network\nhidden_sizes = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="neuron.dt"):
        NeuronConfig(dt=0.0)


# -- bad data -----------------------------------------------------------------------------------
X4 = np.full((4, 3), 0.5)
Y4 = np.array([0, 1, 0, 1])


@pytest.mark.parametrize("X, y, kw, exc, match", [
    (np.where(np.eye(4, 3) > 0, np.nan, 0.5), Y4, {}, DataError, "X: contains NaN or infinite"),
    (np.where(np.eye(4, 3) > 0, np.inf, 0.5), Y4, {}, DataError, "X: contains NaN or infinite"),
    (np.zeros(4), Y4, {}, DataError, "X: must be 2-D"),
    (np.zeros((4, 3, 1)), Y4, {}, DataError, "X is read as spikes (T, B, M) = (4, 3, 1) (images must be 2-D"),
    (np.full((4, 3, 1), 0.5), Y4, {}, DataError, "spikes: values must be 0 or 1"),
    (np.zeros((4, 3), dtype=complex), Y4, {}, DataError, "X: must be a real numeric array"),
    ([["a", "b"]] * 4, Y4, {}, DataError, "X: must be a real numeric array"),
    ([[0.1, 0.2], [0.3]], Y4[:2], {}, DataError, "X: must be a real numeric array"),
    (np.zeros((0, 3)), Y4[:0], {}, DataError, "X: is empty"),
    (np.zeros((4, 0)), Y4, {}, DataError, "X: has 0 features"),
    (X4 * 255, Y4, {}, DataError, "X: intensities must lie in [0, 1]"),
    (X4, np.array([0, 1, 2, np.nan]), {}, DataError, "y: labels must be integers"),
    (X4, np.array([0, 1, 0.5, 1]), {}, DataError, "y: labels must be integers"),
    (X4, np.array([0, "a", 1, "b"], dtype=object), {}, DataError, "y: labels must be of one type"),
    (X4, np.array([0, 1, 2, -1]), {"n_classes": 3}, DataError, "y: labels must lie in 0"),
    (X4, np.array([0, 1, 1]), {}, DataError, "y: must be 1-D with one label per sample (4)"),
    (X4, np.zeros((4, 1), int), {}, DataError, "y: must be 1-D"),
    (X4, np.zeros(4, int), {}, DataError, "y: need at least 2 classes"),
    (X4, np.array([0, 1, 2, 9]), {"n_classes": 3}, DataError, "n_classes: 3 does not match the data"),
    (X4, Y4, {"n_classes": 2.5}, DataError, "n_classes"),
])
def test_bad_training_data_gets_clear_error(X, y, kw, exc, match):
    with pytest.raises(exc) as e:
        FFNetwork(TINY).fit(X, y, **kw)
    assert match in str(e.value)


def test_bad_prediction_data_gets_clear_error(tiny_model, digits):
    net = FFNetwork.load(tiny_model)
    with pytest.raises(DataError, match="X: has 5 features, but the network was built for 64"):
        net.predict(np.zeros((2, 5)))
    with pytest.raises(DataError, match=r"y: labels must lie in 0..9 \(n_classes = 10\)"):
        net.score(digits.X_test[:3], np.array([0, 1, 10]))
    with pytest.raises(DataError, match="NaN"):
        net.goodness(np.full((1, 64), np.nan), [0])


def _idx_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + arr.tobytes()


def _write_idx_set(d: Path, n=6, shape=(28, 28), labels=None, gz=False):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lab = np.arange(n) % 10 if labels is None else labels
    for k in ("train", "t10k"):
        for stem, arr in ((f"{k}-images-idx3-ubyte", rng.integers(0, 256, (n, *shape))),
                          (f"{k}-labels-idx1-ubyte", lab)):
            data = _idx_bytes(arr)
            if gz:
                (d / (stem + ".gz")).write_bytes(gzip.compress(data))
            else:
                (d / stem).write_bytes(data)
    return d


def test_good_idx_files_load(tmp_path):
    ds = load_idx_dataset("mnist", _write_idx_set(tmp_path / "ok", gz=True))
    assert ds.X_train.shape == (6, 784) and ds.y_test.tolist() == list(range(6))


@pytest.mark.parametrize("damage, exc, match", [
    ("missing", FileNotFoundError, "not found in"),
    ("truncated", DataError, "truncated or corrupt: header says"),
    ("truncated_gz", DataError, "cannot read IDX file"),
    ("magic", DataError, "bad magic number"),
    ("header", DataError, "truncated IDX header"),
    ("shape", DataError, "expected images of shape (n, 28, 28)"),
    ("count", DataError, "expected 6 labels"),
    ("range", DataError, "labels must lie in 0..9"),
])
def test_bad_idx_files_get_clear_error(tmp_path, damage, exc, match):
    d = tmp_path / "idx"
    if damage == "missing":
        d.mkdir()
    elif damage == "shape":
        _write_idx_set(d, shape=(8, 8))
    elif damage == "count":
        _write_idx_set(d)
        (d / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.arange(5)))
    elif damage == "range":
        _write_idx_set(d, labels=np.array([0, 1, 2, 3, 4, 12]))
    elif damage == "truncated_gz":
        _write_idx_set(d, gz=True)
        f = d / "train-images-idx3-ubyte.gz"
        f.write_bytes(f.read_bytes()[:-40])
    else:
        _write_idx_set(d)
        f = d / "train-images-idx3-ubyte"
        raw = f.read_bytes()
        f.write_bytes({"truncated": raw[:-100], "magic": b"\x12\x34" + raw[2:], "header": raw[:9]}[damage])
    with pytest.raises(exc) as e:
        load_idx_dataset("mnist", d)
    assert match in str(e.value)


# -- bad checkpoints ----------------------------------------------------------------------------
def _rewrite_checkpoint(src, dst, meta_change=None, array_change=None, fix_checksum=False):
    from spikeff.io import _checksum
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(data.pop("__meta__").tobytes().decode())
    if meta_change:
        meta_change(meta)
    if array_change:
        array_change(data)
    if fix_checksum:                  # a well-formed file whose arrays do not fit its config
        meta["checksum"] = _checksum(data)
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **data)
    Path(dst).write_bytes(buf.getvalue())


def _wider(meta):
    meta["config"]["hidden_sizes"] = [13, 8]


@pytest.mark.parametrize("damage, exc, match", [
    ("missing", FileNotFoundError, "no such checkpoint"),
    ("empty", CheckpointError, "not a readable spikeff checkpoint"),
    ("truncated_half", CheckpointError, "corrupt or truncated"),
    ("truncated_tail", CheckpointError, "corrupt or truncated"),
    ("not_npz", CheckpointError, "corrupt or truncated"),
    ("version", CheckpointError, "checkpoint format version 99 is not supported"),
    ("format", CheckpointError, "not a spikeff network checkpoint"),
    ("checksum", CheckpointError, "checksum mismatch"),
    ("shape", CheckpointError, "array W0 has shape (12, 74), the config (13, 8)"),
    ("opt_shape", CheckpointError, "array opt1_m0 has shape (8, 11)"),
    ("readout_missing", CheckpointError, "array readout_W has shape missing"),
    ("meta_keys", CheckpointError, "checkpoint metadata lacks ['history']"),
    ("bad_config", CheckpointError, "the config stored in the checkpoint is invalid: n_steps"),
    ("bad_meta", CheckpointError, "checkpoint metadata n_classes must be an integer >= 2, got 'ten'"),
])
def test_bad_checkpoint_gets_clear_error(tmp_path, tiny_model, damage, exc, match):
    bad = tmp_path / "bad.npz"
    raw = tiny_model.read_bytes()
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated_half":
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "truncated_tail":
        bad.write_bytes(raw[:-1])
    elif damage == "not_npz":
        bad.write_text("hello")
    elif damage != "missing":
        change = {
            "version": {"meta_change": lambda m: m.update(version=99)},
            "format": {"meta_change": lambda m: m.update(format="other")},
            "checksum": {"array_change": lambda a: a["W0"].__setitem__((0, 0), 1.0)},
            "shape": {"meta_change": _wider},
            "opt_shape": {"array_change": lambda a: a.update(opt1_m0=np.zeros((8, 11), np.float32)),
                          "fix_checksum": True},
            "readout_missing": {"array_change": lambda a: a.pop("readout_W"), "fix_checksum": True},
            "meta_keys": {"meta_change": lambda m: m.pop("history")},
            "bad_config": {"meta_change": lambda m: m["config"].update(n_steps=0)},
            "bad_meta": {"meta_change": lambda m: m.update(n_classes="ten")},
        }[damage]
        _rewrite_checkpoint(tiny_model, bad, **change)
    with pytest.raises(exc) as e:
        FFNetwork.load(bad)
    assert match in str(e.value)


def test_every_truncation_of_a_checkpoint_is_refused(tiny_model, tmp_path):
    raw = tiny_model.read_bytes()
    bad = tmp_path / "t.npz"
    for n in range(0, len(raw), max(1, len(raw) // 150)):
        bad.write_bytes(raw[:n])
        with pytest.raises(CheckpointError):
            FFNetwork.load(bad)


# -- numerical blow-up --------------------------------------------------------------------------
@pytest.mark.parametrize("changes, match", [
    ({"weight_init": 1e25}, "epoch 1, batch 1/2: layer 0: goodness is non-finite (NaN/inf) in the neutral-label phase"),
    ({"learning_rate": 1e38, "epochs": 3}, "goodness is non-finite"),
])
def test_blow_up_is_reported_with_layer_and_epoch(digits, changes, match):
    with pytest.warns(RuntimeWarning), pytest.raises(FloatingPointError) as e:
        FFNetwork(TINY.replace(**changes)).fit(digits.X_train[:80], digits.y_train[:80])
    assert match in str(e.value)
    assert "epoch" in str(e.value) and "layer" in str(e.value)


# -- CLI: exit code 2 and a one-line message ----------------------------------------------------
def _cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")       # numpy's overflow warnings of the blow-up case
def test_cli_bad_inputs_exit_2_with_message(tmp_path, capsys, tiny_model):
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text('[neuron]\ndt = "1 ms"\ntau_mem = "0.5 ms"\n')
    blow = tmp_path / "blow.toml"
    blow.write_text("[network]\nhidden_sizes = [8]\nn_steps = 4\nweight_init = 1e25\n[training]\nepochs = 2\n")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(tiny_model.read_bytes()[:300])
    fake28 = _write_idx_set(tmp_path / "fmnist")
    bad_run = tmp_path / "bad_run"                  # metrics.json names a data set that does not exist
    bad_run.mkdir()
    (bad_run / "model.npz").write_bytes(tiny_model.read_bytes())
    (bad_run / "metrics.json").write_text(json.dumps({"data_args": {"dataset": "cifar"}}))
    cases = [
        (["train", "--config", bad_cfg, "--out", tmp_path / "r1"], "spikeff train: error: neuron.tau_mem"),
        (["train", "--config", tmp_path / "nope.toml"], "spikeff train: error: model config"),
        (["train", "--config", "digits", "--epochs", -1, "--out", tmp_path / "r2"], "epochs: must be an integer >= 0"),
        (["train", "--dataset", "mnist", "--data-path", tmp_path / "void", "--out", tmp_path / "r3"],
         "mnist: IDX files"),
        (["train", "--config", blow, "--n-train", 60, "--n-test", 20, "--no-progress", "--out", tmp_path / "r4"],
         "epoch 1, batch 1/1: layer 0: goodness is non-finite"),
        (["train", "--resume", tmp_path / "void"], "--resume"),
        (["train", "--resume", bad_run], "dataset: 'cifar' is not valid"),
        (["train", "--resume", tmp_path, "--seed", 3], "--resume takes --seed from the run directory"),
        (["eval", trunc], "spikeff eval: error:"),
        (["eval", tmp_path / "none.npz"], "no such checkpoint"),
        (["eval", tiny_model, "--dataset", "mnist", "--data-path", fake28],
         "the network was built for 64 inputs and 10 classes, but data set mnist has 784"),
    ]
    for argv, match in cases:
        rc, err = _cli(argv, capsys)
        assert rc == 2, (argv, err)
        assert match in err, (argv, err)
        assert "Traceback" not in err


def test_cli_rejects_non_positive_subset_sizes(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--n-train", "0"])
    assert e.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


# -- checkpoints: truncated writes keep the previous one ----------------------------------------
def test_truncated_checkpoint_write_keeps_previous_good_one(tmp_path, tiny_model, monkeypatch, digits):
    import spikeff.io as sio
    path = tmp_path / "model.npz"
    net = FFNetwork.load(tiny_model)
    net.save(path)
    good = path.read_bytes()
    net.continue_fit(digits.X_train[:80], digits.y_train[:80], epochs=2)   # a newer state to save
    real_fdopen = os.fdopen

    class ShortWriter:                       # a write that silently stores only half (disk full, NFS)
        def __init__(self, f):
            self.f = f

        def write(self, data):
            return self.f.write(data[: len(data) // 2])

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return self.f.__exit__(*a)

    monkeypatch.setattr(sio.os, "fdopen", lambda *a, **k: ShortWriter(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="the previous model.npz was kept"):
        net.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert FFNetwork.load(path).epochs_done_ == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]       # no temporary file left
    net.save(path)                                                     # a normal write still works
    assert FFNetwork.load(path).epochs_done_ == 2


def test_resume_refuses_truncated_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    rc, _ = _cli(["train", "--config", tiny_toml(tmp_path, epochs=1), "--n-train", 100, "--n-test", 30,
                  "--no-progress", "--out", run], capsys)
    assert rc == 0
    (run / "model.npz").write_bytes((run / "model.npz").read_bytes()[:-500])
    rc, err = _cli(["train", "--resume", run, "--epochs", 2, "--no-progress"], capsys)
    assert rc == 2 and "corrupt or truncated" in err


# -- exact resume and determinism ---------------------------------------------------------------
TIMING = ("train_seconds", "samples_per_s", "eval_seconds")


def _strip_timing(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def _assert_same_model(a, b):
    na, nb = FFNetwork.load(a), FFNetwork.load(b)
    for x, y in zip(na.weights_ + na.biases_, nb.weights_ + nb.biases_):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(na.readout_.W, nb.readout_.W)
    for oa, ob in zip(na.optimizers_, nb.optimizers_):
        assert oa.t == ob.t
        for x, y in zip(oa.m + oa.v, ob.m + ob.v):
            np.testing.assert_array_equal(x, y)
    assert _strip_timing(na.history_) == _strip_timing(nb.history_)
    return na, nb


def test_resume_after_interruption_is_bit_identical(tmp_path, capsys):
    toml = tiny_toml(tmp_path, epochs=3, schedule="cosine")
    common = ["--config", toml, "--n-train", 150, "--n-test", 40, "--no-progress"]
    assert _cli(["train", *common, "--out", tmp_path / "full"], capsys)[0] == 0

    def interrupt_after_first_epoch(msg):
        if msg.startswith("epoch   1:"):
            raise KeyboardInterrupt
    config = load_config(toml)
    with pytest.raises(KeyboardInterrupt):
        runs.train_run(config, "digits", tmp_path / "cut", progress=False, n_train=150, n_test=40,
                      plots=False, log=interrupt_after_first_epoch)
    assert "Resume with: spikeff train --resume" in capsys.readouterr().err
    assert FFNetwork.load(tmp_path / "cut" / "model.npz").epochs_done_ == 1
    rc, err = _cli(["train", "--resume", tmp_path / "cut", "--no-progress"], capsys)
    assert rc == 0, err
    na, _ = _assert_same_model(tmp_path / "full" / "model.npz", tmp_path / "cut" / "model.npz")
    assert na.epochs_done_ == 3 and na.config.lr_schedule == "cosine"
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m["resumed"][0]["from_epoch"] == 1 and len(m["epochs"]) == 3


def test_training_is_deterministic_and_seed_matters(tmp_path, capsys):
    toml = tiny_toml(tmp_path, epochs=2, schedule="constant")
    common = ["--config", toml, "--n-train", 120, "--n-test", 30, "--no-progress"]
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert _cli(["train", *common, "--seed", seed, "--out", tmp_path / name], capsys)[0] == 0
    _assert_same_model(tmp_path / "a" / "model.npz", tmp_path / "b" / "model.npz")
    ma, mb = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab")
    assert _strip_timing(ma["epochs"]) == _strip_timing(mb["epochs"])
    assert ma["test_acc"] == mb["test_acc"]
    with pytest.raises(AssertionError):
        _assert_same_model(tmp_path / "a" / "model.npz", tmp_path / "c" / "model.npz")


# -- Ctrl-C on a real process -------------------------------------------------------------------
def test_sigint_saves_checkpoint_and_resume_works(tmp_path, capsys):
    toml = tiny_toml(tmp_path, epochs=500, schedule="constant")
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    # the child starts with 1 BLAS thread; the run pins 2 (recorded) and the resume below, in a process
    # held at 1 BLAS thread, restores them: bit-identical weights whatever the callers' settings
    proc = subprocess.Popen([sys.executable, "-m", "spikeff", "train", "--config", str(toml), "--n-train", "100",
                             "--n-test", "20", "--no-progress", "--threads", "2", "--out", str(run)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "model.npz").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"Resume with: spikeff train --resume {run}" in err
    assert "Traceback" not in err
    net = FFNetwork.load(run / "model.npz")
    done = net.epochs_done_
    assert 1 <= done < 500
    assert len(json.loads((run / "metrics.json").read_text())["epochs"]) == done   # they agree
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((run / "metrics.json").read_text())["threads"] == {"blas": 2, "engine": 2}
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        rc, err = _cli(["train", "--resume", run, "--epochs", done + 1, "--no-progress"], capsys)
        assert rc == 0, err
        resumed = FFNetwork.load(run / "model.npz")
        assert resumed.epochs_done_ == done + 1 and resumed.threads_ == runs.ThreadSettings(2, 2)
        # the same as training done + 1 epochs without a break (constant lr: epochs does not matter)
        cfg = load_config(toml).replace(epochs=done + 1)
        ref, _ = runs.train_run(cfg, "digits", tmp_path / "ref", progress=False, n_train=100, n_test=20,
                                plots=False, log=lambda m: None, threads=runs.ThreadSettings(2, 2))
    for x, y in zip(ref.weights_, resumed.weights_):
        np.testing.assert_array_equal(x, y)


# -- property tests -----------------------------------------------------------------------------
PROPS = settings(max_examples=25, deadline=None)


@st.composite
def intensities(draw):
    B = draw(st.integers(1, 4))
    M = draw(st.integers(1, 6))
    vals = draw(st.lists(st.floats(0, 1), min_size=B * M, max_size=B * M))
    return np.array(vals).reshape(B, M)


@PROPS
@given(x=intensities(), encoding=st.sampled_from(["rate", "regular", "latency"]), T=st.integers(1, 15),
       chunk=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_spike_source_properties(x, encoding, T, chunk, seed):
    s = SpikeSource(x, encoding, T, 1e-3, 500.0, seed)
    spikes = s.all_steps()
    assert spikes.shape == (T, *x.shape)
    assert set(np.unique(spikes)) <= {0.0, 1.0}
    np.testing.assert_array_equal(spikes, SpikeSource(x, encoding, T, 1e-3, 500.0, seed).all_steps())
    np.testing.assert_array_equal(np.concatenate(list(s.chunks(chunk))), spikes)
    assert not spikes[:, x == 0].any()                      # no input, no spikes
    if encoding == "latency":
        assert (spikes.sum(axis=0) <= 1).all()
    if encoding == "regular":                               # floor(p T + 1/2) spikes, p = x * 0.5 here
        np.testing.assert_array_equal(spikes.sum(axis=0), np.floor(T * x * 0.5 + 0.5))


@PROPS
@given(name=st.sampled_from(available_goodness()),
       v=st.lists(st.floats(-50, 50), min_size=1, max_size=20))
def test_goodness_properties(name, v):
    gd = get_goodness(name)
    v = np.array(v)
    g, dg = gd.g(v), gd.dg(v)
    assert g.shape == v.shape and dg.shape == v.shape
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(dg))
    if name != "energy":
        assert np.all(g >= 0) and np.all(g[v <= 0] == 0)
    h = 1e-5
    away = np.abs(v) > 1e-3                                  # derivative check off the kink at 0
    num = (gd.g(v + h) - gd.g(v - h)) / (2 * h)
    np.testing.assert_allclose(dg[away], num[away], rtol=1e-4, atol=1e-5)


@PROPS
@given(B=st.integers(1, 4), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       T=st.integers(1, 12), chunk=st.integers(1, 13), seed=st.integers(0, 1000),
       name=st.sampled_from(available_goodness()), scale=st.floats(0.1, 5.0))
def test_engine_properties(B, sizes, T, chunk, seed, name, scale):
    rng = np.random.default_rng(seed)
    M = 5
    dims = [M, *sizes]
    W = [rng.standard_normal((n, m)) * scale for m, n in zip(dims[:-1], dims[1:])]
    lif = DiscreteLIF.from_config(NeuronConfig())
    gd = get_goodness(name)
    x = rng.random((B, M))

    def run(chunk_steps, modulators=None):
        return run_phase(W, [None] * len(W), lif, gd, SpikeSource(x, "rate", T, 1e-3, 500.0, seed),
                         chunk_steps, modulators=modulators)

    r = run(chunk)
    assert len(r.goodness) == len(W)
    for l, n in enumerate(sizes):
        assert r.goodness[l].shape == (B,) and r.neuron_goodness[l].shape == (B, n)
        assert np.all(np.isfinite(r.goodness[l]))
        assert r.spike_counts[l].min() >= 0 and r.spike_counts[l].max() <= T
    r2 = run(chunk)
    for a, b in zip(r.goodness, r2.goodness):
        np.testing.assert_array_equal(a, b)                  # reproducible
    r3 = run(T)
    for a, b in zip(r.goodness, r3.goodness):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)   # chunking does not change the result
    mods = [rng.standard_normal(B) for _ in W]
    g = run(chunk, modulators=mods).grads
    for (dW, db), Wl in zip(g, W):
        assert dW.shape == Wl.shape and db.shape == (Wl.shape[0],)
        assert np.all(np.isfinite(dW)) and np.all(np.isfinite(db))
    zero = run(chunk, modulators=[np.zeros(B) for _ in W]).grads
    assert all(not dW.any() for dW, _ in zero)


def test_ctrl_c_is_held_while_a_checkpoint_is_written():
    before = signal.getsignal(signal.SIGINT)   # other libraries (Brian2) may have replaced the default
    done = []
    with pytest.raises(KeyboardInterrupt):
        with runs.sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("wrote")                 # not cut short by the signal
    assert done == ["wrote"]
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_during_the_first_checkpoint_write_reports_it(tmp_path, capsys, monkeypatch):
    import spikeff.io as sio
    real = sio.atomic_write_bytes

    def write_then_ctrl_c(path, data):       # Ctrl-C arrives while model.npz is being written
        os.kill(os.getpid(), signal.SIGINT)
        real(path, data)
    monkeypatch.setattr(sio, "atomic_write_bytes", write_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        runs.train_run(load_config(tiny_toml(tmp_path)), "digits", tmp_path / "run", progress=False,
                      n_train=60, n_test=20, plots=False, log=lambda m: None)
    assert "holds epoch 1" in capsys.readouterr().err
    assert FFNetwork.load(tmp_path / "run" / "model.npz").epochs_done_ == 1
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]) == 1
