"""Fast CPU normalisation in vectorised NumPy (contract: :mod:`gpuconv.kernels.reference.norm`).

batch_norm reduces over every non-channel axis at once and folds weight and 1/std into one
per-channel scale. local_response_norm forms its channel-window sums from ``size`` shifted
slices of a zero-padded array (one vectorised add per offset), which stays accurate where a
running prefix sum would lose float32 digits to cancellation.
"""
from __future__ import annotations

import numpy as np

from .. import register


def _reduce_axes(x) -> tuple:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """A (C,) vector shaped to broadcast along axis 1 of ``x``."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _stats(x, running_mean, running_var, training):
    """``(mean, x - mean, var)`` per channel: batch mean and biased variance in training,
    the running stats in evaluation. ``x - mean`` is a fresh array the caller may reuse."""
    if not training:
        return running_mean, x - _per_channel(running_mean, x), running_var
    axes = _reduce_axes(x)
    mean = x.mean(axis=axes)
    centred = x - _per_channel(mean, x)
    return mean, centred, np.mean(centred * centred, axis=axes)


def _scale(weight, inv_std):
    return inv_std if weight is None else weight * inv_std


@register("batch_norm", "numpy")
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    mean, y, var = _stats(x, running_mean, running_var, training)
    y *= _per_channel(_scale(weight, 1 / np.sqrt(var + eps)), x)
    if bias is not None:
        y += _per_channel(bias, x)
    if training and running_mean is not None:
        n = x.size // x.shape[1]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * n / (n - 1)) * var
    return y


@register("batch_norm_backward", "numpy")
def batch_norm_backward(grad_y, x, running_mean, running_var, weight, bias, training, eps):
    axes = _reduce_axes(x)
    _, xhat, var = _stats(x, running_mean, running_var, training)
    inv_std = 1 / np.sqrt(var + eps)
    xhat *= _per_channel(inv_std, x)
    grad_b = grad_y.sum(axis=axes)
    grad_w = (grad_y * xhat).sum(axis=axes)
    scale = _per_channel(_scale(weight, inv_std), x)
    if training:
        # The batch mean and variance depend on x: project out their directions.
        n = x.size // x.shape[1]
        xhat *= _per_channel(grad_w / n, x)
        grad_x = grad_y - _per_channel(grad_b / n, x)
        grad_x -= xhat
        grad_x *= scale
    else:
        grad_x = grad_y * scale
    return grad_x, None if weight is None else grad_w, None if bias is None else grad_b


def _window_sums(a, before: int, after: int):
    """``out[:, c] = sum(a[:, c - before : c + after + 1])`` over the channels that exist."""
    channels = a.shape[1]
    pad = [(0, 0)] * a.ndim
    pad[1] = (before, after)
    padded = np.pad(a, pad)
    total = padded[:, :channels].copy()
    for offset in range(1, before + after + 1):
        total += padded[:, offset:offset + channels]
    return total


def _lrn_base(x, size, alpha, k):
    """k + alpha/size * (sum of squares over each channel's window)."""
    base = _window_sums(x * x, size // 2, (size - 1) // 2)
    base *= alpha / size
    base += k
    return base


@register("local_response_norm", "numpy")
def local_response_norm(x, size, alpha, beta, k):
    return x / _lrn_base(x, size, alpha, k) ** beta


@register("local_response_norm_backward", "numpy")
def local_response_norm_backward(grad_y, x, size, alpha, beta, k):
    base = _lrn_base(x, size, alpha, k)
    scale = base ** -beta
    # Output channel c reaches input channel j when j is in c's window, i.e. c runs over
    # j - (size-1)//2 .. j + size//2: the same window sum with its ends swapped.
    through_base = grad_y * x * scale / base
    spread = _window_sums(through_base, (size - 1) // 2, size // 2)
    spread *= x * (2 * alpha * beta / size)
    grad_x = grad_y * scale
    grad_x -= spread
    return grad_x
