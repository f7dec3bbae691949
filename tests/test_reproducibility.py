"""Reproducibility: pinned threads, split-independent reductions, the validation split, provenance.

Float results of a GEMM depend on the BLAS kernel and on its thread count; spikeff pins the thread
count while training (and records it), so that a run, its resume and a sweep's copy of it give the
same bits on the same kernel. On another kernel only a tolerance holds (see the README).
"""
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from spikeff import FFConfig, FFNetwork
from spikeff.data import DataError, load_dataset
from spikeff.runs import (ThreadSettings, blas_info, check_resume_threads, config_hash, engine_threads,
                          pinned_threads, provenance)

REPO = Path(__file__).resolve().parent.parent
TINY = FFConfig(hidden_sizes=(40, 30), n_steps=6, epochs=1, batch_size=50, label_repeat=2, seed=3)

GEMM = """
import hashlib, sys, numpy as np
from spikeff.runs import pinned_threads, ThreadSettings, blas_info
rng = np.random.default_rng(0)
A = rng.standard_normal((3000, 884)).astype(np.float32); B = rng.standard_normal((884, 1000)).astype(np.float32)
with pinned_threads(ThreadSettings(2, 2)):
    print(blas_info()[0]["num_threads"], hashlib.sha1((A @ B).tobytes()).hexdigest())
"""


def test_pinning_overrides_the_environment_thread_count():
    """A process started with OPENBLAS_NUM_THREADS=1 runs its pinned GEMMs on 2 threads, with the
    same bits as a process started with 2."""
    if not blas_info():
        pytest.skip("threadpoolctl finds no BLAS library to pin")
    out = []
    for env_threads in ("1", "2"):
        env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS=env_threads)
        r = subprocess.run([sys.executable, "-c", GEMM], env=env, capture_output=True, text=True, check=True)
        out.append(r.stdout.split())
    assert out[0][0] == out[1][0] == "2"
    assert out[0][1] == out[1][1]


def test_pinned_threads_nest_restore_and_refuse_conflicts():
    from threadpoolctl import threadpool_limits
    if not blas_info():
        pytest.skip("threadpoolctl finds no BLAS library to pin")
    with threadpool_limits(limits=1, user_api="blas"):
        with pinned_threads(ThreadSettings(blas=2, engine=3)):
            assert blas_info()[0]["num_threads"] == 2 and engine_threads() == 3
            with pinned_threads(ThreadSettings(blas=2, engine=3)):      # same settings: shared
                assert blas_info()[0]["num_threads"] == 2
            with pytest.raises(RuntimeError, match="already runs with"):
                with pinned_threads(ThreadSettings(blas=1, engine=1)):
                    pass
            assert blas_info()[0]["num_threads"] == 2
        assert blas_info()[0]["num_threads"] == 1                        # restored
    with pytest.raises(ValueError, match="threads.blas"):
        ThreadSettings(blas=0, engine=1)


def test_engine_results_do_not_depend_on_engine_threads(digits):
    """The elementwise work is split over threads by batch rows; every reduction (goodness, spike
    counts, the bias gradient) must give the same bits for any split."""
    net = FFNetwork(TINY.replace(hidden_sizes=(300, 200), batch_size=200))
    net.initialize(digits.X_train.shape[1], 10)
    X, y = digits.X_train[:200], digits.y_train[:200]
    src = net._source(X, y, [0, 1])
    mods = [np.linspace(-1, 1, 200)] * 2
    results = []
    for engine in (1, 2, 3):
        with pinned_threads(ThreadSettings(blas=1, engine=engine)):
            res = net._run(src, modulators=mods)
        results.append(res)
    for r in results[1:]:
        for (dW, db), (dW0, db0) in zip(r.grads, results[0].grads):
            np.testing.assert_array_equal(dW, dW0)
            np.testing.assert_array_equal(db, db0)
        for g, g0 in zip(r.goodness, results[0].goodness):
            np.testing.assert_array_equal(g, g0)


def test_checkpoint_records_threads_and_kernel(tmp_path, digits):
    net = FFNetwork(TINY).fit(digits.X_train[:100], digits.y_train[:100], n_classes=10,
                              threads=ThreadSettings(blas=1, engine=2))
    net.save(tmp_path / "m.npz")
    back = FFNetwork.load(tmp_path / "m.npz")
    assert back.threads_ == ThreadSettings(blas=1, engine=2)
    assert back.threads_recorded_ == {"blas": 1, "engine": 2}
    if blas_info():
        assert back.blas_kernel_ and back.blas_kernel_.split()[0] == blas_info()[0]["internal_api"]


def test_resume_on_another_kernel_warns():
    with pytest.warns(RuntimeWarning, match="not bit for bit"):
        t = check_resume_threads({"blas": 2, "engine": 1}, "openblas 0.0 SomeOtherKernel")
    assert t == ThreadSettings(blas=2, engine=1)
    if blas_info():
        from spikeff.runs import blas_kernel
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_resume_threads({"blas": 1, "engine": 1}, blas_kernel())   # same kernel: silent


def test_validation_split_is_stratified_seeded_and_disjoint():
    data = load_dataset("digits")
    train, (Xv, yv) = data.split_validation(0.1, seed=0)
    assert len(train.X_train) + len(Xv) == len(data.X_train)
    assert abs(len(Xv) - 0.1 * len(data.X_train)) <= 1
    np.testing.assert_array_equal(train.X_test, data.X_test)           # the test set is untouched
    # disjoint: no validation row is a training row
    rows = {r.tobytes() for r in train.X_train}
    assert sum(r.tobytes() in rows for r in Xv) <= 2                   # (digits has a few duplicate images)
    counts = np.bincount(yv, minlength=10)
    assert counts.min() >= 13 and counts.max() <= 16                   # stratified: ~14.4 per class
    again = data.split_validation(0.1, seed=0)[1][1]
    np.testing.assert_array_equal(again, yv)
    assert not np.array_equal(data.split_validation(0.1, seed=1)[1][1], yv)
    with pytest.raises(DataError, match="val_fraction"):
        data.split_validation(1.5)


def test_cosine_schedule_spans_the_fit_epochs(digits):
    """fit(epochs=N) with N > config.epochs: the learning rate keeps falling (it rose again before)."""
    lrs = []
    net = FFNetwork(TINY.replace(epochs=2, lr_schedule="cosine"))
    net.fit(digits.X_train[:60], digits.y_train[:60], n_classes=10, epochs=4,
            callback=lambda n, m: lrs.append(n.optimizers_[0].lr))
    assert len(lrs) == 4 and all(a > b for a, b in zip(lrs, lrs[1:]))


def test_provenance_records_commit_config_and_threads():
    p = provenance(config=TINY, threads=ThreadSettings(1, 1), recipe=REPO / "models" / "digits.toml")
    assert p["config_hash"] == config_hash(TINY) == config_hash(TINY.to_dict())
    assert config_hash(TINY.replace(seed=4)) != p["config_hash"]
    assert p["recipe"]["path"] == "models/digits.toml" and len(p["recipe"]["config_hash"]) == 16
    assert p["threads"] == {"blas": 1, "engine": 1}
    assert set(p["environment"]) >= {"python", "numpy", "blas", "cpus"}
    if (REPO / ".git").exists():
        assert p["git"]["commit"] and len(p["git"]["commit"]) == 40
    json.dumps(p)
