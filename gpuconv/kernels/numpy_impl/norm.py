"""Fast CPU normalisation in vectorised NumPy (contract: :mod:`gpuconv.kernels.reference.norm`).

batch_norm reduces over every non-channel axis at once and folds weight and 1/std into one
per-channel scale. local_response_norm works in the reference's safe form (each window's base
as m^2 t, m the window's largest |x| above 1) with one vectorised step per window offset,
pairing channel slices c and c + offset: a window's maximum, its scaled sum of squares and
the backward's cross terms. (Shifted slices stay accurate where a running prefix sum would
lose float32 digits to cancellation.)
"""
from __future__ import annotations

import numpy as np

from . import register


def _reduce_axes(x) -> tuple:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """A (C,) vector shaped to broadcast along axis 1 of ``x``."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _stats(x, running_mean, running_var, training, eps):
    """``(mean, x - mean, var, 1/sqrt(var + eps))`` per channel: batch mean and biased
    variance in training (in the reference's safe form), the running stats in evaluation.
    ``x - mean`` is a fresh array the caller may reuse."""
    if not training:
        return (running_mean, x - _per_channel(running_mean, x), running_var,
                1 / np.sqrt(running_var + eps))
    axes = _reduce_axes(x)
    mean = x.mean(axis=axes)
    centred = x - _per_channel(mean, x)
    scale = np.max(np.abs(centred), axis=axes)
    scale[~np.isfinite(scale) | (scale < 1)] = 1
    v = np.mean(np.square(centred / _per_channel(scale, x)), axis=axes)
    return mean, centred, scale * scale * v, 1 / (scale * np.sqrt(v + eps / scale / scale))


def _scale(weight, inv_std):
    return inv_std if weight is None else weight * inv_std


@register("batch_norm", "numpy", updates=(1, 2))  # the running stats
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    mean, y, var, inv_std = _stats(x, running_mean, running_var, training, eps)
    y *= _per_channel(_scale(weight, inv_std), x)
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
    _, xhat, _, inv_std = _stats(x, running_mean, running_var, training, eps)
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


def _window_pairs(channels: int, size: int):
    """For each offset of a window (channels c - size//2 .. c + (size-1)//2): the slices of
    the centre channels c and of their partners c + offset that both exist."""
    for offset in range(-(size // 2), (size - 1) // 2 + 1):
        lo, hi = max(0, -offset), min(channels, channels - offset)
        yield (slice(None), slice(lo, hi)), (slice(None), slice(lo + offset, hi + offset))


def _lrn_scaled_base(x, size, alpha, k):
    """(m, t) per element: the base of its window is D = m^2 t, m the window's largest |x|
    where that is finite and above 1, else 1 (the reference's safe form)."""
    m = np.ones_like(x)
    if alpha > 0:
        a = np.abs(x)
        for centre, partner in _window_pairs(x.shape[1], size):
            np.fmax(m[centre], a[partner], out=m[centre])
        m[~np.isfinite(m)] = 1
    t = np.zeros_like(x)
    for centre, partner in _window_pairs(x.shape[1], size):
        t[centre] += np.square(x[partner] / m[centre])
    t *= alpha / size
    t += k / m / m
    return m, t


@register("local_response_norm", "numpy")
def local_response_norm(x, size, alpha, beta, k):
    m, t = _lrn_scaled_base(x, size, alpha, k)
    y = np.divide(x, m)
    y *= m ** (1 - 2 * beta)
    y *= t ** -beta
    return y


@register("local_response_norm_backward", "numpy")
def local_response_norm_backward(grad_y, x, size, alpha, beta, k):
    m, t = _lrn_scaled_base(x, size, alpha, k)
    scale = m ** (-2 * beta)
    scale *= t ** -beta                                  # D^-beta
    grad_x = grad_y * scale
    # Output channel c reaches input channel j of its window through x[c] x[j] / D[c] =
    # (x[c]/m[c]) (x[j]/m[c]) / t[c]: each factor bounded.
    through = grad_x * (x / m) / t
    through *= 2 * alpha * beta / size
    for centre, partner in _window_pairs(x.shape[1], size):
        grad_x[partner] -= through[centre] * (x[partner] / m[centre])
    return grad_x
