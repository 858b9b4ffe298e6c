"""Reference losses: plain NumPy, any float dtype, the oracle for every other impl.

Registry contract for the loss family
-------------------------------------
Arguments arrive validated and normalised by :mod:`gpuconv.functional.loss`: arrays of one
float dtype on one device (any strides), ``target`` of class-index ops as int64 whose values
lie in ``[0, C)`` or equal ``ignore_index``, ``reduction`` one of ``"mean" | "sum" | "none"``
and, for ``"mean"``, a nonzero total weight of the non-ignored targets.

``"cross_entropy"``
    ``fn(x, target, weight, ignore_index, reduction, label_smoothing) -> loss`` with
    ``x: (N, C, *d)`` logits, ``target: (N, *d)``, ``weight: (C,)`` or None,
    ``label_smoothing`` a float in [0, 1].
``"cross_entropy_backward"``
    ``fn(grad_output, x, target, weight, ignore_index, reduction, label_smoothing)
    -> grad_x``.
``"nll_loss"``, ``"nll_loss_backward"``
    the same without ``label_smoothing``; ``x`` holds log-probabilities.
``"mse_loss"``, ``"l1_loss"``
    ``fn(x, target, reduction) -> loss`` with ``target`` shaped like ``x``, ``x.ndim >= 1``.
``"mse_loss_backward"``, ``"l1_loss_backward"``
    ``fn(grad_output, x, target, reduction) -> (grad_x, grad_target)``.

``loss`` is a 0-d array for ``"mean"``/``"sum"`` and has the per-position shape (``(N, *d)``
or the shape of ``x``) for ``"none"``; ``grad_output`` has the shape of ``loss``. Every
result has the dtype of ``x``.

This module visits one target position at a time: it takes that position's vector of class
scores, applies the textbook formula, and writes the result. It shares no code with the
fast impls it checks.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register


def _positions(target):
    """Yield ``(pos, scores)``: a target position and the index of its class-score vector."""
    for pos in np.ndindex(target.shape):
        yield pos, (pos[0], slice(None)) + pos[1:]


def _class_weights(weight, n_classes: int, dtype):
    return np.ones(n_classes, dtype) if weight is None else weight


def _target_weights(target, w, ignore_index: int):
    """w[target] at each position, 0 where the target is ignored."""
    out = np.zeros(target.shape, w.dtype)
    for pos in np.ndindex(target.shape):
        if target[pos] != ignore_index:
            out[pos] = w[target[pos]]
    return out


def _reduce(losses, total_weight, reduction: str):
    if reduction == "none":
        return losses
    total = losses.sum()
    return np.asarray(total / total_weight if reduction == "mean" else total, losses.dtype)


def _loss_grads(grad_output, total_weight, shape, reduction: str):
    """d(reduced loss) / d(loss at each position)."""
    if reduction == "none":
        return grad_output
    g = grad_output / total_weight if reduction == "mean" else grad_output
    return np.full(shape, g, grad_output.dtype)


def _log_softmax(scores):
    shifted = scores - scores.max()
    return shifted - np.log(np.exp(shifted).sum())


@register("cross_entropy", "reference", priority=-100)
def cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing):
    n_classes = x.shape[1]
    w = _class_weights(weight, n_classes, x.dtype)
    wt = _target_weights(target, w, ignore_index)
    losses = backend.empty(target.shape, x.dtype)
    for pos, scores in _positions(target):
        t = target[pos]
        if t == ignore_index:
            losses[pos] = 0
            continue
        logp = _log_softmax(x[scores])
        nll = -w[t] * logp[t]
        if label_smoothing == 0:  # as torch: a -inf logit's -log p = inf must not meet 0 * inf
            losses[pos] = nll
            continue
        smooth = -(w * logp).sum()
        losses[pos] = (1 - label_smoothing) * nll + label_smoothing / n_classes * smooth
    return _reduce(losses, wt.sum(), reduction)


@register("cross_entropy_backward", "reference", priority=-100)
def cross_entropy_backward(grad_output, x, target, weight, ignore_index, reduction,
                           label_smoothing):
    n_classes = x.shape[1]
    w = _class_weights(weight, n_classes, x.dtype)
    wt = _target_weights(target, w, ignore_index)
    g = _loss_grads(grad_output, wt.sum(), target.shape, reduction)
    grad = backend.empty(x.shape, x.dtype)
    for pos, scores in _positions(target):
        t = target[pos]
        if t == ignore_index:
            grad[scores] = 0
            continue
        p = np.exp(_log_softmax(x[scores]))
        onehot = np.zeros(n_classes, x.dtype)
        onehot[t] = 1
        d_nll = w[t] * (p - onehot)          # d(-w[t] log p[t]) / dx
        d_smooth = w.sum() * p - w           # d(-sum_c w[c] log p[c]) / dx
        grad[scores] = g[pos] * ((1 - label_smoothing) * d_nll
                                 + label_smoothing / n_classes * d_smooth)
    return grad


@register("nll_loss", "reference", priority=-100)
def nll_loss(x, target, weight, ignore_index, reduction):
    w = _class_weights(weight, x.shape[1], x.dtype)
    wt = _target_weights(target, w, ignore_index)
    losses = backend.empty(target.shape, x.dtype)
    for pos, scores in _positions(target):
        t = target[pos]
        losses[pos] = 0 if t == ignore_index else -w[t] * x[scores][t]
    return _reduce(losses, wt.sum(), reduction)


@register("nll_loss_backward", "reference", priority=-100)
def nll_loss_backward(grad_output, x, target, weight, ignore_index, reduction):
    w = _class_weights(weight, x.shape[1], x.dtype)
    wt = _target_weights(target, w, ignore_index)
    g = _loss_grads(grad_output, wt.sum(), target.shape, reduction)
    grad = backend.empty(x.shape, x.dtype)
    for pos, scores in _positions(target):
        grad[scores] = 0
        t = target[pos]
        if t != ignore_index:
            grad[scores][t] = -g[pos] * w[t]
    return grad


@register("mse_loss", "reference", priority=-100)
def mse_loss(x, target, reduction):
    return _reduce((x - target) ** 2, x.size, reduction)


@register("mse_loss_backward", "reference", priority=-100)
def mse_loss_backward(grad_output, x, target, reduction):
    g = _loss_grads(grad_output, x.size, x.shape, reduction)
    grad_x = 2 * g * (x - target)
    return grad_x, -grad_x


@register("l1_loss", "reference", priority=-100)
def l1_loss(x, target, reduction):
    return _reduce(np.abs(x - target), x.size, reduction)


@register("l1_loss_backward", "reference", priority=-100)
def l1_loss_backward(grad_output, x, target, reduction):
    g = _loss_grads(grad_output, x.size, x.shape, reduction)
    grad_x = g * np.sign(x - target)
    return grad_x, -grad_x
