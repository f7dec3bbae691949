"""Lava as an engine: the exported network (Lava's floating point, Lava's bit-accurate fixed point,
or the bit-exact numpy model of that fixed point, :mod:`spikeff.export.loihi`) behind the same
call as every engine (:class:`spikeff.engines.base.Engine`), for inference only.

    from spikeff.engines import make_engine
    from spikeff import inference
    eng = make_engine("lava", mode="fixed_pt", quant=quantize_network(net, X_calib), backend="numpy")
    inference.predict(net, X, engine=eng)        # the same code and input spikes as net.predict(X)

Simulating a phase here runs :func:`spikeff.export.lava.simulate_arrays` on the source's spikes and
forms the goodness from the recorded pre-reset potentials (:meth:`PhaseResult.from_potentials`);
floating point on numpy is the vectorized engine in float64.
"""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from .base import PhaseResult


class LavaEngine:
    """One exported network's simulator. ``mode``: "floating_pt" or "fixed_pt" (needs ``quant``,
    from :func:`spikeff.export.loihi.quantize_network`); ``backend``: "lava" (Lava's processes) or
    "numpy"; ``copies``: at most this many batch rows per Lava run (None: the whole batch)."""

    learns = False

    def __init__(self, mode: str = "floating_pt", quant=None, backend: str = "lava", copies: int | None = None,
                 connection: str = "auto"):
        from ..export.lava import _check_run
        _check_run(mode, quant, backend)
        if copies is not None and not (isinstance(copies, (int, np.integer)) and copies >= 1):
            raise ValueError(f"copies must be an integer >= 1 or None, got {copies!r}")
        self.mode, self.quant, self.backend, self.copies, self.connection = mode, quant, backend, copies, connection

    def __repr__(self):
        return f"LavaEngine(mode={self.mode!r}, backend={self.backend!r}, copies={self.copies})"

    def __call__(self, weights, biases, lif, goodness, source, chunk_steps: int = 0, modulators=None,
                 record: bool = False, normalize: bool = False) -> PhaseResult:
        from ..export import lava as lx
        if modulators is not None:
            raise ValueError("the Lava engine runs inference only (no learning): train with engine = 'vectorized'")
        if normalize:
            raise ValueError("length normalisation cannot be expressed by Lava's Dense + LIF")
        W = [np.asarray(to_numpy(w), np.float64) for w in weights]
        b = [np.zeros(w.shape[0]) if x is None else np.asarray(to_numpy(x), np.float64) for w, x in zip(W, biases)]
        if self.mode == "floating_pt" and self.backend == "numpy":     # spikeff's engine in float64
            lif.check_target("lava")
            from .vectorized import run_phase
            return run_phase(W, b, lif, goodness, source, chunk_steps or source.n_steps, record=record)
        x = source.all_steps()
        step = self.copies or x.shape[1]
        parts = [lx.simulate_arrays(W, b, lif, goodness, x[:, i:i + step], self.mode, self.quant, self.backend)
                 for i in range(0, x.shape[1], step)]
        cat = (lambda key, l: np.concatenate([p[key][l] for p in parts], axis=1))
        v = [cat("v", l) for l in range(len(W))]
        spikes = [cat("spikes", l) for l in range(len(W))]
        return PhaseResult.from_potentials(v, goodness, spikes, x, record=record)


def make_engine(mode: str = "floating_pt", quant=None, backend: str = "lava", copies: int | None = None,
                connection: str = "auto") -> LavaEngine:
    return LavaEngine(mode, quant, backend, copies, connection)


run_phase = LavaEngine()
