"""Brian2 reference engine: the same phase as :mod:`spikeff.engines.vectorized`, run by Brian2.

It exists to check the vectorized engine against an independent simulator (and as a readable,
event-driven statement of the model); it is much slower. ``run_phase`` has the signature and
results of :func:`spikeff.engines.vectorized.run_phase`.

Model (continuous form, what the Brian2 groups stand for; potentials from rest, in mV)::

    tau_syn du/dt = -u                        + w on each presynaptic spike, one step late
    tau_mem dv/dt = -v + R (u + b),           R = 1 / (1 - exp(-dt/tau_mem))
    v > v_threshold  ->  spike;  v = v_reset (held for refractory_steps)

Over one step of ``dt`` with u updated first and then held, the exact solution of these equations
is the discrete model of :mod:`spikeff.neuron`::

    u[t] = a_syn u[t-1] + W @ x[t-1];   v[t] = a_mem v[t-1] + u[t] + b

Brian2's integrators (``exact``, ``euler``) would let u vary within the step, so the state update
is given as a *custom discrete update* instead: each group's ``run_regularly`` operation, placed
in the ``groups`` slot of every time step, runs the lines above with ``a_syn``, ``a_mem``,
``v_threshold`` ... taken from :class:`~spikeff.neuron.DiscreteLIF` (no second copy of the
parameters; ``dt`` sets the Brian2 clock). Brian2's schedule in one step ``t`` is then:

====================  ========================================================================
slot                  what runs
====================  ========================================================================
``groups``            every layer: ``u = a_syn u + I_in; I_in = 0; v = a_mem v + u + b``
                      (refractory clamp), goodness ``g_acc += g(v)``, presynaptic traces
                      ``e_u = a_syn e_u + x_last; e_v = a_mem e_v + e_u; x_last = 0``, and for
                      a learning layer ``gp = m g'(v)``, ``db_acc += gp e_b``
``after_groups``      learning synapses: ``dW += gp_post * e_v_pre``; monitors of v (pre-reset)
``thresholds``        ``v > v_threshold``; the input: a ``SpikeGeneratorGroup`` emits the
                      source's spikes (image encodings and event data alike) of step t
``synapses``          ``on_pre: I_in_post += w``: the spikes of step t land in the buffer
                      ``I_in`` that the postsynaptic layer reads at step t+1 (one step of delay);
                      input spikes set ``x_last = 1`` of the input's trace group (when layer 0 learns)
``resets``            ``v = v_reset; x_last = 1; count += 1; ref = refractory_steps``
====================  ========================================================================

A batch of B samples is B replicas of the network (B*N neurons per layer, synapses only within
a replica); weights are copied into every replica and the per-synapse ``dW`` is summed over the
replicas at the end. Each call builds a fresh ``Network``, so a phase always starts from rest, and
each phase (positive, negative, their replays) is its own ``run()``.

Code generation target: :data:`TARGET` (``"numpy"`` or ``"cython"``), from the environment
variable ``SPIKEFF_BRIAN2_TARGET`` when set. Brian2 always computes in float64; results are cast
to the weights' dtype.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..goodness import Goodness
from ..neuron import DiscreteLIF
from .vectorized import PhaseResult

TARGETS = ("numpy", "cython")
TARGET = os.environ.get("SPIKEFF_BRIAN2_TARGET", "numpy")


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"Brian2 target: {target!r} is not valid; choose one of {list(TARGETS)} "
                         f"(set spikeff.engines.brian2_engine.TARGET or SPIKEFF_BRIAN2_TARGET)")
    return target


def _goodness_code(goodness: Goodness) -> tuple[str, str]:
    """g and g' as Brian2 expressions of the dimensionless potential ``v/mV``."""
    if not goodness.expr or not goodness.dexpr:
        raise ValueError(f"goodness {goodness.name!r} has no Brian2 expression (expr/dexpr): "
                         f"register it with expr= and dexpr= to run it on the Brian2 engine")
    sub = lambda e: "(" + re.sub(r"\bv\b", "(v/mV)", e) + ")"
    return sub(goodness.expr), sub(goodness.dexpr)


def layer_model(lif: DiscreteLIF, goodness: Goodness | None, learn: bool, traces: bool,
                stimulus: bool = False) -> dict:
    """Equations and code (Brian2 syntax, with units) of one group.

    ``goodness`` None and ``stimulus`` True: the input's trace group (no threshold: its spikes come
    from a ``SpikeGeneratorGroup`` through one-to-one synapses that set ``x_last``). ``traces``: keep the presynaptic eligibility traces (the next layer learns).
    ``learn``: this layer learns (needs its modulator ``m`` and accumulates ``db_acc``).
    Returns a dict with ``model``, ``update``, ``threshold`` and ``reset`` strings.
    """
    model, update = ["x_last : 1  # 1 if the group spiked at the previous step"], []
    reset = ["x_last = 1"]
    if not stimulus:
        g, dg = _goodness_code(goodness)
        model += ["u : volt  # synaptic current (added to v every step)",
                  "v : volt  # membrane potential",
                  "I_in : volt  # weights of the spikes that arrived during the previous step",
                  "b : volt (constant)  # bias",
                  "g_acc : 1  # sum over steps of g(v)",
                  "count : 1  # spike count"]
        update += ["u = a_syn*u + I_in", "I_in = 0*mV", "v = a_mem*v + u + b"]
        if lif.refractory_steps > 0:
            model += ["ref : 1  # refractory steps left"]
            update += ["v = int(ref > 0)*v_reset + int(ref <= 0)*v", "ref = clip(ref - 1, 0, inf)"]
            reset += ["ref = refractory_steps"]
        update += [f"g_acc += {g}"]
        reset += ["v = v_reset", "count += 1"]
        if learn:
            model += ["m : 1 (constant)  # modulator m_b / (T N)",
                      "e_b : 1  # bias trace", "gp : 1  # m g'(v)", "db_acc : 1"]
            update += ["e_b = a_mem*e_b + 1", f"gp = m*{dg}", "db_acc += gp*e_b"]
    if traces:
        model += ["e_u : 1  # presynaptic eligibility traces", "e_v : 1"]
        update += ["e_u = a_syn*e_u + x_last", "e_v = a_mem*e_v + e_u"]
    update += ["x_last = 0"]
    return {"model": "\n".join(model), "update": "\n".join(update),
            "threshold": None if stimulus else "v > v_threshold",
            "reset": "\n".join(reset)}


def _check_inputs(weights, biases, source, modulators):
    if len(weights) == 0 or len(biases) != len(weights):
        raise ValueError(f"need one bias (or None) per weight matrix, got {len(weights)} weights "
                         f"and {len(biases)} biases")
    m = source.shape[1]
    for l, W in enumerate(weights):
        if W.ndim != 2 or W.shape[1] != m:
            raise ValueError(f"weights[{l}] must have shape (N, {m}), got {W.shape}")
        if biases[l] is not None and np.shape(biases[l]) != (W.shape[0],):
            raise ValueError(f"biases[{l}] must have shape ({W.shape[0]},), got {np.shape(biases[l])}")
        m = W.shape[0]
    if modulators is not None:
        if len(modulators) != len(weights):
            raise ValueError(f"need one modulator array (or None) per layer, got {len(modulators)}")
        for l, mod in enumerate(modulators):
            if mod is not None and np.shape(mod) != (source.shape[0],):
                raise ValueError(f"modulators[{l}] must have shape ({source.shape[0]},), got {np.shape(mod)}")


def _replica_indices(B: int, M: int, N: int):
    """Presynaptic and postsynaptic indices of all-to-all connections within each of B replicas."""
    pre = (np.arange(B)[:, None, None] * M + np.arange(M)[None, None, :])
    post = (np.arange(B)[:, None, None] * N + np.arange(N)[None, :, None])
    shape = (B, N, M)
    return np.broadcast_to(pre, shape).ravel(), np.broadcast_to(post, shape).ravel()


def run_phase(weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int = 0,
              modulators=None, record: bool = False, normalize: bool = False) -> PhaseResult:
    """Simulate one phase with Brian2 (see :func:`spikeff.engines.vectorized.run_phase`).

    ``chunk_steps`` is ignored (Brian2 steps the whole window in one ``run``).
    """
    if normalize:
        raise ValueError("normalization: the brian2 engine supports only normalization = 'none'")
    import brian2 as b2

    _check_inputs(weights, biases, source, modulators)
    b2.prefs.codegen.target = _check_target(TARGET)
    B, M0 = source.shape
    T = source.n_steps
    L = len(weights)
    dtype = weights[0].dtype
    dt = lif.dt * b2.second
    mV = b2.mV
    learn = [modulators is not None and modulators[l] is not None for l in range(L)]

    x = source.all_steps()                                   # (T, B, M0)
    steps, channels = np.nonzero(x.reshape(T, B * M0))
    namespace = {"a_syn": lif.a_syn, "a_mem": lif.a_mem, "v_threshold": lif.v_threshold * mV,
                 "v_reset": lif.v_reset * mV, "refractory_steps": float(lif.refractory_steps), "mV": mV}

    def group(n, name, **kw):
        spec = layer_model(lif, **kw)
        reset = spec["reset"] if spec["threshold"] else None
        grp = b2.NeuronGroup(n, spec["model"], threshold=spec["threshold"], reset=reset,
                             dt=dt, namespace=namespace, name=name)
        grp.run_regularly(spec["update"], when="groups", name=f"{name}_update")
        return grp

    # the input spikes as events (one per spike, at step * dt); the eligibility traces of layer 0's
    # inputs live in a trace group that the generator's spikes reach through one-to-one synapses
    generator = b2.SpikeGeneratorGroup(B * M0, channels, steps * dt, dt=dt, name="input")
    groups, relay = [generator], []
    if learn[0]:
        trace_group = group(B * M0, "input_traces", goodness=None, learn=False, traces=True, stimulus=True)
        relay = [b2.Synapses(generator, trace_group, on_pre="x_last_post = 1", dt=dt, name="input_relay")]
        relay[0].connect(j="i")
        relay.append(trace_group)
    synapses, v_mons, s_mons = [], [], []
    for l, W in enumerate(weights):
        N, M = W.shape
        traces = l + 1 < L and learn[l + 1]
        grp = group(B * N, f"layer{l}", goodness=goodness, learn=learn[l], traces=traces)
        if biases[l] is not None:
            grp.b = np.tile(np.asarray(biases[l], dtype=np.float64), B) * mV
        if learn[l]:
            grp.m = np.repeat(np.asarray(modulators[l], dtype=np.float64) / (T * N), N)
        # the input generator has no traces: layer 0 learns on a twin of its synapses from the trace group
        twin = l == 0 and learn[0]
        syn = b2.Synapses(groups[-1], grp, "w : volt (constant)" + ("\ndW : 1" if learn[l] and not twin else ""),
                          on_pre="I_in_post += w", dt=dt, namespace=namespace, name=f"synapses{l}")
        pre, post = _replica_indices(B, M, N)
        syn.connect(i=pre, j=post)
        flat = (syn.j[:] % N) * M + syn.i[:] % M            # index into W.ravel() of each synapse
        syn.w[:] = np.asarray(W, dtype=np.float64).ravel()[flat] * mV
        learner = syn
        if twin:
            learner = b2.Synapses(relay[1], grp, "dW : 1", dt=dt, namespace=namespace, name="synapses0_traces")
            learner.connect(i=pre, j=post)
            relay.append(learner)
        if learn[l]:
            learner.run_regularly("dW += gp_post*e_v_pre", when="after_groups", name=f"synapses{l}_learn")
            flat = (learner.j[:] % N) * M + learner.i[:] % M
        if record:
            v_mons.append(b2.StateMonitor(grp, "v", record=True, when="after_groups", name=f"v{l}"))
            s_mons.append(b2.SpikeMonitor(grp, name=f"spikes{l}"))
        groups.append(grp)
        synapses.append((syn, learner, flat))

    net = b2.Network(groups, relay, [s for s, _, _ in synapses], v_mons, s_mons)
    net.run(T * dt, namespace=namespace)

    neuron_g, counts, grads = [], [], []
    for l, (grp, (_, syn, flat)) in enumerate(zip(groups[1:], synapses)):
        N, M = weights[l].shape
        neuron_g.append(grp.g_acc[:].reshape(B, N) / T)
        counts.append(np.rint(grp.count[:]).astype(np.int64).reshape(B, N))
        if learn[l]:
            dW = np.bincount(flat, weights=syn.dW[:], minlength=N * M).reshape(N, M)
            db = grp.db_acc[:].reshape(B, N).sum(axis=0)
            grads.append((dW.astype(dtype), db.astype(dtype)))
        else:
            grads.append(None)
    result = PhaseResult(goodness=[g.mean(axis=1) for g in neuron_g], neuron_goodness=neuron_g,
                         spike_counts=counts, grads=grads if any(learn) else None)
    if record:
        spikes = []
        for l, mon in enumerate(s_mons):
            N = weights[l].shape[0]
            s = np.zeros((T, B * N), dtype=bool)
            s[np.rint(mon.t[:] / dt).astype(np.int64), mon.i[:]] = True
            spikes.append(s.reshape(T, B, N))
        result.record = {"input": x.astype(bool), "spikes": spikes,
                         "v": [(mon.v[:] / mV).T.reshape(T, B, -1).astype(dtype) for mon in v_mons]}
    return result
