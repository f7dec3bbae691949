"""Export to Lava (floating and bit-accurate fixed point) and to NIR."""
import json
import subprocess
import sys

import numpy as np
import pytest

from spikeff import FFConfig, FFNetwork
from spikeff.export import lava as lx

needs_lava = pytest.mark.skipif(not lx.lava_available(),
                                reason="lava-nc is not installed (pip install spikeff[lava])")


def _has_nir():
    try:
        import nir  # noqa: F401
        return True
    except ImportError:
        return False


needs_nir = pytest.mark.skipif(not _has_nir(), reason="nir is not installed (pip install spikeff[nir])")


@pytest.fixture(scope="module")
def trained(digits):
    """A small digits network, float64, trained 1 epoch on a subset (a few seconds)."""
    cfg = FFConfig(hidden_sizes=(60, 40), n_steps=16, epochs=1, batch_size=32, dtype="float64",
                   label_repeat=3, readout=True, seed=4, eval_batch_size=60)
    net = FFNetwork(cfg).fit(digits.X_train[:400], digits.y_train[:400], n_classes=10)
    return net


@pytest.fixture(scope="module")
def quant(trained, digits):
    return lx.quantize_network(trained, X_calib=digits.X_train[:8])


def _eval_spikes(net, X, labels, seed=7):
    return net._source(X, labels, seed=seed).all_steps()


# -- floating point: identical to spikeff -----------------------------------------------------------
@pytest.mark.lava
@needs_lava
def test_lava_float_spikes_identical(trained, digits):
    X, y = digits.X_test[:3], digits.y_test[:3]
    labels = np.r_[y, (y + 1) % 10]
    rows = np.r_[X, X]
    ref = trained.simulate(rows, labels, seed=11, record=True)
    x = ref.record["input"]
    got = lx.simulate(trained, x, mode="floating_pt", backend="lava")
    for l in range(len(trained.weights_)):
        assert ref.record["spikes"][l].sum() > 20, "test needs a spiking layer"
        np.testing.assert_array_equal(got["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(got["v"][l], ref.record["v"][l], rtol=0, atol=1e-12)


# -- fixed point ------------------------------------------------------------------------------------
@pytest.mark.lava
@needs_lava
def test_numpy_fixed_model_is_bit_exact_with_lava(trained, digits, quant):
    x = _eval_spikes(trained, np.repeat(digits.X_test[:2], 3, axis=0), np.tile([0, 3, 7], 2))
    ref = lx.simulate_fixed_numpy(quant, x)
    got = lx.run_on_lava(trained, x, mode="fixed_pt", quant=quant)
    for l in range(len(trained.weights_)):
        assert ref["spikes"][l].sum() > 10
        np.testing.assert_array_equal(got["spikes"][l], ref["spikes"][l])
        np.testing.assert_array_equal(got["v_int"][l], ref["v"][l])
        np.testing.assert_array_equal(got["u_int"][l], ref["u"][l])


@pytest.mark.lava
@needs_lava
def test_biases_float_and_fixed_match_lava(trained, digits):
    """With learned biases (bias_mant, bias_exp paths): Lava float == spikeff, Lava fixed == numpy."""
    import copy
    net = copy.deepcopy(trained)
    net.config = net.config.replace(learn_bias=True)
    rng = np.random.default_rng(0)
    net.biases_ = [rng.normal(0, 0.05, W.shape[0]) for W in net.weights_]
    X, y = digits.X_test[:2], digits.y_test[:2]
    ref = net.simulate(X, y, seed=3, record=True)
    got = lx.simulate(net, ref.record["input"], mode="floating_pt", backend="lava")
    q = lx.quantize_network(net, X_calib=digits.X_train[:4])
    assert all(np.any(ql.bias_mant != 0) for ql in q.layers)
    fx = lx.run_on_lava(net, ref.record["input"], mode="fixed_pt", quant=q)
    fx_np = lx.simulate_fixed_numpy(q, ref.record["input"])
    for l in range(len(net.weights_)):
        np.testing.assert_array_equal(got["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(got["v"][l], ref.record["v"][l], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(fx["spikes"][l], fx_np["spikes"][l])
        np.testing.assert_array_equal(fx["v_int"][l], fx_np["v"][l])


@pytest.mark.lava
@needs_lava
def test_fixed_point_on_lava_agrees_on_most_decisions(trained, digits, quant):
    X = digits.X_test[:6]
    p_float = trained.predict(X, "goodness")
    p_lava = lx.predict(trained, X, "goodness", mode="fixed_pt", quant=quant, backend="lava")
    assert p_lava.shape == (6,)
    assert np.mean(p_lava == p_float) >= 5 / 6


def test_fixed_numpy_decisions_agree_and_float_numpy_matches_spikeff(trained, digits, quant):
    X = digits.X_test[:40]
    G_ref = trained.goodness_per_label(X)
    G_f = lx.goodness_per_label(trained, X, mode="floating_pt", backend="numpy")
    np.testing.assert_allclose(G_f, G_ref, rtol=1e-12, atol=1e-14)
    for method in ("goodness", "readout"):
        p_float = trained.predict(X, method)
        p_fixed = lx.predict(trained, X, method, mode="fixed_pt", quant=quant, backend="numpy")
        assert np.mean(p_fixed == p_float) >= 0.9, method


def test_fixed_point_differs_from_float_only_slightly(trained, digits, quant):
    x = _eval_spikes(trained, digits.X_test[:10], digits.y_test[:10])
    fx = lx.simulate(trained, x, "fixed_pt", quant, "numpy")
    fl = lx.simulate(trained, x, "floating_pt", None, "numpy")
    for l in range(len(trained.weights_)):
        mismatch = np.mean(fx["spikes"][l] != fl["spikes"][l])
        assert mismatch < 0.05
        assert np.corrcoef(fx["v"][l].ravel(), fl["v"][l].ravel())[0, 1] > 0.99


# -- quantization -------------------------------------------------------------------------------
def test_quantization_respects_loihi_bit_widths(trained, quant):
    rep = json.loads(json.dumps(quant.report))            # JSON-able
    assert rep["bit_widths"]["u_v"] == 24 and rep["bit_widths"]["weight_mantissa"] == 8
    for q, info, W in zip(quant.layers, rep["layers"], trained.weights_):
        assert np.all(q.weights % 2 == 0)                 # mixed sign mode: 2 * mantissa
        assert -256 <= q.weights.min() and q.weights.max() <= 254
        assert max(abs(q.weights.min()), q.weights.max()) >= 240   # the 8 bits are used
        assert lx.WEIGHT_EXP_RANGE[0] <= q.weight_exp <= lx.WEIGHT_EXP_RANGE[1]
        assert 0 < q.vth < 2 ** 17 and 0 <= q.du < 4096 and 0 <= q.dv < 4096
        assert np.all(np.abs(q.bias_mant) < 2 ** 12) and 0 <= q.bias_exp <= 7
        assert info["weights_clipped"] == 0
        assert abs(info["a_syn_fixed"] - info["a_syn"]) < 5e-4
        assert abs(info["a_mem_fixed"] - info["a_mem"]) < 5e-4
        assert info["weight_rms_error_rel"] < 0.03
        np.testing.assert_allclose(q.dequantized_weights(), W, atol=info["weight_step_mV"] / 2 + 1e-12)
        # calibrated range fits the 24-bit state with the headroom
        peak = max(info["u_abs_max_calib_mV"], info["v_abs_max_calib_mV"]) * q.scale
        assert peak * info["headroom"] < 2 ** 23


def test_quantization_clipping_is_reported(trained, digits):
    q = lx.quantize_network(trained, X_calib=digits.X_train[:4], weight_clip_percentile=90.0)
    assert all(info["weights_clipped"] > 0 for info in q.report["layers"])
    q_bound = lx.quantize_network(trained)                # worst-case bound: coarser scale
    fine = lx.quantize_network(trained, X_calib=digits.X_train[:4])
    assert "worst-case" in q_bound.report["calibration"]
    assert all(a.scale <= b.scale for a, b in zip(q_bound.layers, fine.layers))


def test_quantization_bad_input(trained):
    with pytest.raises(ValueError, match="headroom"):
        lx.quantize_network(trained, headroom=0.5)
    with pytest.raises(ValueError, match="percentile"):
        lx.quantize_network(trained, weight_clip_percentile=0)
    net = FFNetwork(FFConfig(hidden_sizes=(5,), neuron={"v_reset": "-1 mV"}, dtype="float64"))
    net.initialize(4, 2)
    with pytest.raises(ValueError, match="resets to 0"):
        lx.quantize_network(net)
    with pytest.raises(ValueError, match="mode"):
        lx.simulate(trained, np.zeros((3, 1, 94)), mode="half")
    with pytest.raises(ValueError, match="quant"):
        lx.simulate(trained, np.zeros((3, 1, 94)), mode="fixed_pt", backend="numpy")


def test_fixed_model_wraps_u_and_saturates_v_like_lava():
    """Overflow rules of Lava's bit-accurate LIF: u wraps around beyond 24 bits, v saturates."""
    q = lx.LayerQuant(weights=np.array([[254, 254], [-256, -256]], np.int32), weight_exp=7, vth=2 ** 17 - 1,
                      du=0, dv=0, bias_mant=np.zeros(2, np.int32), bias_exp=0, scale=1.0)
    T = 5
    r = lx.simulate_fixed_numpy(lx.QuantizedNetwork([q], {}), np.ones((T, 1, 2), bool))
    M = 2 ** 23
    for n, w in ((0, 254), (1, -256)):       # hand-computed reference, Python integers
        a = 2 * w * 2 ** 7 * 2 ** 6
        u = v = 0
        for t in range(T):
            p = u * 4095                            # du = 0: decay factor 4096 - (0 + 1)
            u = (1 if p > 0 else -1 if p < 0 else 0) * (abs(p) >> 12) + (a if t > 0 else 0)
            u = u - 2 * M if u > M else u + 2 * M if u <= -M else u
            v = max(-M + 1, min(M - 1, v + u))      # dv = 0: no decay
            assert r["u"][0][t, 0, n] == u and r["v"][0][t, 0, n] == v, (n, t)
            if v > (2 ** 17 - 1) << 6:
                v = 0
    assert r["saturation"][0]["u_wraps"] > 0 and r["saturation"][0]["v_clips"] > 0


# -- files, CLI, optional dependency --------------------------------------------------------------
def test_export_lava_file_and_cli(trained, tmp_path):
    from spikeff.cli import main
    model = tmp_path / "m.npz"
    trained.save(model)
    out = tmp_path / "net_lava.npz"
    assert main(["export", str(model), "--to", "lava", "--out", str(out), "--calib-dataset", "digits",
                 "--n-calib", "4"]) == 0
    z = np.load(out)
    meta = json.loads(bytes(z["__meta__"]).decode())
    assert meta["n_layers"] == 2 and len(meta["fixed_pt"]) == 2
    np.testing.assert_array_equal(z["float_weights0"], trained.weights_[0])
    rep = json.loads(out.with_suffix(".quantization.json").read_text())
    assert rep["layers"][0]["vth"] == meta["fixed_pt"][0]["vth"]
    assert main(["export", str(tmp_path / "missing.npz"), "--to", "lava", "--out", str(out)]) == 2


def test_spikeff_imports_without_lava_and_says_how_to_install():
    code = ("import sys; sys.modules['lava'] = None\n"
            "import spikeff, spikeff.export, spikeff.export.lava as lx\n"
            "assert not lx.lava_available()\n"
            "try:\n    lx.require_lava()\nexcept ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=".")
    assert r.returncode == 0, r.stderr
    assert "pip install spikeff[lava]" in r.stdout


# -- NIR ------------------------------------------------------------------------------------------
@needs_nir
@pytest.mark.parametrize("flavour", ["euler", "exact"])
def test_nir_roundtrip(trained, digits, tmp_path, flavour):
    from spikeff.export import nir as nx
    path = tmp_path / "net.nir"
    nx.export_nir(trained, path, flavour=flavour)
    p = nx.read_nir_parameters(path)
    lif = trained.lif
    dt = p["metadata"]["dt"]
    assert dt == (1e-4 if flavour == "euler" else trained.config.neuron.dt)
    assert len(p["layers"]) == 2
    for L, W in zip(p["layers"], trained.weights_):
        np.testing.assert_array_equal(L["weight"], W)
        if flavour == "euler":      # what an Euler-stepping importer runs: 1 - dt/tau = a, r dt/tau_mem = 1, ...
            np.testing.assert_allclose(1 - dt / L["tau_syn"], lif.a_syn, rtol=1e-12)
            np.testing.assert_allclose(1 - dt / L["tau_mem"], lif.a_mem, rtol=1e-12)
            np.testing.assert_allclose(L["r"], L["tau_mem"] / dt, rtol=1e-15)          # snnTorch's assertion
            np.testing.assert_allclose(L["w_in"] * dt / L["tau_syn"], 1.0, rtol=1e-12)  # snnTorch's w_scale
        else:
            np.testing.assert_allclose(np.exp(-dt / L["tau_syn"]), lif.a_syn, rtol=1e-12)
            np.testing.assert_allclose(np.exp(-dt / L["tau_mem"]), lif.a_mem, rtol=1e-12)
            np.testing.assert_allclose(L["r"], 1 / (1 - lif.a_mem))
            assert np.all(L["w_in"] == 1)
        assert np.all(L["v_threshold"] == lif.v_threshold) and np.all(L["v_reset"] == 0)
        assert np.all(L["v_leak"] == 0)
    meta = p["metadata"]
    assert meta["n_classes"] == 10 and meta["synaptic_delay_steps"] == 1 and meta["flavour"] == flavour
    back = nx.import_nir(path)
    assert back.lif.a_syn == pytest.approx(lif.a_syn, rel=1e-12) and back.lif.a_mem == pytest.approx(lif.a_mem, rel=1e-12)
    X = digits.X_test[:5]
    back.config = back.config.replace(eval_batch_size=trained.config.eval_batch_size)
    np.testing.assert_allclose(back.goodness_per_label(X), trained.goodness_per_label(X), rtol=1e-9)


@needs_nir
def test_nir_roundtrip_with_bias_and_delay_nodes(trained, digits, tmp_path):
    """A learned bias goes to v_leak and comes back; Delay nodes (one step) are read back."""
    from spikeff.export import nir as nx
    net = FFNetwork(trained.config.replace(learn_bias=True))
    net.initialize(trained.n_features_in_, trained.n_classes_)
    net.weights_ = [W.copy() for W in trained.weights_]
    net.biases_ = [np.linspace(-0.05, 0.05, len(b)) for b in net.biases_]
    for flavour in nx.FLAVOURS:
        g = nx.to_nir(net, flavour=flavour, delay="node")
        assert [k for k in g.nodes if k.startswith("delay")] == ["delay0", "delay1"]
        back = nx.import_nir(g)
        for b0, b1 in zip(net.biases_, back.biases_):
            np.testing.assert_allclose(b1, b0, rtol=1e-12, atol=1e-15)
        X = digits.X_test[:4]
        np.testing.assert_allclose(back.goodness(X, digits.y_test[:4]), net.goodness(X, digits.y_test[:4]), rtol=1e-9)


@needs_nir
def test_nir_roundtrip_keeps_the_encoding(trained, tmp_path):
    from spikeff.export import nir as nx
    lat = FFNetwork(trained.config.replace(encoding="latency", latency_period=4))
    lat.initialize(trained.n_features_in_, trained.n_classes_)
    nx.export_nir(lat, tmp_path / "lat.nir")
    back = nx.import_nir(tmp_path / "lat.nir")
    assert back.config.encoding == "latency" and back.config.latency_period == 4
    reg = FFNetwork(trained.config.replace(encoding="regular"))
    reg.initialize(trained.n_features_in_, trained.n_classes_)
    nx.export_nir(reg, tmp_path / "reg.nir")
    back = nx.import_nir(tmp_path / "reg.nir")
    assert back.config.encoding == "regular"
    X = np.random.default_rng(0).random((2, trained.n_features_in_))
    np.testing.assert_array_equal(back.simulate(X, seed=1).record["input"], reg.simulate(X, seed=9).record["input"])


@needs_nir
def test_nir_dt_argument_and_cli(trained, tmp_path):
    from spikeff.cli import main
    from spikeff.export import nir as nx
    g = nx.to_nir(trained, dt=0.5e-3, flavour="exact")
    tau = float(g.nodes["lif0"].tau_mem[0])
    assert tau == pytest.approx(trained.config.neuron.tau_mem / 2)      # same per-step decay at half dt
    assert g.metadata["dt"] == 0.5e-3
    with pytest.raises(ValueError, match="dt"):
        nx.to_nir(trained, dt=-1.0)
    with pytest.raises(ValueError, match="flavour"):
        nx.to_nir(trained, flavour="rk4")
    model = tmp_path / "m.npz"
    trained.save(model)
    assert main(["export", str(model), "--to", "nir", "--out", str(tmp_path / "n.nir"), "--dt", "0.002",
                 "--nir-flavour", "exact"]) == 0
    back = nx.import_nir(tmp_path / "n.nir")
    assert back.config.neuron.dt == trained.config.neuron.dt       # the model's dt (encoding), same decays
    assert back.lif.a_mem == pytest.approx(trained.lif.a_mem, rel=1e-12)
    assert main(["export", str(model), "--to", "nir", "--out", str(tmp_path / "e.nir")]) == 0   # euler, dt 1e-4
    g = nx.read_nir_parameters(tmp_path / "e.nir")
    assert g["metadata"]["flavour"] == "euler" and g["metadata"]["dt"] == 1e-4
    # spikeff import: back to a model.npz that eval reads
    assert main(["import", str(tmp_path / "e.nir"), "--out", str(tmp_path / "back.npz")]) == 0
    back = FFNetwork.load(tmp_path / "back.npz")
    assert back.n_classes_ == 10 and back.lif.a_syn == pytest.approx(trained.lif.a_syn, rel=1e-12)


@needs_nir
def test_nir_export_refuses_a_refractory_period(trained):
    from spikeff.export import nir as nx
    net = FFNetwork(trained.config.replace(neuron=trained.config.neuron.__class__(
        **{**trained.config.neuron.__dict__, "refractory": 2e-3})))
    net.initialize(trained.n_features_in_, trained.n_classes_)
    with pytest.raises(nx.NIRError, match="refractory"):
        nx.to_nir(net)


def _chain_graph(nodes_between, n_in=6):
    import nir
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}), **nodes_between,
             "output": nir.Output(output_type={"output": np.array([3])})}
    names = ["input", *nodes_between, "output"]
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), type_check=False)


def _cuba(n, tau_syn=5e-4, tau_mem=1e-3, dt=1e-4, **kw):
    import nir
    p = dict(tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau_mem), r=np.full(n, tau_mem / dt),
             v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.full(n, tau_syn / dt))
    p.update(kw)
    return nir.CubaLIF(**p)


def _lif(n, tau=1e-3, dt=1e-4):
    import nir
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / dt), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


@needs_nir
def test_nir_import_of_lif_chains_has_no_synaptic_current():
    """Linear -> LIF (snnTorch's Leaky, Norse's LIFBoxCell): tau_syn = 0, a_syn = 0, u = W x[t-1]."""
    import nir
    from spikeff.export import nir as nx
    W = np.arange(18.0).reshape(3, 6) / 10
    net = nx.import_nir(_chain_graph({"fc": nir.Linear(weight=W), "cell": _lif(3)}), n_steps=5)
    assert net.config.neuron.tau_syn == 0 and net.lif.a_syn == 0 and net.lif.a_mem == pytest.approx(0.9)
    np.testing.assert_allclose(net.weights_[0], W, rtol=1e-12)       # Euler LIF: dt/tau * r = 1
    x = np.zeros((5, 1, 6))
    x[0, 0, 0] = 1
    v = net.simulate_spikes(x).record["v"][0][:, 0, 1]                # W[1, 0] = 0.6 mV at t = 1, then * 0.9
    np.testing.assert_allclose(v, [0, 0.6, 0.54, 0.486, 0.4374], rtol=1e-12)
    g = nx.to_nir(net)                                                 # and out again: tau_syn = dt, w_in = 1
    np.testing.assert_allclose(g.nodes["lif0"].tau_syn, 1e-4) and np.testing.assert_allclose(g.nodes["lif0"].w_in, 1)
    with pytest.raises(nx.NIRError, match="euler"):
        nx.to_nir(net, flavour="exact")


@needs_nir
def test_nir_import_refuses_what_spikeff_cannot_represent(tmp_path):
    import nir
    from spikeff.cli import main
    from spikeff.export import nir as nx
    W = np.ones((3, 6))
    ok = _chain_graph({"fc": nir.Linear(weight=W), "cell": _cuba(3)})
    assert nx.import_nir(ok).config.hidden_sizes == (3,)
    cases = [
        ({"fc": nir.Linear(weight=W), "scale": nir.Scale(scale=np.ones(3)), "cell": _cuba(3)},
         "node 'scale' is a NIR Scale"),
        ({"fc": nir.Affine(weight=W, bias=np.full(3, 0.1)), "cell": _cuba(3)}, "node 'fc' \(Affine\) has a non-zero bias"),
        ({"fc": nir.Linear(weight=W), "cell": _lif(3), "fc1": nir.Linear(weight=np.ones((3, 3))), "cell1": _cuba(3)},
         "tau_syn \\(0 for a LIF\\) differs"),
        ({"fc": nir.Linear(weight=W), "cell": _cuba(3, tau_mem=np.array([1e-3, 1e-3, 2e-3]))}, "tau_mem differs"),
        ({"fc": nir.Linear(weight=W)}, "ends without a neuron node"),
    ]
    for nodes, match in cases:
        with pytest.raises(nx.NIRError, match=match):
            nx.import_nir(_chain_graph(nodes))
    branch = _chain_graph({"fc": nir.Linear(weight=W), "cell": _cuba(3)})
    branch.edges.append(("input", "cell"))
    with pytest.raises(nx.NIRError, match="2 outgoing edges"):
        nx.import_nir(branch)
    # the command line prints the error, no traceback
    bad = _chain_graph({"fc": nir.Affine(weight=W, bias=np.full(3, 0.1)), "cell": _cuba(3)})
    nir.write(str(tmp_path / "bad.nir"), bad)
    assert main(["import", str(tmp_path / "bad.nir"), "--out", str(tmp_path / "m.npz")]) == 2


@needs_nir
def test_nir_import_of_a_peer_graph_for_inference_and_ff_fine_tuning(digits):
    """A Linear -> CubaLIF chain in NIR's (snnTorch's) Euler convention, with label channels: spikeff
    reads it, runs it and trains it further with FF."""
    import nir
    from spikeff.export import nir as nx
    rng = np.random.default_rng(0)
    n_in, sizes = 64 + 10 * 2, (30, 20)
    nodes, prev = {}, n_in
    for l, n in enumerate(sizes):
        nodes[f"lin{l}"] = nir.Linear(weight=rng.standard_normal((n, prev)) / np.sqrt(prev))
        nodes[f"syn{l}"] = _cuba(n)
        prev = n
    g = _chain_graph(nodes, n_in=n_in)
    net = nx.import_nir(g, n_classes=10, label_repeat=2, n_steps=12, epochs=1, batch_size=32)
    assert net.n_features_in_ == 64 and net.config.neuron.dt == 1e-4
    assert net.lif.a_syn == pytest.approx(1 - 1e-4 / 5e-4) and net.lif.a_mem == pytest.approx(1 - 1e-4 / 1e-3)
    np.testing.assert_allclose(net.weights_[0], nodes["lin0"].weight, rtol=1e-12)   # r dt/tau_mem = w_in dt/tau_syn = 1
    before = [W.copy() for W in net.weights_]
    net.continue_fit(digits.X_train[:96], digits.y_train[:96], epochs=1)
    assert net.epochs_done_ == 1 and all(np.any(W != W0) for W, W0 in zip(net.weights_, before))
    assert 0 <= net.score(digits.X_test[:20], digits.y_test[:20]) <= 1
