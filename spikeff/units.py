"""Parse physical quantities written in configs, Brian2 style (``"10 ms"``, ``"1.5 mV"``).

spikeff's internal units are fixed: **time in seconds, potentials (and the currents and weights
that add to them) in millivolts, rates in hertz**. Configs may write any of the prefixes below;
:func:`parse_quantity` converts to the internal unit of the field's dimension.

Written by hand (about 40 lines) instead of importing ``brian2.units`` so that reading a config
does not pay Brian2's import time; the Brian2 engine converts back with real Brian2 units.
"""
from __future__ import annotations

import re

# dimension -> {unit symbol: factor to the internal unit}
_UNITS = {
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "second": 1.0, "msecond": 1e-3},
    "voltage": {"V": 1e3, "mV": 1.0, "uV": 1e-3, "volt": 1e3, "mvolt": 1.0},
    "rate": {"Hz": 1.0, "kHz": 1e3, "hertz": 1.0},
}
INTERNAL_UNIT = {"time": "s", "voltage": "mV", "rate": "Hz"}
_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan)\s*\*?\s*([A-Za-z]+)\s*$")


def parse_quantity(value, dimension: str, name: str = "value") -> float:
    """Return ``value`` in spikeff's internal unit for ``dimension`` ("time", "voltage", "rate").

    ``value`` is a string with a unit (``"10 ms"``) or a plain number, taken to be in the
    internal unit already (seconds, millivolts, hertz).
    """
    if dimension not in _UNITS:
        raise ValueError(f"unknown dimension {dimension!r}; expected one of {sorted(_UNITS)}")
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a quantity such as '10 ms', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a quantity such as '10 ms', got {type(value).__name__}")
    m = _RE.match(value)
    if not m:
        raise ValueError(f"{name}: cannot parse {value!r}; write a number and a unit, e.g. "
                         f"'10 {INTERNAL_UNIT[dimension]}'")
    number, unit = float(m.group(1)), m.group(2)
    units = _UNITS[dimension]
    if unit not in units:
        raise ValueError(f"{name}: unit {unit!r} is not a {dimension} unit; use one of {sorted(units)}")
    return number * units[unit]
