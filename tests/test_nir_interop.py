"""spikeff's NIR graphs in the real importers (Norse, snnTorch), and their graphs in spikeff.

Needs the ``interop`` extra (torch, snntorch, norse: ``pip install 'spikeff[interop]'``); CI does not
install it (about 3 GB with torch's CUDA libraries), so these tests skip there.
"""
import numpy as np
import pytest

from spikeff import FFConfig, FFNetwork
from spikeff.export import interop as io

pytestmark = pytest.mark.interop

_MISSING = [m for m in ("nir", "torch", "norse", "snntorch") if not io.available(m)]
needs_interop = pytest.mark.skipif(
    bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed: the interop extra is optional and CI does not "
                           "install it (pip install 'spikeff[interop]')")


@pytest.fixture(scope="module")
def small_net(digits):
    cfg = FFConfig(hidden_sizes=(40, 30), n_steps=16, epochs=1, batch_size=32, dtype="float64",
                   label_repeat=2, seed=5, eval_batch_size=40)
    return FFNetwork(cfg).fit(digits.X_train[:300], digits.y_train[:300], n_classes=10)


@needs_interop
@pytest.mark.parametrize("importer", ["norse", "snntorch"])
@pytest.mark.parametrize("float64", [True, False])
def test_euler_graph_runs_exactly_in_the_importers(small_net, digits, importer, float64):
    from spikeff.export import nir as nx
    X, y = digits.X_test[:12], digits.y_test[:12]
    ref = small_net.simulate(X, labels=y, record=True)
    g = nx.to_nir(small_net)                            # defaults: euler, dt = 1e-4 (snnTorch's)
    rec = io.align(io.run_importer(importer, g, ref.record["input"], float64=float64), small_net.config.n_steps)
    for l, (a, b) in enumerate(zip(ref.record["spikes"], rec["spikes"])):
        assert a.sum() > 20, "test needs a spiking layer"
        np.testing.assert_array_equal(b, a, err_msg=f"layer {l}")
        np.testing.assert_allclose(rec["v"][l], ref.record["v"][l], rtol=0, atol=1e-12 if float64 else 1e-4)


@needs_interop
def test_goodness_from_the_importers_state(small_net, digits):
    from spikeff.export import nir as nx
    X = digits.X_test[:6]
    G = small_net.goodness_per_label(X)
    g = nx.to_nir(small_net)
    for importer in ("norse", "snntorch"):
        np.testing.assert_allclose(io.goodness_per_label(small_net, g, importer, X), G, rtol=1e-9, atol=1e-12)


@needs_interop
def test_old_exact_flavour_is_what_the_importers_get_wrong(small_net, digits):
    """The issue's report: the exponential-integration graph runs differently in Norse, snnTorch refuses it."""
    from spikeff.export import nir as nx
    X, y = digits.X_test[:8], digits.y_test[:8]
    ref = small_net.simulate(X, labels=y, record=True)
    g = nx.to_nir(small_net, flavour="exact")
    rec = io.align(io.run_norse(g, ref.record["input"], dt=g.metadata["dt"]), small_net.config.n_steps)
    assert io.spike_agreement(ref.record["spikes"], rec["spikes"])[0] < 0.99
    with pytest.raises(AssertionError, match="r not supported"):
        io.import_snntorch(g)


def _snn_stepped(modules, x, dtype):
    """Spikes of every spiking layer of snnTorch/Norse ``modules`` (a Sequential) stepped on x (T, B, M)."""
    import torch
    out, states = [], [None] * len(modules)
    with torch.no_grad():
        for t in range(x.shape[0]):
            h, k = torch.as_tensor(x[t], dtype=dtype), 0
            for i, m in enumerate(modules):
                if isinstance(m, torch.nn.Linear):
                    h = m(h.to(m.weight.dtype))
                    continue
                if hasattr(m, "init_hidden"):              # snnTorch: state inside the module
                    h = m(h)
                else:                                       # Norse: state passed around
                    h, states[i] = m(h, states[i])
                if len(out) <= k:
                    out.append([])
                out[k].append(h.numpy() > 0)
                k += 1
    return [np.stack(s) for s in out]


@needs_interop
@pytest.mark.parametrize("kind", ["Synaptic", "Leaky"])
def test_graph_from_snntorch_export_gives_the_same_spikes_in_spikeff(kind):
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir
    from spikeff.export import nir as nx
    torch.manual_seed(0)
    M, N1, N2, T, B = 30, 20, 10, 25, 8

    def synaptic(n):   # reset_delay=False: the convention snnTorch's own importer builds from a graph
        kw = dict(beta=torch.full((n,), 0.9), threshold=torch.ones(n), init_hidden=True, reset_mechanism="zero",
                  reset_delay=False)
        if kind == "Leaky":
            return snn.Leaky(**kw)
        return snn.Synaptic(alpha=torch.full((n,), 0.8), **kw)

    net = torch.nn.Sequential(torch.nn.Linear(M, N1, bias=False), synaptic(N1),
                              torch.nn.Linear(N1, N2, bias=False), synaptic(N2))
    with torch.no_grad():
        for k in (0, 2):
            net[k].weight.mul_(3.0)
    graph = export_to_nir(net, torch.zeros(1, M), ignore_dims=[0])
    x = (np.random.default_rng(0).random((T, B, M)) < 0.3).astype(np.float32)
    theirs = io.align({"spikes": _snn_stepped(net, x, torch.float32)}, T)["spikes"]
    ours = nx.import_nir(graph, n_steps=T)           # convention euler, dt = 1e-4: snnTorch's
    assert ours.lif.a_syn == (pytest.approx(0.8, rel=1e-7) if kind == "Synaptic" else 0)
    assert ours.lif.a_mem == pytest.approx(0.9, rel=1e-7)
    spikes = ours.simulate_spikes(x).record["spikes"]
    for a, b in zip(theirs, spikes):
        assert a.sum() > 10
        np.testing.assert_array_equal(b, a)


@needs_interop
@pytest.mark.parametrize("kind", ["LIFCell", "LIFBoxCell"])
def test_graph_from_norse_export_gives_the_same_spikes_in_spikeff(kind):
    import norse.torch as nt
    import torch
    from spikeff.export import nir as nx
    torch.manual_seed(0)
    M, N1, N2, T, B = 30, 20, 10, 25, 8
    if kind == "LIFCell":       # written as CubaLIF
        cell = lambda: nt.LIFCell(nt.LIFParameters(tau_syn_inv=torch.as_tensor(200.0),  # noqa: E731
                                                   tau_mem_inv=torch.as_tensor(100.0), v_th=torch.as_tensor(1.0)))
    else:                       # written as LIF
        cell = lambda: nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.as_tensor(100.0),  # noqa: E731
                                                         v_th=torch.as_tensor(1.0)))
    net = nt.SequentialState(torch.nn.Linear(M, N1, bias=False), cell(), torch.nn.Linear(N1, N2, bias=False), cell())
    with torch.no_grad():
        for k in (0, 2):
            net[k].weight.mul_(20.0)
    graph = nt.to_nir(net, torch.zeros(1, M))         # dt = 1e-3, Norse's default
    x = (np.random.default_rng(1).random((T, B, M)) < 0.3).astype(np.float32)
    theirs = io.align({"spikes": _snn_stepped(net, x, torch.float32)}, T)["spikes"]
    ours = nx.import_nir(graph, convention="norse", n_steps=T)
    assert ours.lif.a_syn == (pytest.approx(0.8, rel=1e-6) if kind == "LIFCell" else 0)
    assert ours.lif.a_mem == pytest.approx(0.9, rel=1e-6)
    spikes = ours.simulate_spikes(x).record["spikes"]
    for a, b in zip(theirs, spikes):
        assert a.sum() > 10
        np.testing.assert_array_equal(b, a)


@needs_interop
@pytest.mark.slow
def test_nir_interop_experiment_small(tmp_path):
    import json
    import subprocess
    import sys
    out = tmp_path / "nir_interop.json"
    r = subprocess.run([sys.executable, "experiments/nir_interop.py", "--size", "small", "--no-lava", "--out", str(out)],
                       capture_output=True, text=True, cwd=".", timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    for name in ("norse", "snntorch"):
        row = res["importers"][name]
        assert min(row["spike_agreement"]) >= 0.999
        assert abs(row["accuracy_goodness"] - res["spikeff"]["accuracy_goodness"]) <= 0.005
