"""Pooling in numba.cuda, forward and backward: the readable GPU version.

Registry contract as every pooling impl (see ``gpuconv/kernels/reference/pool.py``). Each
(N, C, H, W) array is viewed as N*C contiguous planes. Forward kernels run one thread per
output element, which scans its window; backward kernels run one thread per input element,
which gathers from every window that can hold it, so each gradient element is written once
and summed in a fixed order (deterministic, no atomics).

"""
from __future__ import annotations

import functools

import numpy as np

from ... import backend
from .. import register
from . import DTYPES, is_available, run

__all__ = ["NO_DIVISOR_OVERRIDE"]

# What the average-pooling kernels (here and in kernels/pool.cu) read as no divisor_override.
NO_DIVISOR_OVERRIDE = 0
# Below the CUDA C impls, which are the fast GPU path.
PRIORITY = -10

_launch = functools.partial(run, "pool")


def _register(op: str):
    return register(op, "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
                    priority=PRIORITY)


def _planes(xp, a):
    """(N, C, H, W) -> contiguous (N*C, H, W), copying only when the layout needs it."""
    N, C, H, W = a.shape
    return xp.ascontiguousarray(a).reshape(N * C, H, W)


@_register("max_pool2d")
def max_pool2d(x, kernel, stride, padding, dilation, out_size):
    xp = backend.array_module(x)
    N, C = x.shape[:2]
    out = backend.empty((N * C, *out_size), x.dtype, xp)
    indices = backend.empty(out.shape, np.int64, xp)
    _launch("max_pool2d_fwd", out.size, _planes(xp, x), out, indices, *kernel, *stride,
            *padding, *dilation)
    return out.reshape(N, C, *out_size), indices.reshape(N, C, *out_size)


@_register("max_pool2d_backward")
def max_pool2d_backward(grad_out, indices, input_shape, kernel, stride, padding, dilation):
    xp = backend.array_module(grad_out)
    N, C, H, W = input_shape
    grad = backend.empty((N * C, H, W), grad_out.dtype, xp)
    _launch("max_pool2d_bwd", grad.size, _planes(xp, grad_out), _planes(xp, indices), grad,
            *kernel, *stride, *padding, *dilation)
    return grad.reshape(input_shape)


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
