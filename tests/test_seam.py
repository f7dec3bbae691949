"""The simulator seam (spikeff.engines.base, spikeff.inference) and the model's per-target maps:
no import circle, inference written once (spikeff's own, Lava's and the Loihi fixed-point model's
decisions through the same code), the maps of spikeff.neuron."""
import ast
import copy
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import spikeff
from spikeff import FFConfig, FFNetwork, inference
from spikeff.engines import make_engine
from spikeff.engines.base import PhaseResult, SpikeSource
from spikeff.export import ExportError, NIRError, check_exportable
from spikeff.export import lava as lx
from spikeff.export import loihi
from spikeff.neuron import DiscreteLIF, fixed_decay_factors

PKG = pathlib.Path(spikeff.__file__).parent

needs_lava = pytest.mark.skipif(not lx.lava_available(), reason="lava-nc is not installed (pip install spikeff[lava])")


def _modules():
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _module_level_imports(name, path, modules):
    """spikeff modules that ``name`` imports at module level (function-level imports are lazy)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.parse(path.read_text()).body:
        for n in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(n, ast.Import):
                out.update(a.name for a in n.names if a.name in modules)
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (n.level - 1)]
                    target = ".".join(base + ([n.module] if n.module else []))
                else:
                    target = n.module or ""
                if not target.startswith("spikeff"):
                    continue
                for a in n.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in modules else target)
    return sorted(m for m in out if m in modules and m != name)


def test_module_level_import_graph_has_no_circle():
    modules = _modules()
    graph = {m: _module_level_imports(m, p, modules) for m, p in modules.items()}
    assert "spikeff.engines.base" in graph["spikeff.engines.vectorized"]
    assert graph["spikeff.engines.base"] == []           # the seam imports nothing of spikeff
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_every_module_imports_alone_in_a_fresh_interpreter():
    failed = {}
    for name in _modules():
        if name == "spikeff.__main__":          # runs the command line
            continue
        r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
        if r.returncode:
            failed[name] = r.stderr.strip().splitlines()[-1]
    assert failed == {}


def test_phase_result_and_spike_source_are_one_seam():
    from spikeff.encoding import ArraySource, ConcatSource, SpikeSource as RateSource
    from spikeff.engines import brian2_engine, conv, vectorized
    assert vectorized.PhaseResult is PhaseResult and conv.PhaseResult is PhaseResult
    assert brian2_engine.PhaseResult is PhaseResult
    src = RateSource(np.full((2, 3), 0.5), "rate", 4, 1e-3, 200.0, seed=0)
    for s in (src, ArraySource(np.zeros((4, 2, 3))), ConcatSource([src, src])):
        assert isinstance(s, SpikeSource)
    assert not isinstance(np.zeros(3), SpikeSource)


@pytest.fixture(scope="module")
def trained(digits):
    cfg = FFConfig(hidden_sizes=(30, 20), n_steps=12, epochs=1, batch_size=32, dtype="float64", label_repeat=2,
                   readout=True, seed=5, eval_batch_size=40)
    return FFNetwork(cfg).fit(digits.X_train[:200], digits.y_train[:200], n_classes=10)


def test_lif_and_goodness_are_resolved_once_per_config(trained):
    net = copy.deepcopy(trained)
    assert net.lif is net.lif and net._model()[1] is net._model()[1]
    before = net.lif
    net.config = net.config.replace(neuron={**net.config.neuron.__dict__, "tau_mem": 20e-3})
    assert net.lif is not before and net.lif.a_mem == pytest.approx(math.exp(-1 / 20))
    import pickle
    back = pickle.loads(pickle.dumps(net))         # the resolved goodness (lambdas) is not pickled
    assert back.lif == net.lif


def _old_fixed_point_path(net, X, quant, method):
    """What lava.predict(..., mode="fixed_pt", backend="numpy") computed before the seam: the same
    input spikes, the bit-exact model, goodness from the pre-reset potentials, its own argmax."""
    g = spikeff.goodness.get_goodness(net.config.goodness).g

    def neuron_goodness(spikes):
        r = loihi.simulate_fixed_numpy(quant, spikes)
        return [np.asarray(g(np.asarray(v / q.scale, np.float64))).mean(axis=0) for v, q in zip(r["v"], quant.layers)]

    if method == "goodness":
        C, out = net.n_classes_, []
        for n, src in net.label_sources(X):
            out.append(np.stack([ng.mean(axis=1) for ng in neuron_goodness(src.all_steps())], axis=1).reshape(n, C, -1))
        G = np.concatenate(out)
        return G, np.argmax(G[:, :, net._layer_mask()].sum(axis=2), axis=1)
    from spikeff.readout import readout_features
    F = np.concatenate([readout_features(neuron_goodness(src.all_steps())) for _, src in net.neutral_sources(X)])
    return F, net.readout_.predict(F)


def test_fixed_point_model_through_the_seam_equals_the_old_path(trained, digits):
    X = digits.X_test[:50]
    quant = lx.quantize_network(trained, X_calib=digits.X_train[:6])
    eng = make_engine("lava", mode="fixed_pt", quant=quant, backend="numpy")
    G_old, p_old = _old_fixed_point_path(trained, X, quant, "goodness")
    np.testing.assert_array_equal(inference.goodness_per_label(trained, X, engine=eng), G_old)
    np.testing.assert_array_equal(inference.predict(trained, X, "goodness", engine=eng), p_old)
    np.testing.assert_array_equal(lx.predict(trained, X, "goodness", mode="fixed_pt", quant=quant), p_old)
    F_old, r_old = _old_fixed_point_path(trained, X, quant, "readout")
    np.testing.assert_array_equal(lx.readout_features_exported(trained, X, quant=quant), F_old)
    np.testing.assert_array_equal(inference.predict(trained, X, "readout", engine=eng), r_old)
    # and the fixed point is not the float network (the test can tell them apart)
    assert not np.array_equal(G_old, trained.goodness_per_label(X))


def test_float_numpy_engine_equals_ffnetwork(trained, digits):
    X = digits.X_test[:30]
    eng = make_engine("lava", mode="floating_pt", backend="numpy")
    np.testing.assert_allclose(inference.goodness_per_label(trained, X, engine=eng), trained.goodness_per_label(X),
                               rtol=1e-12, atol=1e-14)
    for method in ("goodness", "readout"):
        np.testing.assert_array_equal(inference.predict(trained, X, method, engine=eng), trained.predict(X, method))


@pytest.mark.lava
@needs_lava
def test_lava_float_prediction_through_the_seam_equals_predict_on_the_exported_weights(trained, digits, tmp_path):
    """Lava's own floating-point simulation through the engine seam gives FFNetwork.predict's
    decisions of a network holding the weights read back from the Lava export file."""
    import json
    path = tmp_path / "net.npz"
    lx.export_lava(trained, path, X_calib=digits.X_train[:4])
    with np.load(path) as f:
        meta = json.loads(bytes(f["__meta__"]).decode())
        W = [f[f"float_weights{l}"] for l in range(meta["n_layers"])]
        b = [f[f"float_bias{l}"] for l in range(meta["n_layers"])]
    exported = copy.deepcopy(trained)
    exported.weights_, exported.biases_ = W, b
    assert meta["floating_pt"]["dv"] == trained.lif.lava_float()["dv"]
    X = digits.X_test[:3]
    eng = make_engine("lava", mode="floating_pt", backend="lava", copies=trained.n_classes_)
    G_lava = inference.goodness_per_label(trained, X, engine=eng)
    np.testing.assert_allclose(G_lava, exported.goodness_per_label(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(inference.predict(trained, X, "goodness", engine=eng),
                                  exported.predict(X, "goodness"))


def test_lava_engine_is_inference_only(trained):
    eng = make_engine("lava", mode="floating_pt", backend="numpy")
    src = next(trained.label_sources(np.zeros((1, trained.n_features_in_))))[1]
    with pytest.raises(ValueError, match="inference only"):
        trained._run(src, modulators=[np.ones(src.shape[0])] * 2, engine=eng)
    with pytest.raises(ValueError, match="quant"):
        make_engine("lava", mode="fixed_pt", backend="numpy")
    with pytest.raises(TypeError, match="no options"):
        make_engine("vectorized", mode="fixed_pt")
    with pytest.raises(ValueError, match="lava"):
        make_engine("loihi2")


# -- the model's per-target maps ------------------------------------------------------------------
def test_per_target_maps_of_the_model():
    lif = DiscreteLIF(a_syn=math.exp(-0.2), a_mem=math.exp(-0.1), v_threshold=1.0, v_reset=0.0, refractory_steps=0,
                      dt=1e-3, tau_syn=5e-3, tau_mem=10e-3)
    f = lif.lava_float()
    assert f == {"du": 1 - lif.a_syn, "dv": 1 - lif.a_mem, "vth": 1.0}
    fx = lif.lava_fixed()
    fu, fv = fixed_decay_factors(fx["du"], fx["dv"])
    assert abs(fu / 4096 - lif.a_syn) <= 0.5 / 4096 and abs(fv / 4096 - lif.a_mem) <= 0.5 / 4096
    assert lif.taus_at(1e-3) == (5e-3, 10e-3)                        # the config's own, no round trip
    ts, tm = lif.taus_at(2e-3)
    assert math.exp(-2e-3 / ts) == pytest.approx(lif.a_syn, rel=1e-12)
    assert math.exp(-2e-3 / tm) == pytest.approx(lif.a_mem, rel=1e-12)
    e = lif.nir_parameters(1e-4, "euler")
    assert 1 - 1e-4 / e["tau_mem"] == pytest.approx(lif.a_mem, rel=1e-12)
    assert e["r"] == pytest.approx(e["tau_mem"] / 1e-4)
    x = lif.nir_parameters(1e-3, "exact")
    assert x["r"] == lif.R == pytest.approx(1 / (1 - lif.a_mem)) and x["w_in"] == 1.0
    with pytest.raises(ValueError, match="euler"):
        DiscreteLIF(0.0, lif.a_mem, 1.0, 0.0, 0).nir_parameters(1e-3, "exact")
    with pytest.raises(ValueError, match="target"):
        lif.check_target("spinnaker")
    import brian2
    ns = lif.brian2_namespace(brian2.mV)                            # the Brian2 engine's constants
    assert ns["a_syn"] == lif.a_syn and ns["a_mem"] == lif.a_mem and ns["refractory_steps"] == 0
    assert float(ns["v_threshold"] / brian2.mV) == lif.v_threshold and float(ns["v_reset"] / brian2.mV) == 0.0


def test_check_exportable_per_target(trained):
    check_exportable(trained, "lava")
    check_exportable(trained, "nir")
    net = copy.deepcopy(trained)
    net.config = net.config.replace(neuron={**net.config.neuron.__dict__, "v_reset": -1.0})
    with pytest.raises(ExportError, match="resets to 0"):
        check_exportable(net, "lava")
    check_exportable(net, "nir")                     # NIR writes v_reset
    net.config = net.config.replace(neuron={**net.config.neuron.__dict__, "v_reset": 0.0, "refractory": 2e-3})
    with pytest.raises(NIRError, match="refractory"):
        check_exportable(net, "nir")
    with pytest.raises(ExportError, match="refractory"):
        check_exportable(net, "loihi")
    net.config = net.config.replace(neuron={**net.config.neuron.__dict__, "refractory": 0.0}, normalization="length")
    for target in (None, "lava", "nir"):
        with pytest.raises(ValueError, match="normalization"):
            check_exportable(net, target)
