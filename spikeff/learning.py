"""The FF loss of a layer, its modulator (third factor), and per-layer optimizers.

Each layer learns alone: its loss depends only on its own goodness G (per sample), so
``dL/dW = sum_b m_b * dG_b/dW`` with the per-sample modulator ``m_b = dL/dG_b`` computed here, and
``dG_b/dW`` given by the eligibility-trace rule in the engines. No gradient crosses layers or time
steps backwards.

Losses (``s`` = ``loss_sharpness``, theta = ``goodness_threshold``):

* ``threshold`` (Hinton): ``softplus(s (theta - G_pos)) + softplus(s (G_neg - theta))``, per pair
* ``symba``: ``softplus(-s (G_pos - G_neg))`` (no threshold, only the separation counts)

Both are divided by ``s`` so that the gradient scale does not depend on the sharpness.

A conv layer with ``goodness_scope = "channel"`` (:mod:`spikeff.layers`) has one goodness per
(sample, channel), ``G`` of shape (B, C): each channel is a separate FF unit with the same loss
and threshold, the layer's loss is the mean over channels (and samples) of the units' losses, and
the modulator ``m_bc = dL/dG_bc`` is per (sample, channel); the engine gives every neuron of
channel c the modulator of its channel, so the rule stays local.
"""
from __future__ import annotations

import numpy as np

from .backend import like, namespace

LOSSES = ("threshold", "symba")
LR_SCHEDULES = ("constant", "cosine")


def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def ff_loss(g_pos, g_neg, loss: str, threshold: float, sharpness: float):
    """Return (mean loss, m_pos, m_neg): the loss and dL/dG per sample of each phase.

    ``m`` is for the *mean* loss over the batch (already divided by the batch size). Goodness of
    shape (B, C) (C units per sample, e.g. the channels of a conv layer): the loss is the mean over
    samples and units, ``m`` (B, C) per sample and unit (divided by B*C).
    """
    g_pos = np.asarray(g_pos, dtype=np.float64)
    g_neg = np.asarray(g_neg, dtype=np.float64)
    n = g_pos.size            # the (sample, unit) terms the loss averages: the batch size for (B,)
    s = sharpness
    if loss == "threshold":
        lp = softplus(s * (threshold - g_pos)) / s
        ln = softplus(s * (g_neg - threshold)) / s
        value = float(np.mean(lp + ln))
        m_pos = -sigmoid(s * (threshold - g_pos)) / n
        m_neg = sigmoid(s * (g_neg - threshold)) / n
    elif loss == "symba":
        d = g_pos - g_neg
        value = float(np.mean(softplus(-s * d) / s))
        m_pos = -sigmoid(-s * d) / n
        m_neg = -m_pos
    else:
        raise ValueError(f"loss: {loss!r} is not valid; choose one of {list(LOSSES)}")
    return value, m_pos, m_neg


FAST_ADAM = True         # False: Adam's array-API form on numpy too (for tests; same bits)
ADAM_BLOCK = 1 << 16     # elements per block of the numpy Adam step (its arrays' blocks stay in L2)


def _blockable(*arrays) -> bool:
    """numpy arrays of one shape and dtype, each C-contiguous (flat views for :func:`_adam_blocks`)."""
    a0 = arrays[0]
    return all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.shape == a0.shape
               and a.dtype == a0.dtype for a in arrays)


def _adam_blocks(p, g, m, v, b1, b2, eps, lr_c1, c2):
    """Adam's update of one numpy array in place: per block of :data:`ADAM_BLOCK` elements, all of
    the update while the block is in cache, the blocks shared by the engine threads. Element by
    element the same operations in the same order (and dtype) as the array-API form in
    :meth:`Adam.step`, so the same bits; about 12 passes over arrays of the layer's size (8 MB for
    1000 x 1000 float64 moments) become passes over cached blocks, with no temporaries."""
    from .engines.vectorized import _parallel, work_buffer
    P, G, Mf, V = (a.reshape(-1) for a in (p, g, m, v))
    n_blocks = -(-P.size // ADAM_BLOCK)

    def part(blocks):               # one engine thread: its blocks, with its own two scratch blocks
        s1 = work_buffer(("adam", 1), (ADAM_BLOCK,), P.dtype)
        s2 = work_buffer(("adam", 2), (ADAM_BLOCK,), P.dtype)
        for i in range(*blocks.indices(n_blocks)[:2]):
            a, b = i * ADAM_BLOCK, min((i + 1) * ADAM_BLOCK, P.size)
            t1, t2 = s1[:b - a], s2[:b - a]
            Mb, Vb, Gb = Mf[a:b], V[a:b], G[a:b]
            Mb *= b1                                    # m = b1 m + (1 - b1) g
            np.multiply(Gb, 1 - b1, out=t1)
            Mb += t1
            Vb *= b2                                    # v = b2 v + (1 - b2) g^2
            np.multiply(Gb, Gb, out=t1)
            t1 *= 1 - b2
            Vb += t1
            np.divide(Vb, c2, out=t1)                   # p -= (lr / c1) m / (sqrt(v / c2) + eps)
            np.sqrt(t1, out=t1)
            t1 += eps
            np.multiply(Mb, lr_c1, out=t2)
            t2 /= t1
            P[a:b] -= t2
    _parallel(part, n_blocks, ADAM_BLOCK)


class Adam:
    """Adam on a list of arrays (one optimizer per layer; no autograd; any array-API backend).
    On numpy, :func:`_adam_blocks` does the same arithmetic block by block in the engine threads."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = [namespace(p).zeros_like(p) for p in params]
        self.v = [namespace(p).zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            if FAST_ADAM and _blockable(p, g, m, v):
                _adam_blocks(p, g, m, v, self.b1, self.b2, self.eps, self.lr / c1, c2)
                continue
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * (g * g)
            p -= (self.lr / c1) * m / (namespace(v).sqrt(v / c2) + self.eps)

    def state_dict(self):
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, d):
        self.t = int(d["t"])
        self.m = [like(a, ref) for a, ref in zip(d["m"], self.m)]
        self.v = [like(a, ref) for a, ref in zip(d["v"], self.v)]


class SGD:
    """SGD with momentum."""

    def __init__(self, params, lr=1e-2, momentum=0.9):
        self.lr, self.mu = lr, momentum
        self.m = [namespace(p).zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        for p, g, m in zip(params, grads, self.m):
            m *= self.mu
            m += g
            p -= self.lr * m

    def state_dict(self):
        return {"t": self.t, "m": self.m, "v": []}

    def load_state_dict(self, d):
        self.t = int(d["t"])
        self.m = [like(a, ref) for a, ref in zip(d["m"], self.m)]


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate for ``epoch`` (0-based) of ``epochs``."""
    if schedule == "constant" or epochs <= 1:
        return 1.0
    if schedule == "cosine":
        return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * epoch / (epochs - 1)))
    raise ValueError(f"lr_schedule: {schedule!r} is not valid; choose one of {list(LR_SCHEDULES)}")


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def make_optimizer(name: str, params, lr: float):
    try:
        return OPTIMIZERS[name](params, lr=lr)
    except KeyError:
        raise ValueError(f"optimizer: {name!r} is not valid; choose one of {list(OPTIMIZERS)}") from None
