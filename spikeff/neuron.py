"""The one definition of spikeff's neuron model, in discrete time.

Per layer, per sample, time steps t = 0 .. T-1, presynaptic spikes x (one step of synaptic delay,
x[-1] = 0)::

    u[t] = a_syn * u[t-1] + W @ x[t-1]          a_syn = exp(-dt / tau_syn)   (0 when tau_syn = 0)
    v[t] = a_mem * v[t-1] + u[t] + b            a_mem = exp(-dt / tau_mem)
    s[t] = v[t] > v_threshold
    v[t] = v_reset            where s[t]   (and held there for `refractory` steps)

This is exactly Lava's floating-point LIF behind a Dense synapse (Lava: du = 1 - a_syn,
dv = 1 - a_mem, bias_mant = b, vth = v_threshold, reset to 0). It is the exact solution over
one step of ``tau_syn du/dt = -u`` and ``tau_mem dv/dt = -v + R (u + b)`` with
``R = 1 / (1 - a_mem)`` (about tau_mem/dt) and u updated first, then held over the step: the
order the Brian2 engine runs. Goodness reads the *pre-reset* potential v[t]
(before the spike resets it), so a strongly driven neuron has high goodness.

Everything here is a pure function of arrays. :func:`lif_step` advances one step (the reference
form); the vectorized engine uses the equivalent chunked forms below: :func:`trace_filter` (the
linear part, ``u = W @ e_u``, as one small causal filter over a chunk) and :func:`lif_scan` (the
nonlinear membrane recurrence over a chunk, in place); :func:`trace_scan` is the in-place form
of the filter that the numpy path uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import NeuronConfig


@dataclass(frozen=True)
class DiscreteLIF:
    """Per-step constants of the LIF model, derived from a :class:`NeuronConfig`.

    ``dt``, ``tau_syn`` and ``tau_mem`` (seconds) are the continuous parameters the per-step
    constants came from; engines that keep physical time (Brian2) read them, the discrete update
    itself only uses ``a_syn`` and ``a_mem``.
    """

    a_syn: float
    a_mem: float
    v_threshold: float
    v_reset: float
    refractory_steps: int
    dt: float = NeuronConfig.dt
    tau_syn: float = NeuronConfig.tau_syn
    tau_mem: float = NeuronConfig.tau_mem

    @classmethod
    def from_config(cls, neuron: NeuronConfig) -> "DiscreteLIF":
        return cls(a_syn=math.exp(-neuron.dt / neuron.tau_syn) if neuron.tau_syn else 0.0,
                   a_mem=math.exp(-neuron.dt / neuron.tau_mem),
                   v_threshold=float(neuron.v_threshold), v_reset=float(neuron.v_reset),
                   refractory_steps=int(round(neuron.refractory / neuron.dt)),
                   dt=float(neuron.dt), tau_syn=float(neuron.tau_syn), tau_mem=float(neuron.tau_mem))


@dataclass
class LIFState:
    """State of one layer for a batch: synaptic current, membrane potential, refractory count."""

    u: np.ndarray
    v: np.ndarray
    ref: np.ndarray | None = None

    @classmethod
    def zeros(cls, batch: int, n: int, dtype, xp=np, refractory: bool = False) -> "LIFState":
        return cls(xp.zeros((batch, n), dtype=dtype), xp.zeros((batch, n), dtype=dtype),
                   xp.zeros((batch, n), dtype=np.int32) if refractory else None)


def lif_step(state: LIFState, i_in, bias, p: DiscreteLIF, xp=np):
    """Advance a layer by one step in place. ``i_in`` = W @ x[t-1]. Returns (spikes, v_pre_reset)."""
    state.u *= p.a_syn
    state.u += i_in
    state.v *= p.a_mem
    state.v += state.u
    if bias is not None:
        state.v += bias
    if state.ref is not None:
        refractory = state.ref > 0
        state.v[refractory] = p.v_reset
    v_pre = state.v.copy()
    spikes = state.v > p.v_threshold
    state.v[spikes] = p.v_reset
    if state.ref is not None:
        state.ref -= 1
        xp.maximum(state.ref, 0, out=state.ref)
        state.ref[spikes] = p.refractory_steps
    return spikes, v_pre


def trace_step(e_u, e_v, x_prev, p: DiscreteLIF):
    """Presynaptic eligibility traces (same two-stage filter as u and v), in place.

    ``e_u[t] = a_syn e_u[t-1] + x[t-1]``, ``e_v[t] = a_mem e_v[t-1] + e_u[t]``; in the subthreshold
    regime ``dv_i[t]/dW_ij = e_v_j[t]`` exactly.
    """
    e_u *= p.a_syn
    e_u += x_prev
    e_v *= p.a_mem
    e_v += e_u


def trace_filter(p: DiscreteLIF, k: int, with_ev: bool = True) -> np.ndarray:
    """Causal filter matrix of the presynaptic traces over a chunk of ``k`` steps (float64).

    With ``Z = [e_u[t0-1], e_v[t0-1], x[t0-1], ..., x[t0+k-2]]`` (k + 2 rows), ``F @ Z`` gives the
    rows ``e_u[t0 .. t0+k-1]`` and (``with_ev``) ``e_v[t0 .. t0+k-1]`` of :func:`trace_step`'s
    recurrence: the whole chunk's traces as one GEMM instead of k elementwise steps. The synaptic
    current is ``u[t] = W @ e_u[t]`` exactly (same filter, same start from zero).
    """
    j = np.arange(k)
    lag = j[:, None] - j[None, :]
    causal = lag >= 0
    fu = np.zeros((k, k + 2))
    fu[:, 0] = p.a_syn ** (j + 1)
    fu[:, 2:] = np.where(causal, p.a_syn ** np.maximum(lag, 0), 0.0)
    if not with_ev:
        return fu
    fv = np.where(causal, p.a_mem ** np.maximum(lag, 0), 0.0) @ fu
    fv[:, 1] += p.a_mem ** (j + 1)
    return np.concatenate([fu, fv])


def trace_scan(z, e, k: int, p: DiscreteLIF, with_ev: bool = True):
    """In-place form of :func:`trace_filter` (numpy): ``e[:k]`` = e_u and ``e[k:2k]`` = e_v of the
    chunk, from ``z`` = [e_u, e_v at the chunk start, the k inputs x[t-1]] (any trailing shape).

    The :func:`trace_step` recurrence row by row (2 streaming passes per row), which is faster on
    CPUs than the small-by-huge filter GEMM.
    """
    np.multiply(z[0], p.a_syn, out=e[0])
    e[0] += z[2]
    for j in range(1, k):
        np.multiply(e[j - 1], p.a_syn, out=e[j])
        e[j] += z[2 + j]
    if with_ev:
        np.multiply(z[1], p.a_mem, out=e[k])
        e[k] += e[0]
        for j in range(1, k):
            np.multiply(e[k + j - 1], p.a_mem, out=e[k + j])
            e[k + j] += e[j]
    return e


def lif_scan(v_chunk, dec, p: DiscreteLIF, ref=None, mask=None, rmask=None):
    """Membrane recurrence over a chunk of steps, in place (numpy arrays).

    ``v_chunk`` (k, B, N) holds ``u[t] + b`` on entry and the pre-reset potentials ``v[t]`` on exit;
    ``dec`` (B, N) holds ``a_mem * v[t0-1]`` (after reset) on entry and ``a_mem * v[t0+k-1]`` on
    exit; ``ref`` (B, N) int32 refractory counts, or None. Equal to :func:`lif_step` step by step.
    ``mask``/``rmask``: optional (B, N) bool work arrays.
    """
    mask = np.empty(dec.shape, dtype=bool) if mask is None else mask
    if ref is not None:
        rmask = np.empty(dec.shape, dtype=bool) if rmask is None else rmask
    reset_dec = p.a_mem * p.v_reset
    for v in v_chunk:
        v += dec
        if ref is not None:
            np.greater(ref, 0, out=rmask)
            np.copyto(v, p.v_reset, where=rmask)
        np.greater(v, p.v_threshold, out=mask)
        np.multiply(v, p.a_mem, out=dec)
        np.copyto(dec, reset_dec, where=mask)
        if ref is not None:
            np.subtract(ref, 1, out=ref)
            np.maximum(ref, 0, out=ref)
            np.copyto(ref, p.refractory_steps, where=mask)
    return v_chunk


def lif_scan_xp(u_chunk, dec, p: DiscreteLIF, xp, ref=None):
    """:func:`lif_scan` for any array-API namespace ``xp`` (no in-place ops; for GPU backends).

    Returns ``(v_chunk, dec, ref)``: the pre-reset potentials stacked (k, B, N) and the new state.
    """
    vs = []
    # constants as 0-d arrays on the chunk's device (a GPU, or array_api_strict's other device)
    from .backend import device_of
    dev = {} if device_of(u_chunk) is None else {"device": device_of(u_chunk)}
    v_reset = xp.asarray(p.v_reset, dtype=u_chunk.dtype, **dev)
    if ref is not None:
        ref_steps = xp.asarray(p.refractory_steps, dtype=ref.dtype, **dev)
        zero = xp.zeros_like(ref)
    for j in range(u_chunk.shape[0]):
        v = u_chunk[j, ...] + dec
        if ref is not None:
            v = xp.where(ref > 0, v_reset, v)
        spikes = v > p.v_threshold
        dec = p.a_mem * xp.where(spikes, v_reset, v)
        if ref is not None:
            ref = xp.where(spikes, ref_steps, xp.maximum(ref - 1, zero))
        vs.append(v)
    return xp.stack(vs), dec, ref


def bias_trace(a_mem: float, e_b: float, k: int):
    """The bias trace ``e_b[t] = a_mem e_b[t-1] + 1`` (``dv[t]/db`` without reset) for the next
    ``k`` steps from its value ``e_b``: ``(steps (k,) float64, last value)``. Used by the engines'
    bias gradient ``db = sum_t e_b[t] * post[t]``."""
    steps = np.empty(k)
    for j in range(k):
        e_b = a_mem * e_b + 1.0
        steps[j] = e_b
    return steps, e_b
