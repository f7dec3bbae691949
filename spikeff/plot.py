"""Figures (matplotlib). Each function takes optional ``ax``/``path`` and returns the figure."""
from __future__ import annotations

import numpy as np


def _mpl():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # pragma: no cover
            pass
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_training_curves(history: list, path=None):
    """Accuracy, FF loss per layer and goodness separation per epoch (from ``FFNetwork.history_``)."""
    plt = _mpl()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = [m["epoch"] for m in history]
    for key, label in (("test_acc_goodness", "test (goodness)"), ("test_acc_readout", "test (readout)"),
                       ("train_acc", "train")):
        vals = [m.get(key) for m in history]
        if any(v is not None for v in vals):
            axes[0].plot(ep, [np.nan if v is None else v for v in vals], marker="o", label=label)
    axes[0].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    axes[0].legend()
    loss = np.array([m["ff_loss"] for m in history])
    for l in range(loss.shape[1]):
        axes[1].plot(ep, loss[:, l], marker="o", label=f"layer {l + 1}")
    axes[1].set(xlabel="epoch", ylabel="FF loss", title="FF loss per layer")
    axes[1].legend()
    gp, gn = np.array([m["g_pos"] for m in history]), np.array([m["g_neg"] for m in history])
    for l in range(gp.shape[1]):
        line, = axes[2].plot(ep, gp[:, l], marker="o", label=f"layer {l + 1} positive")
        axes[2].plot(ep, gn[:, l], marker="x", ls="--", color=line.get_color(), label=f"layer {l + 1} negative")
    axes[2].set(xlabel="epoch", ylabel="mean goodness", title="goodness: positive vs negative")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, path)


def plot_raster_phases(spikes_pos: np.ndarray, spikes_neg: np.ndarray, dt: float = 1e-3,
                       title: str = "", path=None, max_neurons: int = 200):
    """Spike rasters (T, N) of one sample for the positive and the negative phase, side by side.
    Returns the figure; each recorded spike is one point."""
    plt = _mpl()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, s, name in ((axes[0], spikes_pos, "positive"), (axes[1], spikes_neg, "negative")):
        s = np.asarray(s)[:, :max_neurons]
        t, n = np.nonzero(s)
        ax.scatter(t * dt * 1e3, n, s=2, marker="|", color="k")
        ax.set(xlabel="time (ms)", title=f"{name} phase: {int(s.sum())} spikes", xlim=(0, s.shape[0] * dt * 1e3))
    axes[0].set_ylabel("neuron")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)
