"""Simulation engines behind one function signature (see :func:`vectorized.run_phase`).

Engines are looked up by name; optional ones are imported only when asked for.
"""
from __future__ import annotations

import importlib

_ENGINES = {"vectorized": "spikeff.engines.vectorized", "brian2": "spikeff.engines.brian2_engine"}


def _module(name: str):
    if name not in _ENGINES:
        raise ValueError(f"engine: {name!r} is not valid; choose one of {sorted(_ENGINES)}")
    try:
        module = importlib.import_module(_ENGINES[name])
    except ModuleNotFoundError as e:
        raise ImportError(f"engine {name!r} is not available: {e}") from None
    return module


def available_engines() -> list[str]:
    """The engine names (what the config's ``engine`` field accepts)."""
    return sorted(_ENGINES)


def get_engine(name: str):
    """Return the ``run_phase`` function of engine ``name``."""
    return _module(name).run_phase


def make_engine(name: str):
    """A ``run_phase`` callable of engine ``name`` for one model: engines that keep state between
    calls (Brian2's persistent network) give a new instance (``make_engine()`` of their module),
    the others their ``run_phase``."""
    module = _module(name)
    return module.make_engine() if hasattr(module, "make_engine") else module.run_phase
