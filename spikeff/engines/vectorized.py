"""Vectorized batch engine: all samples and neurons as arrays, time simulated in chunks.

The model is the one of :mod:`spikeff.neuron`; per chunk of ``k = chunk_steps`` steps and per layer:

1. **traces** (linear part): the presynaptic traces ``e_u`` (and ``e_v`` when learning) of the
   whole chunk, from ``Z = [e_u, e_v at the chunk start, x[t-1] for the k steps]``: on GPU
   backends one small GEMM ``F @ Z`` with the causal filter ``F = trace_filter(k)``
   ((2k) x (k+2)); on numpy the same recurrence in place (:func:`spikeff.neuron.trace_scan`,
   faster on CPUs than a small-by-huge GEMM);
2. **currents**: ``u[t] = W @ e_u[t]`` (exactly the synaptic current) for the chunk as one GEMM
   ``(k*B, M) @ (M, N)``;
3. **membrane** (nonlinear part): :func:`spikeff.neuron.lif_scan`, the only loop over time steps,
   4 in-place elementwise passes per step on (B, N) arrays; the spikes are written straight into
   the next layer's input buffer (one step of synaptic delay between layers, as stepping the whole
   network in time);
4. **goodness**: ``g(v)`` (and ``g'(v)`` when learning) for the whole chunk at once, in place.

Learning (``modulators`` given): the exact subthreshold gradient of each layer's goodness,
``dG_b/dW = 1/(T N) sum_t g'(v_b[t]) (outer) e_v_b[t]``, weighted by the per-sample FF modulator
``m_b`` and summed over the batch: one GEMM ``(N, k*B) @ (k*B, M)`` per chunk. The reset is
ignored in the gradient (as e-prop does). Since ``m_b`` needs the goodness of the whole window,
training *replays* a phase: a first call without modulators gives G, a second with them
accumulates the update. The input spikes are regenerated from the same seed, so the replay is
exact. All work buffers are allocated once per call with ``chunk_steps`` rows: memory is
O(chunk_steps), not O(T).

Any array-API namespace works (the one of the weights: numpy, cupy, torch); numpy uses in-place
``out=`` kernels, others the functional form :func:`spikeff.neuron.lif_scan_xp`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..backend import astype, namespace, to_backend, to_numpy
from ..goodness import Goodness
from ..neuron import DiscreteLIF, lif_scan, lif_scan_xp, trace_filter, trace_scan


@dataclass
class PhaseResult:
    """What one simulated phase returns (per layer lists; numpy arrays except ``grads``)."""

    goodness: list                      # (B,) float64: G of each layer
    neuron_goodness: list               # (B, N): mean over time of g(v) per neuron
    spike_counts: list                  # (B, N)
    grads: list | None = None           # [(dW (N, M), db (N,))] when modulators were given (weights' namespace)
    record: dict = field(default_factory=dict)   # "input" (T,B,M), "spikes"/"v" lists of (T,B,N)


_POOL = None


def n_threads() -> int:
    """Threads for the elementwise work: pinned by training (:func:`spikeff.runs.pinned_threads`),
    else env ``SPIKEFF_NUM_THREADS``, else the CPUs we may use (at most 8). Results do not depend
    on it: every reduction is per sample or done after the parts are joined, in one order."""
    from ..runs import engine_threads
    return engine_threads()


def _parallel(fn, B, N, min_work=1 << 16):
    """``fn(batch_slice)`` over parts of the batch in threads (numpy releases the GIL in ufuncs).

    Elementwise numpy work runs on one core; the GEMMs use all of them, so splitting the batch
    keeps all cores busy between the GEMMs. Returns the list of results.
    """
    global _POOL
    n = min(n_threads(), B) if B * N >= min_work else 1
    if n <= 1:
        return [fn(slice(None))]
    if _POOL is None or _POOL._max_workers < n:
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="spikeff")
    bounds = np.linspace(0, B, n + 1).astype(int)
    return list(_POOL.map(fn, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))


class _Layer:
    """Buffers and state of one layer for one phase (O(chunk_steps) memory)."""

    def __init__(self, W, bias, lif, goodness, B, K, modulator, T, xp, normalize=False):
        N, M = W.shape
        self.W, self.bias, self.lif, self.goodness, self.xp = W, bias, lif, goodness, xp
        self.normalize = normalize
        self.B, self.N, self.M, self.dtype = B, N, M, W.dtype
        self.np = xp is np
        self.learn = modulator is not None
        self._filters = {}
        f64 = np.float64 if self.np else xp.float64
        zeros = (lambda shape, dt=self.dtype: xp.zeros(shape, dtype=dt))
        self.dec = zeros((B, N))                                  # a_mem * v after reset
        self.ref = zeros((B, N), np.int32 if self.np else xp.int32) if lif.refractory_steps > 0 else None
        self.g_acc = zeros((B, N), f64)
        self.counts = zeros((B, N), f64)
        if self.np:
            # Z rows: e_u, e_v (state at the chunk start), x[t0-1], then the chunk's k input steps
            self.Z = zeros((K + 3, B, M))
            self.E = np.empty(((2 if self.learn else 1) * K, B * M), dtype=self.dtype)
            self.U = np.empty((K, B, N), dtype=self.dtype)
            self.mask = np.empty((B, N), dtype=bool)
            self.rmask = np.empty((B, N), dtype=bool) if self.ref is not None else None
        else:
            self.state = zeros((3, B, M))                         # e_u, e_v, x[t0-1]
        if self.learn:
            scale = np.asarray(to_numpy(modulator), dtype=np.float64) / (T * N)
            self.scale = to_backend(scale.reshape(1, B, 1), xp, dtype=self.dtype)
            self.dW = zeros((N, M), f64)
            self.db = zeros((N,), f64)
            if self.np:
                self.post = np.empty((K, B, N), dtype=self.dtype)
                self.dW_chunk = np.empty((N, M), dtype=self.dtype)

    def input_buffer(self, k):
        """Where the layer below (or the source) writes this chunk's input spikes (numpy), or None."""
        return self.Z[3:3 + k] if self.np else None

    def filter(self, k):
        if k not in self._filters:
            f = trace_filter(self.lif, k, with_ev=self.learn)
            self._filters[k] = to_backend(f, self.xp, dtype=self.dtype)
        return self._filters[k]

    def run_chunk(self, x, k, out, e_b_steps):
        """Simulate k steps with input spikes ``x`` (k, B, M) (numpy: already in input_buffer).

        Spikes go to ``out`` (k, B, N) (numpy; the next layer's input buffer) or are returned.
        Returns (spikes, pre-reset potentials or None); the potentials are valid until the next chunk.
        """
        xp, B, N, M, lif = self.xp, self.B, self.N, self.M, self.lif
        if self.normalize:      # length normalisation of the spikes from the layer below, per step
            X = self.Z[3:3 + k] if self.np else x
            X = X * xp.sqrt(M / xp.maximum(xp.sum(X, axis=2, keepdims=True), 1))
            if self.np:
                self.Z[3:3 + k] = X
            else:
                x = X
        if self.np:
            E = self.E[:(2 if self.learn else 1) * k]
            E3 = E.reshape(-1, B, M)
            _parallel(lambda sl: trace_scan(self.Z[:k + 2, sl], E3[:, sl], k, lif, self.learn), B, M)
            V = self.U[:k]
            np.matmul(E[:k].reshape(k * B, M), self.W.T, out=V.reshape(k * B, N))
            self.Z[0] = E[k - 1].reshape(B, M)
            if self.learn:
                self.Z[1] = E[2 * k - 1].reshape(B, M)
            self.Z[2] = self.Z[2 + k]
            if self.bias is not None:
                V += self.bias

            def scan(sl):                       # one part of the batch (threads share the work)
                ref, rmask = (self.ref[sl], self.rmask[sl]) if self.ref is not None else (None, None)
                lif_scan(V[:, sl], self.dec[sl], lif, ref, self.mask[sl], rmask)
                np.greater(V[:, sl], lif.v_threshold, out=out[:, sl])
                self.counts[sl] += out[:, sl].sum(axis=0)
            _parallel(scan, B, N)
        else:
            Z = xp.concat([self.state, x[:k - 1, ...]], axis=0)
            E = self.filter(k) @ xp.reshape(Z, (k + 2, B * M))
            U = xp.reshape(xp.reshape(E[:k, ...], (k * B, M)) @ self.W.T, (k, B, N))
            ev_end = E[2 * k - 1, ...] if self.learn else self.state[1, ...]
            self.state = xp.stack([xp.reshape(E[k - 1, ...], (B, M)), xp.reshape(ev_end, (B, M)),
                                   x[k - 1, ...]])
            if self.bias is not None:
                U = U + self.bias
            V, self.dec, self.ref = lif_scan_xp(U, self.dec, lif, xp, self.ref)
            out = xp.astype(V > lif.v_threshold, self.dtype)
            self.counts += xp.astype(xp.sum(out, axis=0), self.counts.dtype)
        return out, V, E

    def goodness_chunk(self, V, E, k, e_b_steps):
        """Accumulate g(v) of the chunk (destroys V on numpy) and, when learning, the gradient."""
        xp, B, N, M = self.xp, self.B, self.N, self.M
        fused = self.goodness.fused if self.np else None
        if fused is not None:
            post = self.post[:k] if self.learn else None

            def good(sl):
                fused(V[:, sl], post[:, sl] if self.learn else None, self.scale[:, sl] if self.learn else None)
                self.g_acc[sl] += V[:, sl].sum(axis=0)
            _parallel(good, B, N)
        else:
            self.g_acc += astype(xp.sum(self.goodness.g(V), axis=0), self.g_acc.dtype, xp)
            post = self.goodness.dg(V) * self.scale if self.learn else None
        if not self.learn:
            return
        post2 = xp.reshape(post, (k * B, N))
        Ev = xp.reshape(E[k:2 * k, ...], (k * B, M))
        if self.np:
            np.matmul(post2.T, Ev, out=self.dW_chunk)
            self.dW += self.dW_chunk
            # over the whole batch at once (not per thread's part): the sum's order, and so its
            # last bits, do not depend on how many threads did the elementwise work
            self.db += e_b_steps @ post.sum(axis=1, dtype=np.float64)
        else:
            self.dW += astype(post2.T @ Ev, self.dW.dtype, xp)
            eb = to_backend(e_b_steps, xp, dtype=np.float64)
            self.db += eb @ astype(xp.sum(post, axis=1), self.db.dtype, xp)


def run_phase(weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int,
              modulators=None, record: bool = False, normalize: bool = False) -> PhaseResult:
    """Simulate one phase of the network on the spikes of ``source`` (a SpikeSource).

    ``normalize``: layers after the first receive the spikes of the layer below scaled to a fixed
    length at every step, ``x[t] * sqrt(M / max(1, |x[t]|_0))`` (Hinton's length normalisation,
    per step: the next layer sees which neurons fired, not how many, so it cannot reuse the
    goodness of the layer below). Eligibility traces filter the scaled input, so the local rule
    stays the exact subthreshold gradient. Not representable by Lava's Dense + LIF.

    ``weights[l]`` has shape (N_l, M_l); ``biases[l]`` (N_l,) or None. ``modulators[l]`` (B,) or
    None per layer: when given, the layer's weight gradient ``sum_b m_b dG_b/dW`` is returned.
    ``record=True`` also returns the input spikes, spikes and pre-reset potentials for all steps.
    """
    xp = namespace(*weights)
    B, T, L = source.shape[0], source.n_steps, len(weights)
    K = min(chunk_steps, T)
    mods = modulators if modulators is not None else [None] * L
    layers = [_Layer(W, biases[l], lif, goodness, B, K, mods[l], T, xp, normalize=normalize and l > 0)
              for l, W in enumerate(weights)]
    last_out = np.empty((K, B, weights[-1].shape[0]), dtype=weights[-1].dtype) if xp is np else None
    rec_in, rec_s, rec_v = [], [[] for _ in range(L)], [[] for _ in range(L)]
    e_b = 0.0
    for chunk in source.chunks(chunk_steps):
        k = chunk.shape[0]
        e_b_steps = np.empty(k)
        for j in range(k):
            e_b = lif.a_mem * e_b + 1.0          # bias trace: dv[t]/db without reset
            e_b_steps[j] = e_b
        if record:
            rec_in.append(chunk.astype(bool))
        if xp is np:
            layers[0].input_buffer(k)[...] = chunk
            x = None
        else:
            x = to_backend(chunk, xp, dtype=chunk.dtype)
        for l, layer in enumerate(layers):
            dest = (layers[l + 1].input_buffer(k) if l + 1 < L else last_out[:k]) if xp is np else None
            x, V, E = layer.run_chunk(x, k, dest, e_b_steps)
            if record:
                rec_s[l].append(to_numpy(x).astype(bool))
                rec_v[l].append(np.array(to_numpy(V)))
            layer.goodness_chunk(V, E, k, e_b_steps)

    neuron_g = [to_numpy(layer.g_acc) / T for layer in layers]
    result = PhaseResult(goodness=[g.mean(axis=1) for g in neuron_g], neuron_goodness=neuron_g,
                         spike_counts=[to_numpy(layer.counts).astype(np.int64) for layer in layers])
    if any(layer.learn for layer in layers):
        result.grads = [(astype(layer.dW, layer.dtype, xp), astype(layer.db, layer.dtype, xp))
                        if layer.learn else None for layer in layers]
    if record:
        result.record = {"input": np.concatenate(rec_in),
                         "spikes": [np.concatenate(s) for s in rec_s],
                         "v": [np.concatenate(v) for v in rec_v]}
    return result
