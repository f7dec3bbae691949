"""Brian2 reference engine: the same phase as :mod:`spikeff.engines.vectorized`, run by Brian2.

It exists to check the vectorized engine against an independent simulator (and as a readable,
event-driven statement of the model). ``run_phase`` has the signature and results of
:func:`spikeff.engines.vectorized.run_phase`; :class:`Brian2Engine` is the same callable holding
its persistent networks (``FFNetwork`` keeps one per fitted model).

The model is :mod:`spikeff.neuron`'s (continuous and discrete form written there, constants from
:meth:`~spikeff.neuron.DiscreteLIF.brian2_namespace`). Brian2's integrators (``exact``, ``euler``) would let u vary within the step, so the state
update is a *custom discrete update*: each group's ``run_regularly`` operation, in the ``groups``
slot of every time step, runs that discrete form (no second copy of the parameters; ``dt`` sets
the Brian2 clock). Brian2's schedule in one step ``t`` is then:

====================  ========================================================================
slot                  what runs
====================  ========================================================================
``start``             every :func:`fold_steps` steps (event-driven update, see **The update**):
                      the synapses' fold ``dW += P_fold_pre G_mem_post - Q_fold_pre G_syn_post``,
                      then the groups start new sums (``rebase``)
``groups``            every layer: ``u = a_syn u + I_in; I_in = 0; v = a_mem v + u + b``
                      (refractory clamp), goodness ``g_acc += g(v)``, the modulated
                      postsynaptic term ``gp = m g'(v)``, ``db_acc += gp e_b``, presynaptic
                      traces ``e_u = a_syn e_u + x_last; e_v = a_mem e_v + e_u; x_last = 0``
                      (the input's in the group ``input_traces``); event-driven update: the
                      layer's sums ``G_mem += gp a_mem**k``, ``G_syn += gp a_syn**k``
``after_groups``      monitors of v (pre-reset), when recording
``thresholds``        ``v > v_threshold``; input: the ``SpikeGeneratorGroup`` ``input`` emits
                      the epoch's spikes of step t (cpp_standalone: ``stimulus(t - t_start, i)
                      > 0.5``, a TimedArray, see **Targets**)
``synapses``          pathway ``pre`` (spikes): ``I_in_post += w``: the spikes of step t land in
                      the buffer ``I_in`` that the postsynaptic layer reads at step t+1 (one step
                      of delay); the three-factor update (``gp`` is 0 outside a replay; runtime
                      targets switch its operations off then, the standalone program does not
                      make its learning synapses): event-driven, the pathway ``spike_update``
                      (``dW -= c (a_mem**-k G_mem_post - a_syn**-k G_syn_post)``), dense, every
                      synapse every step (``run_regularly`` operation ``learn``:
                      ``dW += gp_post * e_v_pre``); the one-to-one ``input_relay`` (runtime
                      targets): ``x_last_post = 1`` in ``input_traces`` (and its ``P_fold``,
                      ``Q_fold``)
``resets``            ``v = v_reset; x_last = 1; count += 1; ref = refractory_steps``;
                      event-driven update: ``P_fold += c a_mem**-k; Q_fold += c a_syn**-k``
====================  ========================================================================

**One persistent network, phases as run() epochs.** The groups and synapses are built once per
set of shapes (layer sizes, T, neuron constants, goodness, number of replicas, recording) and
kept; a phase is one ``run(T * dt)`` epoch of that network from rest. A batch of samples is
``R`` replicas of the network (``R * N`` neurons per layer, synapses only within a replica),
``R`` = the largest batch seen, at most :data:`MAX_REPLICAS` (cpp_standalone:
:data:`STANDALONE_REPLICAS`); smaller batches are padded with
silent replicas, larger ones run as several epochs. When ``FFNetwork.train_batch`` hands the
engine its phases side by side (a :class:`~spikeff.encoding.ConcatSource` of neutral, positive
and negative sources), each phase is its own epoch: the positive phase, then the negative phase,
and in the replay the positive and the negative replay epochs, each with its modulators
(``m``, 0 outside a replay), each ending with the accumulated update
``dW`` (summed over the replicas) that the optimizer applies. Weights live in the Synapses'
``w`` and are written in place only when they changed (after an optimizer step).

**The update** ``dW = sum_t gp_post(t) e_v_pre(t)`` (summed over the epoch's steps) has two forms
(:data:`LEARNING`), which give the same ``dW`` up to rounding (``tests/test_brian2.py``):

- *dense*: every synapse adds ``gp_post * e_v_pre`` at every step (a ``run_regularly`` operation
  streaming through the synapse arrays). In a replay ``gp`` is non-zero for nearly every neuron
  at every step, so this is ``T`` passes over all synapses: in a training step of the
  benchmark network at batch 64 (``experiments/bench_engines.py``) it took about three fifths of
  the standalone program's CPU time (``perf``).
- *event-driven* (default), the STDP idiom of Brian2 models: each step's work is per neuron and
  per presynaptic spike, and every synapse is touched only once per fold of :func:`fold_steps`
  (``K``) steps. Within a fold starting at step ``n`` (``k = 1 + (t - n)``, 1 ... K), the
  presynaptic trace is the decay of its state at the fold's start plus one kernel
  ``c (a_mem**j - a_syn**j)`` (``c = 1 / (a_mem - a_syn)``, ``j`` steps after the spike) per
  spike in the fold. So with the postsynaptic sums ``G_mem = sum gp a_mem**k`` and
  ``G_syn = sum gp a_syn**k`` over the fold, the fold's update is
  ``P_fold G_mem - Q_fold G_syn`` (added to every synapse at the fold's end), where the
  presynaptic ``P_fold = e_v + c (a_syn e_u + x_last)`` and ``Q_fold = c (a_syn e_u + x_last)``
  are taken at the fold's start and a spike at place ``k`` adds ``c a_mem**-k`` and
  ``c a_syn**-k`` to them; the spike's pathway ``spike_update`` (cpp_standalone: part of
  the pathway ``pre``, see **Targets**) takes back from each of its
  synapses what the fold's sums hold from before the spike (``c (a_mem**-k G_mem - a_syn**-k
  G_syn)``, the postsynaptic sums at that step). The folds run every ``K`` steps of the clock (so
  a phase may start within one) and once more after each epoch's last step. The factors
  ``a**-k`` stay at most :data:`FOLD_MAX_FACTOR` (8: at the default decays, ``a_syn = exp(-1/5)``,
  ``K`` = 10 steps); the tests find both forms within 1e-9 of the vectorized engine (K = 1, 7,
  10, 20, 64). The sums divide by ``a_mem - a_syn``: where the decays are closer
  than :data:`MIN_DECAY_GAP`, the dense form is used.

**Input: a SpikeGeneratorGroup** (runtime targets). Every input, rate-coded images and event
streams alike (:class:`~spikeff.events.EventSource`, spike tensors, recorded spike trains), is
the spike source ``input``, a ``SpikeGeneratorGroup`` of ``R * M0`` channels whose spikes are
given for each epoch with ``set_spikes(indices, times)`` (times ``t_start + k dt``, ``t_start``
the epoch's start). A SpikeGeneratorGroup has no state variables, so the input's presynaptic
traces (which the first layer's update reads) live in the NeuronGroup ``input_traces``: the
generator's spikes reach it through the one-to-one Synapses ``input_relay`` (``x_last_post = 1``
in the ``synapses`` slot of step t, read at step t+1, as a NeuronGroup's reset would), and the
first Synapses read them as the linked variable ``e_v_in`` (indexed by the presynaptic
neuron). The spikes, their order within a step (ascending index) and so every sum are those of
a NeuronGroup input: the results are those of the vectorized engine (``tests/test_brian2.py``).

Between epochs the runtime targets reset every state variable to rest explicitly (not
``store``/``restore``, which would also roll back the weights) and set the generator's spikes.

**Targets** (:data:`TARGET`, from the environment variable ``SPIKEFF_BRIAN2_TARGET``): ``numpy``
and ``cython`` (runtime code generation), and ``cpp_standalone``: the network is compiled once
(``set_device('cpp_standalone', build_on_run=False)``, ``device.build(run=False)``, in a
temporary directory per network and process) as a program of ``E`` run() epochs (as many as the
call that builds the network has, 2 to :data:`MAX_EPOCHS_PER_RUN`, or :data:`EPOCHS_PER_RUN`),
each from rest (the state variables are set back to rest between them, in the program); every run
of the binary (``device.run(run_args=...)``) runs ``E`` of a call's epochs (at batch 64 with 8
replicas: the positive and the negative phase, 8 epochs each, or their replays: one run per call;
a last group padded with silent epochs). It runs on :data:`OPENMP_THREADS` OpenMP threads. The run arguments give that run's input spikes (the TimedArray
``stimulus``, ``E T`` rows), weights (a TimedArray table ``W(l)`` from which ``w`` is set after
the synapses are made), biases, the modulators of each epoch (a table ``mod(l)``, one row per
epoch, set into ``m`` at the start of each epoch) and per layer the flag ``learn``; so no new
input or weight needs a recompilation. The program has two sets of synapses per layer, with the
same pattern and order, of which a run makes one (the connection's condition on the layer's
``learn``): with the update ``dW`` and its operation where the layer learns in that run, without
(``w`` only) where it does not, so that a run without learning does no per-synapse update
work. Since the learning synapses exist only in runs that learn, the spike's share of the update
is part of their pathway ``pre`` (one pass over the spike's synapses, not a second pathway
``spike_update`` that the runtime targets switch off outside a replay). ``dW`` and ``db_acc`` add
up over the epochs of a run (the update of a call is their sum);
the goodness and spike counts of every epoch but the last are copied (``g_acc_e0``, ...) at its
end. Each run of the binary makes the synapses and writes every array at its end (Brian2's
``brian_end``). The standalone input is a NeuronGroup reading the TimedArray, not a
SpikeGeneratorGroup: in Brian2 (2.9) a SpikeGeneratorGroup's spikes are fixed when the binary is
built, since ``SpikeGeneratorGroup.before_run`` computes its time bins in Python, and ``run_args``
cannot replace them (its ``neuron_index``, ``spike_time`` and ``_timebins`` are read-only, which the
generated ``set_variable_by_name`` skips, and a dynamic array set from the command line keeps its
built size; Brian2 issue 1578 "Make SpikeGeneratorGroup work for run_args" is open).
Brian2 always computes in float64; results are cast to the weights' dtype.
"""
from __future__ import annotations

import atexit
import hashlib
import math
import os
import re
import shutil
import tempfile
import time

import numpy as np

from ..goodness import Goodness
from ..neuron import DiscreteLIF
from ..runs import usable_cpus
from .base import PhaseResult

TARGETS = ("numpy", "cython", "cpp_standalone")
TARGET = os.environ.get("SPIKEFF_BRIAN2_TARGET", "numpy")
#: most replicas (samples simulated side by side) of one network; larger batches run as several epochs
MAX_REPLICAS = int(os.environ.get("SPIKEFF_BRIAN2_REPLICAS", "64"))
#: cpp_standalone: most replicas. Every run of the program makes its synapses (replicas x the
#: layers' weights) and writes them at its end, so a standalone network keeps few replicas and
#: runs more epochs per run of the program (:data:`EPOCHS_PER_RUN`)
STANDALONE_REPLICAS = int(os.environ.get("SPIKEFF_BRIAN2_STANDALONE_REPLICAS", "8"))
#: cpp_standalone: root of a build cache shared by processes (one folder per network, reused when
#: the generated code is the same: Brian2 rewrites only changed files, make recompiles only those);
#: None: a temporary folder per network and process, removed at exit
BUILD_DIR = os.environ.get("SPIKEFF_BRIAN2_BUILD_DIR") or None
#: cpp_standalone: run() epochs per run of the binary: a call's epochs (the positive and the
#: negative phase of ``train_batch``, or their replays, each ``ceil(batch / R)`` epochs) run in
#: groups of this many, a last group padded with silent epochs. None (default): the number of
#: epochs of the call that builds the network, at most :data:`MAX_EPOCHS_PER_RUN` (the program's
#: code, so its compile time, grows with it)
EPOCHS_PER_RUN = int(os.environ["SPIKEFF_BRIAN2_EPOCHS_PER_RUN"]) if os.environ.get("SPIKEFF_BRIAN2_EPOCHS_PER_RUN") else None
MAX_EPOCHS_PER_RUN = 16
#: cpp_standalone: OpenMP threads of the program (Brian2's ``devices.cpp_standalone.openmp_threads``;
#: 0: none). Brian2 runs the spike propagation, which adds into postsynaptic variables, on one
#: thread in spike order, and splits per-neuron and per-synapse loops among the threads, so the
#: results do not depend on it (``tests/test_brian2.py`` runs with the default)
OPENMP_THREADS = int(os.environ.get("SPIKEFF_BRIAN2_OPENMP_THREADS") or usable_cpus())
#: the update's form: "events" (default where the two decays differ enough: the per-synapse work is
#: a fold every :func:`fold_steps` steps plus an event per presynaptic spike) or "dense" (every
#: synapse adds ``gp_post * e_v_pre`` every step); see **The update**
LEARNING = os.environ.get("SPIKEFF_BRIAN2_LEARNING", "events")
#: "events": steps per fold, or None (default): :func:`fold_steps` picks the longest fold whose
#: factors ``a**-k`` stay within :data:`FOLD_MAX_FACTOR`
FOLD_STEPS = int(os.environ["SPIKEFF_BRIAN2_FOLD_STEPS"]) if os.environ.get("SPIKEFF_BRIAN2_FOLD_STEPS") else None
#: "events": the largest factor ``a**-k`` in a fold's sums (default decays: 10 steps per fold). The
#: fold's update ``P_fold G_mem - Q_fold G_syn`` and the spike events take differences of terms up
#: to this much larger than their result, so rounding grows with it; a longer fold touches every
#: synapse less often. One digits epoch (``experiments/engines_agree.py``, cython) left the
#: weights 7.8e-10 from the vectorized engine's with 10 steps per fold (factor 7.4), 2.5e-9 with
#: 20 (factor 55): the goal there is 1e-9
FOLD_MAX_FACTOR = 8.0
#: "events" needs ``a_mem - a_syn`` away from 0 (its sums are divided by it); closer: "dense"
MIN_DECAY_GAP = 0.02
#: cpp_standalone: parallel compile jobs (Brian2's default ``make -j`` starts one per source file)
MAKE_JOBS = int(os.environ.get("SPIKEFF_BRIAN2_MAKE_JOBS", "2"))


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


#: the event-driven update: k, the step's place in its fold (1 ... K_fold), and what a
#: presynaptic spike adds to the sums of its group (``P_fold``, ``Q_fold``) and of each of its
#: synapses (``dW``)
FOLD_K = "1 + timestep(t, dt) % K_fold"
PRE_EVENT = [f"P_fold += c_fold*a_mem**(-({FOLD_K}))", f"Q_fold += c_fold*a_syn**(-({FOLD_K}))"]
SYN_EVENT = f"dW -= c_fold*(a_mem**(-({FOLD_K}))*G_mem_post - a_syn**(-({FOLD_K}))*G_syn_post)"


def fold_steps(lif: DiscreteLIF) -> int:
    """Steps per fold of the event-driven update: :data:`FOLD_STEPS` if set, else the largest ``K``
    with ``a**-K <= FOLD_MAX_FACTOR`` for both decays (at least 1)."""
    if FOLD_STEPS is not None:
        if FOLD_STEPS < 1:
            raise ValueError(f"Brian2 steps per fold must be >= 1, got {FOLD_STEPS} (SPIKEFF_BRIAN2_FOLD_STEPS)")
        return FOLD_STEPS
    a = min(lif.a_mem, lif.a_syn)
    if not 0 < a < 1:                   # a = 0: no event-driven update; a = 1: no decay
        return 1
    return max(1, int(math.log(FOLD_MAX_FACTOR) / -math.log(a)))       # a**-K = exp(-K log a)


def uses_events(lif: DiscreteLIF, learning: str | None = None) -> bool:
    """Whether the update is event-driven (:data:`LEARNING`, unless the decays are too close, or
    one is 0: ``tau_syn = 0``, where ``a_syn**-k`` has no value)."""
    learning = LEARNING if learning is None else learning
    if learning not in ("events", "dense"):
        raise ValueError(f"Brian2 learning: {learning!r} is not valid; choose 'events' or 'dense' "
                         f"(SPIKEFF_BRIAN2_LEARNING)")
    return learning == "events" and abs(lif.a_mem - lif.a_syn) >= MIN_DECAY_GAP and min(lif.a_mem, lif.a_syn) > 0


def layer_model(lif: DiscreteLIF, goodness: Goodness | None, traces: bool = True,
                stimulus: bool = False, events: bool = False) -> dict:
    """Equations and code (Brian2 syntax, with units) of one group.

    ``goodness`` None: the input. With ``stimulus`` (cpp_standalone) the input group itself (spikes
    from the TimedArray ``stimulus``, read at ``t - t_start``); without (runtime targets) the
    group holding the input's presynaptic traces, with no threshold: the spikes come from the
    ``SpikeGeneratorGroup``, through a one-to-one relay that sets ``x_last = 1``. ``traces``: keep
    the presynaptic eligibility traces (a layer above learns from them). A layer always carries
    its learning variables: the modulator ``m`` (0 outside a replay), ``gp = m g'(v)`` and
    ``db_acc``. ``events``: the variables of the event-driven update (see **The update**): a layer
    sums ``G_mem``, ``G_syn`` (postsynaptic side), a group with ``traces`` sums ``P_fold``,
    ``Q_fold`` at its spikes (presynaptic side); ``rebase`` is the code that starts a fold's
    sums. Returns a dict with ``model``, ``update``, ``threshold``, ``reset`` (threshold and reset
    None for the traces group) and ``rebase`` (None without ``events``).
    """
    model, update, rebase = ["x_last : 1  # 1 if the group spiked at the previous step"], [], []
    reset = ["x_last = 1"]
    if goodness is None:
        if stimulus:
            model += ["t_start : second (shared, constant)  # start of the current epoch"]
    else:
        g, dg = _goodness_code(goodness)
        model += ["u : volt  # synaptic current (added to v every step)",
                  "v : volt  # membrane potential",
                  "I_in : volt  # weights of the spikes that arrived during the previous step",
                  "b : volt (constant)  # bias",
                  "g_acc : 1  # sum over steps of g(v)",
                  "count : 1  # spike count",
                  "m : 1 (constant)  # FF modulator m_b / (T N) of the replay (0: no learning)",
                  "e_b : 1  # bias trace", "gp : 1  # m g'(v)", "db_acc : 1"]
        update += ["u = a_syn*u + I_in", "I_in = 0*mV", "v = a_mem*v + u + b"]
        if lif.refractory_steps > 0:
            model += ["ref : 1  # refractory steps left"]
            update += ["v = int(ref > 0)*v_reset + int(ref <= 0)*v", "ref = clip(ref - 1, 0, inf)"]
            reset += ["ref = refractory_steps"]
        update += [f"g_acc += {g}", "e_b = a_mem*e_b + 1", f"gp = m*{dg}", "db_acc += gp*e_b"]
        reset += ["v = v_reset", "count += 1"]
        if events:
            model += ["G_mem : 1  # sum over the fold of gp a_mem**k", "G_syn : 1  # ... gp a_syn**k"]
            update += [f"G_mem += gp*a_mem**({FOLD_K})", f"G_syn += gp*a_syn**({FOLD_K})"]
            rebase += ["G_mem = 0", "G_syn = 0"]
    if traces:
        model += ["e_u : 1  # presynaptic eligibility traces", "e_v : 1"]
        update += ["e_u = a_syn*e_u + x_last", "e_v = a_mem*e_v + e_u"]
        if events:
            model += ["P_fold : 1  # presynaptic factor of G_mem in the fold", "Q_fold : 1  # ... of G_syn"]
            reset += PRE_EVENT
            rebase += ["P_fold = e_v + c_fold*(a_syn*e_u + x_last)", "Q_fold = c_fold*(a_syn*e_u + x_last)"]
    update += ["x_last = 0"]
    if goodness is None and not stimulus:
        threshold, reset = None, None
    else:
        threshold = "stimulus(t - t_start, i) > 0.5" if stimulus else "v > v_threshold"
        reset = "\n".join(reset)
    return {"model": "\n".join(model), "update": "\n".join(update), "threshold": threshold,
            "reset": reset, "rebase": "\n".join(rebase) if events else None}


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


_BUILD_DIRS: list[str] = []


@atexit.register
def _remove_build_dirs():
    for d in _BUILD_DIRS:
        shutil.rmtree(d, ignore_errors=True)
        if os.path.exists(d + ".lock"):
            os.remove(d + ".lock")


class _Network:
    """One persistent Brian2 network: groups, synapses (and monitors) built once; one epoch per run()."""

    def __init__(self, sizes, R, T, lif: DiscreteLIF, goodness: Goodness, record: bool, target: str,
                 epochs_per_run: int = 2):
        import brian2 as b2

        self.b2, self.sizes, self.R, self.T, self.lif = b2, list(sizes), R, T, lif
        self.record, self.target = record, target
        self.standalone = target == "cpp_standalone"
        self.L = len(sizes) - 1
        #: run() epochs per run of the program (standalone; the runtime targets run one at a time)
        self.E = (max(2, min(MAX_EPOCHS_PER_RUN, epochs_per_run)) if EPOCHS_PER_RUN is None
                  else max(1, EPOCHS_PER_RUN)) if self.standalone else 1
        self.events = uses_events(lif)                      # the update's form (see **The update**)
        self.fold_steps = fold_steps(lif)
        self.flat = None                                    # per layer: index into W.ravel() of each synapse
        self._w_loaded = [None] * self.L                    # runtime: weights now in the Synapses
        self.build_seconds = 0.0
        self.epochs_run = 0                                 # run() epochs (phases) so far, padding excluded
        self.binary_runs = 0                                # standalone: runs of the compiled program
        t0 = time.perf_counter()
        if self.standalone:
            from brian2.devices.cpp_standalone.device import CPPStandaloneDevice
            from brian2.devices.device import reset_device, set_device
            from brian2.utils.filelock import FileLock
            if BUILD_DIR:
                spec = repr((b2.__version__, self.sizes, R, T, lif, goodness.name, goodness.expr,
                             goodness.dexpr, record, self.E, self.events, self.fold_steps, OPENMP_THREADS,
                             b2.prefs.codegen.cpp.extra_compile_args_gcc))
                self.directory = os.path.join(BUILD_DIR, hashlib.sha256(spec.encode()).hexdigest()[:16])
                os.makedirs(self.directory, exist_ok=True)
            else:
                self.directory = tempfile.mkdtemp(prefix="spikeff-brian2-")
                _BUILD_DIRS.append(self.directory)
            self.lock = FileLock(self.directory + ".lock")
            b2.prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{MAKE_JOBS}"]
            threads = b2.prefs.devices.cpp_standalone.openmp_threads
            b2.prefs.devices.cpp_standalone.openmp_threads = OPENMP_THREADS
            self.device = CPPStandaloneDevice()             # one device (project) per network
            set_device(self.device, build_on_run=False, directory=self.directory)
            try:
                self._build(goodness)
                with self.lock:
                    self.device.build(directory=self.directory, compile=True, run=False, with_output=False)
            finally:
                reset_device()
                b2.prefs.devices.cpp_standalone.openmp_threads = threads
        else:
            b2.prefs.codegen.target = target
            self._build(goodness)
        self.build_seconds = time.perf_counter() - t0

    def _build(self, goodness):
        b2, lif, R, T, E = self.b2, self.lif, self.R, self.T, self.E
        dt, mV = lif.dt * b2.second, b2.mV
        M0 = self.sizes[0]
        const = lif.brian2_namespace(mV)
        if self.events:
            const.update(K_fold=self.fold_steps, c_fold=1.0 / (lif.a_mem - lif.a_syn))
        fold_dt = self.fold_steps * dt
        self.stimulus = None        # standalone: a TimedArray (made below), runtime: a SpikeGeneratorGroup
        # standalone: per layer, the modulators of each epoch (row e), set into m at the epoch's start
        self.mod_tables = [b2.TimedArray(np.zeros((E, R * n)), dt=T * dt, name=f"mod{l}")
                           for l, n in enumerate(self.sizes[1:])] if self.standalone else []

        def group(n, name, extra=(), tables=(), **kw):
            spec = layer_model(lif, events=self.events, **kw)
            ns = dict(const, **{t.name: t for t in tables})
            if self.stimulus is not None:
                ns["stimulus"] = self.stimulus
            grp = b2.NeuronGroup(n, "\n".join([spec["model"], *extra]), threshold=spec["threshold"],
                                 reset=spec["reset"], dt=dt, namespace=ns, name=name)
            grp.run_regularly(spec["update"], when="groups", name=f"{name}_update")
            if spec["rebase"]:      # a new fold starts: after the synapses' fold (order 0)
                grp.run_regularly(spec["rebase"], dt=fold_dt, when="start", order=1, name=f"{name}_rebase")
            return grp

        if self.standalone:     # input spikes: a TimedArray (a SpikeGeneratorGroup is fixed at build)
            # the input of the E epochs of one run of the program (row e T + s: step s of epoch e;
            # t_start stays 0)
            self.stimulus = b2.TimedArray(np.zeros((E * T, R * M0)), dt=dt, name="stimulus")
            self.groups = [group(R * M0, "input", goodness=None, stimulus=True)]
            self.input_traces, self.relay = self.groups[0], None
        else:                   # input spikes: a SpikeGeneratorGroup, set_spikes per epoch
            self.groups = [b2.SpikeGeneratorGroup(R * M0, np.zeros(0, np.int64), np.zeros(0) * b2.second,
                                                  dt=dt, name="input")]
            self.input_traces = group(R * M0, "input_traces", goodness=None)
            relay_code = ["x_last_post = 1"] + ([re.sub(r"^(\w+)", r"\1_post", c) for c in PRE_EVENT]
                                                if self.events else [])
            self.relay = b2.Synapses(self.groups[0], self.input_traces, on_pre="\n".join(relay_code),
                                     delay=0 * b2.second, dt=dt, namespace=dict(const), name="input_relay")
            self.relay.connect(j="i")
        # standalone layers also carry the flag ``learn`` (a run argument: 1 creates the layer's
        # learning synapses in that run of the program) and the goodness and spike count at the end
        # of every epoch but the last of a run
        extra = (["learn : 1 (shared, constant)  # the learning synapses exist in this run"]
                 + [f"{v}_e{e} : 1  # {v} at the end of epoch {e}" for e in range(E - 1) for v in ("g_acc", "count")]
                 if self.standalone else [])
        for l in range(self.L):
            self.groups.append(group(R * self.sizes[l + 1], f"layer{l}", extra, self.mod_tables[l:l + 1],
                                     goodness=goodness, traces=l + 2 < len(self.sizes)))
        if self.standalone:
            # biases, flags and tables come from run_args (before the synapses: ``learn`` decides
            # which learning synapses are made); w is set from the table after the synapses are made
            self.device.apply_run_args()
        self.synapses, self.plain, self.tables, self.v_mons, self.s_mons, self.learn_ops = [], [], [], [], [], []
        self.folds = []         # events: per layer, the fold's expression of dW
        for l in range(self.L):
            M, N = self.sizes[l], self.sizes[l + 1]
            pre, grp = self.groups[l], self.groups[l + 1]
            table = b2.TimedArray(np.zeros((1, N * M)), dt=T * dt, name=f"W{l}")   # weights by j*M + i

            def synapses(model, name, learning=False):
                on_pre = {"pre": "I_in_post += w"}
                if learning and self.events:        # a presynaptic spike's share of the update
                    if self.standalone:             # learning synapses exist only in runs that learn:
                        on_pre["pre"] += "\n" + SYN_EVENT      # one pathway, one pass over the spikes
                    else:                           # its own pathway, switched off outside a replay
                        on_pre["spike_update"] = SYN_EVENT
                return b2.Synapses(pre, grp, model, on_pre=on_pre,
                                   delay={k: 0 * b2.second for k in on_pre},  # shared, not per synapse
                                   dt=dt, namespace=dict(const, W_table=table), name=name)

            # presynaptic variables (e_v, or P_fold and Q_fold): the input's sit in input_traces
            # (linked variables), not in the SpikeGeneratorGroup that sends the spikes (runtime targets)
            linked = l == 0 and self.input_traces is not self.groups[0]
            pre_vars = ["P_fold", "Q_fold"] if self.events else ["e_v"]
            # all-to-all within each replica: presynaptic i of replica i // M -> that replica's N
            pattern = f"k for k in range((i // {M})*{N}, (i // {M} + 1)*{N})"
            syn = synapses("w : volt\ndW : 1" + "".join(f"\n{v}_in : 1 (linked)" for v in pre_vars if linked),
                           f"synapses{l}", learning=True)
            if self.standalone:
                # two sets of synapses (same pattern, same order), of which a run of the program
                # makes one: with the update dW where the layer learns in that run, without (no
                # per-synapse update work) where it does not
                syn.connect(j=pattern + " if learn_post > 0")
                plain = synapses("w : volt", f"plain{l}")
                plain.connect(j=pattern + " if learn_post == 0")
                self.plain.append(plain)
            else:
                syn.connect(j=pattern)
            if linked:
                for v in pre_vars:
                    setattr(syn, f"{v}_in", b2.linked_var(self.input_traces, v, index="_synaptic_pre"))
            ref = {v: f"{v}_in" if linked else f"{v}_pre" for v in pre_vars}
            if self.events:
                # the fold: every fold_steps steps (before the groups start new sums), and after
                # the epoch's last step (:meth:`_fold`, after each run())
                self.folds.append(f"dW + {ref['P_fold']}*G_mem_post - {ref['Q_fold']}*G_syn_post")
                self.learn_ops.append([syn.run_regularly(f"dW = {self.folds[-1]}", dt=fold_dt, when="start",
                                                         order=0, name=f"synapses{l}_fold")]
                                      + ([] if self.standalone else [syn.spike_update]))
            else:
                # the three-factor update of every synapse, every step (after the groups' update)
                self.learn_ops.append([syn.run_regularly(f"dW += gp_post*{ref['e_v']}", when="synapses",
                                                         name=f"synapses{l}_learn")])
            if self.record:
                self.v_mons.append(b2.StateMonitor(grp, "v", record=True, when="after_groups", name=f"v{l}"))
                self.s_mons.append(b2.SpikeMonitor(grp, name=f"spikes{l}"))
            self.synapses.append(syn)
            self.tables.append(table)
        relay = [] if self.relay is None else [self.input_traces, self.relay]
        self.net = b2.Network(self.groups, relay, self.synapses, self.plain, self.v_mons, self.s_mons)
        if self.standalone:
            # the program: E run() epochs, each from rest, with that epoch's modulators
            for l, syn in enumerate(self.synapses + self.plain):
                M, N = self.sizes[l % self.L], self.sizes[l % self.L + 1]
                syn.w = f"W_table(0*second, (j % {N})*{M} + (i % {M}))*mV"
            for e in range(E):
                if e > 0:
                    self._reset(keep=("db_acc",))      # dW and db_acc add up over the epochs of a run
                for l, grp in enumerate(self.groups[1:]):
                    grp.m = f"mod{l}(t, i)"
                self.net.run(T * dt, namespace={})
                self._fold()
                if e < E - 1:
                    for grp in self.groups[1:]:
                        setattr(grp, f"g_acc_e{e}", "g_acc")
                        setattr(grp, f"count_e{e}", "count")

    # -- epochs ---------------------------------------------------------------------------------
    def _fold(self, learn=None):
        """Events: the last fold of an epoch (its steps after the last in-run fold) into ``dW``."""
        for l, code in enumerate(self.folds):
            if learn is None or learn[l]:
                self.synapses[l].dW = code

    def _reset(self, keep=()):
        """Every state variable back to rest (the weights ``w`` and the names in ``keep`` are
        kept; standalone: the code that does it, between two epochs of the program)."""
        for grp in [self.input_traces] + self.groups[1:]:
            for name in grp.equations.names:
                if not grp.variables[name].constant and name not in keep and not re.search(r"_e\d+$", name):
                    grp.variables[name].set_value(0.0)
        if not self.standalone:
            for syn in self.synapses:
                syn.variables["dW"].set_value(0.0)

    def _flat_indices(self):
        """Per layer, the index into ``W.ravel()`` of each synapse, or None where the synapses are
        in the order of the connection pattern (replica r, presynaptic i, postsynaptic j: synapse
        ``(r M + i) N + j`` holds ``W[j, i]``; then the replicas' updates are summed by a reshape).
        Standalone: from the set of synapses the last run of the program made (both sets have the
        same order)."""
        self.flat, self.n_syn = [], []
        for l, syn in enumerate(self.synapses):
            if self.standalone and len(np.asarray(syn.i[:])) == 0:
                syn = self.plain[l]
            M, N = self.sizes[l], self.sizes[l + 1]
            flat = (np.asarray(syn.j[:]) % N) * M + np.asarray(syn.i[:]) % M
            regular = flat.size == self.R * M * N and bool(
                (flat.reshape(self.R, M, N) == (np.arange(N) * M + np.arange(M)[:, None])).all())
            self.flat.append(None if regular else flat)
            self.n_syn.append(flat.size)

    def run_epochs(self, epochs, weights, biases):
        """Phases from rest, each its own run() epoch. ``epochs``: list of ``(x, mods)``, ``x``
        (T, R, M0) input spikes, ``mods[l]`` (R,) modulators already divided by T N (zeros: no
        learning). Returns the per-epoch list of per-layer dicts of numpy arrays (``g_acc``,
        ``count``, when recording ``spikes`` and ``v``) and per layer ``(dW, db)`` summed over the
        epochs and replicas (None where no epoch learns)."""
        volt_per_mV = float(self.b2.mV)
        b_vals = [np.tile(np.zeros(self.sizes[l + 1]) if b is None else np.asarray(b, np.float64), self.R)
                  * volt_per_mV for l, b in enumerate(biases)]
        out, grads = [], [None] * self.L
        step = self.E if self.standalone else 1
        for k in range(0, len(epochs), step):
            group = epochs[k:k + step]
            m_vals = [[np.repeat(np.asarray(mods[l], np.float64), self.sizes[l + 1]) for l in range(self.L)]
                      for _, mods in group]
            learn = [any(bool(np.any(m[l] != 0)) for m in m_vals) for l in range(self.L)]
            if self.standalone:
                res, g = self._run_program([x for x, _ in group], m_vals, learn, weights, b_vals)
            else:
                res, g = self._run_epoch(group[0][0], m_vals[0], learn, weights, b_vals)
            self.epochs_run += len(group)
            out += res
            for l in range(self.L):
                if g[l] is not None:
                    grads[l] = g[l] if grads[l] is None else (grads[l][0] + g[l][0], grads[l][1] + g[l][1])
        return out, grads

    def _run_program(self, xs, m_vals, learn, weights, b_vals):
        """One run of the compiled program: the epochs ``xs`` (at most E; the rest padded silent)."""
        b2, R, T, L, E = self.b2, self.R, self.T, self.L, self.E
        stim = np.zeros((E, T, R * self.sizes[0]))
        for e, x in enumerate(xs):
            stim[e] = x.reshape(T, -1)
        args = {self.stimulus: stim.reshape(E * T, -1)}
        for l in range(L):
            args[self.tables[l]] = np.asarray(weights[l], np.float64).reshape(1, -1)
            args[self.groups[l + 1].b] = b_vals[l] * b2.volt
            args[self.groups[l + 1].learn] = float(learn[l])
            if learn[l]:
                mods = np.zeros((E, R * self.sizes[l + 1]))
                for e, m in enumerate(m_vals):
                    mods[e] = m[l]
                args[self.mod_tables[l]] = mods
        with self.lock:                                     # (a build folder shared by processes)
            self.device.run(run_args=args, with_output=False)
            self.binary_runs += 1
            out = self._results_program(len(xs), learn)
            for name in self.device.run_args_arrays:        # the per-run input files
                fname = os.path.join(self.device.project_dir, "static_arrays", name)
                for f in (fname, fname + ".lock"):
                    if os.path.exists(f):
                        os.remove(f)
        return out

    def _run_epoch(self, x, m_vals, learn, weights, b_vals):
        """Runtime targets: one epoch, a run() of the network from rest."""
        b2, T, L = self.b2, self.T, self.L
        volt_per_mV = float(b2.mV)
        stim = np.ascontiguousarray(x.reshape(T, -1), dtype=np.float64)
        b2.prefs.codegen.target = self.target
        if self.flat is None:
            self._flat_indices()
        self._reset()
        for l, syn in enumerate(self.synapses):          # weights in place, only when changed
            W = np.asarray(weights[l], np.float64)
            if self._w_loaded[l] is None or not np.array_equal(self._w_loaded[l], W):
                w = np.tile(W.T.ravel(), self.R) if self.flat[l] is None else W.ravel()[self.flat[l]]
                syn.variables["w"].set_value(w * volt_per_mV)
                self._w_loaded[l] = W.copy()
        for l in range(L):
            self.groups[l + 1].variables["b"].set_value(b_vals[l])
            self.groups[l + 1].variables["m"].set_value(m_vals[l])
            for op in self.learn_ops[l]:
                op.active = learn[l]                    # (dW stays 0 anyway where m = 0)
        t0 = float(self.net.t)
        step0 = int(round(t0 / self.lif.dt))
        steps, idx = np.nonzero(stim > 0.5)                 # sorted by step, then by index
        self.groups[0].set_spikes(idx, (step0 + steps) * self.lif.dt * b2.second, sorted=True)
        n_spk = [mon.num_spikes for mon in self.s_mons]
        n_v = [len(mon.t[:]) for mon in self.v_mons]
        self.net.run(T * self.lif.dt * b2.second, namespace={})
        self._fold(learn)
        res = []
        for l in range(L):
            r = self._layer_state(l, "g_acc", "count")
            if self.record:
                lo = n_spk[l]
                r.update(self._record(l, np.asarray(self.s_mons[l].t_[lo:]) - t0, np.asarray(self.s_mons[l].i[lo:]),
                                      np.asarray(self.v_mons[l].v_)[:, n_v[l]:]))
            res.append(r)
        return [res], self._grads(learn)

    def _layer_state(self, l, g_name, c_name):
        R, N, grp = self.R, self.sizes[l + 1], self.groups[l + 1]
        return {"g_acc": np.array(grp.variables[g_name].get_value()).reshape(R, N),
                "count": np.rint(grp.variables[c_name].get_value()).astype(np.int64).reshape(R, N)}

    def _record(self, l, ts, idx, v):
        """Spikes (T, R, N) from spike times (relative to the epoch's start) and indices; v (T, R, N)
        in mV from the monitor's (R N, T) values."""
        R, T, N = self.R, self.T, self.sizes[l + 1]
        s = np.zeros((T, R * N), dtype=bool)
        s[np.rint(ts / self.lif.dt).astype(np.int64), idx] = True
        return {"spikes": s.reshape(T, R, N), "v": (v / float(self.b2.mV)).T.reshape(T, R, N)}

    def _grads(self, learn):
        """Per layer (dW (N, M) summed over the replicas, db (N,)), None where not learning."""
        if self.flat is None:
            self._flat_indices()
        grads = []
        for l in range(self.L):
            if not learn[l]:
                grads.append(None)
                continue
            N, M = self.sizes[l + 1], self.sizes[l]
            dW = np.asarray(self.synapses[l].variables["dW"].get_value())
            if dW.shape != (self.n_syn[l],):
                raise RuntimeError(f"layer {l}: {dW.shape[0]} learning synapses, {self.n_syn[l]} expected")
            if self.flat[l] is None:
                dW = np.ascontiguousarray(dW.reshape(self.R, M, N).sum(axis=0).T)
            else:
                dW = np.bincount(self.flat[l], weights=dW, minlength=N * M).reshape(N, M)
            grads.append((dW,
                          np.array(self.groups[l + 1].variables["db_acc"].get_value()).reshape(self.R, N).sum(axis=0)))
        return grads

    def _results_program(self, n, learn):
        """The first ``n`` epochs of the last run of the program, and its summed updates."""
        T, E = self.T, self.E
        out = []
        for e in range(n):
            last = e == E - 1
            out.append([self._layer_state(l, "g_acc" if last else f"g_acc_e{e}", "count" if last else f"count_e{e}")
                        for l in range(self.L)])
        if self.record:
            dt = self.lif.dt
            for l in range(self.L):
                ts, idx = np.asarray(self.s_mons[l].t_[:]), np.asarray(self.s_mons[l].i[:])
                epoch = np.rint(ts / dt).astype(np.int64) // T
                v = np.asarray(self.v_mons[l].v_)
                for e in range(n):
                    sel = epoch == e
                    out[e][l].update(self._record(l, ts[sel] - e * T * dt, idx[sel], v[:, e * T:(e + 1) * T]))
        return out, self._grads(learn)


class Brian2Engine:
    """``run_phase`` of the Brian2 engine with its persistent networks (one per set of shapes).

    ``target``: the code generation target (None: :data:`TARGET` at each call). Networks are
    dropped when pickled (they are rebuilt on the next call).
    """

    def __init__(self, target: str | None = None, max_replicas: int | None = None):
        self.target = target
        self.max_replicas = max_replicas
        self._nets: dict = {}

    def __getstate__(self):
        return {"target": self.target, "max_replicas": self.max_replicas, "_nets": {}}

    def network(self, sizes, batches, T, lif, goodness, record, target) -> _Network:
        """The persistent network for these shapes, built (or rebuilt with more replicas) if needed.
        ``batches``: the call's batch size per phase (standalone: a network built now runs as many
        epochs per run of its program as this call has, up to :data:`MAX_EPOCHS_PER_RUN`)."""
        cap = self.max_replicas or (STANDALONE_REPLICAS if target == "cpp_standalone" else MAX_REPLICAS)
        R = min(max(batches), cap)
        key = (target, tuple(sizes), T, lif, goodness.name, goodness.expr, goodness.dexpr, record)
        net = self._nets.get(key)
        if net is None or net.R < R:
            epochs = sum(-(-b // R) for b in batches)
            net = self._nets[key] = _Network(sizes, R, T, lif, goodness, record, target, epochs_per_run=epochs)
        return net

    @property
    def networks(self) -> list:
        return list(self._nets.values())

    def __call__(self, weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int = 0,
                 modulators=None, record: bool = False, normalize: bool = False) -> PhaseResult:
        """Simulate one phase (see :func:`spikeff.engines.vectorized.run_phase`); a ConcatSource
        of several phases runs each phase as its own epoch. ``chunk_steps`` is ignored."""
        if normalize:
            raise ValueError("normalization: the brian2 engine supports only normalization = 'none'")
        _check_inputs(weights, biases, source, modulators)
        target = _check_target(self.target or TARGET)
        B, T, L = source.shape[0], source.n_steps, len(weights)
        sizes = [source.shape[1]] + [W.shape[0] for W in weights]
        dtype = weights[0].dtype
        parts = list(getattr(source, "sources", [source]))        # one epoch (or more) per phase
        sizes_b = [p.shape[0] for p in parts]
        net = self.network(sizes, sizes_b, T, lif, goodness, record, target)
        R = net.R
        learn = [modulators is not None and modulators[l] is not None for l in range(L)]
        biases = [None if b is None else np.asarray(b) for b in biases]
        mods = [np.asarray(modulators[l], np.float64) / (T * sizes[l + 1]) if learn[l] else np.zeros(B)
                for l in range(L)]
        epochs, counts, inputs = [], [], []                       # one epoch (or more) per phase
        row = 0
        for part in parts:
            x = part.all_steps()                                  # (T, Bp, M0)
            if record:
                inputs.append(x.astype(bool))
            for a in range(0, x.shape[1], R):
                n = min(R, x.shape[1] - a)
                xs = np.zeros((T, R, sizes[0]))
                xs[:, :n] = x[:, a:a + n]
                ms = []
                for l in range(L):
                    m = np.zeros(R)
                    m[:n] = mods[l][row + a:row + a + n]
                    ms.append(m)
                epochs.append((xs, ms))
                counts.append(n)
            row += x.shape[1]
        res, grads = net.run_epochs(epochs, weights, biases)
        per_layer = [{k: [r[l][k][:n] if k in ("g_acc", "count") else r[l][k][:, :n]
                          for r, n in zip(res, counts)] for k in res[0][l]} for l in range(L)]
        neuron_g = [np.concatenate(a["g_acc"]) / T for a in per_layer]
        result = PhaseResult(goodness=[g.mean(axis=1) for g in neuron_g], neuron_goodness=neuron_g,
                             spike_counts=[np.concatenate(a["count"]) for a in per_layer])
        if any(learn):
            grads = [(np.zeros((sizes[l + 1], sizes[l])), np.zeros(sizes[l + 1])) if g is None else g
                     for l, g in enumerate(grads)]                # (modulators all 0: no update)
            result.grads = [(grads[l][0].astype(dtype), grads[l][1].astype(dtype)) if learn[l] else None
                            for l in range(L)]
        if record:
            result.record = {"input": np.concatenate(inputs, axis=1),
                             "spikes": [np.concatenate(a["spikes"], axis=1) for a in per_layer],
                             "v": [np.concatenate(a["v"], axis=1).astype(dtype) for a in per_layer]}
        return result

_DEFAULT = Brian2Engine()


def make_engine() -> Brian2Engine:
    """A new engine with its own persistent networks (``FFNetwork`` keeps one per model)."""
    return Brian2Engine()


def run_phase(weights, biases, lif: DiscreteLIF, goodness: Goodness, source, chunk_steps: int = 0,
              modulators=None, record: bool = False, normalize: bool = False) -> PhaseResult:
    """Simulate one phase with Brian2 (see :func:`spikeff.engines.vectorized.run_phase`), on this
    module's shared :class:`Brian2Engine` (persistent networks for the process)."""
    return _DEFAULT(weights, biases, lif, goodness, source, chunk_steps, modulators=modulators,
                    record=record, normalize=normalize)
