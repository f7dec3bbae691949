"""Run a NIR graph in other simulators through their own importers (``pip install spikeff[interop]``),
and compare their spikes with spikeff's.

- :func:`run_norse`: Norse 1.1 ``norse.torch.from_nir(graph, dt=dt)``;
- :func:`run_snntorch`: snnTorch 1.0 ``snntorch.import_nir.import_from_nir(graph)`` (dt fixed at 1e-4 s).

Both return, per layer, the spikes and the pre-reset membrane potential of every step, shape
(T, B, N), read from the simulator's own state: each importer's modules are stepped one time step at a
time along the graph's chain (``Linear -> CubaLIF`` ...), exactly what their graph executors do
(:func:`run_norse` and :func:`run_snntorch` check that against the executor's output spikes), and the
pre-reset potential is rebuilt with the simulator's own update from its state before the step.

``float64=True`` runs the importer in double precision. Both importers cast to float32 on their own
(Norse's ``_to_tensor`` calls ``.float()``, snnTorch's importer goes through ``nirtorch.nir_to_torch``,
whose ``dtype`` defaults to float32, and emits float32 spikes): in float64 mode Norse's conversion is
called with float64 tensors and snnTorch's with ``dtype=torch.float64``, and the spikes passed between
layers are cast to float64 (0/1, exact). ``float64=False`` runs them as shipped.

Importers pass spikes on in the same step; spikeff delays each layer by one step. :func:`align` shifts
layer ``l`` by ``l + 1`` steps so that the arrays line up with spikeff's.
"""
from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np

from .nir import SNNTORCH_DT, read_graph, graph_chain, require_nir

INTEROP_INSTALL_HINT = "pip install 'spikeff[interop]'"


def require(module: str):
    """Import an interop package (torch, norse, snntorch) or raise ImportError with the install hint."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed to run NIR graphs in other simulators: {INTEROP_INSTALL_HINT} "
                          f"(import failed: {e})") from e


def available(module: str) -> bool:
    try:
        require(module)
        return True
    except Exception:   # noqa: BLE001 - a broken install (e.g. a torch/numpy mismatch) counts as missing
        return False


def versions() -> dict:
    """Versions of the interop packages that import here."""
    out = {}
    for name in ("torch", "norse", "snntorch", "nirtorch", "nir"):
        try:
            out[name] = str(require(name).__version__)
        except Exception:   # noqa: BLE001
            out[name] = None
    return out


def _layers_of_chain(graph):
    """``[(weight node name, neuron node name)]`` of a chain graph."""
    names = [name for name, _ in graph_chain(graph)[1:-1]]
    if len(names) % 2:
        raise ValueError("expected a chain of (Linear/Affine, neuron) pairs")
    return list(zip(names[0::2], names[1::2]))


@contextlib.contextmanager
def _default_dtype(torch, dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _as_tensor(torch, spikes, dtype):
    return torch.as_tensor(np.asarray(spikes), dtype=dtype)


# -- Norse ----------------------------------------------------------------------------------------
def import_norse(graph, dt: float, float64: bool = True):
    """Norse's module for ``graph`` (``norse.torch.from_nir(graph, dt=dt)``)."""
    torch = require("torch")
    norse_nir = require("norse.torch.utils.import_nir")
    graph = read_graph(graph)
    if not float64:
        return norse_nir.from_nir(graph, dt=dt)
    to64 = lambda t: torch.as_tensor(np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t),  # noqa: E731
                                     dtype=torch.float64)
    with mock.patch.object(norse_nir, "_to_tensor", to64):
        return norse_nir.from_nir(graph, dt=dt).double()


def run_norse(graph, spikes, dt: float, float64: bool = True, check_executor: bool = True) -> dict:
    """Run ``graph`` in Norse on input ``spikes`` (T, B, M). Returns ``{"spikes", "v"}``: per layer,
    (T, B, N) arrays (bool spikes, pre-reset potentials)."""
    torch = require("torch")
    graph = read_graph(graph)
    dtype = torch.float64 if float64 else torch.float32
    module = import_norse(graph, dt, float64)
    pairs = _layers_of_chain(graph)
    x = _as_tensor(torch, spikes, dtype)
    T, B = x.shape[:2]
    out = {"spikes": [[] for _ in pairs], "v": [[] for _ in pairs]}
    states = [None] * len(pairs)
    with torch.no_grad():
        for t in range(T):
            h = x[t]
            for l, (fc, cell) in enumerate(pairs):
                lin, cub = module.get_submodule(fc), module.get_submodule(cell)
                cur = lin(h)
                v_prev = states[l][1].v if states[l] is not None else cub.lif.initial_state(cur).v.detach()
                z, states[l] = cub(cur, states[l])
                i_new, v_post = states[l][0].v, states[l][1].v
                p = cub.lif.p                 # Norse's own update (lif_box_feed_forward_step), before reset
                v_pre = v_prev + dt * p.tau_mem_inv * ((cub.r * i_new) + p.v_leak - v_prev)
                out["spikes"][l].append((z > 0).numpy())
                out["v"][l].append(torch.where(z > 0, v_pre, v_post).numpy())
                h = z
        if check_executor:           # the graph executor itself gives the same output spikes
            state, last = None, []
            for t in range(T):
                y, state = module(x[t], state)
                last.append((y > 0).numpy())
            if not np.array_equal(np.stack(last), np.stack(out["spikes"][-1])):
                raise AssertionError("stepping Norse's modules along the chain differs from its GraphExecutor")
    return {k: [np.stack(a) for a in v] for k, v in out.items()}


# -- snnTorch -------------------------------------------------------------------------------------
def import_snntorch(graph, float64: bool = True):
    """snnTorch's module for ``graph`` (``snntorch.import_nir.import_from_nir(graph)``)."""
    torch = require("torch")
    nirtorch = require("nirtorch")
    snn_nir = require("snntorch.import_nir")
    graph = read_graph(graph)
    with contextlib.redirect_stdout(None):       # the importer prints on every call
        if not float64:
            return snn_nir.import_from_nir(graph)
        original = nirtorch.nir_to_torch
        with mock.patch.object(nirtorch, "nir_to_torch",
                               lambda *a, **k: original(*a, **{**k, "dtype": torch.float64})), \
                _default_dtype(torch, torch.float64):
            return snn_nir.import_from_nir(graph)


def run_snntorch(graph, spikes, float64: bool = True, check_executor: bool = True) -> dict:
    """Run ``graph`` in snnTorch on input ``spikes`` (T, B, M); like :func:`run_norse` (snnTorch's
    importer assumes dt = 1e-4 s)."""
    torch = require("torch")
    snn = require("snntorch")
    graph = read_graph(graph)
    dtype = torch.float64 if float64 else torch.float32
    module = import_snntorch(graph, float64)
    pairs = _layers_of_chain(graph)
    x = _as_tensor(torch, spikes, dtype)
    T = x.shape[0]
    cells = [module.get_submodule(c) for _, c in pairs]
    for c in cells:
        if not isinstance(c, (snn.Synaptic, snn.Leaky)):
            raise TypeError(f"snnTorch built a {type(c).__name__}; this runner steps Synaptic/Leaky layers")

    def reset():     # an empty state: snnTorch re-initialises it to zeros of the input's shape
        for c in cells:
            c.mem = torch.zeros(0, dtype=dtype)
            if hasattr(c, "syn"):
                c.syn = torch.zeros(0, dtype=dtype)

    out = {"spikes": [[] for _ in pairs], "v": [[] for _ in pairs]}
    with torch.no_grad():
        reset()
        for t in range(T):
            h = x[t]
            for l, (fc, _) in enumerate(pairs):
                cell = cells[l]
                cur = module.get_submodule(fc)(h.to(dtype))
                mem_prev = cell.mem if cell.mem.shape == cur.shape else torch.zeros_like(cur)
                spk = cell(cur)
                syn = getattr(cell, "syn", cur)            # Leaky: the input current itself
                v_pre = cell.beta.clamp(0, 1) * mem_prev + syn   # snnTorch's own update, before reset
                out["spikes"][l].append((spk > 0).numpy())
                out["v"][l].append(torch.where(spk > 0, v_pre, cell.mem).numpy())
                h = spk
        if check_executor and not float64:      # the GraphModule itself (float32 only: it passes float32 spikes)
            reset()
            last = [(module(x[t])[0] > 0).numpy() for t in range(T)]
            if not np.array_equal(np.stack(last), np.stack(out["spikes"][-1])):
                raise AssertionError("stepping snnTorch's modules along the chain differs from its GraphModule")
        reset()
    return {k: [np.stack(a) for a in v] for k, v in out.items()}


# -- comparison with spikeff ----------------------------------------------------------------------
def align(rec: dict, n_steps: int, shift: bool = True) -> dict:
    """Shift layer ``l`` of an importer's recording by ``l + 1`` steps (spikeff's one step of delay
    per layer; the first ``l + 1`` steps are at rest: no spike, v = 0), cut to ``n_steps``."""
    out = {}
    for key, layers in rec.items():
        out[key] = []
        for l, a in enumerate(layers):
            s = l + 1 if shift else 0
            pad = np.zeros((s,) + a.shape[1:], dtype=a.dtype)
            out[key].append(np.concatenate([pad, a])[:n_steps])
    return out


def spike_agreement(ref_spikes: list, got_spikes: list) -> list:
    """Per layer: the fraction of (step, sample, neuron) entries where both have the same spike."""
    return [float(np.mean(np.asarray(a, bool) == np.asarray(b, bool))) for a, b in zip(ref_spikes, got_spikes)]


def firing_rates(spikes: list) -> list:
    """Per layer: spikes per neuron and step."""
    return [float(np.mean(np.asarray(s, bool))) for s in spikes]


RUNNERS = {"norse": run_norse, "snntorch": run_snntorch}


def run_importer(name: str, graph, spikes, dt: float | None = None, float64: bool = True,
                 check_executor: bool = True) -> dict:
    """Run ``graph`` on ``spikes`` (T, B, M) in importer ``name`` (``norse``: at ``dt``, default the
    graph's metadata; ``snntorch``: at its fixed 1e-4 s)."""
    if name == "norse":
        graph = read_graph(graph)
        return run_norse(graph, spikes, float((graph.metadata or {}).get("dt", SNNTORCH_DT)) if dt is None else dt,
                         float64, check_executor)
    if name == "snntorch":
        return run_snntorch(graph, spikes, float64, check_executor)
    raise ValueError(f"importer: {name!r} is not valid; choose one of {sorted(RUNNERS)}")


def goodness_per_label(net, graph, importer: str, X, dt: float | None = None, float64: bool = True,
                       shift: bool = True, seed: int = 0) -> np.ndarray:
    """Like :meth:`FFNetwork.goodness_per_label` (the same input spikes, from
    :meth:`FFNetwork.label_sources`), with the goodness computed from the importer's own pre-reset
    potentials (aligned to spikeff's window by :func:`align`). Shape (n_samples, n_classes, n_layers)."""
    from ..goodness import get_goodness
    require_nir()
    g = get_goodness(net.config.goodness).g
    C, out = net.n_classes_, []
    for n, src in net.label_sources(X, seed):
        spikes = src.all_steps()
        rec = align(run_importer(importer, graph, spikes, dt, float64, check_executor=False), spikes.shape[0], shift)
        G = np.stack([np.asarray(g(v)).mean(axis=(0, 2)) for v in rec["v"]], axis=1)
        out.append(G.reshape(n, C, -1))
    return np.concatenate(out)
