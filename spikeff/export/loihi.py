"""Loihi 2's fixed-point Dense + LIF (as lava-nc 0.10's bit-accurate models compute it), in pure
numpy: quantization of a network to Loihi's bit widths and a vectorized, bit-exact model of the
integer arithmetic. No Lava dependency; :mod:`spikeff.export.lava` builds the Lava processes, and
:mod:`spikeff.engines.lava` runs this model as an engine (inference through the engine seam).

Fixed point (Lava's ``PyLifModelBitAcc`` / ``PyDenseModelBitAcc``, read from lava 0.10's source):

- ``u``, ``v``: 24-bit signed; ``u`` wraps around on overflow, ``v`` saturates at +-(2^23 - 1);
- decays: ``u <- trunc0(u * (4096 - (du + 1)) / 4096)``, ``v <- trunc0(v * (4096 - dv) / 4096)``,
  ``du``, ``dv`` 12-bit unsigned (``trunc0`` rounds towards zero; the map from spikeff's decays is
  :meth:`spikeff.neuron.DiscreteLIF.lava_fixed`);
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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import check_exportable
from ..encoding import NEUTRAL
from ..neuron import LOIHI_DECAY_BITS as DECAY_BITS, LOIHI_DECAY_UNITY as DECAY_UNITY, \
    LOIHI_DU_OFFSET as DS_OFFSET, fixed_decay_factors  # noqa: F401  (DS_OFFSET: public name)

# Loihi 2 / Lava bit widths (lava/proc/lif/models.py, lava/proc/dense/models.py, utils/weightutils.py)
UV_BITS = 24
UV_MAX = 2 ** (UV_BITS - 1)            # u wraps above this; v saturates at +-(UV_MAX - 1)
VTH_BITS = 17                          # unsigned
VTH_SHIFT = 6
ACT_SHIFT = 6
WEIGHT_BITS = 8                        # mixed sign: stored weight 2*m, m in [-128, 127]
WEIGHT_MANT_MIN, WEIGHT_MANT_MAX = -128, 127
WEIGHT_EXP_RANGE = (-8, 7)
BIAS_MANT_BITS = 13                    # signed
BIAS_MANT_MAX = 2 ** (BIAS_MANT_BITS - 1) - 1
BIAS_EXP_RANGE = (0, 7)

def _dense(net):
    """A conv network as its equivalent dense network (same spikes; see
    :meth:`spikeff.network.FFNetwork.dense_network`): Loihi and Lava run it as Dense + LIF."""
    return net.dense_network() if getattr(net, "config", None) is not None and net.config.layers else net


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


def _float_state_ranges(net, X_calib, seed=0):
    """Peak |u| and min/max v (mV) per layer of the float network on X_calib (true-label-free: every
    candidate label and the neutral one), from spikeff's own engine."""
    C = net.n_classes_
    rows = np.repeat(X_calib, C + 1, axis=0)
    labels = np.tile(np.r_[np.arange(C), NEUTRAL], len(X_calib))
    res = net.simulate(rows, labels, seed=seed, record=True)
    lif, out = net.lif, []
    for l, b in enumerate(net.effective_biases(numpy=True)):
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
    lif.check_target("loihi")
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
    du, dv = lif.lava_fixed()["du"], lif.lava_fixed()["dv"]
    q = LayerQuant(weights=(2 * m).astype(np.int32), weight_exp=wexp, vth=vth, du=du, dv=dv,
                   bias_mant=bias_mant, bias_exp=bias_exp, scale=scale)
    W_q = q.dequantized_weights()
    fu, fv = fixed_decay_factors(du, dv)
    a_syn_q, a_mem_q = fu / DECAY_UNITY, fv / DECAY_UNITY
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
    check_exportable(net, "loihi")
    if not (headroom >= 1.0):
        raise ValueError(f"headroom must be >= 1, got {headroom}")
    if not (0 < weight_clip_percentile <= 100):
        raise ValueError(f"weight_clip_percentile must be in (0, 100], got {weight_clip_percentile}")
    lif = net.lif
    biases = net.effective_biases(numpy=True)
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
        fu, fv = fixed_decay_factors(q.du, q.dv)
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


def rebuild_v_pre(q: LayerQuant, spikes, u_int, v_post_int):
    """The pre-reset potentials (int64) of a fixed-point layer from what Lava's Monitor reads
    (``v`` after the reset): ``decay(v[t-1]) + u[t] + bias`` (saturated) where it spiked, the same
    expression Lava evaluates, ``v[t]`` elsewhere. Arrays (T, B, N)."""
    vi = np.asarray(v_post_int, np.int64)
    prev = np.concatenate([np.zeros_like(vi[:1]), vi[:-1]])
    rebuilt = np.clip(_trunc_decay(prev, fixed_decay_factors(q.du, q.dv)[1]) + np.asarray(u_int, np.int64)
                      + q.effective_bias, -UV_MAX + 1, UV_MAX - 1)
    return np.where(spikes, rebuilt, vi)

