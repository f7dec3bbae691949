"""Convolutional layers: geometry, the conv engine against the dense engine on the equivalent dense
expansion, the local rule against finite differences, config and network."""
import json

import numpy as np
import pytest

from spikeff import FFConfig, FFNetwork, NeuronConfig
from spikeff.config import ConfigError, load_config
from spikeff.encoding import SpikeSource
from spikeff.engines.conv import conv_currents, run_phase as conv_run_phase
from spikeff.engines.vectorized import run_phase as dense_run_phase
from spikeff.goodness import get_goodness
from spikeff.layers import (LayerError, LayerSpec, conv_matrix, dense_expansion, expand_bias, im2col,
                            layer_geometries)
from spikeff.neuron import DiscreteLIF

SPECS = [LayerSpec("conv", channels=3, kernel=3, padding=1, pool=2),
         LayerSpec("conv", channels=4, kernel=3, stride=2, padding=1),
         LayerSpec("dense", size=5)]


def small_net(rng, scale=0.8, specs=SPECS, shape=(2, 8, 8), n_global=3):
    geos = layer_geometries(specs, shape, int(np.prod(shape)) + n_global)
    W = [rng.normal(0, scale, g.weight_shape) for g in geos]
    b = [rng.normal(0, 0.05, g.weight_shape[0]) for g in geos]
    return geos, W, b



def assert_matches_finite_differences(objective, W, b, dW, db, eps=1e-6):
    """``dW``, ``db`` equal the central finite differences of ``objective(W, b)``."""
    num = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += eps
        Wm[idx] -= eps
        num[idx] = (objective(Wp, b) - objective(Wm, b)) / (2 * eps)
    np.testing.assert_allclose(dW, num, rtol=1e-5, atol=1e-9)
    numb = np.array([(objective(W, b + eps * e) - objective(W, b - eps * e)) / (2 * eps)
                     for e in np.eye(len(b))])
    np.testing.assert_allclose(db, numb, rtol=1e-5, atol=1e-9)

def test_geometry_and_conv_matrix_match_a_direct_convolution():
    rng = np.random.default_rng(0)
    geo = layer_geometries([LayerSpec("conv", channels=2, kernel=3, stride=2, padding=1)], (2, 7, 7), 98 + 1)[0]
    assert geo.out_shape == (2, 4, 4) and geo.weight_shape == (2, 2 * 9 + 16 * 1) and geo.fan_in == 19
    W = rng.normal(size=geo.weight_shape)
    x = rng.normal(size=99)
    img = np.pad(x[:98].reshape(2, 7, 7), ((0, 0), (1, 1), (1, 1)))
    K = W[:, :18].reshape(2, 2, 3, 3)
    label_map = W[:, 18:].reshape(2, 4, 4)            # one weight per (channel, position) for the label
    conv = np.array([[[np.sum(K[o] * img[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3]) for j in range(4)]
                      for i in range(4)] for o in range(2)])
    direct = conv + label_map * x[98]
    np.testing.assert_allclose(conv_matrix(W, geo) @ x, direct.ravel(), rtol=1e-12)
    np.testing.assert_allclose(conv_currents(x[None], W, geo)[0], direct.ravel(), rtol=1e-12)
    np.testing.assert_allclose((im2col(x[None], geo) @ W[:, :18].T).T.ravel(), conv.ravel(), rtol=1e-12)


def test_conv_engine_equals_dense_engine_on_the_expansion():
    rng = np.random.default_rng(1)
    geos, W, b = small_net(rng)
    lif = DiscreteLIF.from_config(NeuronConfig())
    src = SpikeSource(rng.random((4, geos[0].n_in)), "rate", 17, 1e-3, 500.0, seed=1, dtype=np.float64)
    g = get_goodness("energy_relu")
    a = conv_run_phase(W, b, lif, g, src, 5, record=True, geometries=geos)
    d = dense_run_phase(dense_expansion(W, geos), [expand_bias(x, gg) for x, gg in zip(b, geos)],
                        lif, g, src, 5, record=True)
    for l in range(3):
        np.testing.assert_array_equal(a.record["spikes"][l], d.record["spikes"][l])
        np.testing.assert_allclose(a.record["v"][l], d.record["v"][l], atol=1e-10)
        np.testing.assert_allclose(a.goodness[l], d.goodness[l], rtol=1e-10)
        assert a.spike_counts[l].sum() > 20          # compared while spiking, not in silence


def test_chunk_and_block_size_do_not_change_the_conv_gradient(monkeypatch):
    rng = np.random.default_rng(2)
    geos, W, b = small_net(rng)
    lif = DiscreteLIF.from_config(NeuronConfig())
    src = SpikeSource(rng.random((3, geos[0].n_in)), "rate", 13, 1e-3, 500.0, seed=2, dtype=np.float64)
    mods = [rng.normal(size=3) for _ in geos]
    g = get_goodness("energy_relu")
    a = conv_run_phase(W, b, lif, g, src, 13, modulators=mods, geometries=geos)
    import spikeff.engines.conv as conv
    monkeypatch.setattr(conv, "MAX_ELEMENTS", 100)    # many im2col blocks
    monkeypatch.setattr(conv, "NEURON_BLOCK", 1)      # elementwise work one row at a time
    monkeypatch.setattr(conv.conv_currents, "__defaults__", (np, 100))
    monkeypatch.setattr(conv.conv_kernel_grad, "__defaults__", (np, 100))
    c = conv_run_phase(W, b, lif, g, src, 4, modulators=mods, geometries=geos)
    for l in range(3):
        np.testing.assert_allclose(a.goodness[l], c.goodness[l], rtol=1e-12)
        np.testing.assert_allclose(a.grads[l][0], c.grads[l][0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(a.grads[l][1], c.grads[l][1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("goodness_name", ["energy_relu", "energy"])
def test_conv_local_rule_is_exact_gradient_subthreshold(goodness_name):
    """Threshold out of reach: the shared-kernel rule (im2col of the traces) equals dG/dW, for the
    kernels, the label (global) weights and the per-channel bias, checked by finite differences."""
    rng = np.random.default_rng(3)
    specs = [LayerSpec("conv", channels=2, kernel=3, stride=1, padding=1, pool=2)]
    geos, W, b = small_net(rng, 0.5, specs, shape=(1, 6, 6), n_global=2)
    W[0] += 0.1
    lif = DiscreteLIF.from_config(NeuronConfig(v_threshold=1e9))
    g = get_goodness(goodness_name)
    src = SpikeSource(rng.random((3, geos[0].n_in)), "rate", 9, 1e-3, 500.0, seed=3, dtype=np.float64)
    m = rng.normal(size=3)

    def objective(Wx, bx):
        return float(m @ conv_run_phase([Wx], [bx], lif, g, src, 4, geometries=geos).goodness[0])

    dW, db = conv_run_phase(W, b, lif, g, src, 4, modulators=[m], geometries=geos).grads[0]
    assert np.abs(dW).max() > 1e-6
    assert_matches_finite_differences(objective, W[0], b[0], dW, db)


def test_local_rule_of_a_layer_above_a_pooled_conv_layer():
    """The layer above a sum-pooled conv layer learns from traces of the pooled spikes: exact."""
    rng = np.random.default_rng(4)
    specs = [LayerSpec("conv", channels=2, kernel=3, padding=1, pool=2),
             LayerSpec("conv", channels=2, kernel=2, stride=1)]
    geos, W, b = small_net(rng, 1.0, specs, shape=(1, 6, 6), n_global=0)
    W[1] *= 0.01                                   # layer 2 subthreshold, layer 1 spiking
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    src = SpikeSource(rng.random((2, 36)), "rate", 10, 1e-3, 800.0, seed=5, dtype=np.float64)
    m = [None, rng.normal(size=2)]
    res = conv_run_phase(W, [None, None], lif, g, src, 3, modulators=m, geometries=geos)
    assert res.spike_counts[0].sum() > 10 and res.spike_counts[1].sum() == 0

    def f(W2):
        return float(m[1] @ conv_run_phase([W[0], W2], [None, None], lif, g, src, 3, geometries=geos).goodness[1])
    num = np.zeros_like(W[1])
    for idx in np.ndindex(*W[1].shape):
        Wp, Wm = W[1].copy(), W[1].copy()
        Wp[idx] += 1e-6
        Wm[idx] -= 1e-6
        num[idx] = (f(Wp) - f(Wm)) / 2e-6
    np.testing.assert_allclose(res.grads[1][0], num, rtol=1e-5, atol=1e-10)


def test_bad_layers_give_clear_errors():
    with pytest.raises(LayerError, match="kind"):
        LayerSpec("pool")
    with pytest.raises(LayerError, match="channels"):
        LayerSpec("conv", kernel=3)
    with pytest.raises(LayerError, match="pool 3 does not divide"):
        layer_geometries([LayerSpec("conv", channels=2, kernel=3, pool=3)], (1, 6, 6), 36)
    with pytest.raises(LayerError, match="input_shape"):
        layer_geometries([LayerSpec("dense", size=4), LayerSpec("conv", channels=2, kernel=3)], (1, 6, 6), 36)


# -- config and network -------------------------------------------------------------------------------
CONV_LAYERS = [{"kind": "conv", "channels": 4, "kernel": 3, "padding": 1, "pool": 2},
               {"kind": "dense", "size": 30}]


def conv_config(**kw):
    base = dict(layers=CONV_LAYERS, input_shape=(1, 8, 8), n_steps=12, epochs=3, batch_size=32,
                dtype="float64", seed=3, eval_batch_size=60, chunk_steps=5)
    base.update(kw)
    return FFConfig(**base)


@pytest.fixture(scope="module")
def conv_net(digits):
    return FFNetwork(conv_config()).fit(digits.X_train[:300], digits.y_train[:300], n_classes=10)


def test_config_layers_toml_and_dense_configs_unchanged(tmp_path):
    c = conv_config()
    assert c.hidden_sizes == (4 * 8 * 8, 30) and c.has_conv
    assert FFConfig.from_dict(c.to_dict()) == c
    path = tmp_path / "conv.toml"
    path.write_text('[network]\ninput_shape = [1, 8, 8]\n\n[[layers]]\nkind = "conv"\nchannels = 4\n'
                    'kernel = 3\npadding = 1\npool = 2\n\n[[layers]]\nkind = "dense"\nsize = 30\n')
    assert load_config(path).layers == c.layers
    d = FFConfig(hidden_sizes=(20, 10)).to_dict()          # dense-only: no new keys, same config hash
    assert "layers" not in d and "input_shape" not in d and not FFConfig().has_conv
    with pytest.raises(ConfigError, match="input_shape"):
        FFConfig(layers=CONV_LAYERS)
    with pytest.raises(ConfigError, match="conflicts"):
        conv_config(hidden_sizes=(7, 7))
    with pytest.raises(ConfigError, match="unknown keys"):
        conv_config(layers=[{"kind": "conv", "channels": 2, "kernel": 3, "filters": 2}])
    with pytest.raises(ConfigError, match="does not divide"):
        conv_config(layers=[{"kind": "conv", "channels": 2, "kernel": 2, "pool": 2}])


def test_conv_network_trains_saves_and_equals_its_dense_network(conv_net, digits, tmp_path):
    from spikeff import FFNetwork as F
    net = conv_net
    assert net.weights_[0].shape == (4, 9 + 64 * 10) and net.biases_[0].shape == (4,)
    X, y = digits.X_test[:40], digits.y_test[:40]
    assert net.score(digits.X_test[:200], digits.y_test[:200], method="readout") > 0.3   # chance: 0.1 (0.45 seen)
    net.save(tmp_path / "m.npz")
    back = F.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.goodness(X[:5], y[:5]), net.goodness(X[:5], y[:5]))
    a = net.simulate(X[:4], y[:4], seed=5)
    d = net.dense_network().simulate(X[:4], y[:4], seed=5)
    for l in range(2):
        assert a.record["spikes"][l].sum() > 20
        np.testing.assert_array_equal(a.record["spikes"][l], d.record["spikes"][l])
        np.testing.assert_allclose(a.record["v"][l], d.record["v"][l], atol=1e-10)


def test_simulate_spikes_on_a_conv_net_takes_image_and_label_channels(conv_net, digits):
    X, y = digits.X_test[:3], digits.y_test[:3]
    ref = conv_net.simulate(X, y, seed=4)
    assert ref.record["input"].shape[2] == 64 + 10                      # 8x8 image + 10 labels
    got = conv_net.simulate_spikes(ref.record["input"])
    for l in range(2):
        np.testing.assert_array_equal(got.record["spikes"][l], ref.record["spikes"][l])
    with pytest.raises(ValueError, match=r"\(T, batch, 74\)"):
        conv_net.simulate_spikes(ref.record["input"][:, :, :-1])


def test_brian2_engine_on_a_conv_net(conv_net, digits):
    pytest.importorskip("brian2", reason="brian2 is not installed")
    X, y = digits.X_test[:3], digits.y_test[:3]
    ref = conv_net.simulate(X, y, seed=2)
    b2 = FFNetwork(conv_net.config.replace(engine="brian2"))
    for k in ("n_features_in_", "n_classes_", "weights_", "biases_", "readout_", "epochs_done_"):
        setattr(b2, k, getattr(conv_net, k))
    got = b2.simulate(X, y, seed=2)
    for l in range(2):
        assert ref.record["spikes"][l].sum() > 20
        np.testing.assert_array_equal(got.record["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(got.record["v"][l], ref.record["v"][l], rtol=0, atol=1e-9)
        np.testing.assert_allclose(got.goodness[l], ref.goodness[l], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="without learning"):
        b2.train_batch(X, y, seed=[0])


@pytest.mark.lava
def test_lava_float_spikes_identical_on_a_conv_net(conv_net, digits):
    from spikeff.export import lava as lx
    if not lx.lava_available():
        pytest.skip("lava-nc is not installed (pip install spikeff[lava])")
    X, y = digits.X_test[:2], digits.y_test[:2]
    ref = conv_net.simulate(np.r_[X, X], np.r_[y, (y + 1) % 10], seed=11)
    got = lx.simulate(conv_net, ref.record["input"], mode="floating_pt", backend="lava")
    for l in range(2):
        assert ref.record["spikes"][l].sum() > 20, "test needs a spiking layer"
        np.testing.assert_array_equal(got["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(got["v"][l], ref.record["v"][l], rtol=0, atol=1e-10)


def test_nir_export_of_a_conv_net(conv_net, tmp_path):
    nir = pytest.importorskip("nir", reason="nir is not installed (pip install spikeff[nir])")
    from scipy.signal import correlate
    from spikeff.export.nir import export_nir
    from spikeff.layers import pool_spikes
    path = tmp_path / "conv.nir"
    export_nir(conv_net, path)
    g = nir.read(str(path), type_check=False)       # the label path: flat (N,) into (C, H, W)
    kinds = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert kinds == {"input": "Input", "conv0": "Conv2d", "lif0": "CubaLIF", "label": "Input", "label_fc0": "Linear",
                     "pool0": "SumPool2d", "flatten1": "Flatten", "fc1": "Linear", "lif1": "CubaLIF", "output": "Output"}
    assert set(map(tuple, g.edges)) == {("input", "conv0"), ("conv0", "lif0"), ("label", "label_fc0"),
                                        ("label_fc0", "lif0"), ("lif0", "pool0"), ("pool0", "flatten1"),
                                        ("flatten1", "fc1"), ("fc1", "lif1"), ("lif1", "output")}
    geo0, geo1 = conv_net.geometries
    # the graph's nodes compute what spikeff computes: conv + label map, sum pooling, flatten, linear
    rng = np.random.default_rng(0)
    x = (rng.random(geo0.n_in) < 0.3).astype(float)
    conv, lab = g.nodes["conv0"], g.nodes["label_fc0"]
    img = np.pad(x[:64].reshape(1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    assert tuple(conv.padding) == (1, 1) and tuple(conv.stride) == (1, 1)
    cur = np.stack([correlate(img, conv.weight[o], mode="valid")[0] for o in range(4)]).ravel()
    cur += lab.weight @ x[64:]
    np.testing.assert_allclose(cur, conv_currents(x[None], conv_net.weights_[0], geo0)[0], atol=1e-12)
    s = (rng.random(geo0.n_neurons) < 0.5).astype(float)
    q = g.nodes["pool0"].kernel_size
    pooled = s.reshape(4, 4, q[0], 4, q[1]).sum(axis=(2, 4))
    np.testing.assert_array_equal(pooled.ravel(), pool_spikes(s[None], geo0)[0])
    assert tuple(g.nodes["flatten1"].output_type["output"]) == (64,) and g.nodes["flatten1"].start_dim == 0
    np.testing.assert_array_equal(g.nodes["fc1"].weight, conv_net.weights_[1])
    assert g.nodes["lif0"].tau_mem.shape == (4, 8, 8)
    assert json.loads(g.metadata["layers"])[0]["kind"] == "conv"


def test_conv_plots(conv_net, digits, tmp_path):
    from spikeff.plot import plot_conv_kernels, plot_raster_phases
    fig = plot_conv_kernels(conv_net.weights_[0], conv_net.geometries[0], path=tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 1000 and len(fig.axes) == 4
    with pytest.raises(ValueError, match="channel"):
        plot_conv_kernels(conv_net.weights_[0], conv_net.geometries[0], channel=1)
    rec = conv_net.simulate(digits.X_test[:1], labels=digits.y_test[:1], seed=1)
    s = rec.record["spikes"][0][:, 0]                     # conv layer: (T, channels * H * W)
    assert s.shape == (12, 256)
    plot_raster_phases(s, s, path=tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000


@pytest.mark.parametrize("per_channel", [False, True])
def test_conv_engine_on_the_array_api_path_matches_numpy(per_channel):
    """The GPU path (any array-API namespace; here array_api_strict on CPU): same spikes,
    potentials and gradients as numpy, refractory period included; also with per-(sample,
    channel) modulators on the conv layers (goodness_scope = "channel")."""
    xps = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")
    from spikeff.backend import namespace, to_backend, to_numpy
    rng = np.random.default_rng(6)
    geos, W, b = small_net(rng)
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=2e-3))
    src = SpikeSource(rng.random((3, geos[0].n_in)), "rate", 11, 1e-3, 500.0, seed=4, dtype=np.float64)
    mods = [rng.normal(size=3) for _ in geos]
    if per_channel:
        mods = [rng.normal(size=(3, geo.spec.channels)) if geo.is_conv else m for m, geo in zip(mods, geos)]
    g = get_goodness("energy_relu")
    ref = conv_run_phase(W, b, lif, g, src, 4, modulators=mods, record=True, geometries=geos)
    Wx, bx = [to_backend(w, xps) for w in W], [to_backend(v, xps) for v in b]
    res = conv_run_phase(Wx, bx, lif, g, src, 4, modulators=mods, record=True, geometries=geos)
    for l in range(3):
        assert ref.spike_counts[l].sum() > 10
        np.testing.assert_array_equal(res.record["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(res.record["v"][l], ref.record["v"][l], atol=1e-12)
        assert namespace(res.grads[l][0]) is not np
        np.testing.assert_allclose(to_numpy(res.grads[l][0]), ref.grads[l][0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(to_numpy(res.grads[l][1]), ref.grads[l][1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("max_elements", [1 << 23, 50])
def test_numpy_fast_path_equals_the_reference(max_elements):
    """The numpy fast path (patches with the positions last, wide GEMMs, reused buffers, row blocks)
    equals the reference im2col GEMMs (conv_currents / conv_kernel_grad) to float rounding: stride,
    padding, label maps, a layer above a pooled one, and one row block or many."""
    from spikeff.engines.conv import conv_kernel_grad
    from spikeff.engines.conv_numpy import conv_currents_np, conv_kernel_grad_np, patches_t
    rng = np.random.default_rng(7)
    geos, W, _ = small_net(rng)
    for geo, Wl in zip(geos[:2], W[:2]):
        X = rng.random((7, geo.n_in))
        post = rng.normal(size=(7, geo.n_neurons))
        P = geo.n_positions
        cols = patches_t(X, geo, np.empty((geo.n_kernel, 7 * P)))
        np.testing.assert_array_equal(cols, im2col(X, geo).T)
        out = np.full((7, geo.n_neurons), np.nan)
        conv_currents_np(X, Wl, geo, out, max_elements)
        np.testing.assert_allclose(out, conv_currents(X, Wl, geo), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(conv_kernel_grad_np(post, X, geo, max_elements),
                                   conv_kernel_grad(post, X, geo), rtol=1e-12, atol=1e-12)
        X32, W32, p32 = X.astype(np.float32), Wl.astype(np.float32), post.astype(np.float32)
        out32 = conv_currents_np(X32, W32, geo, np.empty((7, geo.n_neurons), np.float32), max_elements)
        assert out32.dtype == np.float32
        np.testing.assert_allclose(out32, conv_currents(X32, W32, geo), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(conv_kernel_grad_np(p32, X32, geo, max_elements),
                                   conv_kernel_grad(p32, X32, geo), rtol=1e-4, atol=1e-4)
    assert geos[0].n_global and geos[1].spec.stride == 2 and geos[1].spec.padding == 1


def test_pooling_equals_the_sum_over_windows():
    rng = np.random.default_rng(8)
    from spikeff.layers import pool_spikes
    for q, mode in ((2, "sum"), (3, "avg")):
        geo = layer_geometries([LayerSpec("conv", channels=2, kernel=1, pool=q, pool_mode=mode)], (1, 6, 6), 36)[0]
        s = (rng.random((4, geo.n_neurons)) < 0.5).astype(np.float32)
        ref = s.reshape(4, 2, 6 // q, q, 6 // q, q).sum(axis=(3, 5)) / (q * q if mode == "avg" else 1)
        np.testing.assert_array_equal(pool_spikes(s, geo), ref.reshape(4, -1))


@pytest.mark.parametrize("negatives,dtype,readout", [("random", "float64", False), ("random", "float64", True),
                                                     ("readout_hard", "float32", True)])
def test_conv_training_stores_instead_of_replaying_with_the_same_updates(digits, negatives, dtype, readout):
    """Training a conv net keeps the first pass's learning factors (store) when they fit the budget:
    the same weights as replaying the phases (store_budget_mb=0), bit for bit, also when the first
    pass runs the neutral-label rows too (readout, not readout_hard); the stored factors are used once."""
    from spikeff.engines.conv import grads_from_store, store_bytes
    cfg = conv_config(negatives=negatives, dtype=dtype, readout=readout, epochs=1)
    X, y = digits.X_train[:64], digits.y_train[:64]
    nets = [FFNetwork(cfg, store_budget_mb=b) for b in (1024, 0)]
    modes = [n.initialize(X.shape[1], 10).train_batch(X, y, seed=[3, 1])["update"] for n in nets]
    assert modes == ["store", "replay"]
    for Ws, Wr in zip(nets[0].weights_ + nets[0].biases_, nets[1].weights_ + nets[1].biases_):
        assert Ws.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(Ws, Wr)
    assert np.abs(nets[0].weights_[0] - FFNetwork(cfg).initialize(X.shape[1], 10).weights_[0]).max() > 0
    src = nets[0]._source(X[:4], y[:4], seed=[1])
    itemsize = np.dtype(dtype).itemsize
    part = nets[0]._run(src, keep=slice(1, 3))                  # a part of the rows: only those kept
    assert part.stored.nbytes == store_bytes(nets[0].geometries, 2, cfg.n_steps, itemsize)
    res = nets[0]._run(src, keep=slice(0, 4))
    assert res.stored.rows == 4 and res.stored.nbytes == store_bytes(nets[0].geometries, 4, cfg.n_steps, itemsize)
    mods = [np.ones(4)] * 2
    grads_from_store(res.stored, mods)
    with pytest.raises(RuntimeError, match="already used"):
        grads_from_store(res.stored, mods)


# -- per-channel goodness (goodness_scope = "channel") ------------------------------------------------
@pytest.mark.parametrize("goodness_name", ["energy_relu", "energy"])
def test_channel_goodness_local_rule_is_exact_gradient_subthreshold(goodness_name):
    """Threshold out of reach, one modulator per (sample, channel): the local rule (each neuron
    takes its channel's modulator) equals d(sum_bc m_bc G_bc)/dW with G_bc the goodness of channel
    c (mean over its positions and steps), by finite differences; the store gives the same update."""
    from spikeff.engines.conv import grads_from_store
    from spikeff.layers import channel_means
    rng = np.random.default_rng(7)
    specs = [LayerSpec("conv", channels=2, kernel=3, stride=1, padding=1, pool=2, goodness_scope="channel")]
    geos, W, b = small_net(rng, 0.5, specs, shape=(1, 6, 6), n_global=2)
    W[0] += 0.1
    lif = DiscreteLIF.from_config(NeuronConfig(v_threshold=1e9))
    g = get_goodness(goodness_name)
    src = SpikeSource(rng.random((3, geos[0].n_in)), "rate", 9, 1e-3, 500.0, seed=3, dtype=np.float64)
    m = rng.normal(size=(3, 2))
    m[:, 1] *= -3.0                    # the channels' modulators differ (not one per sample)

    def objective(Wx, bx):
        res = conv_run_phase([Wx], [bx], lif, g, src, 4, geometries=geos)
        return float(np.sum(m * channel_means(res.neuron_goodness[0], geos[0])))

    dW, db = conv_run_phase(W, b, lif, g, src, 4, modulators=[m], geometries=geos).grads[0]
    assert np.abs(dW).max() > 1e-6
    assert_matches_finite_differences(objective, W[0], b[0], dW, db)
    # the per-sample rule with the channels' mean modulator is a different update
    dW1 = conv_run_phase(W, b, lif, g, src, 4, modulators=[m.mean(axis=1)], geometries=geos).grads[0][0]
    assert np.abs(dW1 - dW).max() > 1e-3 * np.abs(dW).max()
    stored = conv_run_phase(W, [None], lif, g, src, 4, geometries=geos, keep=slice(0, 3)).stored
    replay = conv_run_phase(W, [None], lif, g, src, 4, modulators=[m], geometries=geos).grads[0]
    for a, r in zip(grads_from_store(stored, [m])[0], replay):
        np.testing.assert_array_equal(a, r)
    with pytest.raises(ValueError, match="channels"):
        conv_run_phase(W, b, lif, g, src, 4, modulators=[m[:, :1]], geometries=geos)


def _scope_layers(channels, scope):
    return [{"kind": "conv", "channels": channels, "kernel": 3, "padding": 1, "pool": 2, "goodness_scope": scope},
            {"kind": "dense", "size": 20}]


def test_channel_goodness_with_one_channel_equals_layer_goodness(digits):
    """One output channel: the channel's goodness is the layer's; training is bit-identical."""
    X, y = digits.X_train[:48], digits.y_train[:48]
    nets = [FFNetwork(conv_config(layers=_scope_layers(1, s), epochs=1, n_steps=8)).initialize(X.shape[1], 10)
            for s in ("layer", "channel")]
    W0 = nets[0].weights_[0].copy()
    outs = [[n.train_batch(X[i:i + 24], y[i:i + 24], seed=[3, i]) for i in (0, 24)] for n in nets]
    for a, b in zip(*outs):
        assert a["loss"] == b["loss"] and a["g_pos"] == b["g_pos"]
    for Wl, Wc in zip(nets[0].weights_ + nets[0].biases_, nets[1].weights_ + nets[1].biases_):
        np.testing.assert_array_equal(Wl, Wc)
    assert np.abs(nets[1].weights_[0] - W0).max() > 0


def test_channel_goodness_trains_stores_saves_and_predicts(digits, tmp_path):
    """goodness_scope = "channel": training changes the weights, differently from "layer"; the
    store and the replay give the same update (with the readout's neutral rows in the first pass);
    the scope survives save/load; both prediction methods run."""
    X, y = digits.X_train[:64], digits.y_train[:64]
    cfg = conv_config(layers=_scope_layers(3, "channel"), epochs=1, n_steps=8)
    assert cfg.layers[0].channel_goodness and not cfg.layers[1].channel_goodness
    nets = [FFNetwork(cfg, store_budget_mb=b).initialize(X.shape[1], 10) for b in (1024, 0)]
    W0 = [w.copy() for w in nets[0].weights_]
    modes = [n.train_batch(X, y, seed=[3, 1])["update"] for n in nets]
    assert modes == ["store", "replay"]
    for Ws, Wr in zip(nets[0].weights_ + nets[0].biases_, nets[1].weights_ + nets[1].biases_):
        np.testing.assert_array_equal(Ws, Wr)
    for l in range(2):
        assert np.abs(nets[0].weights_[l] - W0[l]).max() > 0
    layer = FFNetwork(cfg.replace(layers=_scope_layers(3, "layer"))).initialize(X.shape[1], 10)
    np.testing.assert_array_equal(layer.weights_[0], W0[0])
    layer.train_batch(X, y, seed=[3, 1])
    assert np.abs(layer.weights_[0] - nets[0].weights_[0]).max() > 0     # the scope changes the update
    np.testing.assert_array_equal(layer.weights_[1], nets[0].weights_[1])  # the dense layer's does not
    net = FFNetwork(cfg).fit(X, y, n_classes=10)
    assert np.all(np.isfinite(net.history_[0]["ff_loss"]))
    net.save(tmp_path / "m.npz")
    back = FFNetwork.load(tmp_path / "m.npz")
    assert back.config.layers[0].goodness_scope == "channel"
    np.testing.assert_array_equal(back.predict(X[:10], "goodness"), net.predict(X[:10], "goodness"))
    assert net.predict(X[:10], "readout").shape == (10,)


@pytest.mark.parametrize("loss", ["threshold", "symba"])
def test_ff_loss_per_channel_is_the_mean_of_the_channel_losses(loss):
    """Goodness (B, C): the loss is the mean over channels of each channel's loss, the modulator
    of (b, c) that of channel c's loss divided by C."""
    from spikeff.learning import ff_loss
    rng = np.random.default_rng(8)
    gp, gn = rng.random((5, 3)) * 2, rng.random((5, 3)) * 2
    value, mp, mn = ff_loss(gp, gn, loss, 1.0, 2.0)
    per = [ff_loss(gp[:, c], gn[:, c], loss, 1.0, 2.0) for c in range(3)]
    assert mp.shape == mn.shape == (5, 3)
    np.testing.assert_allclose(value, np.mean([p[0] for p in per]), rtol=1e-12)
    np.testing.assert_allclose(mp, np.stack([p[1] for p in per], axis=1) / 3, rtol=1e-12)
    np.testing.assert_allclose(mn, np.stack([p[2] for p in per], axis=1) / 3, rtol=1e-12)


def test_goodness_scope_config_errors_and_defaults(tmp_path):
    with pytest.raises(ConfigError, match=r"layers\[0\]\.goodness_scope: 'neuron' is not valid; choose one of \['layer', 'channel'\]"):
        conv_config(layers=_scope_layers(2, "neuron"))
    with pytest.raises(ConfigError, match=r"layers\[1\]\.goodness_scope: 'channel' needs a conv layer"):
        conv_config(layers=[CONV_LAYERS[0], {"kind": "dense", "size": 30, "goodness_scope": "channel"}])
    dense_layer = conv_config(layers=[CONV_LAYERS[0], {"kind": "dense", "size": 30, "goodness_scope": "layer"}])
    assert dense_layer == conv_config()                                     # "layer" on a dense layer: the default
    d = conv_config().to_dict()                   # default scope: the same dict (and config hash) as before
    assert all("goodness_scope" not in s for s in d["layers"])
    c = conv_config(layers=_scope_layers(2, "channel"))
    assert c.to_dict()["layers"][0]["goodness_scope"] == "channel" and FFConfig.from_dict(c.to_dict()) == c
    path = tmp_path / "conv.toml"
    path.write_text('[network]\ninput_shape = [1, 8, 8]\n\n[[layers]]\nkind = "conv"\nchannels = 2\n'
                    'kernel = 3\npadding = 1\npool = 2\ngoodness_scope = "channel"\n\n[[layers]]\nkind = "dense"\nsize = 20\n')
    assert load_config(path).layers == c.layers


def test_readout_mirror_refits_on_mirror_images_and_predicts_from_both(digits, tmp_path, monkeypatch):
    """``readout_mirror``: the refit learns the features of every training image and of its mirror
    image (left to right); the readout then scores an image by the sum of its scores of the image
    and of the mirror; the flag survives save/load; the default keeps the config's hash; bad
    settings and spike input give clear errors."""
    from spikeff.data import DataError, mirror_images
    from spikeff.readout import LinearReadout
    from spikeff.runs import config_hash
    X, y = digits.X_train[:96], digits.y_train[:96]
    img = X.reshape(-1, 8, 8)
    M = mirror_images(X, (1, 8, 8))
    np.testing.assert_array_equal(M.reshape(-1, 8, 8)[:, 3, 0], img[:, 3, 7])
    np.testing.assert_array_equal(mirror_images(M, (1, 8, 8)), X)
    assert not np.array_equal(M, X)
    cfg = conv_config(readout_mirror=True, predict_method="readout", readout_final_epochs=2, epochs=1,
                      n_steps=8)
    rows = []                      # the feature rows the refit learns from (its readout has mirror set)
    step = LinearReadout.step

    def recording_step(self, F, labels, *smoothing):
        if self.mirror_shape is not None:
            rows.append((np.array(F), np.array(labels)))
        return step(self, F, labels, *smoothing)
    net = FFNetwork(cfg)
    monkeypatch.setattr(LinearReadout, "step", recording_step)
    net.fit(X, y, n_classes=10)
    monkeypatch.setattr(LinearReadout, "step", step)
    assert net.readout_.mirror_shape == (1, 8, 8)
    # the refit's first epoch: the features of the images and of the mirror images (float32), each
    # once, with their labels
    n_refit = 2 * len(X)
    assert sum(len(l) for _, l in rows) == 2 * n_refit              # 2 epochs
    F_seen = np.concatenate([f for f, _ in rows])[:n_refit]
    y_seen = np.concatenate([l for _, l in rows])[:n_refit]
    from spikeff.network import PHASE_IDS
    seed = PHASE_IDS["neutral"]
    want = np.concatenate([net.readout_features(X, seed), net.readout_features(M, seed)]).astype(np.float32)
    order_seen, order_want = np.lexsort(F_seen.T), np.lexsort(want.T)
    np.testing.assert_array_equal(F_seen[order_seen], want[order_want])
    np.testing.assert_array_equal(y_seen[order_seen], np.concatenate([y, y])[order_want])
    # prediction: the sum of the scores of the image and of its mirror
    Xt = digits.X_test[:30]
    z = (net.readout_.logits(net.readout_features(Xt))
         + net.readout_.logits(net.readout_features(mirror_images(Xt, (1, 8, 8)))))
    pred = net.predict(Xt)
    np.testing.assert_array_equal(pred, net.classes_[np.argmax(z, axis=1)])
    assert not np.allclose(z, net.readout_.logits(net.readout_features(Xt)))   # the mirror counts
    from spikeff.export import lava as lx           # the exported network: the same rule, its engine
    lava_pred = lx.predict(net, Xt, "readout", mode="floating_pt", backend="numpy")
    np.testing.assert_array_equal(net.classes_[lava_pred], pred)
    net.save(tmp_path / "m.npz")
    back = FFNetwork.load(tmp_path / "m.npz")
    assert back.readout_.mirror_shape == (1, 8, 8) and back.config.readout_mirror
    np.testing.assert_array_equal(back.predict(Xt), pred)
    assert "readout_mirror" not in conv_config().to_dict()
    assert config_hash(conv_config()) == config_hash(conv_config(readout_mirror=False))
    with pytest.raises(ConfigError, match="readout_mirror"):
        FFConfig(readout_mirror=True, readout_final_epochs=2)              # no image shape
    with pytest.raises(ConfigError, match="readout_mirror"):
        conv_config(readout_mirror=True)                                    # no refit
    with pytest.raises(DataError, match="input_shape"):
        mirror_images(X[:, :10], (1, 8, 8))
    with pytest.raises(DataError, match="spike input"):
        mirror_images(np.zeros((8, 2, 64)), (1, 8, 8))                   # a (T, B, M) spike tensor


def test_train_mirror_trains_on_a_random_half_of_each_batch_mirrored(digits):
    """``train_mirror``: each training batch is the shuffled batch with a random half of its images
    mirrored left to right (drawn from the epoch's generator after the order): one epoch of one batch
    equals ``train_batch`` on that batch by hand, and differs from training without mirrors."""
    from spikeff.data import mirror_images
    X, y = digits.X_train[:48], digits.y_train[:48]
    cfg = conv_config(train_mirror=True, epochs=1, batch_size=48, n_steps=8)
    # train_epoch, not fit: fit pins the BLAS threads, and float sums depend on their number
    net = FFNetwork(cfg).initialize(X.shape[1], 10)
    net.train_epoch(X, y, 0)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, 0]))
    order = rng.permutation(len(X))
    flip = rng.random(len(X)) < 0.5
    assert 0 < flip.sum() < len(X)
    Xb = X[order].copy()
    Xb[flip] = mirror_images(Xb[flip], (1, 8, 8))
    by_hand = FFNetwork(cfg).initialize(X.shape[1], 10)
    by_hand.train_batch(Xb, y[order], seed=[cfg.seed, 2, 0, 0])
    plain = FFNetwork(cfg.replace(train_mirror=False)).initialize(X.shape[1], 10)
    plain.train_epoch(X, y, 0)
    for l in range(2):
        np.testing.assert_array_equal(net.weights_[l], by_hand.weights_[l])
        assert np.abs(net.weights_[l] - plain.weights_[l]).max() > 0
    assert "train_mirror" not in conv_config().to_dict()
    with pytest.raises(ConfigError, match="train_mirror"):
        FFConfig(train_mirror=True)


@pytest.mark.parametrize("encoding", ["rate", "regular"])
@pytest.mark.parametrize("copies", [2, 3])
def test_conv_shared_input_currents_and_updates(encoding, copies, monkeypatch):
    """Phases with the same image spikes (``shared_input_noise``; the regular code's spikes depend on
    the image alone, whatever the seed): the first conv layer's image current is computed once per
    sample, in the batch's first phase, and taken over by the next; with each row's label maps'
    current it equals the plain computation to rounding (float64: 1e-12), as does the kernel update
    from the parts' summed factors; store equals replay bit for bit; kept whole parts still share."""
    import spikeff.engines.conv as conv
    from spikeff.encoding import ConcatSource, SharedInput
    from spikeff.engines.conv import grads_from_store
    rng = np.random.default_rng(11)
    geos, W, b = small_net(rng, scale=1.2)
    n, G = geos[0].n_in - geos[0].n_global, geos[0].n_global
    R, T = 5, 11
    img = rng.random((R, n))
    parts = [SpikeSource(np.concatenate([img, np.eye(G)[rng.integers(0, G, R)]], axis=1), encoding, T, 1e-3,
                         500.0, seed=[4, c if encoding == "regular" else 1], dtype=np.float64)
             for c in range(copies + 1)]
    share = SharedInput(n)
    first = parts[0]
    first.shared_input = share
    both, plain = ConcatSource(parts[1:], share.for_copies(copies)), ConcatSource(parts[1:])
    image_rows = []                     # rows of the first layer's image currents computed
    real = conv.conv_currents_np

    def counted(X, Wl, geo, out, max_elements, labels=True):
        if geo is geos[0]:
            image_rows.append(len(X))
        return real(X, Wl, geo, out, max_elements, labels)
    monkeypatch.setattr(conv, "conv_currents_np", counted)
    lif, g = DiscreteLIF.from_config(NeuronConfig()), get_goodness("energy_relu")
    run = (lambda src, **kw: conv_run_phase(W, b, lif, g, src, 4, geometries=geos, **kw))
    run(first)
    assert share.currents and sum(image_rows) == T * R          # once per sample and step
    ref = run(plain, record=True)
    assert sum(image_rows) == T * R + T * copies * R            # the plain run: every row
    got = run(both, record=True)
    assert sum(image_rows) == T * R + T * copies * R            # taken over from the first phase
    np.testing.assert_array_equal(got.record["input"], ref.record["input"])
    spikes = ref.record["input"]
    assert not np.array_equal(spikes[:, R:2 * R, n:], spikes[:, :R, n:])     # other labels
    for l in range(3):
        np.testing.assert_array_equal(got.record["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(got.record["v"][l], ref.record["v"][l], rtol=1e-12, atol=1e-12)
        assert got.spike_counts[l].sum() > 20
    mods = [rng.normal(size=copies * R) for _ in geos]
    replay_ref = run(plain, modulators=mods)
    replay = run(both, modulators=mods)
    kept = run(both, keep=slice(None))
    assert kept.stored.share is not None and kept.stored.share.copies == copies
    stored = grads_from_store(kept.stored, mods)
    for l in range(3):
        for i in range(2):
            np.testing.assert_array_equal(stored[l][i], replay.grads[l][i])
            np.testing.assert_allclose(replay.grads[l][i], replay_ref.grads[l][i], rtol=1e-10, atol=1e-13)
        assert np.abs(replay.grads[l][0]).max() > 1e-3
    assert run(both, keep=slice(R, None)).stored.share.copies == copies - 1
    assert run(both, keep=slice(1, None)).stored.share is None


@pytest.mark.parametrize("encoding", ["rate", "regular"])
def test_conv_training_with_shared_input_equals_the_plain_engine(digits, monkeypatch, encoding):
    """``shared_input_noise`` on a conv net (readout_hard: neutral, positive and negative phases of a
    batch): the image spikes are the same in every phase, and the weights after two steps equal
    those of the engine running the same spikes without knowing they are shared (float64, 1e-9)."""
    import spikeff.engines.conv as conv
    from spikeff.encoding import ConcatSource
    X, y = digits.X_train[:64], digits.y_train[:64]
    cfg = conv_config(encoding=encoding, negatives="readout_hard", readout=True, shared_input_noise=True)
    weights, seen, shared_calls = {}, [], []
    real, real_shared = conv.run_phase, conv._Layer._shared_currents
    monkeypatch.setattr(conv._Layer, "_shared_currents",
                        lambda self, *a: shared_calls.append(1) or real_shared(self, *a))
    for plain in (False, True):
        shared_calls.clear()

        def engine(W, b, lif, g, source, *a, plain=plain, **kw):
            seen.append(source.all_steps())
            if plain:
                source = ConcatSource(list(getattr(source, "sources", [source])))
            return real(W, b, lif, g, source, *a, **kw)
        monkeypatch.setattr(conv, "run_phase", engine)
        net = FFNetwork(cfg).initialize(X.shape[1], 10)
        start = [w.copy() for w in net.weights_]
        for i in (0, 32):
            net.train_batch(X[i:i + 32], y[i:i + 32], seed=[0, i])
        weights[plain] = [w.copy() for w in net.weights_]
        assert bool(shared_calls) != plain              # the shared path, only where the engine knows
    first = np.concatenate(seen[:2], axis=1)            # neutral, then positive and negative
    assert first.shape[1] == 3 * 32
    for p in (1, 2):
        np.testing.assert_array_equal(first[:, p * 32:(p + 1) * 32, :64], first[:, :32, :64])
    assert not np.array_equal(first[:, 32:64, 64:], first[:, 64:, 64:])
    for a, b, w0 in zip(weights[False], weights[True], start):
        assert np.abs(a - w0).max() > 1e-3
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
