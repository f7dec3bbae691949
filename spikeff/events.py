"""Event data and spike trains as input: neuromorphic data sets (via ``tonic``), spike tensors and
event files.

Three kinds of input, besides intensity images:

* :class:`SpikeTrains`: spikes already on the network's time grid, at most one spike per channel
  and step, for a set of samples; stored sparse (a ``scipy.sparse`` CSR matrix, one row per sample,
  column ``step * n_channels + channel``). ``FFNetwork.fit/predict/score`` also take a dense spike
  tensor of shape (T, B, M) (0/1) and turn it into one (:meth:`SpikeTrains.from_dense`).
* :class:`EventList`: event streams in ``tonic``'s format, one structured array per sample with a
  time field ``t`` (microseconds) and ``x`` and optionally ``y`` and ``p`` (N-MNIST, DVS Gesture:
  x, y, p, t; SHD and other audio-like data: t, x = channel, p), with tonic's ``sensor_size``
  (W, H, P). The network bins them into its time steps (``n_steps`` bins of ``dt``, from each
  sample's first event) with ``tonic.transforms.ToFrame`` (:meth:`EventList.to_spikes`); several
  events of one channel in one bin count as one spike. A plain list of such arrays works too
  (the sensor size is then taken from the largest coordinates).
* :class:`EventSource`: the ``SpikeSource`` of event input: the batch's binned spikes with the FF
  label overlay appended: ``n_classes * label_repeat`` extra input neurons, those of the sample's
  label (or all of them, at ``1 / n_classes``, for the neutral label) firing as Poisson trains at
  ``label_intensity * max_rate`` during the whole window (the same label channels as for images).

Data sets (``tonic`` readers over a local directory, never a download; see
:func:`load_event_dataset`): ``nmnist``, ``dvs_gesture``, ``shd``, and ``events_npz`` (a directory
with ``train.npz`` and ``test.npz`` written by :func:`save_events_npz`).

``tonic`` is optional (``pip install -e .[events]``): everything but :class:`EventList` binning and
the data set readers works without it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .data import EVENT_DATASETS, DataError, Dataset
from .encoding import SpikeSource, overlay_labels


def _tonic():
    try:
        import tonic
        import tonic.transforms  # noqa: F401
    except ImportError as e:
        raise ImportError(f"event data needs the optional package tonic ({e}); install it with "
                          "pip install -e .[events]") from None
    return tonic


# -- binned spikes ------------------------------------------------------------------------------
class SpikeTrains:
    """Binary spike trains of ``n_samples`` samples on a grid of ``n_steps`` steps and ``n_channels``
    channels. Indexable like the rows of an array (``st[idx]``, ``len(st)``, ``np.repeat(st, k,
    axis=0)``); ``shape`` is ``(n_samples, n_channels)``, as for an intensity matrix."""

    def __init__(self, matrix, n_steps: int, n_channels: int):
        m = sp.csr_matrix(matrix, dtype=np.float32)
        if m.shape[1] != n_steps * n_channels:
            raise DataError(f"spike trains: matrix has {m.shape[1]} columns, expected n_steps * n_channels "
                            f"= {n_steps} * {n_channels}")
        m.sum_duplicates()
        if m.nnz and (m.data.min() < 0 or not np.all(np.isfinite(m.data))):
            raise DataError("spike trains: spike counts must be finite and >= 0")
        m.data = (m.data > 0).astype(np.float32)       # at most one spike per channel and step
        m.eliminate_zeros()
        self.matrix, self.n_steps, self.n_channels = m, int(n_steps), int(n_channels)

    @classmethod
    def from_dense(cls, spikes) -> "SpikeTrains":
        """From a spike tensor of shape (T, B, M) (time, samples, channels) of 0/1 values."""
        try:
            a = np.asarray(spikes)
        except (TypeError, ValueError) as e:
            raise DataError(f"spikes: must be a numeric array (T, B, M) ({e})") from None
        if a.ndim != 3 or 0 in a.shape:
            raise DataError(f"spikes: must be a non-empty 3-D array (T, B, M) = (time steps, samples, "
                            f"channels), got shape {a.shape}")
        if a.dtype.kind not in "biuf":
            raise DataError(f"spikes: must be 0/1 numbers or booleans, got dtype {a.dtype}")
        if a.dtype != bool and not np.all((a == 0) | (a == 1)):
            raise DataError("spikes: values must be 0 or 1 (one spike per channel and step at most); a 3-D X is "
                            "read as spikes (T, B, M): images must be 2-D (n_samples, n_features)")
        T, B, M = a.shape
        return cls(sp.csr_matrix(a.transpose(1, 0, 2).reshape(B, T * M)), T, M)

    @classmethod
    def from_indices(cls, sample, step, channel, n_samples: int, n_steps: int, n_channels: int) -> "SpikeTrains":
        """From one (sample, step, channel) triple per spike (duplicates count once)."""
        sample, step, channel = (np.asarray(a, dtype=np.int64).ravel() for a in (sample, step, channel))
        for name, a, hi in (("sample", sample, n_samples), ("step", step, n_steps), ("channel", channel, n_channels)):
            if a.size and (a.min() < 0 or a.max() >= hi):
                raise DataError(f"spike trains: {name} indices must lie in 0..{hi - 1}")
        m = sp.coo_matrix((np.ones(len(sample), np.float32), (sample, step * n_channels + channel)),
                          shape=(n_samples, n_steps * n_channels))
        return cls(m, n_steps, n_channels)

    # -- array-like behaviour -------------------------------------------------------------------
    @property
    def shape(self):
        return (self.matrix.shape[0], self.n_channels)

    ndim = 2

    def __len__(self):
        return self.matrix.shape[0]

    def __getitem__(self, idx) -> "SpikeTrains":
        if isinstance(idx, (int, np.integer)):
            idx = [idx]
        return SpikeTrains(self.matrix[idx], self.n_steps, self.n_channels)

    def repeat(self, repeats, axis=0) -> "SpikeTrains":
        """Each sample ``repeats`` times in a row (what ``np.repeat(st, repeats, axis=0)`` calls)."""
        if axis != 0:
            raise ValueError("SpikeTrains.repeat: only axis=0 (samples) is supported")
        return self[np.repeat(np.arange(len(self)), repeats)]

    # -- contents --------------------------------------------------------------------------------
    def steps(self, t0: int, t1: int, dtype=np.float32) -> np.ndarray:
        """Dense spikes of steps t0..t1-1, shape (t1 - t0, n_samples, n_channels)."""
        M = self.n_channels
        block = self.matrix[:, t0 * M:t1 * M].toarray()
        return block.reshape(len(self), t1 - t0, M).transpose(1, 0, 2).astype(dtype, copy=False)

    def to_dense(self, dtype=np.float32) -> np.ndarray:
        """All spikes, shape (n_steps, n_samples, n_channels)."""
        return self.steps(0, self.n_steps, dtype)

    def counts(self) -> np.ndarray:
        """Spikes per sample and channel over the window, shape (n_samples, n_channels)."""
        coo = self.matrix.tocoo()
        out = np.zeros(self.shape, dtype=np.int64)
        np.add.at(out, (coo.row, coo.col % self.n_channels), 1)
        return out

    def __repr__(self):
        return (f"SpikeTrains({len(self)} samples, {self.n_steps} steps, {self.n_channels} channels, "
                f"{self.matrix.nnz} spikes)")


# -- raw events ---------------------------------------------------------------------------------
def _infer_sensor_size(events) -> tuple:
    size = [1, 1, 1]
    for ev in events:
        for k, f in enumerate(("x", "y", "p")):
            if f in ev.dtype.names and len(ev):
                size[k] = max(size[k], int(ev[f].max()) + 1)
    return tuple(size)


def _check_events(ev, i):
    names = getattr(getattr(ev, "dtype", None), "names", None)
    if not names or "t" not in names or "x" not in names:
        raise DataError(f"events[{i}]: must be a structured array with fields t (microseconds) and x "
                        f"(and optionally y, p), as tonic reads them; got {getattr(ev, 'dtype', type(ev))}")
    return ev


class EventList:
    """Event streams of a set of samples in tonic's format, read on demand.

    ``events``: a sequence of structured arrays (fields ``t`` in microseconds, ``x``, optionally
    ``y``, ``p``), or a callable ``i -> array`` with ``n_samples``; ``sensor_size``: tonic's
    (W, H, P) (default: the largest coordinates + 1); ``transform``: a tonic transform applied to
    every sample when it is read (e.g. ``tonic.transforms.Downsample``), with ``sensor_size`` the
    size *after* it. ``shape`` is ``(n_samples, W * H * P)``."""

    def __init__(self, events, sensor_size=None, transform=None, n_samples: int | None = None, _index=None):
        if callable(events):
            if n_samples is None or sensor_size is None:
                raise ValueError("EventList: a reader function needs n_samples and sensor_size")
            self._read, n = events, int(n_samples)
        else:
            events = [_check_events(ev, i) for i, ev in enumerate(events)]
            if sensor_size is None:
                sensor_size = _infer_sensor_size(events)
            self._read, n = events.__getitem__, len(events)
        self.sensor_size = tuple(int(s) for s in sensor_size)
        if len(self.sensor_size) != 3 or min(self.sensor_size) < 1:
            raise DataError(f"sensor_size: must be 3 positive integers (W, H, P), got {sensor_size!r}")
        self.transform = transform
        self._index = np.arange(n) if _index is None else _index
        self._cache = {}

    @property
    def shape(self):
        return (len(self._index), int(np.prod(self.sensor_size)))

    ndim = 2

    def __len__(self):
        return len(self._index)

    def __getitem__(self, idx) -> "EventList":
        if isinstance(idx, (int, np.integer)):
            idx = [idx]
        out = EventList.__new__(EventList)
        out._read, out.sensor_size, out.transform = self._read, self.sensor_size, self.transform
        out._index, out._cache = self._index[idx], {}
        return out

    def events(self, i: int):
        """The events of sample ``i`` (after ``transform``)."""
        ev = _check_events(self._read(int(self._index[i])), i)
        return self.transform(ev) if self.transform is not None else ev

    def to_spikes(self, n_steps: int, bin_us: float) -> SpikeTrains:
        """Binned with ``tonic.transforms.ToFrame``: ``n_steps`` bins of ``bin_us`` microseconds from
        each sample's first event; later events are dropped, several events of a channel in one bin
        give one spike. Cached per (n_steps, bin_us)."""
        key = (int(n_steps), float(bin_us))
        if key not in self._cache:
            tonic = _tonic()
            rows, cols = [], []
            for i in range(len(self)):
                ev = self.events(i)
                if len(ev) == 0:
                    continue
                t0 = float(ev["t"].min())
                frames = tonic.transforms.ToFrame(sensor_size=self.sensor_size, time_window=bin_us,
                                                  start_time=t0, end_time=t0 + n_steps * bin_us)(ev)
                frames = np.asarray(frames).reshape(len(frames), -1)[:n_steps]
                nz = np.flatnonzero(frames)
                rows.append(np.full(len(nz), i))
                cols.append(nz)
            r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
            c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
            M = self.shape[1]
            self._cache[key] = SpikeTrains.from_indices(r, c // M, c % M, len(self), n_steps, M)
        return self._cache[key]

    def __repr__(self):
        return f"EventList({len(self)} samples, sensor_size {self.sensor_size})"


def _is_event_list(X) -> bool:
    return (isinstance(X, (list, tuple)) and len(X) > 0
            and all(getattr(getattr(ev, "dtype", None), "names", None) for ev in X))


def as_network_input(X, config):
    """What :class:`~spikeff.network.FFNetwork` trains on: an :class:`EventList` or a list of tonic
    event arrays binned into the config's ``n_steps`` steps of ``dt``; a (T, B, M) spike tensor as
    :class:`SpikeTrains`; anything else unchanged (intensity images)."""
    if _is_event_list(X):
        X = EventList(X)
    if isinstance(X, EventList):
        X = X.to_spikes(config.n_steps, config.neuron.dt * 1e6)
    elif isinstance(X, np.ndarray) and X.ndim == 3:
        X = SpikeTrains.from_dense(X)
    if isinstance(X, SpikeTrains):
        if X.n_steps != config.n_steps:
            raise DataError(f"spikes: have {X.n_steps} time steps, but the network's config has n_steps = "
                            f"{config.n_steps}; make them equal (config.replace(n_steps={X.n_steps})). X is read "
                            f"as spikes (T, B, M) = ({X.n_steps}, {len(X)}, {X.n_channels}) (images must be 2-D: "
                            "(n_samples, n_features))")
        if config.negatives == "hybrid":
            raise DataError("negatives = 'hybrid' mixes images; it does not apply to spike/event input "
                            "(use random, hard or readout_hard negatives)")
    return X


# -- the source ---------------------------------------------------------------------------------
class EventSource:
    """``SpikeSource`` for event input: the spikes of a batch (:class:`SpikeTrains`) with the FF
    label channels appended (rate-coded at ``label_intensity * max_rate``, Bernoulli per step with
    probability ``rate * dt``, seeded; ``rows_per_noise`` as in :class:`SpikeSource`)."""

    def __init__(self, spikes: SpikeTrains, labels, n_classes: int, label_repeat: int, label_intensity: float,
                 max_rate: float, dt: float, seed, rows_per_noise: int = 1, dtype=np.float32):
        if not isinstance(spikes, SpikeTrains):
            raise TypeError(f"EventSource needs SpikeTrains, got {type(spikes).__name__}")
        self.spikes, self.n_steps, self.dtype = spikes, spikes.n_steps, dtype
        lab = overlay_labels(np.zeros((len(spikes), 0)), labels, n_classes, label_repeat, label_intensity)
        self.labels = SpikeSource(lab, "rate", spikes.n_steps, dt, max_rate, seed,
                                  rows_per_noise=rows_per_noise, dtype=dtype)

    @property
    def shape(self):
        return (len(self.spikes), self.spikes.n_channels + self.labels.shape[1])

    def chunks(self, chunk_steps: int):
        """Arrays of shape (k, batch, channels + label channels) covering the window in order."""
        for t0, lab in zip(range(0, self.n_steps, chunk_steps), self.labels.chunks(chunk_steps)):
            ev = self.spikes.steps(t0, t0 + len(lab), self.dtype)
            yield np.concatenate([ev, lab], axis=2)

    def all_steps(self) -> np.ndarray:
        return np.concatenate(list(self.chunks(self.n_steps)), axis=0)


def event_source(X: SpikeTrains, labels, n_classes: int, config, seed, rows_per_noise: int = 1, dtype=np.float32):
    """The :class:`EventSource` of a batch with the config's label overlay and time step."""
    return EventSource(X, labels, n_classes, config.label_repeat, config.label_intensity, config.max_rate,
                       config.neuron.dt, seed, rows_per_noise=rows_per_noise, dtype=dtype)


# -- files and data sets ------------------------------------------------------------------------
def save_events_npz(path, events, labels, sensor_size=None):
    """Write event streams (a list of tonic structured arrays, or an :class:`EventList`) and their
    labels to one ``.npz``: flat arrays ``sample``, ``t`` (microseconds), ``x``, ``y``, ``p`` (one
    entry per event), ``labels`` (one per sample) and ``sensor_size`` (W, H, P)."""
    el = events if isinstance(events, EventList) else EventList(events, sensor_size)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(el),):
        raise DataError(f"labels: need one per sample ({len(el)}), got shape {labels.shape}")
    cols = {k: [] for k in ("sample", "t", "x", "y", "p")}
    for i in range(len(el)):
        ev = el.events(i)
        cols["sample"].append(np.full(len(ev), i, np.int64))
        for f in ("t", "x", "y", "p"):
            cols[f].append(np.asarray(ev[f], np.float64 if f == "t" else np.int64) if f in ev.dtype.names
                           else np.zeros(len(ev), np.int64))
    arrays = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    np.savez_compressed(path, labels=labels, sensor_size=np.asarray(el.sensor_size, np.int64), **arrays)


EVENT_NPZ_KEYS = ("sample", "t", "x", "y", "p", "labels", "sensor_size")


def read_events_npz(path):
    """``(EventList, labels)`` from a file written by :func:`save_events_npz`."""
    path = Path(path)
    try:
        with np.load(path) as f:
            missing = [k for k in EVENT_NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(f"{path}: not an event file: missing arrays {missing} (expected "
                                f"{list(EVENT_NPZ_KEYS)}, as written by spikeff.events.save_events_npz)")
            d = {k: f[k] for k in EVENT_NPZ_KEYS}
    except (ValueError, OSError) as e:
        if isinstance(e, (DataError, FileNotFoundError)):
            raise
        raise DataError(f"{path}: cannot read as .npz ({e})") from None
    n = len(d["labels"])
    if d["sample"].size and (d["sample"].min() < 0 or d["sample"].max() >= n):
        raise DataError(f"{path}: sample indices must lie in 0..{n - 1} (one label per sample)")
    dtype = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.float64), ("p", np.int64)])
    order = np.argsort(d["sample"], kind="stable")
    bounds = np.searchsorted(d["sample"][order], np.arange(n + 1))
    events = []
    for i in range(n):
        sel = order[bounds[i]:bounds[i + 1]]
        ev = np.zeros(len(sel), dtype)
        for k in ("x", "y", "t", "p"):
            ev[k] = d[k][sel]
        events.append(ev)
    return EventList(events, tuple(int(s) for s in d["sensor_size"])), d["labels"].astype(np.int64)


def _offline(cls, expected: str):
    """A subclass of a tonic data set class that reads an extracted copy and never downloads."""
    def download(self):
        raise FileNotFoundError(f"{type(self).__name__}: data not found in {self.location_on_system}; "
                                f"expected {expected}. spikeff does not download: put the extracted "
                                "files there and pass the parent directory with --data-path")

    def check_exists(self):
        folder = Path(self.location_on_system, getattr(self, "folder_name", "") or "")
        data_file = getattr(self, "data_filename", None)
        if data_file:
            return Path(self.location_on_system, data_file).is_file()
        return folder.is_dir() and any(folder.rglob("*.*"))

    return type(cls.__name__, (cls,), {"download": download, "_check_exists": check_exists})


# name -> (tonic class, expected files, number of classes, default spatial factor)
_READERS = {
    "nmnist": ("NMNIST", "PATH/NMNIST/Train/<digit>/*.bin and PATH/NMNIST/Test/<digit>/*.bin (the "
               "extracted N-MNIST train.zip and test.zip)", 10, 1.0),
    "dvs_gesture": ("DVSGesture", "PATH/DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy and "
                    "PATH/DVSGesture/ibmGestureTest/... (tonic's preprocessed DVS Gesture archives, "
                    "extracted)", 11, 0.25),
    "shd": ("SHD", "PATH/SHD/shd_train.h5 and PATH/SHD/shd_test.h5 (the Spiking Heidelberg Digits, "
            "unzipped)", 20, 1.0),
}


def load_event_dataset(name: str, path=None, spatial_factor: float | None = None) -> Dataset:
    """An event data set as a :class:`~spikeff.data.Dataset` whose ``X_train``/``X_test`` are
    :class:`EventList` (read on demand by tonic's readers from ``path``; nothing is downloaded).

    ``spatial_factor``: ``tonic.transforms.Downsample`` of x (and y) (default: 1, DVS Gesture 0.25,
    128 x 128 -> 32 x 32). ``events_npz``: ``path`` is a directory with ``train.npz`` and ``test.npz``
    (:func:`save_events_npz`)."""
    if name == "events_npz":
        if path is None:
            raise DataError("events_npz: pass the directory holding train.npz and test.npz with --data-path")
        files = [Path(path) / f"{s}.npz" for s in ("train", "test")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"events_npz: missing {', '.join(missing)}; expected train.npz and test.npz "
                                    f"(arrays {', '.join(EVENT_NPZ_KEYS)}, see spikeff.events.save_events_npz)")
        (Xtr, ytr), (Xte, yte) = (read_events_npz(f) for f in files)
        if Xtr.sensor_size != Xte.sensor_size:
            raise DataError(f"events_npz: train and test sensor sizes differ ({Xtr.sensor_size} vs {Xte.sensor_size})")
        W, H, P = Xtr.sensor_size
        return Dataset("events_npz", Xtr, ytr, Xte, yte, int(max(ytr.max(), yte.max())) + 1, (P, H, W))
    if name not in _READERS:
        raise DataError(f"dataset: {name!r} is not an event data set; choose one of {list(EVENT_DATASETS)}")
    cls_name, expected, n_classes, factor = _READERS[name]
    if path is None:
        raise FileNotFoundError(f"{name}: no --data-path given; expected {expected}")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{name}: {path} is not a directory; expected {expected}")
    tonic = _tonic()
    cls = _offline(getattr(tonic.datasets, cls_name), expected.replace("PATH", str(path)))
    factor = factor if spatial_factor is None else float(spatial_factor)
    transform, size = None, tuple(cls.sensor_size)
    if factor != 1.0:
        transform = tonic.transforms.Downsample(spatial_factor=factor)
        size = (max(1, int(size[0] * factor)), max(1, int(size[1] * factor)) if size[1] > 1 else 1, size[2])
    splits = []
    for train in (True, False):
        ds = cls(str(path), train=train)
        targets = np.asarray(ds.targets if hasattr(ds, "targets") and len(ds.targets) else _shd_labels(ds),
                             dtype=np.int64)
        splits.append((EventList(lambda i, ds=ds: ds[i][0], size, transform, n_samples=len(targets)), targets))
    (Xtr, ytr), (Xte, yte) = splits
    W, H, P = size
    return Dataset(name, Xtr, ytr, Xte, yte, n_classes, (P, H, W))


def _shd_labels(ds):
    import h5py
    with h5py.File(Path(ds.location_on_system, ds.data_filename), "r") as f:
        return f["labels"][:]


def synthetic_events(n_samples: int, n_classes: int = 4, sensor_size=(8, 8, 2), duration_us: float = 50_000,
                     rate_hz: float = 100.0, background_hz: float = 5.0, seed: int = 0, audio: bool = False):
    """A separable synthetic event task in tonic's format, for tests and examples: ``(events, labels)``.

    Every sample is Poisson noise at ``background_hz`` on every channel (x, y, p), plus
    ``rate_hz`` on the pixels of its class: class k lights up the rows ``y`` with ``y % n_classes
    == k`` (``audio``: the channels ``x % n_classes == k``, fields t, x, p as SHD). Events are sorted by
    time; ``t`` is in microseconds."""
    rng = np.random.default_rng(seed)
    W, H, P = sensor_size
    labels = rng.integers(0, n_classes, n_samples)
    dtype = (np.dtype([("t", np.float64), ("x", np.int64), ("p", np.int64)]) if audio else
             np.dtype([("x", np.int64), ("y", np.int64), ("t", np.float64), ("p", np.int64)]))
    x, y, p = np.meshgrid(np.arange(W), np.arange(H), np.arange(P), indexing="ij")
    x, y, p = x.ravel(), y.ravel(), p.ravel()
    events = []
    for k in labels:
        lit = (x % n_classes == k) if audio else (y % n_classes == k)
        rate = np.where(lit, rate_hz, background_hz)
        n = rng.poisson(rate * duration_us * 1e-6)
        ch = np.repeat(np.arange(len(rate)), n)
        ev = np.zeros(len(ch), dtype)
        ev["t"] = rng.uniform(0, duration_us, len(ch))
        ev["x"], ev["p"] = x[ch], p[ch]
        if not audio:
            ev["y"] = y[ch]
        events.append(np.sort(ev, order="t"))
    return events, labels
