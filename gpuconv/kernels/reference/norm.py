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
``"local_response_norm"``
    ``fn(x, size, alpha, beta, k) -> y`` with ``x: (N, C, *spatial)``, ``size >= 1``,
    ``alpha >= 0``, ``k > 0``.
``"local_response_norm_backward"``
    ``fn(grad_y, x, size, alpha, beta, k) -> grad_x``.

Every result has the dtype of ``x``.

This module works one channel at a time with the textbook formulas; the local response norm
backward scatters each output channel's gradient onto the input channels of its window. It
shares no code with the fast impls it checks.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register


def _channel_stats(xc, running_mean, running_var, c, training):
    """Mean and biased variance of one channel's values ``xc`` (training), else the running
    stats of channel ``c``."""
    if training:
        mean = xc.mean()
        return mean, ((xc - mean) ** 2).mean()
    return running_mean[c], running_var[c]


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
        mean, var = _channel_stats(xc, running_mean, running_var, c, training)
        w, b = _affine(weight, bias, c, x.dtype)
        y[:, c] = (xc - mean) / np.sqrt(var + eps) * w + b
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
        mean, var = _channel_stats(xc, running_mean, running_var, c, training)
        w, _ = _affine(weight, bias, c, x.dtype)
        inv_std = 1 / np.sqrt(var + eps)
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


def _window(c: int, size: int, channels: int) -> range:
    """The channels whose squares enter channel c's sum (clipped to the real ones)."""
    return range(max(c - size // 2, 0), min(c + (size - 1) // 2 + 1, channels))


def _lrn_base(x, c, size, alpha, k):
    """k + alpha/size * sum of the squares in channel c's window, for every (n, spatial)."""
    total = np.zeros_like(x[:, c])
    for j in _window(c, size, x.shape[1]):
        total += x[:, j] ** 2
    return k + alpha / size * total


@register("local_response_norm", "reference", priority=-100)
def local_response_norm(x, size, alpha, beta, k):
    y = backend.empty(x.shape, x.dtype)
    for c in range(x.shape[1]):
        y[:, c] = x[:, c] / _lrn_base(x, c, size, alpha, k) ** beta
    return y


@register("local_response_norm_backward", "reference", priority=-100)
def local_response_norm_backward(grad_y, x, size, alpha, beta, k):
    grad_x = np.zeros_like(x)
    for c in range(x.shape[1]):
        base = _lrn_base(x, c, size, alpha, k)
        grad_x[:, c] += grad_y[:, c] * base ** -beta
        # y[c] depends on x[j] through the base for every j in c's window.
        through_base = grad_y[:, c] * x[:, c] * (-beta) * base ** (-beta - 1) * alpha / size
        for j in _window(c, size, x.shape[1]):
            grad_x[:, j] += through_base * 2 * x[:, j]
    return grad_x
