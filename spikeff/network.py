"""``FFNetwork``: a spiking Forward-Forward network with a scikit-learn-like API.

    net = FFNetwork(load_config("models/digits.toml")).fit(X_train, y_train)
    net.score(X_test, y_test); net.save("model.npz"); FFNetwork.load("model.npz")

One training step on a batch (see :meth:`FFNetwork.train_batch`):

0. (with the readout) a neutral-label pass gives the readout's input; the readout takes a step;
1. the negative data are made (:mod:`spikeff.negatives`: wrong labels, or hybrid images);
2. the positive phase (true labels) and the negative phase (wrong labels) are simulated as two
   separate epochs from rest (side by side as one batch), giving each layer's goodness per sample;
3. each layer's FF loss gives a per-sample modulator (:mod:`spikeff.learning`); a conv layer with
   ``goodness_scope = "channel"``: one FF unit per channel, a modulator per (sample, channel);
4. each layer's local update is formed with the modulators (:mod:`spikeff.engines.vectorized`):
   from the learning factors kept during step 2 when they fit the ``store_budget_mb`` (no second
   simulation), else by replaying both phases (memory flat in T); every layer takes one optimizer step.

The negative labels of step 1 may come from the readout's current beliefs ("readout_hard").
Phases that need no result of another are simulated side by side as one batch (neutral, positive
and negative; or positive and negative): each still runs from rest with its own input spikes, the
GEMMs are larger and the time loop runs once. With ``shared_input_noise`` the phases of a batch
draw the same input spikes (only the label channels differ), and the engine computes the first
layer's current and update from the image once per sample (:class:`spikeff.encoding.SharedInput`).
"""
from __future__ import annotations

import time

import numpy as np

from .config import FFConfig
from .estimator import EstimatorProtocol
from .backend import get_backend, to_backend
from .data import DataError, check_X, check_X_labels, check_y_shape, fit_classes, mirror_images
from .encoding import NEUTRAL, ArraySource, ConcatSource, SpikeSource, overlay_labels
from . import inference
from .engines import make_engine
from .goodness import get_goodness
from .learning import ff_loss, lr_factor, make_optimizer
from .negatives import hard_wrong_labels, hybrid_images, random_wrong_labels
from .neuron import DiscreteLIF
from .readout import READOUT_INPUTS, LinearReadout, readout_features

PHASE_IDS = {"positive": 1, "negative": 2, "neutral": 3, "eval": 4, "hard": 5}


def __getattr__(name):
    # scikit-learn's NotFittedError, imported only when asked for (importing scikit-learn takes
    # about a second; `import spikeff` does not need it)
    if name == "NotFittedError":
        from sklearn.exceptions import NotFittedError
        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_finite_goodness(goodness, what: str):
    """Raise FloatingPointError naming the first layer whose goodness is NaN or infinite."""
    for l, g in enumerate(goodness):
        if not np.all(np.isfinite(g)):
            raise FloatingPointError(f"layer {l}: goodness is non-finite (NaN/inf) in the {what}: the "
                                     "membrane potentials blew up; lower weight_init or learning_rate")


STORE_BUDGET_MB = 1024.0     # default memory budget for keeping the first pass (store vs replay)


def _check_budget(value, what):
    import math
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: must be a number >= 0 (MiB; 0 = always replay), got {value!r}")


def _store_budget_from_env() -> float:
    import os
    env = os.environ.get("SPIKEFF_STORE_BUDGET_MB")
    if env is None or env == "":
        return STORE_BUDGET_MB
    try:
        value = float(env)
    except ValueError:
        raise ValueError(f"SPIKEFF_STORE_BUDGET_MB: must be a number >= 0 (MiB), got {env!r}") from None
    _check_budget(value, "SPIKEFF_STORE_BUDGET_MB")
    return value


class FFNetwork(EstimatorProtocol):
    """Spiking Forward-Forward network. ``config``: an :class:`FFConfig`; keyword overrides of its
    fields allowed (``FFNetwork(config, n_steps=10, neuron__tau_mem=0.02)``).

    A scikit-learn classifier: ``get_params``/``set_params`` expose ``config``, ``store_budget_mb``
    and every config field by name (the neuron's as ``neuron__dt`` ...), so ``sklearn.base.clone``,
    ``GridSearchCV(net, {"n_steps": [10, 20]})`` and pipelines work; ``classes_`` holds the label
    values (any sortable labels: integers, strings, ...); an unfitted network raises scikit-learn's
    ``NotFittedError``.
    """

    def __init__(self, config: FFConfig | None = None, *, store_budget_mb: float | None = None, **overrides):
        self.config = config or FFConfig()
        self.store_budget_mb = store_budget_mb
        if overrides:               # config fields, as set_params takes them (n_steps=..., neuron__dt=...)
            self.set_params(**overrides)
        self.history_: list[dict] = []

    # -- set-up ------------------------------------------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_model_cache", None)      # resolved again on use (its goodness holds lambdas)
        return state

    @property
    def dtype(self):
        return np.dtype(self.config.dtype)

    @property
    def xp(self):
        """Array namespace of the weights (numpy unless ``config.backend`` names another)."""
        return get_backend(self.config.backend)[0]

    @property
    def lif(self) -> DiscreteLIF:
        """The per-step model (:class:`~spikeff.neuron.DiscreteLIF`) of ``config.neuron``, built
        once per config (see :meth:`_model`)."""
        return self._model()[0]

    def _model(self):
        """``(DiscreteLIF, Goodness)`` of the current config: resolved once and kept until
        ``config`` is replaced, not rebuilt per phase or per access."""
        c = self.config
        cached = getattr(self, "_model_cache", None)
        if cached is None or cached[0] is not c:
            cached = (c, DiscreteLIF.from_config(c.neuron), get_goodness(c.goodness))
            self._model_cache = cached
        return cached[1], cached[2]

    def effective_biases(self, numpy: bool = False) -> list:
        """The biases the model applies (the one place of the ``learn_bias`` rule): ``biases_``
        when ``config.learn_bias``, else none. ``numpy``: float64 numpy arrays, zeros for no bias
        (what the exporters write); else the network's own arrays, None for no bias (engines)."""
        from .backend import to_numpy
        if numpy:
            return [np.asarray(to_numpy(b), np.float64) if self.config.learn_bias else np.zeros(np.shape(b))
                    for b in self.biases_]
        return list(self.biases_) if self.config.learn_bias else [None] * len(self.biases_)

    def _check_fitted(self):
        if not hasattr(self, "weights_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError("this FFNetwork is not fitted yet: call fit(X, y) or FFNetwork.load(path)")

    def initialize(self, n_features: int, n_classes: int):
        """Create weights (and optimizers) for inputs of ``n_features`` and ``n_classes`` labels."""
        c = self.config
        rng = np.random.default_rng(np.random.SeedSequence([c.seed, 0]))
        self.n_features_in_ = int(n_features)
        self.n_classes_ = int(n_classes)
        self._classes = None                            # classes_: 0..n_classes-1 (fit sets y's labels)
        sizes = [self.n_inputs, *c.hidden_sizes]
        self.weights_, self.biases_ = [], []
        xp, device = get_backend(c.backend)
        shapes = list(zip(sizes[1:], sizes[:-1]))
        if c.layers:            # conv layers: kernels (channels, C*k*k + labels), one bias per channel
            if c.input_shape and int(np.prod(c.input_shape)) != self.n_features_in_:
                raise ValueError(f"input_shape {list(c.input_shape)} has {int(np.prod(c.input_shape))} values, "
                                 f"the data have {self.n_features_in_} features")
            shapes = [g.weight_shape for g in self.geometries]
            fan_in = [g.fan_in for g in self.geometries]
        for l, (n, m) in enumerate(shapes):
            W = (rng.standard_normal((n, m)) * c.weight_init / np.sqrt(fan_in[l] if c.layers else m)).astype(self.dtype)
            self.weights_.append(to_backend(W, xp, device, self.dtype))
            self.biases_.append(to_backend(np.zeros(n), xp, device, self.dtype))
        self.optimizers_ = [make_optimizer(c.optimizer, [W, b], c.learning_rate)
                            for W, b in zip(self.weights_, self.biases_)]
        n_features = sum(c.hidden_sizes) * READOUT_INPUTS[c.readout_input]
        self.readout_ = (LinearReadout(n_features, n_classes, c.readout_learning_rate)
                         if c.readout else None)
        self.epochs_done_ = 0
        self.history_ = []
        from .runs import ThreadSettings
        self.threads_ = ThreadSettings.default()
        return self

    # -- simulation ---------------------------------------------------------------------------
    def _source(self, X, labels, seed, rows_per_noise=1):
        c = self.config
        if getattr(X, "n_steps", None) is not None:          # spike/event input (spikeff.events)
            from .events import event_source
            return event_source(X, labels, self.n_classes_, c, seed, rows_per_noise, self.dtype)
        inten = overlay_labels(np.asarray(X, dtype=np.float64), labels, self.n_classes_,
                               c.label_repeat, c.label_intensity)
        return SpikeSource(inten, c.encoding, c.n_steps, c.neuron.dt, c.max_rate, seed,
                           rows_per_noise=rows_per_noise, dtype=self.dtype, latency_period=c.latency_period)

    def _input(self, X):
        """Event lists and spike tensors as :class:`spikeff.events.SpikeTrains`; images unchanged."""
        from .events import as_network_input
        return as_network_input(X, self.config)

    @property
    def store_budget_mb(self) -> float:
        """Memory (MiB) training may use to keep the first pass's learning factors instead of
        replaying (:func:`spikeff.engines.vectorized.store_bytes`); 0: always replay. A run-time
        setting like the thread counts, not part of the model's config: ``FFNetwork(...,
        store_budget_mb=...)``, else env ``SPIKEFF_STORE_BUDGET_MB``, else 1024."""
        if self._store_budget_mb is not None:
            return self._store_budget_mb
        return _store_budget_from_env()

    @store_budget_mb.setter
    def store_budget_mb(self, value):
        if value is not None:
            _check_budget(value, "store_budget_mb")
        self._store_budget_mb = None if value is None else float(value)

    def store_fits(self, rows: int) -> bool:
        """Whether training keeps the learning factors of ``rows`` batch rows (store) instead of
        replaying: the vectorized engine, and ``T x rows x sum(N + M)`` numbers within
        :attr:`store_budget_mb`."""
        from .engines.vectorized import store_bytes
        c = self.config
        if c.has_conv:          # the conv engine stores on numpy (potentials and traces of every layer)
            from .engines.conv import store_bytes as conv_store_bytes
            nbytes = conv_store_bytes(self.geometries, rows, c.n_steps, np.dtype(self.dtype).itemsize)
            return c.engine == "vectorized" and c.backend == "numpy" and nbytes <= self.store_budget_mb * 2**20
        return (c.engine == "vectorized"
                and store_bytes(self.weights_, rows, c.n_steps) <= self.store_budget_mb * 2**20)

    def _update(self, both, modulators, res):
        """The layers' updates of the phases of source ``both`` with the ``modulators``: from
        ``res.stored`` when the first pass kept them (``keep``), else by replaying ``both``."""
        if res is not None and res.stored is not None:
            if self.config.has_conv:
                from .engines.conv import grads_from_store
            else:
                from .engines.vectorized import grads_from_store
            return grads_from_store(res.stored, modulators)
        return self._run(both, modulators=modulators).grads

    def _loss_goodness(self, res) -> list:
        """Per layer, the goodness the FF loss sees in the phase result ``res``: the layer's (B,),
        or, for a conv layer with ``goodness_scope = "channel"``, each channel's (B, channels)
        (:func:`spikeff.layers.channel_means` of the per-neuron goodness)."""
        if not any(s.channel_goodness for s in self.config.layers):
            return list(res.goodness)
        from .layers import channel_means
        return [channel_means(ng, geo) if geo.spec.channel_goodness else g
                for g, ng, geo in zip(res.goodness, res.neuron_goodness, self.geometries)]

    def _engine(self):
        """The engine's ``run_phase`` for this model (one instance per model and engine name, so an
        engine with state, e.g. Brian2's persistent network, keeps it across batches)."""
        if getattr(self, "_engine_name", None) != self.config.engine:
            self._engine_name, self._engine_run = self.config.engine, make_engine(self.config.engine)
        return self._engine_run

    @property
    def geometries(self):
        """Per-layer :class:`spikeff.layers.Geometry` of a ``[[layers]]`` network (None otherwise)."""
        c = self.config
        if not c.layers:
            return None
        from .layers import layer_geometries
        return layer_geometries(c.layers, c.input_shape or None, self.n_inputs)

    @property
    def n_inputs(self) -> int:
        """Input channels per sample: the image's features, then ``n_classes * label_repeat`` label channels."""
        return self.n_features_in_ + self.n_classes_ * self.config.label_repeat

    def dense_equivalent(self):
        """(weights, biases) of the equivalent dense network (numpy; conv layers expanded, pooling
        folded into the next layer, see :func:`spikeff.layers.dense_expansion`): what the exports
        and the Brian2 engine simulate. The network's own arrays when it has no conv layer."""
        from .backend import to_numpy
        self._check_fitted()
        W = [to_numpy(w) for w in self.weights_]
        b = [to_numpy(x) for x in self.biases_]
        if not self.config.has_conv:
            return W, b
        from .layers import dense_expansion, expand_bias
        geos = self.geometries
        return dense_expansion(W, geos), [expand_bias(x, g) for x, g in zip(b, geos)]

    def dense_network(self) -> "FFNetwork":
        """The equivalent network of dense layers (:meth:`dense_equivalent`, numpy arrays), with
        the same readout, labels and encoding: the same spikes as this one. What the Lava export
        and the Brian2 engine run for a conv network; ``self`` when there is no conv layer."""
        if not self.config.has_conv:
            return self
        W, b = self.dense_equivalent()
        # (the image's mirror, when the readout uses it, is the readout's: readout_.mirror_shape)
        d = FFNetwork(self.config.replace(layers=(), input_shape=(), backend="numpy", readout_mirror=False,
                                          train_mirror=False))
        d.n_features_in_, d.n_classes_, d.classes_ = self.n_features_in_, self.n_classes_, self.classes_
        d.weights_, d.biases_ = W, b
        d.readout_, d.epochs_done_, d.history_ = self.readout_, self.epochs_done_, self.history_
        d.threads_ = getattr(self, "threads_", None)
        return d

    def _run(self, source, modulators=None, record=False, keep=None, engine=None):
        """Simulate one phase on ``source`` with this model's engine, or with ``engine`` (any
        callable of :class:`spikeff.engines.base.Engine`'s signature, e.g. the Lava engine of
        :func:`spikeff.engines.make_engine`; conv layers run as their dense expansion there)."""
        c = self.config
        kw = {"normalize": True} if c.normalization == "length" else {}
        if c.has_conv:
            if c.engine != "vectorized" or engine is not None:   # e.g. Brian2: the equivalent dense network
                if modulators is not None:
                    raise ValueError(f"engine {c.engine!r} runs conv layers as their dense expansion, "
                                     "without learning: train with engine = 'vectorized'")
                return self.dense_network()._run(source, record=record, engine=engine)
            from .engines.conv import run_phase
            kw["geometries"] = self.geometries
            if keep is not None:
                kw["keep"] = keep
        elif engine is not None:
            run_phase = engine
        else:
            run_phase = self._engine()
            if keep is not None:
                kw["keep"] = keep
        lif, goodness = self._model()
        return run_phase(self.weights_, self.effective_biases(), lif, goodness, source,
                         c.chunk_steps, modulators=modulators, record=record, **kw)

    def simulate(self, X, labels=None, seed: int = 0, record: bool = True):
        """Simulate one phase (labels: ints, or None for the neutral label) and return the PhaseResult,
        with input spikes, spikes and membrane potentials of every layer when ``record``."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        labels = np.full(len(X), NEUTRAL) if labels is None else np.broadcast_to(labels, (len(X),))
        return self._run(self._source(X, labels, seed), record=record)

    def simulate_spikes(self, spikes, record: bool = True):
        """Simulate one phase on given input spike trains ``spikes`` (T, batch, inputs), label channels
        included (e.g. ``simulate(...).record["input"]``, or spikes another simulator was fed)."""
        self._check_fitted()
        spikes = np.asarray(spikes)
        n_in = self.n_inputs
        if spikes.ndim != 3 or spikes.shape[2] != n_in:
            raise DataError(f"spikes: must have shape (T, batch, {n_in}), got {spikes.shape}")
        return self._run(ArraySource(spikes, self.dtype), record=record)

    def goodness(self, X, labels, seed: int = 0) -> np.ndarray:
        """Goodness of each layer for X with the given labels, shape (n_samples, n_layers)."""
        res = self.simulate(X, labels, seed=seed, record=False)
        return np.stack(res.goodness, axis=1)

    def label_sources(self, X, seed: int = 0):
        """Yield ``(n, source)`` per evaluation batch: ``n`` samples, each repeated with every
        candidate label (rows ``k*C .. k*C+C-1`` = sample k), all labels sharing the image spikes.
        The one place that fixes evaluation batching and seeds (the Lava export reuses it)."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        C = self.n_classes_
        bs = max(1, self.config.eval_batch_size // C)
        for i in range(0, len(X), bs):
            xb = X[i:i + bs]
            yield len(xb), self._source(np.repeat(xb, C, axis=0), np.tile(np.arange(C), len(xb)),
                                        seed=[self.config.seed, PHASE_IDS["eval"], seed, i], rows_per_noise=C)

    def neutral_sources(self, X, seed: int = 0):
        """Yield ``(n, source)`` per evaluation batch with the neutral label (for the readout)."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        bs = self.config.eval_batch_size
        for i in range(0, len(X), bs):
            xb = X[i:i + bs]
            yield len(xb), self._source(xb, np.full(len(xb), NEUTRAL),
                                        seed=[self.config.seed, PHASE_IDS["neutral"], seed, i])

    def goodness_per_label(self, X, seed: int = 0) -> np.ndarray:
        """Goodness of every candidate label, shape (n_samples, n_classes, n_layers).

        All candidate labels of a sample see the same image spikes
        (:func:`spikeff.inference.goodness_per_label`, with this model's engine).
        """
        return inference.goodness_per_label(self, X, seed)

    def _layer_mask(self):
        L = len(self.weights_)
        if self.config.goodness_layers == "skip_first" and L > 1:
            return np.arange(L) >= 1
        return np.ones(L, dtype=bool)

    def readout_features(self, X, seed: int = 0) -> np.ndarray:
        """Unit-normalised per-neuron goodness of every layer with the neutral label (readout input;
        with ``readout_input = "goodness_and_counts"`` the unit-normalised spike counts follow)."""
        return inference.readout_features(self, X, seed)

    def _readout_input(self, neuron_goodness, spike_counts) -> np.ndarray:
        """The readout's features from one neutral-label pass's per-layer results, by
        ``config.readout_input`` (:func:`spikeff.readout.readout_features`)."""
        counts = spike_counts if self.config.readout_input == "goodness_and_counts" else None
        return readout_features(neuron_goodness, counts)

    # -- prediction ----------------------------------------------------------------------------
    def predict(self, X, method: str | None = None) -> np.ndarray:
        """Predicted labels. ``method``: "goodness" (try every label, highest summed goodness
        wins) or "readout" (one pass with the neutral label and the linear readout)."""
        positions = inference.predict(self, X, method)         # checks that the network is fitted
        return self.classes_[positions]

    def score(self, X, y, method: str | None = None) -> float:
        """Accuracy on (X, y)."""
        self._check_fitted()
        X, y = check_X_labels(self._input(X), y, self.classes_, self.n_features_in_)
        return float(np.mean(self.predict(X, method) == self.classes_[y]))

    # -- training ------------------------------------------------------------------------------
    def negative_data(self, X, y, seed, rng, readout_logits=None):
        """(positive labels, negative inputs, negative labels) of a batch, by ``config.negatives``
        (see :mod:`spikeff.negatives`). ``hybrid``: neutral labels, hybrid images as negatives.
        ``readout_hard`` needs ``readout_logits`` (the readout's logits of the neutral-label pass)."""
        c = self.config
        if c.negatives == "hybrid":
            neutral = np.full(len(X), NEUTRAL)
            return neutral, hybrid_images(X, rng), neutral
        if c.negatives == "hard":
            scores = inference.label_scores(self.goodness_per_label(X, seed=seed[-1]), self._layer_mask())
            return y, X, hard_wrong_labels(y, scores, rng)
        if c.negatives == "readout_hard":
            if readout_logits is None:
                raise ValueError("negatives = 'readout_hard' needs the readout's logits of the neutral-label pass")
            return y, X, hard_wrong_labels(y, readout_logits, rng)
        return y, X, random_wrong_labels(y, self.n_classes_, rng)

    def _apply_grads(self, grads_per_run):
        """One optimizer step per layer on the sum of the runs' gradients [(dW, db) per layer]."""
        for l, opt in enumerate(self.optimizers_):
            dW, db = grads_per_run[0][l]
            for g in grads_per_run[1:]:
                dW, db = dW + g[l][0], db + g[l][1]
            if not self.config.learn_bias:
                db = db * 0
            opt.step([self.weights_[l], self.biases_[l]], [dW, db])
        xp = self.xp
        for l, (W, b) in enumerate(zip(self.weights_, self.biases_)):
            if not (bool(xp.all(xp.isfinite(W))) and bool(xp.all(xp.isfinite(b)))):
                raise FloatingPointError(f"layer {l} weights became non-finite (NaN/inf) during training; "
                                         f"lower learning_rate or weight_init")

    def _shared_input(self, X):
        """A :class:`spikeff.encoding.SharedInput` for a training batch with ``shared_input_noise``:
        every phase draws its input spikes from the positive phase's random numbers, so a sample's
        image spikes are the same in all of them (as every candidate label's in prediction by
        goodness) and only the label channels differ; the vectorized and conv engines then compute
        the first layer's current and update from the image once per sample. With the regular code
        (no random numbers: a sample's image spikes are the same in every phase anyway) the option
        changes only that computation. None when off, for hybrid negatives (other images), for the
        latency code and for spike input (its spikes are given)."""
        c = self.config
        if (not c.shared_input_noise or c.negatives == "hybrid" or c.encoding not in ("rate", "regular")
                or getattr(X, "n_steps", None) is not None):
            return None
        from .encoding import SharedInput
        return SharedInput(self.n_features_in_)

    def train_phase(self, X, labels, seed, phase: str) -> list:
        """One FF update from a single phase alone: ``phase="positive"`` raises the goodness of
        (X, labels), ``"negative"`` lowers it, with the same local rule and optimizer as
        :meth:`train_batch` (for "sleep" schedules where the phases are far apart in time). Needs
        the ``threshold`` loss, whose positive and negative terms are separate. Returns the mean
        goodness of each layer."""
        c = self.config
        if c.loss != "threshold":
            raise ValueError(f"train_phase needs loss = 'threshold' (the {c.loss!r} loss couples the two phases)")
        if phase not in ("positive", "negative"):
            raise ValueError(f"phase: {phase!r} is not valid; choose one of ['positive', 'negative']")
        src = self._source(X, labels, seed)
        rows = slice(0, src.shape[0])
        res = self._run(src, keep=rows if self.store_fits(src.shape[0]) else None)
        _check_finite_goodness(res.goodness, f"{phase} phase")
        mods = [ff_loss(g, g, c.loss, c.goodness_threshold, c.loss_sharpness)[1 if phase == "positive" else 2]
                for g in self._loss_goodness(res)]
        self._apply_grads([self._update(src, mods, res)])
        return [float(g.mean()) for g in res.goodness]

    def train_batch(self, X, y, seed) -> dict:
        """One FF step on a batch (``y``: class positions 0..n_classes-1, see :meth:`fit`). Returns
        per-layer loss and mean goodness of both phases."""
        c = self.config
        rng = np.random.default_rng(np.random.SeedSequence(seed + [0]))
        out = {}
        share = self._shared_input(X)
        phase_seed = ((lambda phase: seed + [PHASE_IDS["positive"]]) if share is not None
                      else (lambda phase: seed + [PHASE_IDS[phase]]))
        src_neutral = (self._source(X, np.full(len(X), NEUTRAL), phase_seed("neutral"))
                       if self.readout_ is not None else None)
        # the phases are separate simulations from rest; those that need no result of another run
        # side by side as one batch (larger GEMMs, one time loop), each with its own input spikes
        # (or, with shared_input_noise, the same image spikes: phase_seed gives them one seed)
        neutral_F = None           # the readout's input, from the neutral-label pass
        readout_logits = None
        if src_neutral is not None and c.negatives == "readout_hard":
            if share is not None:
                src_neutral.shared_input = share
            neutral = self._run(src_neutral)      # the negatives depend on the readout's view
            _check_finite_goodness(neutral.goodness, "neutral-label phase")
            neutral_F = self._readout_input(neutral.neuron_goodness, neutral.spike_counts)
            readout_logits = self.readout_.logits(neutral_F)
        y_pos, X_neg, y_neg = self.negative_data(X, y, seed, rng, readout_logits)
        src_pos = self._source(X, y_pos, phase_seed("positive"))
        src_neg = self._source(X_neg, y_neg, phase_seed("negative"))
        both = ConcatSource([src_pos, src_neg], None if share is None else share.for_copies(2))
        with_neutral = src_neutral is not None and neutral_F is None
        first = (ConcatSource([src_neutral, src_pos, src_neg], None if share is None else share.for_copies(3))
                 if with_neutral else both)
        # store (keep the positive and negative rows' learning factors) or replay, by the budget
        rows = slice(first.shape[0] - both.shape[0], first.shape[0])
        store = self.store_fits(both.shape[0])
        res = self._run(first, keep=rows if store else None)
        parts = [first.split(g) for g in res.goodness]      # per layer: ([neutral,] positive, negative)
        g_pos, g_neg = [p[-2] for p in parts], [p[-1] for p in parts]
        if with_neutral:
            _check_finite_goodness([p[0] for p in parts], "neutral-label phase")
            neutral_F = self._readout_input([first.split(g)[0] for g in res.neuron_goodness],
                                            [first.split(n)[0] for n in res.spike_counts])
        if neutral_F is not None:
            out["readout_loss"] = self.readout_.step(neutral_F, y)
            if not (np.isfinite(out["readout_loss"]) and np.all(np.isfinite(self.readout_.W))):
                raise FloatingPointError("readout: loss or weights became non-finite (NaN/inf); "
                                         "lower readout_learning_rate")
        _check_finite_goodness(g_pos, "positive phase")
        _check_finite_goodness(g_neg, "negative phase")
        losses, mods = [], []
        loss_parts = [first.split(g) for g in self._loss_goodness(res)]   # (B,), or (B, C) per channel
        for l, p in enumerate(loss_parts):
            value, mp, mn = ff_loss(p[-2], p[-1], c.loss, c.goodness_threshold, c.loss_sharpness)
            if not np.isfinite(value):
                raise FloatingPointError(f"layer {l}: the FF loss is non-finite ({value}); "
                                         "lower learning_rate or weight_init")
            losses.append(value)
            mods.append(np.concatenate([mp, mn]))
        self._apply_grads([self._update(both, mods, res)])
        out.update(loss=losses, g_pos=[float(g.mean()) for g in g_pos],
                   g_neg=[float(g.mean()) for g in g_neg], update="store" if store else "replay")
        return out

    def train_epoch(self, X, y, epoch: int, progress: bool = False, n_epochs: int | None = None) -> dict:
        """One pass over (X, y) in shuffled batches (``y``: class positions). Returns the epoch's
        training metrics.

        ``n_epochs``: the length of the learning-rate schedule (default: ``config.epochs``);
        :meth:`continue_fit` passes the number of epochs it trains to."""
        c = self.config
        n_epochs = c.epochs if n_epochs is None else n_epochs
        rng = np.random.default_rng(np.random.SeedSequence([c.seed, 1, epoch]))
        order = rng.permutation(len(X))
        for opt in self.optimizers_:
            opt.lr = c.learning_rate * lr_factor(c.lr_schedule, epoch, n_epochs)
        batches = [order[i:i + c.batch_size] for i in range(0, len(X), c.batch_size)]
        it = batches
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(batches, desc=f"epoch {epoch + 1}/{n_epochs}", unit="batch", leave=False)
        L = len(self.weights_)
        acc = {"loss": np.zeros(L), "g_pos": np.zeros(L), "g_neg": np.zeros(L), "readout_loss": 0.0}
        t0 = time.perf_counter()
        for bi, idx in enumerate(it):
            Xb = X[idx]
            if c.train_mirror:         # data augmentation: a random half of the images mirrored
                flip = rng.random(len(idx)) < 0.5
                Xb[flip] = mirror_images(Xb[flip], c.input_shape)
            try:
                m = self.train_batch(Xb, y[idx], seed=[c.seed, 2, epoch, bi])
            except FloatingPointError as e:
                raise FloatingPointError(f"epoch {epoch + 1}, batch {bi + 1}/{len(batches)}: {e}") from None
            w = len(idx) / len(X)
            for k in ("loss", "g_pos", "g_neg"):
                acc[k] += w * np.asarray(m[k])
            acc["readout_loss"] += w * m.get("readout_loss", 0.0)
            if progress:
                it.set_postfix(loss=f"{np.mean(m['loss']):.3f}")
        seconds = time.perf_counter() - t0
        return {"epoch": epoch + 1, "ff_loss": acc["loss"].tolist(), "g_pos": acc["g_pos"].tolist(),
                "g_neg": acc["g_neg"].tolist(),
                "readout_loss": float(acc["readout_loss"]) if self.readout_ is not None else None,
                "train_seconds": seconds, "samples_per_s": len(X) / seconds}

    def fit(self, X, y, X_val=None, y_val=None, epochs: int | None = None, progress: bool = False,
            callback=None, n_classes: int | None = None, val_methods=None, threads=None):
        """Train from scratch for ``epochs`` (default: config.epochs). Returns self.

        ``X``: intensities (n_samples, n_features) in [0, 1], or spike input (:mod:`spikeff.events`):
        a (T, B, M) 0/1 spike tensor, :class:`~spikeff.events.SpikeTrains`, an
        :class:`~spikeff.events.EventList` or a list of tonic event arrays (binned into ``n_steps``
        steps of ``dt``); ``predict`` and ``score`` take the same kinds. ``y``: class labels of any
        sortable kind (integers, strings, ...), kept sorted in ``classes_``, which ``predict``
        returns; ``n_classes``: the labels are the integers 0..n_classes-1, some maybe absent from ``y``.
        (Label channel ``k`` of the input carries class ``classes_[k]``; :meth:`goodness`,
        :meth:`simulate` and the exports take these positions ``k``.)

        ``(X_val, y_val)``: a validation split (never the test set): after each epoch its accuracy
        by each of ``val_methods`` (default: goodness and readout) is recorded as ``val_acc_METHOD``
        in the epoch's metrics, which are appended to ``history_``; ``callback(self, metrics)`` is
        then called. ``threads``: a :class:`spikeff.runs.ThreadSettings` (default: the usable CPUs)
        pinned during training and kept in ``threads_`` (saved with the model) so that a resumed or
        repeated run uses the same BLAS thread count, on which float results depend.
        """
        X = check_X(self._input(X))
        classes = fit_classes(check_y_shape(X, y), n_classes)
        self.initialize(X.shape[1], len(classes))
        self.classes_ = classes
        if threads is not None:
            self.threads_ = threads
        return self.continue_fit(X, y, X_val, y_val, epochs=epochs, progress=progress, callback=callback,
                                 val_methods=val_methods)

    def continue_fit(self, X, y, X_val=None, y_val=None, epochs=None, progress=False, callback=None,
                     val_methods=None):
        """Train a fitted network further (epochs count on from ``epochs_done_``), with the BLAS and
        engine threads pinned to ``threads_``. The learning-rate schedule spans ``epochs``."""
        from .runs import pinned_threads
        self._check_fitted()
        X, y = check_X_labels(self._input(X), y, self.classes_, self.n_features_in_)
        if X_val is not None:
            X_val, y_val = self._input(X_val), np.asarray(y_val)
            check_X_labels(X_val, y_val, self.classes_, self.n_features_in_)   # fails before training
        epochs = self.config.epochs if epochs is None else epochs
        if self.config.readout_mirror or self.config.train_mirror:      # fails before training
            mirror_images(X[:1] if isinstance(X, np.ndarray) else X, self.config.input_shape)
        if val_methods is None:
            val_methods = ((["goodness"] if self.config.negatives != "hybrid" else [])
                           + (["readout"] if self.readout_ is not None else []))
        with pinned_threads(self.threads_):
            while self.epochs_done_ < epochs:
                m = self.train_epoch(X, y, self.epochs_done_, progress=progress, n_epochs=epochs)
                refit = self._final_readout(X, y) if self.epochs_done_ + 1 == epochs else None
                if refit is not None:
                    m["readout_final_loss"], m["readout_final_seconds"] = refit
                if X_val is not None:
                    t0 = time.perf_counter()
                    try:
                        for method in val_methods:
                            m[f"val_acc_{method}"] = self.score(X_val, y_val, method)   # labels as given
                    except FloatingPointError as e:
                        raise FloatingPointError(f"epoch {self.epochs_done_ + 1}, validation: {e}") from None
                    m["val_acc"] = m.get(f"val_acc_{self.config.predict_method}")
                    m["eval_seconds"] = time.perf_counter() - t0
                self.epochs_done_ += 1
                self.history_.append(m)
                if callback is not None:
                    callback(self, m)
        return self

    def fit_readout(self, X, y, epochs: int = 5, batch_size: int = 256) -> float:
        """Retrain the linear readout on the network's current neutral-label features.

        The features are computed once (one forward pass per sample, O(n_samples * n_hidden)
        memory), so the readout no longer chases features that drift during FF training.
        Returns the mean cross-entropy of the last epoch. ``y``: class labels (values of ``classes_``).
        The config's ``readout_mirror`` and ``readout_final_label_smoothing`` apply, as in the refit
        after the last epoch.
        """
        self._check_fitted()
        if self.readout_ is None:
            raise ValueError("fit_readout needs a network with readout = true")
        X, y = check_X_labels(X, y, self.classes_, self.n_features_in_)
        return self._fit_readout(X, y, epochs, batch_size)

    def final_readout(self, X, y):
        """The config's readout refit after the last epoch (``readout_final_epochs`` epochs with
        ``readout_final_schedule``, as :meth:`fit` does it), for training loops of their own.
        Returns ``(loss, seconds)``, or None when the config asks for no refit."""
        self._check_fitted()
        X, y = check_X_labels(X, y, self.classes_, self.n_features_in_)
        return self._final_readout(X, y)

    def _final_readout(self, X, y):
        """:meth:`final_readout` on checked ``X`` and class positions ``y``."""
        if self.readout_ is None or not self.config.readout_final_epochs:
            return None
        t0 = time.perf_counter()
        loss = self._fit_readout(X, y, self.config.readout_final_epochs)
        return loss, time.perf_counter() - t0

    def _fit_readout(self, X, y, epochs: int, batch_size: int = 256) -> float:
        """:meth:`fit_readout` on checked ``X`` and class positions ``y``."""
        c = self.config
        seed = PHASE_IDS["neutral"]
        if c.readout_mirror:
            # the training images and their mirror images; float32 features (the two sets of a large
            # training set take as much memory as one set in float64)
            n = len(X)
            F = np.empty((2 * n, self.readout_.W.shape[0]), np.float32)
            inference.readout_features(self, X, seed, out=F[:n])
            inference.readout_features(self, mirror_images(X, c.input_shape), seed, out=F[n:])
            y = np.concatenate([y, y])
        else:
            F = self.readout_features(X, seed=seed)
        self.readout_ = LinearReadout(F.shape[1], self.n_classes_, c.readout_learning_rate)
        self.readout_.mirror_shape = tuple(c.input_shape) if c.readout_mirror else None
        rng = np.random.default_rng(np.random.SeedSequence([c.seed, 3]))
        loss = float("nan")
        for epoch in range(epochs):
            self.readout_.opt.lr = c.readout_learning_rate * lr_factor(c.readout_final_schedule, epoch, epochs)
            loss = self.readout_.fit_epoch(F, y, rng.permutation(len(F)), batch_size,
                                           c.readout_final_label_smoothing)
        return loss

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path):
        """Save weights, optimizer state, config and history (versioned .npz, written atomically)."""
        from .io import save_network
        save_network(self, path)

    @classmethod
    def load(cls, path) -> "FFNetwork":
        from .io import load_network
        return load_network(path)
