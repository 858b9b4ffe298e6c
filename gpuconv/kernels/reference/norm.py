"""Reference normalisation: plain NumPy, any float dtype, the oracle for every other impl.

Registry contract for the norm family
------------------------------------
Arguments arrive validated and normalised by :mod:`gpuconv.functional.norm`: arrays of one
float dtype on one device (any strides), per-channel arrays of shape ``(C,)`` or None, plain
Python numbers for the scalars.

``"batch_norm"``
    ``fn(x, running_mean, running_var, weight, bias, training, momentum, eps) -> y`` with
    ``x: (N, C, *spatial)``, ``0 <= len(spatial) <= 3``. In training (more than one value per
    channel guaranteed) it normalises with the batch mean and biased variance and, when
    running_mean/running_var are arrays, updates them in place:
    ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance.
    In evaluation (running stats guaranteed) it normalises with the running stats.
``"batch_norm_backward"``
    ``fn(grad_y, x, running_mean, running_var, weight, bias, training, eps)
    -> (grad_x, grad_weight, grad_bias)``, grad_weight/grad_bias None where weight/bias are
    None; never touches the running stats.
``"batch_norm_relu"``
    ``fn(x, running_mean, running_var, weight, bias, training, momentum, eps, residual) -> y``
    = ``max(batch_norm(x, ...) + residual, 0)`` (residual None: no sum), the running stats
    updated as batch_norm does. "reference" composes the reference batch_norm, "composed" the
    registry's pick (the CPU fallback).
``"batch_norm_fold"``
    ``fn(running_mean, running_var, weight, bias, eps) -> (scale, shift)``, all (C,):
    ``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``.
``"local_response_norm"``
    ``fn(x, size, alpha, beta, k) -> y`` with ``x: (N, C, *spatial)``, ``size >= 1``,
    ``alpha >= 0``, ``k > 0``.
``"local_response_norm_backward"``
    ``fn(grad_y, x, size, alpha, beta, k) -> grad_x``.

Every result has the dtype of ``x``.

This module works one channel at a time with the textbook formulas; the local response norm
backward scatters each output channel's gradient onto the input channels of its window. It
shares no code with the fast impls it checks.

Batch norm's variance in a safe form (every impl): the squares of the deviations d = x - mean
overflow float32 from |d| of 2e19 while the normalised output stays near 1, so each channel's
deviations are scaled by s (their largest magnitude, or any bound of it within a factor the
sum can hold, when that is a finite number above 1; else 1, the plain formula) and
var = s^2 v with v = mean((d/s)^2); then
1/sqrt(var + eps) = 1 / (s * sqrt(v + eps/s^2)). Only the running variance, which stores
var itself, can overflow, and only when var does.

Local response norm in a safe form (every impl): the base D = k + alpha/size * sum(x_j^2)
of a window overflows long before the result does (float32 x of 1e20 gives D = inf and
y = 0 where the true y is about 1e-7). Each window is therefore scaled by m, the largest
|x_j| in it when that is a finite number above 1 (else 1, which is the plain formula, and
with it PyTorch's NaN and inf results): D = m^2 t with t = k/m^2 + alpha/size *
sum((x_j/m)^2), and y = (x/m) * m^(1-2 beta) * t^-beta, nothing of which overflows where y
is representable. The backward's cross term pairs x_j with window c's (x_c/m_c)/t_c, each
bounded, as ``(x_j/m_c)``.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register


def _channel_stats(xc, running_mean, running_var, c, training, eps):
    """(mean, biased variance, 1/sqrt(variance + eps)) of one channel's values ``xc``
    (training), else of the running stats of channel ``c``; the variance in the safe form."""
    if not training:
        return running_mean[c], running_var[c], 1 / np.sqrt(running_var[c] + eps)
    mean = xc.mean()
    d = xc - mean
    scale = np.max(np.abs(d))
    scale = scale if np.isfinite(scale) and scale > 1 else np.ones((), xc.dtype)
    v = ((d / scale) ** 2).mean()
    return mean, scale * scale * v, 1 / (scale * np.sqrt(v + eps / scale / scale))


def _affine(weight, bias, c, dtype):
    one, zero = np.ones((), dtype), np.zeros((), dtype)
    return (one if weight is None else weight[c]), (zero if bias is None else bias[c])


@register("batch_norm", "reference", priority=-100)
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    channels = x.shape[1]
    y = backend.empty(x.shape, x.dtype)
    batch_means = np.zeros(channels, x.dtype)
    batch_vars = np.zeros(channels, x.dtype)
    for c in range(channels):
        xc = x[:, c]
        mean, var, inv_std = _channel_stats(xc, running_mean, running_var, c, training, eps)
        w, b = _affine(weight, bias, c, x.dtype)
        y[:, c] = (xc - mean) * inv_std * w + b
        batch_means[c], batch_vars[c] = mean, var
    if training and running_mean is not None:
        n = x.size // channels
        running_mean[...] = (1 - momentum) * running_mean + momentum * batch_means
        running_var[...] = (1 - momentum) * running_var + momentum * batch_vars * n / (n - 1)
    return y


@register("batch_norm_backward", "reference", priority=-100)
def batch_norm_backward(grad_y, x, running_mean, running_var, weight, bias, training, eps):
    channels = x.shape[1]
    grad_x = backend.empty(x.shape, x.dtype)
    grad_w = np.zeros(channels, x.dtype)
    grad_b = np.zeros(channels, x.dtype)
    for c in range(channels):
        xc, gc = x[:, c], grad_y[:, c]
        mean, _, inv_std = _channel_stats(xc, running_mean, running_var, c, training, eps)
        w, _ = _affine(weight, bias, c, x.dtype)
        xhat = (xc - mean) * inv_std
        grad_b[c] = gc.sum()
        grad_w[c] = (gc * xhat).sum()
        grad_xhat = gc * w
        if training:
            # xhat depends on x through the batch mean and variance too.
            n = xc.size
            grad_x[:, c] = inv_std / n * (n * grad_xhat - grad_xhat.sum()
                                          - xhat * (grad_xhat * xhat).sum())
        else:
            grad_x[:, c] = grad_xhat * inv_std
    return (grad_x, None if weight is None else grad_w, None if bias is None else grad_b)


def _batch_norm_relu(bn_impl):
    def fn(x, running_mean, running_var, weight, bias, training, momentum, eps, residual):
        from ...functional import batch_norm as public_batch_norm
        y = public_batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                              eps, impl=bn_impl)
        if residual is not None:
            y = y + residual
        return np.maximum(y, 0).astype(x.dtype)
    return fn


register("batch_norm_relu", "reference", priority=-100)(_batch_norm_relu("reference"))
register("batch_norm_relu", "composed", priority=0)(_batch_norm_relu(None))


@register("batch_norm_fold", "reference", priority=-100)
def batch_norm_fold(running_mean, running_var, weight, bias, eps):
    one, zero = np.ones((), running_mean.dtype), np.zeros((), running_mean.dtype)
    scale = (one if weight is None else weight) / np.sqrt(running_var + eps)
    shift = (zero if bias is None else bias) - running_mean * scale
    return scale.astype(running_mean.dtype), shift.astype(running_mean.dtype)


def _window(c: int, size: int, channels: int) -> range:
    """The channels whose squares enter channel c's sum (clipped to the real ones)."""
    return range(max(c - size // 2, 0), min(c + (size - 1) // 2 + 1, channels))


def _lrn_scaled_base(x, c, size, alpha, k):
    """(m, t) for channel c at every (n, spatial): its window's base is D = m^2 t."""
    window = _window(c, size, x.shape[1])
    m = np.max(np.abs(x[:, window.start:window.stop]), axis=1)
    m = np.where(np.isfinite(m) & (m > 1) & (alpha > 0), m, 1).astype(x.dtype)
    total = np.zeros_like(x[:, c])
    for j in window:
        total += (x[:, j] / m) ** 2
    return m, k / m / m + alpha / size * total


@register("local_response_norm", "reference", priority=-100)
def local_response_norm(x, size, alpha, beta, k):
    y = backend.empty(x.shape, x.dtype)
    for c in range(x.shape[1]):
        m, t = _lrn_scaled_base(x, c, size, alpha, k)
        y[:, c] = x[:, c] / m * m ** (1 - 2 * beta) * t ** -beta
    return y


@register("local_response_norm_backward", "reference", priority=-100)
def local_response_norm_backward(grad_y, x, size, alpha, beta, k):
    grad_x = np.zeros_like(x)
    for c in range(x.shape[1]):
        m, t = _lrn_scaled_base(x, c, size, alpha, k)
        d_to_minus_beta = m ** (-2 * beta) * t ** -beta
        grad_x[:, c] += grad_y[:, c] * d_to_minus_beta
        # y[c] depends on x[j] through the base for every j in c's window:
        # dy[c]/dx[j] = -2 beta alpha/size * x[c] x[j] D^(-beta-1), with x[c] x[j] / D
        # = (x[c]/m)(x[j]/m)/t.
        through = grad_y[:, c] * d_to_minus_beta * (x[:, c] / m) / t * (-2 * beta * alpha / size)
        for j in _window(c, size, x.shape[1]):
            grad_x[:, j] += through * (x[:, j] / m)
    return grad_x
