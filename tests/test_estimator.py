"""scikit-learn conventions: parameters (get_params/set_params), clone, GridSearchCV, classes_ with
any labels, scikit-learn's NotFittedError."""
import dataclasses
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.utils.validation import check_is_fitted

from spikeff import ConfigError, DataError, FFConfig, FFNetwork, NeuronConfig, load_config

TINY = FFConfig(hidden_sizes=(30,), n_steps=8, epochs=1, batch_size=40, readout=True, seed=1)


def test_get_params_gives_the_constructor_arguments_and_the_config_fields():
    net = FFNetwork(TINY, store_budget_mb=0)
    shallow = net.get_params(deep=False)
    assert shallow == {"config": TINY, "store_budget_mb": 0} and shallow["config"] is net.config
    deep = net.get_params()
    fields = {f.name for f in dataclasses.fields(FFConfig)}
    neuron = {f"neuron__{f.name}" for f in dataclasses.fields(NeuronConfig)}
    assert set(deep) == {"config", "store_budget_mb"} | fields | neuron
    assert deep["n_steps"] == 8 and deep["hidden_sizes"] == (30,) and deep["neuron__tau_mem"] == TINY.neuron.tau_mem
    # the constructor takes exactly what get_params(deep=False) returns
    again = FFNetwork(**shallow)
    assert again.get_params(deep=False)["config"] is TINY and again.store_budget_mb == 0


def test_set_params_replaces_config_fields_and_validates():
    net = FFNetwork(TINY)
    assert net.set_params(n_steps=5, neuron__tau_mem=0.02, learning_rate=0.003) is net
    assert (net.config.n_steps, net.config.neuron.tau_mem, net.config.learning_rate) == (5, 0.02, 0.003)
    assert net.config.neuron.tau_syn == TINY.neuron.tau_syn and net.config.hidden_sizes == (30,)
    net.set_params(config=FFConfig(), epochs=3, store_budget_mb=12)
    assert net.config == FFConfig(epochs=3) and net.store_budget_mb == 12
    with pytest.raises(ValueError, match="Invalid parameters \\['n_step'\\]"):
        net.set_params(n_step=3)
    with pytest.raises(ConfigError, match="n_steps"):
        net.set_params(n_steps=0)
    with pytest.raises(ConfigError, match="neuron.tau_mem"):
        net.set_params(neuron__tau_mem=-1.0)
    with pytest.raises(ValueError, match="store_budget_mb"):
        net.set_params(store_budget_mb=-1)
    # the deep parameters set back give the same config
    assert FFNetwork().set_params(**{k: v for k, v in FFNetwork(TINY).get_params().items()
                                     if k not in ("config", "neuron")}).config == TINY


def test_clone_copies_the_hyperparameters_not_the_fit(digits):
    X, y = digits.X_train[:120], digits.y_train[:120]
    net = FFNetwork(TINY, store_budget_mb=0.5).set_params(n_steps=6)
    twin = clone(net)
    assert twin is not net and twin.config == net.config and twin.store_budget_mb == 0.5
    assert twin.config.n_steps == 6
    net.fit(X, y)
    fitted_clone = clone(net)
    with pytest.raises(NotFittedError):
        fitted_clone.predict(digits.X_test[:3])
    # the clone trains to the same network (every hyperparameter carried over)
    fitted_clone.fit(X, y)
    for a, b in zip(net.weights_, fitted_clone.weights_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(net.predict(digits.X_test[:40]), fitted_clone.predict(digits.X_test[:40]))
    assert is_classifier(net) and "n_steps=6" in repr(net)
    # the repr is a constructor call giving the same network
    odd = FFNetwork(TINY, neuron__tau_mem=0.03, store_budget_mb=2.0)
    assert repr(odd) == ("FFNetwork(hidden_sizes=(30,), n_steps=8, batch_size=40, epochs=1, seed=1, "
                         "neuron__tau_mem=0.03, store_budget_mb=2.0)")
    again = eval(repr(odd), {"FFNetwork": FFNetwork})
    assert again.config == odd.config and again.store_budget_mb == 2.0


def test_grid_search_cv_tunes_a_config_field(digits):
    """n_steps = 1 cannot learn (the input reaches layer 1 one step late, so no label is seen);
    n_steps = 10 can: GridSearchCV must set the field in each candidate to tell them apart."""
    X, y = digits.X_train[:240], digits.y_train[:240]
    small = load_config("digits").replace(hidden_sizes=(60,), n_steps=10, epochs=2, batch_size=20,
                                          lr_schedule="constant")
    gs = GridSearchCV(FFNetwork(small), {"n_steps": [1, 10]}, cv=2, n_jobs=1, error_score="raise").fit(X, y)
    scores = dict(zip(gs.cv_results_["param_n_steps"], gs.cv_results_["mean_test_score"]))
    assert scores[1] <= 0.2 and scores[10] >= 0.4, scores
    assert gs.best_params_ == {"n_steps": 10}
    assert gs.best_estimator_.config == small and list(gs.best_estimator_.classes_) == list(range(10))
    assert gs.score(digits.X_test, digits.y_test) >= 0.4


def test_classes_take_any_labels(tmp_path, digits):
    """The labels' order fixes the label channels: labels sorted like 0..9 give the same network."""
    X, y = digits.X_train[:120], digits.y_train[:120]
    Xt, yt = digits.X_test[:50], digits.y_test[:50]
    base = FFNetwork(TINY).fit(X, y)
    np.testing.assert_array_equal(base.classes_, np.arange(10))
    p = base.predict(Xt)
    names = np.array([f"c{k}" for k in range(10)])
    for mapping in (names, np.arange(10) * 3 - 5):
        net = FFNetwork(TINY).fit(X, mapping[y])
        np.testing.assert_array_equal(net.classes_, mapping)
        np.testing.assert_array_equal(net.predict(Xt), mapping[p])
        np.testing.assert_array_equal(net.predict(Xt, method="readout"), mapping[base.predict(Xt, method="readout")])
        assert net.score(Xt, mapping[yt]) == base.score(Xt, yt)
        net.save(tmp_path / "m.npz")
        back = FFNetwork.load(tmp_path / "m.npz")
        np.testing.assert_array_equal(back.classes_, mapping)
        np.testing.assert_array_equal(back.predict(Xt), mapping[p])
    with pytest.raises(DataError, match="are not among the network's classes"):
        net.score(Xt[:2], np.array([-5, 5]))                  # 5 is not one of -5, -2, 1, 4, ...
    with pytest.raises(DataError, match="are not among the network's classes"):
        FFNetwork(TINY).fit(X, names[y]).score(Xt[:2], np.array(["c1", "dog"]))
    # the final readout refit (readout_final_epochs) and fit_readout take labels too
    final = TINY.replace(readout_final_epochs=2)
    a = FFNetwork(final).fit(X, y)
    b = FFNetwork(final).fit(X, names[y])
    np.testing.assert_array_equal(b.readout_.W, a.readout_.W)
    assert b.fit_readout(X, names[y], epochs=1) == a.fit_readout(X, y, epochs=1)
    np.testing.assert_array_equal(b.predict(Xt, method="readout"), names[a.predict(Xt, method="readout")])
    # labels absent from y: n_classes keeps 0..n_classes-1; without it classes_ are the labels seen
    seen = y != 3
    assert list(FFNetwork(TINY).fit(X[seen], y[seen], n_classes=10).classes_) == list(range(10))
    assert list(FFNetwork(TINY).fit(X[seen], y[seen]).classes_) == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_checkpoints_without_classes_load_as_0_to_C_minus_1(tmp_path, digits):
    net = FFNetwork(TINY).fit(digits.X_train[:80], digits.y_train[:80])
    net.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    assert meta["classes"] == list(range(10))
    del meta["classes"]                          # as written before classes_ existed
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    assert zipfile.is_zipfile(tmp_path / "old.npz")
    old = FFNetwork.load(tmp_path / "old.npz")
    np.testing.assert_array_equal(old.classes_, np.arange(10))
    np.testing.assert_array_equal(old.predict(digits.X_test[:30]), net.predict(digits.X_test[:30]))


def test_not_fitted_error_is_scikit_learns():
    import spikeff
    assert spikeff.NotFittedError is NotFittedError
    net = FFNetwork(TINY)
    with pytest.raises(NotFittedError, match="not fitted"):
        net.predict(np.zeros((2, 64)))
    with pytest.raises(NotFittedError):
        check_is_fitted(net)
    # importing spikeff does not import scikit-learn (about a second); asking for the error does
    code = ("import sys, spikeff; a = 'sklearn' in sys.modules; from spikeff import NotFittedError; "
            "print(a, NotFittedError.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "sklearn.exceptions"]


def test_readout_refit_schedule(digits, monkeypatch):
    """``readout_final_schedule``: the refit's learning rate per epoch follows the schedule (cosine:
    from readout_learning_rate down to 5 % of it); "constant" (default) keeps the config's hash."""
    from spikeff.readout import LinearReadout
    from spikeff.runs import config_hash
    X, y = digits.X_train[:80], digits.y_train[:80]
    net = FFNetwork(TINY.replace(readout_learning_rate=0.02)).fit(X, y)
    seen = []
    step = LinearReadout.step
    monkeypatch.setattr(LinearReadout, "step",
                        lambda self, F, yy, *a: seen.append(self.opt.lr) or step(self, F, yy, *a))
    net.fit_readout(X, y, epochs=3, batch_size=80)
    assert seen == [0.02] * 3
    seen.clear()
    cos = FFNetwork(TINY.replace(readout_learning_rate=0.02, readout_final_schedule="cosine")).fit(X, y)
    seen.clear()                                      # training's online readout steps: constant rate
    cos.fit_readout(X, y, epochs=3, batch_size=80)
    np.testing.assert_allclose(seen, [0.02, 0.02 * 0.525, 0.02 * 0.05])
    assert "readout_final_schedule" not in TINY.to_dict()
    assert config_hash(TINY) == config_hash(TINY.replace(readout_final_schedule="constant"))
    assert config_hash(TINY) != config_hash(TINY.replace(readout_final_schedule="cosine"))
    with pytest.raises(ConfigError, match="readout_final_schedule"):
        TINY.replace(readout_final_schedule="linear")


def test_readout_label_smoothing_step_is_the_gradient_of_the_smoothed_loss(digits, monkeypatch):
    """``readout_final_label_smoothing`` s: the refit's step follows the exact gradient of the
    cross-entropy against ``(1 - s) one_hot + s / C`` (central differences) and returns that loss;
    s = 0 is the plain step; the refit after the last epoch uses it (the online readout does not);
    off by default (same config hash); values outside [0, 1) are refused."""
    from spikeff.readout import LinearReadout, softmax
    from spikeff.runs import config_hash
    rng = np.random.default_rng(3)
    F, y, s = rng.normal(size=(12, 7)), rng.integers(0, 4, 12), 0.2

    def loss(W, b, s):
        logp = np.log(softmax(F @ W + b))
        T = np.full((12, 4), s / 4)
        T[np.arange(12), y] += 1 - s
        return -np.mean(np.sum(T * logp, axis=1))
    for smooth in (0.0, s):
        r = LinearReadout(7, 4, lr=0.1)
        r.W[...] = rng.normal(size=(7, 4))
        r.b[...] = rng.normal(size=4)
        W0, b0 = r.W.copy(), r.b.copy()
        grads = []
        monkeypatch.setattr(r.opt, "step", lambda params, g: grads.append([np.array(x) for x in g]))
        value = r.step(F, y, smooth)
        assert value == pytest.approx(loss(W0, b0, smooth), rel=1e-9)
        eps = 1e-6
        num = np.zeros_like(W0)
        for idx in np.ndindex(*W0.shape):
            Wp, Wm = W0.copy(), W0.copy()
            Wp[idx] += eps
            Wm[idx] -= eps
            num[idx] = (loss(Wp, b0, smooth) - loss(Wm, b0, smooth)) / (2 * eps)
        np.testing.assert_allclose(grads[0][0], num, rtol=1e-6, atol=1e-9)
        numb = [(loss(W0, b0 + eps * e, smooth) - loss(W0, b0 - eps * e, smooth)) / (2 * eps) for e in np.eye(4)]
        np.testing.assert_allclose(grads[0][1], numb, rtol=1e-6, atol=1e-9)
    X, yd = digits.X_train[:80], digits.y_train[:80]
    seen = []
    step = LinearReadout.step
    monkeypatch.setattr(LinearReadout, "step", lambda self, Fb, yb, ls=0.0: seen.append(ls) or step(self, Fb, yb, ls))
    cfg = TINY.replace(readout_final_epochs=2, readout_final_label_smoothing=0.1)
    net = FFNetwork(cfg).fit(X, yd)
    assert seen[:2] == [0.0, 0.0] and seen[-1] == 0.1       # online readout plain, the refit smoothed
    assert net.score(X, yd, method="readout") > 0.25      # chance: 0.1
    assert "readout_final_label_smoothing" not in TINY.to_dict()
    assert config_hash(TINY) == config_hash(TINY.replace(readout_final_label_smoothing=0.0))
    assert config_hash(TINY) != config_hash(cfg)
    for bad in (-0.1, 1.0, True, "0.1"):
        with pytest.raises(ConfigError, match="readout_final_label_smoothing"):
            TINY.replace(readout_final_label_smoothing=bad)


def test_readout_input_goodness_and_counts(digits, tmp_path):
    """``readout_input = "goodness_and_counts"``: the readout sees each layer's unit-normalised
    goodness, then each layer's unit-normalised spike counts of the same neutral-label pass; it
    trains, predicts and survives save/load; the default keeps the config's hash."""
    from spikeff.runs import config_hash
    X, y = digits.X_train[:80], digits.y_train[:80]
    cfg = TINY.replace(readout_input="goodness_and_counts", predict_method="readout")
    net = FFNetwork(cfg).fit(X, y)
    N = sum(cfg.hidden_sizes)
    assert net.readout_.W.shape == (2 * N, len(net.classes_))
    F = net.readout_features(X[:7], seed=3)
    assert F.shape == (7, 2 * N)
    # the same pass, by hand: goodness blocks, then count blocks, each of unit length per sample
    (n, src), = net.neutral_sources(X[:7], 3)
    res = net._run(src)
    blocks = list(res.neuron_goodness) + list(res.spike_counts)
    assert any(np.asarray(c).sum() > 0 for c in res.spike_counts)     # the counts carry something
    i = 0
    for b in blocks:
        b = np.asarray(b, np.float64)
        np.testing.assert_allclose(F[:, i:i + b.shape[1]], b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-8))
        i += b.shape[1]
    assert i == F.shape[1]
    pred = net.predict(X)
    net.save(tmp_path / "m.npz")
    back = FFNetwork.load(tmp_path / "m.npz")
    assert back.config.readout_input == "goodness_and_counts"
    np.testing.assert_array_equal(back.predict(X), pred)
    assert "readout_input" not in TINY.to_dict()
    assert config_hash(TINY) == config_hash(TINY.replace(readout_input="goodness"))
    assert config_hash(TINY) != config_hash(cfg)
    with pytest.raises(ConfigError, match="readout_input"):
        TINY.replace(readout_input="counts")
