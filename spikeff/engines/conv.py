"""Vectorized engine for networks with convolutional layers (any mix of conv and dense layers).

Same model and same chunked scheme as :mod:`spikeff.engines.vectorized` (which runs dense-only
networks, unchanged); per chunk of ``k`` steps and per layer:

1. **traces** of the layer's input (image + global inputs, after the layer below's pooling):
   ``e_u`` (and ``e_v`` when learning) for the chunk, :func:`spikeff.neuron.trace_scan` (numpy)
   or the filter GEMM (other array-API namespaces);
2. **currents**: a conv layer's ``u[t] = conv(W, e_u[t])`` as one GEMM ``im2col(e_u) @ W.T``,
   ``(k*B*P, C*k*k + G) @ (C*k*k + G, channels)`` (P output positions), done in row blocks of at
   most ``max_elements`` patch entries so memory stays bounded for large maps; a dense layer
   ``e_u @ W.T``;
3. **membrane**: :func:`spikeff.neuron.lif_scan` on all (channel, position) neurons;
4. **goodness** ``g(v)``, mean over the layer's neurons and steps (membrane energy per layer), and,
   when learning, the exact subthreshold gradient of the shared kernel: the sum over positions
   of ``g'(v) (outer) e_v`` patches, one GEMM ``post.T @ im2col(e_v)`` (the presynaptic
   eligibility trace through the kernel = im2col of the traces). The bias (one per channel)
   gets the sum over positions of the dense rule.

The spikes of a conv layer are pooled (:func:`spikeff.layers.pool_spikes`) before they become
the next layer's input (one step of synaptic delay, as between dense layers). Memory is
O(chunk_steps): training replays a phase, as the dense engine does.
"""
from __future__ import annotations

import numpy as np

from ..backend import astype, namespace, to_backend, to_numpy
from ..goodness import Goodness
from ..layers import Geometry, im2col, pool_spikes
from ..neuron import DiscreteLIF, bias_trace, lif_scan, lif_scan_xp, trace_filter, trace_scan
from .base import PhaseResult
from .conv_numpy import conv_currents_np, conv_kernel_grad_np
from .vectorized import _parallel

MAX_ELEMENTS = 1 << 23     # patch entries per im2col block (32 MB in float32)


def _permute(a, axes, xp):
    return a.transpose(axes) if xp is np else xp.permute_dims(a, axes)


def _split(W, geo: Geometry):
    """(kernels (channels, C*k*k), label maps (N, G) or None) of a conv layer's weights."""
    ckk = geo.n_kernel
    return W[:, :ckk], (xp_reshape(W[:, ckk:], (geo.n_neurons, geo.n_global)) if geo.n_global else None)


def xp_reshape(a, shape):
    return a.reshape(shape) if isinstance(a, np.ndarray) else namespace(a).reshape(a, shape)


def conv_currents(X, W, geo: Geometry, xp=np, max_elements: int = MAX_ELEMENTS):
    """``conv(W, x)`` for rows ``X`` (R, M) -> (R, N), neurons in (channel, row, column) order.

    The image part as ``im2col(X) @ Wk.T`` in row blocks of at most ``max_elements`` patch entries;
    the global inputs (labels) through their maps as one small GEMM ``X_g @ Wg.T``."""
    R, P, Co = X.shape[0], geo.n_positions, geo.spec.channels
    Wk, Wg = _split(W, geo)
    step = max(1, max_elements // max(1, P * Wk.shape[1]))
    parts = []
    for r in range(0, R, step):
        Y = im2col(X[r:min(r + step, R), ...], geo, xp) @ Wk.T                    # (r*P, Co)
        parts.append(_permute(xp.reshape(Y, (-1, P, Co)), (0, 2, 1), xp))
    U = parts[0] if len(parts) == 1 else (np.concatenate(parts) if xp is np else xp.concat(parts, axis=0))
    U = xp.reshape(U, (R, Co * P))
    if Wg is not None:
        U = U + X[:, geo.n_in - geo.n_global:] @ Wg.T
    return U


def conv_kernel_grad(post, X, geo: Geometry, xp=np, max_elements: int = MAX_ELEMENTS):
    """``sum_r sum_p post[r, o, p] * patch(X[r], p)``: (channels, C*k*k + G), for ``post`` (R, N)
    (neurons in (channel, position) order) and presynaptic traces ``X`` (R, M): the shared-kernel
    gradient is the sum over positions, one GEMM ``post.T @ im2col(X)`` per row block."""
    R, P, Co = X.shape[0], geo.n_positions, geo.spec.channels
    F = geo.n_kernel
    post3 = xp.reshape(post, (R, Co, P))
    step = max(1, max_elements // max(1, P * F))
    dW = None
    for r in range(0, R, step):
        p = xp.reshape(_permute(post3[r:min(r + step, R), ...], (0, 2, 1), xp), (-1, Co))
        g = p.T @ im2col(X[r:min(r + step, R), ...], geo, xp)
        dW = g if dW is None else dW + g
    if geo.n_global:
        dWg = xp.reshape(post.T @ X[:, geo.n_in - geo.n_global:], (Co, P * geo.n_global))
        dW = np.concatenate([dW, dWg], axis=1) if xp is np else xp.concat([dW, dWg], axis=1)
    return dW


class _Layer:
    """State and work of one layer for one phase (O(chunk) memory)."""

    def __init__(self, W, bias, geo: Geometry, lif, goodness, B, modulator, T, xp, normalize):
        self.W, self.geo, self.lif, self.goodness, self.xp = W, geo, lif, goodness, xp
        self.normalize = normalize
        self.B, self.N, self.M, self.dtype = B, geo.n_neurons, geo.n_in, W.dtype
        self.np = xp is np
        self.learn = modulator is not None
        if bias is not None and geo.is_conv:      # one bias per channel, the same at every position
            C, P = geo.spec.channels, geo.n_positions
            bias = xp.reshape(xp.broadcast_to(xp.reshape(bias, (C, 1)), (C, P)), (C * P,))
        self.bias = bias
        f64 = np.float64 if self.np else xp.float64
        zeros = (lambda shape, dt=self.dtype: xp.zeros(shape, dtype=dt))
        B, N, M = self.B, self.N, self.M
        self.state = zeros((3, B, M))                  # e_u, e_v at the chunk start, x[t0-1]
        self.dec = zeros((B, N))
        self.ref = (zeros((B, N), np.int32 if self.np else xp.int32) if lif.refractory_steps > 0 else None)
        self.g_acc = zeros((B, N), f64)
        self.counts = zeros((B, N), f64)
        self._filters = {}
        if self.learn:
            scale = np.asarray(to_numpy(modulator), dtype=np.float64) / (T * N)
            self.scale = to_backend(scale.reshape(1, B, 1), xp, dtype=self.dtype)
            self.dW = zeros(tuple(W.shape), f64)
            self.db = zeros((N,), f64)

    def _traces(self, x, k):
        """(e_u, e_v or None) of the chunk, each (k, B, M)."""
        xp, B, M, lif = self.xp, self.B, self.M, self.lif
        if self.np:
            Z = np.concatenate([self.state, x[:k - 1]])
            E = np.empty(((2 if self.learn else 1) * k, B, M), dtype=self.dtype)
            trace_scan(Z, E, k, lif, self.learn)
        else:
            if k not in self._filters:
                self._filters[k] = to_backend(trace_filter(lif, k, with_ev=self.learn), xp, dtype=self.dtype)
            Z = xp.concat([self.state, x[:k - 1, ...]], axis=0)
            E = xp.reshape(self._filters[k] @ xp.reshape(Z, (k + 2, B * M)), (-1, B, M))
        ev = E[k:2 * k, ...] if self.learn else None
        ev_end = E[2 * k - 1, ...] if self.learn else self.state[1, ...]
        self.state = xp.stack([E[k - 1, ...], ev_end, x[k - 1, ...]])
        return E[:k, ...], ev

    def run_chunk(self, x, k, e_b_steps, record):
        xp, B, N, M, lif, geo = self.xp, self.B, self.N, self.M, self.lif, self.geo
        if self.normalize:      # length normalisation per step, as the dense engine
            x = x * xp.sqrt(M / xp.maximum(xp.sum(x, axis=2, keepdims=True), xp.asarray(1, dtype=x.dtype)))
        eu, ev = self._traces(x, k)
        Eu = xp.reshape(eu, (k * B, M))
        if self.np and geo.is_conv:         # the numpy fast path: wide GEMMs, reused buffers
            U = conv_currents_np(Eu, self.W, geo, np.empty((k * B, N), dtype=self.dtype), MAX_ELEMENTS)
        else:
            U = conv_currents(Eu, self.W, geo, xp) if geo.is_conv else Eu @ self.W.T
        U = xp.reshape(U, (k, B, N))
        if self.bias is not None:
            U = U + self.bias
        if self.np:
            V = np.ascontiguousarray(U)
            ref = self.ref
            _parallel(lambda sl: lif_scan(V[:, sl], self.dec[sl], lif, None if ref is None else ref[sl]), B, N)
        else:
            V, self.dec, self.ref = lif_scan_xp(U, self.dec, lif, xp, self.ref)
        spikes = astype(V > lif.v_threshold, self.dtype, xp)
        self.counts += astype(xp.sum(spikes, axis=0), self.counts.dtype, xp)
        v_rec = np.array(to_numpy(V)) if record else None
        # goodness and gradient
        fused = self.goodness.fused if self.np else None
        if fused is not None:
            post = np.empty_like(V) if self.learn else None
            scale = self.scale if self.learn else None
            _parallel(lambda sl: fused(V[:, sl], None if post is None else post[:, sl],
                                       None if scale is None else scale[:, sl]), B, N)
            self.g_acc += V.sum(axis=0)
        else:
            self.g_acc += astype(xp.sum(self.goodness.g(V), axis=0), self.g_acc.dtype, xp)
            post = self.goodness.dg(V) * self.scale if self.learn else None
        if self.learn:
            post2 = xp.reshape(post, (k * B, N))
            Ev = xp.reshape(ev, (k * B, M))
            if self.np and geo.is_conv:
                self.dW += conv_kernel_grad_np(post2, Ev, geo, MAX_ELEMENTS)
            else:
                g = conv_kernel_grad(post2, Ev, geo, xp) if geo.is_conv else post2.T @ Ev
                self.dW += astype(g, self.dW.dtype, xp)
            eb = e_b_steps if self.np else to_backend(e_b_steps, xp, dtype=np.float64)
            self.db += eb @ astype(xp.sum(post, axis=1), self.db.dtype, xp)
        out = xp.reshape(pool_spikes(xp.reshape(spikes, (k * B, N)), geo, xp), (k, B, geo.n_out))
        return out, spikes, v_rec

    def grads(self):
        xp, geo = self.xp, self.geo
        db = self.db
        if geo.is_conv:
            db = xp.sum(xp.reshape(db, (geo.spec.channels, geo.n_positions)), axis=1)
        return astype(self.dW, self.dtype, xp), astype(db, self.dtype, xp)


def run_phase(weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int,
              modulators=None, record: bool = False, normalize: bool = False, geometries=None) -> PhaseResult:
    """Simulate one phase of a network of conv and dense layers (``geometries``: one
    :class:`spikeff.layers.Geometry` per layer) on the spikes of ``source``. Arguments and result
    as :func:`spikeff.engines.vectorized.run_phase`; a conv layer's weights are its kernels
    (channels, C*k*k + G), its bias and bias gradient one per channel; ``record`` gives the
    unpooled spikes and potentials of every layer, neurons in (channel, row, column) order."""
    if geometries is None or len(geometries) != len(weights):
        raise ValueError("run_phase (conv engine) needs one geometry per layer")
    xp = namespace(*weights)
    B, T, L = source.shape[0], source.n_steps, len(weights)
    if source.shape[1] != geometries[0].n_in:
        raise ValueError(f"source has {source.shape[1]} channels, the first layer expects {geometries[0].n_in}")
    mods = modulators if modulators is not None else [None] * L
    layers = [_Layer(W, biases[l], geometries[l], lif, goodness, B, mods[l], T, xp, normalize and l > 0)
              for l, W in enumerate(weights)]
    rec_in, rec_s, rec_v = [], [[] for _ in range(L)], [[] for _ in range(L)]
    e_b = 0.0
    for chunk in source.chunks(chunk_steps):
        k = chunk.shape[0]
        e_b_steps, e_b = bias_trace(lif.a_mem, e_b, k)     # dv[t]/db without reset, this chunk
        if record:
            rec_in.append(chunk.astype(bool))
        x = chunk if xp is np else to_backend(chunk, xp, dtype=chunk.dtype)
        for l, layer in enumerate(layers):
            x, s, v = layer.run_chunk(x, k, e_b_steps, record)
            if record:
                rec_s[l].append(to_numpy(s).astype(bool))
                rec_v[l].append(v)
    neuron_g = [to_numpy(layer.g_acc) / T for layer in layers]
    result = PhaseResult(goodness=[g.mean(axis=1) for g in neuron_g], neuron_goodness=neuron_g,
                         spike_counts=[to_numpy(layer.counts).astype(np.int64) for layer in layers])
    if any(layer.learn for layer in layers):
        result.grads = [layer.grads() if layer.learn else None for layer in layers]
    if record:
        result.record = {"input": np.concatenate(rec_in),
                         "spikes": [np.concatenate(s) for s in rec_s],
                         "v": [np.concatenate(v) for v in rec_v]}
    return result
