"""Goodness: the energy of a layer's membrane potential over the simulation window.

A goodness is ``G = 1/(T*N) * sum_t sum_i g(v_i[t])`` with a pointwise ``g`` of the pre-reset
potential (measured from rest). Each variant gives ``g`` and its derivative ``dg`` (what the
local learning rule needs). Register a new one with :func:`register_goodness`.

``expr``/``dexpr`` give the same ``g``/``dg`` as expression strings in ``v`` (dimensionless, in mV)
written in Brian2's model syntax (``clip``, ``int``, ``**``); the Brian2 engine compiles them
into its neuron update. A test checks that they agree with the numpy functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Goodness:
    name: str
    g: Callable
    dg: Callable
    doc: str = ""
    expr: str | None = None      # g(v) in Brian2 syntax (None: this goodness cannot run on Brian2)
    dexpr: str | None = None     # g'(v) in Brian2 syntax


_REGISTRY: dict[str, Goodness] = {}


def register_goodness(name: str, g: Callable, dg: Callable, doc: str = "", expr: str | None = None,
                      dexpr: str | None = None) -> Goodness:
    _REGISTRY[name] = Goodness(name, g, dg, doc, expr, dexpr)
    return _REGISTRY[name]


def get_goodness(name: str) -> Goodness:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"goodness: {name!r} is not valid; choose one of {sorted(_REGISTRY)}") from None


def available_goodness() -> list[str]:
    return sorted(_REGISTRY)


register_goodness("energy_relu", lambda v: np.square(np.maximum(v, 0)), lambda v: 2 * np.maximum(v, 0),
                  "relu(v)^2: energy of the depolarisation above rest (default)",
                  "clip(v, 0, inf)**2", "2*clip(v, 0, inf)")
register_goodness("energy", lambda v: np.square(v), lambda v: 2 * v,
                  "v^2: plain membrane energy (depolarisation and hyperpolarisation)", "v**2", "2*v")
register_goodness("relu_mean", lambda v: np.maximum(v, 0), lambda v: (v > 0).astype(v.dtype),
                  "relu(v): mean depolarisation", "clip(v, 0, inf)", "int(v > 0)")
register_goodness("energy_mean_relu", lambda v: np.square(np.maximum(v, 0)) + np.maximum(v, 0),
                  lambda v: 2 * np.maximum(v, 0) + (v > 0).astype(v.dtype),
                  "relu(v)^2 + relu(v)", "clip(v, 0, inf)**2 + clip(v, 0, inf)",
                  "2*clip(v, 0, inf) + int(v > 0)")
