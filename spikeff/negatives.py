"""Where the negative phase's data is generated: wrong labels overlaid on real images.

* ``random``: a wrong label drawn uniformly among the other classes.
* ``hard``: a wrong label drawn with probability proportional to ``softmax(goodness)`` over the
  wrong labels, where ``goodness`` is the network's current goodness for each candidate label
  (the labels the model confuses most are drawn most often, as in Hinton's paper). Costs one
  simulation per candidate label.
* ``readout_hard``: the same sampling with the linear readout's logits from the neutral-label pass
  (which training runs anyway for the readout) as scores: hard negatives at no extra simulation.
* ``hybrid`` (unsupervised, Hinton section 3.2): the negative data are *hybrid images*, one image
  times a smooth random mask plus another image times the inverse mask; the positive data are the
  real images. Both phases carry the neutral label (no label information), so the network learns
  features without labels and is evaluated with the linear readout.
"""
from __future__ import annotations

import numpy as np

NEGATIVES = ("random", "hard", "readout_hard", "hybrid")   # the kinds above (config field ``negatives``)


def random_wrong_labels(y: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    y = np.asarray(y)
    return (y + rng.integers(1, n_classes, size=y.shape)) % n_classes


def hard_wrong_labels(y: np.ndarray, scores: np.ndarray, rng: np.random.Generator,
                      temperature: float = 1.0) -> np.ndarray:
    """``scores`` (batch, n_classes): goodness of each candidate label. Samples a wrong label."""
    y = np.asarray(y)
    s = np.asarray(scores, dtype=np.float64) / temperature
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p[np.arange(len(y)), y] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random((len(y), 1))
    choice = (np.cumsum(p, axis=1) < u).sum(axis=1)
    choice = np.minimum(choice, p.shape[1] - 1)
    # guard against rounding landing on the true label
    bad = choice == y
    choice[bad] = (y[bad] + 1) % p.shape[1]
    return choice


def smooth_masks(n: int, image_shape: tuple, rng: np.random.Generator, n_blur: int | None = None) -> np.ndarray:
    """``n`` binary masks of ``image_shape`` with large regions of ones and zeros: random bits,
    blurred ``n_blur`` times with the filter [1/4, 1/2, 1/4] along every image axis, thresholded at
    0.5 (Hinton 2022). ``n_blur`` defaults to about a quarter of the image's longest side (at least 2)."""
    shape = tuple(int(s) for s in image_shape)
    if n_blur is None:
        n_blur = max(2, max(shape) // 4)
    m = rng.integers(0, 2, size=(n, *shape)).astype(np.float64)
    for _ in range(n_blur):
        for ax in range(1, m.ndim):
            pad = [(0, 0)] * m.ndim
            pad[ax] = (1, 1)
            p = np.pad(m, pad, mode="edge")
            lo = np.take(p, np.arange(0, shape[ax - 1]), axis=ax)
            mid = np.take(p, np.arange(1, shape[ax - 1] + 1), axis=ax)
            hi = np.take(p, np.arange(2, shape[ax - 1] + 2), axis=ax)
            m = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return (m > 0.5).astype(np.float64)


def image_shape_of(n_features: int) -> tuple:
    """The square image shape of ``n_features`` pixels, else the flat shape ``(n_features,)``."""
    side = int(round(np.sqrt(n_features)))
    return (side, side) if side * side == n_features else (int(n_features),)


def hybrid_images(X: np.ndarray, rng: np.random.Generator, image_shape: tuple | None = None,
                  n_blur: int | None = None) -> np.ndarray:
    """Negative data for unsupervised FF: each row of ``X`` (batch, pixels) mixed with another row
    (``X[i + k mod B]``, random ``k`` in 1..B-1) by a smooth random mask:
    ``mask * X[i] + (1 - mask) * X[j]``. ``image_shape`` defaults to a square image."""
    X = np.asarray(X, dtype=np.float64)
    B, M = X.shape
    shape = image_shape_of(M) if image_shape is None else tuple(image_shape)
    if B == 1:      # a lone image (last batch of an epoch) is mixed with its own mirror image
        other = X.reshape(1, *shape)[(slice(None),) + (slice(None, None, -1),) * len(shape)].reshape(1, M)
    else:
        other = X[(np.arange(B) + rng.integers(1, B)) % B]      # a shuffled batch: shift by 1..B-1
    mask = smooth_masks(B, shape, rng, n_blur).reshape(B, M)
    return mask * X + (1.0 - mask) * other
