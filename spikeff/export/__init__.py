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


def check_exportable(net):
    """A fitted network whose layers are plain Dense + LIF chains (what Lava and NIR describe)."""
    net._check_fitted()
    if net.config.normalization != "none":
        raise ValueError(f"normalization = {net.config.normalization!r} scales each layer's input by the "
                         "number of spikes of the layer below at every step, which Lava's Dense + LIF and "
                         "NIR's Linear + CubaLIF cannot express; export needs normalization = 'none'")


def __getattr__(name):  # lazy submodules: ``spikeff.export.lava`` without importing lava itself
    if name in __all__:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
