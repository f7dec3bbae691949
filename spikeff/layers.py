"""Layer geometry: dense and convolutional spiking layers, pooling, im2col, and the dense expansion.

A network is a list of :class:`LayerSpec` (TOML ``[[layers]]``). Every layer is made of the same
CUBA LIF neurons of :mod:`spikeff.neuron` (one per output unit, same discrete dynamics, one step
of synaptic delay); a layer only fixes which presynaptic spikes feed which neuron:

* ``kind = "dense"``: ``size`` neurons, each connected to every input (weights (size, M));
* ``kind = "conv"``: one LIF neuron per (channel, position) of the output map, ``channels`` shared
  kernels of ``kernel x kernel`` taps over the input channels, ``stride``, zero ``padding``.
  The weights are stored as a matrix (channels, C_in * kernel * kernel [+ G]): row o is kernel o
  flattened in (c, dy, dx) order (PyTorch's ``Conv2d`` layout), and the current of neuron
  (o, i, j) is ``W[o] . patch(i, j)``: the convolution as one GEMM over im2col patches.
  ``G`` *global* inputs (the label channels of the first layer, appended after the image by
  :func:`spikeff.encoding.overlay_labels`) reach every neuron (o, i, j) of the layer with a weight
  of their own: each label has a learned input map per channel (a learned "spatially extended
  label"), stored after the kernel in row o as (position, label) (weights (channels,
  C*k*k + P*G)). A shared weight per channel (the label as a uniform map) did not separate the
  phases in our tests: the label then only scales whole channels.
* ``goodness_scope`` (conv only): ``"layer"`` (default): the layer's goodness is one number per
  sample, the energy of all its neurons, as for a dense layer; ``"channel"``: each output channel
  is a separate FF unit, its goodness the energy of its own neurons (all positions, all steps),
  and the layer's FF loss the mean over channels of the channel losses (see
  :mod:`spikeff.learning`). Only training changes: prediction by goodness still scores the
  layer by its goodness, which is the mean of its channels' goodness (every channel has the same
  positions): the same ranking of labels as their sum, at the scale of one unit, as the other
  layers (and the dense expansion, Brian2, Lava and NIR see the same number). A dense layer
  accepts only ``"layer"`` (``"channel"`` is refused: it has no channels).
* ``pool`` (conv only): after the layer, non-overlapping ``pool x pool`` pooling of the *spikes*
  (``pool_mode = "sum"``: spike counts, or ``"avg"``: counts / pool^2) is what the next layer
  receives. Pooling is linear and fixed, so the next layer's eligibility traces filter the pooled
  spikes and its local rule stays exact.

Neurons of a conv layer are ordered (channel, row, column), as NIR and PyTorch flatten.
A dense layer after a conv layer reads its (pooled) output flattened in that order.

:func:`dense_expansion` turns any such network into the equivalent plain dense network (one weight
matrix per layer, pooling folded into the next layer's matrix): what the Lava, Brian2 and NIR
exports use, and what the tests compare the conv engine against.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

KINDS = ("dense", "conv")
POOL_MODES = ("sum", "avg")
GOODNESS_SCOPES = ("layer", "channel")


class LayerError(ValueError):
    """A [[layers]] entry is invalid."""


def _pos_int(v, name, allow_zero=False):
    ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise LayerError(f"{name}: must be an integer {'>= 0' if allow_zero else '> 0'}, got {v!r}")


@dataclass(frozen=True)
class LayerSpec:
    """One layer. ``dense``: ``size``. ``conv``: ``channels``, ``kernel``, ``stride``, ``padding``,
    ``pool`` (1 = none), ``pool_mode``, ``goodness_scope`` ("layer" or "channel")."""

    kind: str = "dense"
    size: int | None = None
    channels: int | None = None
    kernel: int | None = None
    stride: int = 1
    padding: int = 0
    pool: int = 1
    pool_mode: str = "sum"
    goodness_scope: str = "layer"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise LayerError(f"kind: {self.kind!r} is not valid; choose one of {list(KINDS)}")
        if not isinstance(self.goodness_scope, str) or self.goodness_scope not in GOODNESS_SCOPES:
            raise LayerError(f"goodness_scope: {self.goodness_scope!r} is not valid; "
                             f"choose one of {list(GOODNESS_SCOPES)}")
        if self.kind == "dense":
            _pos_int(self.size, "size")
            extra = [k for k in ("channels", "kernel") if getattr(self, k) is not None]
            if extra or (self.stride, self.padding, self.pool) != (1, 0, 1):
                raise LayerError(f"a dense layer takes only 'size'; got {extra or 'stride/padding/pool'}")
            if self.goodness_scope != "layer":
                raise LayerError(f"goodness_scope: {self.goodness_scope!r} needs a conv layer (a dense "
                                 "layer has no channels; its goodness is the layer's)")
        else:
            _pos_int(self.channels, "channels")
            _pos_int(self.kernel, "kernel")
            _pos_int(self.stride, "stride")
            _pos_int(self.padding, "padding", allow_zero=True)
            _pos_int(self.pool, "pool")
            if self.size is not None:
                raise LayerError("a conv layer takes no 'size' (it follows from channels and the input)")
            if self.pool_mode not in POOL_MODES:
                raise LayerError(f"pool_mode: {self.pool_mode!r} is not valid; choose one of {list(POOL_MODES)}")

    @classmethod
    def from_dict(cls, d: dict, i: int = 0) -> "LayerSpec":
        if isinstance(d, LayerSpec):
            return d
        if not isinstance(d, dict):
            raise LayerError(f"layers[{i}]: must be a table, got {d!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise LayerError(f"layers[{i}]: unknown keys {sorted(unknown)}; valid keys are {sorted(names)}")
        try:
            return cls(**d)
        except LayerError as e:
            raise LayerError(f"layers[{i}].{e}") from None

    def to_dict(self) -> dict:
        if self.kind == "dense":
            return {"kind": "dense", "size": self.size}
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "size"}
        if self.goodness_scope == "layer":     # the default: the same dict (and config hash) as before
            del d["goodness_scope"]
        return d

    @property
    def channel_goodness(self) -> bool:
        """Whether each output channel is a separate FF unit (``goodness_scope = "channel"``)."""
        return self.kind == "conv" and self.goodness_scope == "channel"


@dataclass(frozen=True)
class Geometry:
    """Shapes of one layer in a given network: input (C, H, W) (None for a flat input), number of
    global inputs G, output map (C, Ho, Wo), neurons N, and what the next layer receives (M_out)."""

    spec: LayerSpec
    in_shape: tuple | None
    n_global: int
    n_in: int                  # M: inputs per sample (image + globals)
    out_shape: tuple | None    # (C, Ho, Wo) for conv
    n_neurons: int             # N
    pooled_shape: tuple | None
    n_out: int                 # inputs the next layer receives (after pooling)

    @property
    def is_conv(self):
        return self.spec.kind == "conv"

    @property
    def n_positions(self):
        return self.out_shape[1] * self.out_shape[2] if self.is_conv else 1

    @property
    def n_kernel(self):
        """Kernel taps per channel (C*k*k) of a conv layer."""
        return self.in_shape[0] * self.spec.kernel ** 2

    @property
    def weight_shape(self):
        """Stored weights: dense (N, M); conv (channels, C*k*k + P*G): each channel's kernel, then
        its label map (P positions x G global inputs)."""
        if self.is_conv:
            return (self.spec.channels, self.n_kernel + self.n_positions * self.n_global)
        return (self.spec.size, self.n_in)

    @property
    def fan_in(self):
        """Inputs that reach one neuron (for the weight initialisation)."""
        return self.n_kernel + self.n_global if self.is_conv else self.n_in


def layer_geometries(specs, input_shape, n_inputs: int) -> list[Geometry]:
    """Geometry of every layer for inputs of ``n_inputs`` values per sample; ``input_shape``
    (C, H, W) is the image part (the rest, ``n_inputs - C*H*W``, are global inputs: the labels)."""
    geos = []
    shape = tuple(input_shape) if input_shape else None
    n_global = n_inputs - (math.prod(shape) if shape else n_inputs)
    if shape and n_global < 0:
        raise LayerError(f"input_shape {list(shape)} has {math.prod(shape)} values, more than the "
                         f"{n_inputs} inputs per sample")
    M = n_inputs
    for i, s in enumerate(specs):
        if s.kind == "conv":
            if shape is None:
                raise LayerError(f"layers[{i}]: a conv layer needs an image input: set input_shape "
                                 f"(C, H, W) and put conv layers before dense ones")
            C, H, W = shape
            Ho = (H + 2 * s.padding - s.kernel) // s.stride + 1
            Wo = (W + 2 * s.padding - s.kernel) // s.stride + 1
            if Ho < 1 or Wo < 1:
                raise LayerError(f"layers[{i}]: kernel {s.kernel} does not fit the {H}x{W} input "
                                 f"(padding {s.padding})")
            if Ho % s.pool or Wo % s.pool:
                raise LayerError(f"layers[{i}]: pool {s.pool} does not divide the {Ho}x{Wo} output map")
            out = (s.channels, Ho, Wo)
            pooled = (s.channels, Ho // s.pool, Wo // s.pool)
            geos.append(Geometry(s, shape, n_global, M, out, math.prod(out), pooled, math.prod(pooled)))
            shape, n_global, M = pooled, 0, math.prod(pooled)
        else:
            geos.append(Geometry(s, None, 0, M, None, s.size, None, s.size))
            shape, n_global, M = None, 0, s.size
    return geos


def _permute(a, axes, xp):
    return a.transpose(axes) if xp is np else xp.permute_dims(a, axes)


def _concat(arrays, axis, xp):
    return np.concatenate(arrays, axis=axis) if xp is np else xp.concat(arrays, axis=axis)


# -- im2col and pooling (any array-API namespace) ---------------------------------------------------
def im2col(x, geo: Geometry, xp=np):
    """Patches of the image part of ``x`` (R, M) for the conv layer ``geo``: shape
    (R * P, C*k*k), rows ordered (r, i, j), columns (c, dy, dx). The global inputs (the columns
    after the image) are not included: they reach every position with one weight, see
    :func:`spikeff.engines.conv.conv_currents`.

    numpy: ``sliding_window_view`` (a strided view) copied once by the reshape; other array-API
    namespaces: one strided slice per kernel tap, stacked.
    """
    s = geo.spec
    C, H, W = geo.in_shape
    _, Ho, Wo = geo.out_shape
    k, st, p = s.kernel, s.stride, s.padding
    R = x.shape[0]
    img = xp.reshape(x[:, :C * H * W], (R, C, H, W))
    if p:
        pad = xp.zeros((R, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
        pad[:, :, p:p + H, p:p + W] = img
        img = pad
    if xp is np:
        win = np.lib.stride_tricks.sliding_window_view(img, (k, k), axis=(2, 3))[:, :, ::st, ::st]
        return win[:, :, :Ho, :Wo].transpose(0, 2, 3, 1, 4, 5).reshape(R * Ho * Wo, C * k * k)
    taps = [img[:, :, dy:dy + st * (Ho - 1) + 1:st, dx:dx + st * (Wo - 1) + 1:st]
            for dy in range(k) for dx in range(k)]
    cols = _permute(xp.stack(taps, axis=2), (0, 3, 4, 1, 2), xp)     # (R, Ho, Wo, C, k*k)
    return xp.reshape(cols, (R * Ho * Wo, C * k * k))


def pool_spikes(s, geo: Geometry, xp=np, dtype=None):
    """Sum (or average) pooling of a conv layer's output (R, N) -> (R, n_out). ``dtype`` (numpy):
    the sums are cast to it before the average's division (the engine pools its spikes as uint8)."""
    sp = geo.spec
    if not geo.is_conv or sp.pool == 1:
        return s if dtype is None else s.astype(dtype)
    C, Ho, Wo = geo.out_shape
    q = sp.pool
    R = s.shape[0]
    s4 = xp.reshape(s, (R, C, Ho, Wo))
    # strided adds, first along the rows then across them (2 (q - 1) adds of shrinking arrays):
    # faster than q*q strided adds or a reduction over two inner axes; sums of spike counts, exact
    x = s4[:, :, :, 0::q]
    for dx in range(1, q):
        x = x + s4[:, :, :, dx::q]
    y = x[:, :, 0::q, :]
    for dy in range(1, q):
        y = y + x[:, :, dy::q, :]
    if dtype is not None:
        y = y.astype(dtype)
    if sp.pool_mode == "avg":
        y = y / (q * q)
    return xp.reshape(y, (R, geo.n_out))


# -- the equivalent dense network ---------------------------------------------------------------------
def conv_matrix(W, geo: Geometry) -> np.ndarray:
    """The dense matrix (N, M) of a conv layer: ``conv_matrix(W) @ x == conv(W, x)`` for one sample
    (neurons in (channel, row, column) order; the global inputs through the label maps). Every entry is one kernel weight or 0, so it is exact."""
    W = np.asarray(W)
    C, H, Wd = geo.in_shape
    n_img = C * H * Wd
    cols = im2col(np.eye(n_img, dtype=W.dtype), geo)                 # (n_img * P, CKK)
    P, Co = geo.n_positions, geo.spec.channels
    out = (cols @ W[:, :cols.shape[1]].T).reshape(n_img, P, Co)      # out[m, p, o]
    D = np.empty((Co * P, geo.n_in), dtype=W.dtype)
    D[:, :n_img] = out.transpose(2, 1, 0).reshape(Co * P, n_img)
    D[:, n_img:] = W[:, cols.shape[1]:].reshape(Co * P, geo.n_global)
    return D


def pool_matrix(geo: Geometry, dtype=np.float64) -> np.ndarray:
    """(n_out, N) matrix of the layer's pooling (identity without pooling)."""
    return pool_spikes(np.eye(geo.n_neurons, dtype=dtype), geo).T.copy()


def expand_bias(b, geo: Geometry):
    """Per-neuron bias (N,) of a layer from its stored bias (channels,) or (N,)."""
    if b is None or not geo.is_conv:
        return b
    return np.repeat(np.asarray(b), geo.n_positions)


def dense_expansion(weights, geos) -> list[np.ndarray]:
    """Equivalent dense weight matrices, layer l of shape (N_l, N_{l-1}) (the *unpooled* spikes
    of the layer below; the first layer reads the input): each layer's pooling is folded into the
    next layer's matrix. Simulating these with the dense engine gives the conv network."""
    out, pool_prev = [], None
    for W, geo in zip(weights, geos):
        W = np.asarray(W)
        D = conv_matrix(W, geo) if geo.is_conv else W
        if pool_prev is not None:
            D = D @ pool_prev
        out.append(D)
        pool_prev = pool_matrix(geo, W.dtype) if geo.is_conv and geo.spec.pool > 1 else None
    return out


def channel_means(a, geo: Geometry):
    """Per-neuron values ``a`` (B, N) of a conv layer (neurons in (channel, position) order) ->
    (B, channels): the mean over each channel's positions. Of the per-neuron goodness (which is
    already the mean over the steps), the goodness of each channel (``goodness_scope = "channel"``)."""
    a = np.asarray(a)
    return a.reshape(a.shape[0], geo.spec.channels, geo.n_positions).mean(axis=2)
