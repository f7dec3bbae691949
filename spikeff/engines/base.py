"""The seam between the network and its simulators: what an engine takes and what it returns.

An *engine* is a callable with the signature of :class:`Engine` (the vectorized engine's
``run_phase``, Brian2's, the conv engine's, and the Lava / Loihi fixed-point engines of
:mod:`spikeff.engines.lava`): it simulates one phase of the model of :mod:`spikeff.neuron` on the
spikes of a :class:`SpikeSource` and returns a :class:`PhaseResult`. ``FFNetwork``'s inference
(:mod:`spikeff.inference`) runs through any of them. This module imports nothing of spikeff, so
every engine and exporter can import it without a cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SpikeSource(Protocol):
    """Input spike trains of a batch, produced in time chunks (replayable: the same spikes on every
    call). Implemented by :class:`spikeff.encoding.SpikeSource` (rate/latency coding),
    :class:`~spikeff.encoding.ArraySource` (given spikes), :class:`~spikeff.encoding.ConcatSource`
    (sources side by side) and :class:`spikeff.events.EventSource` (event input)."""

    n_steps: int
    dtype: object

    @property
    def shape(self) -> tuple:           # (batch, channels)
        ...

    def chunks(self, chunk_steps: int):  # yields (k, batch, channels) arrays covering 0..n_steps-1
        ...

    def all_steps(self) -> np.ndarray:   # (n_steps, batch, channels)
        ...


@dataclass
class PhaseResult:
    """What one simulated phase returns (per layer lists; numpy arrays except ``grads``)."""

    goodness: list                      # (B,) float64: G of each layer
    neuron_goodness: list               # (B, N): mean over time of g(v) per neuron
    spike_counts: list                  # (B, N)
    grads: list | None = None           # [(dW (N, M), db (N,))] when modulators were given (weights' namespace)
    record: dict = field(default_factory=dict)   # "input" (T,B,M), "spikes"/"v" lists of (T,B,N)
    stored: object = None               # vectorized engine with keep=rows: its StoredFactors

    @classmethod
    def from_potentials(cls, v, goodness, spikes=None, record_input=None, record: bool = False) -> "PhaseResult":
        """The result of a phase from the pre-reset potentials ``v`` (per layer (T, B, N)) that a
        simulator recorded (and its ``spikes``): goodness ``mean_t g(v)`` per neuron and layer."""
        neuron_g = [np.asarray(goodness.g(np.asarray(vl, np.float64))).mean(axis=0) for vl in v]
        counts = [np.asarray(s).sum(axis=0).astype(np.int64) for s in spikes] if spikes is not None else \
            [np.zeros(g.shape, np.int64) for g in neuron_g]
        res = cls(goodness=[g.mean(axis=1) for g in neuron_g], neuron_goodness=neuron_g, spike_counts=counts)
        if record:
            res.record = {"input": None if record_input is None else np.asarray(record_input).astype(bool),
                          "spikes": [np.asarray(s).astype(bool) for s in spikes] if spikes is not None else None,
                          "v": [np.asarray(vl) for vl in v]}
        return res


class Engine(Protocol):
    """What every engine is called with (``normalize``/``keep``/``geometries``: engine-specific
    keywords, see :func:`spikeff.engines.vectorized.run_phase`)."""

    def __call__(self, weights, biases, lif, goodness, source: SpikeSource, chunk_steps: int,
                 modulators=None, record: bool = False, **kw) -> PhaseResult:
        ...
