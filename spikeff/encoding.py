"""Input encoding: pixel intensities in [0, 1] -> spike trains, and the FF label overlay.

The label overlay appends ``n_classes * label_repeat`` input channels (Hinton's one-hot label,
as extra channels): the channels of the given class get ``label_intensity``, the others 0. The
*neutral* label (used by the one-pass readout) gives every class ``label_intensity / n_classes``.

Encodings: ``rate`` (Bernoulli spikes, probability ``x * max_rate * dt`` per step), ``regular``
(the same rate without the noise: a channel accumulates ``p = x * max_rate * dt`` per step and
spikes each time the sum, started at 1/2, crosses an integer, as a non-leaky integrate-and-fire
neuron driven by a constant current; ``floor(p * T + 1/2)`` spikes, evenly spaced, the same for
every seed) and ``latency`` (one spike per channel, earlier for brighter input, none for 0).
``latency_period`` (steps; 0 = the whole window) repeats the latency pattern every
``latency_period`` steps: a single spike per channel in the window is very little drive (on digits
the network stays at chance level), a repeated pattern (a phase code against a period) keeps the
timing code with more spikes.

Spike trains are produced chunk by chunk from a seed, so a phase can be replayed with exactly the
same input spikes (see :mod:`spikeff.engines.vectorized`) without storing them for all T.
"""
from __future__ import annotations

import numpy as np

NEUTRAL = -1
ENCODINGS = ("rate", "regular", "latency")         # the codes above (config field ``encoding``)


def overlay_labels(X: np.ndarray, labels: np.ndarray, n_classes: int, label_repeat: int = 1,
                   label_intensity: float = 1.0) -> np.ndarray:
    """Append the label channels to each row of ``X``. ``labels == NEUTRAL`` gives the neutral label."""
    labels = np.asarray(labels)
    B = X.shape[0]
    lab = np.zeros((B, n_classes), dtype=X.dtype)
    known = labels != NEUTRAL
    lab[np.flatnonzero(known), labels[known]] = label_intensity
    lab[~known] = label_intensity / n_classes
    return np.concatenate([X, np.repeat(lab, label_repeat, axis=1)], axis=1)


_POOL = None
_MIN_PARALLEL_DRAWS = 1 << 18


def random_fill(rng, out):
    """``rng.random(out=out)`` (float64), split over the engine's threads: with PCG64 (numpy's
    default) a copy of the generator advanced by the draws of the parts before gives each part
    exactly the numbers a single call would have drawn there (one 64-bit draw per double), so the
    result and the generator's state afterwards are the same as ``rng.random(out=out)``."""
    global _POOL
    from .runs import engine_threads
    flat = out.reshape(-1)
    n = flat.size
    parts = min(engine_threads(), n // _MIN_PARALLEL_DRAWS)
    if parts <= 1 or type(rng.bit_generator) is not np.random.PCG64:
        rng.random(out=out)
        return out
    if _POOL is None or _POOL._max_workers < parts:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="spikeff-rng")
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    gens = [rng]
    for a in bounds[1:-1]:
        bg = np.random.PCG64()
        bg.state = rng.bit_generator.state
        bg.advance(int(a))
        gens.append(np.random.Generator(bg))
    jobs = [_POOL.submit(g.random, out=flat[a:b]) for g, a, b in zip(gens, bounds[:-1], bounds[1:])]
    for j in jobs:
        j.result()
    rng.bit_generator.advance(int(n - bounds[1]))      # rng drew the first part: move it past the rest
    return out


def _noise_chunks(seed, shape, n_steps: int, chunk_steps: int, scratch=None):
    """Yield ``(k, noise)`` per chunk of steps: the rate code's uniform numbers (k, *shape) from
    one generator seeded with ``seed``, drawn into one reused buffer (``scratch(name, shape,
    dtype)``, or a new array) by :func:`random_fill`."""
    rng = np.random.default_rng(seed)
    full = (min(chunk_steps, n_steps),) + tuple(shape)
    noise = np.empty(full) if scratch is None else scratch("noise", full, np.float64)
    for t0 in range(0, n_steps, chunk_steps):
        k = min(chunk_steps, n_steps - t0)
        yield k, random_fill(rng, noise[:k])


class SpikeSource:
    """Deterministic spike trains for a batch of intensity vectors.

    ``rows_per_noise``: rows ``k*r .. k*r + r - 1`` share the same random numbers (used so that
    every candidate label of one sample sees the same image spikes during prediction).
    ``shared_input``: a :class:`SharedInput` (copies = 1) when the source is one phase of a batch
    whose phases draw the same spikes (set by :meth:`spikeff.network.FFNetwork.train_batch`).
    """

    shared_input = None

    def __init__(self, intensities: np.ndarray, encoding: str, n_steps: int, dt: float,
                 max_rate: float, seed, rows_per_noise: int = 1, dtype=np.float32, latency_period: int = 0):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding: {encoding!r} is not valid; choose one of {list(ENCODINGS)}")
        self.x = np.asarray(intensities, dtype=np.float64)
        if self.x.ndim != 2:
            raise ValueError(f"intensities must be 2-D (batch, channels), got shape {self.x.shape}")
        if self.x.shape[0] % rows_per_noise:
            raise ValueError("batch size must be a multiple of rows_per_noise")
        self.encoding, self.n_steps, self.seed = encoding, n_steps, seed
        self.rows_per_noise, self.dtype = rows_per_noise, dtype
        self.p = np.clip(self.x * max_rate * dt, 0.0, 1.0)
        if not (isinstance(latency_period, (int, np.integer)) and latency_period >= 0):
            raise ValueError(f"latency_period must be an integer >= 0, got {latency_period!r}")
        self.period = int(latency_period) or n_steps
        if encoding == "latency":
            # one spike per channel and period, earlier for brighter input; none for intensity 0
            t = np.round((1.0 - np.clip(self.x, 0, 1)) * (self.period - 1)).astype(np.int64)
            self.spike_time = np.where(self.x > 0, t, -1)

    @property
    def shape(self):
        return self.x.shape

    def chunks(self, chunk_steps: int):
        """Yield arrays of shape (k, batch, channels) covering steps 0..n_steps-1 in order."""
        rng = np.random.default_rng(self.seed)
        B, M = self.x.shape
        for t0 in range(0, self.n_steps, chunk_steps):
            k = min(chunk_steps, self.n_steps - t0)
            if self.encoding == "rate":
                noise = rng.random((k, B // self.rows_per_noise, M))
                if self.rows_per_noise > 1:
                    noise = np.repeat(noise, self.rows_per_noise, axis=1)
                yield (noise < self.p).astype(self.dtype)
            elif self.encoding == "regular":
                yield self._regular(t0, k)
            else:
                steps = np.arange(t0, t0 + k)[:, None, None] % self.period
                yield (self.spike_time[None] == steps).astype(self.dtype)

    def chunks_into(self, chunk_steps: int, buffer, scratch=None):
        """:meth:`chunks` written into ``buffer(k)`` (a (k, batch, channels) array, e.g. the engine's
        input buffer) instead of new arrays; yields k per chunk. The same spikes as :meth:`chunks`
        (the same random numbers, drawn into one reused buffer), without the temporaries.
        ``scratch(name, shape, dtype)``: where to get the random numbers' buffer (default: new)."""
        B, M = self.x.shape
        r = self.rows_per_noise
        if self.encoding == "rate":
            for k, noise in _noise_chunks(self.seed, (B // r, M), self.n_steps, chunk_steps, scratch):
                out = buffer(k)
                if r > 1:      # rows k*r .. k*r+r-1 share their random numbers
                    np.less(noise[:, :, None, :], self.p.reshape(B // r, r, M), out=out.reshape(k, B // r, r, M))
                else:
                    np.less(noise, self.p, out=out)
                yield k
            return
        for t0 in range(0, self.n_steps, chunk_steps):
            k = min(chunk_steps, self.n_steps - t0)
            if self.encoding == "regular":
                self._regular(t0, k, out=buffer(k))
            else:
                steps = np.arange(t0, t0 + k)[:, None, None] % self.period
                np.equal(self.spike_time[None], steps, out=buffer(k))
            yield k

    def _regular(self, t0: int, k: int, out=None):
        """Steps t0 .. t0+k-1 of the regular code: a spike where ``floor(t*p + 1/2)`` steps up
        (written into ``out`` when given)."""
        level = np.floor(np.arange(t0, t0 + k + 1)[:, None, None] * self.p + 0.5)
        if out is None:
            return (level[1:] > level[:-1]).astype(self.dtype)
        return np.greater(level[1:], level[:-1], out=out)

    def all_steps(self) -> np.ndarray:
        """All spikes, shape (n_steps, batch, channels) (for plots and tests; O(T) memory)."""
        return np.concatenate(list(self.chunks(self.n_steps)), axis=0)


class ArraySource:
    """Given spike trains (T, batch, channels) as a source (what other simulators recorded, or a
    recording of spikeff's own input spikes)."""

    def __init__(self, spikes, dtype=np.float64):
        self.spikes = np.asarray(spikes, dtype=dtype)
        if self.spikes.ndim != 3:
            raise ValueError(f"spikes must have shape (T, batch, channels), got {self.spikes.shape}")
        self.n_steps = self.spikes.shape[0]
        self.shape = self.spikes.shape[1:]
        self.dtype = self.spikes.dtype

    def chunks(self, chunk_steps: int):
        for t0 in range(0, self.n_steps, chunk_steps):
            yield self.spikes[t0:t0 + chunk_steps]

    def all_steps(self) -> np.ndarray:
        return self.spikes


class SharedInput:
    """What the phases of one training batch share when they draw the same input spikes
    (``shared_input_noise``): the first ``columns`` input channels (the image) carry the same spikes
    in each of the ``copies`` equal parts of a source's batch, and ``currents`` keeps the first
    layer's current from those channels per chunk (``{(t0, k): (k, rows, N) array}``), so that the
    next phase of the batch (e.g. positive and negative after the neutral one) reuses it. Valid
    while the first layer's weights do not change: make one per training batch."""

    def __init__(self, columns: int, copies: int = 1, currents: dict | None = None):
        self.columns, self.copies = int(columns), int(copies)
        self.currents = {} if currents is None else currents

    def for_copies(self, copies: int) -> "SharedInput":
        """The same channels and currents, for a source of ``copies`` parts."""
        return SharedInput(self.columns, copies, self.currents)


def _check_shared(sources, share: SharedInput):
    """Raise unless the parts really draw the same spikes on the shared channels: SpikeSources of
    one size and dtype, with equal probabilities on those channels, rate-coded with one seed or
    regular-coded (whose spikes depend on the probabilities alone)."""
    s0 = sources[0]
    n = share.columns
    ok = (len(sources) == share.copies and all(isinstance(s, SpikeSource) for s in sources)
          and s0.encoding in ("rate", "regular")
          and all(s.encoding == s0.encoding and s.rows_per_noise == 1 and s.shape == s0.shape
                  and s.n_steps == s0.n_steps and np.dtype(s.dtype) == np.dtype(s0.dtype)
                  and (s.encoding == "regular" or _same_seed(s.seed, s0.seed))
                  and np.array_equal(s.p[:, :n], s0.p[:, :n])
                  for s in sources))
    if not ok or not 0 < n <= s0.shape[1]:
        raise ValueError(f"shared input: the {len(sources)} parts do not draw the same spikes on "
                         f"their first {n} channels (need {share.copies} sources of one shape with equal "
                         "intensities there, rate-coded with one seed or regular-coded)")


def _same_seed(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))


class ConcatSource:
    """Several spike sources of the same length side by side along the batch axis.

    Lets independent phases (e.g. FF's positive and negative phase) run as one larger batch: larger
    GEMMs, one pass of the time loop. Each part keeps its own seed, so replays stay exact.
    ``shared``: a :class:`SharedInput` when the parts are the same spikes on the image channels
    (checked); they then draw their random numbers once, and the vectorized engine computes the
    first layer's current and update from those channels once per sample.
    """

    def __init__(self, sources, shared: SharedInput | None = None):
        self.sources = list(sources)
        steps = {s.n_steps for s in self.sources}
        if len(steps) != 1 or len({s.shape[1] for s in self.sources}) != 1:
            raise ValueError("ConcatSource: all sources need the same n_steps and channels")
        self.n_steps = steps.pop()
        self.dtype = self.sources[0].dtype
        self.sizes = [s.shape[0] for s in self.sources]
        if shared is not None:
            _check_shared(self.sources, shared)
        self.shared_input = shared

    @property
    def shape(self):
        return (sum(self.sizes), self.sources[0].shape[1])

    def split(self, a):
        """Split an array over the concatenated batch (axis 0) back into one per source."""
        return np.split(a, np.cumsum(self.sizes)[:-1])

    def chunks(self, chunk_steps: int):
        for parts in zip(*(s.chunks(chunk_steps) for s in self.sources)):
            yield np.concatenate(parts, axis=1)

    def chunks_into(self, chunk_steps: int, buffer, scratch=None):
        """:meth:`chunks` written into ``buffer(k)`` (see :meth:`SpikeSource.chunks_into`): each
        part fills its own rows; yields k per chunk. Parts of one seed (``shared``) draw their
        random numbers once: the numbers each would have drawn."""
        bounds = np.concatenate([[0], np.cumsum(self.sizes)])
        if self.shared_input is not None and self.sources[0].encoding == "rate":
            yield from self._shared_chunks_into(chunk_steps, buffer, scratch, bounds)
            return
        parts = [chunks_into(s, chunk_steps, (lambda k, a=a, b=b: buffer(k)[:, a:b]),
                             None if scratch is None else (lambda name, shape, dtype, i=i: scratch((i, name), shape, dtype)))
                 for i, (s, a, b) in enumerate(zip(self.sources, bounds[:-1], bounds[1:]))]
        for ks in zip(*parts):
            yield ks[0]

    def _shared_chunks_into(self, chunk_steps, buffer, scratch, bounds):
        s0 = self.sources[0]
        for k, noise in _noise_chunks(s0.seed, s0.shape, self.n_steps, chunk_steps, scratch):
            out = buffer(k)
            for s, a, b in zip(self.sources, bounds[:-1], bounds[1:]):
                np.less(noise, s.p, out=out[:, a:b])
            yield k

    def all_steps(self) -> np.ndarray:
        return np.concatenate(list(self.chunks(self.n_steps)), axis=0)


def chunks_into(source, chunk_steps: int, buffer, scratch=None):
    """Write ``source``'s chunks into ``buffer(k)`` and yield k per chunk: the source's own
    ``chunks_into`` when it has one, else a copy of each chunk of ``source.chunks``.
    ``scratch(name, shape, dtype)``: a provider of work buffers (see :meth:`SpikeSource.chunks_into`)."""
    if hasattr(source, "chunks_into"):
        yield from source.chunks_into(chunk_steps, buffer, scratch)
        return
    for chunk in source.chunks(chunk_steps):
        k = chunk.shape[0]
        buffer(k)[...] = chunk
        yield k
