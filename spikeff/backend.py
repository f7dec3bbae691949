"""Array backends: numpy (default, no extra dependency) or any array-API library (cupy, torch).

The engine and the optimizers work on the array namespace of the weights, so the same code runs
on GPU arrays. numpy arrays always get plain :mod:`numpy` (the fast path, with in-place ``out=``
kernels); other arrays get their namespace from ``array_api_compat`` (imported only then).

    backend = "numpy" | "cupy" | "torch"      # config field; "torch" runs on CUDA when available
"""
from __future__ import annotations

import importlib

import numpy as np

BACKENDS = ("numpy", "cupy", "torch", "array_api_strict")

_HINT = {"cupy": "pip install 'spikeff[gpu]' (cupy-cuda12x, array-api-compat) on a machine with CUDA",
         "torch": "pip install torch array-api-compat",
         "array_api_strict": "pip install array-api-strict array-api-compat"}


def _compat():
    try:
        return importlib.import_module("array_api_compat")
    except ModuleNotFoundError:
        raise ImportError("non-numpy arrays need array-api-compat: pip install array-api-compat") from None


def namespace(*arrays):
    """The array namespace of ``arrays`` (None entries ignored): numpy itself for numpy arrays."""
    arrays = [a for a in arrays if a is not None]
    if all(isinstance(a, (np.ndarray, np.generic)) for a in arrays):
        return np
    return _compat().array_namespace(*arrays)


def get_backend(name: str):
    """``(xp, device)`` for a backend name, with a clear error when its library is missing."""
    if name == "numpy":
        return np, None
    if name not in BACKENDS:
        raise ValueError(f"backend: {name!r} is not valid; choose one of {list(BACKENDS)}")
    try:
        lib = importlib.import_module(name)
    except ModuleNotFoundError:
        raise ImportError(f"backend {name!r} is not installed: {_HINT[name]}") from None
    if name == "array_api_strict":
        return lib, None
    compat = _compat()
    if name == "cupy":
        return compat.array_namespace(lib.zeros(1)), None
    xp = importlib.import_module("array_api_compat.torch")
    return xp, ("cuda" if lib.cuda.is_available() else "cpu")


def to_backend(a, xp, device=None, dtype=None):
    """Copy a numpy array (or scalar) to the namespace ``xp`` (on ``device``)."""
    if xp is np:
        return np.asarray(a, dtype=dtype)
    if dtype is not None:
        dtype = getattr(xp, dtype_name(dtype))
    a = np.ascontiguousarray(a)
    return xp.asarray(a, dtype=dtype, device=device) if device is not None else xp.asarray(a, dtype=dtype)


def to_numpy(a):
    """A numpy copy (or the array itself) of an array of any backend."""
    if a is None or isinstance(a, (np.ndarray, np.generic)):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    try:
        return np.from_dlpack(a)
    except (TypeError, AttributeError, RuntimeError, BufferError):
        return np.asarray(a)


def dtype_name(dtype) -> str:
    """"float32"/"float64"/... for a dtype of any backend (numpy, cupy, torch, array_api_strict)."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1]


def astype(a, dtype, xp):
    """``xp.astype`` (array API), also for numpy < 2 which lacks it."""
    return a.astype(dtype) if xp is np else xp.astype(a, dtype)


def device_of(a):
    """The device of an array of any backend (None for numpy: the CPU)."""
    if isinstance(a, (np.ndarray, np.generic)):
        return None
    return _compat().device(a)


def like(a, ref):
    """A copy of numpy array ``a`` in the namespace and on the device of ``ref``."""
    if isinstance(ref, np.ndarray):
        return np.array(a)
    return to_backend(a, namespace(ref), device_of(ref))
