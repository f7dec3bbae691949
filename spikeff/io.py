"""Saving and loading networks: a versioned ``.npz`` (arrays + config as JSON), written atomically
(temporary file, then rename) with a SHA-256 checksum of its contents."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .backend import like as backend_like, to_numpy
from .runs import ThreadSettings, blas_kernel

FORMAT = "spikeff-network"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (wrong format or version, corrupt, mismatched shapes)."""


def _checksum(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file in the same folder, read it back and
    compare its SHA-256, then rename it over ``path``. If anything fails (disk full, a short write,
    Ctrl-C) the temporary file is removed and the previous ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)          # mkstemp makes 0600; results should read like any file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp, "rb") as f:
            written = f.read()
        if hashlib.sha256(written).digest() != hashlib.sha256(data).digest():
            raise OSError(f"{path}: the file written ({len(written)} of {len(data)} bytes) does not match "
                          f"what was meant (truncated or corrupt write); the previous {path.name} was kept")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _classes_json(net) -> list:
    """``classes_`` as a JSON list (integers, strings or booleans)."""
    classes = np.asarray(getattr(net, "classes_", np.arange(net.n_classes_)))
    values = classes.tolist()
    if classes.dtype.kind == "O" and not all(isinstance(v, str) for v in values):
        raise ValueError(f"classes_: only integer, string and boolean labels can be saved, got {values[:5]}")
    return values


def save_network(net, path):
    net._check_fitted()
    arrays = {}
    for l, (W, b) in enumerate(zip(net.weights_, net.biases_)):
        arrays[f"W{l}"], arrays[f"b{l}"] = to_numpy(W), to_numpy(b)
        st = net.optimizers_[l].state_dict()
        arrays[f"opt{l}_t"] = np.array(st["t"])
        for i, a in enumerate(st["m"]):
            arrays[f"opt{l}_m{i}"] = to_numpy(a)
        for i, a in enumerate(st["v"]):
            arrays[f"opt{l}_v{i}"] = to_numpy(a)
    if net.readout_ is not None:
        arrays["readout_W"], arrays["readout_b"] = net.readout_.W, net.readout_.b
        st = net.readout_.opt.state_dict()
        arrays["readout_opt_t"] = np.array(st["t"])
        for i, a in enumerate(st["m"] + st["v"]):
            arrays[f"readout_opt_{i}"] = a
        if net.readout_.mirror_shape is not None:   # absent: a readout of the images alone (as before)
            arrays["readout_mirror_shape"] = np.array(net.readout_.mirror_shape)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": net.config.to_dict(),
            "n_features_in": net.n_features_in_, "n_classes": net.n_classes_, "classes": _classes_json(net),
            "epochs_done": net.epochs_done_, "history": net.history_,
            "threads": net.threads_.to_dict() if getattr(net, "threads_", None) is not None else None,
            "blas_kernel": blas_kernel(),
            "checksum": _checksum(arrays)}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_network(path):
    from .config import ConfigError, FFConfig
    from .network import FFNetwork
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, NotImplementedError, zlib.error) as e:
        raise CheckpointError(f"{path}: not a readable spikeff checkpoint (corrupt or truncated: {e})") from None
    if "__meta__" not in data:
        raise CheckpointError(f"{path}: not a spikeff checkpoint (no metadata)")
    try:
        meta = json.loads(data.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: checkpoint metadata is corrupt") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is corrupt")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a spikeff network checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')} is not supported "
                              f"(this spikeff reads version {FORMAT_VERSION})")
    if _checksum(data) != meta.get("checksum"):
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is corrupt")
    missing = [k for k in ("config", "n_features_in", "n_classes", "epochs_done", "history") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks {missing}")
    for key, low in (("n_features_in", 1), ("n_classes", 2), ("epochs_done", 0)):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < low:
            raise CheckpointError(f"{path}: checkpoint metadata {key} must be an integer >= {low}, "
                                  f"got {meta[key]!r}")
    if not isinstance(meta["history"], list) or not isinstance(meta["config"], dict):
        raise CheckpointError(f"{path}: checkpoint metadata is corrupt (history or config)")
    try:
        config = FFConfig.from_dict(meta["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: the config stored in the checkpoint is invalid: {e}") from None
    net = FFNetwork(config)
    net.initialize(meta["n_features_in"], meta["n_classes"])

    def get(name, like):
        """The stored array ``name``, checked against the shape the config gives (``like``)."""
        got = data[name].shape if name in data else "missing"
        if got != like.shape:
            raise CheckpointError(f"{path}: array {name} has shape {got}, the config "
                                  f"{config.hidden_sizes} with {meta['n_features_in']} inputs and "
                                  f"{meta['n_classes']} classes needs {like.shape}")
        return data[name]

    def opt_state(opt, prefix_m, prefix_v, prefix_t):
        st = opt.state_dict()
        return {"t": int(get(prefix_t, np.array(0))),
                "m": [get(prefix_m(i), a) for i, a in enumerate(st["m"])],
                "v": [get(prefix_v(i), a) for i, a in enumerate(st["v"])]}

    for l in range(len(net.weights_)):
        net.weights_[l] = backend_like(get(f"W{l}", net.weights_[l]).astype(net.dtype), net.weights_[l])
        net.biases_[l] = backend_like(get(f"b{l}", net.biases_[l]).astype(net.dtype), net.biases_[l])
        opt = net.optimizers_[l]
        opt.load_state_dict(opt_state(opt, lambda i: f"opt{l}_m{i}", lambda i: f"opt{l}_v{i}", f"opt{l}_t"))
    extra = sorted(k for k in data if k.startswith("W") and k[1:].isdigit() and int(k[1:]) >= len(net.weights_))
    if extra:
        raise CheckpointError(f"{path}: has arrays {extra} for more layers than the config's "
                              f"{len(net.weights_)} ({config.hidden_sizes})")
    if net.readout_ is not None:
        net.readout_.W[...] = get("readout_W", net.readout_.W)
        net.readout_.b[...] = get("readout_b", net.readout_.b)
        n = 2
        net.readout_.opt.load_state_dict(opt_state(net.readout_.opt, lambda i: f"readout_opt_{i}",
                                                   lambda i: f"readout_opt_{i + n}", "readout_opt_t"))
        if "readout_mirror_shape" in data:
            net.readout_.mirror_shape = tuple(int(v) for v in data["readout_mirror_shape"])
    classes = meta.get("classes")            # absent in checkpoints written before classes_: 0..C-1
    if classes is not None:
        if not isinstance(classes, list) or len(classes) != meta["n_classes"]:
            raise CheckpointError(f"{path}: checkpoint metadata classes must list {meta['n_classes']} labels, "
                                  f"got {classes!r}")
        net.classes_ = np.asarray(classes)
    net.epochs_done_ = int(meta["epochs_done"])
    net.threads_recorded_ = meta.get("threads")        # None: written before threads were recorded
    net.blas_kernel_ = meta.get("blas_kernel")
    if net.threads_recorded_ is not None:
        try:
            net.threads_ = ThreadSettings.from_dict(net.threads_recorded_)
        except ValueError as e:
            raise CheckpointError(f"{path}: checkpoint metadata {e}") from None
    net.history_ = list(meta["history"])
    return net
