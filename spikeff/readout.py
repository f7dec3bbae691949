"""One-pass linear softmax readout (Hinton's cheaper alternative to trying every label).

The network is run once with the *neutral* label; each layer's per-neuron goodness vector is
scaled to unit length (so the readout sees the pattern, not the layer's total goodness) and the
concatenation feeds a linear softmax classifier. With ``readout_input = "goodness_and_counts"``
each layer's spike counts of that pass, scaled to unit length likewise, are appended. The
classifier is a single layer trained with its own local cross-entropy gradient on these detached
features: nothing flows back into the spiking layers.
"""
from __future__ import annotations

import numpy as np

from .learning import Adam


# the readout inputs (config field ``readout_input``) and how many features each gives per neuron
READOUT_INPUTS = {"goodness": 1, "goodness_and_counts": 2}


def readout_features(neuron_goodness: list, spike_counts: list | None = None,
                     eps: float = 1e-8) -> np.ndarray:
    """Concatenate the per-layer unit-normalised per-neuron goodness vectors, shape (B, sum N),
    and then, when ``spike_counts`` is given, the per-layer unit-normalised spike counts
    (shape (B, 2 sum N))."""
    feats = []
    for g in list(neuron_goodness) + list(spike_counts or []):
        g = np.asarray(g, dtype=np.float64)
        feats.append(g / (np.linalg.norm(g, axis=1, keepdims=True) + eps))
    return np.concatenate(feats, axis=1)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class LinearReadout:
    def __init__(self, n_features: int, n_classes: int, lr: float, dtype=np.float64):
        self.W = np.zeros((n_features, n_classes), dtype=dtype)
        self.b = np.zeros(n_classes, dtype=dtype)
        self.opt = Adam([self.W, self.b], lr=lr)
        # None, or the image shape (C, H, W) of a readout refit on mirror images too (readout_mirror):
        # it scores an image by the sum of its scores of the image and of the mirror image (inference)
        self.mirror_shape = None

    def logits(self, F):
        return F @ self.W + self.b

    def step(self, F, y, label_smoothing: float = 0.0) -> float:
        """One Adam step of cross-entropy on features F (B, D), labels y (B,). Returns the loss.
        ``label_smoothing`` s: the targets are ``(1 - s) one_hot(y) + s / n_classes``."""
        P = softmax(self.logits(F))
        B = len(y)
        rows = np.arange(B)
        if label_smoothing:
            s, C = float(label_smoothing), P.shape[1]
            logp = np.log(P + 1e-12)
            loss = float(-np.mean((1 - s) * logp[rows, y] + s / C * logp.sum(axis=1)))
            P -= s / C
            P[rows, y] -= 1.0 - s
        else:
            loss = float(-np.mean(np.log(P[rows, y] + 1e-12)))
            P[rows, y] -= 1.0
        P /= B
        # (P^T F)^T: the same sums as F^T P (to rounding), a GEMM shape BLAS runs about twice as fast
        self.opt.step([self.W, self.b], [(P.T @ F).T, P.sum(axis=0)])
        return loss

    def predict(self, F):
        return np.argmax(self.logits(F), axis=1)

    def fit_epoch(self, F, y, order, batch_size: int = 256, label_smoothing: float = 0.0) -> float:
        """One epoch of :meth:`step` on the rows of features ``F`` (n, D) taken in ``order``, in
        batches of ``batch_size`` (with ``label_smoothing``); returns the mean loss. Each batch is
        gathered (in the engine threads) into work buffers reused from batch to batch and cast to the
        readout's dtype there: the same steps as ``step(F[idx], y[idx])``, bit for bit, without
        allocating two copies of every batch (for a large ``F``, e.g. a float32 block of the mirror
        refit, those allocations and the casts inside the GEMMs took most of the epoch)."""
        from .engines.vectorized import _parallel
        n, D = F.shape
        dtype = self.W.dtype
        gathered = np.empty((min(batch_size, n), D), F.dtype)
        cast = gathered if F.dtype == dtype else np.empty(gathered.shape, dtype)
        losses = []
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            m = len(idx)

            def take(sl, idx=idx):
                np.take(F, idx[sl], axis=0, out=gathered[sl])
                if cast is not gathered:
                    cast[sl] = gathered[sl]
            _parallel(take, m, D)
            losses.append(self.step(cast[:m], y[idx], label_smoothing) * m)
        return float(np.sum(losses) / n)
