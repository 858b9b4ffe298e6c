"""Batch norm in numba.cuda, forward and backward: the readable GPU version.

Registry contract as every norm impl (see ``gpuconv/kernels/reference/norm.py``). x is
viewed as (N, C, S), S the product of the spatial sizes. One thread per channel computes
the channel's statistics (training: batch mean and biased variance, and the in-place update
of the running stats) or its gradient sums; then one thread per element normalises or
forms grad_input. A missing weight or bias is passed as ones or zeros.
"""
from __future__ import annotations

import functools
import math

from ... import backend
from .. import register
from . import DTYPES, is_available, run

_launch = functools.partial(run, "norm")


def _inputs(x, weight, bias):
    """xp, x as contiguous (N, C, S), and the weight and bias (ones / zeros when None)."""
    xp = backend.array_module(x)
    N, C = x.shape[:2]
    x3 = xp.ascontiguousarray(x).reshape(N, C, math.prod(x.shape[2:]))
    w = xp.ones(C, x.dtype) if weight is None else xp.ascontiguousarray(weight)
    b = xp.zeros(C, x.dtype) if bias is None else xp.ascontiguousarray(bias)
    return xp, x3, w, b


def _stats(xp, x3, running_mean, running_var, training, eps, momentum=None):
    """(mean, 1/sqrt(var + eps)) per channel: in training of the batch mean and biased
    variance, with the running stats updated in place when a momentum is given; else of the
    running stats.

    The kernel updates contiguous arrays; strided running stats go through a contiguous
    copy that is written back."""
    if not training:
        return xp.ascontiguousarray(running_mean), 1 / xp.sqrt(running_var + eps)
    channels = x3.shape[1]
    mean = backend.empty((channels,), x3.dtype, xp)
    inv_std = backend.empty((channels,), x3.dtype, xp)
    update = momentum is not None and running_mean is not None
    given = (running_mean, running_var) if update else (mean, inv_std)
    running = [xp.ascontiguousarray(a) for a in given]
    _launch("batch_norm_fwd_stats", channels, x3, x3.dtype.type(momentum or 0), update,
            *running, x3.dtype.type(eps), mean, inv_std)
    for target, updated in zip(given, running):
        if updated is not target:
            target[...] = updated
    return mean, inv_std


@register("batch_norm", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available, priority=-10)
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    xp, x3, w, b = _inputs(x, weight, bias)
    mean, inv_std = _stats(xp, x3, running_mean, running_var, training, eps, momentum)
    y = backend.empty(x3.shape, x.dtype, xp)
    _launch("batch_norm_fwd_apply", y.size, x3, mean, inv_std, w, b, y)
    return y.reshape(x.shape)


@register("batch_norm_backward", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
          priority=-10)
def batch_norm_backward(grad_y, x, running_mean, running_var, weight, bias, training, eps):
    xp, x3, w, _ = _inputs(x, weight, bias)
    g3 = xp.ascontiguousarray(grad_y).reshape(x3.shape)
    mean, inv_std = _stats(xp, x3, running_mean, running_var, training, eps)
    channels = x3.shape[1]
    grad_w = backend.empty((channels,), x.dtype, xp)
    grad_b = backend.empty((channels,), x.dtype, xp)
    _launch("batch_norm_bwd_reduce", channels, g3, x3, mean, inv_std, grad_w, grad_b)
    grad_x = backend.empty(x3.shape, x.dtype, xp)
    _launch("batch_norm_bwd_apply", grad_x.size, g3, x3, mean, inv_std, w, grad_w, grad_b,
            training, grad_x)
    return (grad_x.reshape(x.shape), None if weight is None else grad_w,
            None if bias is None else grad_b)
