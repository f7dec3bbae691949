"""NIR export (``pip install spikeff[nir]``) and import: graphs that NIR's simulators run exactly.

Graph written by :func:`to_nir`: ``Input -> Linear(W_1) -> CubaLIF_1 -> Linear(W_2) -> ... -> Output``,
node names ``input``, ``fc0``, ``lif0``, ``fc1``, ``lif1``, ..., ``output`` (with ``delay="node"``
also a ``Delay`` node ``delay{l}`` before each ``fc{l}``).

NIR's CubaLIF is continuous (``tau_syn dI/dt = -I + w_in S``, ``tau_mem dv/dt = (v_leak - v) + r I``,
spike when ``v > v_threshold``, then ``v = v_reset``) and carries no time step: every simulator
discretizes it in its own way. spikeff's model is the discrete one of :mod:`spikeff.neuron` (per-step
decays ``a_syn``, ``a_mem``); :meth:`spikeff.neuron.DiscreteLIF.nir_parameters` maps it to CubaLIF
parameters at a ``dt`` and flavour.

Flavours (how the per-step model is written as continuous parameters, at time step ``dt``):

``euler`` (default, ``dt`` = 1e-4 s)
    What NIR's simulators run: forward Euler at ``dt``, the new current feeding the membrane::

        I[t] = I[t-1] + dt/tau_syn (-I[t-1] + w_in W x)
        v[t] = v[t-1] + dt/tau_mem (v_leak - v[t-1] + r I[t])

    (Norse 1.1 ``from_nir(graph, dt=dt)``; snnTorch 1.0 ``import_from_nir``, which fixes
    ``dt = 1e-4`` s and asserts ``r = tau_mem/dt``). The export writes ``tau = dt/(1 - a)``,
    ``r = tau_mem/dt``, ``w_in = tau_syn/dt``, ``v_leak = b tau_mem/dt``: then
    ``1 - dt/tau = a`` and the Euler step is spikeff's step (``I = u``). The default ``dt`` is
    snnTorch's fixed 1e-4 s, so one file runs in snnTorch and (with ``dt=1e-4``) in Norse; the time
    constants then describe the same per-step dynamics at that step (``tau_mem`` = 2.05 ms for the
    digits model's 20 ms at 1 ms).
``exact``
    Exponential (exact) integration over each step with the current held: ``tau = -dt/ln(a)``,
    ``r = 1/(1 - a_mem)``, ``w_in = 1``, ``v_leak = r b`` (``dt`` defaults to the model's). For
    simulators that integrate exactly; Euler simulators run it wrong (time constants and input
    gain), snnTorch refuses it.

Delay. spikeff delays every layer's input by one step (``x[t-1]``); NIR's simulators pass spikes on in
the same step. ``delay="none"`` (default): no node for it; in an importer, layer ``l`` (from 0) spikes
``l + 1`` steps earlier than in spikeff (:func:`spikeff.export.interop.align` shifts them back), the
same spikes when the network has no bias (with a bias, the first ``l + 1`` steps differ).
``delay="node"``: a NIR ``Delay`` of ``dt`` before each Linear (exact in time, but neither Norse 1.1
nor snnTorch 1.0 can import a ``Delay`` node).

Refused: a refractory period (CubaLIF has none) and length normalisation. Not expressible in the
importers (written, but run differently): ``v_reset != 0`` (Norse and snnTorch reset to 0) and a
bias (snnTorch refuses ``v_leak != 0``; Norse also leaks its synaptic current towards ``v_leak``).

:func:`import_nir` reads spikeff's graphs and chains ``Linear/Affine -> CubaLIF/LIF`` written by
snnTorch's ``export_to_nir`` or Norse's ``to_nir`` (see ``convention``) into an
:class:`~spikeff.network.FFNetwork`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import NIRError, check_exportable  # noqa: F401  (NIRError: defined with the other export errors)
from ..neuron import DiscreteLIF, taus_for

NIR_INSTALL_HINT = "pip install spikeff[nir]"
FLAVOURS = ("euler", "exact")
DELAYS = ("none", "node")
SNNTORCH_DT = 1e-4      # snnTorch 1.0's export_to_nir and import_from_nir hard-code dt = 1e-4 s
NORSE_DT = 1e-3         # Norse 1.1's to_nir / from_nir default dt
CONVENTIONS = ("auto", "euler", "exact", "norse")


def require_nir():
    try:
        import nir
    except ImportError as e:
        raise ImportError(f"NIR export needs the nir package: {NIR_INSTALL_HINT} (import failed: {e})") from e
    return nir


def _meta_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not valid; choose one of {list(choices)}")


def _check_dt(dt):
    if not (isinstance(dt, (int, float)) and dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a finite time in seconds > 0, got {dt!r}")
    return float(dt)


def default_dt(net, flavour: str) -> float:
    """The time step a graph of ``flavour`` describes by default: snnTorch's fixed 1e-4 s for
    ``euler`` (Norse takes any dt), the network's own ``dt`` for ``exact``."""
    return SNNTORCH_DT if flavour == "euler" else float(net.config.neuron.dt)


# -- the two conversions between spikeff's per-step constants and CubaLIF parameters ---------------
def cuba_parameters(a_syn: float, a_mem: float, dt: float, flavour: str) -> dict:
    """CubaLIF time constants, ``r`` and ``w_in`` for spikeff's per-step decays at ``dt``, and
    ``leak_gain`` (``v_leak = leak_gain * b``): :meth:`spikeff.neuron.DiscreteLIF.nir_parameters`."""
    _check_choice("flavour", flavour, FLAVOURS)
    lif = DiscreteLIF(a_syn=float(a_syn), a_mem=float(a_mem), v_threshold=1.0, v_reset=0.0, refractory_steps=0,
                      dt=math.nan)                 # no time constants of its own: they come from the decays
    try:
        return lif.nir_parameters(dt, flavour)
    except ValueError as e:
        raise NIRError(str(e)) from None


def discrete_parameters(tau_syn, tau_mem, r, w_in, dt: float, convention: str) -> dict:
    """The inverse of :func:`cuba_parameters` for any CubaLIF: per-step decays ``a_syn``, ``a_mem``
    and per-neuron gains such that spikeff's weights are ``weight_gain[:, None] * W`` and its bias
    ``bias_gain * v_leak``.

    ``convention``: ``euler`` (forward Euler at ``dt``, input scaled by ``dt/tau_syn``: NIR's
    simulators, snnTorch's graphs), ``exact`` (exponential decays, input added to I as it is) or
    ``norse`` (Norse 1.1's ``LIFCell`` as its ``to_nir`` writes it: Euler decays, the input jumps
    into the current unscaled, and the time constants written as ``dt/tau_inv`` = ``dt * tau``,
    so ``tau = written / dt``).
    """
    _check_choice("convention", convention, CONVENTIONS[1:])
    tau_syn, tau_mem = np.asarray(tau_syn, np.float64), np.asarray(tau_mem, np.float64)
    if convention == "norse":
        tau_syn, tau_mem = tau_syn / dt, tau_mem / dt
    r, w_in = np.asarray(r, np.float64), np.asarray(w_in, np.float64)
    no_syn = tau_syn == 0                          # a LIF (no synaptic current): the input goes to v as it is
    ts = np.where(no_syn, 1.0, tau_syn)
    if convention == "exact":
        a_syn, a_mem = np.exp(-dt / ts), np.exp(-dt / tau_mem)
        bias_gain = 1.0 - a_mem                    # v_leak and r I enter v through (1 - a_mem)
        in_gain = w_in
    else:
        a_syn, a_mem = 1.0 - dt / ts, 1.0 - dt / tau_mem
        bias_gain = dt / tau_mem
        in_gain = np.where(no_syn, w_in, w_in * dt / ts) if convention == "euler" else w_in
    return {"a_syn": np.where(no_syn, 0.0, a_syn), "a_mem": a_mem, "weight_gain": bias_gain * r * in_gain,
            "bias_gain": bias_gain}


# -- export ------------------------------------------------------------------------------------
def to_nir(net, dt: float | None = None, flavour: str = "euler", delay: str = "none"):
    """The NIR graph of a fitted network (see the module docstring for ``flavour`` and ``delay``).
    ``dt`` (seconds): the time step the graph describes (default: 1e-4 s for ``euler``, the
    network's own ``dt`` for ``exact``); spikeff's per-step dynamics are kept at any ``dt``."""
    nir = require_nir()
    _check_choice("flavour", flavour, FLAVOURS)
    _check_choice("delay", delay, DELAYS)
    check_exportable(net, "nir")
    if net.config.has_conv:  # Conv2d / SumPool2d / Flatten nodes (spikeff.export.nir_conv: exact convention)
        from .nir_conv import to_nir_conv
        return to_nir_conv(net, dt)
    c, lif = net.config, net.lif
    dt = _check_dt(default_dt(net, flavour) if dt is None else dt)
    try:
        p = lif.nir_parameters(dt, flavour)        # at the model's own dt: the config's time constants
    except ValueError as e:
        raise NIRError(str(e)) from None
    nodes = {"input": nir.Input(input_type={"input": np.array([net.weights_[0].shape[1]])})}
    edges, prev = [], "input"
    for l, (W, b) in enumerate(zip(net.weights_, net.effective_biases(numpy=True))):
        N, M = W.shape
        if delay == "node":
            nodes[f"delay{l}"] = nir.Delay(delay=np.full(M, dt))
            edges.append((prev, f"delay{l}"))
            prev = f"delay{l}"
        nodes[f"fc{l}"] = nir.Linear(weight=np.asarray(W, np.float64))
        nodes[f"lif{l}"] = nir.CubaLIF(
            tau_syn=np.full(N, p["tau_syn"]), tau_mem=np.full(N, p["tau_mem"]), r=np.full(N, p["r"]),
            v_leak=p["leak_gain"] * b, v_threshold=np.full(N, float(lif.v_threshold)),
            v_reset=np.full(N, float(lif.v_reset)), w_in=np.full(N, p["w_in"]))
        edges += [(prev, f"fc{l}"), (f"fc{l}", f"lif{l}")]
        prev = f"lif{l}"
    nodes["output"] = nir.Output(output_type={"output": np.array([net.weights_[-1].shape[0]])})
    edges.append((prev, "output"))
    meta = {"producer": "spikeff", "flavour": flavour, "dt": dt, "delay": delay, "model_dt": float(c.neuron.dt),
            "n_steps": int(c.n_steps), "synaptic_delay_steps": 1,
            "n_features": int(net.n_features_in_), "n_classes": int(net.n_classes_),
            "label_repeat": int(c.label_repeat), "label_intensity": float(c.label_intensity),
            "encoding": c.encoding, "max_rate_hz": float(c.max_rate), "goodness": c.goodness,
            "latency_period": int(c.latency_period), "seed": int(c.seed)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_nir(net, path, dt: float | None = None, flavour: str = "euler", delay: str = "none"):
    """Write the network's NIR graph to ``path`` (HDF5, ``nir.write``). Returns the graph."""
    nir = require_nir()
    graph = to_nir(net, dt, flavour, delay)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), graph)
    return graph


# -- import ------------------------------------------------------------------------------------
def read_graph(source):
    """A ``nir.NIRGraph`` from a path (``nir.read``), or the graph itself."""
    nir = require_nir()
    return nir.read(str(source)) if isinstance(source, (str, Path)) else source


def graph_chain(graph) -> list:
    """The nodes of a feed-forward chain graph from its Input to its Output, as ``[(name, node)]``;
    a ``ValueError`` for branches, loops, subgraphs or several inputs."""
    nir = require_nir()
    succ = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise NIRError(f"spikeff reads graphs with one Input node, this one has {len(inputs)}")
    chain, name, seen = [], inputs[0], set()
    while True:
        node = graph.nodes.get(name)
        if node is None:
            raise NIRError(f"edge to node {name!r}, which is not in the graph")
        if name in seen:
            raise NIRError(f"node {name!r} is part of a loop: spikeff reads feed-forward chains only")
        seen.add(name)
        chain.append((name, node))
        if isinstance(node, nir.Output):
            break
        nxt = succ.get(name, [])
        if len(nxt) != 1:
            raise NIRError(f"node {name!r} ({type(node).__name__}) has {len(nxt)} outgoing edges: spikeff "
                           "reads chains Input -> (Linear/Affine -> CubaLIF/LIF) ... -> Output")
        name = nxt[0]
    unused = sorted(set(graph.nodes) - seen)
    if unused:
        raise NIRError(f"nodes {unused} are not on the chain from the Input to the Output")
    return chain


def read_layers(graph) -> list:
    """Per layer: the weight node and the neuron node of a chain graph (see :func:`graph_chain`),
    as dicts ``{"fc": name, "cell": name, "weight", "bias", "cell_type", "tau_syn", "tau_mem",
    "r", "w_in", "v_leak", "v_threshold", "v_reset", "delay"}`` (float64 arrays)."""
    nir = require_nir()
    layers, pending, delay = [], None, None
    for name, node in graph_chain(graph)[1:-1]:
        kind = type(node).__name__
        if isinstance(node, nir.Delay) and pending is None:
            delay = np.asarray(node.delay, np.float64)
        elif isinstance(node, (nir.Linear, nir.Affine)) and pending is None:
            W = np.asarray(node.weight, np.float64)
            if W.ndim != 2:
                raise NIRError(f"node {name!r} ({kind}): weight must be 2-D, got shape {W.shape}")
            bias = getattr(node, "bias", None)
            pending = {"fc": name, "weight": W, "delay": delay,
                       "bias": np.zeros(W.shape[0]) if bias is None else np.asarray(bias, np.float64)}
            delay = None
        elif isinstance(node, (nir.CubaLIF, nir.LIF)) and pending is not None:
            N = pending["weight"].shape[0]
            full = (lambda v, d=None: np.broadcast_to(np.asarray(d if v is None else v, np.float64), (N,)).copy())
            if isinstance(node, nir.CubaLIF):
                cell = {"tau_syn": full(node.tau_syn), "tau_mem": full(node.tau_mem), "w_in": full(node.w_in, 1.0)}
            else:
                cell = {"tau_syn": np.zeros(N), "tau_mem": full(node.tau), "w_in": np.ones(N)}
            cell.update(r=full(node.r), v_leak=full(node.v_leak), v_threshold=full(node.v_threshold),
                        v_reset=full(node.v_reset, 0.0), cell=name, cell_type=kind)
            layers.append({**pending, **cell})
            pending = None
        else:
            want = "Linear or Affine" if pending is None else f"CubaLIF or LIF after {pending['fc']!r}"
            raise NIRError(f"node {name!r} is a NIR {kind}, which spikeff cannot represent here (expected "
                           f"{want}): spikeff reads chains Input -> (Linear/Affine -> CubaLIF/LIF) ... -> Output")
    if pending is not None or delay is not None:
        raise NIRError("the chain ends without a neuron node after its last Linear/Affine (or Delay)")
    if not layers:
        raise NIRError("no Linear/Affine -> CubaLIF/LIF layer found in this NIR graph")
    return layers


def read_nir_parameters(source) -> dict:
    """A NIR graph (a path or a ``nir.NIRGraph``) as per-layer arrays (:func:`read_layers`) plus the
    graph metadata."""
    graph = read_graph(source)
    meta = {k: _meta_value(v) for k, v in (graph.metadata or {}).items()}
    return {"layers": read_layers(graph), "metadata": meta}


def _uniform(layers, key, what):
    vals = np.concatenate([L[key] for L in layers])
    if not np.allclose(vals, vals[0], rtol=1e-9, atol=0):
        raise NIRError(f"{what} differs between neurons ({vals.min():.6g} .. {vals.max():.6g}); spikeff has one "
                       "neuron model for the whole network")
    return float(vals[0])


def import_nir(source, dt: float | None = None, convention: str = "auto", n_classes: int | None = None,
               label_repeat: int | None = None, n_steps: int | None = None, **config_changes):
    """An :class:`~spikeff.network.FFNetwork` from a NIR graph (a path or a ``nir.NIRGraph``), ready for
    inference (``simulate``, ``simulate_spikes``, ``predict``) and for FF training (``continue_fit``).

    Reads spikeff's own graphs (everything from their metadata) and ``Linear/Affine -> CubaLIF/LIF``
    chains written by other tools. ``convention`` says how the graph's CubaLIFs were stepped
    (:func:`discrete_parameters`): ``auto`` = the flavour in a spikeff graph's metadata, else
    ``euler`` (NIR's simulators; snnTorch's ``export_to_nir`` graphs, dt = 1e-4 s); ``norse`` for
    graphs from Norse's ``to_nir`` (``LIFCell``, dt = 1e-3 s by default). ``dt`` defaults to the
    graph's metadata, else 1e-4 s (1e-3 s for ``norse``).

    A graph from another tool: its input layer takes ``n_features + n_classes * label_repeat``
    channels, the label channels last (spikeff's overlay; defaults: ``n_classes = 0``,
    ``label_repeat = 1``: no label channels, inference on given spikes only). ``convention="euler"``
    graphs pass spikes on in the same step: in spikeff (one step of delay per layer) layer ``l``
    spikes ``l + 1`` steps later. A ``LIF`` (no synaptic current: snnTorch's ``Leaky``, Norse's
    ``LIFBoxCell``) becomes spikeff's neuron with ``tau_syn = 0`` (``a_syn = 0``). Refused with an
    error naming the node: other node types, branches, an Affine with a non-zero bias (it would feed
    the synaptic current; spikeff's bias feeds the membrane), time constants, threshold or reset
    that differ between neurons or layers (LIF and CubaLIF layers mixed, too). ``config_changes``: other
    :class:`~spikeff.config.FFConfig` fields (e.g. ``epochs``, ``learning_rate``).
    """
    from ..config import FFConfig, NeuronConfig
    from ..network import FFNetwork
    graph = read_graph(source)
    p = read_nir_parameters(graph)
    meta, layers = p["metadata"], p["layers"]
    _check_choice("convention", convention, CONVENTIONS)
    spikeff_made = meta.get("producer") == "spikeff"
    if convention == "auto":
        convention = str(meta.get("flavour", "exact")) if spikeff_made else "euler"
    dt = _check_dt(float(dt if dt is not None else meta.get("dt", NORSE_DT if convention == "norse" else SNNTORCH_DT)))
    for L in layers:
        if np.any(L["bias"] != 0):
            raise NIRError(f"node {L['fc']!r} (Affine) has a non-zero bias: it enters the synaptic current at every "
                           "step, which spikeff's neuron cannot express (its bias enters the membrane, as CubaLIF's "
                           "v_leak); write the layer without a bias (torch.nn.Linear(..., bias=False))")
        if L["delay"] is not None and not np.allclose(L["delay"], dt, rtol=1e-9):
            raise NIRError(f"Delay before node {L['fc']!r}: spikeff's only delay is one step ({dt} s), got "
                           f"{np.unique(L['delay'])} s")
    tau_syn = _uniform(layers, "tau_syn", "tau_syn (0 for a LIF)")
    tau_mem = _uniform(layers, "tau_mem", "tau_mem")
    v_threshold = _uniform(layers, "v_threshold", "v_threshold")
    v_reset = _uniform(layers, "v_reset", "v_reset")
    weights, biases = [], []
    for L in layers:
        d = discrete_parameters(L["tau_syn"], L["tau_mem"], L["r"], L["w_in"], dt, convention)
        weights.append(d["weight_gain"][:, None] * L["weight"])
        biases.append(d["bias_gain"] * L["v_leak"])
    d = discrete_parameters(tau_syn, tau_mem, 1.0, 1.0, dt, convention)
    a_syn, a_mem = float(d["a_syn"]), float(d["a_mem"])
    if not (0 <= a_syn < 1 and 0 < a_mem < 1):
        raise NIRError(f"tau_syn = {tau_syn:.6g} s, tau_mem = {tau_mem:.6g} s at dt = {dt} s give per-step decays "
                       f"{a_syn:.6g}, {a_mem:.6g} ({convention}); spikeff needs a_syn in [0, 1) and a_mem in (0, 1)")
    # spikeff's own dt: the model's (spikeff graphs: the encoding's spike probabilities depend on it), with
    # time constants that give the same per-step decays
    dt_model = float(meta.get("model_dt", dt)) if spikeff_made else dt
    tau_syn_model, tau_mem_model = taus_for(a_syn, a_mem, dt_model)
    neuron = NeuronConfig(dt=dt_model, tau_syn=tau_syn_model, tau_mem=tau_mem_model,
                          v_threshold=v_threshold, v_reset=v_reset)
    if spikeff_made:
        n_classes = int(meta.get("n_classes", 0)) if n_classes is None else n_classes
        label_repeat = int(meta.get("label_repeat", 1)) if label_repeat is None else label_repeat
    n_classes = 0 if n_classes is None else int(n_classes)
    label_repeat = 1 if label_repeat is None else int(label_repeat)
    n_in = layers[0]["weight"].shape[1]
    n_features = n_in - n_classes * label_repeat
    if n_features <= 0:
        raise NIRError(f"the graph's input has {n_in} channels, fewer than n_classes * label_repeat = "
                       f"{n_classes * label_repeat} label channels")
    given = {"hidden_sizes": tuple(L["weight"].shape[0] for L in layers), "dtype": "float64",
             "learn_bias": any(np.any(b != 0) for b in biases), "label_repeat": label_repeat,
             "readout": False, "neuron": neuron}
    if n_steps is not None or "n_steps" in meta:
        given["n_steps"] = int(n_steps if n_steps is not None else meta["n_steps"])
    if spikeff_made:
        given.update(label_intensity=float(meta.get("label_intensity", 1.0)),
                     encoding=str(meta.get("encoding", "rate")), max_rate=float(meta.get("max_rate_hz", 500.0)),
                     latency_period=int(meta.get("latency_period", 0)),
                     goodness=str(meta.get("goodness", "energy_relu")), seed=int(meta.get("seed", 0)))
    else:
        given["max_rate"] = min(FFConfig.max_rate, 1.0 / dt_model)
    config = FFConfig(**{**given, **config_changes})
    net = FFNetwork(config).initialize(n_features, n_classes)
    for W_net, W, b_net, b in zip(net.weights_, weights, net.biases_, biases):   # in place: the optimizers hold them
        W_net[...] = W
        b_net[...] = b
    return net
