"""The neuron model, the local learning rule against finite differences, and the engine."""
import numpy as np
import pytest

from spikeff import FFConfig, NeuronConfig
from spikeff.encoding import SpikeSource
from spikeff.engines.vectorized import run_phase
from spikeff.goodness import available_goodness, get_goodness
from spikeff.neuron import DiscreteLIF


def reference_loop(W_list, b_list, x, lif):
    """Plain per-sample, per-step loop of the documented discrete model (x: (T, M) spikes)."""
    T = x.shape[0]
    inp = x
    vs, ss = [], []
    for W, b in zip(W_list, b_list):
        N = W.shape[0]
        u = np.zeros(N); v = np.zeros(N)
        out = np.zeros((T, N)); vrec = np.zeros((T, N))
        for t in range(T):
            xin = inp[t - 1] if t > 0 else np.zeros(W.shape[1])
            u = lif.a_syn * u + W @ xin
            v = lif.a_mem * v + u + b
            vrec[t] = v
            s = v > lif.v_threshold
            v = np.where(s, lif.v_reset, v)
            out[t] = s
        vs.append(vrec); ss.append(out)
        inp = out
    return ss, vs


def test_engine_matches_reference_loop():
    rng = np.random.default_rng(0)
    lif = DiscreteLIF.from_config(NeuronConfig())
    W = [rng.normal(0, 0.6, (20, 15)), rng.normal(0, 0.6, (10, 20))]
    b = [rng.normal(0, 0.05, 20), rng.normal(0, 0.05, 10)]
    src = SpikeSource(rng.random((4, 15)), "rate", 25, 1e-3, 500.0, seed=1, dtype=np.float64)
    res = run_phase(W, b, lif, get_goodness("energy_relu"), src, chunk_steps=7, record=True)
    x = res.record["input"].astype(float)
    total_spikes = 0
    for i in range(4):
        ss, vs = reference_loop(W, b, x[:, i], lif)
        for l in range(2):
            np.testing.assert_array_equal(res.record["spikes"][l][:, i], ss[l].astype(bool))
            np.testing.assert_allclose(res.record["v"][l][:, i], vs[l], atol=1e-12)
            total_spikes += ss[l].sum()
    assert total_spikes > 20  # the comparison covered spiking, not only silence


def test_chunk_size_does_not_change_results():
    rng = np.random.default_rng(1)
    lif = DiscreteLIF.from_config(NeuronConfig())
    W = [rng.normal(0, 0.6, (20, 15)), rng.normal(0, 0.6, (10, 20))]
    src = SpikeSource(rng.random((3, 15)), "rate", 23, 1e-3, 500.0, seed=2, dtype=np.float64)
    mods = [rng.normal(size=3), rng.normal(size=3)]
    g = get_goodness("energy_relu")
    a = run_phase(W, [None, None], lif, g, src, chunk_steps=23, modulators=mods)
    b = run_phase(W, [None, None], lif, g, src, chunk_steps=4, modulators=mods)
    for l in range(2):
        np.testing.assert_allclose(a.goodness[l], b.goodness[l], rtol=1e-12)
        np.testing.assert_allclose(a.grads[l][0], b.grads[l][0], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("goodness_name", available_goodness())
def test_local_rule_is_exact_gradient_subthreshold(goodness_name):
    """Without spikes (threshold out of reach) the eligibility-trace rule equals dG/dW."""
    rng = np.random.default_rng(2)
    lif = DiscreteLIF.from_config(NeuronConfig(v_threshold=1e9))
    g = get_goodness(goodness_name)
    M, N, B = 12, 7, 3
    W = rng.normal(0.1, 0.5, (N, M))
    bias = rng.normal(0, 0.1, N)
    src = SpikeSource(rng.random((B, M)), "rate", 15, 1e-3, 500.0, seed=3, dtype=np.float64)
    m = rng.normal(size=B)   # arbitrary per-sample modulators

    def objective(Wx, bx):
        res = run_phase([Wx], [bx], lif, g, src, chunk_steps=4)
        return float(m @ res.goodness[0])

    res = run_phase([W], [bias], lif, g, src, chunk_steps=4, modulators=[m])
    dW, db = res.grads[0]
    assert np.abs(dW).max() > 1e-6
    num = np.zeros_like(W)
    eps = 1e-6
    for i in range(N):
        for j in range(M):
            Wp, Wm = W.copy(), W.copy()
            Wp[i, j] += eps; Wm[i, j] -= eps
            num[i, j] = (objective(Wp, bias) - objective(Wm, bias)) / (2 * eps)
    np.testing.assert_allclose(dW, num, rtol=1e-5, atol=1e-9)
    numb = np.array([(objective(W, bias + eps * e) - objective(W, bias - eps * e)) / (2 * eps)
                     for e in np.eye(N)])
    np.testing.assert_allclose(db, numb, rtol=1e-5, atol=1e-9)


def test_discrete_constants_match_lava_convention():
    lif = DiscreteLIF.from_config(NeuronConfig(dt=1e-3, tau_syn=5e-3, tau_mem=10e-3, refractory=2e-3))
    assert lif.a_syn == pytest.approx(np.exp(-0.2))
    assert lif.a_mem == pytest.approx(np.exp(-0.1))
    assert lif.refractory_steps == 2


def test_refractory_holds_membrane_at_reset():
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=3e-3))
    W = [np.full((1, 1), 5.0)]
    src = SpikeSource(np.ones((1, 1)), "rate", 30, 1e-3, 1000.0, seed=0, dtype=np.float64)  # spike every step
    res = run_phase(W, [None], lif, get_goodness("energy_relu"), src, chunk_steps=30, record=True)
    s = res.record["spikes"][0][:, 0, 0]
    t = np.flatnonzero(s)
    assert len(t) >= 3 and np.all(np.diff(t) >= 4)


def test_length_normalization_hides_how_many_neurons_fired():
    """With normalize=True the second layer's input at each step is x * sqrt(M / n_spikes): its
    drive depends on which presynaptic neurons fired, not on how many."""
    g = get_goodness("energy")
    rng = np.random.default_rng(7)
    M = 6
    # one LIF for both layers: layer 1 relays its input spikes (weight 10, threshold 0.5, fast decay);
    # layer 2's weights are small, so it stays subthreshold and its v is linear in its input
    relay = DiscreteLIF.from_config(NeuronConfig(v_threshold=0.5, tau_syn=1e-3, tau_mem=1e-3))
    W2 = rng.normal(size=(4, M)) * 0.01
    W2[:, 2:] = W2[:, :2].mean(axis=1, keepdims=True)   # same summed drive per fired neuron
    few = np.zeros((1, M)); few[0, :2] = 1               # 2 of 6 input neurons fire every step
    many = np.ones((1, M))                              # all 6 fire
    v = {}
    for name, x in (("few", few), ("many", many)):
        for norm in (False, True):
            src = SpikeSource(x, "rate", 8, 1e-3, 1000.0, seed=0, dtype=np.float64)
            res = run_phase([np.eye(M) * 10, W2], [None, None], relay, g, src, chunk_steps=3,
                            record=True, normalize=norm)
            assert res.spike_counts[1].sum() == 0
            v[name, norm] = res.record["v"][1][:, 0]
    # without normalisation 3x the spikes give 3x the drive; with it, sqrt(M/n) cancels the count
    np.testing.assert_allclose(v["many", False][3:], 3 * v["few", False][3:], rtol=1e-9)
    np.testing.assert_allclose(v["many", True][3:], 3 * np.sqrt(6 / 6) / np.sqrt(6 / 2) * v["few", True][3:],
                               rtol=1e-9)


def test_local_rule_is_exact_gradient_with_length_normalization():
    relay = DiscreteLIF.from_config(NeuronConfig(v_threshold=0.5, tau_syn=1e-3, tau_mem=1e-3))
    g = get_goodness("energy_relu")
    rng = np.random.default_rng(8)
    M = 6
    W = [np.eye(M) * 10, rng.normal(0.02, 0.02, (4, M))]
    src = SpikeSource(rng.random((3, M)), "rate", 10, 1e-3, 600.0, seed=1, dtype=np.float64)
    m = [None, rng.normal(size=3)]
    res = run_phase(W, [None, None], relay, g, src, chunk_steps=4, modulators=m, normalize=True)
    assert res.spike_counts[1].sum() == 0 and res.spike_counts[0].sum() > 10

    def f(W2):
        return float(m[1] @ run_phase([W[0], W2], [None, None], relay, g, src, 4, normalize=True).goodness[1])
    num = np.zeros_like(W[1])
    for i in range(4):
        for j in range(M):
            Wp, Wm = W[1].copy(), W[1].copy()
            Wp[i, j] += 1e-6
            Wm[i, j] -= 1e-6
            num[i, j] = (f(Wp) - f(Wm)) / 2e-6
    np.testing.assert_allclose(res.grads[1][0], num, rtol=1e-5, atol=1e-10)
