"""Store or replay: the update from the first pass's kept learning factors equals the replay's."""
import numpy as np
import pytest

from spikeff import FFConfig, NeuronConfig
from spikeff.encoding import ConcatSource, SpikeSource
from spikeff.engines.vectorized import grads_from_store, run_phase, store_bytes
from spikeff.goodness import available_goodness, get_goodness
from spikeff.network import FFNetwork
from spikeff.neuron import DiscreteLIF


def _inputs(rng, dtype, n_sources=2, B=4, T=23):
    W = [rng.normal(0, 0.6, (20, 15)).astype(dtype), rng.normal(0, 0.6, (10, 20)).astype(dtype)]
    b = [rng.normal(0, 0.05, 20).astype(dtype), rng.normal(0, 0.05, 10).astype(dtype)]
    srcs = [SpikeSource(rng.random((B, 15)), "rate", T, 1e-3, 500.0, seed=i, dtype=dtype)
            for i in range(n_sources)]
    return W, b, srcs


@pytest.mark.parametrize("goodness_name", available_goodness())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("refractory", [0.0, 2e-3])
def test_store_equals_replay_bitwise(goodness_name, dtype, refractory):
    rng = np.random.default_rng(0)
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=refractory))
    g = get_goodness(goodness_name)
    W, b, srcs = _inputs(rng, dtype)
    both = ConcatSource(srcs)
    mods = [rng.normal(size=8), rng.normal(size=8)]
    first = run_phase(W, b, lif, g, both, 5, keep=slice(None))      # 23 steps: chunks 5,5,5,5,3
    replay = run_phase(W, b, lif, g, both, 5, modulators=mods)
    stored = grads_from_store(first.stored, mods)
    plain = run_phase(W, b, lif, g, both, 5)
    assert sum(int(c.sum()) for c in first.spike_counts) > 20       # spiking, not only silence
    for l in range(2):
        np.testing.assert_array_equal(stored[l][0], replay.grads[l][0])
        np.testing.assert_array_equal(stored[l][1], replay.grads[l][1])
        assert stored[l][0].dtype == dtype and np.any(stored[l][0] != 0)
        # keeping the factors does not change the phase itself
        np.testing.assert_array_equal(first.goodness[l], plain.goodness[l])
        np.testing.assert_array_equal(first.spike_counts[l], plain.spike_counts[l])
    assert first.stored.nbytes == store_bytes(W, 8, 23) == 23 * 8 * (35 + 30) * np.dtype(dtype).itemsize


def test_store_of_some_rows_matches_replay_of_those_rows():
    """Kept rows inside a larger batch (the neutral rows beside the positive and negative ones):
    float64 is bit-identical; float32 GEMMs of another batch size may round differently (BLAS
    blocking), so there the stored update is the exact gradient of the first pass's own v."""
    rng = np.random.default_rng(1)
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    for dtype, check in ((np.float64, np.testing.assert_array_equal),
                         (np.float32, lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6))):
        W, b, srcs = _inputs(rng, dtype, n_sources=3)
        first = run_phase(W, b, lif, g, ConcatSource(srcs), 5, keep=slice(4, 12))
        mods = [rng.normal(size=8), None]          # the second layer does not learn
        stored = grads_from_store(first.stored, mods)
        replay = run_phase(W, b, lif, g, ConcatSource(srcs[1:]), 5, modulators=mods).grads
        assert stored[1] is None and replay[1] is None
        check(stored[0][0], replay[0][0])
        check(stored[0][1], replay[0][1])


def test_store_rejects_bad_input():
    rng = np.random.default_rng(2)
    lif = DiscreteLIF.from_config(NeuronConfig())
    W, b, srcs = _inputs(rng, np.float64)
    with pytest.raises(TypeError, match="keep must be a slice"):
        run_phase(W, b, lif, get_goodness("energy"), srcs[0], 5, keep=[0, 1])
    res = run_phase(W, b, lif, get_goodness("energy"), srcs[0], 5, keep=slice(None))
    with pytest.raises(ValueError, match=r"modulators must have shape \(4,\)"):
        grads_from_store(res.stored, [np.ones(3), np.ones(4)])
    grads_from_store(res.stored, [np.ones(4), np.ones(4)])
    with pytest.raises(RuntimeError, match="already used"):
        grads_from_store(res.stored, [np.ones(4), np.ones(4)])
    with pytest.raises(ValueError, match="store_budget_mb"):
        FFNetwork(store_budget_mb=-1)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("negatives", ["readout_hard", "random"])
def test_training_with_store_equals_replay(small_config, digits, negatives, shared):
    """Whole training steps (Adam, bias, readout, hard negatives; phases with their own input
    spikes or the same ones): same weights with either update."""
    X, y = digits.X_train[:64], digits.y_train[:64]
    cfg = small_config.replace(learn_bias=True, negatives=negatives, shared_input_noise=shared)
    nets = {}
    for budget in (0, 1024):
        net = FFNetwork(cfg, store_budget_mb=budget).initialize(X.shape[1], 10)
        modes = {net.train_batch(X[i:i + 32], y[i:i + 32], seed=[0, i])["update"] for i in (0, 32)}
        assert modes == {"replay" if budget == 0 else "store"}
        nets[budget] = net
    for Wa, Wb, ba, bb in zip(nets[0].weights_, nets[1024].weights_, nets[0].biases_, nets[1024].biases_):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


def test_store_budget_decides(monkeypatch):
    cfg = FFConfig(hidden_sizes=(100, 50), n_steps=200)
    net = FFNetwork(cfg, store_budget_mb=1.0).initialize(30, 3)
    # T x 2B x sum(N + M) float32: 200 x 2 x ((33 + 100) + (100 + 50)) x 4 bytes = 0.43 MiB for B = 1
    assert net.store_fits(2) and not net.store_fits(6)
    assert not FFNetwork(cfg, store_budget_mb=0).initialize(30, 3).store_fits(1)
    # a run-time setting (like the thread counts), not part of the model's config
    assert "store_budget_mb" not in cfg.to_dict()
    assert FFNetwork(cfg).store_budget_mb == 1024
    monkeypatch.setenv("SPIKEFF_STORE_BUDGET_MB", "0")
    assert FFNetwork(cfg).store_budget_mb == 0 and FFNetwork(cfg, store_budget_mb=5).store_budget_mb == 5
    monkeypatch.setenv("SPIKEFF_STORE_BUDGET_MB", "lots")
    with pytest.raises(ValueError, match="SPIKEFF_STORE_BUDGET_MB"):
        FFNetwork(cfg).store_budget_mb


@pytest.mark.parametrize("negatives,encoding", [("readout_hard", "rate"), ("random", "rate"),
                                                ("readout_hard", "regular")])
def test_shared_input_noise_in_training(small_config, digits, monkeypatch, negatives, encoding):
    """``shared_input_noise``: every phase of a batch sees the same image spikes (only the label
    channels differ), and the engine's once-per-sample image current and update give the weights
    of the plain GEMMs on those spikes (float64, two steps: to 1e-9), with the rate code and with
    the regular code (the same spikes in every phase anyway); off, the config and its hash are the
    same as before the option existed."""
    import spikeff.engines.vectorized as vec
    from spikeff.runs import config_hash
    assert "shared_input_noise" not in small_config.to_dict()
    assert config_hash(small_config) == config_hash(small_config.replace(shared_input_noise=False))
    assert config_hash(small_config) != config_hash(small_config.replace(shared_input_noise=True))
    X, y = digits.X_train[:64], digits.y_train[:64]
    cfg = small_config.replace(negatives=negatives, shared_input_noise=True, encoding=encoding)
    seen, weights, shared_calls = [], {}, []
    real, real_shared = vec.run_phase, vec._shared_currents
    monkeypatch.setattr(vec, "_shared_currents", lambda *a: shared_calls.append(1) or real_shared(*a))
    for plain in (False, True):
        def engine(W, b, lif, g, source, *a, plain=plain, **kw):
            seen.append(source.all_steps())
            if plain:          # the same spikes, without the engine knowing they are shared
                source = ConcatSource(list(getattr(source, "sources", [source])))
            return real(W, b, lif, g, source, *a, **kw)
        net = FFNetwork(cfg).initialize(X.shape[1], 10)
        start = [w.copy() for w in net.weights_]
        monkeypatch.setattr(net, "_engine", lambda: engine)
        for i in (0, 32):
            net.train_batch(X[i:i + 32], y[i:i + 32], seed=[0, i])
        weights[plain] = [w.copy() for w in net.weights_]
        if not plain:
            assert shared_calls                     # the engine took the shared path
    n = X.shape[1]
    first = np.concatenate(seen[:2], axis=1) if negatives == "readout_hard" else seen[0]
    assert first.shape[1] == 3 * 32
    for p in (1, 2):                   # neutral, positive, negative: the same image spikes
        np.testing.assert_array_equal(first[:, p * 32:(p + 1) * 32, :n], first[:, :32, :n])
    assert not np.array_equal(first[:, 32:64, n:], first[:, 64:, n:])
    for a, b, w0 in zip(weights[False], weights[True], start):
        assert np.abs(a - w0).max() > 1e-3                 # trained
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
