"""Pooling in numba.cuda, forward and backward: the readable GPU version.

Registry contract as every pooling impl (see ``gpuconv/kernels/reference/pool.py``). Each
(N, C, H, W) array is viewed as N*C contiguous planes. Forward kernels run one thread per
output element, which scans its window; backward kernels run one thread per input element,
which gathers from every window that can hold it, so each gradient element is written once
and summed in a fixed order (deterministic, no atomics).

The registry passes ``max_pool2d_backward`` only the saved indices, not the forward's window,
so its gather range comes from :func:`enclosing_window`: window arguments derived from the
indices whose windows hold every saved index.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register
from ..cuda_c import DTYPES
from . import is_available

__all__ = ["NO_DIVISOR_OVERRIDE", "enclosing_window", "max_pool2d_backward_gather"]

THREADS = 128
# What the average-pooling kernels (here and in kernels/pool.cu) read as no divisor_override.
NO_DIVISOR_OVERRIDE = 0
# Below the CUDA C impls, which are the fast GPU path.
PRIORITY = -10


def _launch(name: str, n_threads: int, *args) -> None:
    from . import _pool_kernels

    blocks = max(1, -(-n_threads // THREADS))
    getattr(_pool_kernels, name)[blocks, THREADS](*args)


def _register(op: str):
    return register(op, "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
                    priority=PRIORITY)


def _planes(xp, a):
    """(N, C, H, W) -> contiguous (N*C, H, W), copying only when the layout needs it."""
    N, C, H, W = a.shape
    return xp.ascontiguousarray(a).reshape(N * C, H, W)


def enclosing_window(indices, input_shape) -> tuple:
    """(kernel, stride, padding, dilation) whose windows hold every saved max-pool index.

    Per axis the stride is the input size over the output size, rounded (any stride >= 1
    is correct; the forward's own keeps the gather range tight), the dilation is 1, and the
    kernel and padding make window o span o*s + lo .. o*s + hi, lo and hi the extreme offsets
    of the saved positions from o*s over all planes. The padding may come out negative.
    """
    xp = backend.array_module(indices)
    H, W = input_shape[2:]
    OH, OW = indices.shape[2:]
    stride = (max(1, round(H / OH)), max(1, round(W / OW)))
    if indices.size == 0:
        return (1, 1), stride, (0, 0), (1, 1)
    rows, cols = xp.divmod(indices, W)
    row_base = xp.arange(OH) * stride[0]
    col_base = xp.arange(OW) * stride[1]
    offsets = xp.stack([(rows.min(axis=(0, 1, 3)) - row_base).min(),
                        (rows.max(axis=(0, 1, 3)) - row_base).max(),
                        (cols.min(axis=(0, 1, 2)) - col_base).min(),
                        (cols.max(axis=(0, 1, 2)) - col_base).max()])
    row_lo, row_hi, col_lo, col_hi = (int(v) for v in backend.to_numpy(offsets))
    return ((row_hi - row_lo + 1, col_hi - col_lo + 1), stride, (-row_lo, -col_lo), (1, 1))


@_register("max_pool2d")
def max_pool2d(x, kernel, stride, padding, dilation, out_size):
    xp = backend.array_module(x)
    N, C = x.shape[:2]
    out = backend.empty((N * C, *out_size), x.dtype, xp)
    indices = backend.empty(out.shape, np.int64, xp)
    _launch("max_pool2d_fwd", out.size, _planes(xp, x), out, indices, *kernel, *stride,
            *padding, *dilation)
    return out.reshape(N, C, *out_size), indices.reshape(N, C, *out_size)


def max_pool2d_backward_gather(grad_out, indices, input_shape, window):
    """grad_input of max pooling, gathering over the windows of ``window`` = (kernel,
    stride, padding, dilation): the forward's, or any whose windows hold every saved index."""
    xp = backend.array_module(grad_out)
    N, C, H, W = input_shape
    grad = backend.empty((N * C, H, W), grad_out.dtype, xp)
    _launch("max_pool2d_bwd", grad.size, _planes(xp, grad_out), _planes(xp, indices), grad,
            *(v for pair in window for v in pair))
    return grad.reshape(input_shape)


@_register("max_pool2d_backward")
def max_pool2d_backward(grad_out, indices, input_shape):
    window = enclosing_window(indices, input_shape)
    return max_pool2d_backward_gather(grad_out, indices, input_shape, window)


@_register("avg_pool2d")
def avg_pool2d(x, kernel, stride, padding, out_size, count_include_pad, divisor_override):
    xp = backend.array_module(x)
    N, C = x.shape[:2]
    out = backend.empty((N * C, *out_size), x.dtype, xp)
    _launch("avg_pool2d_fwd", out.size, _planes(xp, x), out, *kernel, *stride, *padding,
            bool(count_include_pad), divisor_override or NO_DIVISOR_OVERRIDE)
    return out.reshape(N, C, *out_size)


@_register("avg_pool2d_backward")
def avg_pool2d_backward(grad_out, input_shape, kernel, stride, padding, count_include_pad,
                        divisor_override):
    xp = backend.array_module(grad_out)
    N, C, H, W = input_shape
    grad = backend.empty((N * C, H, W), grad_out.dtype, xp)
    _launch("avg_pool2d_bwd", grad.size, _planes(xp, grad_out), grad, *kernel, *stride,
            *padding, bool(count_include_pad), divisor_override or NO_DIVISOR_OVERRIDE)
    return grad.reshape(input_shape)


@_register("adaptive_avg_pool2d")
def adaptive_avg_pool2d(x, out_size):
    xp = backend.array_module(x)
    N, C = x.shape[:2]
    out = backend.empty((N * C, *out_size), x.dtype, xp)
    _launch("adaptive_avg_pool2d_fwd", out.size, _planes(xp, x), out)
    return out.reshape(N, C, *out_size)


@_register("adaptive_avg_pool2d_backward")
def adaptive_avg_pool2d_backward(grad_out, input_shape):
    xp = backend.array_module(grad_out)
    N, C, H, W = input_shape
    grad = backend.empty((N * C, H, W), grad_out.dtype, xp)
    _launch("adaptive_avg_pool2d_bwd", grad.size, _planes(xp, grad_out), grad)
    return grad.reshape(input_shape)
