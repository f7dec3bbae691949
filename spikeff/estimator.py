"""scikit-learn's estimator protocol for :class:`~spikeff.network.FFNetwork`: its
hyperparameters are the fields of its config (``get_params``/``set_params``, so ``clone``,
``GridSearchCV`` and pipelines work), ``classes_`` maps label channels to label values, and the
classifier tags. scikit-learn itself is imported only when a tag is asked for."""
from __future__ import annotations

import dataclasses

import numpy as np


def _config_params(config: FFConfig) -> dict:
    """The config's fields by name, and the neuron's as ``neuron__FIELD`` (scikit-learn's nesting)."""
    params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    params.update({f"neuron__{f.name}": getattr(config.neuron, f.name) for f in dataclasses.fields(config.neuron)})
    return params


class EstimatorProtocol:
    """Mixin: the estimator protocol over ``self.config`` (a dataclass config with a ``neuron``
    sub-config and ``replace``) and ``self.store_budget_mb``; ``n_classes_`` and ``weights_`` once
    fitted."""

    _estimator_type = "classifier"      # scikit-learn < 1.6 (later versions read __sklearn_tags__)

    def get_params(self, deep: bool = True) -> dict:
        """``config`` and ``store_budget_mb`` (what the constructor takes: ``clone`` rebuilds the
        network from them); with ``deep``, also every config field by name (``n_steps``,
        ``neuron__tau_mem``, ...), which :meth:`set_params` and ``GridSearchCV`` can change."""
        params = {"config": self.config, "store_budget_mb": self._store_budget_mb}
        if deep:
            params.update(_config_params(self.config))
        return params

    def set_params(self, **params) -> "EstimatorProtocol":
        """Set ``config``, ``store_budget_mb`` and config fields (``n_steps=10``,
        ``neuron__tau_mem=0.02``; in the config's internal units). The new config is validated
        (ConfigError). Returns self."""
        config = params.pop("config", self.config)
        valid = set(_config_params(config)) | {"config", "store_budget_mb"}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(f"Invalid parameters {unknown} for estimator {type(self).__name__}; valid parameters are "
                             f"{sorted(valid)}")
        if "store_budget_mb" in params:
            self.store_budget_mb = params.pop("store_budget_mb")
        neuron = {k[len("neuron__"):]: params.pop(k) for k in list(params) if k.startswith("neuron__")}
        if neuron:
            params["neuron"] = dataclasses.replace(params.get("neuron", config.neuron), **neuron)
        self.config = config.replace(**params) if params else config
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())

    @property
    def classes_(self) -> np.ndarray:
        """The class labels, sorted: label channel ``k`` (and output ``k`` of the readout) is class
        ``classes_[k]``. 0..n_classes-1 unless :meth:`fit` saw other labels."""
        classes = getattr(self, "_classes", None)
        return np.arange(self.n_classes_) if classes is None else classes

    @classes_.setter
    def classes_(self, value):
        self._classes = None if value is None else np.asarray(value)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "weights_")

    def __repr__(self) -> str:
        default = _config_params(type(self.config)())
        changed = [f"{k}={v!r}" for k, v in _config_params(self.config).items()
                   if k != "neuron" and (k not in default or v != default[k])]
        if self._store_budget_mb is not None:
            changed.append(f"store_budget_mb={self._store_budget_mb!r}")
        return f"{type(self).__name__}({', '.join(changed)})"
