"""Export a trained network as a NIR graph (``pip install spikeff[nir]``) and read one back.

Graph: ``Input -> Linear(W_1) -> CubaLIF_1 -> Linear(W_2) -> CubaLIF_2 -> ... -> Output``, with
node names ``input``, ``fc0``, ``lif0``, ``fc1``, ``lif1``, ..., ``output``.

NIR's CubaLIF is continuous::

    tau_syn dI/dt = -I + w_in S          tau_mem dv/dt = (v_leak - v) + r I
    v > v_threshold -> spike, v = v_reset

spikeff's discrete model (:mod:`spikeff.neuron`) at time step ``dt``::

    u[t] = a_syn u[t-1] + W x[t-1]       v[t] = a_mem v[t-1] + u[t] + b
    a_syn = exp(-dt / tau_syn),          a_mem = exp(-dt / tau_mem)

is the exact solution over one step of the continuous equations with I = u held constant over
the step and each presynaptic spike adding its weight to I (the discrete convention of NIR's
simulators), when ``r = 1 / (1 - a_mem)`` (about tau_mem/dt) and ``v_leak = r b``. So the export
writes: Linear weight = W (mV), ``w_in = 1``, ``tau_syn``/``tau_mem`` in seconds, ``r`` as above,
``v_leak = r b``, ``v_threshold``, ``v_reset`` (mV). ``dt`` is an argument: the time constants are
``tau = -dt / ln(a)`` for spikeff's per-step decays ``a``, so exporting with another ``dt`` keeps the
same per-step dynamics (the graph then describes the network at that time step). One step of
synaptic delay between layers is spikeff's (and Lava's) convention and is recorded in the graph
metadata (``synaptic_delay_steps = 1``), with dt, n_steps and the encoding facts needed to rebuild
an :class:`~spikeff.network.FFNetwork` (:func:`import_nir`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import check_exportable

NIR_INSTALL_HINT = "pip install spikeff[nir]"


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


def to_nir(net, dt: float | None = None):
    """The NIR graph of a fitted network. ``dt`` (seconds): time step the graph describes
    (default: the network's own ``config.neuron.dt``)."""
    nir = require_nir()
    check_exportable(net)
    if net.config.has_conv:  # Conv2d / SumPool2d / Flatten nodes
        from .nir_conv import to_nir_conv
        return to_nir_conv(net, dt)
    c = net.config
    dt = float(c.neuron.dt if dt is None else dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a finite time in seconds > 0, got {dt!r}")
    lif = net.lif
    if dt == c.neuron.dt:    # the config's own time constants (exact, no log round trip)
        tau_syn, tau_mem = float(c.neuron.tau_syn), float(c.neuron.tau_mem)
    else:                    # the same per-step decays described at another dt
        tau_syn, tau_mem = -dt / math.log(lif.a_syn), -dt / math.log(lif.a_mem)
    r = 1.0 / (1.0 - lif.a_mem)
    nodes = {"input": nir.Input(input_type={"input": np.array([net.weights_[0].shape[1]])})}
    edges, prev = [], "input"
    for l, (W, b) in enumerate(zip(net.weights_, net.biases_)):
        N = W.shape[0]
        b = np.asarray(b, np.float64) if c.learn_bias else np.zeros(N)
        nodes[f"fc{l}"] = nir.Linear(weight=np.asarray(W, np.float64))
        nodes[f"lif{l}"] = nir.CubaLIF(
            tau_syn=np.full(N, tau_syn), tau_mem=np.full(N, tau_mem), r=np.full(N, r),
            v_leak=r * b, v_threshold=np.full(N, float(lif.v_threshold)),
            v_reset=np.full(N, float(lif.v_reset)), w_in=np.ones(N))
        edges += [(prev, f"fc{l}"), (f"fc{l}", f"lif{l}")]
        prev = f"lif{l}"
    nodes["output"] = nir.Output(output_type={"output": np.array([net.weights_[-1].shape[0]])})
    edges.append((prev, "output"))
    meta = {"producer": "spikeff", "dt": dt, "n_steps": int(c.n_steps), "synaptic_delay_steps": 1,
            "n_features": int(net.n_features_in_), "n_classes": int(net.n_classes_),
            "label_repeat": int(c.label_repeat), "label_intensity": float(c.label_intensity),
            "encoding": c.encoding, "max_rate_hz": float(c.max_rate), "goodness": c.goodness,
            "latency_period": int(c.latency_period),
            "refractory_steps": int(lif.refractory_steps), "seed": int(c.seed)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_nir(net, path, dt: float | None = None):
    """Write the network's NIR graph to ``path`` (HDF5, ``nir.write``). Returns the graph."""
    nir = require_nir()
    graph = to_nir(net, dt)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), graph)
    return graph


def read_nir_parameters(source) -> dict:
    """Read back a spikeff-layout NIR graph (a path or a ``nir.NIRGraph``): per-layer weights,
    biases and LIF parameters, plus the graph metadata."""
    nir = require_nir()
    graph = nir.read(str(source)) if isinstance(source, (str, Path)) else source
    layers, l = [], 0
    while f"fc{l}" in graph.nodes:
        fc, cell = graph.nodes[f"fc{l}"], graph.nodes.get(f"lif{l}")
        if not isinstance(cell, nir.CubaLIF):
            raise ValueError(f"node lif{l}: expected a CubaLIF after fc{l}, got {type(cell).__name__}")
        W = np.asarray(fc.weight, np.float64)
        bias = getattr(fc, "bias", None)
        r = np.asarray(cell.r, np.float64)
        layers.append({"weight": W, "bias": np.asarray(cell.v_leak, np.float64) / r
                       + (np.zeros(W.shape[0]) if bias is None else np.asarray(bias, np.float64)),
                       "tau_syn": np.asarray(cell.tau_syn, np.float64), "tau_mem": np.asarray(cell.tau_mem, np.float64),
                       "r": r, "v_threshold": np.asarray(cell.v_threshold, np.float64),
                       "v_reset": np.asarray(cell.v_reset, np.float64), "w_in": np.asarray(cell.w_in, np.float64)})
        l += 1
    if not layers:
        raise ValueError("no spikeff layers (nodes fc0, lif0, ...) found in this NIR graph")
    meta = {k: _meta_value(v) for k, v in (graph.metadata or {}).items()}
    return {"layers": layers, "metadata": meta}


def import_nir(source, dt: float | None = None):
    """Rebuild an :class:`~spikeff.network.FFNetwork` (for inference) from a NIR graph written by
    :func:`export_nir`. ``dt`` defaults to the graph's metadata. The LIF parameters must be the
    same for every neuron (spikeff has one neuron model per network)."""
    from ..config import FFConfig, NeuronConfig
    from ..network import FFNetwork
    p = read_nir_parameters(source)
    meta, layers = p["metadata"], p["layers"]
    dt = float(dt if dt is not None else meta.get("dt", 1e-3))
    first = layers[0]
    for name in ("tau_syn", "tau_mem", "v_threshold", "v_reset"):
        vals = np.concatenate([L[name] for L in layers])
        if not np.allclose(vals, vals[0], rtol=1e-12, atol=0):
            raise ValueError(f"{name} differs between neurons; spikeff needs one value for the whole network")
    for L in layers:
        if not np.allclose(L["w_in"], 1.0):
            raise ValueError("w_in != 1 is not supported (fold it into the weights)")
    lif_r = 1.0 / (1.0 - math.exp(-dt / first["tau_mem"][0]))
    if not np.allclose(np.concatenate([L["r"] for L in layers]), lif_r, rtol=1e-9):
        raise ValueError(f"r differs from spikeff's 1/(1 - exp(-dt/tau_mem)) = {lif_r:.6g} at dt = {dt}")
    biases = [L["bias"] for L in layers]
    neuron = NeuronConfig(dt=dt, tau_syn=float(first["tau_syn"][0]), tau_mem=float(first["tau_mem"][0]),
                          v_threshold=float(first["v_threshold"][0]), v_reset=float(first["v_reset"][0]))
    n_classes = int(meta.get("n_classes", 0))
    label_repeat = int(meta.get("label_repeat", 1))
    n_in = layers[0]["weight"].shape[1]
    n_features = int(meta.get("n_features", n_in - n_classes * label_repeat))
    config = FFConfig(hidden_sizes=tuple(L["weight"].shape[0] for L in layers), n_steps=int(meta.get("n_steps", 20)),
                      dtype="float64", learn_bias=any(np.any(b != 0) for b in biases), label_repeat=label_repeat,
                      label_intensity=float(meta.get("label_intensity", 1.0)),
                      encoding=str(meta.get("encoding", "rate")), max_rate=float(meta.get("max_rate_hz", 500.0)),
                      latency_period=int(meta.get("latency_period", 0)),
                      goodness=str(meta.get("goodness", "energy_relu")), readout=False, seed=int(meta.get("seed", 0)), neuron=neuron)
    net = FFNetwork(config).initialize(n_features, n_classes)
    net.weights_ = [L["weight"].copy() for L in layers]
    net.biases_ = [b.copy() for b in biases]
    return net
