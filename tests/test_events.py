"""Event data and spike trains as input (spikeff.events): binned spikes, the event source with the
label overlay, training on spike tensors and event lists, the tonic readers on synthetic files."""
import importlib.util

import numpy as np
import pytest

from spikeff import FFConfig, FFNetwork
from spikeff.data import DataError, load_dataset
from spikeff.encoding import NEUTRAL
from spikeff.events import (EventList, EventSource, SpikeTrains, as_network_input, load_event_dataset,
                            read_events_npz, save_events_npz, synthetic_events)

try:
    HAS_TONIC = importlib.util.find_spec("tonic") is not None
except ValueError:               # tonic blocked in sys.modules (how the no-tonic run is checked)
    HAS_TONIC = False
needs_tonic = pytest.mark.skipif(not HAS_TONIC, reason="tonic is not installed (pip install -e .[events])")


def spike_task(n, n_classes=3, T=20, M=30, p_on=0.3, p_off=0.02, seed=0):
    """A separable spike-tensor task without tonic: class k fires channels m % n_classes == k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    lit = (np.arange(M)[None, :] % n_classes) == y[:, None]          # (n, M)
    p = np.where(lit, p_on, p_off)
    return (rng.random((T, n, M)) < p[None]).astype(np.float32), y


def event_config(**kw):
    return FFConfig(**{"hidden_sizes": (60, 60), "n_steps": 20, "epochs": 3, "batch_size": 32,
                       "label_repeat": 3, "seed": 0, "readout": True, **kw})


# -- SpikeTrains and EventSource (no tonic) ------------------------------------------------------
def test_spike_trains_round_trip_indexing_and_repeat():
    x, _ = spike_task(7, T=9, M=5)
    st = SpikeTrains.from_dense(x)
    assert st.shape == (7, 5) and st.n_steps == 9 and len(st) == 7
    np.testing.assert_array_equal(st.to_dense(), x)
    np.testing.assert_array_equal(st[[4, 1]].to_dense(), x[:, [4, 1]])
    np.testing.assert_array_equal(st[2:5].steps(3, 7), x[3:7, 2:5])
    rep = np.repeat(st[:2], 3, axis=0)                     # what label_sources does to a batch
    np.testing.assert_array_equal(rep.to_dense(), np.repeat(x[:, :2], 3, axis=1))
    np.testing.assert_array_equal(st.counts(), x.sum(axis=0))


def test_spike_trains_duplicates_count_once_and_bad_input():
    st = SpikeTrains.from_indices([0, 0, 1], [2, 2, 0], [1, 1, 3], n_samples=2, n_steps=4, n_channels=4)
    d = st.to_dense()
    assert d.sum() == 2 and d[2, 0, 1] == 1 and d[0, 1, 3] == 1
    with pytest.raises(DataError, match="0 or 1"):
        SpikeTrains.from_dense(np.full((2, 2, 2), 2.0))
    with pytest.raises(DataError, match="3-D"):
        SpikeTrains.from_dense(np.zeros((2, 2)))
    with pytest.raises(DataError, match="step indices"):
        SpikeTrains.from_indices([0], [5], [0], 1, 4, 4)


def test_event_source_label_overlay_and_chunks():
    x, _ = spike_task(4, T=400, M=6, seed=1)
    st = SpikeTrains.from_dense(x)
    labels = np.array([0, 2, NEUTRAL, 1])
    src = EventSource(st, labels, n_classes=3, label_repeat=2, label_intensity=1.0, max_rate=200.0,
                      dt=1e-3, seed=5, dtype=np.float32)
    assert src.shape == (4, 6 + 3 * 2) and src.n_steps == 400
    full = src.all_steps()
    assert full.shape == (400, 4, 12)
    np.testing.assert_array_equal(full[:, :, :6], x)                  # the events pass unchanged
    rate = full[:, :, 6:].mean(axis=0).reshape(4, 3, 2).mean(axis=2)  # label channels: P(spike) per step
    expect = np.array([[0.2, 0, 0], [0, 0, 0.2], [0.2 / 3] * 3, [0, 0.2, 0]])
    np.testing.assert_allclose(rate, expect, atol=0.04)
    assert rate[0, 1] == 0 and rate[1, 0] == 0                        # wrong labels never fire
    for k in (7, 64):                                                # chunking does not change spikes
        np.testing.assert_array_equal(np.concatenate(list(src.chunks(k))), full)


def test_fit_predict_on_spike_tensor_learns_separable_task():
    x, y = spike_task(360, seed=2)
    net = FFNetwork(event_config()).fit(x[:, :240], y[:240])
    assert net.n_features_in_ == 30
    pred = net.predict(x[:, 240:])
    assert pred.shape == (120,)
    assert np.mean(pred == y[240:]) >= 0.9
    assert net.score(SpikeTrains.from_dense(x[:, 240:]), y[240:], method="readout") >= 0.9


def test_spike_input_errors():
    x, y = spike_task(40, T=20)
    with pytest.raises(DataError, match="n_steps = 12"):
        FFNetwork(event_config(n_steps=12)).fit(x, y)
    with pytest.raises(DataError, match="hybrid"):
        FFNetwork(event_config(negatives="hybrid", predict_method="readout")).fit(x, y)
    net = FFNetwork(event_config(epochs=1)).fit(x, y)
    with pytest.raises(DataError, match="29 spike channels"):
        net.predict(x[:, :, :29])


# -- tonic format ---------------------------------------------------------------------------------
@needs_tonic
def test_event_list_binning_matches_tonic_to_frame():
    dt = np.dtype([("x", int), ("y", int), ("t", float), ("p", int)])
    ev = np.array([(0, 0, 1000.0, 0), (1, 2, 1500.0, 1), (1, 2, 1900.0, 1), (2, 1, 3999.0, 0),
                   (2, 1, 9000.0, 0)], dtype=dt)
    st = EventList([ev], sensor_size=(3, 3, 2)).to_spikes(n_steps=3, bin_us=1000.0)
    d = st.to_dense()[:, 0].reshape(3, 2, 3, 3)          # (step, p, y, x): tonic's frame layout
    assert d.sum() == 3                                   # the two events in one bin count once; 9000 us is past the window
    assert d[0, 0, 0, 0] == 1 and d[0, 1, 2, 1] == 1 and d[2, 0, 1, 2] == 1


@needs_tonic
def test_event_list_trains_to_90_percent():
    ev, y = synthetic_events(300, n_classes=4, sensor_size=(6, 6, 2), duration_us=20_000, rate_hz=200, seed=0)
    el = EventList(ev, sensor_size=(6, 6, 2))
    net = FFNetwork(event_config()).fit(el[:200], y[:200])
    assert net.score(el[200:], y[200:]) >= 0.9
    assert net.score(ev[200:], y[200:]) >= 0.9            # a plain list of tonic arrays works too


@needs_tonic
def test_audio_like_events_bin_to_channels():
    ev, y = synthetic_events(6, n_classes=3, sensor_size=(12, 1, 1), rate_hz=400, background_hz=0, seed=1, audio=True)
    st = as_network_input(EventList(ev, (12, 1, 1)), event_config(n_steps=50).replace(neuron=FFConfig().neuron))
    assert st.shape == (6, 12) and st.n_steps == 50
    counts = st.counts()
    lit = np.arange(12)[None] % 3 == y[:, None]
    assert counts[~lit].sum() == 0 and np.all(counts[lit] > 0)


@needs_tonic
def test_events_npz_round_trip_and_dataset(tmp_path):
    ev, y = synthetic_events(10, n_classes=2, sensor_size=(4, 4, 2), seed=3)
    for split in ("train", "test"):
        save_events_npz(tmp_path / f"{split}.npz", ev, y, (4, 4, 2))
    el, labels = read_events_npz(tmp_path / "train.npz")
    np.testing.assert_array_equal(labels, y)
    for a, b in zip(ev, (el.events(i) for i in range(len(el)))):
        for f in ("x", "y", "t", "p"):
            np.testing.assert_array_equal(a[f], b[f])
    data = load_dataset("events_npz", tmp_path)
    assert data.X_train.shape == (10, 32) and data.n_classes == 2 and data.image_shape == (2, 4, 4)
    with pytest.raises(FileNotFoundError, match="train.npz"):
        load_dataset("events_npz", tmp_path / "nope")


def _write_nmnist_bin(path, ev):
    raw = np.zeros((len(ev), 5), np.uint8)
    t = ev["t"].astype(np.uint32)
    raw[:, 0], raw[:, 1] = ev["x"], ev["y"]
    raw[:, 2] = (ev["p"].astype(np.uint32) << 7) | ((t >> 16) & 127)
    raw[:, 3], raw[:, 4] = (t >> 8) & 255, t & 255
    path.write_bytes(raw.tobytes())


@needs_tonic
def test_nmnist_reader_on_synthetic_files(tmp_path):
    ev, y = synthetic_events(6, n_classes=2, sensor_size=(34, 34, 2), rate_hz=20, background_hz=1, seed=4)
    for split, part in (("Train", slice(0, 4)), ("Test", slice(4, 6))):
        for i, (e, k) in enumerate(zip(ev[part], y[part])):
            d = tmp_path / "NMNIST" / split / str(k)
            d.mkdir(parents=True, exist_ok=True)
            e = e.copy()
            e["t"] = np.floor(e["t"])
            _write_nmnist_bin(d / f"{i:05d}.bin", e)
    data = load_event_dataset("nmnist", tmp_path)
    assert data.X_train.shape == (4, 34 * 34 * 2) and len(data.X_test) == 2
    assert sorted(data.y_train.tolist()) == sorted(y[:4].tolist())
    st = data.X_train.to_spikes(10, 5000.0)
    assert st.shape == (4, 2312) and st.n_steps == 10 and st.matrix.nnz > 0
    with pytest.raises(FileNotFoundError, match="Train/<digit>"):
        load_event_dataset("nmnist", tmp_path / "empty_but_missing")


@needs_tonic
def test_dvs_gesture_reader_downsamples(tmp_path):
    ev, _ = synthetic_events(3, n_classes=3, sensor_size=(128, 128, 2), rate_hz=2, background_hz=0.2, seed=5)
    y = [0, 1, 2]                                         # tonic names each file by its label
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        d = tmp_path / "DVSGesture" / split / "user01_fluorescent"
        d.mkdir(parents=True)
        for e, k in zip(ev, y):
            arr = np.stack([e["x"], e["y"], e["p"], e["t"] / 1000.0], axis=1)   # ms, as tonic's files
            np.save(d / f"{k}.npy", arr)
    data = load_event_dataset("dvs_gesture", tmp_path)
    assert data.X_train.shape == (3, 32 * 32 * 2) and data.image_shape == (2, 32, 32) and data.n_classes == 11
    assert sorted(data.y_test.tolist()) == y
    ev0 = data.X_test.events(0)
    assert ev0["x"].max() < 32 and ev0["y"].max() < 32       # tonic's Downsample applied
    st = data.X_test.to_spikes(5, 10_000.0)
    assert st.shape == (3, 2048) and st.matrix.nnz > 0


@needs_tonic
def test_shd_reader_on_synthetic_h5(tmp_path):
    import h5py
    ev, y = synthetic_events(5, n_classes=4, sensor_size=(700, 1, 1), rate_hz=20, background_hz=0, seed=6, audio=True)
    (tmp_path / "SHD").mkdir()
    for name in ("shd_train.h5", "shd_test.h5"):
        with h5py.File(tmp_path / "SHD" / name, "w") as f:
            vf, vu = h5py.vlen_dtype(np.float32), h5py.vlen_dtype(np.uint16)
            f.create_dataset("spikes/times", data=np.array([e["t"] / 1e6 for e in ev], dtype=object), dtype=vf)
            f.create_dataset("spikes/units", data=np.array([e["x"] for e in ev], dtype=object), dtype=vu)
            f.create_dataset("labels", data=y.astype(np.uint8))
            f.create_dataset("extra/keys", data=np.array([b"a"] * 20))
            f.create_dataset("extra/speaker", data=np.zeros(5, np.uint8))
    data = load_event_dataset("shd", tmp_path)
    np.testing.assert_array_equal(data.y_train, y)
    assert data.X_train.shape == (5, 700) and data.n_classes == 20
    counts = data.X_train.to_spikes(50, 1000.0).counts()
    lit = np.arange(700)[None] % 4 == y[:, None]
    assert counts[~lit].sum() == 0 and counts[lit].sum() > 0


def test_missing_event_directory_names_expected_files(tmp_path):
    for name, what in (("nmnist", "NMNIST/Train"), ("dvs_gesture", "ibmGestureTrain"), ("shd", "shd_train.h5")):
        with pytest.raises(FileNotFoundError, match=what):
            load_event_dataset(name, tmp_path / "missing")


@needs_tonic
def test_cli_trains_and_evaluates_on_event_files(tmp_path, capsys):
    import json

    from spikeff import cli
    ev, y = synthetic_events(130, n_classes=3, sensor_size=(5, 5, 2), duration_us=15_000, rate_hz=300, seed=7)
    data_dir = tmp_path / "events"
    data_dir.mkdir()
    save_events_npz(data_dir / "train.npz", ev[:100], y[:100], (5, 5, 2))
    save_events_npz(data_dir / "test.npz", ev[100:], y[100:], (5, 5, 2))
    cfg = tmp_path / "ev.toml"
    cfg.write_text('[network]\nhidden_sizes = [30, 30]\nn_steps = 15\n[neuron]\ndt = "1 ms"\n'
                   '[encoding]\nlabel_repeat = 3\n[training]\nepochs = 2\nbatch_size = 32\nreadout = true\n')
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(cfg), "--dataset", "events_npz", "--data-path", str(data_dir),
                     "--out", str(out), "--no-progress", "--val-fraction", "0.2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "events_npz" and m["n_test"] == 30 and m["test_acc"] >= 0.9
    assert cli.main(["eval", str(out / "model.npz"), "--dataset", "events_npz", "--data-path", str(data_dir)]) == 0
    assert "events_npz test accuracy (goodness)" in capsys.readouterr().out
    assert cli.main(["plot", str(out), "--n-samples", "12"]) == 0
    for name in ("input_events.png", "class_event_rates.png", "receptive_fields.png", "confusion_goodness.png"):
        assert (out / "figures" / name).stat().st_size > 0
    assert cli.main(["train", "--dataset", "shd", "--data-path", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "shd_train.h5" in capsys.readouterr().err


@pytest.mark.brian2
def test_brian2_engine_feeds_event_input_like_vectorized():
    """Event input reaches Brian2 as a SpikeGeneratorGroup: the same spikes, potentials and FF
    gradients as the vectorized engine (numpy target)."""
    from spikeff.engines import brian2_engine, vectorized
    from spikeff.goodness import get_goodness
    from spikeff.neuron import DiscreteLIF
    old = brian2_engine.TARGET
    brian2_engine.TARGET = "numpy"
    try:
        x, _ = spike_task(4, T=15, M=12, p_on=0.5, p_off=0.1, seed=8)
        src = EventSource(SpikeTrains.from_dense(x), np.array([0, 1, 2, NEUTRAL]), 3, 2, 1.0, 300.0, 1e-3,
                          seed=1, dtype=np.float64)
        rng = np.random.default_rng(0)
        W = [rng.normal(0.1, 0.6, (16, 18)), rng.normal(0.1, 0.6, (8, 16))]
        b = [np.zeros(16), np.zeros(8)]
        lif, g = DiscreteLIF.from_config(FFConfig().neuron), get_goodness("energy_relu")
        mods = [rng.normal(size=4), rng.normal(size=4)]
        ref = vectorized.run_phase(W, b, lif, g, src, chunk_steps=6, modulators=mods, record=True)
        engine = brian2_engine.Brian2Engine()
        res = engine(W, b, lif, g, src, modulators=mods, record=True)
    finally:
        brian2_engine.TARGET = old
    [net] = engine.networks
    assert type(net.groups[0]).__name__ == "SpikeGeneratorGroup"
    np.testing.assert_array_equal(res.record["input"], ref.record["input"])
    for l in range(2):
        assert ref.record["spikes"][l].any()
        np.testing.assert_array_equal(res.record["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(res.goodness[l], ref.goodness[l], rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.grads[l][0], ref.grads[l][0], rtol=0, atol=1e-9)
        assert np.abs(ref.grads[l][0]).max() > 1e-4


def test_event_raster_and_class_rate_plots(tmp_path):
    import matplotlib.pyplot as plt

    from spikeff.plot import class_event_rates, plot_class_event_rates, plot_event_raster
    x, y = spike_task(12, n_classes=3, T=40, M=2 * 4 * 4, p_on=0.4, p_off=0.0, seed=9)
    st = SpikeTrains.from_dense(x)
    fig = plot_event_raster(st, dt=1e-3, sample=2, n_label_channels=8, path=tmp_path / "raster.png")
    pts = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert pts == int(x[:, 2].sum()) and (tmp_path / "raster.png").stat().st_size > 0
    plt.close(fig)
    rates = class_event_rates(st, y, 3, dt=1e-3)
    k = int(y[0])
    np.testing.assert_allclose(rates[k], x[:, y == k].mean(axis=(0, 1)) * 1000.0)
    lit = np.arange(32) % 3 == k
    assert rates[k][~lit].max() == 0 and rates[k][lit].min() > 0
    for shape in ((2, 4, 4), None):                      # a 2-D sensor (images), or channels (audio-like)
        fig = plot_class_event_rates(st, y, 3, dt=1e-3, sensor_shape=shape, path=tmp_path / "rates.png")
        assert (tmp_path / "rates.png").stat().st_size > 0
        plt.close(fig)
