"""Launchers for ``kernels/norm.cu``: batch norm (per-channel block reductions, then one
elementwise pass) and local response norm (thread per element), forward and backward.

Registry contract as every norm impl (see ``gpuconv/kernels/reference/norm.py``). The
kernels see x as (N, C, S), S the product of the spatial sizes. Training updates the
running statistics in place inside the statistics kernel, strided views included.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from .. import register
from . import DTYPES, NULL, gpu_op, run_blocks, run_threads

FAMILY = "norm"


def _run(name: str, dtype, threads_needed: int, args: tuple) -> None:
    run_threads(FAMILY, name, dtype, threads_needed, args)


def _run_per_channel(name: str, dtype, channels: int, args: tuple) -> None:
    run_blocks(FAMILY, name, dtype, channels, args)


def _contiguous(*arrays):
    cp = backend.cupy_or_none()
    return tuple(NULL if a is None else cp.ascontiguousarray(a) for a in arrays)


def _shape_args(x) -> tuple:
    return np.int32(x.shape[0]), np.int32(x.shape[1]), np.int64(math.prod(x.shape[2:]))


def _element_stride(a) -> np.int64:
    return np.int64(a.strides[0] // a.itemsize)


def _batch_stats(x, running_mean, running_var, momentum, eps):
    """Per-channel batch mean and 1/sqrt(biased variance + eps); updates the running stats
    in place."""
    cp = backend.cupy_or_none()
    channels = x.shape[1]
    mean = backend.empty((channels,), x.dtype, cp)
    inv_std = backend.empty((channels,), x.dtype, cp)
    if running_mean is None:
        running = (NULL, np.int64(0), NULL, np.int64(0))
    else:
        running = (running_mean, _element_stride(running_mean),
                   running_var, _element_stride(running_var))
    _run_per_channel("batch_norm_fwd_stats", x.dtype, channels,
                     (x, x.dtype.type(momentum), x.dtype.type(eps), *running, mean, inv_std,
                      *_shape_args(x)))
    return mean, inv_std


def _normalise(x, running_mean, running_var, weight, bias, training, momentum, eps,
               apply: str, extra: tuple = ()):
    """The statistics (batch ones, or the running ones), then one ``apply`` pass."""
    cp = backend.cupy_or_none()
    x, w, b = _contiguous(x, weight, bias)
    if training:
        mean, inv_std = _batch_stats(x, running_mean, running_var, momentum, eps)
    else:
        (mean,) = _contiguous(running_mean)
        inv_std = 1 / cp.sqrt(running_var + x.dtype.type(eps))
    y = backend.empty(x.shape, x.dtype, cp)
    _run(apply, x.dtype, y.size, (x, mean, inv_std, w, b, *extra, y, *_shape_args(x)))
    return y


@register("batch_norm", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("batch_norm")
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    return _normalise(x, running_mean, running_var, weight, bias, training, momentum, eps,
                      "batch_norm_fwd_apply")


@register("batch_norm_relu", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("batch_norm_relu")
def batch_norm_relu(x, running_mean, running_var, weight, bias, training, momentum, eps,
                    residual):
    return _normalise(x, running_mean, running_var, weight, bias, training, momentum, eps,
                      "batch_norm_fwd_apply_add_relu", _contiguous(residual))


@register("batch_norm_fold", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("batch_norm_fold")
def batch_norm_fold(running_mean, running_var, weight, bias, eps):
    cp = backend.cupy_or_none()
    mean, var, w, b = _contiguous(running_mean, running_var, weight, bias)
    scale, shift = (backend.empty(mean.shape, mean.dtype, cp) for _ in range(2))
    _run("batch_norm_fold", mean.dtype, mean.size,
         (mean, var, w, b, mean.dtype.type(eps), scale, shift, np.int32(mean.size)))
    return scale, shift


@register("batch_norm_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("batch_norm_backward")
def batch_norm_backward(grad_y, x, running_mean, running_var, weight, bias, training, eps):
    cp = backend.cupy_or_none()
    grad_y, x, w = _contiguous(grad_y, x, weight)
    running = (NULL, NULL) if training else _contiguous(running_mean, running_var)
    channels = x.shape[1]
    mean, inv_std, grad_w, grad_b = (backend.empty((channels,), x.dtype, cp) for _ in range(4))
    _run_per_channel("batch_norm_bwd_reduce", x.dtype, channels,
                     (grad_y, x, *running, x.dtype.type(eps), mean, inv_std, grad_w, grad_b,
                      *_shape_args(x)))
    grad_x = backend.empty(x.shape, x.dtype, cp)
    _run("batch_norm_bwd_apply", x.dtype, grad_x.size,
         (grad_y, x, mean, inv_std, w, grad_w, grad_b, np.int32(training), grad_x,
          *_shape_args(x)))
    return grad_x, None if weight is None else grad_w, None if bias is None else grad_b


def _lrn_args(x, size, alpha, beta, k) -> tuple:
    t = x.dtype.type
    return (*_shape_args(x), np.int32(size), t(alpha), t(beta), t(k))


@register("local_response_norm", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("local_response_norm")
def local_response_norm(x, size, alpha, beta, k):
    cp = backend.cupy_or_none()
    (x,) = _contiguous(x)
    y = backend.empty(x.shape, x.dtype, cp)
    _run("local_response_norm_fwd", x.dtype, y.size, (x, y, *_lrn_args(x, size, alpha, beta, k)))
    return y


@register("local_response_norm_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("local_response_norm_backward")
def local_response_norm_backward(grad_y, x, size, alpha, beta, k):
    cp = backend.cupy_or_none()
    grad_y, x = _contiguous(grad_y, x)
    grad_x = backend.empty(x.shape, x.dtype, cp)
    through = backend.empty(x.shape, x.dtype, cp)
    window_max = backend.empty(x.shape, x.dtype, cp)
    lrn_args = _lrn_args(x, size, alpha, beta, k)
    _run("local_response_norm_bwd_direct", x.dtype, x.size,
         (grad_y, x, grad_x, through, window_max, *lrn_args))
    _run("local_response_norm_bwd_spread", x.dtype, x.size,
         (x, through, window_max, grad_x, *lrn_args[:-1]))
    return grad_x
