"""FFNetwork: training lowers the FF loss, separates goodness, saves and loads exactly."""
import json

import numpy as np
import pytest

from spikeff import ConfigError, DataError, FFConfig, FFNetwork, NotFittedError, load_config
from spikeff.encoding import SpikeSource, overlay_labels
from spikeff.learning import ff_loss
from spikeff.negatives import hard_wrong_labels, random_wrong_labels


def _batch_loss(net, X, y, y_neg, seed):
    src_p = net._source(X, y, seed + [1])
    src_n = net._source(X, y_neg, seed + [2])
    gp, gn = net._run(src_p).goodness, net._run(src_n).goodness
    c = net.config
    return [ff_loss(a, b, c.loss, c.goodness_threshold, c.loss_sharpness)[0] for a, b in zip(gp, gn)]


def test_training_step_lowers_ff_loss_on_fixed_batch(small_config, digits):
    X, y = digits.X_train[:64], digits.y_train[:64]
    net = FFNetwork(small_config.replace(learning_rate=0.003)).initialize(64, 10)
    rng = np.random.default_rng(0)
    y_neg = random_wrong_labels(y, 10, rng)
    before = _batch_loss(net, X, y, y_neg, [9, 9])
    for _ in range(5):
        # same batch, same negatives, same input spikes: a plain optimisation check
        src_p, src_n = net._source(X, y, [9, 9, 1]), net._source(X, y_neg, [9, 9, 2])
        gp, gn = net._run(src_p).goodness, net._run(src_n).goodness
        mods = [ff_loss(a, b, "threshold", net.config.goodness_threshold, 1.0)[1:] for a, b in zip(gp, gn)]
        grads_p = net._run(src_p, modulators=[m[0] for m in mods]).grads
        grads_n = net._run(src_n, modulators=[m[1] for m in mods]).grads
        for l, opt in enumerate(net.optimizers_):
            opt.step([net.weights_[l], net.biases_[l]], [grads_p[l][0] + grads_n[l][0], 0 * net.biases_[l]])
    after = _batch_loss(net, X, y, y_neg, [9, 9])
    assert all(a < b for a, b in zip(after, before)), (before, after)


def test_positive_goodness_exceeds_negative_after_training(digits):
    cfg = FFConfig(hidden_sizes=(100, 100), n_steps=20, epochs=3, batch_size=32, label_repeat=3,
                   max_rate=1000.0, seed=1)
    net = FFNetwork(cfg).fit(digits.X_train[:600], digits.y_train[:600])
    X, y = digits.X_test[:100], digits.y_test[:100]
    y_neg = random_wrong_labels(y, 10, np.random.default_rng(5))
    g_pos = net.goodness(X, y).sum(axis=1)
    g_neg = net.goodness(X, y_neg).sum(axis=1)
    assert np.mean(g_pos > g_neg) > 0.8
    assert net.score(X, y) > 0.6


def test_save_load_round_trips_predictions_exactly(tmp_path, small_config, digits):
    net = FFNetwork(small_config).fit(digits.X_train[:200], digits.y_train[:200])
    p1 = net.predict(digits.X_test[:50])
    r1 = net.predict(digits.X_test[:50], method="readout")
    net.save(tmp_path / "m.npz")
    net2 = FFNetwork.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(p1, net2.predict(digits.X_test[:50]))
    np.testing.assert_array_equal(r1, net2.predict(digits.X_test[:50], method="readout"))
    for a, b in zip(net.weights_, net2.weights_):
        np.testing.assert_array_equal(a, b)
    assert net2.config == net.config
    assert net2.history_ == json.loads(json.dumps(net.history_))


def test_fit_is_deterministic(small_config, digits):
    a = FFNetwork(small_config).fit(digits.X_train[:100], digits.y_train[:100])
    b = FFNetwork(small_config).fit(digits.X_train[:100], digits.y_train[:100])
    for wa, wb in zip(a.weights_, b.weights_):
        np.testing.assert_array_equal(wa, wb)


def test_encodings_are_seeded_and_reproducible():
    x = np.random.default_rng(0).random((5, 30))
    for enc in ("rate", "regular", "latency"):
        a = SpikeSource(x, enc, 20, 1e-3, 500.0, seed=[1, 2]).all_steps()
        b = SpikeSource(x, enc, 20, 1e-3, 500.0, seed=[1, 2]).all_steps()
        np.testing.assert_array_equal(a, b)
        assert a.shape == (20, 5, 30) and a.sum() > 0
    r1 = SpikeSource(x, "rate", 20, 1e-3, 500.0, seed=1).all_steps()
    r2 = SpikeSource(x, "rate", 20, 1e-3, 500.0, seed=2).all_steps()
    assert not np.array_equal(r1, r2)
    # chunking does not change the spikes
    s = SpikeSource(x, "rate", 20, 1e-3, 500.0, seed=4)
    np.testing.assert_array_equal(np.concatenate(list(s.chunks(3))), s.all_steps())


def test_rate_code_follows_intensity():
    x = np.array([[0.0, 0.25, 1.0]])
    s = SpikeSource(np.repeat(x, 200, axis=0), "rate", 50, 1e-3, 1000.0, seed=0).all_steps()
    rates = s.mean(axis=(0, 1))
    np.testing.assert_allclose(rates, [0.0, 0.25, 1.0], atol=0.02)


def test_regular_code_is_the_rate_without_noise():
    x = np.array([[0.0, 0.1, 0.25, 0.5, 1.0]])
    s = SpikeSource(x, "regular", 10, 1e-3, 1000.0, seed=0).all_steps()[:, 0]
    assert s.sum(axis=0).tolist() == [0, 1, 3, 5, 10]                 # floor(p T + 1/2)
    assert np.flatnonzero(s[:, 3]).tolist() == [0, 2, 4, 6, 8]         # evenly spaced
    assert np.flatnonzero(s[:, 2]).tolist() == [1, 5, 9]
    other = SpikeSource(x, "regular", 10, 1e-3, 1000.0, seed=7)       # no noise: the seed does not matter
    np.testing.assert_array_equal(other.all_steps()[:, 0], s)
    buf, out = {}, []

    def buffer(k):
        buf["a"] = np.zeros((k, 1, 5), np.float32)
        return buf["a"]
    for _ in other.chunks_into(3, buffer):                             # the engine's way: the same spikes
        out.append(buf["a"].copy())
    np.testing.assert_array_equal(np.concatenate(out)[:, 0], s)
    long = SpikeSource(np.full((1, 1), 0.3), "regular", 1000, 1e-3, 1000.0, seed=0).all_steps()
    assert long.sum() == 300                                           # the rate, exactly


def test_latency_code_spikes_once_earlier_for_brighter():
    s = SpikeSource(np.array([[0.0, 0.5, 1.0]]), "latency", 11, 1e-3, 500.0, seed=0).all_steps()[:, 0]
    assert s.sum(axis=0).tolist() == [0, 1, 1]
    assert np.argmax(s[:, 2]) < np.argmax(s[:, 1])


def test_latency_period_repeats_the_pattern():
    x = np.array([[0.0, 0.5, 1.0]])
    s = SpikeSource(x, "latency", 12, 1e-3, 500.0, seed=0, latency_period=4).all_steps()[:, 0]
    assert s.sum(axis=0).tolist() == [0, 3, 3]
    np.testing.assert_array_equal(s[:4], s[4:8])
    np.testing.assert_array_equal(s[:4], s[8:])
    assert np.flatnonzero(s[:4, 2]).tolist() == [0] and np.flatnonzero(s[:4, 1]).tolist() == [2]
    # in chunks of any size: the same spikes
    chunks = np.concatenate(list(SpikeSource(x, "latency", 12, 1e-3, 500.0, seed=0, latency_period=4).chunks(5)))
    np.testing.assert_array_equal(chunks[:, 0], s)
    once = SpikeSource(x, "latency", 12, 1e-3, 500.0, seed=0).all_steps()[:, 0]
    assert once.sum(axis=0).tolist() == [0, 1, 1]


def test_latency_period_config_is_checked():
    from spikeff.config import ConfigError
    with pytest.raises(ConfigError, match="latency_period"):
        FFConfig(latency_period=-1)
    with pytest.raises(ConfigError, match="latency_period"):
        FFConfig(latency_period=2.5)


def test_shared_noise_rows_see_same_image_spikes():
    x = np.random.default_rng(0).random((2, 8))
    rows = overlay_labels(np.repeat(x, 3, axis=0), np.tile(np.arange(3), 2), 3)
    s = SpikeSource(rows, "rate", 10, 1e-3, 500.0, seed=0, rows_per_noise=3).all_steps()
    np.testing.assert_array_equal(s[:, 0, :8], s[:, 1, :8])
    np.testing.assert_array_equal(s[:, 3, :8], s[:, 5, :8])


def test_label_overlay_and_neutral():
    X = np.zeros((3, 2))
    out = overlay_labels(X, np.array([0, 2, -1]), 3, label_repeat=2, label_intensity=1.0)
    assert out.shape == (3, 8)
    np.testing.assert_allclose(out[0, 2:], [1, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(out[1, 2:], [0, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(out[2, 2:], [1 / 3] * 6)


def test_negative_labels_are_wrong():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 1000)
    assert np.all(random_wrong_labels(y, 10, rng) != y)
    scores = rng.normal(size=(1000, 10))
    scores[np.arange(1000), (y + 3) % 10] += 20   # one wrong label the model likes best
    hard = hard_wrong_labels(y, scores, rng)
    assert np.all(hard != y)
    assert np.mean(hard == (y + 3) % 10) > 0.95


def test_models_configs_load():
    for name in ("digits", "fashion_mnist"):
        cfg = load_config(f"models/{name}.toml")
        assert cfg.neuron.dt == pytest.approx(1e-3)


@pytest.mark.parametrize("changes, field", [
    ({"hidden_sizes": ()}, "hidden_sizes"), ({"hidden_sizes": (10, 0)}, "hidden_sizes"),
    ({"n_steps": 0}, "n_steps"), ({"goodness": "nope"}, "goodness"), ({"encoding": "morse"}, "encoding"),
    ({"learning_rate": -1.0}, "learning_rate"), ({"goodness_threshold": float("nan")}, "goodness_threshold"),
])
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        FFConfig(**changes)


@pytest.mark.parametrize("neuron, field", [
    ({"dt": "0 ms"}, "dt"), ({"tau_mem": "0.5 ms"}, "tau_mem"), ({"v_threshold": "inf mV"}, "v_threshold"),
    ({"tau_syn": "5 mV"}, "tau_syn"),
])
def test_bad_neuron_config_names_the_field(neuron, field):
    with pytest.raises((ConfigError, ValueError), match=field):
        FFConfig.from_dict({"neuron": neuron})


def test_bad_data_gets_clear_errors(small_config, digits):
    net = FFNetwork(small_config)
    with pytest.raises(DataError, match="NaN"):
        net.fit(np.full((4, 3), np.nan), np.zeros(4, int))
    with pytest.raises(DataError, match="labels"):
        net.fit(np.zeros((4, 3)), np.array([0, 1, 2, 0.5]))     # any sortable labels, but not 0.5
    with pytest.raises(NotFittedError):
        net.predict(np.zeros((2, 3)))
    net.fit(digits.X_train[:40], digits.y_train[:40])
    with pytest.raises(DataError, match="features"):
        net.predict(np.zeros((2, 5)))


def test_length_normalization_trains_and_export_refuses_it(small_config, digits):
    from spikeff.export import check_exportable
    net = FFNetwork(small_config.replace(normalization="length")).fit(digits.X_train[:100], digits.y_train[:100])
    assert np.all(np.isfinite(net.goodness(digits.X_test[:10], digits.y_test[:10])))
    with pytest.raises(ValueError, match="normalization"):
        check_exportable(net)
    with pytest.raises(ConfigError, match="normalization"):
        FFConfig(normalization="layer")
