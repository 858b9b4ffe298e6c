"""Launchers for ``kernels/pool.cu``: max, average and adaptive average pooling, forward and
backward, float32/float64.

Registry contract as every pooling impl (see ``gpuconv/kernels/reference/pool.py``). Each
kernel is a grid-stride loop with one thread per output element (forward) or per input
element (backward, gathering from the windows that hold it: deterministic, no atomics); the
mapping, and why it is memory-bound, is set out at the top of the .cu file.
"""
from __future__ import annotations

import numpy as np

from ... import backend, device_checks
from .. import register
from ..numba_cuda.pool import NO_DIVISOR_OVERRIDE
from . import DTYPES, gpu_op, run_threads

FAMILY = "pool"
# Above the numba_cuda impls: these are the fast GPU path.
PRIORITY = 10
# The kernels index inside one plane with an int.
MAX_PLANE_ELEMENTS = int(np.iinfo(np.int32).max)
device_checks.checked_on_device("max_pool2d_backward", "cuda")


def _register(op: str):
    """Register the decorated launcher as the ``cuda`` impl of ``op``."""
    def deco(fn):
        return register(op, "cuda", device="cuda", dtypes=DTYPES, priority=PRIORITY)(
            gpu_op(op)(fn))
    return deco


def _i32(*values) -> tuple:
    return tuple(np.int32(v) for v in values)


def _contiguous(*arrays):
    cp = backend.cupy_or_none()
    return tuple(cp.ascontiguousarray(a) for a in arrays)


def _shape_args(op: str, input_shape, out_size) -> tuple:
    """The kernels' (planes, H, W, OH, OW) block."""
    N, C, H, W = input_shape
    OH, OW = out_size
    if max(H * W, OH * OW) > MAX_PLANE_ELEMENTS:
        raise ValueError(f"{op}: a plane of {H}x{W} inputs or {OH}x{OW} outputs exceeds the "
                         f"{MAX_PLANE_ELEMENTS} elements that the CUDA kernels index with an int")
    return (np.int64(N * C), *_i32(H, W, OH, OW))


def _avg_args(kernel, stride, padding, count_include_pad, divisor_override) -> tuple:
    return _i32(*kernel, *stride, *padding, count_include_pad,
                divisor_override or NO_DIVISOR_OVERRIDE)


@_register("max_pool2d")
def max_pool2d(x, kernel, stride, padding, dilation, out_size):
    cp = backend.cupy_or_none()
    (x,) = _contiguous(x)
    out = backend.empty((*x.shape[:2], *out_size), x.dtype, cp)
    indices = backend.empty(out.shape, np.int64, cp)
    run_threads(FAMILY, "max_pool2d_fwd", x.dtype, out.size,
                (x, out, indices, *_shape_args("max_pool2d", x.shape, out_size),
                 *_i32(*kernel, *stride, *padding, *dilation)))
    return out, indices


@_register("max_pool2d_backward")
def max_pool2d_backward(grad_out, indices, input_shape, kernel, stride, padding, dilation):
    cp = backend.cupy_or_none()
    grad_out, indices = _contiguous(grad_out, indices)
    grad = backend.empty(input_shape, grad_out.dtype, cp)
    run_threads(FAMILY, "max_pool2d_bwd", grad.dtype, grad.size,
                (grad_out, indices, grad, device_checks.slot("max_pool2d_backward.indices"),
                 *_shape_args("max_pool2d_backward", input_shape, grad_out.shape[2:]),
                 *_i32(*kernel, *stride, *padding, *dilation)))
    return grad


@_register("avg_pool2d")
def avg_pool2d(x, kernel, stride, padding, out_size, count_include_pad, divisor_override):
    cp = backend.cupy_or_none()
    (x,) = _contiguous(x)
    out = backend.empty((*x.shape[:2], *out_size), x.dtype, cp)
    run_threads(FAMILY, "avg_pool2d_fwd", x.dtype, out.size,
                (x, out, *_shape_args("avg_pool2d", x.shape, out_size),
                 *_avg_args(kernel, stride, padding, count_include_pad, divisor_override)))
    return out


@_register("avg_pool2d_backward")
def avg_pool2d_backward(grad_out, input_shape, kernel, stride, padding, count_include_pad,
                        divisor_override):
    cp = backend.cupy_or_none()
    (grad_out,) = _contiguous(grad_out)
    grad = backend.empty(input_shape, grad_out.dtype, cp)
    run_threads(FAMILY, "avg_pool2d_bwd", grad.dtype, grad.size,
                (grad_out, grad, *_shape_args("avg_pool2d_backward", input_shape,
                                              grad_out.shape[2:]),
                 *_avg_args(kernel, stride, padding, count_include_pad, divisor_override)))
    return grad


@_register("adaptive_avg_pool2d")
def adaptive_avg_pool2d(x, out_size):
    cp = backend.cupy_or_none()
    (x,) = _contiguous(x)
    out = backend.empty((*x.shape[:2], *out_size), x.dtype, cp)
    run_threads(FAMILY, "adaptive_avg_pool2d_fwd", x.dtype, out.size,
                (x, out, *_shape_args("adaptive_avg_pool2d", x.shape, out_size)))
    return out


@_register("adaptive_avg_pool2d_backward")
def adaptive_avg_pool2d_backward(grad_out, input_shape):
    cp = backend.cupy_or_none()
    (grad_out,) = _contiguous(grad_out)
    grad = backend.empty(input_shape, grad_out.dtype, cp)
    run_threads(FAMILY, "adaptive_avg_pool2d_bwd", grad.dtype, grad.size,
                (grad_out, grad, *_shape_args("adaptive_avg_pool2d_backward", input_shape,
                                              grad_out.shape[2:])))
    return grad
