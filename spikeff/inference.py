"""Inference of a fitted :class:`~spikeff.network.FFNetwork` through any engine: the one place
that turns simulated phases into goodness per label, readout features and class decisions.

``engine`` (None: the network's own) is any callable of :class:`spikeff.engines.base.Engine`'s
signature: the Lava engines of :mod:`spikeff.engines.lava` (Lava's floating point, Lava's
fixed point, or the bit-exact numpy model of the fixed point) give the exported network's
decisions with the same input spikes and the same decision rule as spikeff's own engine.
"""
from __future__ import annotations

import numpy as np

METHODS = ("goodness", "readout")


def label_scores(G, mask) -> np.ndarray:
    """Score of every candidate label: the goodness ``G`` (n, C, L) summed over the layers in
    ``mask`` (:meth:`FFNetwork._layer_mask`), shape (n, C)."""
    return G[:, :, mask].sum(axis=2)


def goodness_decision(G, mask) -> np.ndarray:
    """The predicted labels from the goodness per label ``G`` (n, C, L): the label whose summed
    goodness (over the layers in ``mask``) is highest. The one argmax of the goodness method."""
    return np.argmax(label_scores(G, mask), axis=1)


def goodness_per_label(net, X, seed: int = 0, engine=None) -> np.ndarray:
    """Goodness of every candidate label, shape (n_samples, n_classes, n_layers), every label of a
    sample seeing the same image spikes (:meth:`FFNetwork.label_sources`)."""
    C, L = getattr(net, "n_classes_", 0), len(getattr(net, "weights_", []))
    out = [np.stack(net._run(src, engine=engine).goodness, axis=1).reshape(n, C, -1)
           for n, src in net.label_sources(X, seed)]
    return np.concatenate(out) if out else np.zeros((0, C, L))


def readout_features(net, X, seed: int = 0, engine=None, out=None) -> np.ndarray:
    """The readout's input with the neutral label: unit-normalised per-neuron goodness of every
    layer (and the spike counts, by ``config.readout_input``: :meth:`FFNetwork._readout_input`).
    ``out``: an array of ``len(X)`` rows to fill (e.g. a block of a larger one, of another dtype)."""
    F, i = out, 0             # filled batch by batch: no second copy of a large feature matrix
    for n, src in net.neutral_sources(X, seed):
        r = net._run(src, engine=engine)
        f = net._readout_input(r.neuron_goodness, r.spike_counts)
        if F is None:
            F = np.empty((len(X), f.shape[1]), f.dtype)
        F[i:i + n], i = f, i + n
    return F


def readout_logits(net, X, engine=None) -> np.ndarray:
    """The linear readout's class scores (n_samples, n_classes). A readout refit on mirror images
    too (``readout_mirror``) scores an image by the sum of its scores of the image and of the
    image mirrored left to right (two passes per sample)."""
    readout = net.readout_
    z = readout.logits(readout_features(net, X, engine=engine))
    if readout.mirror_shape is not None:
        from .data import mirror_images
        z = z + readout.logits(readout_features(net, mirror_images(X, readout.mirror_shape), engine=engine))
    return z


def predict(net, X, method: str | None = None, engine=None) -> np.ndarray:
    """Predicted labels. ``method``: "goodness" (try every label, highest summed goodness wins) or
    "readout" (one pass with the neutral label and the linear readout); default the config's."""
    method = method or net.config.predict_method
    X = net._input(X)
    if method == "goodness":
        return goodness_decision(goodness_per_label(net, X, engine=engine), net._layer_mask())
    if method == "readout":
        net._check_fitted()
        if net.readout_ is None:
            raise ValueError("method='readout' needs a network trained with readout = true")
        return np.argmax(readout_logits(net, X, engine=engine), axis=1)
    raise ValueError(f"method: {method!r} is not valid; choose one of {list(METHODS)}")
