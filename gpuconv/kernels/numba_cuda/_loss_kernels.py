"""numba.cuda kernels for cross-entropy (see gpuconv/kernels/numba_cuda/loss.py for the mapping).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.
Scores are (N, C, S) and targets (N, S), S the product of the spatial sizes. Literals and
counts are cast to the scores' dtype, and the launcher passes label_smoothing in it, so that
float32 scores are computed in float32.
"""
import math

from ._numba import cuda


@cuda.jit(device=True)
def _row_max(x, n, s):
    top = x[n, 0, s]
    for c in range(1, x.shape[1]):
        top = max(top, x[n, c, s])
    return top


@cuda.jit(device=True)
def _row_sum_exp(x, n, s, top):
    total = x.dtype.type(0)
    for c in range(x.shape[1]):
        total += math.exp(x[n, c, s] - top)
    return total


@cuda.jit(device=True)
def _weight_sum(weight):
    total = weight.dtype.type(0)
    for c in range(weight.shape[0]):
        total += weight[c]
    return total


@cuda.jit
def class_row_weights(target, weight, ignore_index, out):
    """out[m] = w[target[m]], 0 where the target is ignored (flat rows)."""
    m = cuda.grid(1)
    if m >= out.shape[0]:
        return
    t = target[m]
    out[m] = out.dtype.type(0) if t == ignore_index else weight[t]


@cuda.jit
def cross_entropy_fwd_rows(x, target, weight, ignore_index, smoothing, losses):
    """Thread = one row (n, s):
    (1 - eps) * w[t] * (lse - x[t]) + eps / C * sum_c w[c] * (lse - x[c])."""
    i = cuda.grid(1)
    N, C, S = x.shape
    if i >= N * S:
        return
    n, s = i // S, i % S
    t = target[n, s]
    zero, one = x.dtype.type(0), x.dtype.type(1)
    if t == ignore_index:
        losses[n, s] = zero
        return
    top = _row_max(x, n, s)
    lse = top + math.log(_row_sum_exp(x, n, s, top))
    nll = weight[t] * (lse - x[n, t, s])
    if smoothing == zero:  # as torch: a -inf logit's lse - x = inf must not meet 0 * inf
        losses[n, s] = nll
        return
    smooth = zero
    for c in range(C):
        smooth += weight[c] * (lse - x[n, c, s])
    losses[n, s] = (one - smoothing) * nll + smoothing / x.dtype.type(C) * smooth


@cuda.jit
def cross_entropy_bwd_rows(row_grads, x, target, weight, ignore_index, smoothing, grad):
    """Thread = one row (n, s): g * ((1 - eps) * w[t] * (p - onehot) + eps / C * (W * p - w))."""
    i = cuda.grid(1)
    N, C, S = x.shape
    if i >= N * S:
        return
    n, s = i // S, i % S
    t = target[n, s]
    zero, one = x.dtype.type(0), x.dtype.type(1)
    if t == ignore_index:
        for c in range(C):
            grad[n, c, s] = zero
        return
    top = _row_max(x, n, s)
    sum_exp = _row_sum_exp(x, n, s, top)
    total_weight = _weight_sum(weight)
    g = row_grads[n, s]
    nll_part = (one - smoothing) * weight[t]
    smooth_part = smoothing / x.dtype.type(C)
    for c in range(C):
        p = math.exp(x[n, c, s] - top) / sum_exp
        onehot = one if c == t else zero
        grad[n, c, s] = g * (nll_part * (p - onehot)
                             + smooth_part * (total_weight * p - weight[c]))
