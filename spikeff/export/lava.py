"""Export a trained :class:`~spikeff.network.FFNetwork` to Lava (lava-nc 0.10, Loihi 2 style).

Each layer becomes a ``Dense`` (or, for many parallel copies, ``Sparse``) connection followed by a
``LIF`` population; a ``RingBuffer`` plays the input spike trains of spikeff's
:class:`~spikeff.encoding.SpikeSource`; ``Monitor`` processes record every layer's spikes, ``u``
and ``v``. Runs with ``Loihi2SimCfg(select_tag="floating_pt")`` or ``select_tag="fixed_pt"``
(Lava's bit-accurate Loihi model).

Timing (checked with ``experiments/lava_delay_check.py``): Lava's ``Dense`` sends the activation it
accumulated at the previous step, so RingBuffer -> Dense -> LIF and LIF -> Dense -> LIF both have
exactly one step of delay, as in spikeff (``u[t] = a_syn u[t-1] + W x[t-1]``). A network is
therefore mapped 1:1, with no shift: Lava time step ``t + 1`` is spikeff step ``t``.

Floating point: ``du = 1 - a_syn``, ``dv = 1 - a_mem``, ``bias_mant = b``, ``vth = v_threshold``
(mV as the unit); Lava's update is the same arithmetic as spikeff's, so spikes are identical
(with a float64 network).

Fixed point (Lava's ``PyLifModelBitAcc`` / ``PyDenseModelBitAcc``, read from lava 0.10's source):

- ``u``, ``v``: 24-bit signed; ``u`` wraps around on overflow, ``v`` saturates at +-(2^23 - 1);
- decays: ``u <- trunc0(u * (4096 - (du + 1)) / 4096)``, ``v <- trunc0(v * (4096 - dv) / 4096)``,
  ``du``, ``dv`` 12-bit unsigned (``trunc0`` rounds towards zero);
- synaptic input: ``a = (sum_j w_ij s_j) << weight_exp`` (arithmetic right shift when negative),
  ``u += a << 6``; weights 8-bit: in the mixed sign mode used here Lava keeps ``w = 2 m``,
  ``m`` in [-128, 127];
- bias: ``v += bias_mant << bias_exp`` (13-bit signed mantissa, exponent 0..7);
- spike when ``v > vth << 6`` (vth 17-bit unsigned), then ``v = 0``.

A layer with ``S`` integer units of ``v`` per mV therefore has ``vth = v_threshold S / 64`` and a
weight ``W`` (mV) becomes ``m = W S / 2^(weight_exp + 7)``. :func:`quantize_network` picks per layer
the largest ``S`` (through ``weight_exp`` and ``vth``) whose ``u`` and ``v`` (measured on a
float calibration run, times a headroom factor) fit the 24-bit state, with the weights spanning the
full 8-bit mantissa range. :func:`simulate_fixed_numpy` is a vectorized, bit-exact numpy
reimplementation of the same integer arithmetic (checked against Lava in the tests), used to
evaluate many samples quickly.

Lava's Monitor reads ``v`` *after* the reset; the pre-reset potential that goodness needs is
rebuilt exactly from the monitored ``u`` and ``v``: ``v_pre[t] = decay(v[t-1]) + u[t] + bias``
where the neuron spiked (the same expression Lava evaluates), ``v[t]`` elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import check_exportable
from ..encoding import NEUTRAL, ArraySource
from ..goodness import get_goodness
from ..readout import readout_features

LAVA_INSTALL_HINT = "pip install spikeff[lava]  (lava-nc 0.10, Python < 3.11)"

# Loihi 2 / Lava bit widths (lava/proc/lif/models.py, lava/proc/dense/models.py, utils/weightutils.py)
UV_BITS = 24
UV_MAX = 2 ** (UV_BITS - 1)            # u wraps above this; v saturates at +-(UV_MAX - 1)
DECAY_BITS = 12
DECAY_UNITY = 2 ** DECAY_BITS
DS_OFFSET = 1                          # added to du in the fixed-point model (not to dv)
VTH_BITS = 17                          # unsigned
VTH_SHIFT = 6
ACT_SHIFT = 6
WEIGHT_BITS = 8                        # mixed sign: stored weight 2*m, m in [-128, 127]
WEIGHT_MANT_MIN, WEIGHT_MANT_MAX = -128, 127
WEIGHT_EXP_RANGE = (-8, 7)
BIAS_MANT_BITS = 13                    # signed
BIAS_MANT_MAX = 2 ** (BIAS_MANT_BITS - 1) - 1
BIAS_EXP_RANGE = (0, 7)


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
    if mode not in ("floating_pt", "fixed_pt"):
        raise ValueError(f"mode: {mode!r} is not valid; choose one of ['floating_pt', 'fixed_pt']")


def _dense(net):
    """A conv network as its equivalent dense network (same spikes; see
    :meth:`spikeff.network.FFNetwork.dense_network`): Lava runs it as Dense + LIF processes."""
    return net.dense_network() if getattr(net, "config", None) is not None and net.config.layers else net


def _biases(net):
    return [np.asarray(b, dtype=np.float64) if net.config.learn_bias else np.zeros(W.shape[0])
            for W, b in zip(net.weights_, net.biases_)]


# ------------------------------------------------------------------------------------------------
# Quantization
# ------------------------------------------------------------------------------------------------
@dataclass
class LayerQuant:
    """Fixed-point parameters of one layer, as Lava's bit-accurate processes take them."""

    weights: np.ndarray        # int32 (N, M): Lava weight values (2 * mantissa, mixed sign mode)
    weight_exp: int
    vth: int
    du: int
    dv: int
    bias_mant: np.ndarray      # int32 (N,)
    bias_exp: int
    scale: float               # integer units of u and v per mV
    info: dict = field(default_factory=dict)

    @property
    def effective_bias(self) -> np.ndarray:
        return self.bias_mant.astype(np.int64) << self.bias_exp

    @property
    def effective_vth(self) -> int:
        return int(self.vth) << VTH_SHIFT

    def dequantized_weights(self) -> np.ndarray:
        """The weights (mV) the fixed-point layer actually applies."""
        return self.weights * 2.0 ** (self.weight_exp + ACT_SHIFT) / self.scale


@dataclass
class QuantizedNetwork:
    layers: list
    report: dict


def _decay_params(lif):
    du = int(np.clip(round(DECAY_UNITY * (1.0 - lif.a_syn)) - DS_OFFSET, 0, DECAY_UNITY - 1))
    dv = int(np.clip(round(DECAY_UNITY * (1.0 - lif.a_mem)), 0, DECAY_UNITY - 1))
    return du, dv


def _float_state_ranges(net, X_calib, seed=0):
    """Peak |u| and min/max v (mV) per layer of the float network on X_calib (true-label-free: every
    candidate label and the neutral one), from spikeff's own engine."""
    C = net.n_classes_
    rows = np.repeat(X_calib, C + 1, axis=0)
    labels = np.tile(np.r_[np.arange(C), NEUTRAL], len(X_calib))
    res = net.simulate(rows, labels, seed=seed, record=True)
    lif, out = net.lif, []
    for l, b in enumerate(_biases(net)):
        v_pre = res.record["v"][l].astype(np.float64)
        v_post = np.where(res.record["spikes"][l], lif.v_reset, v_pre)
        prev = np.concatenate([np.zeros_like(v_post[:1]), v_post[:-1]])
        u = v_pre - lif.a_mem * prev - b
        out.append({"u_abs_max": float(np.abs(u).max()), "v_min": float(v_pre.min()),
                    "v_max": float(v_pre.max())})
    return out


def quantize_layer(W, b, lif, u_abs_max, v_abs_max, headroom=2.0, weight_clip_percentile=100.0):
    """Choose the fixed-point parameters of one layer (see the module docstring for the mapping)."""
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    v_th = float(lif.v_threshold)
    if lif.v_reset != 0:
        raise ValueError(f"Lava's LIF resets to 0; this network has v_reset = {lif.v_reset}")
    if lif.refractory_steps:
        raise ValueError("Lava's LIF has no refractory period; this network has "
                         f"{lif.refractory_steps} refractory steps")
    w_clip = float(np.percentile(np.abs(W), weight_clip_percentile)) if W.size else 0.0
    if w_clip <= 0:
        w_clip = 1.0
    # state range in mV that must fit in 24 bits
    state_max = headroom * max(u_abs_max, v_abs_max, v_th)
    best = None
    for wexp in range(WEIGHT_EXP_RANGE[0], WEIGHT_EXP_RANGE[1] + 1):
        # full mantissa range at w_clip: m = W S / 2^(wexp+7) = 127 at |W| = w_clip, S = 64 vth / v_th
        vth = int(math.floor(WEIGHT_MANT_MAX * v_th * 2.0 ** (wexp + 1) / w_clip))
        if vth < 1 or vth >= 2 ** VTH_BITS:
            continue
        scale = vth * 2.0 ** VTH_SHIFT / v_th
        if state_max * scale >= UV_MAX:
            continue
        best = (wexp, vth, scale)          # larger wexp = finer state resolution; keep the last
    if best is None:
        raise ValueError(f"no weight exponent in {WEIGHT_EXP_RANGE} fits this layer in Loihi's bit widths "
                         f"(max |W| = {w_clip:.3g} mV, state range {state_max:.3g} mV, v_th = {v_th} mV)")
    wexp, vth, scale = best
    m_float = W * scale / 2.0 ** (wexp + ACT_SHIFT + 1)
    m = np.round(m_float)
    clipped = int(np.sum((m < WEIGHT_MANT_MIN) | (m > WEIGHT_MANT_MAX)))
    m = np.clip(m, WEIGHT_MANT_MIN, WEIGHT_MANT_MAX).astype(np.int32)
    # bias: b S = bias_mant << bias_exp
    b_int = b * scale
    bias_exp = BIAS_EXP_RANGE[0]
    while bias_exp < BIAS_EXP_RANGE[1] and np.abs(np.round(b_int / 2 ** bias_exp)).max(initial=0) > BIAS_MANT_MAX:
        bias_exp += 1
    bm = np.round(b_int / 2 ** bias_exp)
    bias_clipped = int(np.sum(np.abs(bm) > BIAS_MANT_MAX))
    bias_mant = np.clip(bm, -BIAS_MANT_MAX - 1, BIAS_MANT_MAX).astype(np.int32)
    du, dv = _decay_params(lif)
    q = LayerQuant(weights=(2 * m).astype(np.int32), weight_exp=wexp, vth=vth, du=du, dv=dv,
                   bias_mant=bias_mant, bias_exp=bias_exp, scale=scale)
    W_q = q.dequantized_weights()
    a_syn_q = (DECAY_UNITY - du - DS_OFFSET) / DECAY_UNITY
    a_mem_q = (DECAY_UNITY - dv) / DECAY_UNITY
    q.info = {
        "scale_int_per_mV": scale, "weight_exp": wexp, "vth": vth, "effective_vth": q.effective_vth,
        "weight_clip_mV": w_clip, "weight_clip_percentile": weight_clip_percentile,
        "weight_step_mV": 2.0 ** (wexp + ACT_SHIFT + 1) / scale,
        "weights_clipped": clipped, "weights_total": int(W.size),
        "weight_mantissa_range": [int(m.min(initial=0)), int(m.max(initial=0))],
        "weight_rms_error_rel": float(np.sqrt(np.mean((W_q - W) ** 2)) / (np.sqrt(np.mean(W ** 2)) + 1e-30)),
        "du": du, "dv": dv, "a_syn": lif.a_syn, "a_syn_fixed": a_syn_q, "a_mem": lif.a_mem,
        "a_mem_fixed": a_mem_q, "bias_exp": bias_exp, "bias_clipped": bias_clipped,
        "bias_max_abs_mV": float(np.abs(b).max(initial=0)),
        "u_abs_max_calib_mV": u_abs_max, "v_abs_max_calib_mV": v_abs_max, "headroom": headroom,
        "state_bits_used_calib": float(np.log2(max(state_max / headroom * scale, 1.0))) + 1.0,
    }
    return q


def quantize_network(net, X_calib=None, headroom: float = 2.0, weight_clip_percentile: float = 100.0,
                     seed: int = 0) -> QuantizedNetwork:
    """Quantize every layer to Loihi 2 bit widths. ``X_calib``: a few inputs whose float run sets
    the range of u and v (if None, a worst-case bound: every input spiking at every step).
    Returns the per-layer parameters and a JSON-able report (scales, bit widths, clipping)."""
    net = _dense(net)
    check_exportable(net)
    if not (headroom >= 1.0):
        raise ValueError(f"headroom must be >= 1, got {headroom}")
    if not (0 < weight_clip_percentile <= 100):
        raise ValueError(f"weight_clip_percentile must be in (0, 100], got {weight_clip_percentile}")
    lif = net.lif
    biases = _biases(net)
    if X_calib is not None:
        ranges = _float_state_ranges(net, np.asarray(X_calib), seed=seed)
        calib = f"float run of spikeff on {len(X_calib)} calibration samples x every label + neutral"
    else:
        ranges = []
        for W, b in zip(net.weights_, biases):
            u_bound = float(np.abs(W).sum(axis=1).max()) / (1.0 - lif.a_syn)
            ranges.append({"u_abs_max": u_bound, "v_min": -(u_bound + np.abs(b).max(initial=0)) / (1 - lif.a_mem),
                           "v_max": (u_bound + np.abs(b).max(initial=0)) / (1 - lif.a_mem)})
        calib = "worst-case bound (all inputs spiking every step)"
    layers = []
    for W, b, r in zip(net.weights_, biases, ranges):
        layers.append(quantize_layer(W, b, lif, r["u_abs_max"], max(abs(r["v_min"]), abs(r["v_max"])),
                                     headroom=headroom, weight_clip_percentile=weight_clip_percentile))
    report = {
        "target": "Loihi 2 (lava-nc 0.10 bit-accurate PyLifModelBitAcc / PyDenseModelBitAcc)",
        "bit_widths": {"u_v": UV_BITS, "du_dv": DECAY_BITS, "vth": VTH_BITS, "weight_mantissa": WEIGHT_BITS,
                       "weight_exp_range": list(WEIGHT_EXP_RANGE), "bias_mantissa": BIAS_MANT_BITS,
                       "bias_exp_range": list(BIAS_EXP_RANGE), "vth_shift": VTH_SHIFT, "act_shift": ACT_SHIFT},
        "calibration": calib,
        "layers": [q.info for q in layers],
    }
    return QuantizedNetwork(layers=layers, report=report)


# ------------------------------------------------------------------------------------------------
# Bit-accurate numpy model of Lava's fixed-point Dense + LIF
# ------------------------------------------------------------------------------------------------
def _trunc_decay(x, factor):
    """sign(x * factor) * (|x * factor| >> 12), as Lava computes it (int64)."""
    p = x * factor
    return np.sign(p) * (np.abs(p) >> DECAY_BITS)


def simulate_fixed_numpy(qnet: QuantizedNetwork, input_spikes):
    """Bit-exact numpy reimplementation of the fixed-point Lava network on input spikes (T, B, M).

    Returns {"spikes": [(T,B,N) bool], "v": [(T,B,N) int64 pre-reset], "u": [...],
    "saturation": [{"u_wraps", "v_clips", "a_in_abs_max", "a_in_bits_signed"}]} per layer
    (``a_in``: the Dense output before the 6-bit shift into u).
    """
    x = np.asarray(input_spikes)
    T, B, _ = x.shape
    out = {"spikes": [], "v": [], "u": [], "saturation": []}
    for q in qnet.layers:
        N, M = q.weights.shape
        if x.shape[2] != M:
            raise ValueError(f"input has {x.shape[2]} channels, layer expects {M}")
        # Dense: accumulate at step t, deliver at t + 1 (float64 GEMM is exact for these integers)
        acc = (x.reshape(T * B, M).astype(np.float64) @ q.weights.T.astype(np.float64))
        acc = np.rint(acc).astype(np.int64).reshape(T, B, N)
        acc = acc << q.weight_exp if q.weight_exp >= 0 else acc >> -q.weight_exp
        a_in = np.concatenate([np.zeros((1, B, N), np.int64), acc[:-1]]) << ACT_SHIFT
        u = np.zeros((B, N), np.int64)
        v = np.zeros((B, N), np.int64)
        bias = q.effective_bias[None, :]
        fu = DECAY_UNITY - (q.du + DS_OFFSET)
        fv = DECAY_UNITY - q.dv
        vth = q.effective_vth
        s_rec = np.empty((T, B, N), bool)
        v_rec = np.empty((T, B, N), np.int64)
        u_rec = np.empty((T, B, N), np.int64)
        wraps = clips = 0
        for t in range(T):
            du_ = _trunc_decay(u, fu) + a_in[t]
            over, under = du_ > UV_MAX, du_ <= -UV_MAX
            wraps += int(over.sum() + under.sum())
            u = np.where(over, du_ - 2 * UV_MAX, np.where(under, du_ + 2 * UV_MAX, du_))
            vv = _trunc_decay(v, fv) + u + bias
            clips += int(np.sum((vv < -UV_MAX + 1) | (vv > UV_MAX - 1)))
            v = np.clip(vv, -UV_MAX + 1, UV_MAX - 1)
            s = v > vth
            v_rec[t], u_rec[t], s_rec[t] = v, u, s
            v = np.where(s, 0, v)
        out["spikes"].append(s_rec)
        out["v"].append(v_rec)
        out["u"].append(u_rec)
        a_max = int(np.abs(acc).max(initial=0))
        out["saturation"].append({"u_wraps": wraps, "v_clips": clips, "a_in_abs_max": a_max,
                                  # Lava's Python model does not limit a_in; Loihi's port is 16-bit
                                  "a_in_bits_signed": int(a_max).bit_length() + 1})
        x = s_rec
    return out


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
    neuron ``k * N + i`` of copy ``k``)."""

    source: object
    connections: list
    neurons: list
    monitors: list        # per layer: {"s": Monitor, "u": Monitor, "v": Monitor}
    mode: str
    copies: int
    n_steps: int
    quant: QuantizedNetwork | None = None


def build_lava_network(net, input_spikes, mode: str = "floating_pt", quant: QuantizedNetwork | None = None,
                       connection: str = "auto") -> LavaNetwork:
    """Lava processes for ``net`` playing ``input_spikes`` (T, B, M): the B samples run as parallel
    copies of the network. ``mode="fixed_pt"`` needs ``quant`` (from :func:`quantize_network`).
    ``connection``: "dense", "sparse" (block-diagonal, for many copies) or "auto"."""
    net = _dense(net)
    lv = require_lava()
    _check_mode(mode)
    check_exportable(net)
    x = np.asarray(input_spikes)
    if x.ndim != 3 or x.shape[2] != net.weights_[0].shape[1]:
        raise ValueError(f"input_spikes must have shape (T, B, {net.weights_[0].shape[1]}), got {x.shape}")
    if mode == "fixed_pt" and quant is None:
        raise ValueError("mode='fixed_pt' needs quant=quantize_network(net, ...)")
    if connection not in ("auto", "dense", "sparse"):
        raise ValueError(f"connection: {connection!r} is not valid; choose one of ['auto', 'dense', 'sparse']")
    lif = net.lif
    if lif.refractory_steps or lif.v_reset != 0:
        raise ValueError("Lava's LIF resets to 0 with no refractory period; this network differs")
    T, B, M = x.shape
    data = x.transpose(1, 2, 0).reshape(B * M, T)          # channel k*M + j of copy k, time last
    source = lv["RingBuffer"](data=data.astype(np.int32 if mode == "fixed_pt" else np.float64))
    prev_out = source.s_out
    conns, neurons, monitors = [], [], []
    biases = _biases(net)
    for l, W in enumerate(net.weights_):
        N = W.shape[0]
        if mode == "floating_pt":
            Wl = _block_diag(np.asarray(W, dtype=np.float64), B)
            params = dict(du=1.0 - lif.a_syn, dv=1.0 - lif.a_mem, vth=float(lif.v_threshold),
                          bias_mant=np.tile(biases[l], B), bias_exp=0)
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
        neu = lv["LIF"](shape=(B * N,), name=f"spikeff_layer{l}", **params)
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
    return LavaNetwork(source, conns, neurons, monitors, mode, B, T, quant)


def run_lava_network(lnet: LavaNetwork, net) -> dict:
    """Run the Lava network for its T steps; return per-layer (T, B, N) "spikes", pre-reset "v"
    (mV) and "u" (mV), plus "v_int"/"u_int" (Lava's integers) in fixed point."""
    net = _dense(net)
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
    lif = net.lif
    biases = _biases(net)
    out = {"spikes": [], "v": [], "u": []}
    if lnet.mode == "fixed_pt":
        out.update(v_int=[], u_int=[])
    for l, r in enumerate(raw):
        N = net.weights_[l].shape[0]
        s = r["s"].reshape(T, B, N) != 0
        u = r["u"].reshape(T, B, N)
        v_post = r["v"].reshape(T, B, N)
        prev = np.concatenate([np.zeros_like(v_post[:1]), v_post[:-1]])
        if lnet.mode == "floating_pt":
            v_rebuilt = prev * (1 - (1.0 - lif.a_mem)) + u + biases[l]   # Lava's expression
            v_pre = np.where(s, v_rebuilt, v_post)
            out["spikes"].append(s)
            out["v"].append(v_pre)
            out["u"].append(u)
        else:
            q = lnet.quant.layers[l]
            ui, vi = u.astype(np.int64), v_post.astype(np.int64)
            previ = prev.astype(np.int64)
            rebuilt = np.clip(_trunc_decay(previ, DECAY_UNITY - q.dv) + ui + q.effective_bias,
                              -UV_MAX + 1, UV_MAX - 1)
            v_pre_i = np.where(s, rebuilt, vi)
            out["spikes"].append(s)
            out["v_int"].append(v_pre_i)
            out["u_int"].append(ui)
            out["v"].append(v_pre_i / q.scale)
            out["u"].append(ui / q.scale)
    return out


def run_on_lava(net, input_spikes, mode: str = "floating_pt", quant=None, connection: str = "auto") -> dict:
    """Build and run ``net`` on Lava for input spikes (T, B, M); see :func:`run_lava_network`."""
    net = _dense(net)
    return run_lava_network(build_lava_network(net, input_spikes, mode, quant, connection), net)


def simulate(net, input_spikes, mode: str = "fixed_pt", quant=None, backend: str = "numpy") -> dict:
    """Per-layer spikes and pre-reset v (mV) of the exported network. ``backend``: "lava" (Lava's
    own simulation) or "numpy" (spikeff's engine in float64 for floating_pt, the bit-exact model of
    Lava's fixed-point processes for fixed_pt)."""
    net = _dense(net)
    _check_mode(mode)
    check_exportable(net)
    if backend == "lava":
        return run_on_lava(net, input_spikes, mode, quant)
    if backend != "numpy":
        raise ValueError(f"backend: {backend!r} is not valid; choose one of ['numpy', 'lava']")
    if mode == "fixed_pt":
        if quant is None:
            raise ValueError("mode='fixed_pt' needs quant=quantize_network(net, ...)")
        r = simulate_fixed_numpy(quant, input_spikes)
        r["v"] = [vi / q.scale for vi, q in zip(r["v"], quant.layers)]
        return r
    from ..engines.vectorized import run_phase
    res = run_phase([np.asarray(W, np.float64) for W in net.weights_], _biases(net), net.lif,
                    get_goodness(net.config.goodness), ArraySource(input_spikes), net.config.chunk_steps,
                    record=True)
    return {"spikes": res.record["spikes"], "v": res.record["v"]}


# ------------------------------------------------------------------------------------------------
# Inference: the same class decisions as spikeff
# ------------------------------------------------------------------------------------------------
def _neuron_goodness(net, v_list):
    g = get_goodness(net.config.goodness).g
    return [np.asarray(g(np.asarray(v, np.float64))).mean(axis=0) for v in v_list]   # (B, N)


def goodness_per_label(net, X, mode="fixed_pt", quant=None, backend="numpy", seed: int = 0) -> np.ndarray:
    """Like :meth:`FFNetwork.goodness_per_label` (the same input spikes, from
    :meth:`FFNetwork.label_sources`) but simulated by the exported network.
    Shape (n_samples, n_classes, n_layers)."""
    net = _dense(net)
    C, out = net.n_classes_, []
    for n, src in net.label_sources(X, seed):
        spikes = src.all_steps()
        if backend == "lava":       # one Lava run per sample: its C labels as parallel copies
            parts = [simulate(net, spikes[:, k * C:(k + 1) * C], mode, quant, backend) for k in range(n)]
            v = [np.concatenate([p["v"][l] for p in parts], axis=1) for l in range(len(net.weights_))]
        else:
            v = simulate(net, spikes, mode, quant, backend)["v"]
        G = np.stack([g.mean(axis=1) for g in _neuron_goodness(net, v)], axis=1)
        out.append(G.reshape(n, C, -1))
    return np.concatenate(out) if out else np.zeros((0, C, len(net.weights_)))


def readout_features_exported(net, X, mode="fixed_pt", quant=None, backend="numpy", seed: int = 0):
    """Like :meth:`FFNetwork.readout_features` on the exported network (same input spikes)."""
    net = _dense(net)
    return np.concatenate([readout_features(_neuron_goodness(net, simulate(net, src.all_steps(), mode, quant,
                                                                           backend)["v"]))
                           for _, src in net.neutral_sources(X, seed)])


def predict(net, X, method="goodness", mode="fixed_pt", quant=None, backend="numpy"):
    """Class decisions of the exported network ("goodness" over all labels, or "readout")."""
    net = _dense(net)
    if method == "goodness":
        G = goodness_per_label(net, X, mode, quant, backend)
        return np.argmax(G[:, :, net._layer_mask()].sum(axis=2), axis=1)
    if method == "readout":
        if net.readout_ is None:
            raise ValueError("method='readout' needs a network trained with readout = true")
        return net.readout_.predict(readout_features_exported(net, X, mode, quant, backend))
    raise ValueError(f"method: {method!r} is not valid; choose one of ['goodness', 'readout']")


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
    for l, (W, b, ql) in enumerate(zip(net.weights_, _biases(net), q.layers)):
        arrays[f"float_weights{l}"] = np.asarray(W, np.float64)
        arrays[f"float_bias{l}"] = b
        arrays[f"fixed_weights{l}"] = ql.weights
        arrays[f"fixed_bias_mant{l}"] = ql.bias_mant
    meta = {"format": "spikeff-lava", "version": 1, "n_layers": len(net.weights_),
            "floating_pt": {"du": 1.0 - lif.a_syn, "dv": 1.0 - lif.a_mem, "vth": lif.v_threshold,
                            "bias_exp": 0, "n_steps": net.config.n_steps},
            "fixed_pt": [{"du": ql.du, "dv": ql.dv, "vth": ql.vth, "weight_exp": ql.weight_exp,
                          "bias_exp": ql.bias_exp, "num_weight_bits": WEIGHT_BITS, "sign_mode": "MIXED",
                          "scale_int_per_mV": ql.scale} for ql in q.layers],
            "quantization_report": q.report}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return q.report
