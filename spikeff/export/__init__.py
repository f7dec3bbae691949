"""Export of trained networks to other simulators and hardware formats (and NIR import).

- :mod:`spikeff.export.lava`: Lava processes (Loihi 2 style, ``floating_pt`` and bit-accurate
  ``fixed_pt``), Loihi bit-width quantization with a report, and inference on Lava
  (needs ``pip install spikeff[lava]`` to *run* on Lava; quantization and the bit-accurate numpy
  model of Lava's fixed-point LIF work without it).
- :mod:`spikeff.export.nir`: the network graph as NIR (``pip install spikeff[nir]``), written so that
  NIR's simulators run it exactly; NIR graphs (spikeff's, snnTorch's, Norse's) read back.
- :mod:`spikeff.export.interop`: run a NIR graph in Norse and snnTorch (``pip install 'spikeff[interop]'``).

Nothing here imports lava, nir or torch at import time.
"""
from __future__ import annotations

__all__ = ["lava", "nir", "interop"]


class ExportError(ValueError):
    """A network that an export target cannot describe."""


class NIRError(ExportError):
    """A network that NIR cannot describe, or a NIR graph that spikeff cannot represent
    (also :class:`spikeff.export.nir.NIRError`)."""


_ERRORS = {"nir": NIRError}


def check_exportable(net, target: str | None = None):
    """Raise if ``net`` cannot run on ``target`` ("lava", "loihi", "nir"; None: any of them): it
    must be fitted, without length normalisation (Lava's Dense + LIF and NIR's Linear + CubaLIF
    cannot express it), and its neuron must fit the target
    (:meth:`spikeff.neuron.DiscreteLIF.check_target`). The one place these rules live."""
    net._check_fitted()
    error = _ERRORS.get(target, ExportError)
    if net.config.normalization != "none":
        raise error(f"normalization = {net.config.normalization!r} scales each layer's input by the "
                    "number of spikes of the layer below at every step, which Lava's Dense + LIF and "
                    "NIR's Linear + CubaLIF cannot express; export needs normalization = 'none'")
    if target is not None:
        try:
            net.lif.check_target(target)
        except ValueError as e:
            raise error(str(e)) from None


def __getattr__(name):  # lazy submodules: ``spikeff.export.lava`` without importing lava itself
    if name in __all__:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
