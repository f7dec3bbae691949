"""Where the negative phase's data is generated: wrong labels overlaid on real images.

* ``random``: a wrong label drawn uniformly among the other classes.
* ``hard``: a wrong label drawn with probability proportional to ``softmax(goodness)`` over the
  wrong labels, where ``goodness`` is the network's current goodness for each candidate label
  (the labels the model confuses most are drawn most often, as in Hinton's paper). Costs one
  simulation per candidate label.
* ``readout_hard``: the same sampling with the linear readout's logits from the neutral-label pass
  (which training runs anyway for the readout) as scores: hard negatives at no extra simulation.
"""
from __future__ import annotations

import numpy as np


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
