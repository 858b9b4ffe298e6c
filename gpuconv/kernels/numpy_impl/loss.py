"""Fast CPU losses (contract: :mod:`gpuconv.kernels.reference.loss`).

Class-index losses view the scores as an ``(M, C)`` matrix, one row per target position
(class axis moved last). Cross-entropy is one numba loop over the rows each way: the
forward pass shifts each row by its maximum, takes one log-sum-exp and reads the target's
score and the weighted row sum from the shifted logits, never materialising log_softmax;
the backward pass rebuilds softmax from the same shifted logits. Its NumPy form took some
twenty array operations each way, 0.13 ms forward and 0.12 ms backward on LeNet-5's
(64, 10) scores, almost all of it call overhead (bench/NOTES.md, 2026-12-07). Each row
computes in the input's dtype but for its sum of exponentials, which is float64 as are the
sums over rows (the loss, the total weight). It takes float32 and float64 (float16 through
float32); other dtypes (bfloat16, longdouble) take the reference. The other losses are
vectorised NumPy.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import register


def _rows(x):
    """``(N, C, *d) -> (M, C)``: one row of class scores per target position."""
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _unrows(rows, shape):
    """Inverse of :func:`_rows`, returned C-contiguous."""
    n, c, *d = shape
    return np.ascontiguousarray(np.moveaxis(rows.reshape(n, *d, c), -1, 1))


class _Targets:
    """Flat targets with ignored positions resolved: ``index`` is safe to gather with
    (ignored positions point at class 0) and ``weight`` is w[t], 0 where ignored."""

    def __init__(self, target, weight, ignore_index: int, n_classes: int, dtype):
        t = target.reshape(-1)
        counted = t != ignore_index
        self.index = np.where(counted, t, 0)
        self.rows = np.arange(t.size)
        self.class_weights = np.ones(n_classes, dtype) if weight is None else weight
        self.weight = np.where(counted, self.class_weights[self.index], 0)
        self.counted = counted

    def position_grads(self, grad_output, reduction: str):
        """d(reduced loss) / d(loss at each flat position), 0 at ignored positions."""
        if reduction == "none":
            g = grad_output.reshape(-1)
        else:
            g = grad_output / self.weight.sum() if reduction == "mean" else grad_output
        return np.where(self.counted, g, 0)


def _reduce(losses, shape, reduction: str, total_weight):
    if reduction == "none":
        return losses.reshape(shape)
    total = losses.sum()
    return np.asarray(total / total_weight if reduction == "mean" else total, losses.dtype)


@njit(cache=True, nogil=True)
def _target_weight(target, class_weights, ignore_index, i):
    """``w[t]`` of row ``i``'s target ``t`` (1 without class weights), 0 where ignored."""
    t = target[i]
    if t == ignore_index:
        return 0.0
    return 1.0 if class_weights is None else class_weights[t]


@njit(cache=True, nogil=True)
def _log_sum_exp(rows, i):
    """Row ``i``'s maximum (NaN if the row holds one) and ``log(sum(exp(row - max)))``."""
    m = rows[i, 0]
    for c in range(1, rows.shape[1]):
        v = rows[i, c]
        if v > m or v != v:
            m = v
        if m != m:
            break
    total = 0.0
    for c in range(rows.shape[1]):
        total += np.exp(rows[i, c] - m)
    return m, rows.dtype.type(np.log(total))


@njit(cache=True, nogil=True)
def _cross_entropy_rows(rows, target, class_weights, ignore_index, smoothing, losses):
    """Each row's loss into ``losses`` (0 where ignored); returns the sum of the losses and
    of the target weights, in float64."""
    t = rows.dtype.type
    zero = t(0)
    n_classes = rows.shape[1]
    keep = 1 - smoothing
    total = total_weight = 0.0
    for i in range(rows.shape[0]):
        w_t = _target_weight(target, class_weights, ignore_index, i)
        total_weight += w_t
        if target[i] == ignore_index:
            losses[i] = zero
            continue
        m, lse = _log_sum_exp(rows, i)
        loss = t(w_t) * (lse - (rows[i, target[i]] - m))
        if smoothing > 0:   # sum_c w_c * (lse - z_c), as the reference: a -inf logit gives inf
            smooth = zero
            for c in range(n_classes):
                w_c = 1.0 if class_weights is None else class_weights[c]
                smooth += t(w_c) * (lse - (rows[i, c] - m))
            loss = t(keep) * loss + t(smoothing / n_classes) * smooth
        losses[i] = loss
        total += loss
    return total, total_weight


@njit(cache=True, nogil=True)
def _cross_entropy_backward_rows(grads, rows, target, class_weights, ignore_index, smoothing,
                                 scale, per_position):
    """Each row's gradient into ``grads``: ``g * ((1 - eps) w_t (softmax - onehot(t)) +
    eps / C (W softmax - w))`` with ``g = scale * per_position[i]`` (``per_position`` None:
    ``g = scale``), 0 where ignored."""
    t = rows.dtype.type
    zero = t(0)
    n_classes = rows.shape[1]
    keep = 1 - smoothing
    weight_sum = 0.0
    for c in range(n_classes):
        weight_sum += 1.0 if class_weights is None else class_weights[c]
    for i in range(rows.shape[0]):
        if target[i] == ignore_index:
            for c in range(n_classes):
                grads[i, c] = zero
            continue
        g = t(scale) if per_position is None else t(scale) * per_position[i]
        w_t = _target_weight(target, class_weights, ignore_index, i)
        nll_part = t(keep) * t(w_t)
        factor = g * (nll_part + t(smoothing / n_classes) * t(weight_sum))
        m, lse = _log_sum_exp(rows, i)
        for c in range(n_classes):
            grads[i, c] = np.exp(rows[i, c] - m - lse) * factor
        grads[i, target[i]] -= g * nll_part
        if smoothing > 0:
            for c in range(n_classes):
                w_c = 1.0 if class_weights is None else class_weights[c]
                grads[i, c] -= g * t(smoothing / n_classes) * t(w_c)


def _class_rows(x, target, ignore_index):
    """The ``(M, C)`` rows of ``x``, the flat targets and ``ignore_index``, as the kernels
    read them (an ignore_index past int64 equals no target: -1 does the same)."""
    rows = x if x.ndim == 2 else _rows(x)
    ignore_index = int(ignore_index)
    if not -2 ** 63 <= ignore_index < 2 ** 63:
        ignore_index = -1
    return rows, target.reshape(-1), ignore_index


@register("cross_entropy", "numpy", dtypes=("float32", "float64"))
def cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing):
    rows, flat, ignore_index = _class_rows(x, target, ignore_index)
    losses = np.empty(flat.size, x.dtype)
    total, total_weight = _cross_entropy_rows(rows, flat, weight, ignore_index,
                                              float(label_smoothing), losses)
    if reduction == "none":
        return losses.reshape(target.shape)
    # NumPy's division: no counted target gives NaN, as the reference, not an exception
    total = np.float64(total)
    return np.asarray(total / total_weight if reduction == "mean" else total, x.dtype)


@register("cross_entropy_backward", "numpy", dtypes=("float32", "float64"))
def cross_entropy_backward(grad_output, x, target, weight, ignore_index, reduction,
                           label_smoothing):
    rows, flat, ignore_index = _class_rows(x, target, ignore_index)
    per_position, scale = None, 1.0
    if reduction == "none":
        per_position = grad_output.reshape(-1)
    else:
        scale = np.float64(grad_output)
        if reduction == "mean":
            counted = flat != ignore_index
            scale = float(scale / (counted.sum() if weight is None
                                   else weight[flat[counted]].sum(dtype=np.float64)))
    grads = np.empty(rows.shape, x.dtype)
    _cross_entropy_backward_rows(grads, rows, flat, weight, ignore_index,
                                 float(label_smoothing), float(scale), per_position)
    return grads if x.ndim == 2 else _unrows(grads, x.shape)


@register("nll_loss", "numpy")
def nll_loss(x, target, weight, ignore_index, reduction):
    tg = _Targets(target, weight, ignore_index, x.shape[1], x.dtype)
    losses = -tg.weight * _rows(x)[tg.rows, tg.index]
    return _reduce(losses, target.shape, reduction, tg.weight.sum())


@register("nll_loss_backward", "numpy")
def nll_loss_backward(grad_output, x, target, weight, ignore_index, reduction):
    tg = _Targets(target, weight, ignore_index, x.shape[1], x.dtype)
    g = tg.position_grads(grad_output, reduction)
    grad = np.zeros((tg.rows.size, x.shape[1]), x.dtype)
    grad[tg.rows, tg.index] = -g * tg.weight
    return _unrows(grad, x.shape)


def _pointwise_grads(grad_output, x, reduction: str):
    """d(reduced loss) / d(loss at each element), broadcastable against ``x``."""
    return grad_output / x.size if reduction == "mean" else grad_output


@register("mse_loss", "numpy")
def mse_loss(x, target, reduction):
    d = x - target
    np.multiply(d, d, out=d)
    return _reduce(d, x.shape, reduction, x.size)


@register("mse_loss_backward", "numpy")
def mse_loss_backward(grad_output, x, target, reduction):
    grad_x = x - target
    grad_x *= 2 * _pointwise_grads(grad_output, x, reduction)
    return grad_x, -grad_x


@register("l1_loss", "numpy")
def l1_loss(x, target, reduction):
    d = x - target
    np.abs(d, out=d)
    return _reduce(d, x.shape, reduction, x.size)


@register("l1_loss_backward", "numpy")
def l1_loss_backward(grad_output, x, target, reduction):
    grad_x = x - target
    np.sign(grad_x, out=grad_x)
    grad_x *= _pointwise_grads(grad_output, x, reduction)
    return grad_x, -grad_x
