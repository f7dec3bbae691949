"""The engine on other array-API namespaces (the GPU path, tested on CPU with array_api_strict)."""
import numpy as np
import pytest

from spikeff import FFConfig, NeuronConfig
from spikeff.backend import get_backend, namespace, to_backend, to_numpy
from spikeff.encoding import SpikeSource
from spikeff.engines.vectorized import run_phase
from spikeff.goodness import available_goodness, get_goodness
from spikeff.network import FFNetwork
from spikeff.neuron import DiscreteLIF

xps = pytest.importorskip("array_api_strict")
pytest.importorskip("array_api_compat")


def _other_device():
    try:
        return xps.Device("device1")
    except (TypeError, ValueError, AttributeError):
        pytest.skip("this array_api_strict has no non-default device (needs >= 2.2)")


def _net_inputs(rng, dtype=np.float64):
    W = [rng.normal(0, 0.6, (20, 15)).astype(dtype), rng.normal(0, 0.6, (10, 20)).astype(dtype)]
    b = [rng.normal(0, 0.05, 20).astype(dtype), rng.normal(0, 0.05, 10).astype(dtype)]
    src = SpikeSource(rng.random((4, 15)), "rate", 23, 1e-3, 500.0, seed=1, dtype=dtype)
    return W, b, src


@pytest.mark.parametrize("goodness_name", available_goodness())
@pytest.mark.parametrize("refractory", [0.0, 2e-3])
def test_strict_namespace_matches_numpy(goodness_name, refractory):
    rng = np.random.default_rng(0)
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=refractory))
    g = get_goodness(goodness_name)
    W, b, src = _net_inputs(rng)
    mods = [rng.normal(size=4), rng.normal(size=4)]
    ref = run_phase(W, b, lif, g, src, chunk_steps=5, modulators=mods, record=True)
    Wx = [to_backend(w, xps) for w in W]
    bx = [to_backend(v, xps) for v in b]
    assert namespace(*Wx) is not np
    res = run_phase(Wx, bx, lif, g, src, chunk_steps=5, modulators=mods, record=True)
    assert sum(int(c.sum()) for c in ref.spike_counts) > 20       # spiking, not only silence
    for l in range(2):
        np.testing.assert_allclose(res.goodness[l], ref.goodness[l], rtol=1e-12)
        np.testing.assert_array_equal(res.spike_counts[l], ref.spike_counts[l])
        np.testing.assert_array_equal(res.record["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(res.record["v"][l], ref.record["v"][l], atol=1e-12)
        assert namespace(res.grads[l][0]) is not np                # gradients stay on the backend
        np.testing.assert_allclose(to_numpy(res.grads[l][0]), ref.grads[l][0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(to_numpy(res.grads[l][1]), ref.grads[l][1], rtol=1e-10, atol=1e-14)


def test_float32_on_strict_namespace():
    rng = np.random.default_rng(1)
    lif = DiscreteLIF.from_config(NeuronConfig())
    W, b, src = _net_inputs(rng, np.float32)
    ref = run_phase(W, b, lif, get_goodness("energy_relu"), src, chunk_steps=7)
    res = run_phase([to_backend(w, xps) for w in W], [to_backend(v, xps) for v in b], lif,
                    get_goodness("energy_relu"), src, chunk_steps=7)
    for l in range(2):
        np.testing.assert_allclose(res.goodness[l], ref.goodness[l], rtol=1e-4)


def test_network_backend_trains_like_numpy(tmp_path, small_config, digits):
    X, y = digits.X_train[:32], digits.y_train[:32]
    nets = {}
    for backend in ("numpy", "array_api_strict"):
        net = FFNetwork(small_config, backend=backend).initialize(X.shape[1], 10)
        out = net.train_batch(X, y, seed=[0, 1])
        nets[backend] = (net, out)
    (a, oa), (b, ob) = nets["numpy"], nets["array_api_strict"]
    assert namespace(b.weights_[0]) is not np
    np.testing.assert_allclose(oa["loss"], ob["loss"], rtol=1e-10)
    for Wa, Wb in zip(a.weights_, b.weights_):
        np.testing.assert_allclose(to_numpy(Wb), Wa, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a.predict(X[:8]), b.predict(X[:8]))
    b.save(tmp_path / "m.npz")
    c = FFNetwork.load(tmp_path / "m.npz")
    assert namespace(c.weights_[0]) is not np
    np.testing.assert_array_equal(to_numpy(c.weights_[0]), to_numpy(b.weights_[0]))


def test_missing_backend_gives_clear_error():
    for name in ("cupy", "torch"):
        try:
            __import__(name)
        except ModuleNotFoundError:
            with pytest.raises(ImportError, match=f"backend {name!r} is not installed"):
                get_backend(name)
    with pytest.raises(ValueError, match="backend"):
        get_backend("nope")


def test_config_backend_field_is_checked():
    from spikeff.config import ConfigError
    assert FFConfig().backend == "numpy"
    with pytest.raises(ConfigError, match="backend"):
        FFConfig(backend="tensorflow")


def test_everything_runs_on_the_weights_device():
    """A GPU path: every buffer, filter, modulator and input chunk is put on the weights' device.
    array_api_strict refuses to mix devices, so its non-default device stands in for a GPU."""
    from spikeff.backend import device_of
    from spikeff.engines.vectorized import grads_from_store
    dev = _other_device()
    assert dev != xps.Device("CPU_DEVICE")
    rng = np.random.default_rng(2)
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=2e-3))
    g = get_goodness("energy_relu")
    W, b, src = _net_inputs(rng)
    Wx = [xps.asarray(w, device=dev) for w in W]
    bx = [xps.asarray(v, device=dev) for v in b]
    mods = [rng.normal(size=4), rng.normal(size=4)]
    ref = run_phase(W, b, lif, g, src, chunk_steps=5, modulators=mods)
    replay = run_phase(Wx, bx, lif, g, src, chunk_steps=5, modulators=mods)
    first = run_phase(Wx, bx, lif, g, src, chunk_steps=5, keep=slice(None))
    stored = grads_from_store(first.stored, mods)
    for l in range(2):
        for grads in (replay.grads, stored):
            assert device_of(grads[l][0]) == dev and device_of(grads[l][1]) == dev
            np.testing.assert_allclose(to_numpy(grads[l][0]), ref.grads[l][0], rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(to_numpy(stored[l][0]), to_numpy(replay.grads[l][0]))
        np.testing.assert_allclose(first.goodness[l], ref.goodness[l], rtol=1e-12)
    # length normalisation between layers on the device too
    run_phase(Wx, bx, lif, g, src, chunk_steps=5, normalize=True)


def test_network_trains_on_the_weights_device(small_config, digits):
    """FFNetwork with weights (and optimizer state) on array_api_strict's non-default device."""
    from spikeff.backend import device_of
    from spikeff.learning import make_optimizer
    X, y = digits.X_train[:32], digits.y_train[:32]
    dev = _other_device()
    ref = FFNetwork(small_config, learn_bias=True).initialize(X.shape[1], 10)
    net = FFNetwork(small_config, backend="array_api_strict", learn_bias=True).initialize(X.shape[1], 10)
    net.weights_ = [xps.asarray(np.array(to_numpy(w)), device=dev) for w in net.weights_]
    net.biases_ = [xps.asarray(np.array(to_numpy(v)), device=dev) for v in net.biases_]
    net.optimizers_ = [make_optimizer(small_config.optimizer, [w, v], small_config.learning_rate)
                       for w, v in zip(net.weights_, net.biases_)]
    oa, ob = ref.train_batch(X, y, seed=[0, 1]), net.train_batch(X, y, seed=[0, 1])
    assert ob["update"] == "store"
    np.testing.assert_allclose(ob["loss"], oa["loss"], rtol=1e-10)
    for Wa, Wb in zip(ref.weights_, net.weights_):
        assert device_of(Wb) == dev
        np.testing.assert_allclose(to_numpy(Wb), Wa, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(net.predict(X[:8]), ref.predict(X[:8]))
    np.testing.assert_array_equal(net.predict(X[:8], "readout"), ref.predict(X[:8], "readout"))
