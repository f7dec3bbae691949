"""Sweeps on dask.distributed: expansion, a tiny sweep on a LocalCluster, failures, resuming, CLI."""
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from spikeff import sweep as sw  # noqa: E402
from spikeff.cli import main  # noqa: E402
from spikeff.runs import MODELS_DIR  # noqa: E402

TINY = {"hidden_sizes": [20], "n_steps": 5, "batch_size": 32, "label_repeat": 1, "chunk_steps": 5,
        "eval_batch_size": 128}


def tiny_spec(**kw):
    spec = {"name": "tiny", "config": "digits", "dataset": "digits", "n_train": 100, "n_test": 60,
            "epochs": 1, "seeds": [0, 1], "overrides": dict(TINY), "grid": {"loss_sharpness": [1.0, 3.0]}}
    spec.update(kw)
    return spec


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded in-process workers, loopback and random ports only (an 'existing' cluster)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as c:
        yield c


# -- expansion (no cluster) ---------------------------------------------------------------------

def test_expand_grid_variants_seeds_and_keys():
    spec = sw.load_sweep(tiny_spec(
        grid={"loss_sharpness": [1.0, 3.0], "neuron": {"tau_mem": ["10 ms", "20 ms"]}},
        variants=[{"goodness.goodness": "energy"}, {"training.learning_rate": 0.003}], seeds=[4, 5]))
    runs = sw.expand(spec)
    assert len(runs) == 2 * 2 * 2 * 2
    assert len({r["name"] for r in runs}) == len(runs)
    assert all(r["config_error"] is None for r in runs)
    r = runs[0]
    assert r["params"] == {"goodness": "energy", "loss_sharpness": 1.0, "neuron.tau_mem": "10 ms"}
    assert r["config"].goodness == "energy" and r["config"].neuron.tau_mem == pytest.approx(0.010)
    assert r["config"].seed == 4 and r["config"].epochs == 1 and r["config"].hidden_sizes == (20,)
    assert r["config"].neuron.tau_syn == pytest.approx(0.005)  # from models/digits.toml
    assert r["name"] == "loss_sharpness=1__neuron.tau_mem=10ms__goodness=energy__seed=4"
    assert sw.run_name(r["params"], 4) == r["name"]  # stable
    last = runs[-1]
    assert last["config"].learning_rate == 0.003 and last["config"].neuron.tau_mem == pytest.approx(0.020)
    assert last["config"].goodness == "energy_relu"
    # swept values win over the epochs setting; names that collide once sanitized get a hash
    runs = sw.expand(sw.load_sweep(tiny_spec(grid={"epochs": [2], "neuron.tau_mem": ["10 ms", "10ms"]})))
    assert [r["config"].epochs for r in runs] == [2] * 4
    assert len({r["name"] for r in runs}) == 4


def test_sweep_file_errors(tmp_path):
    with pytest.raises(sw.SweepError, match="loss_sharpnes"):
        sw.load_sweep(tiny_spec(grid={"loss_sharpnes": [1.0]}))
    with pytest.raises(sw.SweepError, match="unknown keys"):
        sw.load_sweep(tiny_spec(gird={"loss_sharpness": [1.0]}))
    with pytest.raises(sw.SweepError, match="non-empty list"):
        sw.load_sweep(tiny_spec(grid={"loss_sharpness": []}))
    with pytest.raises(sw.SweepError, match="also in"):
        sw.load_sweep(tiny_spec(variants=[{"loss_sharpness": 2.0}]))
    with pytest.raises(sw.SweepError, match="same parameters"):
        sw.expand(sw.load_sweep(tiny_spec(grid={"loss_sharpness": [1.0, 1.0]})))
    with pytest.raises(sw.SweepError, match="seeds"):
        sw.load_sweep(tiny_spec(grid={"seed": [1, 2]}))
    with pytest.raises(FileNotFoundError):
        sw.load_sweep(tiny_spec(config="no_such_model"))
    with pytest.raises(sw.SweepError, match="n_workers"):
        sw.run_sweep(tiny_spec(), tmp_path, n_workers=0)


def test_example_sweeps_expand():
    files = sorted((MODELS_DIR / "sweeps").glob("*.toml"))
    assert files
    for f in files:
        runs = sw.expand(sw.load_sweep(f))
        assert runs and all(r["config_error"] is None for r in runs), f


def test_missing_distributed_gives_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"spikeff\[sweep\]"):
        sw._import_distributed()


# -- running ------------------------------------------------------------------------------------

def _metrics_mtimes(out):
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}


def test_sweep_local_cluster_table_failures_and_resume(tmp_path, cluster):
    out = tmp_path / "sw"
    spec = tiny_spec(grid={"loss_sharpness": [1.0, -1.0, 3.0]})  # -1 is an invalid value
    rows = sw.run_sweep(spec, out, n_workers=2, log=lambda *a: None)  # its own LocalCluster (processes)
    assert len(rows) == 6
    assert [r["seed"] for r in rows] == [0, 1] * 3
    assert [r["loss_sharpness"] for r in rows] == [1.0, 1.0, -1.0, -1.0, 3.0, 3.0]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 4 and len(failed) == 2
    for r in failed:
        assert r["loss_sharpness"] == -1.0 and r["test_acc"] is None
        assert r["error"].startswith("ConfigError: loss_sharpness")
        assert "loss_sharpness" in json.loads((out / r["run_dir"] / "error.json").read_text())["error"]
    for r in ok:
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["test_acc_readout"] <= 1.0
        assert r["seconds"] > 0 and r["error"] == ""
        d = out / r["run_dir"]
        assert (d / "model.npz").is_file() and (d / "training_curves.png").is_file()
        m = json.loads((d / "metrics.json").read_text())
        assert m["completed"] is True and m["config"]["loss_sharpness"] == r["loss_sharpness"]
        assert m["config"]["seed"] == r["seed"] and m["n_train"] + m["n_val"] == 100 and m["n_test"] == 60
        assert m["n_val"] == 10 and m["threads"] == {"blas": 1, "engine": 1}     # the sweep's defaults
        assert m["test_acc"] == r["test_acc"] and m["val_acc"] == r["val_acc"] and 0.0 <= r["val_acc"] <= 1.0
    # a sweep run (worker process, the sweep's pinned 1 thread) gives the same weights as train_run
    # with that config and threads in this process
    import numpy as np
    from spikeff import FFNetwork
    from spikeff.runs import ThreadSettings, train_run
    run = next(x for x in sw.expand(sw.load_sweep(spec)) if x["name"] == ok[0]["run"])
    ref, _ = train_run(run["config"], "digits", tmp_path / "ref", progress=False, n_train=100, n_test=60,
                       plots=False, log=lambda *a: None, threads=ThreadSettings(1, 1))
    swept = FFNetwork.load(out / ok[0]["run_dir"] / "model.npz")
    for a, b in zip(ref.weights_ + ref.biases_, swept.weights_ + swept.biases_):
        np.testing.assert_array_equal(a, b)
    # two seeds train different networks
    assert rows[0]["test_acc"] != rows[1]["test_acc"] or rows[0]["test_acc_readout"] != rows[1]["test_acc_readout"]
    lines = (out / "sweep.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["run", "loss_sharpness", "seed", "status"]
    assert len(lines) == 7
    table = json.loads((out / "sweep.json").read_text())
    assert table["rows"] == json.loads(json.dumps(rows)) and "test_acc" in table["columns"]
    assert (out / "sweep.png").stat().st_size > 0

    # Second invocation: completed runs are skipped (files untouched), invalid ones fail again.
    before = _metrics_mtimes(out)
    again = sw.run_sweep(spec, out, scheduler=cluster.scheduler_address, log=lambda *a: None)
    assert [r["status"] for r in again] == ["skipped" if r["status"] == "ok" else "failed" for r in rows]
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in rows]
    assert _metrics_mtimes(out) == before

    # A run without the completion mark (interrupted) is trained again; the others still skipped.
    interrupted = out / ok[0]["run_dir"] / "metrics.json"
    m = json.loads(interrupted.read_text())
    del m["completed"]
    interrupted.write_text(json.dumps(m))
    third = sw.run_sweep(spec, out, scheduler=cluster.scheduler_address, log=lambda *a: None)
    assert [r["run"] for r in third if r["status"] == "ok"] == [ok[0]["run"]]
    assert sum(r["status"] == "skipped" for r in third) == 3
    assert json.loads(interrupted.read_text())["completed"] is True


def test_failing_run_does_not_stop_others(tmp_path, cluster, monkeypatch):
    """A run that raises while training (in-process workers see the patched train_run)."""
    import spikeff.runs
    real = spikeff.runs.train_run

    def flaky(config, *a, **kw):
        if config.seed == 1:
            raise RuntimeError("boom in training")
        return real(config, *a, **kw)

    monkeypatch.setattr(spikeff.runs, "train_run", flaky)
    rows = sw.run_sweep(tiny_spec(grid={"loss_sharpness": [2.0]}, seeds=[0, 1, 2]), tmp_path,
                        scheduler=cluster.scheduler_address, log=lambda *a: None)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"] == "RuntimeError: boom in training" and rows[1]["test_acc"] is None
    assert "Traceback" in json.loads((tmp_path / rows[1]["run_dir"] / "error.json").read_text())["traceback"]
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows if r["status"] == "ok")


def test_cli_sweep_with_scheduler_address(tmp_path, cluster, capsys):
    f = tmp_path / "s.toml"
    f.write_text(f'config = "{(MODELS_DIR / "digits.toml").as_posix()}"\n'
                 'dataset = "digits"\nn_train = 80\nn_test = 40\nepochs = 1\nseeds = [0]\n'
                 '[overrides]\nhidden_sizes = [20]\nn_steps = 5\nlabel_repeat = 1\n'
                 '[grid]\n"neuron.tau_mem" = ["10 ms", "20 ms"]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--scheduler", cluster.scheduler_address, "--out", str(out)]) == 0
    assert "2 trained" in capsys.readouterr().out
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == ["neuron.tau_mem=10ms__seed=0", "neuron.tau_mem=20ms__seed=0"]
    assert main(["sweep", str(f), "--scheduler", cluster.scheduler_address, "--out", str(out)]) == 0
    assert "2 completed before" in capsys.readouterr().out
    assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(out)]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('config = "digits"\n[grid]\nloss_sharpness = [-1.0]\n')
    assert main(["sweep", str(bad), "--out", str(tmp_path / "bad")]) == 1  # a failed run: exit status 1
    assert "1 failed" in capsys.readouterr().out
