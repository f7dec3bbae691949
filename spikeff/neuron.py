"""The one definition of spikeff's neuron model, and of how each simulator's parameters map to it.

**Continuous form** (potentials in mV from rest, v_rest = 0, as in Lava; times in s)::

    tau_syn du/dt = -u                 + w on each presynaptic spike, one step late
                                       (tau_syn = 0: no synaptic current, u = W x[t-1])
    tau_mem dv/dt = -v + R (u + b),    R = 1 / (1 - exp(-dt/tau_mem))   (about tau_mem/dt)
    v > v_threshold  ->  spike;  v = v_reset, held there for `refractory`

**Discrete form** (what every engine runs). Per layer, per sample, time steps t = 0 .. T-1,
presynaptic spikes x (one step of synaptic delay, x[-1] = 0)::

    u[t] = a_syn * u[t-1] + W @ x[t-1]          a_syn = exp(-dt / tau_syn)   (0 when tau_syn = 0)
    v[t] = a_mem * v[t-1] + u[t] + b            a_mem = exp(-dt / tau_mem)
    s[t] = v[t] > v_threshold
    v[t] = v_reset            where s[t]   (and held there for `refractory` steps)

The discrete form is the exact solution of the continuous one over one step with u updated first,
then held over the step (the order the Brian2 engine runs). Goodness reads the *pre-reset*
potential v[t] (before the spike resets it), so a strongly driven neuron has high goodness.
Other modules (config, engines, exporters) refer here instead of restating the equations.

**Per-target maps** (methods of :class:`DiscreteLIF`, the one place each target's parameters come
from; :meth:`DiscreteLIF.check_target` says what a target cannot express):

- Lava floating point (:meth:`~DiscreteLIF.lava_float`): ``du = 1 - a_syn``, ``dv = 1 - a_mem``,
  ``vth = v_threshold``, reset to 0: exactly the discrete form above behind a Dense synapse;
- Loihi / Lava fixed point (:meth:`~DiscreteLIF.lava_fixed`, :func:`fixed_decay_factors`):
  12-bit ``du``, ``dv`` with Lava's decay ``x * (4096 - d) >> 12`` (``du`` offset by 1);
- NIR's CubaLIF at a time step ``dt`` and flavour (:meth:`~DiscreteLIF.nir_parameters`,
  :meth:`~DiscreteLIF.taus_at`);
- Brian2 (:meth:`~DiscreteLIF.brian2_namespace`): the constants of the engine's custom discrete
  update, which runs the discrete form above step by step.

Everything else here is a pure function of arrays. :func:`lif_step` advances one step (the
reference form); the vectorized engine uses the equivalent chunked forms below:
:func:`trace_filter` (the linear part, ``u = W @ e_u``, as one small causal filter over a chunk)
and :func:`lif_scan` (the nonlinear membrane recurrence over a chunk, in place); :func:`trace_scan`
is the in-place form of the filter that the numpy path uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import NeuronConfig


# Lava / Loihi 2 fixed-point decays (lava/proc/lif/models.py): x <- x * (4096 - d) >> 12, with
# d = du + 1 for the current and d = dv for the voltage (12-bit unsigned du, dv)
LOIHI_DECAY_BITS = 12
LOIHI_DECAY_UNITY = 2 ** LOIHI_DECAY_BITS
LOIHI_DU_OFFSET = 1
NIR_FLAVOURS = ("euler", "exact")
TARGETS = ("lava", "loihi", "nir")


def fixed_decay_factors(du: int, dv: int) -> tuple[int, int]:
    """Lava's fixed-point decay factors of ``u`` and ``v`` for 12-bit ``du``, ``dv`` (out of 4096):
    the per-step decays are ``factor / 4096``."""
    return LOIHI_DECAY_UNITY - (int(du) + LOIHI_DU_OFFSET), LOIHI_DECAY_UNITY - int(dv)


def taus_for(a_syn: float, a_mem: float, dt: float) -> tuple[float, float]:
    """``(tau_syn, tau_mem)`` whose exact per-step decays at ``dt`` are ``a_syn``, ``a_mem``
    (``tau_syn = 0`` for ``a_syn = 0``): the inverse of ``a = exp(-dt / tau)``."""
    return (-dt / math.log(a_syn) if a_syn else 0.0), -dt / math.log(a_mem)


@dataclass(frozen=True)
class DiscreteLIF:
    """Per-step constants of the LIF model, derived from a :class:`NeuronConfig` (see the module
    docstring), and their maps to each simulator's parameters.

    ``dt``, ``tau_syn`` and ``tau_mem`` (seconds) are the continuous parameters the per-step
    constants came from: the Brian2 engine's clock is ``dt``, and :meth:`taus_at` gives these
    time constants back at the model's own ``dt`` (no round trip through a logarithm).
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

    # -- continuous time constants -------------------------------------------------------------
    def taus_at(self, dt: float) -> tuple[float, float]:
        """``(tau_syn, tau_mem)`` whose exact per-step decays at time step ``dt`` are ``a_syn``,
        ``a_mem`` (``tau_syn = 0`` when ``a_syn = 0``); the model's own at its ``dt``."""
        if dt == self.dt:
            return float(self.tau_syn), float(self.tau_mem)
        return taus_for(self.a_syn, self.a_mem, dt)

    @property
    def R(self) -> float:
        """The membrane's input resistance ``R = 1 / (1 - a_mem)`` of the continuous form."""
        return 1.0 / (1.0 - self.a_mem)

    # -- per-target maps -----------------------------------------------------------------------
    def check_target(self, target: str):
        """Raise ValueError (naming the reason) if ``target`` ("lava", "loihi", "nir") cannot
        express this neuron."""
        if target not in TARGETS:
            raise ValueError(f"target: {target!r} is not valid; choose one of {list(TARGETS)}")
        if target in ("lava", "loihi"):
            if self.v_reset != 0:
                raise ValueError(f"Lava's LIF resets to 0; this network has v_reset = {self.v_reset}")
            if self.refractory_steps:
                raise ValueError("Lava's LIF has no refractory period; this network has "
                                 f"{self.refractory_steps} refractory steps")
        elif self.refractory_steps:
            raise ValueError(f"neuron.refractory = {self.refractory_steps * self.dt:.6g} s "
                             f"({self.refractory_steps} steps): NIR's CubaLIF has no refractory period, so no "
                             "NIR simulator would run this network as spikeff does; export needs "
                             "neuron.refractory = 0")

    def lava_float(self) -> dict:
        """Lava ``LIF`` parameters in floating point (``floating_pt``): du, dv, vth (mV)."""
        return {"du": 1.0 - self.a_syn, "dv": 1.0 - self.a_mem, "vth": float(self.v_threshold)}

    def lava_fixed(self) -> dict:
        """Lava ``LIF`` decays in fixed point (``fixed_pt``): 12-bit integers du, dv (the nearest
        to ``a_syn``, ``a_mem``; :func:`fixed_decay_factors` gives the decays they apply)."""
        top = LOIHI_DECAY_UNITY - 1
        du = int(np.clip(round(LOIHI_DECAY_UNITY * (1.0 - self.a_syn)) - LOIHI_DU_OFFSET, 0, top))
        dv = int(np.clip(round(LOIHI_DECAY_UNITY * (1.0 - self.a_mem)), 0, top))
        return {"du": du, "dv": dv}

    def brian2_namespace(self, mV) -> dict:
        """The constants of the Brian2 engine's equations (:mod:`spikeff.engines.brian2_engine`):
        per-step decays, threshold and reset as potentials (``mV``: Brian2's unit, passed in so
        that this module does not import Brian2) and the refractory period in steps."""
        return {"a_syn": self.a_syn, "a_mem": self.a_mem, "v_threshold": self.v_threshold * mV,
                "v_reset": self.v_reset * mV, "refractory_steps": float(self.refractory_steps)}

    def nir_parameters(self, dt: float, flavour: str = "euler") -> dict:
        """NIR ``CubaLIF`` time constants, ``r`` and ``w_in`` describing these per-step decays at
        time step ``dt``, and ``leak_gain`` (``v_leak = leak_gain * b``); see
        :mod:`spikeff.export.nir` for the flavours (``euler``: forward Euler at ``dt``; ``exact``:
        exponential integration)."""
        if flavour not in NIR_FLAVOURS:
            raise ValueError(f"flavour: {flavour!r} is not valid; choose one of {list(NIR_FLAVOURS)}")
        if flavour == "euler":             # a_syn = 0 (no synaptic current): tau_syn = dt, I = w_in W x
            tau_syn, tau_mem = dt / (1.0 - self.a_syn), dt / (1.0 - self.a_mem)
            return {"tau_syn": tau_syn, "tau_mem": tau_mem, "r": tau_mem / dt, "w_in": tau_syn / dt,
                    "leak_gain": tau_mem / dt}
        if self.a_syn == 0:
            raise ValueError("a network without synaptic current (tau_syn = 0) has no exponential-integration "
                             "CubaLIF (tau_syn would be 0); use the euler flavour")
        tau_syn, tau_mem = self.taus_at(dt)
        return {"tau_syn": tau_syn, "tau_mem": tau_mem, "r": self.R, "w_in": 1.0, "leak_gain": self.R}


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


def lif_scan(v_chunk, dec, p: DiscreteLIF, ref=None, mask=None, rmask=None, spikes=None):
    """Membrane recurrence over a chunk of steps, in place (numpy arrays).

    ``v_chunk`` (k, B, N) holds ``u[t] + b`` on entry and the pre-reset potentials ``v[t]`` on exit;
    ``dec`` (B, N) holds ``a_mem * v[t0-1]`` (after reset) on entry and ``a_mem * v[t0+k-1]`` on
    exit; ``ref`` (B, N) int32 refractory counts, or None. Equal to :func:`lif_step` step by step.
    ``mask``/``rmask``: optional (B, N) bool work arrays; ``spikes``: optional (k, B, N) bool array
    that receives the spikes ``v[t] > v_threshold`` (then used as the masks).
    """
    mask = np.empty(dec.shape, dtype=bool) if mask is None else mask
    if ref is not None:
        rmask = np.empty(dec.shape, dtype=bool) if rmask is None else rmask
    reset_dec = p.a_mem * p.v_reset
    for j, v in enumerate(v_chunk):
        if spikes is not None:
            mask = spikes[j]
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
