"""Vectorized batch engine: all samples and neurons as arrays, time simulated in chunks.

For each chunk of ``chunk_steps`` time steps, a layer's input currents for the whole chunk are one
GEMM ``(k*B, M) @ (M, N)``; the LIF recurrence then runs step by step on (B, N) arrays
(:func:`spikeff.neuron.lif_step`). Layers are processed one after the other within a chunk, with
one step of synaptic delay between them, so the result equals stepping the whole network in time.
Memory is O(chunk_steps), not O(T).

Learning (``modulators`` given): the exact subthreshold gradient of each layer's goodness,
``dG_b/dW = 1/(T N) sum_t g'(v_b[t]) (outer) e_v_b[t]`` with presynaptic eligibility traces
(:func:`spikeff.neuron.trace_step`), weighted by the per-sample FF modulator ``m_b`` and summed
over the batch: one GEMM ``(N, k*B) @ (k*B, M)`` per chunk. The reset is ignored in the gradient
(as e-prop does). Since ``m_b`` needs the goodness of the whole window, training *replays* a phase:
a first call without modulators gives G, a second with them accumulates the update. The input
spikes are regenerated from the same seed, so the replay is exact and nothing grows with T.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..goodness import Goodness
from ..neuron import DiscreteLIF, LIFState, lif_step, trace_step


@dataclass
class PhaseResult:
    """What one simulated phase returns (per layer lists)."""

    goodness: list                      # (B,) float64: G of each layer
    neuron_goodness: list               # (B, N): mean over time of g(v) per neuron
    spike_counts: list                  # (B, N)
    grads: list | None = None           # [(dW (N, M), db (N,))] when modulators were given
    record: dict = field(default_factory=dict)   # "input" (T,B,M), "spikes"/"v" lists of (T,B,N)


def run_phase(weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int,
              modulators=None, record: bool = False) -> PhaseResult:
    """Simulate one phase of the network on the spikes of ``source`` (a SpikeSource).

    ``weights[l]`` has shape (N_l, M_l); ``biases[l]`` (N_l,) or None. ``modulators[l]`` (B,) or
    None per layer: when given, the layer's weight gradient ``sum_b m_b dG_b/dW`` is returned.
    ``record=True`` also returns the input spikes, spikes and pre-reset potentials for all steps.
    """
    B = source.shape[0]
    T = source.n_steps
    dtype = weights[0].dtype
    L = len(weights)
    refr = lif.refractory_steps > 0
    states = [LIFState.zeros(B, W.shape[0], dtype, refractory=refr) for W in weights]
    x_prev = [np.zeros((B, W.shape[1]), dtype=dtype) for W in weights]
    g_acc = [np.zeros((B, W.shape[0]), dtype=np.float64) for W in weights]
    counts = [np.zeros((B, W.shape[0]), dtype=np.int64) for W in weights]
    learn = [modulators is not None and modulators[l] is not None for l in range(L)]
    post_scale, e_u, e_v, dW, db = [None] * L, [None] * L, [None] * L, [None] * L, [None] * L
    e_b = 0.0
    for l, W in enumerate(weights):
        if learn[l]:
            N, M = W.shape
            post_scale[l] = (np.asarray(modulators[l], dtype=np.float64) / (T * N)).astype(dtype)[:, None]
            e_u[l] = np.zeros((B, M), dtype=dtype)
            e_v[l] = np.zeros((B, M), dtype=dtype)
            dW[l] = np.zeros((N, M), dtype=np.float64)
            db[l] = np.zeros(N, dtype=np.float64)
    rec_in, rec_s, rec_v = [], [[] for _ in range(L)], [[] for _ in range(L)]

    t0 = 0
    for chunk in source.chunks(chunk_steps):
        k = chunk.shape[0]
        if record:
            rec_in.append(chunk)
        e_b_steps = np.empty(k)
        for j in range(k):
            e_b = lif.a_mem * e_b + 1.0          # bias trace: dv[t]/db without reset
            e_b_steps[j] = e_b
        inp = chunk
        for l, W in enumerate(weights):
            N, M = W.shape
            xin = np.concatenate([x_prev[l][None], inp[:-1]], axis=0)   # x[t-1]: one step of delay
            x_prev[l] = inp[-1]
            current = (xin.reshape(k * B, M) @ W.T).reshape(k, B, N)
            out = np.empty((k, B, N), dtype=dtype)
            if learn[l]:
                post = np.empty((k, B, N), dtype=dtype)
                ev_steps = np.empty((k, B, M), dtype=dtype)
            if record:
                v_rec = np.empty((k, B, N), dtype=dtype)
            for j in range(k):
                spikes, v_pre = lif_step(states[l], current[j], biases[l], lif)
                g_acc[l] += goodness.g(v_pre)
                out[j] = spikes
                if record:
                    v_rec[j] = v_pre
                if learn[l]:
                    trace_step(e_u[l], e_v[l], xin[j], lif)
                    ev_steps[j] = e_v[l]
                    np.multiply(goodness.dg(v_pre), post_scale[l], out=post[j])
            counts[l] += out.sum(axis=0, dtype=np.int64)
            if learn[l]:
                dW[l] += post.reshape(k * B, N).T @ ev_steps.reshape(k * B, M)
                db[l] += e_b_steps @ post.sum(axis=1, dtype=np.float64)
            if record:
                rec_s[l].append(out.astype(bool))
                rec_v[l].append(v_rec)
            inp = out
        t0 += k

    neuron_g = [g / T for g in g_acc]
    result = PhaseResult(goodness=[g.mean(axis=1) for g in neuron_g], neuron_goodness=neuron_g,
                         spike_counts=counts)
    if any(learn):
        result.grads = [(dW[l].astype(dtype), db[l].astype(dtype)) if learn[l] else None for l in range(L)]
    if record:
        result.record = {"input": np.concatenate(rec_in).astype(bool),
                         "spikes": [np.concatenate(s) for s in rec_s],
                         "v": [np.concatenate(v) for v in rec_v]}
    return result
