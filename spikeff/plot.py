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
    for key, label in (("val_acc_goodness", "validation (goodness)"), ("val_acc_readout", "validation (readout)"),
                       ("test_acc_goodness", "test (goodness)"), ("test_acc_readout", "test (readout)"),
                       ("train_acc", "train")):
        vals = [m.get(key) for m in history]
        if any(v is not None for v in vals):
            axes[0].plot(ep, [np.nan if v is None else v for v in vals], marker="o", label=label)
    axes[0].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    if axes[0].get_lines():
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


def _axes(ax, figsize):
    """(figure, axes): a new figure when ``ax`` is None, else ``ax`` and its figure."""
    plt = _mpl()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_membrane_traces(v: np.ndarray, v_threshold: float, spikes: np.ndarray | None = None,
                         neurons=None, dt: float = 1e-3, v_reset: float | None = None, title: str = "",
                         ax=None, path=None):
    """Membrane potential (pre-reset, mV) of a few neurons of one sample over time, ``v`` (T, N),
    with the threshold as a dashed line and spikes (``spikes`` (T, N) bool) as markers.
    ``neurons``: indices to draw (default: 5 neurons spread from the most to the least active, by
    spike count, else by mean potential). One line per neuron."""
    v = np.asarray(v)
    if neurons is None:
        order = np.argsort(-(np.asarray(spikes).sum(axis=0) if spikes is not None else v.mean(axis=0)),
                           kind="stable")
        neurons = order[np.unique(np.linspace(0, len(order) - 1, min(5, len(order))).astype(int))]
    fig, ax = _axes(ax, (7, 3.4))
    t = np.arange(v.shape[0]) * dt * 1e3
    for i in neurons:
        line, = ax.plot(t, v[:, i], lw=1.2, label=f"neuron {i}")
        if spikes is not None:
            ts = np.flatnonzero(np.asarray(spikes)[:, i])
            ax.plot(t[ts], v[ts, i], "v", color=line.get_color(), ms=4, ls="none")
    ax.axhline(v_threshold, color="k", ls="--", lw=1, label="threshold")
    if v_reset is not None:
        ax.axhline(v_reset, color="0.6", ls=":", lw=1, label="reset")
    ax.set(xlabel="time (ms)", ylabel="membrane potential (mV)", title=title or "membrane potential")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _finish(fig, path)


def plot_goodness_histograms(g_pos: np.ndarray, g_neg: np.ndarray, threshold: float | None = None,
                             bins: int = 30, path=None):
    """Histograms of the goodness of positive vs negative data, one panel per layer.
    ``g_pos``/``g_neg``: (samples, layers). Each panel holds two bar containers (positive, negative)
    whose counts sum to the number of samples; the goodness threshold is a vertical line."""
    plt = _mpl()
    g_pos, g_neg = np.atleast_2d(g_pos), np.atleast_2d(g_neg)
    L = g_pos.shape[1]
    fig, axes = plt.subplots(1, L, figsize=(4.2 * L, 3.3), squeeze=False)
    for l, ax in enumerate(axes[0]):
        lo = min(g_pos[:, l].min(), g_neg[:, l].min())
        hi = max(g_pos[:, l].max(), g_neg[:, l].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        ax.hist(g_pos[:, l], bins=edges, alpha=0.6, label="positive (true label)", color="tab:green")
        ax.hist(g_neg[:, l], bins=edges, alpha=0.6, label="negative", color="tab:red")
        if threshold is not None:
            ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
        ax.set(xlabel="goodness", ylabel="samples", title=f"layer {l + 1}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, path)


def plot_label_goodness(goodness: np.ndarray, true_label: int | None = None, ax=None, path=None):
    """Goodness of every candidate label for one sample, ``goodness`` (n_classes, layers): bars stacked
    by layer (one bar per label and layer); the true label's tick is marked and the winner (highest sum)
    is named in the title."""
    g = np.asarray(goodness, dtype=np.float64)
    if g.ndim == 1:
        g = g[:, None]
    C, L = g.shape
    fig, ax = _axes(ax, (6, 3.2))
    bottom = np.zeros(C)
    for l in range(L):
        ax.bar(np.arange(C), g[:, l], bottom=bottom, label=f"layer {l + 1}")
        bottom += g[:, l]
    ax.set_xticks(np.arange(C))
    if true_label is not None:
        ax.get_xticklabels()[int(true_label)].set_color("tab:green")
        ax.get_xticklabels()[int(true_label)].set_fontweight("bold")
    win = int(np.argmax(bottom))
    ax.set(xlabel="candidate label", ylabel="goodness (sum over layers)",
           title=f"goodness per label: predicted {win}" + ("" if true_label is None else f", true {int(true_label)}"))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, path)


def plot_receptive_fields(W: np.ndarray, image_shape: tuple, n: int = 25, neurons=None, path=None):
    """First-layer weights of ``n`` neurons as images (the input columns beyond the image, i.e. the
    label channels, are left out). ``W``: (neurons, inputs). One image per neuron shown, on a symmetric
    colour scale per neuron (red excitatory, blue inhibitory)."""
    W = np.asarray(W)
    n_pix = int(np.prod(image_shape))
    if neurons is None:
        neurons = np.arange(min(n, W.shape[0]))
    neurons = np.asarray(neurons)
    images = [W[i, :n_pix].reshape(image_shape) for i in neurons]
    return _weight_grid(images, [str(i) for i in neurons], 1.3,
                        "layer 1 receptive fields (label channels excluded)", path)


def _weight_grid(images, titles, size: float, title: str, path):
    """Weight images in a square grid, each on its own symmetric colour scale (red excitatory,
    blue inhibitory)."""
    plt = _mpl()
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            m = np.abs(images[k]).max() or 1.0
            ax.imshow(images[k], cmap="RdBu_r", vmin=-m, vmax=m)
            ax.set_title(titles[k], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def plot_conv_kernels(W: np.ndarray, geo, channel: int = 0, path=None):
    """The kernels of a conv layer (weights (channels, C*k*k + ...), ``geo`` its
    :class:`spikeff.layers.Geometry`) as k x k images, input channel ``channel``, one per output
    channel, on a symmetric colour scale per kernel (red excitatory, blue inhibitory)."""
    W = np.asarray(W)
    C, k = geo.in_shape[0], geo.spec.kernel
    if not 0 <= channel < C:
        raise ValueError(f"channel must be in [0, {C}), got {channel}")
    K = W[:, :C * k * k].reshape(-1, C, k, k)[:, channel]
    return _weight_grid(list(K), [str(o) for o in range(len(K))], 1.1,
                        f"conv kernels ({k}x{k}, input channel {channel})", path)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): row = true label, column = predicted label."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def plot_confusion_matrix(y_true, y_pred, n_classes: int, title: str = "", ax=None, path=None):
    """Confusion matrix (rows: true label, columns: predicted) as an image with the counts written in."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    fig, ax = _axes(ax, (4.6, 4.0))
    im = ax.imshow(cm, cmap="Blues")
    for i in range(n_classes):
        for j in range(n_classes):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="w" if cm[i, j] > cm.max() / 2 else "k")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set(xlabel="predicted", ylabel="true", xticks=range(n_classes), yticks=range(n_classes),
           title=(title + ": " if title else "") + f"accuracy {acc:.3f} ({cm.sum()} samples)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _finish(fig, path)


def make_run_figures(run_dir, out_dir=None, n_samples: int = 300, sample: int = 0, data_path=None,
                     log=print) -> list:
    """All figures of a saved run (``run_dir/model.npz`` + ``metrics.json``, whose ``dataset`` names
    the data) into ``out_dir`` (default ``run_dir/figures``); the first ``n_samples`` test samples
    are used. Returns the paths written."""
    import json
    from pathlib import Path

    from .data import load_dataset
    from .network import FFNetwork
    from .negatives import random_wrong_labels
    plt = _mpl()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    net = FFNetwork.load(run_dir / "model.npz")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    da = metrics.get("data_args") or {}
    data = load_dataset(da.get("dataset") or metrics["dataset"], data_path or da.get("data_path"))
    if da.get("n_train") or da.get("n_test"):     # the run's own test subset (as in train_run)
        data = data.subset(da.get("n_train"), da.get("n_test"), seed=net.config.seed)
    if data.X_train.shape[1] != net.n_features_in_:
        from .data import DataError
        raise DataError(f"{run_dir}/model.npz: built for {net.n_features_in_} inputs, data set "
                        f"{data.name} has {data.X_train.shape[1]}")
    X, y = data.X_test[:n_samples], data.y_test[:n_samples]
    c = net.config
    written = []

    def save(fig, name):
        fig.savefig(out / name, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(out / name)

    history = metrics.get("epochs") or net.history_
    if history:
        save(plot_training_curves(history), "training_curves.png")
    events = hasattr(X, "to_spikes") or hasattr(X, "n_steps")
    if events:                           # event data, binned as the network sees it (spikeff.events)
        X = net._input(X)
        save(plot_class_event_rates(X, y, net.n_classes_, c.neuron.dt, sensor_shape=data.image_shape),
             "class_event_rates.png")
    x1, y1 = X[sample:sample + 1], y[sample:sample + 1]
    y1_neg = (y1 + 1) % net.n_classes_
    pos = net.simulate(x1, labels=y1, seed=1)
    neg = net.simulate(x1, labels=y1_neg, seed=1)
    if events:
        save(plot_event_raster(pos.record["input"][:, 0], dt=c.neuron.dt,
                               n_label_channels=net.n_classes_ * c.label_repeat,
                               title=f"input of test sample {sample} with label {y1[0]} (label channels red)"),
             "input_events.png")
    for l in range(len(net.weights_)):
        save(plot_raster_phases(pos.record["spikes"][l][:, 0], neg.record["spikes"][l][:, 0], dt=c.neuron.dt,
                                title=f"layer {l + 1}, label {y1[0]} (positive) vs {y1_neg[0]} (negative)"),
             f"raster_layer{l + 1}.png")
        save(plot_membrane_traces(pos.record["v"][l][:, 0], c.neuron.v_threshold, pos.record["spikes"][l][:, 0],
                                  dt=c.neuron.dt, v_reset=c.neuron.v_reset,
                                  title=f"layer {l + 1}, positive phase, label {y1[0]}"),
             f"membrane_layer{l + 1}.png")
    rng = np.random.default_rng(0)
    g_pos = net.goodness(X, y, seed=2)
    g_neg = net.goodness(X, random_wrong_labels(y, net.n_classes_, rng), seed=2)
    save(plot_goodness_histograms(g_pos, g_neg, c.goodness_threshold if c.loss == "threshold" else None),
         "goodness_histograms.png")     # SymBa has no threshold, only the separation counts
    gpl = net.goodness_per_label(X)
    save(plot_label_goodness(gpl[sample], true_label=y[sample]), "label_goodness.png")
    shape = tuple(data.image_shape) if data.image_shape else (net.n_features_in_,)
    if len(shape) == 3:                  # event sensors (P, H, W): polarities stacked vertically
        shape = (shape[0] * shape[1], shape[2])
    if c.has_conv:
        save(plot_conv_kernels(net.weights_[0], net.geometries[0]), "receptive_fields.png")
    else:
        save(plot_receptive_fields(net.weights_[0], shape), "receptive_fields.png")
    from .inference import goodness_decision
    pred = goodness_decision(gpl, net._layer_mask())
    save(plot_confusion_matrix(y, pred, net.n_classes_, title="goodness"), "confusion_goodness.png")
    if net.readout_ is not None:
        save(plot_confusion_matrix(y, net.predict(X, method="readout"), net.n_classes_, title="readout"),
             "confusion_readout.png")
    log(f"spikeff plot: wrote {len(written)} figures to {out}/ ({len(X)} test samples of {data.name})")
    return written


def plot_event_raster(spikes, dt: float = 1e-3, sample: int = 0, n_label_channels: int = 0, ax=None,
                      path=None, title: str = ""):
    """Input raster of one sample: one point per input spike (channel against time). ``spikes``: a
    :class:`spikeff.events.SpikeTrains`, a (T, B, M) spike tensor, or a (T, M) raster of one sample;
    the last ``n_label_channels`` channels (the FF label overlay) are drawn in red."""
    if hasattr(spikes, "steps"):                     # SpikeTrains
        s = spikes[sample].to_dense()[:, 0]
    else:
        s = np.asarray(spikes)
        s = s[:, sample] if s.ndim == 3 else s
    fig, ax = _axes(ax, (8, 3.6))
    t, ch = np.nonzero(s)
    M = s.shape[1]
    is_label = ch >= M - n_label_channels
    ax.scatter(t[~is_label] * dt * 1e3, ch[~is_label], s=3, marker="|", color="k")
    if n_label_channels:
        ax.scatter(t[is_label] * dt * 1e3, ch[is_label], s=3, marker="|", color="tab:red", label="label channels")
        ax.legend(loc="upper right", fontsize=7)
    ax.set(xlabel="time (ms)", ylabel="input channel", xlim=(0, s.shape[0] * dt * 1e3), ylim=(-0.5, M - 0.5),
           title=title or f"input events: {int(s.sum())} spikes, {s.sum() / (M * s.shape[0] * dt):.1f} Hz per channel")
    return _finish(fig, path)


def class_event_rates(spikes, y, n_classes: int, dt: float) -> np.ndarray:
    """Mean rate (Hz) of every input channel per class, shape (n_classes, n_channels), from
    :class:`spikeff.events.SpikeTrains` (or a (T, B, M) tensor) and labels ``y``."""
    if not hasattr(spikes, "counts"):
        from .events import SpikeTrains
        spikes = SpikeTrains.from_dense(spikes)
    counts = spikes.counts().astype(np.float64)
    y = np.asarray(y)
    out = np.zeros((n_classes, counts.shape[1]))
    for k in range(n_classes):
        if np.any(y == k):
            out[k] = counts[y == k].mean(axis=0) / (spikes.n_steps * dt)
    return out


def plot_class_event_rates(spikes, y, n_classes: int, dt: float, sensor_shape=None, class_names=None, path=None):
    """Per-class event-rate images: the mean rate of every input channel over the samples of each
    class, one panel per class. ``sensor_shape`` (P, H, W) (as ``Dataset.image_shape`` of an event
    data set): 2-D sensors show the rate summed over polarities as an H x W image; otherwise (audio
    like data, H = W = 1 or no shape) the channels are shown as one column per class."""
    plt = _mpl()
    rates = class_event_rates(spikes, y, n_classes, dt)
    names = class_names or [str(k) for k in range(n_classes)]
    if sensor_shape is not None and len(sensor_shape) == 3 and sensor_shape[1] > 1 and sensor_shape[2] > 1:
        P, H, W = sensor_shape
        imgs = rates.reshape(n_classes, P, H, W).sum(axis=1)
        cols = min(n_classes, 6)
        rows = int(np.ceil(n_classes / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows + 0.4), squeeze=False)
        vmax = imgs.max() or 1.0
        for k, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if k < n_classes:
                im = ax.imshow(imgs[k], cmap="magma", vmin=0, vmax=vmax)
                ax.set_title(names[k], fontsize=9)
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="events/s per pixel (all polarities)")
    else:
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * n_classes + 2), 4))
        im = ax.imshow(rates.T, aspect="auto", cmap="magma", interpolation="nearest")
        ax.set(xlabel="class", ylabel="input channel", xticks=range(n_classes))
        ax.set_xticklabels(names, fontsize=7)
        fig.colorbar(im, ax=ax, label="events/s")
    fig.suptitle("input event rate per class")
    return _finish(fig, path)
