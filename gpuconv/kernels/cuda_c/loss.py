"""Launchers for ``kernels/loss.cu``: fused softmax cross-entropy and NLL (forward, backward,
deterministic reductions), plus MSE and L1 as CuPy elementwise expressions and sums.

Registry contract as every loss impl (see ``gpuconv/kernels/reference/loss.py``). The
class-index kernels see the scores as (N, C, S), S the product of the spatial sizes, and
the targets as (N*S,) int64 rows. Cross-entropy gives a warp to each row when the classes
are the innermost axis (S == 1) and there are enough of them to fill the warp; otherwise a
thread to each row, so that neighbouring threads read neighbouring positions. The kernels
check the targets' values on the device and report to :mod:`gpuconv.device_checks`.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend, device_checks
from .. import register
from . import DTYPES, NULL, REDUCE_THREADS, entry_point, gpu_op, launch, run_threads

FAMILY = "loss"
WARP = 32
for _op in ("cross_entropy", "cross_entropy_backward", "nll_loss", "nll_loss_backward"):
    device_checks.checked_on_device(_op, "cuda")


def _run(name: str, dtype, threads_needed: int, args: tuple) -> None:
    run_threads(FAMILY, name, dtype, threads_needed, args)


def _run_one_block(name: str, dtype, args: tuple) -> None:
    launch(FAMILY, entry_point(name, dtype), (1,), (REDUCE_THREADS,), args)


def _or_null(a):
    return NULL if a is None else a


def _class_inputs(x, target, weight):
    """Contiguous scores, targets and weights, and the (N, C, S) sizes."""
    cp = backend.cupy_or_none()
    x, target = cp.ascontiguousarray(x), cp.ascontiguousarray(target)
    weight = None if weight is None else cp.ascontiguousarray(weight)
    return x, target, weight, (x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def _shape_args(sizes, op: str) -> tuple:
    """The error row of ``op``'s target check, then N, C, S as the row kernels take them."""
    N, C, S = sizes
    return device_checks.slot(f"{op}.target"), np.int32(N), np.int32(C), np.int64(S)


def _mean_check(C: int) -> tuple:
    """The error row of a zero "mean" divisor and C, as the reductions take them."""
    return device_checks.slot("class_loss.mean_weight"), np.int32(C)


def _cross_entropy_rows(sizes) -> tuple[str, int]:
    """The row variant of the cross-entropy kernels and the threads it needs."""
    N, C, S = sizes
    if S == 1 and C >= WARP:
        return "warp", N * WARP
    return "thread", N * S


def _reduce(losses, target, weight, ignore_index, reduction, C):
    """The loss array for "none", else its sum (divided by the total weight for "mean")."""
    if reduction == "none":
        return losses
    out = backend.empty((), losses.dtype, backend.cupy_or_none())
    _run_one_block("class_loss_fwd_reduce", losses.dtype,
                   (losses, target, _or_null(weight), np.int64(ignore_index),
                    np.int64(losses.size), np.int32(reduction == "mean"), out,
                    *_mean_check(C)))
    return out


def _row_grad_args(grad_output, target, weight, ignore_index, reduction, C) -> tuple:
    """(grad_output, g_stride, total_weight) as the backward kernels read them."""
    cp = backend.cupy_or_none()
    grad_output = cp.ascontiguousarray(grad_output)
    total_weight = NULL
    if reduction == "mean":
        total_weight = backend.empty((1,), grad_output.dtype, cp)
        _run_one_block("class_loss_bwd_total_weight", grad_output.dtype,
                       (target, _or_null(weight), np.int64(ignore_index),
                        np.int64(target.size), total_weight, *_mean_check(C)))
    return grad_output, np.int64(reduction == "none"), total_weight


@register("cross_entropy", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("cross_entropy")
def cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing):
    cp = backend.cupy_or_none()
    x, target, weight, sizes = _class_inputs(x, target, weight)
    variant, threads_needed = _cross_entropy_rows(sizes)
    losses = backend.empty(target.shape, x.dtype, cp)
    _run(f"cross_entropy_fwd_{variant}", x.dtype, threads_needed,
         (x, target, _or_null(weight), np.int64(ignore_index), x.dtype.type(label_smoothing),
          losses, *_shape_args(sizes, "cross_entropy")))
    return _reduce(losses, target, weight, ignore_index, reduction, sizes[1])


@register("cross_entropy_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("cross_entropy_backward")
def cross_entropy_backward(grad_output, x, target, weight, ignore_index, reduction,
                           label_smoothing):
    cp = backend.cupy_or_none()
    x, target, weight, sizes = _class_inputs(x, target, weight)
    variant, threads_needed = _cross_entropy_rows(sizes)
    grad = backend.empty(x.shape, x.dtype, cp)
    _run(f"cross_entropy_bwd_{variant}", x.dtype, threads_needed,
         (*_row_grad_args(grad_output, target, weight, ignore_index, reduction, sizes[1]), x,
          target, _or_null(weight), np.int64(ignore_index), x.dtype.type(label_smoothing), grad,
          *_shape_args(sizes, "cross_entropy_backward")))
    return grad


@register("nll_loss", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("nll_loss")
def nll_loss(x, target, weight, ignore_index, reduction):
    cp = backend.cupy_or_none()
    x, target, weight, sizes = _class_inputs(x, target, weight)
    losses = backend.empty(target.shape, x.dtype, cp)
    _run("nll_loss_fwd_rows", x.dtype, losses.size,
         (x, target, _or_null(weight), np.int64(ignore_index), losses,
          *_shape_args(sizes, "nll_loss")))
    return _reduce(losses, target, weight, ignore_index, reduction, sizes[1])


@register("nll_loss_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("nll_loss_backward")
def nll_loss_backward(grad_output, x, target, weight, ignore_index, reduction):
    cp = backend.cupy_or_none()
    x, target, weight, sizes = _class_inputs(x, target, weight)
    grad = backend.empty(x.shape, x.dtype, cp)
    _run("nll_loss_bwd_pointwise", x.dtype, grad.size,
         (*_row_grad_args(grad_output, target, weight, ignore_index, reduction, sizes[1]),
          target, _or_null(weight), np.int64(ignore_index), grad,
          *_shape_args(sizes, "nll_loss_backward")))
    return grad


# --------------------------------------------------------------------------- training statistics

def classification_stats(stats, loss, scores, target) -> None:
    """``stats += [loss * N, correct]`` on the device, one launch: ``stats`` (2,) float64,
    ``loss`` a 0-d array, ``scores`` (N, C, ...) and ``target`` (N, ...) int64 as the
    class-index losses take them; a position is correct when its first largest score (NaN
    counts as largest, as NumPy's argmax) is its target."""
    scores, target, _, sizes = _class_inputs(scores, target, None)
    N, C, S = sizes
    _run_one_block("classification_stats", scores.dtype,
                   (loss, scores, target, np.int32(N), np.int32(C), np.int64(S), stats))


# --------------------------------------------------------------------------- pointwise losses
# Elementwise CuPy expressions; the reductions are plain sums, which CuPy computes with a
# fixed-order tree (deterministic).

def _pointwise_reduce(losses, reduction: str):
    if reduction == "none":
        return losses
    total = losses.sum()
    return total / losses.size if reduction == "mean" else total


def _pointwise_scale(grad_output, x, reduction: str):
    """d(reduced loss) / d(loss at each element), broadcastable against ``x``."""
    return grad_output / x.size if reduction == "mean" else grad_output


@register("mse_loss", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("mse_loss")
def mse_loss(x, target, reduction):
    d = x - target
    d *= d
    return _pointwise_reduce(d, reduction)


@register("mse_loss_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("mse_loss_backward")
def mse_loss_backward(grad_output, x, target, reduction):
    grad_x = x - target
    grad_x *= 2 * _pointwise_scale(grad_output, x, reduction)
    return grad_x, -grad_x


@register("l1_loss", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("l1_loss")
def l1_loss(x, target, reduction):
    cp = backend.cupy_or_none()
    return _pointwise_reduce(cp.abs(x - target), reduction)


@register("l1_loss_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("l1_loss_backward")
def l1_loss_backward(grad_output, x, target, reduction):
    cp = backend.cupy_or_none()
    grad_x = cp.sign(x - target)
    grad_x *= _pointwise_scale(grad_output, x, reduction)
    return grad_x, -grad_x
