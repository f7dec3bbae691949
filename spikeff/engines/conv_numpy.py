"""numpy fast path of the conv engine's GEMMs: patches with the positions last, reused buffers.

:func:`spikeff.engines.conv.conv_currents` and :func:`~spikeff.engines.conv.conv_kernel_grad`
(any array-API namespace, the reference) multiply ``im2col(X) (R*P, C*k*k) @ W.T`` and then permute
the result (R, P, channels) to the neurons' (channel, position) order. With few channels and few
taps (the Fashion-MNIST conv recipe: 16 channels of 25 taps, 32 channels of 400 taps) that GEMM is
tall and thin (BLAS runs it at a fraction of its speed), and im2col copies 5-element runs.
Here the patches are laid out the other way, ``(C*k*k, R*P)``, columns ordered (row, i, j):

* **currents** ``W_k (channels, C*k*k) @ patches -> (channels, R*P)``: a wide GEMM (about 1.5x
  the speed of the tall one on this recipe's layers); copied into the neurons' order
  (R, channels, P) with runs of P, added to the label maps' currents (one GEMM);
* **kernel gradient** ``post (channels, R*P) @ patches.T -> (channels, C*k*k)``;
* the patches are built by one strided copy of ``sliding_window_view`` (runs of Wo), into a work
  buffer reused from call to call (no page faults), in row blocks of at most ``max_elements``
  patch entries.

Same sums as the reference in another order: equal to float rounding
(``tests/test_conv.py::test_numpy_fast_path_equals_the_reference``).
"""
from __future__ import annotations

import numpy as np

from ..layers import Geometry
from .vectorized import _parallel, work_buffer


def _blocks(R: int, geo: Geometry, max_elements: int):
    step = max(1, max_elements // max(1, geo.n_positions * geo.n_kernel))
    return step, [(r, min(r + step, R)) for r in range(0, R, step)]


def patches_t(x, geo: Geometry, out):
    """Patches of the image part of ``x`` (R, M) written into ``out`` (C*k*k, R*P): row
    (c, dy, dx), column (r, i, j), i.e. ``im2col(x, geo).T``. Returns ``out``."""
    s = geo.spec
    C, H, W = geo.in_shape
    _, Ho, Wo = geo.out_shape
    k, st, p = s.kernel, s.stride, s.padding
    R = x.shape[0]
    img = x[:, :C * H * W].reshape(R, C, H, W)
    if p:
        pad = work_buffer(("conv_pad", geo.in_shape, p), (R, C, H + 2 * p, W + 2 * p), x.dtype, zero=True)
        pad[:, :, p:p + H, p:p + W] = img
        img = pad
    win = np.lib.stride_tricks.sliding_window_view(img, (k, k), axis=(2, 3))[:, :, ::st, ::st]
    win = win[:, :, :Ho, :Wo].transpose(1, 4, 5, 0, 2, 3)              # (C, k, k, R, Ho, Wo)
    dst = out.reshape(C, k, k, R, Ho, Wo)
    _parallel(lambda sl: np.copyto(dst[:, :, :, sl], win[:, :, :, sl]), R, geo.n_kernel * Ho * Wo)
    return out


def _buffer(name, geo, step, rows, dtype):
    """(rows, step * P) view of a work buffer sized for ``step`` rows (the last block is smaller)."""
    buf = work_buffer((name, geo.in_shape, geo.out_shape), (rows[0] * step * geo.n_positions,), dtype)
    return buf[:rows[0] * rows[1] * geo.n_positions].reshape(rows[0], rows[1] * geo.n_positions)


def conv_currents_np(X, W, geo: Geometry, out, max_elements: int, labels: bool = True):
    """``conv(W, X)`` for rows ``X`` (R, M) written into ``out`` (R, N) (neurons in (channel, row,
    column) order): the numpy form of :func:`spikeff.engines.conv.conv_currents`. ``labels=False``:
    the image's part alone (the kernels; the label maps left out)."""
    R, P, Co, F = X.shape[0], geo.n_positions, geo.spec.channels, geo.n_kernel
    Wk = W[:, :F]
    add = bool(geo.n_global) and labels
    if add:                   # label maps: (R, G) @ (G, N), then the kernels' part is added
        label_currents_np(X, W, geo, out)
    step, blocks = _blocks(R, geo, max_elements)
    for r0, r1 in blocks:
        n = r1 - r0
        cols = patches_t(X[r0:r1], geo, _buffer("conv_cols", geo, step, (F, n), X.dtype))
        U = np.matmul(Wk, cols, out=_buffer("conv_u", geo, step, (Co, n), X.dtype))
        src = U.reshape(Co, n, P).transpose(1, 0, 2)
        dst = out[r0:r1].reshape(n, Co, P)

        def put(sl, src=src, dst=dst):
            if add:
                dst[sl] += src[sl]
            else:
                np.copyto(dst[sl], src[sl])
        _parallel(put, n, Co * P)
    return out


def label_currents_np(X, W, geo: Geometry, out):
    """The label maps' currents ``X_g (R, G) @ W_g.T`` written into ``out`` (R, N)."""
    F = geo.n_kernel
    return np.matmul(X[:, geo.n_in - geo.n_global:], W[:, F:].reshape(geo.n_neurons, geo.n_global).T, out=out)


def label_grad_np(post, X, geo: Geometry):
    """The label maps' part of the gradient (channels, P*G) for ``post`` (R, N) and traces ``X`` (R, M)."""
    return (X[:, geo.n_in - geo.n_global:].T @ post).T.reshape(geo.spec.channels, geo.n_positions * geo.n_global)


def conv_kernel_grad_np(post, X, geo: Geometry, max_elements: int, labels: bool = True):
    """``sum_r sum_p post[r, o, p] patch(X[r], p)`` (channels, C*k*k + P*G) in float64, for ``post``
    (R, N) and the presynaptic traces ``X`` (R, M): the numpy form of
    :func:`spikeff.engines.conv.conv_kernel_grad` (each block's GEMM in the inputs' dtype).
    ``labels=False``: the kernels' part alone (the label maps' columns left zero)."""
    R, P, Co, F = X.shape[0], geo.n_positions, geo.spec.channels, geo.n_kernel
    dW = np.zeros((Co, F + P * geo.n_global))
    step, blocks = _blocks(R, geo, max_elements)
    for r0, r1 in blocks:
        n = r1 - r0
        cols = patches_t(X[r0:r1], geo, _buffer("conv_cols", geo, step, (F, n), X.dtype))
        pt = _buffer("conv_post", geo, step, (Co, n), post.dtype)
        src, dst = post[r0:r1].reshape(n, Co, P), pt.reshape(Co, n, P)
        _parallel(lambda sl: np.copyto(dst[:, sl], src[sl].transpose(1, 0, 2)), n, Co * P)
        dW[:, :F] += pt @ cols.T
    if geo.n_global and labels:
        dW[:, F:] = label_grad_np(post, X, geo)
    return dW
