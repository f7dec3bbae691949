"""NIR graph of a network with convolutional layers (called by :func:`spikeff.export.nir.to_nir`).

Per conv layer ``l``: ``conv{l}`` (``nir.Conv2d``: kernels (channels, C, k, k), stride, padding,
no bias) -> ``lif{l}`` (``nir.CubaLIF`` of shape (channels, Ho, Wo)) -> ``pool{l}`` when pooling
(``nir.SumPool2d``, or ``nir.AvgPool2d`` for ``pool_mode = "avg"``). A dense layer after a conv
layer reads ``flatten{l}`` (``nir.Flatten`` of the (C, H, W) map, ``start_dim = 0``: NIR shapes
carry no batch axis) -> ``fc{l}`` (``nir.Linear``) -> ``lif{l}``. The image enters at ``input``
(shape (C, H, W)); the label channels at ``label`` (shape (G,)), through ``label_fc0``
(``nir.Linear`` (N, G): the label maps of the first layer) into ``lif0``, summed there with
``conv0``. Neuron parameters as in the dense export of :mod:`spikeff.export.nir` (exact per-step
mapping: ``r = 1/(1 - a_mem)``, ``v_leak = r b``, ``w_in = 1``, time constants at ``dt``); the
metadata also records the layer list (``layers``, JSON) and ``input_shape``. NIR has no reshape
node, so the flat (N,) label currents into the (C, Ho, Wo) ``lif0`` do not pass NIR's type check:
a graph with labels is written unchecked and is read with ``nir.read(path, type_check=False)``.
"""
from __future__ import annotations

import json
import math

import numpy as np


def to_nir_conv(net, dt: float | None = None):
    """The NIR graph of a fitted network with conv layers (see the module docstring)."""
    from .nir import require_nir
    nir = require_nir()
    c = net.config
    lif = net.lif
    dt = float(c.neuron.dt if dt is None else dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a finite time in seconds > 0, got {dt!r}")
    tau_syn, tau_mem = lif.taus_at(dt)      # the same per-step decays described at dt
    r = lif.R
    geos = net.geometries
    W = [np.asarray(w, np.float64) for w in net.weights_]
    b = net.effective_biases(numpy=True)

    def cuba(shape, bias):
        full = lambda v: np.full(shape, float(v))      # noqa: E731
        return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(r), v_leak=r * bias.reshape(shape),
                           v_threshold=full(lif.v_threshold), v_reset=full(lif.v_reset), w_in=full(1.0))

    nodes = {"input": nir.Input(input_type={"input": np.array(c.input_shape)})}
    edges, prev = [], "input"
    from ..layers import expand_bias
    for l, (g, w, bl) in enumerate(zip(geos, W, b)):
        s = g.spec
        if g.is_conv:
            C, H, Wd = g.in_shape
            k = s.kernel
            nodes[f"conv{l}"] = nir.Conv2d(input_shape=(H, Wd), weight=w[:, :g.n_kernel].reshape(s.channels, C, k, k),
                                           stride=s.stride, padding=s.padding, dilation=1, groups=1,
                                           bias=np.zeros(s.channels))
            nodes[f"lif{l}"] = cuba(g.out_shape, expand_bias(bl, g))
            edges += [(prev, f"conv{l}"), (f"conv{l}", f"lif{l}")]
            if g.n_global:
                nodes["label"] = nir.Input(input_type={"input": np.array([g.n_global])})
                nodes[f"label_fc{l}"] = nir.Linear(weight=w[:, g.n_kernel:].reshape(g.n_neurons, g.n_global))
                edges += [("label", f"label_fc{l}"), (f"label_fc{l}", f"lif{l}")]
            prev = f"lif{l}"
            if s.pool > 1:
                q = np.array([s.pool, s.pool])
                pool = nir.SumPool2d if s.pool_mode == "sum" else nir.AvgPool2d
                nodes[f"pool{l}"] = pool(kernel_size=q, stride=q, padding=np.array([0, 0]))
                edges.append((prev, f"pool{l}"))
                prev = f"pool{l}"
        else:
            if l > 0 and geos[l - 1].is_conv:
                nodes[f"flatten{l}"] = nir.Flatten(input_type={"input": np.array(geos[l - 1].pooled_shape)},
                                                   start_dim=0)
                edges.append((prev, f"flatten{l}"))
                prev = f"flatten{l}"
            nodes[f"fc{l}"] = nir.Linear(weight=w)
            nodes[f"lif{l}"] = cuba((g.n_neurons,), bl)
            edges += [(prev, f"fc{l}"), (f"fc{l}", f"lif{l}")]
            prev = f"lif{l}"
    last = geos[-1]
    nodes["output"] = nir.Output(output_type={"output": np.array(last.out_shape if last.is_conv else [last.n_neurons])})
    edges.append((prev, "output"))
    meta = {"producer": "spikeff", "dt": dt, "n_steps": int(c.n_steps), "synaptic_delay_steps": 1,
            "n_features": int(net.n_features_in_), "n_classes": int(net.n_classes_),
            "label_repeat": int(c.label_repeat), "label_intensity": float(c.label_intensity),
            "encoding": c.encoding, "max_rate_hz": float(c.max_rate), "goodness": c.goodness,
            "latency_period": int(c.latency_period), "refractory_steps": int(lif.refractory_steps),
            "seed": int(c.seed), "layers": json.dumps([s.to_dict() for s in c.layers]),
            "input_shape": list(c.input_shape)}
    # NIR has no reshape node: label_fc0 gives flat (N,) currents that lif0 (C, Ho, Wo) reads in
    # (channel, row, column) order, which NIR's type check flags; hence type_check=False (read the
    # file with nir.read(path, type_check=False)). Without labels the graph type-checks.
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=not any(g.n_global for g in geos))
