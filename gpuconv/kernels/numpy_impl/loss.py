"""Fast CPU losses in vectorised NumPy (contract: :mod:`gpuconv.kernels.reference.loss`).

Class-index losses view the scores as an ``(M, C)`` matrix, one row per target position
(class axis moved last), and work on whole rows at once. Cross-entropy is fused: the forward
pass shifts each row by its maximum, takes one log-sum-exp and reads the target's score and
the weighted row sum from the shifted logits, never materialising log_softmax; the backward
pass rebuilds softmax from the same shifted logits.
"""
from __future__ import annotations

import numpy as np

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


def _shifted_logits(x):
    """Row-wise ``z = x - max(x)`` and ``log(sum(exp(z)))``."""
    rows = _rows(x)
    z = rows - rows.max(axis=1, keepdims=True)
    return z, np.log(np.exp(z).sum(axis=1))


@register("cross_entropy", "numpy")
def cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing):
    n_classes = x.shape[1]
    tg = _Targets(target, weight, ignore_index, n_classes, x.dtype)
    z, lse = _shifted_logits(x)
    losses = tg.weight * (lse - z[tg.rows, tg.index])
    if label_smoothing > 0:
        w = tg.class_weights
        smooth = np.where(tg.counted, w.sum() * lse - z @ w, 0)
        losses = (1 - label_smoothing) * losses + (label_smoothing / n_classes) * smooth
    return _reduce(losses, target.shape, reduction, tg.weight.sum())


@register("cross_entropy_backward", "numpy")
def cross_entropy_backward(grad_output, x, target, weight, ignore_index, reduction,
                           label_smoothing):
    n_classes = x.shape[1]
    tg = _Targets(target, weight, ignore_index, n_classes, x.dtype)
    z, lse = _shifted_logits(x)
    g = tg.position_grads(grad_output, reduction)
    nll_part = (1 - label_smoothing) * tg.weight
    smooth_part = label_smoothing / n_classes
    # softmax * g * ((1 - eps) w[t] + eps/C * W), minus the one-hot and smoothing terms
    grad = np.exp(z - lse[:, None])
    grad *= (g * (nll_part + smooth_part * tg.class_weights.sum()))[:, None]
    grad[tg.rows, tg.index] -= g * nll_part
    if label_smoothing > 0:
        grad -= np.outer(g * smooth_part, tg.class_weights)
    return _unrows(grad, x.shape)


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
