"""Plain dataclass configs, read from ``models/*.toml``.

Quantities are written with units in TOML (``tau_mem = "10 ms"``) and stored in spikeff's internal
units (seconds, millivolts, hertz; see :mod:`spikeff.units`). Every field is checked when the
config is made, with an error that names the field and the allowed values.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from .backend import BACKENDS
from .encoding import ENCODINGS
from .engines import available_engines
from .goodness import available_goodness
from .inference import METHODS as PREDICT_METHODS
from .learning import LOSSES, LR_SCHEDULES, OPTIMIZERS
from .negatives import NEGATIVES
from .readout import READOUT_INPUTS
from .units import parse_quantity

# choices that only the network itself implements (the others come from their modules' registries)
NORMALIZATIONS = ("none", "length")
DTYPES = ("float32", "float64")
GOODNESS_LAYERS = ("all", "skip_first")
SECTIONS = ("network", "encoding", "goodness", "training")   # TOML tables that only group keys
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def choices() -> dict:
    """The allowed values of every choice field of :class:`FFConfig`, read from the registries
    that implement them at the time of the call (so a goodness added with
    :func:`spikeff.goodness.register_goodness` can be named in a config)."""
    return {"encoding": tuple(ENCODINGS), "goodness": tuple(available_goodness()), "loss": tuple(LOSSES),
            "negatives": tuple(NEGATIVES), "optimizer": tuple(OPTIMIZERS), "normalization": NORMALIZATIONS,
            "lr_schedule": tuple(LR_SCHEDULES), "readout_final_schedule": tuple(LR_SCHEDULES),
            "readout_input": tuple(READOUT_INPUTS),
            "predict_method": PREDICT_METHODS, "dtype": DTYPES,
            "engine": tuple(available_engines()), "backend": tuple(BACKENDS),
            "goodness_layers": GOODNESS_LAYERS}


class ConfigError(ValueError):
    """A config field holds a value outside its allowed range."""


def _check(cond: bool, name: str, msg: str):
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _check_choice(value, name, choices):
    _check(isinstance(value, str) and value in choices, name,
           f"{value!r} is not valid; choose one of {list(choices)}")


def _quantity(value, dimension, name) -> float:
    """``parse_quantity`` with its errors turned into :class:`ConfigError` (they name the field)."""
    try:
        return parse_quantity(value, dimension, name)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_pos(value, name, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    _check(ok, name, f"must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class NeuronConfig:
    """Current-based LIF neuron (all layers share it). Times in s, potentials in mV, measured from
    rest. The model (continuous and discrete form) is written once, in :mod:`spikeff.neuron`.
    """

    dt: float = 1e-3
    tau_syn: float = 5e-3
    tau_mem: float = 10e-3
    v_threshold: float = 1.0
    v_reset: float = 0.0
    refractory: float = 0.0

    _DIMS = {"dt": "time", "tau_syn": "time", "tau_mem": "time", "v_threshold": "voltage",
             "v_reset": "voltage", "refractory": "time"}

    def __post_init__(self):
        _check_pos(self.dt, "neuron.dt")
        _check_pos(self.tau_syn, "neuron.tau_syn", allow_zero=True)
        _check_pos(self.tau_mem, "neuron.tau_mem")
        _check(self.tau_syn >= self.dt or self.tau_syn == 0, "neuron.tau_syn",
               f"must be >= dt ({self.dt} s), or 0 for no synaptic current (a_syn = 0), got {self.tau_syn} s")
        _check(self.tau_mem >= self.dt, "neuron.tau_mem", f"must be >= dt ({self.dt} s), got {self.tau_mem} s")
        _check_pos(self.v_threshold, "neuron.v_threshold")
        _check(isinstance(self.v_reset, (int, float)) and not isinstance(self.v_reset, bool)
               and math.isfinite(self.v_reset)
               and self.v_reset < self.v_threshold, "neuron.v_reset",
               f"must be finite and below v_threshold, got {self.v_reset}")
        _check_pos(self.refractory, "neuron.refractory", allow_zero=True)

    @classmethod
    def from_dict(cls, d: dict) -> "NeuronConfig":
        unknown = set(d) - set(cls._DIMS)
        _check(not unknown, "neuron", f"unknown keys {sorted(unknown)}; valid keys are {sorted(cls._DIMS)}")
        return cls(**{k: _quantity(v, cls._DIMS[k], f"neuron.{k}") for k, v in d.items()})


@dataclass(frozen=True)
class FFConfig:
    """Everything that defines a spiking Forward-Forward network and its training.

    Grouped in TOML under [network], [neuron], [encoding], [goodness], [training]; the sections only
    organise the file, every key is a field of this class (or of :class:`NeuronConfig`).
    """

    # [network]
    hidden_sizes: tuple = (500, 500)
    n_steps: int = 20
    weight_init: float = 1.0           # std of initial weights times sqrt(fan_in), in mV
    learn_bias: bool = False
    normalization: str = "none"        # "length": per-step length normalisation between layers
    dtype: str = "float32"
    engine: str = "vectorized"
    backend: str = "numpy"             # array library of the vectorized engine: numpy, cupy (GPU), torch
    chunk_steps: int = 10              # time steps simulated per GEMM (memory is O(chunk), not O(T))
    layers: tuple = ()                 # [[layers]] (conv and dense, see spikeff.layers); empty: hidden_sizes
    input_shape: tuple = ()            # (C, H, W) of the image, needed by conv layers
    # [encoding]
    encoding: str = "rate"
    max_rate: float = 500.0            # Hz at intensity 1 (rate code: p = x * max_rate * dt)
    label_repeat: int = 1              # input channels per class for the label overlay
    label_intensity: float = 1.0
    latency_period: int = 0            # latency code: repeat the pattern every this many steps (0: once)
    shared_input_noise: bool = False   # training: a batch's phases draw the same input spikes, and the engines compute
    #                                    the first layer's image current once per sample (see FFNetwork.train_batch)
    # [goodness]
    goodness: str = "energy_relu"
    goodness_threshold: float = 1.0
    goodness_layers: str = "all"       # "all" or "skip_first" (Hinton) for goodness prediction
    loss: str = "threshold"
    loss_sharpness: float = 1.0
    negatives: str = "random"
    # [training]
    optimizer: str = "adam"
    learning_rate: float = 0.01
    lr_schedule: str = "constant"      # "constant" or "cosine" (to 5% of learning_rate at the last epoch)
    batch_size: int = 64
    epochs: int = 5
    readout: bool = True
    readout_learning_rate: float = 0.01
    readout_final_epochs: int = 0      # after the last epoch, refit the readout on fixed features
    readout_final_schedule: str = "constant"   # the refit's learning-rate schedule over its epochs (as lr_schedule)
    readout_final_label_smoothing: float = 0.0   # the refit's targets: (1 - s) one-hot + s / n_classes
    readout_input: str = "goodness"    # or "goodness_and_counts": the spike counts appended (spikeff.readout)
    readout_mirror: bool = False       # refit also on left-right mirror images; predict from image + mirror
    train_mirror: bool = False         # FF training: a random half of each batch's images mirrored left-right
    predict_method: str = "goodness"
    eval_batch_size: int = 256
    seed: int = 0
    neuron: NeuronConfig = field(default_factory=NeuronConfig)

    def __post_init__(self):
        hs = self.hidden_sizes
        _check(isinstance(hs, (tuple, list)) and len(hs) >= 1, "hidden_sizes",
               f"must be a non-empty list of layer sizes, got {hs!r}")
        for i, n in enumerate(hs):
            _check(_is_int(n) and n > 0, "hidden_sizes",
                   f"layer {i} size must be a positive integer, got {n!r}")
        object.__setattr__(self, "hidden_sizes", tuple(hs))
        if self.layers or self.input_shape:
            self._check_layers()
        for name in ("n_steps", "label_repeat", "batch_size", "chunk_steps", "eval_batch_size"):
            v = getattr(self, name)
            _check(_is_int(v) and v > 0, name, f"must be a positive integer, got {v!r}")
        _check(_is_int(self.epochs) and self.epochs >= 0, "epochs", f"must be an integer >= 0, got {self.epochs!r}")
        _check(_is_int(self.latency_period) and self.latency_period >= 0, "latency_period",
               f"must be an integer >= 0 (time steps; 0 = one latency spike per window), got {self.latency_period!r}")
        _check(_is_int(self.seed) and self.seed >= 0, "seed", f"must be an integer >= 0, got {self.seed!r}")
        for name in ("learn_bias", "readout", "shared_input_noise", "readout_mirror", "train_mirror"):
            _check(isinstance(getattr(self, name), bool), name,
                   f"must be true or false, got {getattr(self, name)!r}")
        for name in ("weight_init", "max_rate", "label_intensity", "learning_rate", "loss_sharpness",
                     "readout_learning_rate"):
            _check_pos(getattr(self, name), name)
        _check(isinstance(self.goodness_threshold, (int, float)) and not isinstance(self.goodness_threshold, bool)
               and math.isfinite(self.goodness_threshold),
               "goodness_threshold", f"must be a finite number, got {self.goodness_threshold!r}")
        for name, allowed in choices().items():
            _check_choice(getattr(self, name), name, allowed)
        _check(self.predict_method != "readout" or self.readout, "predict_method",
               "'readout' needs readout = true")
        _check(self.negatives != "readout_hard" or self.readout, "negatives",
               "'readout_hard' needs readout = true")
        _check(self.negatives != "hybrid" or self.predict_method == "readout", "negatives",
               "'hybrid' (unsupervised: no label in either phase) needs predict_method = 'readout' "
               "and readout = true")
        _check(not self.readout_mirror
               or (self.readout and _is_int(self.readout_final_epochs) and self.readout_final_epochs > 0
                   and bool(self.input_shape)),
               "readout_mirror", "needs readout = true, readout_final_epochs > 0 (the refit learns the "
               "mirror images) and an image input_shape")
        _check(not self.train_mirror or self.input_shape, "train_mirror", "needs an image input_shape")
        s = self.readout_final_label_smoothing
        _check(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 1,
               "readout_final_label_smoothing", f"must be a number in [0, 1), got {s!r}")
        if isinstance(self.neuron, dict):
            object.__setattr__(self, "neuron", NeuronConfig.from_dict(self.neuron))
        _check(isinstance(self.neuron, NeuronConfig), "neuron",
               f"must be a [neuron] table of quantities (dt, tau_syn, ...), got {self.neuron!r}")
        p = self.max_rate * self.neuron.dt
        _check(p <= 1.0, "max_rate", f"max_rate * neuron.dt is the spike probability per step and must be "
               f"<= 1, got {self.max_rate:g} Hz * {self.neuron.dt:g} s = {p:g}")

    def _check_layers(self):
        """``layers``/``input_shape``: parse the [[layers]] tables and derive ``hidden_sizes``
        (neurons per layer) from the geometry, so everything that reads layer sizes keeps working."""
        from .layers import LayerError, LayerSpec, layer_geometries
        shape = self.input_shape
        conv = any((d.get("kind") if isinstance(d, dict) else getattr(d, "kind", None)) == "conv"
                   for d in (self.layers if isinstance(self.layers, (tuple, list)) else ()))
        _check((not shape and not conv) or isinstance(shape, (tuple, list)) and len(shape) == 3 and all(_is_int(v) and v > 0 for v in shape),
               "input_shape", f"must be 3 positive integers [channels, height, width], got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(shape))
        _check(isinstance(self.layers, (tuple, list)) and len(self.layers) >= 1, "layers",
               "must be a non-empty list of [[layers]] tables (input_shape needs it)")
        try:
            specs = tuple(LayerSpec.from_dict(d, i) for i, d in enumerate(self.layers))
            # the label channels only change G, not the sizes: geometry without them
            sizes = tuple(g.n_neurons for g in layer_geometries(specs, shape or None, math.prod(shape or (1,))))
        except LayerError as e:
            raise ConfigError(str(e)) from None
        hs = self.hidden_sizes
        _check(hs in (FFConfig.hidden_sizes, sizes), "hidden_sizes",
               f"{list(hs)} conflicts with [[layers]] (neurons per layer {list(sizes)}); leave it out")
        object.__setattr__(self, "layers", specs)
        object.__setattr__(self, "hidden_sizes", sizes)

    @property
    def has_conv(self) -> bool:
        return any(s.kind == "conv" for s in self.layers)

    # -- (de)serialisation -------------------------------------------------------------------
    def replace(self, **changes) -> "FFConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        if self.layers:
            d["layers"] = [s.to_dict() for s in self.layers]
            d["input_shape"] = list(self.input_shape)
        else:                      # dense-only configs: the same dict (and config hash) as before
            del d["layers"], d["input_shape"]
        if not self.shared_input_noise:     # off: the same dict (and config hash) as before the field
            del d["shared_input_noise"]
        if self.readout_final_schedule == "constant":   # likewise
            del d["readout_final_schedule"]
        if self.readout_input == "goodness":            # likewise
            del d["readout_input"]
        if not self.readout_mirror:                     # likewise
            del d["readout_mirror"]
        if not self.train_mirror:                       # likewise
            del d["train_mirror"]
        if not self.readout_final_label_smoothing:      # likewise
            del d["readout_final_label_smoothing"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FFConfig":
        d = dict(d)
        flat = {}
        for key, value in d.items():
            if key in SECTIONS and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(flat) - names
        _check(not unknown, "config", f"unknown keys {sorted(unknown)}; valid keys are {sorted(names)}")
        if "max_rate" in flat:
            flat["max_rate"] = _quantity(flat["max_rate"], "rate", "max_rate")
        if "neuron" in flat and isinstance(flat["neuron"], dict):
            flat["neuron"] = NeuronConfig.from_dict(flat["neuron"])
        return cls(**flat)


def read_toml(path, what: str = "file") -> dict:
    """Parse a TOML file; a missing file or bad TOML gives a clear error naming the path."""
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None


def available_recipes() -> list[str]:
    """The recipe names :func:`load_config` takes (``models/NAME.toml``)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def recipe_path(name) -> Path:
    """The TOML file of a model config: a path, or a recipe name (``"digits"`` ->
    ``models/digits.toml``); FileNotFoundError listing the recipe names otherwise."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (MODELS_DIR / p, MODELS_DIR / f"{name}.toml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"model config {str(name)!r} does not exist: give a TOML path or a recipe name, "
                            f"one of {available_recipes()} (in {MODELS_DIR})")


def load_config(name_or_path) -> FFConfig:
    """Read an :class:`FFConfig` from a recipe name (``"digits"``: ``models/digits.toml``) or a
    TOML file path."""
    return FFConfig.from_dict(read_toml(recipe_path(name_or_path), "model config"))
