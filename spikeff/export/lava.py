"""Lava processes for a trained :class:`~spikeff.network.FFNetwork` (lava-nc 0.10, Loihi 2 style).

Each layer becomes a ``Dense`` (or, for many parallel copies, ``Sparse``) connection followed by a
``LIF`` population; a ``RingBuffer`` plays the input spike trains of spikeff's spike source;
``Monitor`` processes record every layer's spikes, ``u`` and ``v``. Runs with
``Loihi2SimCfg(select_tag="floating_pt")`` or ``select_tag="fixed_pt"`` (Lava's bit-accurate
Loihi model).

Timing (checked with ``experiments/lava_delay_check.py``): Lava's ``Dense`` sends the activation it
accumulated at the previous step, so RingBuffer -> Dense -> LIF and LIF -> Dense -> LIF both have
exactly one step of delay, as in spikeff's model (:mod:`spikeff.neuron`). A network is therefore
mapped 1:1, with no shift: Lava time step ``t + 1`` is spikeff step ``t``.

Parameters: floating point from :meth:`spikeff.neuron.DiscreteLIF.lava_float` (the same arithmetic
as spikeff's, so spikes are identical with a float64 network); fixed point from the quantization
of :mod:`spikeff.export.loihi` (pure numpy; it also holds the bit-exact numpy model of Lava's
fixed-point processes, whose names are re-exported here).

Lava's Monitor reads ``v`` *after* the reset; the pre-reset potential that goodness needs is
rebuilt exactly from the monitored ``u`` and ``v``: ``v_pre[t] = decay(v[t-1]) + u[t] + bias``
where the neuron spiked (the same expression Lava evaluates), ``v[t]`` elsewhere.

Inference (class decisions, goodness per label, readout features) runs through the engine seam:
the engine ``make_engine("lava", mode=..., quant=..., backend=...)`` (:mod:`spikeff.engines.lava`)
with :mod:`spikeff.inference`, the same code as ``FFNetwork.predict``; :func:`predict`,
:func:`goodness_per_label` and :func:`readout_features_exported` here are thin wrappers of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import check_exportable
from .loihi import (  # noqa: F401  (re-exported: the fixed-point model's public names)
    ACT_SHIFT, BIAS_EXP_RANGE, BIAS_MANT_BITS, BIAS_MANT_MAX, DECAY_BITS, DECAY_UNITY, DS_OFFSET, UV_BITS,
    UV_MAX, VTH_BITS, VTH_SHIFT, WEIGHT_BITS, WEIGHT_EXP_RANGE, WEIGHT_MANT_MAX, WEIGHT_MANT_MIN, LayerQuant,
    QuantizedNetwork, _dense, _trunc_decay, quantize_layer, quantize_network, rebuild_v_pre, simulate_fixed_numpy)

LAVA_INSTALL_HINT = "pip install spikeff[lava]  (lava-nc 0.10, Python < 3.11)"
MODES = ("floating_pt", "fixed_pt")
BACKENDS = ("numpy", "lava")


def require_lava():
    """Import lava's pieces used here, or raise an ImportError saying how to install it."""
    try:
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.dense.process import Dense
        from lava.proc.io.source import RingBuffer
        from lava.proc.lif.process import LIF
        from lava.proc.monitor.process import Monitor
        from lava.proc.sparse.process import Sparse
        from lava.utils.weightutils import SignMode
    except ImportError as e:
        raise ImportError(f"running a network on Lava needs lava-nc: {LAVA_INSTALL_HINT} "
                          f"(import failed: {e})") from e
    return dict(RunSteps=RunSteps, Loihi2SimCfg=Loihi2SimCfg, Dense=Dense, RingBuffer=RingBuffer,
                LIF=LIF, Monitor=Monitor, Sparse=Sparse, SignMode=SignMode)


def lava_available() -> bool:
    try:
        require_lava()
        return True
    except ImportError:
        return False


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not valid; choose one of {list(MODES)}")



def _check_run(mode, quant, backend):
    _check_mode(mode)
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not valid; choose one of {list(BACKENDS)}")
    if mode == "fixed_pt" and quant is None:
        raise ValueError("mode='fixed_pt' needs quant=quantize_network(net, ...)")


def _target(mode):
    return "lava" if mode == "floating_pt" else "loihi"


# ------------------------------------------------------------------------------------------------
# Lava processes
# ------------------------------------------------------------------------------------------------
def _block_diag(W, copies):
    if copies == 1:
        return W
    N, M = W.shape
    out = np.zeros((copies * N, copies * M), dtype=W.dtype)
    for k in range(copies):
        out[k * N:(k + 1) * N, k * M:(k + 1) * M] = W
    return out


@dataclass
class LavaNetwork:
    """The Lava processes of an exported network (``copies`` parallel copies, flattened as
    neuron ``k * N + i`` of copy ``k``), with the model they were built from."""

    source: object
    connections: list
    neurons: list
    monitors: list        # per layer: {"s": Monitor, "u": Monitor, "v": Monitor}
    mode: str
    copies: int
    n_steps: int
    quant: QuantizedNetwork | None = None
    lif: object = None    # the DiscreteLIF
    biases: list | None = None   # float64 (N,) per layer (zeros: no bias)


def build_processes(weights, biases, lif, input_spikes, mode: str = "floating_pt",
                    quant: QuantizedNetwork | None = None, connection: str = "auto") -> LavaNetwork:
    """Lava processes for layers ``weights`` (N, M) and ``biases`` (float64 (N,)) of neuron ``lif``
    playing ``input_spikes`` (T, B, M): the B samples run as parallel copies of the network.
    ``mode="fixed_pt"`` needs ``quant`` (from :func:`quantize_network`).
    ``connection``: "dense", "sparse" (block-diagonal, for many copies) or "auto"."""
    lv = require_lava()
    _check_mode(mode)
    lif.check_target(_target(mode))
    x = np.asarray(input_spikes)
    if x.ndim != 3 or x.shape[2] != weights[0].shape[1]:
        raise ValueError(f"input_spikes must have shape (T, B, {weights[0].shape[1]}), got {x.shape}")
    if mode == "fixed_pt" and quant is None:
        raise ValueError("mode='fixed_pt' needs quant=quantize_network(net, ...)")
    if connection not in ("auto", "dense", "sparse"):
        raise ValueError(f"connection: {connection!r} is not valid; choose one of ['auto', 'dense', 'sparse']")
    T, B, M = x.shape
    data = x.transpose(1, 2, 0).reshape(B * M, T)          # channel k*M + j of copy k, time last
    source = lv["RingBuffer"](data=data.astype(np.int32 if mode == "fixed_pt" else np.float64))
    prev_out = source.s_out
    conns, neurons, monitors = [], [], []
    for l, W in enumerate(weights):
        if mode == "floating_pt":
            Wl = _block_diag(np.asarray(W, dtype=np.float64), B)
            params = dict(**lif.lava_float(), bias_mant=np.tile(biases[l], B), bias_exp=0)
            conn_kw = {}
        else:
            q = quant.layers[l]
            Wl = _block_diag(q.weights.astype(np.int32), B)
            params = dict(du=q.du, dv=q.dv, vth=q.vth, bias_mant=np.tile(q.bias_mant, B), bias_exp=q.bias_exp)
            conn_kw = dict(weight_exp=q.weight_exp, num_weight_bits=WEIGHT_BITS, sign_mode=lv["SignMode"].MIXED)
        use_sparse = connection == "sparse" or (connection == "auto" and B > 1 and Wl.size > 4_000_000)
        if use_sparse:
            from scipy.sparse import csr_matrix
            conn = lv["Sparse"](weights=csr_matrix(Wl), **conn_kw)
        else:
            conn = lv["Dense"](weights=Wl, **conn_kw)
        neu = lv["LIF"](shape=(B * W.shape[0],), name=f"spikeff_layer{l}", **params)
        prev_out.connect(conn.s_in)
        conn.a_out.connect(neu.a_in)
        mons = {}
        for key, target in (("s", neu.s_out), ("u", neu.u), ("v", neu.v)):
            mons[key] = lv["Monitor"]()
            mons[key].probe(target=target, num_steps=T)
        conns.append(conn)
        neurons.append(neu)
        monitors.append(mons)
        prev_out = neu.s_out
    return LavaNetwork(source, conns, neurons, monitors, mode, B, T, quant, lif,
                       [np.asarray(b, np.float64) for b in biases])


def build_lava_network(net, input_spikes, mode: str = "floating_pt", quant: QuantizedNetwork | None = None,
                       connection: str = "auto") -> LavaNetwork:
    """:func:`build_processes` for a fitted network (conv layers as their dense expansion)."""
    net = _dense(net)
    _check_mode(mode)
    check_exportable(net, _target(mode))
    return build_processes([np.asarray(W, np.float64) for W in net.weights_], net.effective_biases(numpy=True),
                           net.lif, input_spikes, mode, quant, connection)


def run_lava_network(lnet: LavaNetwork, net=None) -> dict:
    """Run the Lava network for its T steps; return per-layer (T, B, N) "spikes", pre-reset "v"
    (mV) and "u" (mV), plus "v_int"/"u_int" (Lava's integers) in fixed point. (``net``: unused,
    kept for old callers; the model is the one ``lnet`` was built from.)"""
    lv = require_lava()
    T, B = lnet.n_steps, lnet.copies
    run_cfg = lv["Loihi2SimCfg"](select_tag=lnet.mode)
    first = lnet.neurons[0]
    try:
        first.run(condition=lv["RunSteps"](num_steps=T), run_cfg=run_cfg)
        raw = []
        for neu, mons in zip(lnet.neurons, lnet.monitors):
            raw.append({k: np.asarray(m.get_data()[neu.name][name], dtype=np.float64)
                        for k, m, name in (("s", mons["s"], "s_out"), ("u", mons["u"], "u"), ("v", mons["v"], "v"))})
    finally:
        first.stop()
    out = {"spikes": [], "v": [], "u": []}
    if lnet.mode == "fixed_pt":
        out.update(v_int=[], u_int=[])
    dv = lnet.lif.lava_float()["dv"]
    for l, r in enumerate(raw):
        N = len(lnet.biases[l])
        s = r["s"].reshape(T, B, N) != 0
        u = r["u"].reshape(T, B, N)
        v_post = r["v"].reshape(T, B, N)
        out["spikes"].append(s)
        if lnet.mode == "floating_pt":
            prev = np.concatenate([np.zeros_like(v_post[:1]), v_post[:-1]])
            v_rebuilt = prev * (1 - dv) + u + lnet.biases[l]   # Lava's expression
            out["v"].append(np.where(s, v_rebuilt, v_post))
            out["u"].append(u)
        else:
            q = lnet.quant.layers[l]
            ui = u.astype(np.int64)
            v_pre_i = rebuild_v_pre(q, s, ui, v_post.astype(np.int64))
            out["v_int"].append(v_pre_i)
            out["u_int"].append(ui)
            out["v"].append(v_pre_i / q.scale)
            out["u"].append(ui / q.scale)
    return out


def run_on_lava(net, input_spikes, mode: str = "floating_pt", quant=None, connection: str = "auto") -> dict:
    """Build and run ``net`` on Lava for input spikes (T, B, M); see :func:`run_lava_network`."""
    return run_lava_network(build_lava_network(net, input_spikes, mode, quant, connection))


# ------------------------------------------------------------------------------------------------
# Simulation of the exported network
# ------------------------------------------------------------------------------------------------
def simulate_arrays(weights, biases, lif, goodness, input_spikes, mode: str = "fixed_pt", quant=None,
                    backend: str = "numpy", chunk_steps: int = 0) -> dict:
    """Per-layer spikes and pre-reset v (mV) of the exported layers ``weights``, ``biases``
    (float64, zeros for no bias) on ``input_spikes`` (T, B, M). ``backend``: "lava" (Lava's own
    simulation) or "numpy" (spikeff's engine in float64 for floating_pt, the bit-exact model of
    Lava's fixed-point processes for fixed_pt). The one place the four combinations are run."""
    _check_run(mode, quant, backend)
    lif.check_target(_target(mode))
    if backend == "lava":
        return run_lava_network(build_processes(weights, biases, lif, input_spikes, mode, quant))
    if mode == "fixed_pt":
        r = simulate_fixed_numpy(quant, input_spikes)
        r["v"] = [vi / q.scale for vi, q in zip(r["v"], quant.layers)]
        return r
    from ..encoding import ArraySource
    from ..engines.vectorized import run_phase
    x = ArraySource(input_spikes)
    res = run_phase([np.asarray(W, np.float64) for W in weights], biases, lif, goodness, x,
                    chunk_steps or x.n_steps, record=True)
    return {"spikes": res.record["spikes"], "v": res.record["v"]}


def simulate(net, input_spikes, mode: str = "fixed_pt", quant=None, backend: str = "numpy") -> dict:
    """:func:`simulate_arrays` for a fitted network (conv layers as their dense expansion)."""
    net = _dense(net)
    _check_run(mode, quant, backend)
    check_exportable(net, _target(mode))
    lif, goodness = net._model()
    return simulate_arrays(net.weights_, net.effective_biases(numpy=True), lif, goodness, input_spikes, mode,
                           quant, backend, net.config.chunk_steps)


# ------------------------------------------------------------------------------------------------
# Inference: spikeff's own (spikeff.inference) through the Lava engine
# ------------------------------------------------------------------------------------------------
def engine(mode="fixed_pt", quant=None, backend="numpy", copies=None):
    """The Lava engine (:class:`spikeff.engines.lava.LavaEngine`) for :mod:`spikeff.inference`."""
    from ..engines import make_engine
    return make_engine("lava", mode=mode, quant=quant, backend=backend, copies=copies)


def _checked(net, mode, quant, backend):
    _check_run(mode, quant, backend)
    check_exportable(_dense(net), _target(mode))


def goodness_per_label(net, X, mode="fixed_pt", quant=None, backend="numpy", seed: int = 0) -> np.ndarray:
    """:meth:`FFNetwork.goodness_per_label` simulated by the exported network (the same input
    spikes, the same code: :func:`spikeff.inference.goodness_per_label` with the Lava engine; on
    Lava one run per sample, its labels as parallel copies). Shape (n_samples, n_classes, n_layers)."""
    from .. import inference
    _checked(net, mode, quant, backend)
    copies = net.n_classes_ if backend == "lava" else None
    return inference.goodness_per_label(net, X, seed, engine=engine(mode, quant, backend, copies))


def readout_features_exported(net, X, mode="fixed_pt", quant=None, backend="numpy", seed: int = 0):
    """:meth:`FFNetwork.readout_features` on the exported network (same input spikes, same code)."""
    from .. import inference
    _checked(net, mode, quant, backend)
    return inference.readout_features(net, X, seed, engine=engine(mode, quant, backend))


def predict(net, X, method="goodness", mode="fixed_pt", quant=None, backend="numpy"):
    """Class decisions of the exported network ("goodness" over all labels, or "readout"):
    :func:`spikeff.inference.predict` with the Lava engine."""
    from .. import inference
    _checked(net, mode, quant, backend)
    copies = net.n_classes_ if backend == "lava" and method == "goodness" else None
    return inference.predict(net, X, method, engine=engine(mode, quant, backend, copies))


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def export_lava(net, path, X_calib=None, **quant_kw) -> dict:
    """Write everything needed to build the network on Lava/Loihi 2 to ``path`` (.npz): float
    parameters (du, dv, vth, weights, biases) and the fixed-point ones, plus the quantization
    report (JSON inside, also returned)."""
    net = _dense(net)
    import json
    from ..io import atomic_write_bytes
    import io
    q = quantize_network(net, X_calib=X_calib, **quant_kw)
    lif = net.lif
    arrays = {}
    for l, (W, b, ql) in enumerate(zip(net.weights_, net.effective_biases(numpy=True), q.layers)):
        arrays[f"float_weights{l}"] = np.asarray(W, np.float64)
        arrays[f"float_bias{l}"] = b
        arrays[f"fixed_weights{l}"] = ql.weights
        arrays[f"fixed_bias_mant{l}"] = ql.bias_mant
    meta = {"format": "spikeff-lava", "version": 1, "n_layers": len(net.weights_),
            "floating_pt": {**lif.lava_float(), "bias_exp": 0, "n_steps": net.config.n_steps},
            "fixed_pt": [{"du": ql.du, "dv": ql.dv, "vth": ql.vth, "weight_exp": ql.weight_exp,
                          "bias_exp": ql.bias_exp, "num_weight_bits": WEIGHT_BITS, "sign_mode": "MIXED",
                          "scale_int_per_mV": ql.scale} for ql in q.layers],
            "quantization_report": q.report}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return q.report
