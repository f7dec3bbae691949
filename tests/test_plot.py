"""The figures: each plot function runs on a small trained network and draws what the data says."""
import json

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from spikeff import FFNetwork, plot  # noqa: E402


@pytest.fixture(scope="module")
def trained(digits):
    from spikeff import FFConfig
    cfg = FFConfig(hidden_sizes=(40, 30), n_steps=12, epochs=1, batch_size=32, dtype="float64",
                   chunk_steps=5, label_repeat=2, readout=True, seed=3)
    net = FFNetwork(cfg).fit(digits.X_train[:128], digits.y_train[:128])
    return net


def test_raster_has_one_point_per_spike(trained, digits):
    x, y = digits.X_test[:1], digits.y_test[:1]
    pos = trained.simulate(x, labels=y, seed=1)
    neg = trained.simulate(x, labels=(y + 1) % 10, seed=1)
    sp, sn = pos.record["spikes"][0][:, 0], neg.record["spikes"][0][:, 0]
    assert sp.sum() > 0
    fig = plot.plot_raster_phases(sp, sn)
    pts = [len(c.get_offsets()) for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection)]
    assert pts == [int(sp.sum()), int(sn.sum())]
    plt.close(fig)


def test_membrane_traces_threshold_and_spike_markers(trained, digits):
    res = trained.simulate(digits.X_test[:1], labels=digits.y_test[:1], seed=1)
    v, s = res.record["v"][0][:, 0], res.record["spikes"][0][:, 0]
    fig = plot.plot_membrane_traces(v, trained.config.neuron.v_threshold, s, neurons=[0, 3, 7])
    ax = fig.axes[0]
    lines = ax.get_lines()
    traces = [ln for ln in lines if ln.get_linestyle() == "-"]
    markers = [ln for ln in lines if ln.get_marker() == "v"]
    assert len(traces) == 3
    np.testing.assert_allclose(traces[1].get_ydata(), v[:, 3])
    assert sum(len(m.get_xdata()) for m in markers) == int(s[:, [0, 3, 7]].sum())
    thr = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert np.all(np.asarray(thr[0].get_ydata()) == trained.config.neuron.v_threshold)
    plt.close(fig)


def test_goodness_histograms_count_every_sample(trained, digits):
    X, y = digits.X_test[:50], digits.y_test[:50]
    gp, gn = trained.goodness(X, y), trained.goodness(X, (y + 3) % 10)
    fig = plot.plot_goodness_histograms(gp, gn, threshold=trained.config.goodness_threshold)
    assert len(fig.axes) == gp.shape[1]
    for ax in fig.axes:
        assert len(ax.containers) == 2
        for cont in ax.containers:
            assert sum(p.get_height() for p in cont.patches) == len(X)
    plt.close(fig)


def test_label_goodness_bars(trained, digits):
    g = trained.goodness_per_label(digits.X_test[:1])[0]
    fig = plot.plot_label_goodness(g, true_label=int(digits.y_test[0]))
    bars = [p for c in fig.axes[0].containers for p in c.patches]
    assert len(bars) == g.size
    tops = np.zeros(g.shape[0])
    for c in fig.axes[0].containers:
        for i, p in enumerate(c.patches):
            tops[i] = max(tops[i], p.get_y() + p.get_height())
    np.testing.assert_allclose(tops, g.sum(axis=1))
    assert f"predicted {int(np.argmax(g.sum(axis=1)))}" in fig.axes[0].get_title()
    plt.close(fig)


def test_receptive_fields_one_image_per_neuron_without_label_channels(trained):
    W = trained.weights_[0]
    assert W.shape[1] == 64 + 10 * trained.config.label_repeat
    fig = plot.plot_receptive_fields(W, (8, 8), n=7)
    imgs = [im for ax in fig.axes for im in ax.get_images()]
    assert len(imgs) == 7
    np.testing.assert_allclose(imgs[2].get_array(), W[2, :64].reshape(8, 8))
    plt.close(fig)


def test_confusion_matrix_sums_to_samples():
    y = np.array([0, 1, 2, 2, 1, 0, 0])
    p = np.array([0, 2, 2, 2, 1, 1, 0])
    cm = plot.confusion_matrix(y, p, 3)
    assert cm.sum() == len(y) and np.trace(cm) == 5 and cm[1, 2] == 1 and cm[0, 1] == 1
    fig = plot.plot_confusion_matrix(y, p, 3)
    img = [c for c in fig.axes[0].get_children() if isinstance(c, AxesImage)][0]
    np.testing.assert_array_equal(img.get_array(), cm)
    assert "accuracy 0.714" in fig.axes[0].get_title()
    plt.close(fig)


def test_cli_plot_writes_figures(tmp_path, trained):
    from spikeff.cli import main
    run = tmp_path / "run"
    run.mkdir()
    trained.save(run / "model.npz")
    (run / "metrics.json").write_text(json.dumps({"dataset": "digits", "epochs": trained.history_,
                                                   "data_args": {"dataset": "digits", "n_test": 40}}))
    assert main(["plot", str(run), "--n-samples", "30"]) == 0
    names = sorted(p.name for p in (run / "figures").iterdir())
    assert names == sorted(["training_curves.png", "raster_layer1.png", "raster_layer2.png",
                            "membrane_layer1.png", "membrane_layer2.png", "goodness_histograms.png",
                            "label_goodness.png", "receptive_fields.png", "confusion_goodness.png",
                            "confusion_readout.png"])
    assert all((run / "figures" / n).stat().st_size > 1000 for n in names)


def test_cli_plot_missing_run_is_an_error(tmp_path, capsys):
    from spikeff.cli import main
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "spikeff plot: error" in capsys.readouterr().err
