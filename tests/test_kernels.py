"""The chunked kernels of spikeff.neuron against the step-by-step reference forms."""
import numpy as np
import pytest

from spikeff import NeuronConfig
from spikeff.encoding import ConcatSource, SpikeSource
from spikeff.neuron import DiscreteLIF, LIFState, lif_scan, lif_step, trace_filter, trace_scan, trace_step


@pytest.mark.parametrize("refractory", [0.0, 3e-3])
def test_lif_scan_equals_lif_step(refractory):
    rng = np.random.default_rng(0)
    p = DiscreteLIF.from_config(NeuronConfig(refractory=refractory, v_reset=-0.2))
    B, N, k = 5, 7, 30
    i_in = rng.normal(0.3, 0.6, (k, B, N))
    bias = rng.normal(0, 0.1, N)
    st = LIFState.zeros(B, N, np.float64, refractory=refractory > 0)
    v_ref, s_ref = [], []
    for j in range(k):
        s, v = lif_step(st, i_in[j], bias, p)
        v_ref.append(v)
        s_ref.append(s)
    # lif_scan takes u + b (the synaptic current from the filtered input) per step
    u = np.zeros((B, N))
    U = np.empty((k, B, N))
    for j in range(k):
        u = p.a_syn * u + i_in[j]
        U[j] = u + bias
    dec = np.zeros((B, N))
    ref = np.zeros((B, N), np.int32) if refractory > 0 else None
    for j0 in range(0, k, 8):            # in chunks, carrying the state
        lif_scan(U[j0:j0 + 8], dec, p, ref)
    np.testing.assert_allclose(U, np.array(v_ref), atol=1e-12)
    np.testing.assert_array_equal(U > p.v_threshold, np.array(s_ref))
    assert np.array(s_ref).sum() > 10


def test_trace_filter_equals_trace_step():
    rng = np.random.default_rng(1)
    p = DiscreteLIF.from_config(NeuronConfig())
    B, M, k = 3, 4, 6
    e_u, e_v = rng.random((B, M)), rng.random((B, M))
    x = (rng.random((k, B, M)) < 0.3).astype(float)
    Z = np.concatenate([e_u[None], e_v[None], x])
    got = (trace_filter(p, k) @ Z.reshape(k + 2, -1)).reshape(2 * k, B, M)
    np.testing.assert_allclose(trace_scan(Z, np.empty((2 * k, B, M)), k, p), got, rtol=1e-12)
    for j in range(k):
        trace_step(e_u, e_v, x[j], p)
        np.testing.assert_allclose(got[j], e_u, rtol=1e-12)
        np.testing.assert_allclose(got[k + j], e_v, rtol=1e-12)
    np.testing.assert_array_equal(trace_filter(p, k, with_ev=False), trace_filter(p, k)[:k])


def test_concat_source_keeps_each_part():
    rng = np.random.default_rng(2)
    a = SpikeSource(rng.random((3, 5)), "rate", 11, 1e-3, 500.0, seed=1)
    b = SpikeSource(rng.random((2, 5)), "rate", 11, 1e-3, 500.0, seed=2)
    both = ConcatSource([a, b])
    assert both.shape == (5, 5) and both.n_steps == 11
    allx = both.all_steps()
    np.testing.assert_array_equal(allx[:, :3], a.all_steps())
    np.testing.assert_array_equal(allx[:, 3:], b.all_steps())
    np.testing.assert_array_equal(np.concatenate(list(both.chunks(4))), allx)
    pa, pb = both.split(np.arange(5))
    assert list(pa) == [0, 1, 2] and list(pb) == [3, 4]
    with pytest.raises(ValueError):
        ConcatSource([a, SpikeSource(rng.random((2, 5)), "rate", 12, 1e-3, 500.0, seed=2)])
