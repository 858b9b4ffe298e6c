"""Cross-entropy in numba.cuda, forward and backward: the readable GPU version.

Registry contract as every loss impl (see ``gpuconv/kernels/reference/loss.py``). Scores
are viewed as (N, C, S), S the product of the spatial sizes, and one thread owns one target
position (n, s): it finds the row's maximum, sums exp of the shifted logits, and writes the
position's loss (forward) or its C gradient entries (backward). The reduction over the
positions and the total weight of the counted targets are sums on the array module (a
fixed-order tree in CuPy on a GPU, NumPy under the simulator).
"""
from __future__ import annotations

import functools
import math

from ... import backend
from .. import register
from . import DTYPES, is_available, run

_launch = functools.partial(run, "loss")


def _class_inputs(x, target, weight):
    """xp, scores as contiguous (N, C, S), targets as contiguous (N, S), class weights."""
    xp = backend.array_module(x)
    N, C = x.shape[:2]
    S = math.prod(x.shape[2:])
    x3 = xp.ascontiguousarray(x).reshape(N, C, S)
    target2 = xp.ascontiguousarray(target).reshape(N, S)
    w = xp.ones(C, x.dtype) if weight is None else xp.ascontiguousarray(weight)
    return xp, x3, target2, w


def _total_weight(xp, target2, w, ignore_index):
    """sum(w[t]) over the counted targets: the divisor of reduction "mean"."""
    row_weights = backend.empty((target2.size,), w.dtype, xp)
    _launch("class_row_weights", row_weights.size, target2.reshape(-1), w, ignore_index,
            row_weights)
    return row_weights.sum()


def _row_grads(xp, grad_output, target2, w, ignore_index, reduction):
    """d(reduced loss) / d(loss at each position), as a contiguous (N, S) array."""
    if reduction == "none":
        return xp.ascontiguousarray(grad_output).reshape(target2.shape)
    if reduction == "mean":
        grad_output = grad_output / _total_weight(xp, target2, w, ignore_index)
    row_grads = xp.empty(target2.shape, w.dtype)
    row_grads[...] = grad_output
    return row_grads


@register("cross_entropy", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available, priority=-10)
def cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing):
    xp, x3, target2, w = _class_inputs(x, target, weight)
    losses = backend.empty(target2.shape, x.dtype, xp)
    _launch("cross_entropy_fwd_rows", losses.size, x3, target2, w, ignore_index,
            x.dtype.type(label_smoothing), losses)
    if reduction == "none":
        return losses.reshape(target.shape)
    total = losses.sum()
    if reduction == "mean":
        total = total / _total_weight(xp, target2, w, ignore_index)
    return xp.asarray(total, dtype=x.dtype)


@register("cross_entropy_backward", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
          priority=-10)
def cross_entropy_backward(grad_output, x, target, weight, ignore_index, reduction,
                           label_smoothing):
    xp, x3, target2, w = _class_inputs(x, target, weight)
    row_grads = _row_grads(xp, grad_output, target2, w, ignore_index, reduction)
    grad = backend.empty(x3.shape, x.dtype, xp)
    _launch("cross_entropy_bwd_rows", target2.size, row_grads, x3, target2, w, ignore_index,
            x.dtype.type(label_smoothing), grad)
    return grad.reshape(x.shape)
