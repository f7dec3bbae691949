"""Data sets and input checks.

* ``digits``: scikit-learn's 8x8 digits (ships with sklearn, the embedded default), intensities
  scaled to [0, 1], a fixed stratified 80/20 split.
* ``fashion_mnist`` / ``mnist``: IDX files (``*-images-idx3-ubyte[.gz]``). Looked up in the
  ``path`` argument, then ``$SPIKEFF_FASHION_MNIST`` / ``$SPIKEFF_MNIST``, then the Debian package
  location ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Input data that spikeff cannot use (wrong shape, NaN, labels out of range, bad files)."""


def check_X(X, n_features: int | None = None) -> np.ndarray:
    """``X`` as a float64 array (n_samples, n_features) of finite intensities in [0, 1], or DataError.

    Spike input (:class:`spikeff.events.SpikeTrains`, or a (T, B, M) spike tensor, which becomes
    one) is checked for its number of channels and returned as SpikeTrains."""
    if getattr(X, "ndim", None) == 3 or hasattr(X, "n_steps"):
        from .events import SpikeTrains
        X = X if isinstance(X, SpikeTrains) else SpikeTrains.from_dense(X)
        if len(X) == 0:
            raise DataError("X: is empty (0 samples)")
        if n_features is not None and X.n_channels != n_features:
            raise DataError(f"X: has {X.n_channels} spike channels, but the network was built for {n_features}")
        return X
    try:
        raw = np.asarray(X)
        if raw.dtype.kind not in "biufO":
            raise TypeError(f"got dtype {raw.dtype}")
        X = raw.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"X: must be a real numeric array of shape (n_samples, n_features) ({e})") from None
    if X.ndim != 2:
        raise DataError(f"X: must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError("X: is empty (0 samples)")
    if X.shape[1] == 0:
        raise DataError("X: has 0 features")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"X: has {X.shape[1]} features, but the network was built for {n_features}")
    if not np.all(np.isfinite(X)):
        raise DataError("X: contains NaN or infinite values")
    if X.min() < 0 or X.max() > 1:
        raise DataError(f"X: intensities must lie in [0, 1] (got min {X.min():g}, max {X.max():g}); "
                        "scale the data first, e.g. X / X.max()")
    return X


def mirror_images(X, input_shape) -> np.ndarray:
    """The images of ``X`` (n_samples, C*H*W intensities) mirrored left to right, for an
    ``input_shape`` (C, H, W); the same shape as ``X``."""
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise DataError("mirror images need image intensities of shape (n_samples, n_features), "
                        f"not {type(X).__name__} (spike input has no left and right)")
    C, H, W = (int(v) for v in input_shape)
    if X.shape[1] != C * H * W:
        raise DataError(f"X: has {X.shape[1]} features, input_shape {[C, H, W]} has {C * H * W}")
    return np.ascontiguousarray(X.reshape(len(X), C, H, W)[..., ::-1].reshape(len(X), -1))


def check_y_shape(X, y):
    """``y`` as a 1-D array with one label per row of ``X`` (any label type), or DataError."""
    try:
        y = np.asarray(y)
    except (TypeError, ValueError):
        raise DataError("y: must be a 1-D array of labels") from None
    if y.ndim != 1 or len(y) != len(X):
        hint = ""
        if hasattr(X, "n_steps"):
            hint = (f"; X is read as spikes (T, B, M) = ({X.n_steps}, {len(X)}, {X.n_channels}) (images must be "
                    "2-D: (n_samples, n_features))")
        raise DataError(f"y: must be 1-D with one label per sample ({len(X)}), got shape {y.shape}{hint}")
    return y


def _integer_labels(y, n_classes=None):
    """``y`` as int64 labels 0..n_classes-1 (integer-valued floats accepted), or DataError."""
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"y: labels must be integers 0..n_classes-1, got dtype {y.dtype}")
    if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
        hi = "" if n_classes is None else f"..{n_classes - 1} (n_classes = {n_classes})"
        raise DataError(f"y: labels must lie in 0{hi}, got min {y.min()}, max {y.max()}")
    return y.astype(np.int64)


def check_Xy(X, y, n_features: int | None = None, n_classes: int | None = None):
    """``(X, y)`` checked as by :func:`check_X`, ``y`` as int64 class indices 0..n_classes-1."""
    X = check_X(X, n_features)
    return X, _integer_labels(check_y_shape(X, y), n_classes)


def label_values(y) -> np.ndarray:
    """Class labels as given (integers, strings, booleans; integer-valued floats become int64),
    or DataError for non-integer numbers (a regression target?) and values that cannot be sorted."""
    if y.dtype.kind in "fc":
        if not (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise DataError(f"y: labels must be integers or class labels such as strings, got non-integer "
                            f"numbers (dtype {y.dtype})")
        y = y.astype(np.int64)
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind not in "bUSO":
        raise DataError(f"y: labels must be integers or class labels such as strings, got dtype {y.dtype}")
    return y


def fit_classes(y, n_classes: int | None = None) -> np.ndarray:
    """The sorted class labels (``classes_``) of training labels ``y``: its distinct values, or with
    ``n_classes`` the integers 0..n_classes-1 (labels absent from ``y`` included), which ``y`` must
    then hold. DataError for fewer than 2 classes."""
    if n_classes is not None:
        y = _integer_labels(y)
        if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) or n_classes <= y.max():
            raise DataError(f"n_classes: {n_classes!r} does not match the data: the labels go up to "
                            f"{y.max()}, so n_classes must be an integer >= {y.max() + 1}")
        classes = np.arange(int(n_classes))
    else:
        try:
            classes = np.unique(label_values(y))
        except TypeError as e:
            raise DataError(f"y: labels must be of one type that can be sorted ({e})") from None
    if len(classes) < 2:
        raise DataError("y: need at least 2 classes to train a Forward-Forward network")
    return classes


def encode_labels(y, classes: np.ndarray) -> np.ndarray:
    """Positions of the labels ``y`` in the sorted ``classes`` (int64), or DataError naming the
    labels that are not classes."""
    C = len(classes)
    if classes.dtype.kind in "iu" and np.array_equal(classes, np.arange(C)):
        return _integer_labels(y, C)          # labels 0..C-1 are their own positions
    try:
        y = label_values(y)
        idx = np.clip(np.searchsorted(classes, y), 0, C - 1)
        known = classes[idx] == y
    except (TypeError, ValueError):
        known = np.zeros(len(y), bool)
    if not np.all(known):
        bad = np.unique(np.asarray(y)[~np.asarray(known, bool)].astype(object).astype(str))
        raise DataError(f"y: labels {bad[:10].tolist()} are not among the network's classes "
                        f"{classes[:20].tolist()}{' ...' if C > 20 else ''}")
    return idx.astype(np.int64)


def check_X_labels(X, y, classes: np.ndarray, n_features: int | None = None):
    """``(X, y)`` checked, ``y`` (class labels) as positions in ``classes``."""
    X = check_X(X, n_features)
    return X, encode_labels(check_y_shape(X, y), classes)


@dataclass
class Dataset:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "Dataset":
        """A stratification-free random subset (for quick runs)."""
        rng = np.random.default_rng(seed)
        tr = rng.permutation(len(self.X_train))[:n_train] if n_train else slice(None)
        te = rng.permutation(len(self.X_test))[:n_test] if n_test else slice(None)
        return Dataset(self.name, self.X_train[tr], self.y_train[tr], self.X_test[te], self.y_test[te],
                       self.n_classes, self.image_shape)

    def split_validation(self, fraction: float = 0.1, seed: int = 0):
        """``(train, validation)``: a stratified random ``fraction`` of the training set held out for
        monitoring and tuning (the test set is untouched). ``train`` is a Dataset whose X_train no
        longer holds the validation samples; ``validation`` is ``(X_val, y_val)``."""
        if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
            raise DataError(f"val_fraction: must lie strictly between 0 and 1, got {fraction!r}")
        from sklearn.model_selection import train_test_split
        idx = np.arange(len(self.X_train))
        counts = np.bincount(self.y_train)
        strat = self.y_train if counts[counts > 0].min() >= 2 and \
            round(fraction * len(idx)) >= np.count_nonzero(counts) else None
        try:
            tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
        except ValueError as e:
            raise DataError(f"val_fraction: cannot hold out {fraction} of {len(idx)} training samples: {e}") from None
        tr, va = np.sort(tr), np.sort(va)
        train = Dataset(self.name, self.X_train[tr], self.y_train[tr], self.X_test, self.y_test,
                        self.n_classes, self.image_shape)
        return train, (self.X_train[va], self.y_train[va])


def load_digits_dataset(test_size: float = 0.2, seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    X = d.data / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, d.target, test_size=test_size, random_state=seed,
                                          stratify=d.target)
    return Dataset("digits", Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64), 10, (8, 8))


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_ENV = {"fashion_mnist": "SPIKEFF_FASHION_MNIST", "mnist": "SPIKEFF_MNIST"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally .gz) into a numpy array, with clear errors for bad files."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e}); the file may be truncated") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(dims))
    if len(raw) - header != n:
        raise DataError(f"{path}: IDX file is truncated or corrupt: header says {n} bytes of data "
                        f"{dims}, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(stem)


def load_idx_dataset(name: str = "fashion_mnist", path=None) -> Dataset:
    """Load Fashion-MNIST or MNIST from IDX files (see module docstring for where it looks)."""
    if name not in _ENV:
        raise DataError(f"dataset: {name!r} is not valid; choose one of {sorted(_ENV)}")
    candidates = [Path(p) for p in (path, os.environ.get(_ENV[name])) if p]
    if name == "fashion_mnist":
        candidates.append(DEBIAN_FASHION)
    for d in candidates:
        try:
            files = {k: _find(d, f"{k}-{kind}-idx{nd}-ubyte") for k, kind, nd in
                     [("train", "images", 3), ("t10k", "images", 3)]}
            labels = {k: _find(d, f"{k}-labels-idx1-ubyte") for k in ("train", "t10k")}
        except FileNotFoundError:
            continue
        images = {k: read_idx(f) for k, f in files.items()}
        labs = {k: read_idx(f) for k, f in labels.items()}
        for k in ("train", "t10k"):
            if images[k].ndim != 3 or images[k].shape[1:] != (28, 28):
                raise DataError(f"{files[k]}: expected images of shape (n, 28, 28), got {images[k].shape}")
            if labs[k].ndim != 1 or len(labs[k]) != len(images[k]):
                raise DataError(f"{labels[k]}: expected {len(images[k])} labels (one per image in "
                                f"{files[k].name}), got shape {labs[k].shape}")
            if labs[k].size and labs[k].max() > 9:
                raise DataError(f"{labels[k]}: labels must lie in 0..9, got max {labs[k].max()}")
        Xtr = images["train"].reshape(-1, 784) / 255.0
        Xte = images["t10k"].reshape(-1, 784) / 255.0
        ytr = labs["train"].astype(np.int64)
        yte = labs["t10k"].astype(np.int64)
        return Dataset(name, Xtr, ytr, Xte, yte, 10, (28, 28))
    hint = ("install the Debian package: apt-get install dataset-fashion-mnist"
            if name == "fashion_mnist" else "download the four MNIST IDX files")
    where = ", ".join(str(c) for c in candidates) or "(nowhere)"
    raise FileNotFoundError(
        f"{name}: IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...) "
        f"not found in {where}. To get them, {hint}, or pass a directory with --data-path / "
        f"${_ENV[name]}.")


IMAGE_DATASETS = ("digits", "fashion_mnist", "mnist")                 # X: intensities in [0, 1]
EVENT_DATASETS = ("nmnist", "dvs_gesture", "shd", "events_npz")         # X: events (spikeff.events)
DATASETS = IMAGE_DATASETS + EVENT_DATASETS


def load_dataset(name: str, path=None) -> Dataset:
    """A data set by name; the event data sets (see :mod:`spikeff.events`) give X as event lists."""
    if name == "digits":
        return load_digits_dataset()
    if name in _ENV:
        return load_idx_dataset(name, path)
    if name in DATASETS:
        from .events import load_event_dataset
        return load_event_dataset(name, path)
    raise DataError(f"dataset: {name!r} is not valid; choose one of {list(DATASETS)}")
