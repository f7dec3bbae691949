"""Vectorized batch engine: all samples and neurons as arrays, time simulated in chunks.

The model is the one of :mod:`spikeff.neuron`; per chunk of ``k = chunk_steps`` steps and per layer:

1. **traces** (linear part): the presynaptic traces ``e_u`` (and ``e_v`` when learning) of the
   whole chunk, from ``Z = [e_u, e_v at the chunk start, x[t-1] for the k steps]``: on GPU
   backends one small GEMM ``F @ Z`` with the causal filter ``F = trace_filter(k)``
   ((2k) x (k+2)); on numpy the same recurrence in place (:func:`spikeff.neuron.trace_scan`,
   faster on CPUs than a small-by-huge GEMM);
2. **currents**: ``u[t] = W @ e_u[t]`` (exactly the synaptic current) for the chunk as one GEMM
   ``(k*B, M) @ (M, N)``; the leading steps whose traces are all zero (a phase starts from rest:
   e_u[0] = 0 in every layer, and layer l cannot fire before step l without a bias) get exactly
   zero current without GEMM rows (:data:`SKIP_SILENT_STEPS`; 10% of layer 1's rows and 20% of
   layer 2's at T = 10);
3. **membrane** (nonlinear part): :func:`spikeff.neuron.lif_scan`, the only loop over time steps,
   4 in-place elementwise passes per step on (B, N) arrays; the spikes are written straight into
   the next layer's input buffer (one step of synaptic delay between layers, as stepping the whole
   network in time);
4. **goodness**: ``g(v)`` (and ``g'(v)`` when learning) for the whole chunk at once, in place.

On numpy, 3 and 4 (with the spike counts and the kept potentials) run as one threaded pass over
tiles of :data:`TILE_ROWS` batch rows (the tile's potentials are reused while in cache), the same
operations in the same order element by element as separate passes (bit-identical; with
``record=True`` they run separately, since the records need the potentials before g(v)). The
source writes each chunk's input spikes straight into the first layer's input buffer
(:func:`spikeff.encoding.chunks_into`).

When the parts of the batch draw the same input spikes on the image channels (``shared_input``
of the source, a :class:`spikeff.encoding.SharedInput`: ``shared_input_noise``), the first layer's
current from the image is one GEMM over one part's rows, kept for the batch's next phase (the
neutral pass's serves the positive and negative rows), plus a GEMM over each row's own (label)
channels; its update multiplies the image traces once by the parts' summed factors
(:func:`_shared_currents`, :func:`_shared_update`): the same sums in another order.

Leaving out the silent steps' GEMM rows changes no value mathematically (their products are
exact zeros); the smaller GEMMs round the other rows' sums differently in the last bit (OpenBLAS's
blocking depends on the matrix shape: a row's result depends on how many rows the GEMM has), so
results differ from a run without it as they would with another BLAS thread count.

Learning (``modulators`` given): the exact subthreshold gradient of each layer's goodness,
``dG_b/dW = 1/(T N) sum_t g'(v_b[t]) (outer) e_v_b[t]``, weighted by the per-sample FF modulator
``m_b`` and summed over the batch: one GEMM ``(N, k*B) @ (k*B, M)`` per chunk (without the rows of
leading steps whose e_v are all zero: they add exactly nothing), the chunks summed in float64 (a
phase of one chunk, e.g. ``chunk_steps = T``: that GEMM's result itself, the same bits). The reset is
ignored in the gradient (as e-prop does). Since ``m_b`` needs the goodness of the whole window,
the update is computed after the phase, in one of two ways that give bit-identical updates:

* **store** (``keep=rows``): the first call also keeps, for the kept batch rows, what the update
  needs of every step (the pre-reset potentials ``v`` and the traces ``e_v``: ``T x rows x (N + M)``
  numbers per layer); :func:`grads_from_store` then forms ``g'(v) m_b`` and the same per-chunk
  gradient GEMMs without simulating again;
* **replay**: a second call with the modulators simulates the phase again (the input spikes are
  regenerated from the same seed, so the replay is exact) and accumulates the update chunk by
  chunk: memory O(chunk_steps), not O(T).

The caller chooses by a memory budget (:func:`store_bytes`; ``FFNetwork.store_budget_mb``). All
work buffers have ``chunk_steps`` rows and are reused from call to call (:func:`work_buffer`:
per thread, by name and shape; allocating them afresh costs a page fault per 4 KiB page).

Any array-API namespace works (the one of the weights: numpy, cupy, torch); numpy uses in-place
``out=`` kernels, others the functional form :func:`spikeff.neuron.lif_scan_xp`. Every array is
created on the device of the weights (a GPU, or ``array_api_strict``'s non-default device in the
tests), so the whole phase runs there.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..encoding import chunks_into
from ..backend import astype, device_of, dtype_name, namespace, to_backend, to_numpy
from ..goodness import Goodness
from ..neuron import DiscreteLIF, bias_trace, lif_scan, lif_scan_xp, trace_filter, trace_scan
from .base import PhaseResult, SpikeSource  # noqa: F401  (re-exported: engines import PhaseResult from here too)


@dataclass
class StoredFactors:
    """What the local update needs of a phase, for the kept rows (see :func:`grads_from_store`).

    ``chunks[l]``: list of ``(v, e_v, e_b_steps)`` per chunk: pre-reset potentials (k, R, N), presynaptic
    traces e_v (k, R, M) (weights' namespace and dtype) and the bias trace (k,) float64.
    """

    chunks: list
    n_steps: int
    rows: int
    goodness: Goodness
    consumed: bool = False              # grads_from_store overwrote the kept potentials
    share: object = None                # the first layer's SharedInput when all rows were kept

    @property
    def nbytes(self) -> int:
        return int(sum((v.size + e.size) * _np_dtype(v.dtype).itemsize
                       for layer in self.chunks for v, e, _ in layer))


def store_bytes(weights, rows: int, n_steps: int) -> int:
    """Bytes that storing a phase of ``rows`` batch rows and ``n_steps`` steps takes
    (``T x rows x (N + M)`` numbers per layer, in the weights' dtype)."""
    item = _np_dtype(weights[0].dtype).itemsize
    return int(n_steps * rows * sum(W.shape[0] + W.shape[1] for W in weights) * item)


def _np_dtype(dtype):
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(dtype_name(dtype))


_POOL = None


def n_threads() -> int:
    """Threads for the elementwise work: pinned by training (:func:`spikeff.runs.pinned_threads`),
    else env ``SPIKEFF_NUM_THREADS``, else the CPUs we may use (at most 8). Results do not depend
    on it: every reduction is per sample or done after the parts are joined, in one order."""
    from ..runs import engine_threads
    return engine_threads()


TILE_ROWS = 32       # batch rows per tile of the fused membrane + goodness pass (about L2-sized)
FUSED_PASS = True    # False: the membrane and the goodness in separate passes (for tests; same bits)


def _parts(B, N, min_work=1 << 16):
    """Bounds of the parts of a batch of B rows (N columns) the engine threads share."""
    n = min(n_threads(), B) if B * N >= min_work else 1
    return np.linspace(0, B, max(n, 1) + 1).astype(int)


def _parallel_parts(fn, bounds):
    global _POOL
    n = len(bounds) - 1
    if _POOL is None or _POOL._max_workers < n:
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="spikeff")
    return list(_POOL.map(fn, [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]))


def _parallel(fn, B, N, min_work=1 << 16):
    """``fn(batch_slice)`` over parts of the batch in threads (numpy releases the GIL in ufuncs).

    Elementwise numpy work runs on one core; the GEMMs use all of them, so splitting the batch
    keeps all cores busy between the GEMMs. Returns the list of results.
    """
    bounds = _parts(B, N, min_work)
    if len(bounds) <= 2:
        return [fn(slice(None))]
    return _parallel_parts(fn, bounds)


def _parallel_tiles(fn, B, N, tile_rows):
    """``fn(tile)`` over tiles of at most ``tile_rows`` batch rows (cache-sized), the tiles of each
    part of the batch in one engine thread (:func:`_parallel`, ``N`` columns per row)."""
    def part(sl):
        a, b, _ = sl.indices(B)
        for r in range(a, b, tile_rows):
            fn(slice(r, min(r + tile_rows, b)))
    _parallel(part, B, N)


class _Layer:
    """Buffers and state of one layer for one phase (O(chunk_steps) memory)."""

    def __init__(self, W, bias, lif, goodness, B, K, modulator, T, xp, normalize=False, keep=None,
                 record=False, index=0, share=None):
        N, M = W.shape
        self.W, self.bias, self.lif, self.goodness, self.xp = W, bias, lif, goodness, xp
        # the input's first share.columns channels are the same in share.copies parts of the batch
        # (numpy, first layer): their current and update are computed once per sample (_shared_*)
        self.share, self.t0 = (share if xp is np and not normalize else None), 0
        self.normalize = normalize
        self.B, self.N, self.M, self.dtype = B, N, M, W.dtype
        self.np = xp is np
        self.device = None if self.np else device_of(W)
        self.learn = modulator is not None
        self.keep = keep                       # rows whose v and e_v are stored (None: store nothing)
        self.stored = []
        self.ev = self.learn or keep is not None   # the traces e_v are needed
        # numpy with a fused goodness kernel: _scan_and_goodness does the membrane, the spikes, the
        # counts, the kept factors and the goodness of a chunk in one threaded pass (not when the
        # potentials are recorded: they are overwritten with g(v))
        self.fused_goodness = (FUSED_PASS and self.np and goodness.fused is not None and not record
                               and (keep is None or keep.step in (None, 1)))
        self._filters = {}
        f64 = np.float64 if self.np else xp.float64
        dev = {} if self.np else {"device": self.device}
        if self.np:         # work buffers reused across calls (work_buffer), named per layer
            zeros = (lambda shape, dt=self.dtype, name=None: work_buffer((name, index), shape, dt, zero=True))
            empty = (lambda shape, dt=self.dtype, name=None: work_buffer((name, index), shape, dt))
        else:
            zeros = (lambda shape, dt=self.dtype, name=None: xp.zeros(shape, dtype=dt, **dev))
        self.dec = zeros((B, N), name="dec")                      # a_mem * v after reset
        self.ref = (zeros((B, N), np.int32 if self.np else xp.int32, name="ref")
                    if lif.refractory_steps > 0 else None)
        self.g_acc = zeros((B, N), f64, name="g_acc")
        self.counts = zeros((B, N), f64, name="counts")
        if self.np:
            # Z rows: e_u, e_v (state at the chunk start), x[t0-1], then the chunk's k input steps
            self.Z = zeros((K + 3, B, M), name="Z")
            self.E = empty(((2 if self.ev else 1) * K, B * M), name="E")
            self.U = empty((K, B, N), name="U")
            self.mask = empty((B, N), bool, name="mask")
            self.rmask = empty((B, N), bool, name="rmask") if self.ref is not None else None
        else:
            self.state = zeros((3, B, M))                         # e_u, e_v, x[t0-1]
        if self.learn:
            scale = np.asarray(to_numpy(modulator), dtype=np.float64) / (T * N)
            self.scale = to_backend(scale.reshape(1, B, 1), xp, self.device, dtype=self.dtype)
            self.db = zeros((N,), f64, name="db")
            if self.np:             # dW: float64 sum of the chunks' dW_chunk, kept lazily (_accumulate)
                self.dW, self.n_chunks = empty((N, M), f64, name="dW"), 0
                self.post = empty((K, B, N), name="post")
                self.dW_chunk = empty((N, M), name="dW_chunk")
            else:
                self.dW = zeros((N, M), f64, name="dW")

    def input_buffer(self, k):
        """Where the layer below (or the source) writes this chunk's input spikes (numpy), or None."""
        return self.Z[3:3 + k] if self.np else None

    def filter(self, k):
        if k not in self._filters:
            f = trace_filter(self.lif, k, with_ev=self.ev)
            self._filters[k] = to_backend(f, self.xp, self.device, dtype=self.dtype)
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
            E = self.E[:(2 if self.ev else 1) * k]
            E3 = E.reshape(-1, B, M)
            _parallel(lambda sl: trace_scan(self.Z[:k + 2, sl], E3[:, sl], k, lif, self.ev), B, M)
            V = self.U[:k]
            # steps whose traces are all zero (the first steps of a phase from rest: e_u[0] = 0, and
            # a layer above one that cannot fire yet) have exactly zero current: no GEMM rows for them
            z = _silent_steps(E[:k].reshape(k, B, M))
            if z:
                V[:z] = 0
            if z < k and self.share is not None:
                _shared_currents(self, E[:k].reshape(k, B, M), V, z, k)
            elif z < k:
                np.matmul(E[z:k].reshape((k - z) * B, M), self.W.T, out=V[z:].reshape((k - z) * B, N))
            self.t0 += k
            self.Z[0] = E[k - 1].reshape(B, M)
            if self.ev:
                self.Z[1] = E[2 * k - 1].reshape(B, M)
            self.Z[2] = self.Z[2 + k]
            if self.bias is not None:
                V += self.bias
            if self.fused_goodness:     # the membrane and the goodness in one pass (goodness_chunk: done)
                self._scan_and_goodness(V, E, k, out, e_b_steps)
                return out, V, E

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
            ev_end = E[2 * k - 1, ...] if self.ev else self.state[1, ...]
            self.state = xp.stack([xp.reshape(E[k - 1, ...], (B, M)), xp.reshape(ev_end, (B, M)),
                                   x[k - 1, ...]])
            if self.bias is not None:
                U = U + self.bias
            V, self.dec, self.ref = lif_scan_xp(U, self.dec, lif, xp, self.ref)
            out = xp.astype(V > lif.v_threshold, self.dtype)   # (on V's device)
            self.counts += xp.astype(xp.sum(out, axis=0), self.counts.dtype)
        return out, V, E

    def _scan_and_goodness(self, V, E, k, out, e_b_steps):
        """numpy: per part of the batch and per tile of ``TILE_ROWS`` rows (cache-sized), the
        membrane recurrence (:func:`lif_scan`), the spikes into ``out``, the spike counts, the kept
        rows' potentials (store), ``g(v)`` (and ``g'(v) m_b`` when learning) and its sum over the
        chunk: one threaded region instead of two, each tile's potentials used while in cache.
        Element by element the same operations in the same order as the unfused path (the sums
        over the chunk's steps run in step order either way), so the results are bit-identical.
        Then, when learning, the chunk's gradient GEMM (:func:`_accumulate`)."""
        B, N, M, lif = self.B, self.N, self.M, self.lif
        fused = self.goodness.fused
        post = self.post[:k] if self.learn else None
        kept_v = None
        if self.keep is not None:
            rows = range(B)[self.keep]
            kept_v = np.empty((k, len(rows), N), dtype=self.dtype)
            ev = E[k:2 * k].reshape(k, B, M)
            self.stored.append((kept_v, ev[:, self.keep].copy(), e_b_steps.copy()))

        def tile(t):
            Vt = V[:, t]
            ref, rmask = (self.ref[t], self.rmask[t]) if self.ref is not None else (None, None)
            lif_scan(Vt, self.dec[t], lif, ref, self.mask[t], rmask)
            np.greater(Vt, lif.v_threshold, out=out[:, t])
            self.counts[t] += out[:, t].sum(axis=0)
            if kept_v is not None:          # the kept rows of this tile, before g(v) overwrites v
                lo, hi = max(t.start, rows.start), min(t.stop, rows.stop)
                if lo < hi:
                    kept_v[:, lo - rows.start:hi - rows.start] = V[:, lo:hi]
            fused(Vt, post[:, t] if self.learn else None, self.scale[:, t] if self.learn else None)
            self.g_acc[t] += Vt.sum(axis=0)
        _parallel_tiles(tile, B, N, TILE_ROWS)
        if self.learn:
            _accumulate(self, post, E[k:2 * k].reshape(k * B, M), k, e_b_steps)

    def goodness_chunk(self, V, E, k, e_b_steps):
        """Accumulate g(v) of the chunk (destroys V on numpy) and, when learning, the gradient."""
        if self.fused_goodness:                 # done with the membrane (_scan_and_goodness)
            return
        xp, B, N, M = self.xp, self.B, self.N, self.M
        if self.keep is not None:          # store v and e_v of the kept rows before V is overwritten
            ev = xp.reshape(E[k:2 * k, ...], (k, B, M))
            if self.np:
                self.stored.append((V[:, self.keep].copy(), ev[:, self.keep].copy(), e_b_steps.copy()))
            else:
                self.stored.append((xp.asarray(V[:, self.keep, :], copy=True),
                                    xp.asarray(ev[:, self.keep, :], copy=True), e_b_steps.copy()))
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
        _accumulate(self, post, xp.reshape(E[k:2 * k, ...], (k * B, M)), k, e_b_steps)


REUSE_BUFFERS = True         # False: fresh work buffers in every call
WORK_BUFFER_BYTES = 1 << 29  # at most this many bytes of reused work buffers per thread (LRU)
_WORK = threading.local()


def work_buffer(name, shape, dtype, zero=False):
    """A numpy work buffer of ``shape`` and ``dtype`` for one call of the engine, reused by the
    next call that asks for the same ``name``, shape and dtype in the same thread (least recently
    used first out above :data:`WORK_BUFFER_BYTES`). Each call allocating its buffers afresh
    costs the kernel's page faults on every large array (numpy's large arrays are mmapped):
    about a quarter of the time of readout inference on the Fashion-MNIST recipe. Never returned to
    the caller: results are new arrays. ``zero``: filled with zeros."""
    shape = tuple(int(n) for n in shape)
    if not REUSE_BUFFERS:
        return (np.zeros if zero else np.empty)(shape, dtype=dtype)
    pool = getattr(_WORK, "pool", None)
    if pool is None:
        pool = _WORK.pool = OrderedDict()
    key = (name, shape, np.dtype(dtype).str)
    a = pool.pop(key, None)
    if a is None:
        a = np.empty(shape, dtype=dtype)
    pool[key] = a
    total = sum(b.nbytes for b in pool.values())
    while total > WORK_BUFFER_BYTES and len(pool) > 1:
        _, old = pool.popitem(last=False)
        total -= old.nbytes
    if zero:
        a.fill(0)
    return a


SKIP_SILENT_STEPS = True     # False: GEMMs over every step, also those with all-zero traces


def _silent_steps(E) -> int:
    """Number of leading steps of ``E`` (k, B, M) whose rows are all exactly zero (0 when
    :data:`SKIP_SILENT_STEPS` is off). Their GEMM products are exact zeros, so leaving them out
    changes no value mathematically; the smaller GEMM may round the other rows' sums differently
    in the last bit (BLAS blocking depends on the matrix shape)."""
    if not SKIP_SILENT_STEPS:
        return 0
    z = 0
    while z < E.shape[0] and not E[z].any():
        z += 1
    return z


def _shared_currents(layer, E, V, z, k):
    """The currents of steps ``z..k-1`` into ``V`` (k, B, N) from the traces ``E`` (k, B, M) when
    the first ``columns`` input channels are the same in the ``copies`` parts of the batch
    (``layer.share``, a :class:`spikeff.encoding.SharedInput`): the image's current once per
    sample (kept in ``share.currents`` for the batch's next phase, or taken from there) plus each
    row's current from its own channels (the label). The same sums as the one GEMM in another
    order: equal up to rounding."""
    share, W = layer.share, layer.W
    c, n = share.copies, share.columns
    B, N = V.shape[1], V.shape[2]
    R = B // c
    key = (layer.t0, k)
    U = share.currents.get(key)
    if U is None or U[1] is not W:             # made from these weights, or made now
        # zeros on the steps before z: their traces are all zero, also in other phases' rows
        Ui = np.zeros((k, R, N), dtype=W.dtype)
        A = np.ascontiguousarray(E[z:k, :R, :n]).reshape((k - z) * R, n)
        np.matmul(A, W[:, :n].T, out=Ui[z:].reshape((k - z) * R, N))
        share.currents[key] = U = (Ui, W)
    Vz = V[z:k]
    if n < W.shape[1]:
        A = np.ascontiguousarray(E[z:k, :, n:]).reshape((k - z) * B, W.shape[1] - n)
        np.matmul(A, W[:, n:].T, out=Vz.reshape((k - z) * B, N))
    else:
        Vz[...] = 0
    Vz.reshape(k - z, c, R, N)[...] += U[0][z:k, None]


def _kept_share(share, rows: range, B: int):
    """The SharedInput of the kept ``rows`` of a batch of B rows: whole parts of the batch keep
    sharing their image channels (e.g. the positive and negative parts of neutral, positive and
    negative), so the store forms the update as the replay of those parts does; else None."""
    if share is None or not rows or rows.step != 1:
        return None
    R = B // share.copies
    if rows.start % R or rows.stop % R:
        return None
    return share.for_copies(len(rows) // R)


def _shared_update(acc, post, Ev, z, k, share):
    """This chunk's update into ``acc.dW_chunk`` when the first ``share.columns`` input channels
    are the same in the ``share.copies`` parts of the batch: from the image, the sum of the parts'
    factors ``post`` times the traces once per sample; from the other channels, per row."""
    c, n = share.copies, share.columns
    B, N, M = post.shape[1], post.shape[2], Ev.shape[2]
    R = B // c
    P = post[z:k].reshape(k - z, c, R, N).sum(axis=1).reshape((k - z) * R, N)
    A = np.ascontiguousarray(Ev[z:k, :R, :n]).reshape((k - z) * R, n)
    acc.dW_chunk[:, :n] = P.T @ A
    if n < M:
        A = np.ascontiguousarray(Ev[z:k, :, n:]).reshape((k - z) * B, M - n)
        acc.dW_chunk[:, n:] = post[z:k].reshape((k - z) * B, N).T @ A


def _accumulate(acc, post, Ev, k, e_b_steps):
    """``acc.dW += post^T Ev`` and ``acc.db += e_b . sum_b post`` for one chunk: the one place the
    update is formed, for the replay and for :func:`grads_from_store` (so both are bit-identical).
    ``post`` (k, B, N): ``g'(v) m_b / (T N)``; ``Ev`` (k*B, M)."""
    xp = acc.xp
    B, N = post.shape[1], post.shape[2]
    post2 = xp.reshape(post, (k * B, N))
    if acc.np:
        # rows of steps whose traces e_v are all zero add exactly nothing: left out of the GEMM
        z = _silent_steps(Ev.reshape(k, B, -1))
        if z < k:
            # the float64 sum starts only at a second chunk with rows (from the first chunk's
            # dW_chunk: exact); one chunk's update is its dW_chunk (_grad_result), the same bits
            # as 0 + dW_chunk in float64 cast back, without filling and casting the float64 sum
            if acc.n_chunks == 1:
                np.copyto(acc.dW, acc.dW_chunk)
            if acc.share is not None and acc.share.copies > 1:
                _shared_update(acc, post, Ev.reshape(k, B, -1), z, k, acc.share)
            else:
                np.matmul(post2[z * B:].T, Ev[z * B:], out=acc.dW_chunk)
            if acc.n_chunks >= 1:
                acc.dW += acc.dW_chunk
            acc.n_chunks += 1
        # over the whole batch at once (not per thread's part): the sum's order, and so its
        # last bits, do not depend on how many threads did the elementwise work
        acc.db += e_b_steps @ post.sum(axis=1, dtype=np.float64)
    else:
        acc.dW += astype(post2.T @ Ev, acc.dW.dtype, xp)
        eb = to_backend(e_b_steps, xp, acc.device, dtype=np.float64)
        acc.db += eb @ astype(xp.sum(post, axis=1), acc.db.dtype, xp)


def _grad_result(acc):
    """``(dW, db)`` of a layer's sums (a learning _Layer or an _Accumulator), new arrays in the
    weights' namespace and dtype (see :func:`_accumulate`)."""
    db = astype(acc.db, acc.dtype, acc.xp)
    if not acc.np:
        return astype(acc.dW, acc.dtype, acc.xp), db
    if acc.n_chunks == 0:
        return np.zeros(acc.dW.shape, dtype=acc.dtype), db
    if acc.n_chunks == 1:
        return acc.dW_chunk.copy(), db
    return acc.dW.astype(acc.dtype), db


class _Accumulator:
    """The gradient sums of one layer for :func:`grads_from_store` (same fields as a learning _Layer)."""

    def __init__(self, like_v, like_e, xp, index=0, share=None):
        self.xp, self.np = xp, xp is np
        self.share = share if self.np else None
        N, M = like_v.shape[2], like_e.shape[2]
        self.device = None if self.np else device_of(like_v)
        dev = {} if self.np else {"device": self.device}
        f64 = np.float64 if self.np else xp.float64
        self.dtype = like_v.dtype
        if self.np:
            self.dW, self.n_chunks = work_buffer(("acc_dW", index), (N, M), f64), 0
            self.db = work_buffer(("acc_db", index), (N,), f64, zero=True)
            self.dW_chunk = work_buffer(("dW_chunk", index), (N, M), self.dtype)
        else:
            self.dW = xp.zeros((N, M), dtype=f64, **dev)
            self.db = xp.zeros((N,), dtype=f64, **dev)


def grads_from_store(stored: StoredFactors, modulators) -> list:
    """The update of each layer from a stored phase: ``[(dW, db)]`` (weights' namespace and dtype),
    bit-identical to a replay (``run_phase(..., modulators=...)``) of the kept rows. Consumes
    ``stored`` (numpy: the kept potentials are overwritten; call it once per stored phase).

    ``modulators[l]`` (R,) per layer (R = the kept rows), or None for a layer that does not learn.
    """
    if stored.consumed:
        raise RuntimeError("grads_from_store: these stored factors were already used (the kept "
                           "potentials are overwritten); keep the phase again")
    out = []
    g = stored.goodness
    for l, chunks in enumerate(stored.chunks):
        m = modulators[l]
        if m is None or not chunks:
            out.append(None)
            continue
        v0, e0, _ = chunks[0]
        xp = np if isinstance(v0, np.ndarray) else namespace(v0)
        acc = _Accumulator(v0, e0, xp, index=l, share=stored.share if l == 0 else None)
        N, M, R = v0.shape[2], e0.shape[2], stored.rows
        m = np.asarray(to_numpy(m), dtype=np.float64)
        if m.shape != (R,):
            raise ValueError(f"layer {l}: modulators must have shape ({R},) (one per kept row), got {m.shape}")
        scale = to_backend((m / (stored.n_steps * N)).reshape(1, R, 1), xp, acc.device, dtype=acc.dtype)
        post_buf = work_buffer(("store_post", l), v0.shape, v0.dtype) if acc.np else None
        for V, Ev, e_b_steps in chunks:
            k = V.shape[0]
            if acc.np and g.fused is not None:
                stored.consumed = True
                post = post_buf[:k]
                # the same fused kernel as the replay, on the same v (the kept v is used only here:
                # overwriting it with g(v) saves a copy)
                _parallel(lambda sl: g.fused(V[:, sl], post[:, sl], scale[:, sl]), R, N)
            else:
                post = g.dg(V) * scale
            _accumulate(acc, post, xp.reshape(Ev, (k * R, M)), k, e_b_steps)
        out.append(_grad_result(acc))
    return out


def run_phase(weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int,
              modulators=None, record: bool = False, normalize: bool = False, keep=None) -> PhaseResult:
    """Simulate one phase of the network on the spikes of ``source`` (a SpikeSource).

    ``normalize``: layers after the first receive the spikes of the layer below scaled to a fixed
    length at every step, ``x[t] * sqrt(M / max(1, |x[t]|_0))`` (Hinton's length normalisation,
    per step: the next layer sees which neurons fired, not how many, so it cannot reuse the
    goodness of the layer below). Eligibility traces filter the scaled input, so the local rule
    stays the exact subthreshold gradient. Not representable by Lava's Dense + LIF.

    ``weights[l]`` has shape (N_l, M_l); ``biases[l]`` (N_l,) or None. ``modulators[l]`` (B,) or
    None per layer: when given, the layer's weight gradient ``sum_b m_b dG_b/dW`` is returned.
    ``record=True`` also returns the input spikes, spikes and pre-reset potentials for all steps.
    ``keep``: a slice of batch rows whose learning factors are stored for :func:`grads_from_store`
    (``PhaseResult.stored``; :func:`store_bytes` of memory), or None.
    """
    xp = namespace(*weights)
    if keep is not None and not isinstance(keep, slice):
        raise TypeError(f"keep must be a slice of batch rows or None, got {type(keep).__name__}")
    B, T, L = source.shape[0], source.n_steps, len(weights)
    K = min(chunk_steps, T)
    mods = modulators if modulators is not None else [None] * L
    share = getattr(source, "shared_input", None) if xp is np else None   # see _shared_currents
    layers = [_Layer(W, biases[l], lif, goodness, B, K, mods[l], T, xp, normalize=normalize and l > 0,
                     keep=keep, record=record, index=l, share=share if l == 0 else None)
              for l, W in enumerate(weights)]
    device = None if xp is np else device_of(weights[0])
    last_out = (work_buffer(("last_out", L), (K, B, weights[-1].shape[0]), weights[-1].dtype)
                if xp is np else None)
    rec_in, rec_s, rec_v = [], [[] for _ in range(L)], [[] for _ in range(L)]
    e_b = 0.0
    # numpy: the source writes each chunk's spikes straight into the first layer's input buffer
    steps = (chunks_into(source, chunk_steps, layers[0].input_buffer,
                         scratch=lambda name, shape, dtype: work_buffer(("source", name), shape, dtype))
             if xp is np else source.chunks(chunk_steps))
    for chunk in steps:
        k = chunk if xp is np else chunk.shape[0]
        e_b_steps, e_b = bias_trace(lif.a_mem, e_b, k)     # dv[t]/db without reset, this chunk
        if xp is np:
            x = None
            if record:
                rec_in.append(layers[0].input_buffer(k).astype(bool))
        else:
            if record:
                rec_in.append(chunk.astype(bool))
            x = to_backend(chunk, xp, device, dtype=chunk.dtype)
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
        result.grads = [_grad_result(layer) if layer.learn else None for layer in layers]
    if keep is not None:
        rows = range(B)[keep]
        result.stored = StoredFactors([layer.stored for layer in layers], T, len(rows), goodness,
                                      share=_kept_share(layers[0].share, rows, B))
    if record:
        result.record = {"input": np.concatenate(rec_in),
                         "spikes": [np.concatenate(s) for s in rec_s],
                         "v": [np.concatenate(v) for v in rec_v]}
    return result
