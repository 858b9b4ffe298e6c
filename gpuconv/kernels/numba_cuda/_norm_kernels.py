"""numba.cuda kernels for batch norm (see gpuconv/kernels/numba_cuda/norm.py for the mapping).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.
x is (N, C, S), S the product of the spatial sizes; per-channel arrays are (C,). Sums start
at a zero of x's dtype, counts are cast to it, and the launchers pass momentum and eps in it,
so that float32 inputs are computed in float32.
"""
import math

from ._numba import cuda


@cuda.jit
def batch_norm_fwd_stats(x, momentum, update_running, running_mean, running_var, eps, mean,
                         inv_std):
    """Thread = one channel: batch mean, then the biased variance in the safe form of
    gpuconv/kernels/reference/norm.py (deviations scaled by their largest magnitude above 1)
    and 1/sqrt(var + eps); in training with running stats, running = (1 - momentum) *
    running + momentum * batch (unbiased var)."""
    c = cuda.grid(1)
    N, C, S = x.shape
    if c >= C:
        return
    T = x.dtype.type
    count = T(N * S)
    total = T(0)
    for n in range(N):
        for s in range(S):
            total += x[n, c, s]
    m = total / count
    scale = T(1)
    for n in range(N):
        for s in range(S):
            scale = max(scale, abs(x[n, c, s] - m))  # NaN is skipped: it reaches v below
    if math.isinf(scale):
        scale = T(1)
    squares = T(0)
    for n in range(N):
        for s in range(S):
            d = (x[n, c, s] - m) / scale
            squares += d * d
    v = squares / count
    mean[c] = m
    inv_std[c] = T(1) / (scale * math.sqrt(v + eps / scale / scale))
    if update_running:
        var = scale * scale * v
        keep = T(1) - momentum
        running_mean[c] = keep * running_mean[c] + momentum * m
        running_var[c] = keep * running_var[c] + momentum * var * count / (count - T(1))


@cuda.jit
def batch_norm_fwd_apply(x, mean, inv_std, weight, bias, y):
    """Thread = one element: y = (x - mean) * inv_std * w + b."""
    i = cuda.grid(1)
    N, C, S = x.shape
    if i >= N * C * S:
        return
    s = i % S
    c = (i // S) % C
    n = i // (S * C)
    y[n, c, s] = (x[n, c, s] - mean[c]) * inv_std[c] * weight[c] + bias[c]


@cuda.jit
def batch_norm_bwd_reduce(grad_y, x, mean, inv_std_of, grad_weight, grad_bias):
    """Thread = one channel: grad_bias = sum(g), grad_weight = sum(g * xhat)."""
    c = cuda.grid(1)
    N, C, S = x.shape
    if c >= C:
        return
    inv_std = inv_std_of[c]
    g_sum = x.dtype.type(0)
    g_xhat = x.dtype.type(0)
    for n in range(N):
        for s in range(S):
            g = grad_y[n, c, s]
            g_sum += g
            g_xhat += g * (x[n, c, s] - mean[c]) * inv_std
    grad_bias[c] = g_sum
    grad_weight[c] = g_xhat


@cuda.jit
def batch_norm_bwd_apply(grad_y, x, mean, inv_std_of, weight, grad_weight, grad_bias, training,
                         grad_x):
    """Thread = one element: w * inv_std * g, and in training minus the projections on the
    batch statistics: w * inv_std * (g - sum(g)/n - xhat * sum(g * xhat)/n)."""
    i = cuda.grid(1)
    N, C, S = x.shape
    if i >= N * C * S:
        return
    s = i % S
    c = (i // S) % C
    n = i // (S * C)
    inv_std = inv_std_of[c]
    g = grad_y[n, c, s]
    if training:
        count = x.dtype.type(N * S)
        xhat = (x[n, c, s] - mean[c]) * inv_std
        g = g - grad_bias[c] / count - xhat * grad_weight[c] / count
    grad_x[n, c, s] = weight[c] * inv_std * g
