"""The one definition of spikeff's neuron model, in discrete time.

Per layer, per sample, time steps t = 0 .. T-1, presynaptic spikes x (one step of synaptic delay,
x[-1] = 0)::

    u[t] = a_syn * u[t-1] + W @ x[t-1]          a_syn = exp(-dt / tau_syn)
    v[t] = a_mem * v[t-1] + u[t] + b            a_mem = exp(-dt / tau_mem)
    s[t] = v[t] > v_threshold
    v[t] = v_reset            where s[t]   (and held there for `refractory` steps)

This is exactly Lava's floating-point LIF behind a Dense synapse (Lava: du = 1 - a_syn,
dv = 1 - a_mem, bias_mant = b, vth = v_threshold, reset to 0). It is the exact solution over
one step of ``tau_syn du/dt = -u`` and ``tau_mem dv/dt = -v + R (u + b)`` with
``R = 1 / (1 - a_mem)`` (about tau_mem/dt) and u updated first, then held over the step: the
order the Brian2 engine runs. Goodness reads the *pre-reset* potential v[t]
(before the spike resets it), so a strongly driven neuron has high goodness.

Everything here is a pure function of arrays; the engines call :func:`lif_step`.
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
        return cls(a_syn=math.exp(-neuron.dt / neuron.tau_syn),
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
