"""spikeff: spiking neural networks trained with Hinton's Forward-Forward algorithm.

    from spikeff import FFNetwork, FFConfig, load_config
    from spikeff.data import load_dataset
"""
from .config import ConfigError, FFConfig, NeuronConfig, load_config
from .data import DataError, load_dataset
from .io import CheckpointError
from .network import FFNetwork

__version__ = "0.1.0"
__all__ = ["FFNetwork", "FFConfig", "NeuronConfig", "load_config", "load_dataset", "ConfigError",
           "DataError", "CheckpointError", "NotFittedError", "__version__"]


def __getattr__(name):
    if name == "NotFittedError":          # scikit-learn's, imported only when asked for
        from sklearn.exceptions import NotFittedError
        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
