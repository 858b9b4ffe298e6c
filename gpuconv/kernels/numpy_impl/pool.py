"""Fast CPU pooling (impl ``"numpy"``), float32 and float64.

Max and average pooling are numba loops over (n, c) planes, run on gpuconv's thread pool in
ranges of planes (:mod:`gpuconv.threads`; a range holds at least ``MIN_TASK_ELEMENTS``
input elements, ``MIN_TASK_STREAM_ELEMENTS`` in max pooling's backward, a scatter at
memory speed, so small calls stay on the calling thread; average pooling's backward loops
over windows as its forward does, and on two threads took 0.49 ms where one took 0.77-0.82
on CIFAR-sized 2x2 windows). The window bounds along each axis are tabulated once per call
(first input position, first and last tap inside the input), so the loops do no division
and need no separate border code.

Max pooling keeps the running maximum in registers with branch-free selects: a strict
``v > best`` keeps the first of equal maxima, and the last NaN seen, if any, overrides the
result. That is PyTorch's rule ("replace if greater or NaN") without a data-dependent branch,
which on random data would be mispredicted about half the time.

Backward passes scatter into a plane from a single thread, so they are deterministic.
Adaptive average pooling runs the same loops over its own window tables. (Averaging
matrices applied as BLAS products would be shorter, but multiply every input element by the
zeros of the windows that do not hold it, so one inf would make every output NaN.)
The registry contract is in :mod:`gpuconv.kernels.reference.pool`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ... import backend, threads
from . import register

_FLOATS = ("float32", "float64")


def _by_planes(kernel, plane_size: int, planar: tuple, *shared, streaming: bool = False) -> None:
    """``kernel(*(a[r] for a in planar), *shared)`` for ranges ``r`` of the planes (the
    leading axis of every ``planar`` array), on the thread pool; ``streaming``: the kernel
    runs at memory speed (a backward pass), so ranges are longer."""
    min_elements = threads.MIN_TASK_STREAM_ELEMENTS if streaming else threads.MIN_TASK_ELEMENTS
    min_planes = -(-min_elements // max(1, plane_size))
    ranges = threads.split(planar[0].shape[0], min_planes)
    threads.parallel_for(len(ranges), lambda t: kernel(
        *(a[ranges[t].start:ranges[t].stop] for a in planar), *shared))


def _planes(a):
    """(N, C, H, W) -> C-contiguous (N*C, H*W), copying only when the layout needs it."""
    N, C, H, W = a.shape
    return np.ascontiguousarray(a).reshape(N * C, H * W)


@njit(cache=True)
def _windows(out_len, stride, pad, dilation, kernel, size):
    """(out_len, 3) int64 table, one row per window along an axis: its first position
    o*stride - pad, and the range [lo, hi) of its taps that fall inside [0, size)."""
    win = np.empty((out_len, 3), dtype=np.int64)
    for o in range(out_len):
        start = o * stride - pad
        win[o, 0] = start
        win[o, 1] = 0 if start >= 0 else (dilation - 1 - start) // dilation
        win[o, 2] = min(kernel, (size - 1 - start) // dilation + 1)
    return win


@njit(cache=True)
def _avg_factor(win, kernel, pad, size, count_include_pad):
    """Per window along an axis, its share of the divisor: the extent clipped to the padded
    input when count_include_pad, else the number of taps inside the input."""
    factor = np.empty(win.shape[0], dtype=np.int64)
    for o in range(win.shape[0]):
        start = win[o, 0]
        factor[o] = (min(start + kernel, size + pad) - start if count_include_pad
                     else win[o, 2] - win[o, 1])
    return factor


@njit(cache=True, nogil=True)
def _max_pool_planes(x, out, idx, W, rows, cols, dh, dw):
    OH, OW = rows.shape[0], cols.shape[0]
    for p in range(x.shape[0]):
        xp = x[p]
        for oh in range(OH):
            h0, i_lo, i_hi = rows[oh, 0], rows[oh, 1], rows[oh, 2]
            for ow in range(OW):
                w0, j_lo, j_hi = cols[ow, 0], cols[ow, 1], cols[ow, 2]
                at = (h0 + i_lo * dh) * W + w0 + j_lo * dw
                best = xp[at]
                last_nan = -1
                for i in range(i_lo, i_hi):
                    row = (h0 + i * dh) * W + w0
                    for j in range(j_lo, j_hi):
                        pos = row + j * dw
                        v = xp[pos]
                        greater = v > best
                        best = v if greater else best
                        at = pos if greater else at
                        last_nan = pos if v != v else last_nan
                if last_nan >= 0:
                    at = last_nan
                idx[p, oh * OW + ow] = at
                out[p, oh * OW + ow] = xp[at]


@njit(cache=True, nogil=True)
def _max_pool_2x2_planes(x, out, idx, W, OH, OW):
    """:func:`_max_pool_planes` for 2x2 windows at stride 2 that lie inside the plane
    (LeNet's pooling and most CNNs'), with the same results, twice as fast on LeNet's
    planes. The maximum is the same strict ``>`` chain; the index is computed rather than
    carried through selects (LLVM turns those integer selects into branches, which random
    data mispredicts): the first tap equal to the maximum (a tap that won a strict
    comparison is greater than every tap before it, so none of those equals it), unless a
    tap is NaN, then the last NaN. Taps k = 0..3 are (0, 0), (0, 1), (1, 0), (1, 1)."""
    for p in range(x.shape[0]):
        xp, op, ip = x[p], out[p], idx[p]
        for oh in range(OH):
            for ow in range(OW):
                a = 2 * (oh * W + ow)
                v0, v1, v2, v3 = xp[a], xp[a + 1], xp[a + W], xp[a + W + 1]
                m = v1 if v1 > v0 else v0
                m = v2 if v2 > m else m
                m = v3 if v3 > m else m
                e0, e1, e2 = np.int64(v0 == m), np.int64(v1 == m), np.int64(v2 == m)
                k = (1 - e0) * (1 + (1 - e1) * (2 - e2))
                n0, n1 = np.int64(v0 != v0), np.int64(v1 != v1)
                n2, n3 = np.int64(v2 != v2), np.int64(v3 != v3)
                last_nan = 3 * n3 + (1 - n3) * (2 * n2 + (1 - n2) * n1)
                k += (n0 | n1 | n2 | n3) * (last_nan - k)
                at = a + (k & 1) + (k >> 1) * W
                ip[oh * OW + ow] = at
                op[oh * OW + ow] = xp[at]


@njit(cache=True, nogil=True)
def _max_unpool_planes(g, idx, grad):
    for p in range(g.shape[0]):
        gp = grad[p]
        gp[:] = 0
        for m in range(g.shape[1]):
            gp[idx[p, m]] += g[p, m]


@njit(cache=True, nogil=True)
def _avg_pool_planes(x, out, W, rows, cols, scale):
    OH, OW = rows.shape[0], cols.shape[0]
    for p in range(x.shape[0]):
        xp = x[p]
        for oh in range(OH):
            h0, i_lo, i_hi = rows[oh, 0], rows[oh, 1], rows[oh, 2]
            for ow in range(OW):
                w0, j_lo, j_hi = cols[ow, 0], cols[ow, 1], cols[ow, 2]
                total = 0.0
                for i in range(i_lo, i_hi):
                    row = (h0 + i) * W + w0
                    for j in range(j_lo, j_hi):
                        total += xp[row + j]
                out[p, oh * OW + ow] = total * scale[oh * OW + ow]


@njit(cache=True, nogil=True)
def _avg_unpool_planes(g, grad, W, rows, cols, scale):
    OH, OW = rows.shape[0], cols.shape[0]
    for p in range(g.shape[0]):
        gp = grad[p]
        gp[:] = 0
        for oh in range(OH):
            h0, i_lo, i_hi = rows[oh, 0], rows[oh, 1], rows[oh, 2]
            for ow in range(OW):
                w0, j_lo, j_hi = cols[ow, 0], cols[ow, 1], cols[ow, 2]
                share = g[p, oh * OW + ow] * scale[oh * OW + ow]
                for i in range(i_lo, i_hi):
                    row = (h0 + i) * W + w0
                    for j in range(j_lo, j_hi):
                        gp[row + j] += share


@register("max_pool2d", "numpy", dtypes=_FLOATS)
def max_pool2d(x, kernel, stride, padding, dilation, out_size):
    N, C, H, W = x.shape
    OH, OW = out_size
    out = backend.empty((N * C, OH * OW), x.dtype)
    idx = backend.empty((N * C, OH * OW), np.int64)
    planar = (_planes(x), out, idx)
    if (tuple(kernel) == tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
            and tuple(dilation) == (1, 1) and 2 * OH <= H and 2 * OW <= W):
        _by_planes(_max_pool_2x2_planes, H * W, planar, W, OH, OW)
        return out.reshape(N, C, OH, OW), idx.reshape(N, C, OH, OW)
    rows = _windows(OH, stride[0], padding[0], dilation[0], kernel[0], H)
    cols = _windows(OW, stride[1], padding[1], dilation[1], kernel[1], W)
    _by_planes(_max_pool_planes, H * W, planar, W, rows, cols, dilation[0], dilation[1])
    return out.reshape(N, C, OH, OW), idx.reshape(N, C, OH, OW)


@register("max_pool2d_backward", "numpy", dtypes=_FLOATS)
def max_pool2d_backward(grad_out, indices, input_shape, kernel, stride, padding, dilation):
    N, C, H, W = input_shape
    grad = backend.empty((N * C, H * W), grad_out.dtype)
    _by_planes(_max_unpool_planes, H * W, (_planes(grad_out), _planes(indices), grad),
               streaming=True)
    return grad.reshape(input_shape)


def _avg_tables(shape, kernel, stride, padding, out_size, count_include_pad, divisor_override):
    """Window tables along H and W, and 1 / divisor of every window (OH*OW float64: a
    multiplication in the loops is cheaper than a division)."""
    tables, factors = [], []
    for k, s, p, n, size in zip(kernel, stride, padding, out_size, shape[2:]):
        win = _windows(n, s, p, 1, k, size)
        tables.append(win)
        factors.append(_avg_factor(win, k, p, size, count_include_pad))
    divisor = (np.multiply.outer(*factors) if divisor_override is None
               else np.full(tuple(out_size), divisor_override))
    return tables[0], tables[1], (1.0 / divisor).ravel()


@register("avg_pool2d", "numpy", dtypes=_FLOATS)
def avg_pool2d(x, kernel, stride, padding, out_size, count_include_pad, divisor_override):
    N, C, H, W = x.shape
    OH, OW = out_size
    tables = _avg_tables(x.shape, kernel, stride, padding, out_size, count_include_pad,
                         divisor_override)
    out = backend.empty((N * C, OH * OW), x.dtype)
    _by_planes(_avg_pool_planes, H * W, (_planes(x), out), W, *tables)
    return out.reshape(N, C, OH, OW)


@register("avg_pool2d_backward", "numpy", dtypes=_FLOATS)
def avg_pool2d_backward(grad_out, input_shape, kernel, stride, padding, count_include_pad,
                        divisor_override):
    N, C, H, W = input_shape
    tables = _avg_tables(input_shape, kernel, stride, padding, grad_out.shape[2:],
                         count_include_pad, divisor_override)
    grad = backend.empty((N * C, H * W), grad_out.dtype)
    _by_planes(_avg_unpool_planes, H * W, (_planes(grad_out), grad), W, *tables)
    return grad.reshape(input_shape)


def _adaptive_windows(out_len: int, size: int) -> np.ndarray:
    """The window table of :func:`_windows` for adaptive pooling along one axis: window o
    covers floor(o*size/out_len) .. ceil((o+1)*size/out_len) - 1."""
    o = np.arange(out_len)
    start, end = o * size // out_len, -(-(o + 1) * size // out_len)
    return np.stack([start, np.zeros_like(start), end - start], axis=1).astype(np.int64)


def _adaptive_tables(out_size, in_hw):
    """Window tables along H and W, and 1 / area of every window (as :func:`_avg_tables`)."""
    rows, cols = (_adaptive_windows(n, size) for n, size in zip(out_size, in_hw))
    return rows, cols, (1.0 / np.multiply.outer(rows[:, 2], cols[:, 2])).ravel()


@register("adaptive_avg_pool2d", "numpy", dtypes=_FLOATS)
def adaptive_avg_pool2d(x, out_size):
    N, C, H, W = x.shape
    out = backend.empty((N * C, out_size[0] * out_size[1]), x.dtype)
    _by_planes(_avg_pool_planes, H * W, (_planes(x), out), W,
               *_adaptive_tables(out_size, (H, W)))
    return out.reshape((N, C) + tuple(out_size))


@register("adaptive_avg_pool2d_backward", "numpy", dtypes=_FLOATS)
def adaptive_avg_pool2d_backward(grad_out, input_shape):
    N, C, H, W = input_shape
    grad = backend.empty((N * C, H * W), grad_out.dtype)
    _by_planes(_avg_unpool_planes, H * W, (_planes(grad_out), grad), W,
               *_adaptive_tables(grad_out.shape[2:], (H, W)))
    return grad.reshape(input_shape)
