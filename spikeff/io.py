"""Saving and loading networks: a versioned ``.npz`` (arrays + config as JSON), written atomically
(temporary file, then rename) with a SHA-256 checksum of its contents."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .backend import like, to_numpy

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": net.config.to_dict(),
            "n_features_in": net.n_features_in_, "n_classes": net.n_classes_,
            "epochs_done": net.epochs_done_, "history": net.history_,
            "checksum": _checksum(arrays)}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_network(path):
    from .config import FFConfig
    from .network import FFNetwork
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable spikeff checkpoint (corrupt or truncated: {e})") from None
    if "__meta__" not in data:
        raise CheckpointError(f"{path}: not a spikeff checkpoint (no metadata)")
    try:
        meta = json.loads(data.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: checkpoint metadata is corrupt") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a spikeff network checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')} is not supported "
                              f"(this spikeff reads version {FORMAT_VERSION})")
    if _checksum(data) != meta.get("checksum"):
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is corrupt")
    config = FFConfig.from_dict(meta["config"])
    net = FFNetwork(config)
    net.initialize(meta["n_features_in"], meta["n_classes"])
    for l in range(len(net.weights_)):
        for name, target in ((f"W{l}", net.weights_), (f"b{l}", net.biases_)):
            if name not in data or data[name].shape != target[l].shape:
                got = data[name].shape if name in data else "missing"
                raise CheckpointError(f"{path}: array {name} has shape {got}, the config needs {target[l].shape}")
            target[l] = like(data[name].astype(net.dtype), target[l])
        opt = net.optimizers_[l]
        st = {"t": data[f"opt{l}_t"], "m": [data[f"opt{l}_m{i}"] for i in range(2)],
              "v": [data[f"opt{l}_v{i}"] for i in range(2) if f"opt{l}_v{i}" in data]}
        opt.load_state_dict(st)
    if net.readout_ is not None:
        net.readout_.W[...] = data["readout_W"]
        net.readout_.b[...] = data["readout_b"]
        n = 2
        net.readout_.opt.load_state_dict({"t": data["readout_opt_t"],
                                          "m": [data[f"readout_opt_{i}"] for i in range(n)],
                                          "v": [data[f"readout_opt_{i}"] for i in range(n, 2 * n)]})
    net.epochs_done_ = int(meta["epochs_done"])
    net.history_ = list(meta["history"])
    return net
