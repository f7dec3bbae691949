"""Simulation engines behind one call (:class:`spikeff.engines.base.Engine`; results:
:class:`~spikeff.engines.base.PhaseResult`; input: a :class:`~spikeff.engines.base.SpikeSource`).

Engines are looked up by name; optional ones are imported only when asked for. ``vectorized`` and
``brian2`` train and infer (``config.engine``); ``lava`` (Lava's float and fixed point, and the
numpy model of the fixed point) runs inference only, through :mod:`spikeff.inference`.
"""
from __future__ import annotations

import importlib

_ENGINES = {"vectorized": "spikeff.engines.vectorized", "brian2": "spikeff.engines.brian2_engine"}
INFERENCE_ENGINES = {"lava": "spikeff.engines.lava"}      # no learning: not a config.engine choice


def _module(name: str):
    modules = {**_ENGINES, **INFERENCE_ENGINES}
    if name not in modules:
        raise ValueError(f"engine: {name!r} is not valid; choose one of {sorted(modules)}")
    try:
        module = importlib.import_module(modules[name])
    except ModuleNotFoundError as e:
        raise ImportError(f"engine {name!r} is not available: {e}") from None
    return module


def available_engines() -> list[str]:
    """The engine names (what the config's ``engine`` field accepts)."""
    return sorted(_ENGINES)


def get_engine(name: str):
    """Return the ``run_phase`` function of engine ``name``."""
    return _module(name).run_phase


def make_engine(name: str, **options):
    """A ``run_phase`` callable of engine ``name`` for one model: engines that keep state between
    calls (Brian2's persistent network) or take ``options`` (Lava's ``mode``, ``quant``,
    ``backend``) give a new instance (``make_engine(**options)`` of their module), the others
    their ``run_phase``."""
    module = _module(name)
    if hasattr(module, "make_engine"):
        return module.make_engine(**options)
    if options:
        raise TypeError(f"engine {name!r} takes no options, got {sorted(options)}")
    return module.run_phase
