"""Vectorized engine for networks with convolutional layers (any mix of conv and dense layers).

Same model and same chunked scheme as :mod:`spikeff.engines.vectorized` (which runs dense-only
networks, unchanged); per chunk of ``k`` steps and per layer:

1. **traces** of the layer's input (image + global inputs, after the layer below's pooling):
   ``e_u`` (and ``e_v`` when learning) for the chunk, :func:`spikeff.neuron.trace_scan` (numpy)
   or the filter GEMM (other array-API namespaces);
2. **currents**: a conv layer's ``u[t] = conv(W, e_u[t])`` as one GEMM ``im2col(e_u) @ W.T``,
   ``(k*B*P, C*k*k + G) @ (C*k*k + G, channels)`` (P output positions), done in row blocks of at
   most ``max_elements`` patch entries so memory stays bounded for large maps; a dense layer
   ``e_u @ W.T``. On numpy, :mod:`spikeff.engines.conv_numpy` does the same sums with the patches
   laid out the other way (wide GEMMs ``W @ patches``, reused buffers; equal to float rounding);
3. **membrane**: :func:`spikeff.neuron.lif_scan` on all (channel, position) neurons (numpy: with
   the spikes, counts and goodness, in cache-sized blocks of the batch shared by the engine threads);
4. **goodness** ``g(v)``, mean over the layer's neurons and steps (membrane energy per layer), and,
   when learning, the exact subthreshold gradient of the shared kernel: the sum over positions
   of ``g'(v) m (outer) e_v`` patches (``m``: the modulator of the neuron's sample, or, with
   per-channel goodness, of its (sample, channel): :func:`_scale`), one GEMM
   ``post.T @ im2col(e_v)`` (the presynaptic eligibility trace through the kernel = im2col of
   the traces). The bias (one per channel)
   gets the sum over positions of the dense rule.

The spikes of a conv layer are pooled (:func:`spikeff.layers.pool_spikes`) before they become
the next layer's input (one step of synaptic delay, as between dense layers). Memory is
O(chunk_steps) when training replays a phase; as the dense engine, training instead keeps the
first pass's factors (``keep``: potentials and presynaptic traces of the kept rows,
:func:`store_bytes`) when they fit ``store_budget_mb``, and :func:`grads_from_store` computes the
update from them with the replay's code (bit-identical), without simulating the phase again.

When the parts of the batch draw the same spikes on the image channels (``shared_input`` of the
source, a :class:`spikeff.encoding.SharedInput`: ``shared_input_noise``, e.g. the regular code,
whose spikes depend on the image alone), a first conv layer on numpy computes the image's current
once per sample (kept for the batch's next phase: the neutral pass's serves the positive and
negative rows) and adds each row's label maps' current; its kernels' update multiplies the image
patches once by the parts' summed factors. The same sums in another order (equal to rounding), as
the dense engine's :func:`spikeff.engines.vectorized._shared_currents`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import astype, namespace, to_backend, to_numpy
from ..goodness import Goodness
from ..layers import Geometry, im2col, pool_spikes
from ..neuron import DiscreteLIF, bias_trace, lif_scan, lif_scan_xp, trace_filter, trace_scan
from .base import PhaseResult
from .conv_numpy import conv_currents_np, conv_kernel_grad_np, label_currents_np, label_grad_np
from .vectorized import _kept_share, _parallel, _parallel_tiles

MAX_ELEMENTS = 1 << 23     # patch entries per im2col block (32 MB in float32)
NEURON_BLOCK = 1 << 18     # neuron-steps per block of the elementwise work (1 MB in float32: in the cache)


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


def _in_blocks(fn, B: int, row_elements: int):
    """``fn(rows)`` over blocks of the batch's rows of about :data:`NEURON_BLOCK` elements (they
    stay in the cache through the several passes of ``fn``), the blocks shared by the engine threads."""
    _parallel_tiles(fn, B, row_elements, max(1, NEURON_BLOCK // max(1, row_elements)))


def _scale(modulator, geo: Geometry, B: int, T: int):
    """The modulator's part of the learning factor, float64 numpy, broadcastable to (k, B, N).

    ``modulator`` (B,): ``dL/dG`` per sample for the layer's goodness ``G`` (mean over its N neurons
    and T steps): ``m / (T N)``, shape (1, B, 1). (B, channels), a conv layer with
    ``goodness_scope = "channel"``: ``dL/dG_c`` per sample and channel, ``G_c`` the mean over the
    channel's P positions and T steps: neuron (c, p) gets its channel's ``m[:, c] / (T P)``, (1, B, N)."""
    m = np.asarray(to_numpy(modulator), dtype=np.float64)
    if m.ndim == 1:
        return (m / (T * geo.n_neurons)).reshape(1, B, 1)
    if not geo.is_conv or m.shape != (B, geo.spec.channels):
        raise ValueError(f"modulators of shape {m.shape}: per (sample, channel) modulators need a conv "
                         f"layer and shape ({B}, channels)")
    return np.repeat(m / (T * geo.n_positions), geo.n_positions, axis=1).reshape(1, B, geo.n_neurons)


class _Layer:
    """State and work of one layer for one phase (O(chunk) memory)."""

    def __init__(self, W, bias, geo: Geometry, lif, goodness, B, modulator, T, xp, normalize, keep=None,
                 share=None):
        self.W, self.geo, self.lif, self.goodness, self.xp = W, geo, lif, goodness, xp
        self.normalize = normalize
        # the input's image channels are the same in share.copies parts of the batch (numpy, a
        # first conv layer): its image current and kernel update once per sample (_shared_*)
        self.share = share if (xp is np and geo.is_conv and not normalize) else None
        self.t0 = 0
        self.B, self.N, self.M, self.dtype = B, geo.n_neurons, geo.n_in, W.dtype
        self.np = xp is np
        self.learn = modulator is not None
        self.keep, self.stored = keep, []      # rows whose v and e_v are stored (None: store nothing)
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
        self.with_ev = self.learn or keep is not None
        if self.learn:
            self.scale = to_backend(_scale(modulator, geo, B, T), xp, dtype=self.dtype)
            self.dW = zeros(tuple(W.shape), f64)
            self.db = zeros((N,), f64)

    def _traces(self, x, k):
        """(e_u, e_v or None) of the chunk, each (k, B, M)."""
        xp, B, M, lif = self.xp, self.B, self.M, self.lif
        if self.np:
            Z = np.concatenate([self.state, x[:k - 1]])
            E = np.empty(((2 if self.with_ev else 1) * k, B, M), dtype=self.dtype)
            trace_scan(Z, E, k, lif, self.with_ev)
        else:
            if k not in self._filters:
                self._filters[k] = to_backend(trace_filter(lif, k, with_ev=self.with_ev), xp, dtype=self.dtype)
            Z = xp.concat([self.state, x[:k - 1, ...]], axis=0)
            E = xp.reshape(self._filters[k] @ xp.reshape(Z, (k + 2, B * M)), (-1, B, M))
        ev = E[k:2 * k, ...] if self.with_ev else None
        ev_end = E[2 * k - 1, ...] if self.with_ev else self.state[1, ...]
        self.state = xp.stack([E[k - 1, ...], ev_end, x[k - 1, ...]])
        return E[:k, ...], ev

    def run_chunk(self, x, k, e_b_steps, record):
        xp, B, N, M, lif, geo = self.xp, self.B, self.N, self.M, self.lif, self.geo
        if self.normalize:      # length normalisation per step, as the dense engine
            x = x * xp.sqrt(M / xp.maximum(xp.sum(x, axis=2, keepdims=True), xp.asarray(1, dtype=x.dtype)))
        eu, ev = self._traces(x, k)
        Eu = xp.reshape(eu, (k * B, M))
        if self.np and geo.is_conv and self.share is not None:
            U = self._shared_currents(eu, k, np.empty((k * B, N), dtype=self.dtype))
        elif self.np and geo.is_conv:         # the numpy fast path: wide GEMMs, reused buffers
            U = conv_currents_np(Eu, self.W, geo, np.empty((k * B, N), dtype=self.dtype), MAX_ELEMENTS)
        else:
            U = conv_currents(Eu, self.W, geo, xp) if geo.is_conv else Eu @ self.W.T
        U = xp.reshape(U, (k, B, N))
        if self.bias is not None:
            U = U + self.bias
        if self.np:
            spikes, post, v_rec = self._neurons_np(np.ascontiguousarray(U), ev, e_b_steps, record)
            s2 = spikes.reshape(k * B, N)       # pooled as small counts (uint8 up to 255 per window), then cast
            s2 = s2.view(np.uint8) if geo.spec.pool ** 2 <= 255 else s2.astype(np.int32)
            out = pool_spikes(s2, geo, np, dtype=self.dtype).reshape(k, B, geo.n_out)
        else:
            V, self.dec, self.ref = lif_scan_xp(U, self.dec, lif, xp, self.ref)
            spikes = astype(V > lif.v_threshold, self.dtype, xp)
            self.counts += astype(xp.sum(spikes, axis=0), self.counts.dtype, xp)
            v_rec = np.array(to_numpy(V)) if record else None
            self.g_acc += astype(xp.sum(self.goodness.g(V), axis=0), self.g_acc.dtype, xp)
            post = self.post(V) if self.learn else None
            out = xp.reshape(pool_spikes(xp.reshape(spikes, (k * B, N)), geo, xp), (k, B, geo.n_out))
        if self.learn:
            self.accumulate(post, ev, e_b_steps)
        self.t0 += k
        return out, spikes, v_rec

    def _shared_currents(self, eu, k, out):
        """The chunk's currents into ``out`` (k*B, N) when the image channels are the same in the
        ``share.copies`` parts of the batch: the image's current of one part's rows (kept in
        ``share.currents`` for the batch's next phase, or taken from there) plus each row's own
        label maps' current."""
        share, W, geo = self.share, self.W, self.geo
        B, N, M = self.B, self.N, self.M
        c = share.copies
        R = B // c
        key = (self.t0, k)
        U = share.currents.get(key)
        if U is None or U[1] is not W:             # made from these weights, or made now
            A = np.ascontiguousarray(eu[:, :R]).reshape(k * R, M)
            Ui = conv_currents_np(A, W, geo, np.empty((k * R, N), dtype=self.dtype), MAX_ELEMENTS, labels=False)
            share.currents[key] = U = (Ui.reshape(k, R, N), W)
        if geo.n_global:
            label_currents_np(np.reshape(eu, (k * B, M)), W, geo, out)
        else:
            out[...] = 0
        o, Ui = out.reshape(k, c, R, N), U[0]
        _parallel(lambda sl: np.add(o[:, :, sl], Ui[:, None, sl], out=o[:, :, sl]), R, k * c * N)
        return out

    def _shared_grad(self, post, ev):
        """The chunk's update (channels, C*k*k + P*G) when the image channels are the same in the
        ``share.copies`` parts: the image patches once per sample times the parts' summed factors
        ``post`` (k, B, N); the label maps per row."""
        geo, c = self.geo, self.share.copies
        k, B, N = post.shape
        R, M = B // c, ev.shape[2]
        P = post.reshape(k, c, R, N).sum(axis=1).reshape(k * R, N)
        A = np.ascontiguousarray(ev[:, :R]).reshape(k * R, M)
        dW = conv_kernel_grad_np(P, A, geo, MAX_ELEMENTS, labels=False)
        if geo.n_global:
            dW[:, geo.n_kernel:] = label_grad_np(post.reshape(k * B, N), ev.reshape(k * B, M), geo)
        return dW

    def _neurons_np(self, V, ev, e_b_steps, record):
        """numpy: membrane (in place on the currents ``V`` (k, B, N)), spikes (bool), spike counts,
        the kept rows' factors, goodness and learning factor, each part of the batch in one engine
        thread (one pass of thread dispatch per chunk). Returns (spikes, post or None, v or None)."""
        k, B, N = V.shape
        lif, fused, ref = self.lif, self.goodness.fused, self.ref
        spikes = np.empty(V.shape, dtype=bool)
        Vc = np.empty_like(V) if (self.keep is not None or record) else None   # v before g(v) overwrites it
        post = np.empty_like(V) if (self.learn and fused is not None) else None

        def block(sl):
            Vs = V[:, sl]
            lif_scan(Vs, self.dec[sl], lif, None if ref is None else ref[sl], spikes=spikes[:, sl])
            self.counts[sl] += spikes[:, sl].sum(axis=0)
            if Vc is not None:
                np.copyto(Vc[:, sl], Vs)
            if fused is not None:
                fused(Vs, None if post is None else post[:, sl], None if post is None else self.scale[:, sl])
                self.g_acc[sl] += Vs.sum(axis=0)
        _in_blocks(block, B, k * N)
        if fused is None:
            self.g_acc += self.goodness.g(V).sum(axis=0)
            post = self.goodness.dg(V) * self.scale if self.learn else None
        if self.keep is not None:       # the kept rows' learning factors: store_bytes numbers, no more
            kept = Vc[:, self.keep]
            self.stored.append((kept if kept.shape[1] == B else kept.copy(), ev[:, self.keep].copy(), e_b_steps))
        return spikes, post, (Vc if record else None)

    def post(self, V):
        """The learning factor ``g'(v) * modulator / (T N)`` (k, B, N) of the pre-reset potentials
        ``V``; the numpy fused kernel overwrites ``V`` with ``g(v)``."""
        fused = self.goodness.fused if self.np else None
        if fused is None:
            return self.goodness.dg(V) * self.scale
        post, scale = np.empty_like(V), self.scale
        _in_blocks(lambda sl: fused(V[:, sl], post[:, sl], scale[:, sl]), self.B, V.shape[0] * self.N)
        return post

    def accumulate(self, post, ev, e_b_steps):
        """Add the chunk's update: kernels (and label maps) from ``post`` (k, B, N) and the
        presynaptic traces ``ev`` (k, B, M), the bias from the bias trace ``e_b_steps`` (k,)."""
        xp, geo, k = self.xp, self.geo, post.shape[0]
        post2 = xp.reshape(post, (k * self.B, self.N))
        Ev = xp.reshape(ev, (k * self.B, self.M))
        if self.np and geo.is_conv and self.share is not None and self.share.copies > 1:
            self.dW += self._shared_grad(post, ev)
        elif self.np and geo.is_conv:
            self.dW += conv_kernel_grad_np(post2, Ev, geo, MAX_ELEMENTS)
        else:
            g = conv_kernel_grad(post2, Ev, geo, xp) if geo.is_conv else post2.T @ Ev
            self.dW += astype(g, self.dW.dtype, xp)
        eb = e_b_steps if self.np else to_backend(e_b_steps, xp, dtype=np.float64)
        self.db += eb @ astype(xp.sum(post, axis=1), self.db.dtype, xp)

    def grads(self):
        xp, geo = self.xp, self.geo
        db = self.db
        if geo.is_conv:
            db = xp.sum(xp.reshape(db, (geo.spec.channels, geo.n_positions)), axis=1)
        return astype(self.dW, self.dtype, xp), astype(db, self.dtype, xp)


@dataclass
class ConvStoredFactors:
    """What the local update needs of a phase, for the kept rows (see :func:`grads_from_store`):
    ``chunks[l]``, per chunk ``(v, e_v, e_b_steps)``: pre-reset potentials (k, R, N), presynaptic
    traces (k, R, M) and the bias trace (k,). Layer ``l``'s arguments to rebuild its learner."""

    chunks: list
    layers: list            # per layer: (W, geometry)
    lif: DiscreteLIF
    goodness: Goodness
    n_steps: int
    rows: int
    consumed: bool = False
    share: object = None        # the first layer's SharedInput when whole parts of the batch were kept

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes + e.nbytes for layer in self.chunks for v, e, _ in layer))


def store_bytes(geometries, rows: int, n_steps: int, itemsize: int) -> int:
    """Bytes that storing a phase of ``rows`` batch rows takes: ``T x rows x (N + M)`` numbers per
    layer (potentials and presynaptic traces)."""
    return int(n_steps * rows * sum(g.n_neurons + g.n_in for g in geometries) * itemsize)


def grads_from_store(stored: ConvStoredFactors, modulators) -> list:
    """The update of each layer ``[(dW, db)]`` from a stored phase: the same factors and the same
    code as a replay (``run_phase(..., modulators=...)``) of the kept rows, so equal to it
    bit for bit. Consumes ``stored`` (the kept potentials are overwritten)."""
    if stored.consumed:
        raise RuntimeError("grads_from_store: these stored factors were already used; keep the phase again")
    stored.consumed = True
    out = []
    for l, chunks in enumerate(stored.chunks):
        m = modulators[l]
        if m is None or not chunks:
            out.append(None)
            continue
        m = np.asarray(to_numpy(m), dtype=np.float64)
        W, geo = stored.layers[l]
        if m.shape not in ((stored.rows,), (stored.rows, geo.spec.channels if geo.is_conv else -1)):
            raise ValueError(f"layer {l}: modulators must have shape ({stored.rows},) (one per kept row), "
                             f"or ({stored.rows}, channels) for a conv layer, got {m.shape}")
        layer = _Layer(W, None, geo, stored.lif, stored.goodness, stored.rows, m, stored.n_steps, np, False,
                       share=stored.share if l == 0 else None)
        for V, Ev, e_b_steps in chunks:
            layer.accumulate(layer.post(V), Ev, e_b_steps)
        out.append(layer.grads())
    return out


def run_phase(weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int,
              modulators=None, record: bool = False, normalize: bool = False, geometries=None,
              keep=None) -> PhaseResult:
    """Simulate one phase of a network of conv and dense layers (``geometries``: one
    :class:`spikeff.layers.Geometry` per layer) on the spikes of ``source``. Arguments and result
    as :func:`spikeff.engines.vectorized.run_phase`; a conv layer's weights are its kernels
    (channels, C*k*k + G), its bias and bias gradient one per channel; ``record`` gives the
    unpooled spikes and potentials of every layer, neurons in (channel, row, column) order.
    ``modulators[l]``: (B,) per sample, or, for a conv layer whose goodness is per channel,
    (B, channels) per sample and channel (:func:`_scale`; ``result.goodness`` stays the layer's).
    ``keep`` (a slice of rows, numpy only): keep those rows' learning factors in
    ``result.stored`` (:class:`ConvStoredFactors`) for :func:`grads_from_store` instead of a replay."""
    if geometries is None or len(geometries) != len(weights):
        raise ValueError("run_phase (conv engine) needs one geometry per layer")
    xp = namespace(*weights)
    if keep is not None and xp is not np:
        raise ValueError("run_phase (conv engine): keep (store) needs numpy weights; replay instead")
    B, T, L = source.shape[0], source.n_steps, len(weights)
    if source.shape[1] != geometries[0].n_in:
        raise ValueError(f"source has {source.shape[1]} channels, the first layer expects {geometries[0].n_in}")
    mods = modulators if modulators is not None else [None] * L
    share = getattr(source, "shared_input", None) if xp is np else None    # see _Layer._shared_currents
    layers = [_Layer(W, biases[l], geometries[l], lif, goodness, B, mods[l], T, xp, normalize and l > 0, keep,
                     share=share if l == 0 else None)
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
    if keep is not None:
        rows = len(range(B)[keep])
        result.stored = ConvStoredFactors([layer.stored for layer in layers],
                                          [(layer.W, layer.geo) for layer in layers], lif, goodness, T, rows,
                                          share=_kept_share(layers[0].share, range(B)[keep], B))
    if any(layer.learn for layer in layers):
        result.grads = [layer.grads() if layer.learn else None for layer in layers]
    if record:
        result.record = {"input": np.concatenate(rec_in),
                         "spikes": [np.concatenate(s) for s in rec_s],
                         "v": [np.concatenate(v) for v in rec_v]}
    return result
