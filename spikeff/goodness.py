"""Goodness: the energy of a layer's membrane potential over the simulation window.

A goodness is ``G = 1/(T*N) * sum_t sum_i g(v_i[t])`` with a pointwise ``g`` of the pre-reset
potential (measured from rest). Each variant gives ``g`` and its derivative ``dg`` (what the
local learning rule needs). Register a new one with :func:`register_goodness`.

``expr``/``dexpr`` give the same ``g``/``dg`` as expression strings in ``v`` (dimensionless, in mV)
written in Brian2's model syntax (``clip``, ``int``, ``**``); the Brian2 engine compiles them
into its neuron update. A test checks that they agree with the numpy functions.

``g`` and ``dg`` take an array of any array-API namespace (numpy, cupy, torch); ``fused``
(optional, numpy only) is an in-place kernel the vectorized engine uses on a whole chunk:
``fused(v, post, scale)`` overwrites ``v`` with ``g(v)`` and, when ``post`` is given, writes
``dg(v) * scale`` into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .backend import namespace


@dataclass(frozen=True)
class Goodness:
    name: str
    g: Callable
    dg: Callable
    doc: str = ""
    expr: str | None = None      # g(v) in Brian2 syntax (None: this goodness cannot run on Brian2)
    dexpr: str | None = None     # g'(v) in Brian2 syntax
    fused: Callable | None = None  # in-place numpy kernel of g and dg * scale (vectorized engine)


_REGISTRY: dict[str, Goodness] = {}


def register_goodness(name: str, g: Callable, dg: Callable, doc: str = "", expr: str | None = None,
                      dexpr: str | None = None, fused: Callable | None = None) -> Goodness:
    _REGISTRY[name] = Goodness(name, g, dg, doc, expr, dexpr, fused)
    return _REGISTRY[name]


def get_goodness(name: str) -> Goodness:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"goodness: {name!r} is not valid; choose one of {sorted(_REGISTRY)}") from None


def available_goodness() -> list[str]:
    return sorted(_REGISTRY)


def _xp(v):
    return np if isinstance(v, np.ndarray) else namespace(v)


def _relu(v):
    xp = _xp(v)
    return xp.maximum(v, xp.zeros_like(v))


def _step(v):
    xp = _xp(v)
    return xp.astype(v > 0, v.dtype) if xp is not np else (v > 0).astype(v.dtype)


def _fused_energy_relu(v, post, scale):
    np.maximum(v, 0, out=v)
    if post is not None:
        np.multiply(v, 2 * scale, out=post)
    np.square(v, out=v)


def _fused_energy(v, post, scale):
    if post is not None:
        np.multiply(v, 2 * scale, out=post)
    np.square(v, out=v)


def _fused_relu_mean(v, post, scale):
    if post is not None:
        np.greater(v, 0, out=post)
        post *= scale
    np.maximum(v, 0, out=v)


register_goodness("energy_relu", lambda v: _relu(v) ** 2, lambda v: 2 * _relu(v),
                  "relu(v)^2: energy of the depolarisation above rest (default)",
                  "clip(v, 0, inf)**2", "2*clip(v, 0, inf)", _fused_energy_relu)
register_goodness("energy", lambda v: v * v, lambda v: 2 * v,
                  "v^2: plain membrane energy (depolarisation and hyperpolarisation)", "v**2", "2*v",
                  _fused_energy)
register_goodness("relu_mean", _relu, _step, "relu(v): mean depolarisation", "clip(v, 0, inf)",
                  "int(v > 0)", _fused_relu_mean)
register_goodness("energy_mean_relu", lambda v: _relu(v) ** 2 + _relu(v),
                  lambda v: 2 * _relu(v) + _step(v), "relu(v)^2 + relu(v)",
                  "clip(v, 0, inf)**2 + clip(v, 0, inf)", "2*clip(v, 0, inf) + int(v > 0)")
