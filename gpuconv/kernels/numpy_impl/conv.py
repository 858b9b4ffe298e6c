"""Fast CPU convolution: im2col + one BLAS matmul per group, numba where NumPy cannot vectorise.

Every op here is phrased as a *conv view*: a convolution from ``x: (N, C, H, W)`` to
``y: (N, K, OH, OW)`` with ``weight: (K, C/groups, R, S)``. conv2d is that view as it is;
conv_transpose2d is its input gradient (the adjoint), PyTorch's transposed weight
``(C_in, C_out/groups, R, S)`` read as a conv weight from ``C_out`` to ``C_in`` channels.
Three products cover all four ops:

- ``y = conv(x, w)``: im2col of ``x``, then ``W @ cols``;
- ``gw = d<y, gy>/dw``: ``gy @ cols^T``;
- ``gx = conv^T(gy, w)``: ``W^T @ gy``, then col2im.

*Tiles and threads.* The batch runs in tiles: groups of images whose column matrices (the
columns, and their gradient when grad_input is asked for) are about ``_CHUNK_BYTES``, so
the im2col copy, the GEMM reading it and the col2im scattering its gradient work on data
still in cache; or, for an image whose columns alone pass
``_BAND_ABOVE_BYTES``, bands of its output rows, so a large image never needs its whole
column matrix (memory beside the output stays a few chunks per thread). The tiles are
split into equal runs, one task each on gpuconv's thread pool (:mod:`gpuconv.threads`),
each task with its own scratch buffers and the GEMMs inside it on one BLAS thread. A band's
grad_input also recomputes the columns of the few output rows before it (its *halo*) whose
windows reach its input rows, so that every task writes only its own rows of ``gx``.

*Wide columns.* Each image is copied into a zero-padded buffer whose rows are ``pitch =
Wq * sw`` long, ``Wq = ceil((W + 2*pw) / sw)``. The columns hold ``Wq`` (not ``OW``) values
per output row: ``cols[c, r, s, n, oh, q] = x_buf[n, c, oh*sh + r*dh, q*sw + s*dw]``, read
straight through row ends, so with ``sh == 1`` each ``(c, r, s, n)`` block is one long
strided run that NumPy copies at memory speed (short ``OW``-long rows would not be). The
``Wq - OW`` extra columns per row are computed by the GEMM and dropped; in the backward
``gy`` carries zeros there, and the extra columns of the im2col matrix (for ``gw``) and of
the column gradient (for ``gx``) are zeroed before use when the input, resp. the weight,
holds an inf or NaN (one scan each per call), so that such a value in a pixel no window
reads, or in the weight, never reaches a gradient as ``0 * inf``: every result reads exactly
the elements PyTorch's definition reads. (With finite values those products are zeros.)
The price is GEMM work in proportion ``Wq / OW`` (1.06 for 32x32 with 3x3, 1.4 for 14x14
with 5x5 and no padding).
The columns are viewed as ``(groups, C/groups * R * S, n * OH * Wq)``, so one batched matmul
over the groups gives ``(K, n * OH * Wq)``.

*Depthwise.* With one input channel per group the GEMM's inner dimension would be just
``R * S``; those convolutions run as direct numba loops instead.

*Direct kernels.* Register-blocked loops on SIMD vectors (:mod:`.simd`) replace the GEMM
path where they measured faster (OpenBLAS runs 16-row GEMMs at half its speed, and they
need no column matrix): the forward and the weight gradient vectorised over output
channels (K a multiple of the lanes: one or two vectors, or many taps per output channel;
:func:`_direct_forward_kernel`, :func:`_direct_grad_weight_kernel`), and grad_input with
unit strides vectorised along gx's rows (:func:`_direct_grad_input_kernel`; only with a
finite weight, which would else meet grad_output's zero border as 0 * inf). A unit-stride
forward also runs as that row kernel on its transposed view (:func:`_rows_view`). Each
reads exactly the input positions its outputs' windows read, so the semantics above hold;
an image past their memory budgets takes the GEMM path, banded as above.

Signatures follow the registry contract in :mod:`gpuconv.kernels.reference.conv`.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import numpy as np
from numba import njit

from . import register
# numba caches the kernels below keyed on this file alone: see simd.py before editing it.
from .simd import lanes, vadd, vfma, vlanes, vload, vrelu, vstore, vzero
from ..reference.conv import _conv_bias_act
from ... import backend, threads

# A tile's column matrices (the im2col columns, and the column gradient when it computes
# grad_input) take about this much: together they stay in a 2 MiB L2 cache (LeNet's second
# layer at batch 128: 1 MiB tiles ran its forward 10% and its backward 6% faster than
# 2 MiB ones; bench/NOTES.md, 2026-12-07 fourth pass).
_CHUNK_BYTES = 1 << 20
# An image whose column matrix is larger than this is cut into bands of output rows.
_BAND_ABOVE_BYTES = 1 << 24
# A band computing grad_input is at least this many times its halo rows, whose columns it
# recomputes.
_BAND_PER_HALO = 4
# Tasks per pool thread: a thread that another process delays leaves its second task to
# the others.
_TASKS_PER_THREAD = 2
# Depthwise grad_weight with unit strides and a finite input: dot products over runs of at
# most this many elements (a LeNet plane's 896 in one), each added into float64, so that a
# large plane's sum does not grow in float32.
_DOT_SPAN = 1024
# Depthwise grad_weight otherwise: lanes per tap of about this many elements (they stay in
# L1), added into float64 after about _LANE_ADDS additions each (8 LeNet images of 4 row
# blocks).
_LANE_SPAN = 256
_LANE_ADDS = 32
# grad_weight multiplies the columns by grad_output's transpose (not grad_output by the
# columns' transpose) when the columns are at least this many times as wide as they are
# tall (_grad_weight_product).
_GW_TRANSPOSED_WIDTH = 2
# The direct forward (_direct_forward_kernel): output pixels per set of its two sets of
# register accumulators (5: LeNet's rows of 10 split without waste). The direct kernels take
# an image whose zero-padded planes fit in _DIRECT_MAX_IMAGE_BYTES (a larger image goes
# through the banded GEMM path, whose memory stays bounded) and K of one or two vectors of
# lanes, or wider layers with at least _DIRECT_TAPS_PER_CHANNEL taps per output channel
# (the forward: twice that, and K <= 4L). Against the GEMM path on one thread, float32
# (bench/NOTES.md, fifth pass): forward 1.4-3.3x faster with K <= 2L (LeNet's second layer
# 3.3x), 1.27x on CIFAR's 64 -> 64 3x3 (576 taps), 0.96x with 288 taps for 64 channels,
# 0.71-0.91x with K = 128 and 256; weight gradient 1.3-3.7x with K <= 2L, 1.07-1.55x with
# 64-256 channels and 576-2,304 taps, 0.72-0.95x with 27 or 144 taps for 64.
_DIRECT_PIXELS = 5               # fixed by the kernel's code (a0..a4 and a5..a9)
# The direct forward's passes over an image each take the taps whose weight vectors fit in
# this many bytes, so that those stay in L1 through the pass; the partial sums wait in a
# channels-last copy of the output between passes.
_DIRECT_CHUNK_BYTES = 16 << 10
_DIRECT_TAPS = 10   # the weight gradient's taps per register block, fixed by its code
_DIRECT_MAX_IMAGE_BYTES = 1 << 22
# The direct forward and weight gradient keep an image's output (grad_output) channels-last
# and read it back K times at a stride of K elements: past L2 every read is a miss. The
# reviewed shapes past this budget ran at 0.16-0.6x the GEMM path, (8, 3, 224, 224) -> 32
# among them; a unit-stride forward of that size takes the row kernel instead, 2.4x faster
# than GEMM.
_DIRECT_MAX_OUTPUT_BYTES = 1 << 20
# The weight gradient reads its channels-last grad_output once per ten taps, and with many
# taps still won up to 2 MiB of it (1.1-2x, the second review); (4, 3, 192, 192) -> 32, 4.7
# MiB and 27 taps, ran at 0.37x.
_DIRECT_GW_MAX_OUTPUT_BYTES = 3 << 20
_DIRECT_TAPS_PER_CHANNEL = 4
# The direct grad_input (unit strides): input channels per register block, each with two
# rows of vectors (twelve accumulators). It takes rows of at least half a vector and
# weights up to _DIRECT_GX_MAX_WEIGHT_BYTES: against the GEMM path on one thread, float32,
# 1.1-2.2x faster on eight shapes (LeNet's second layer 2.2x at batch 128, CIFAR's 64 -> 64
# 1.3x, weights of 288 KiB 1.14x), 0.91x on rows of 4 and 0.89x with weights of 590 KiB.
_DIRECT_GX_CHANNELS = 6          # fixed by the kernel's code (a0..a5, b0..b5)
_DIRECT_GX_MAX_WEIGHT_BYTES = 300 << 10
# A unit-stride forward runs as the direct grad_input of its transposed view (_rows_view,
# vectors along the output rows) where that kernel's rules allow and it would use at least
# this share of its multiply-adds: the lanes a row fills times the rows of its row pairs
# (a conv1d, one row, wastes half; the second review measured conv1d and three-row outputs
# at 0.51-0.90x the paths before). Against the GEMM or depthwise path on one thread,
# float32: 1.36-4.1x faster on 14 shapes (LeNet's first layer 2.5x, CIFAR's 64 -> 64 1.5x);
# against the channel-vector forward 1.25-2.25x faster on six shapes with rows of 16 and
# 32, 0.57x on LeNet's second layer (rows of 10 in 16 lanes) (bench/NOTES.md, fifth pass).
_ROWS_MIN_USE = 0.8


# --------------------------------------------------------------------------- numba kernels
# The kernels index flat C-contiguous arrays through unsigned offsets and write explicit
# loops rather than slices: numba then emits no negative-index wraparound test and the
# loops vectorise (2-3x faster than multi-dimensional indexing). Offsets are int64 before
# the cast. Arrays: x (n, C, H, W), y/gy (n, K, OH, OW), w (K, R, S).

@njit(cache=True, nogil=True)
def _u(i):
    return np.uintp(i)


@njit(cache=True, nogil=True)
def _fill(a, start, stop, value):
    for i in range(start, stop):
        a[_u(i)] = value


@njit(cache=True, nogil=True)
def _gather(dst, d0, src, s0, step, count):
    """dst[d0 + i] = src[s0 + i*step] for i in [0, count)."""
    if step == 1:
        for i in range(count):
            dst[_u(d0 + i)] = src[_u(s0 + i)]
    else:
        for i in range(count):
            dst[_u(d0 + i)] = src[_u(s0 + i * step)]


@njit(cache=True, nogil=True)
def _gather_axpy(dst, d0, a, src, s0, step, count):
    """dst[d0 + i] += a * src[s0 + i*step] for i in [0, count)."""
    if step == 1:
        for i in range(count):
            dst[_u(d0 + i)] += a * src[_u(s0 + i)]
    else:
        for i in range(count):
            dst[_u(d0 + i)] += a * src[_u(s0 + i * step)]


@njit(cache=True, nogil=True)
def _gather_axpy4(dst, d0, a, a0, src, s0, tap, count):
    """dst[d0 + i] += a[a0] * src[s0 + i] + ... + a[a0 + 3] * src[s0 + i + 3*tap] for i in
    [0, count), the four products added in that order: four taps of a kernel row in one
    pass over dst (five loads and a store per four multiply-adds, not twelve memory
    operations as four _gather_axpy calls take)."""
    w0, w1, w2, w3 = a[_u(a0)], a[_u(a0 + 1)], a[_u(a0 + 2)], a[_u(a0 + 3)]
    for i in range(count):
        j = s0 + i
        dst[_u(d0 + i)] = (((dst[_u(d0 + i)] + w0 * src[_u(j)]) + w1 * src[_u(j + tap)])
                           + w2 * src[_u(j + 2 * tap)]) + w3 * src[_u(j + 3 * tap)]


@njit(cache=True, nogil=True)
def _scatter_axpy(dst, d0, step, a, src, s0, count):
    """dst[d0 + i*step] += a * src[s0 + i] for i in [0, count)."""
    if step == 1:
        for i in range(count):
            dst[_u(d0 + i)] += a * src[_u(s0 + i)]
    else:
        for i in range(count):
            dst[_u(d0 + i * step)] += a * src[_u(s0 + i)]


@njit(cache=True, nogil=True)
def _mul_add(dst, d0, a, a0, b, b0, step, count):
    """dst[d0 + i] += a[a0 + i] * b[b0 + i*step] for i in [0, count)."""
    if step == 1:
        for i in range(count):
            dst[_u(d0 + i)] += a[_u(a0 + i)] * b[_u(b0 + i)]
    else:
        for i in range(count):
            dst[_u(d0 + i)] += a[_u(a0 + i)] * b[_u(b0 + i * step)]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(a, a0, b, b0, count):
    """sum_i a[a0 + i] * b[b0 + i] for i in [0, count), in a's dtype. Reassociation lets
    LLVM split the sum over vector lanes (one sequential sum does not vectorise); an inf or
    NaN still propagates (no ``nnan``/``ninf`` flags)."""
    acc = a.dtype.type(0)
    for i in range(count):
        acc += a[_u(a0 + i)] * b[_u(b0 + i)]
    return acc


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot4(a, a0, b, b0, tap, count):
    """The four sums of :func:`_dot` with ``b`` read from ``b0``, ``b0 + tap``,
    ``b0 + 2*tap`` and ``b0 + 3*tap``: four taps of a kernel row against one run of ``a``
    (five loads per four multiply-adds, not eight)."""
    s0 = s1 = s2 = s3 = a.dtype.type(0)
    for i in range(count):
        v = a[_u(a0 + i)]
        j = b0 + i
        s0 += v * b[_u(j)]
        s1 += v * b[_u(j + tap)]
        s2 += v * b[_u(j + 2 * tap)]
        s3 += v * b[_u(j + 3 * tap)]
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _all_finite(a):
    """Whether the 1-d array ``a`` holds no inf or NaN (no temporary, unlike NumPy's):
    ``inf * 0`` and ``NaN * 0`` are NaN, a finite value times 0 is a zero, so the sum of
    ``a * 0`` is 0 exactly when every element is finite. Summed without an early exit, it
    vectorises: 5x faster than testing ``isfinite`` element by element."""
    acc = a.dtype.type(0)
    for i in range(a.size):
        acc += a[_u(i)] * 0
    return acc == 0


@njit(cache=True, nogil=True)
def _zero_columns(a, q0):
    """a[..., q0:] = 0 for a C-contiguous array (NumPy's slice assignment walks the short
    row ends one by one, as slowly as a GEMM on the whole array)."""
    width = a.shape[-1]
    flat = a.reshape(-1)
    zero = flat.dtype.type(0)
    for row in range(flat.size // width):
        _fill(flat, row * width + q0, (row + 1) * width, zero)


@njit(cache=True, nogil=True)
def _load_padded(src, s0, src_w, h, w, dst, d0, ph, pw, pitch):
    """dst[d0 + (i + ph) * pitch + j + pw] = src[s0 + i*src_w + j] for i < h, j < w: the
    top-left h x w of a plane with rows of src_w into a padded plane."""
    for i in range(h):
        for j in range(w):
            dst[_u(d0 + (i + ph) * pitch + j + pw)] = src[_u(s0 + i * src_w + j)]


@njit(cache=True, nogil=True)
def _store_cropped(src, s0, pitch, ph, pw, h, w, base, dst, d0, relu=False):
    """dst[d0 + i*w + j] = base + src[s0 + (i + ph) * pitch + j + pw]: the inverse; with
    ``relu``, negative sums store 0 (a NaN stays NaN, as in torch.relu)."""
    zero = dst.dtype.type(0)
    for i in range(h):
        for j in range(w):
            v = base + src[_u(s0 + (i + ph) * pitch + j + pw)]
            dst[_u(d0 + i * w + j)] = zero if relu and v < 0 else v


@njit(cache=True, nogil=True)
def _runs(oh_n, wq, sh, sw):
    """How a wide block of OH rows of Wq is walked: (rows, run length). With unit strides
    the rows of the block and of the padded plane line up, so the block is one run."""
    if sh == 1 and sw == 1:
        return 1, oh_n * wq
    return oh_n, wq


@njit(cache=True, nogil=True)
def _im2col_kernel(x, image0, p0, ph, pw, buf, cols, plane, pitch, sh, sw, dh, dw):
    """The wide columns ``cols: (C, R, S, n, rows, Wq)`` of images ``image0 ..`` of ``x``
    from padded row ``p0``: each image's planes go into ``buf`` (zero-bordered, rows of
    ``pitch``, ``plane`` elements each; the border columns are zeros already), then
    ``cols[c, r, s, b, i, q] = buf[b, c, i*sh + r*dh, q*sw + s*dw]``; with unit strides one
    run of ``rows * Wq`` per (c, r, s, b). One call per tile: the same copies through NumPy
    (slice assignments and a strided view) cost a tenth of the tile's time on LeNet's
    second layer."""
    c_n, h, w = x.shape[1], x.shape[2], x.shape[3]
    r_n, s_n, n, rows, wq = cols.shape[1], cols.shape[2], cols.shape[3], cols.shape[4], cols.shape[5]
    in_rows = plane // pitch
    # Rows holding input: none when the tile's rows lie all in the padding (a band of a
    # padding wider than the kernel's reach).
    top = min(in_rows, max(0, ph - p0))
    bottom = max(top, min(in_rows, ph + h - p0))
    zero = buf.dtype.type(0)
    xf, cf = x.reshape(-1), cols.reshape(-1)
    for b in range(n):
        for c in range(c_n):
            d0 = (b * c_n + c) * plane
            _fill(buf, d0, d0 + top * pitch, zero)
            _fill(buf, d0 + bottom * pitch, d0 + plane, zero)
            if bottom > top:
                _load_padded(xf, (((image0 + b) * c_n + c) * h + p0 + top - ph) * w, w,
                             bottom - top, w, buf, d0 + top * pitch, 0, pw, pitch)
    runs, run = _runs(rows, wq, sh, sw)
    for c in range(c_n):
        for r in range(r_n):
            for s in range(s_n):
                for b in range(n):
                    d0 = (((c * r_n + r) * s_n + s) * n + b) * rows * wq
                    s0 = (b * c_n + c) * plane + r * dh * pitch + s * dw
                    for i in range(runs):
                        _gather(cf, d0 + i * wq, buf, s0 + i * sh * pitch, sw, run)


@njit(cache=True, nogil=True)
def _col2im_kernel(cols, base, gx, row0, own0, own1, sh, sw, ph, pw, dh, dw):
    """gx[b, c, i] = base[c] + the wide columns (C, R, S, n, rows, Wq) of output rows
    ``row0 ..`` summed onto their windows, for the input rows i whose padded row ``i + ph``
    lies in ``[own0, own1)`` (the rows this tile owns; other rows of gx are not written).

    Each (b, c) plane accumulates in a padded scratch plane of row pitch ``Wq * sw`` (the
    layout im2col read from) that starts at padded row ``row0 * sh``; the owned rows of its
    interior are then copied out.
    """
    n, c_n, h, w = gx.shape
    r_n, s_n, rows, wq = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    pitch = wq * sw
    p0 = row0 * sh
    first, last = max(own0, ph), min(own1, ph + h)   # padded rows stored
    plane_rows = max((rows - 1) * sh + (r_n - 1) * dh + 1, last - p0)
    plane = np.empty(plane_rows * pitch + (s_n - 1) * dw + sw, cols.dtype)
    one, zero = plane.dtype.type(1), plane.dtype.type(0)
    runs, run = _runs(rows, wq, sh, sw)
    cf, gf = cols.reshape(-1), gx.reshape(-1)
    for b in range(n):
        for c in range(c_n):
            _fill(plane, 0, plane.size, zero)
            for r in range(r_n):
                for s in range(s_n):
                    block = (((c * r_n + r) * s_n + s) * n + b) * rows * wq
                    for oh in range(runs):
                        _scatter_axpy(plane, (oh * sh + r * dh) * pitch + s * dw, sw, one,
                                      cf, block + oh * wq, run)
            if last > first:
                _store_cropped(plane, (first - p0) * pitch, pitch, 0, pw, last - first, w,
                               base[c], gf, ((b * c_n + c) * h + first - ph) * w)


@njit(cache=True, nogil=True)
def _to_wide_kernel(gy, row0, wide):
    """wide[k, b, i, q] = gy[b, k, row0 + i, q] for q < OW, 0 for OW <= q < Wq."""
    n, k_n, oh_n, ow_n = gy.shape
    rows, wq = wide.shape[2], wide.shape[3]
    gf, wf = gy.reshape(-1), wide.reshape(-1)
    zero = wf.dtype.type(0)
    for b in range(n):
        for k in range(k_n):
            d0 = (k * n + b) * rows * wq
            for i in range(rows):
                _fill(wf, d0 + i * wq + ow_n, d0 + (i + 1) * wq, zero)
            _load_padded(gf, ((b * k_n + k) * oh_n + row0) * ow_n, ow_n, rows, ow_n, wf, d0,
                         0, 0, wq)


@njit(cache=True, nogil=True)
def _from_wide_kernel(wide, base, y, row0, relu):
    """y[b, k, row0 + i, j] = base[k] + wide[k, b, i, j] (the first OW of each wide row),
    through a ReLU when ``relu``."""
    n, k_n, oh_n, ow_n = y.shape
    rows, wq = wide.shape[2], wide.shape[3]
    wf, yf = wide.reshape(-1), y.reshape(-1)
    for b in range(n):
        for k in range(k_n):
            _store_cropped(wf, (k * n + b) * rows * wq, wq, 0, 0, rows, ow_n, base[k], yf,
                           ((b * k_n + k) * oh_n + row0) * ow_n, relu)


@njit(cache=True, nogil=True)
def _direct_forward_kernel(x, wp, base, y, relu, buf, taps, pitch, sh, sw, ph, pw):
    """y[b, k, oh, ow] = base[k] + sum over taps t = (c, r, s) of
    wp[t, k] * x_pad[b, c, oh*sh + r*dh, ow*sw + s*dw], through a ReLU when ``relu``: a
    direct convolution for K a multiple of the vector lanes L. ``taps[t]`` is tap t's
    offset in ``buf`` from its window's corner (:func:`_direct_taps`).

    Algorithm: each image's planes are copied into ``buf``, zero-padded planes of
    ``pitch``-long rows (the borders and the columns past the padded width are zeros from
    its allocation and never written), so that the loops need no bounds tests. Ten vector
    accumulators of L output channels each live in registers through a pass over a chunk
    of taps: five output pixels of a row times two sets, the second set either the next
    L channels of the same pixels (when K is a multiple of 2L: each broadcast input pixel
    feeds two multiply-adds) or the same channels of the next five pixels. Each step loads
    the tap's weight vector(s) and does ten fused multiply-adds with broadcast input
    pixels; ten independent accumulators cover the multiply-add latency of two FMA units.
    A chunk's weights (_DIRECT_CHUNK_BYTES) stay in L1 through its pass over the image;
    between passes the sums wait in a channels-last copy of the image's output, its rows
    padded to whole blocks (vector loads and stores), which is then transposed into y's
    planes with the bias (added after the sum, as the GEMM path does) and the ReLU. Pixels
    past OW read zeros or padding and are not transposed out. Sums run in (c, r, s) order,
    one rounding per multiply-add, independent of the threads.
    """
    n, k_n, oh_n, ow_n = y.shape
    c_n, h, w = x.shape[1], x.shape[2], x.shape[3]
    plane = buf.size // c_n
    lane_n = vlanes(buf)
    px = _DIRECT_PIXELS
    # The second set: (channel offset, pixel offset).
    dk, dp = (lane_n, 0) if k_n % (2 * lane_n) == 0 else (0, px)
    # Taps per pass over the image: their weight vectors stay in L1 through the pass.
    chunk = max(1, _DIRECT_CHUNK_BYTES // ((lane_n + dk) * buf.itemsize))
    taps_n = wp.shape[0]
    ow_pad = -(-ow_n // (px + dp)) * (px + dp)
    xf, wf, yf = x.reshape(-1), wp.reshape(-1), y.reshape(-1)
    # One image's y, channels-last, each row padded to whole blocks of pixels.
    pixels = np.empty(oh_n * ow_pad * k_n, buf.dtype)
    zero = buf.dtype.type(0)
    for b in range(n):
        for c in range(c_n):
            _load_padded(xf, (b * c_n + c) * h * w, w, h, w, buf, c * plane, ph, pw, pitch)
        for k0 in range(0, k_n, lane_n + dk):
            for t0 in range(0, taps_n, chunk):
                for oh in range(oh_n):
                    for ow0 in range(0, ow_n, px + dp):
                        p0 = (oh * ow_pad + ow0) * k_n + k0   # the first set's first sum
                        p1 = p0 + dp * k_n + dk               # the second set's
                        if t0 == 0:
                            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = vzero(buf)
                        else:
                            a0, a1 = vload(pixels, p0), vload(pixels, p0 + k_n)
                            a2, a3 = vload(pixels, p0 + 2 * k_n), vload(pixels, p0 + 3 * k_n)
                            a4, a5 = vload(pixels, p0 + 4 * k_n), vload(pixels, p1)
                            a6, a7 = vload(pixels, p1 + k_n), vload(pixels, p1 + 2 * k_n)
                            a8, a9 = vload(pixels, p1 + 3 * k_n), vload(pixels, p1 + 4 * k_n)
                        corner = oh * sh * pitch + ow0 * sw
                        for t in range(t0, min(taps_n, t0 + chunk)):
                            wv, wv2 = vload(wf, t * k_n + k0), vload(wf, t * k_n + k0 + dk)
                            at = corner + taps[t]
                            at2 = at + dp * sw
                            a0 = vfma(a0, buf[_u(at)], wv)
                            a1 = vfma(a1, buf[_u(at + sw)], wv)
                            a2 = vfma(a2, buf[_u(at + 2 * sw)], wv)
                            a3 = vfma(a3, buf[_u(at + 3 * sw)], wv)
                            a4 = vfma(a4, buf[_u(at + 4 * sw)], wv)
                            a5 = vfma(a5, buf[_u(at2)], wv2)
                            a6 = vfma(a6, buf[_u(at2 + sw)], wv2)
                            a7 = vfma(a7, buf[_u(at2 + 2 * sw)], wv2)
                            a8 = vfma(a8, buf[_u(at2 + 3 * sw)], wv2)
                            a9 = vfma(a9, buf[_u(at2 + 4 * sw)], wv2)
                        vstore(pixels, p0, a0)
                        vstore(pixels, p0 + k_n, a1)
                        vstore(pixels, p0 + 2 * k_n, a2)
                        vstore(pixels, p0 + 3 * k_n, a3)
                        vstore(pixels, p0 + 4 * k_n, a4)
                        vstore(pixels, p1, a5)
                        vstore(pixels, p1 + k_n, a6)
                        vstore(pixels, p1 + 2 * k_n, a7)
                        vstore(pixels, p1 + 3 * k_n, a8)
                        vstore(pixels, p1 + 4 * k_n, a9)
        # Channels-last to y's planes, with the bias and the ReLU; rows of whole blocks
        # as one run.
        rows, run = (1, oh_n * ow_n) if ow_pad == ow_n else (oh_n, ow_n)
        for k in range(k_n):
            out = (b * k_n + k) * oh_n * ow_n
            for oh in range(rows):
                src, dst = oh * ow_pad * k_n + k, out + oh * ow_n
                for ow in range(run):
                    v = base[k] + pixels[_u(src + ow * k_n)]
                    yf[_u(dst + ow)] = zero if relu and v < 0 else v


@njit(cache=True, nogil=True)
def _direct_grad_weight_kernel(x, gy, partial, buf, taps, pitch, sh, sw, ph, pw):
    """partial[t, k] += sum over images b and output pixels (oh, ow) of
    gy[b, k, oh, ow] * x_pad[b, c, oh*sh + r*dh, ow*sw + s*dw], for each tap t = (c, r, s)
    whose offset in a padded image is ``taps[t]`` (taps past C*R*S, up to a multiple of
    _DIRECT_TAPS, point at offset 0 and are computed and dropped): the weight gradient,
    channels-last, for K a multiple of the vector lanes L.

    Algorithm: each image's planes are copied into ``buf`` as in the direct forward and
    its grad_output transposed to channels-last (a vector of L channels per pixel). For
    each block of _DIRECT_TAPS taps and each vector of L channels, ten vector accumulators
    (one per tap) live in registers through all the image's output pixels: per pixel one
    vector load of grad_output and ten fused multiply-adds with the broadcast input pixels
    the taps read. The accumulators are then added into ``partial``. Sums run over the
    pixels in order, image by image.
    """
    n, k_n, oh_n, ow_n = gy.shape
    c_n, h, w = x.shape[1], x.shape[2], x.shape[3]
    plane = buf.size // c_n
    lane_n = vlanes(buf)
    xf, gf, pf = x.reshape(-1), gy.reshape(-1), partial.reshape(-1)
    gyc = np.empty(oh_n * ow_n * k_n, buf.dtype)      # one image's gy, channels-last
    for b in range(n):
        for c in range(c_n):
            _load_padded(xf, (b * c_n + c) * h * w, w, h, w, buf, c * plane, ph, pw, pitch)
        for k in range(k_n):
            for q in range(oh_n * ow_n):
                gyc[_u(q * k_n + k)] = gf[_u((b * k_n + k) * oh_n * ow_n + q)]
        for t0 in range(0, taps.size, _DIRECT_TAPS):
            o0, o1, o2, o3, o4 = (taps[t0], taps[t0 + 1], taps[t0 + 2], taps[t0 + 3],
                                  taps[t0 + 4])
            o5, o6, o7, o8, o9 = (taps[t0 + 5], taps[t0 + 6], taps[t0 + 7], taps[t0 + 8],
                                  taps[t0 + 9])
            for k0 in range(0, k_n, lane_n):
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = vzero(buf)
                for oh in range(oh_n):
                    for ow in range(ow_n):
                        g = vload(gyc, (oh * ow_n + ow) * k_n + k0)
                        at = oh * sh * pitch + ow * sw
                        a0 = vfma(a0, buf[_u(at + o0)], g)
                        a1 = vfma(a1, buf[_u(at + o1)], g)
                        a2 = vfma(a2, buf[_u(at + o2)], g)
                        a3 = vfma(a3, buf[_u(at + o3)], g)
                        a4 = vfma(a4, buf[_u(at + o4)], g)
                        a5 = vfma(a5, buf[_u(at + o5)], g)
                        a6 = vfma(a6, buf[_u(at + o6)], g)
                        a7 = vfma(a7, buf[_u(at + o7)], g)
                        a8 = vfma(a8, buf[_u(at + o8)], g)
                        a9 = vfma(a9, buf[_u(at + o9)], g)
                accs = (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)
                for i in range(_DIRECT_TAPS):
                    at = (t0 + i) * k_n + k0
                    vstore(pf, at, vadd(vload(pf, at), accs[i]))


@njit(cache=True, nogil=True)
def _direct_grad_input_kernel(gy, wt, basetab, gx, relu, gyp, gtaps, pitch, top, left, ph,
                              pw):
    """gx[b, c, i, j] = base[c] + sum over taps t = (k, r, s) of
    w[k, c, r, s] * gy[b, k, i + ph - r*dh, j + pw - s*dw] (zero outside gy): the input
    gradient of a convolution with unit strides, vectorised along gx's rows.
    ``wt[t, c]`` = w[k, c, r, s] (zero columns up to a multiple of _DIRECT_GX_CHANNELS),
    ``basetab[c*L : (c+1)*L]`` = base[c], ``gtaps[t]`` = tap t's offset in ``gyp``: K
    zero-bordered planes with rows of ``pitch``, gy's plane at row ``top``, column ``left``.

    Algorithm: each image's grad_output is copied into ``gyp`` (its borders are zeros from
    the allocation and never written). For each block of _DIRECT_GX_CHANNELS input
    channels, each pair of gx rows and each vector of L columns, twelve vector
    accumulators (six channels times two rows) live in registers through the (k, r, s)
    reduction: per tap two vector loads of grad_output (one per row, each shared by the six
    channels) and six broadcast weights, twelve fused multiply-adds. Stores skip the
    channels past C and a row past H; a row's last vector goes through a scratch when it
    passes W. With ``relu`` the stored sums go through a ReLU. Sums run in (k, r, s)
    order, after the base.
    """
    n, c_n, h, w = gx.shape
    k_n, oh_n, ow_n = gy.shape[1], gy.shape[2], gy.shape[3]
    lane_n = vlanes(gyp)
    c_pad = wt.shape[1]
    plane = gyp.size // k_n
    gf, wf, xf = gy.reshape(-1), wt.reshape(-1), gx.reshape(-1)
    tail = np.empty(lane_n, gyp.dtype)
    for b in range(n):
        for k in range(k_n):
            _load_padded(gf, (b * k_n + k) * oh_n * ow_n, ow_n, oh_n, ow_n, gyp, k * plane,
                         top, left, pitch)
        for c0 in range(0, c_n, _DIRECT_GX_CHANNELS):
            for i in range(0, h, 2):
                for j0 in range(0, w, lane_n):
                    a0, a1, a2 = (vload(basetab, c0 * lane_n), vload(basetab, (c0 + 1) * lane_n),
                                  vload(basetab, (c0 + 2) * lane_n))
                    a3, a4, a5 = (vload(basetab, (c0 + 3) * lane_n),
                                  vload(basetab, (c0 + 4) * lane_n),
                                  vload(basetab, (c0 + 5) * lane_n))
                    b0, b1, b2, b3, b4, b5 = a0, a1, a2, a3, a4, a5
                    corner = (i + ph + top) * pitch + j0 + pw + left
                    for t in range(gtaps.size):
                        at = corner + gtaps[t]
                        u, v = vload(gyp, at), vload(gyp, at + pitch)
                        wr = t * c_pad + c0
                        w0, w1, w2 = wf[_u(wr)], wf[_u(wr + 1)], wf[_u(wr + 2)]
                        w3, w4, w5 = wf[_u(wr + 3)], wf[_u(wr + 4)], wf[_u(wr + 5)]
                        a0, b0 = vfma(a0, w0, u), vfma(b0, w0, v)
                        a1, b1 = vfma(a1, w1, u), vfma(b1, w1, v)
                        a2, b2 = vfma(a2, w2, u), vfma(b2, w2, v)
                        a3, b3 = vfma(a3, w3, u), vfma(b3, w3, v)
                        a4, b4 = vfma(a4, w4, u), vfma(b4, w4, v)
                        a5, b5 = vfma(a5, w5, u), vfma(b5, w5, v)
                    accs = (a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5)
                    if relu:
                        accs = (vrelu(a0), vrelu(a1), vrelu(a2), vrelu(a3), vrelu(a4),
                                vrelu(a5), vrelu(b0), vrelu(b1), vrelu(b2), vrelu(b3),
                                vrelu(b4), vrelu(b5))
                    count = min(w - j0, lane_n)
                    for row in range(min(2, h - i)):
                        for q in range(min(_DIRECT_GX_CHANNELS, c_n - c0)):
                            at = ((b * c_n + c0 + q) * h + i + row) * w + j0
                            if count == lane_n:
                                vstore(xf, at, accs[row * _DIRECT_GX_CHANNELS + q])
                            else:
                                vstore(tail, 0, accs[row * _DIRECT_GX_CHANNELS + q])
                                for j in range(count):
                                    xf[_u(at + j)] = tail[j]


# Depthwise kernels: channel k of y reads channel k // m of x (m = K / C). Each x plane is
# loaded once into a zero-bordered scratch plane and each gy plane into a wide scratch
# (zeros past OW), so that with unit strides every tap (r, s) is one long run over whole
# wide rows, as in the GEMM path. Nothing the wide layout adds may reach a result as
# 0 * inf = NaN: the forward crops its extra columns; grad_input takes long runs only when
# the weight is finite (then w * 0 = 0), else it walks the OW real columns of each row;
# grad_weight, when x is finite and the strides are 1, takes dot products over whole wide
# rows (gy's zero columns meet finite pixels: zero products), else sums into lanes, one per
# wide-row element of a block of rows, and adds up only the lanes of real columns (an inf
# in an unread pixel stays in a lane never added).

@njit(cache=True, nogil=True)
def _dw_scratch(h, w, oh_n, s_n, sw, ph, pw, dw, like):
    """Zeroed scratch of ``like``'s dtype: a padded input plane (row pitch ``Wq * sw``) and
    a wide output plane (OH rows of Wq), with Wq and the pitch."""
    wq = -(-(w + 2 * pw) // sw)
    pitch = wq * sw
    padded = np.zeros((h + 2 * ph) * pitch + (s_n - 1) * dw + sw, like.dtype)
    wide = np.zeros(oh_n * wq, like.dtype)
    return padded, wide, wq, pitch


@njit(cache=True, nogil=True)
def _dw_forward_kernel(x, w, base, y, relu, c0, c1, sh, sw, ph, pw, dh, dw):
    """Depthwise y[b, k] = base[k] + sum_{r,s} w[k, r, s] * x_pad[b, k // m, ...], for the
    output channels k of input channels c0 <= c < c1, through a ReLU when ``relu``."""
    n, c_n, h, wd = x.shape
    k_n, r_n, s_n = w.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    m = k_n // c_n
    padded, acc, wq, pitch = _dw_scratch(h, wd, oh_n, s_n, sw, ph, pw, dw, y)
    rows, run = _runs(oh_n, wq, sh, sw)
    zero = acc.dtype.type(0)
    xf, yf, wf = x.reshape(-1), y.reshape(-1), w.reshape(-1)
    for b in range(n):
        for c in range(c0, c1):
            _load_padded(xf, (b * c_n + c) * h * wd, wd, h, wd, padded, 0, ph, pw, pitch)
            for k in range(c * m, (c + 1) * m):
                _fill(acc, 0, acc.size, zero)
                for r in range(r_n):
                    s = 0
                    while sw == 1 and s + 4 <= s_n:   # unit column stride: four taps at once
                        for oh in range(rows):
                            _gather_axpy4(acc, oh * wq, wf, (k * r_n + r) * s_n + s, padded,
                                          (oh * sh + r * dh) * pitch + s * dw, dw, run)
                        s += 4
                    for s in range(s, s_n):
                        for oh in range(rows):
                            _gather_axpy(acc, oh * wq, w[k, r, s], padded,
                                         (oh * sh + r * dh) * pitch + s * dw, sw, run)
                _store_cropped(acc, 0, wq, 0, 0, oh_n, ow_n, base[k], yf,
                               (b * k_n + k) * oh_n * ow_n, relu)


@njit(cache=True, nogil=True)
def _dw_grad_input_kernel(gy, w, base, gx, c0, c1, sh, sw, ph, pw, dh, dw):
    """Depthwise gx[b, c] = base[c] + sum over its m output channels of w * gy, scattered,
    for c0 <= c < c1."""
    n, c_n, h, wd = gx.shape
    k_n, r_n, s_n = w.shape
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    m = k_n // c_n
    padded, gy_wide, wq, pitch = _dw_scratch(h, wd, oh_n, s_n, sw, ph, pw, dw, gx)
    rows, run = _runs(oh_n, wq, sh, sw)
    if not _all_finite(w.reshape(-1)[c0 * m * r_n * s_n:c1 * m * r_n * s_n]):
        rows, run = oh_n, ow_n
    zero = padded.dtype.type(0)
    gyf, gxf = gy.reshape(-1), gx.reshape(-1)
    for b in range(n):
        for c in range(c0, c1):
            _fill(padded, 0, padded.size, zero)
            for k in range(c * m, (c + 1) * m):
                _load_padded(gyf, (b * k_n + k) * oh_n * ow_n, ow_n, oh_n, ow_n, gy_wide, 0,
                             0, 0, wq)
                for r in range(r_n):
                    for s in range(s_n):
                        for oh in range(rows):
                            _scatter_axpy(padded, (oh * sh + r * dh) * pitch + s * dw, sw,
                                          w[k, r, s], gy_wide, oh * wq, run)
            _store_cropped(padded, 0, pitch, ph, pw, h, wd, base[c], gxf, (b * c_n + c) * h * wd)


@njit(cache=True, nogil=True)
def _dw_grad_weight_kernel(gy, x, x_finite, gw, c0, c1, sh, sw, ph, pw, dh, dw):
    """Depthwise gw[k, r, s] = sum_{b, oh, ow} gy[b, k, oh, ow] * x_pad[b, k // m, ...], for
    the output channels k of input channels c0 <= c < c1, summed in float64 over images.

    With unit strides and ``x_finite`` (x holds no inf or NaN), each tap of each (image, channel) is a dot product
    of the wide gy plane with the padded x plane shifted by the tap (:func:`_tap_dots`);
    otherwise each tap sums into lanes, one per element of a block of ``blk`` wide rows
    (:func:`_tap_lanes`), which go into float64 after about ``_LANE_ADDS`` additions each;
    at the end each tap adds the lanes of its OW real columns."""
    n, c_n, h, wd = x.shape
    k_n, r_n, s_n = gw.shape
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    m = k_n // c_n
    padded, gy_wide, wq, pitch = _dw_scratch(h, wd, oh_n, s_n, sw, ph, pw, dw, gy)
    dots = sh == 1 and sw == 1 and x_finite
    blk = max(1, min(oh_n, _LANE_SPAN // wq))
    span = blk * wq
    flush = max(1, _LANE_ADDS // max(1, -(-oh_n // blk)))   # images between flushes
    lo, hi = (0, 0) if dots else (c0 * m * r_n * s_n * span, c1 * m * r_n * s_n * span)
    lanes = np.zeros(hi, gy.dtype)
    total = np.zeros(hi)
    tap_sums = np.zeros((k_n if dots else 0, r_n, s_n))
    gyf, xf = gy.reshape(-1), x.reshape(-1)
    for b in range(n):
        for c in range(c0, c1):
            _load_padded(xf, (b * c_n + c) * h * wd, wd, h, wd, padded, 0, ph, pw, pitch)
            for k in range(c * m, (c + 1) * m):
                _load_padded(gyf, (b * k_n + k) * oh_n * ow_n, ow_n, oh_n, ow_n, gy_wide, 0,
                             0, 0, wq)
                if dots:
                    _tap_dots(tap_sums[k], gy_wide, padded, pitch, oh_n * wq, dh, dw)
                else:
                    _tap_lanes(lanes, k * r_n * s_n * span, gy_wide, padded, r_n, s_n,
                               oh_n, ow_n, blk, wq, pitch, sh, sw, dh, dw)
        if (b + 1) % flush == 0 or b == n - 1:
            for i in range(lo, hi):
                total[_u(i)] += lanes[_u(i)]
                lanes[_u(i)] = 0
    for k in range(c0 * m, c1 * m):
        for r in range(r_n):
            for s in range(s_n):
                if dots:
                    gw[k, r, s] = tap_sums[k, r, s]
                    continue
                t0 = ((k * r_n + r) * s_n + s) * span
                acc = 0.0
                for i in range(blk):
                    for j in range(ow_n):
                        acc += total[_u(t0 + i * wq + j)]
                gw[k, r, s] = acc


@njit(cache=True, nogil=True)
def _tap_dots(sums, gy_wide, padded, pitch, size, dh, dw):
    """sums[r, s] += the dot product of the wide gy plane with the padded x plane shifted
    by tap (r, s), over whole wide rows (gy's zero columns meet finite pixels: zero
    products), in x's dtype over runs of ``_DOT_SPAN``, each run's sum added in float64.
    2.5x faster than the lanes on LeNet's first layer: two loads per multiply-add (five per
    four, four taps at once), against three and a store."""
    r_n, s_n = sums.shape
    for i0 in range(0, size, _DOT_SPAN):
        run = min(_DOT_SPAN, size - i0)
        for r in range(r_n):
            s = 0
            while s + 4 <= s_n:   # four taps of the row at once
                d = _dot4(gy_wide, i0, padded, r * dh * pitch + s * dw + i0, dw, run)
                for t in range(4):
                    sums[r, s + t] += d[t]
                s += 4
            for s in range(s, s_n):
                sums[r, s] += _dot(gy_wide, i0, padded, r * dh * pitch + s * dw + i0, run)


@njit(cache=True, nogil=True)
def _tap_lanes(lanes, d0, gy_wide, padded, r_n, s_n, oh_n, ow_n, blk, wq, pitch, sh, sw, dh,
               dw):
    """Adds each tap's products of the wide gy plane and the padded x plane into its lanes
    (``blk * wq`` from ``d0`` per tap, taps in (r, s) order): with unit strides a block's
    rows line up in both planes and are one run; otherwise the OW real columns of each
    row, x read every ``sw``."""
    span = blk * wq
    for oh0 in range(0, oh_n, blk):
        rows = min(blk, oh_n - oh0)
        for r in range(r_n):
            for s in range(s_n):
                t0 = d0 + (r * s_n + s) * span
                if sh == 1 and sw == 1:
                    _mul_add(lanes, t0, gy_wide, oh0 * wq, padded,
                             (oh0 + r * dh) * pitch + s * dw, 1, rows * wq)
                    continue
                for i in range(rows):
                    _mul_add(lanes, t0 + i * wq, gy_wide, (oh0 + i) * wq, padded,
                             ((oh0 + i) * sh + r * dh) * pitch + s * dw, sw, ow_n)


# --------------------------------------------------------------------------- conv view

class _View:
    """Sizes of one conv view ``x: (N, C, H, W) * w: (K, C/groups, R, S) -> (N, K, OH, OW)``
    and of its wide columns; ``relu``: the forward's output goes through a ReLU
    (conv2d_bias_act). The registered ops take their views from :func:`_view`, one object
    per geometry, which keeps what :meth:`memo` computed about it."""

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, out_hw,
                 relu: bool = False):
        self.n, self.c, self.h, self.w = x_shape
        self.k, self.cg, self.r, self.s = w_shape
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.oh, self.ow = out_hw
        self.geometry = (*stride, *padding, *dilation)   # the numba kernels' trailing args
        self.wq = -(-(self.w + 2 * padding[1]) // stride[1])
        self.pitch = self.wq * stride[1]
        # Wide rows read past the end of the last row by at most this much.
        self.slack = (self.s - 1) * dilation[1] + stride[1]
        # Output rows before a band whose windows reach the band's first input rows.
        self.halo = (self.r - 1) * dilation[0] // stride[0]
        self.relu = relu
        self._memo: dict = {}

    def memo(self, key, compute: Callable[[], Any]):
        """``compute()``, once per ``key`` for this view: the kernel choices that depend on
        the geometry and dtype alone (a training step asks the same at every call: LeNet-5's
        first conv forward at batch 1 took 50 us choosing again, 27 with the kept
        choices), under this module's size limits as they were then (a test that patches
        them clears ``_cached_view``)."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute()
            return value

    @property
    def depthwise(self) -> bool:
        """One input channel per group (depthwise, or a single input channel)."""
        return self.cg == 1

    @property
    def crs(self) -> int:
        return self.c * self.r * self.s

    @property
    def macs(self) -> int:
        return self.n * self.k * self.oh * self.ow * self.crs // self.groups

    def in_rows(self, rows: int) -> int:
        """Padded input rows that the windows of ``rows`` consecutive output rows span."""
        return (rows - 1) * self.stride[0] + (self.r - 1) * self.dilation[0] + 1

    def grouped(self, a, rows: int):
        """View ``a`` (a weight, or a (rows * groups, cols) matrix) as (groups, rows, -1)."""
        return a.reshape(self.groups, rows, -1)


_ALL_ROWS = 1 << 62   # a tile's grad_input owns every input row from its first


class _Tile(NamedTuple):
    """Output rows ``row0 .. row0 + rows`` of images ``images``; grad_input reads the
    columns from output row ``gx_row0`` (earlier in a band: its halo) and writes the input
    rows whose padded index lies in ``[own0, own1)``."""

    images: slice
    row0: int
    rows: int
    gx_row0: int
    own0: int
    own1: int


def _tiles(v: _View, itemsize: int, with_x: bool, with_gx: bool) -> list[_Tile]:
    """The batch cut into tiles for :func:`_gemm_pass`: groups of whole images whose column
    matrices (the columns with ``with_x``, their gradient with ``with_gx``) are about
    ``_CHUNK_BYTES`` (so the im2col copy, the GEMM reading it and the col2im scattering
    its gradient work in cache), or, when one image's columns pass
    ``_BAND_ABOVE_BYTES`` or there are fewer images than tasks, bands of output rows of one
    image (so memory stays bounded on a large image). The count is a multiple of the
    pool's task count where the work allows, so that each thread gets as many tiles."""
    if v.n == 0:
        return []
    per_row = max(1, v.crs * v.wq * itemsize * (int(with_x) + int(with_gx)))
    tasks = threads.task_count(v.macs, threads.MIN_TASK_MACS, _TASKS_PER_THREAD)
    if v.oh * per_row <= _BAND_ABOVE_BYTES:
        per_tile = max(1, _CHUNK_BYTES // (v.oh * per_row))
        count = -(-v.n // per_tile)
        count = -(-count // tasks) * tasks
        if count > v.n >= tasks:
            count = v.n
        if count <= v.n:
            bounds = [v.n * i // count for i in range(count + 1)]
            return [_Tile(slice(a, b), 0, v.oh, 0, 0, _ALL_ROWS)
                    for a, b in zip(bounds, bounds[1:])]
        bands = -(-tasks // v.n)
    else:
        bands = -(-v.oh * per_row // _CHUNK_BYTES)
    band = -(-v.oh // min(bands, v.oh))
    if with_gx:   # the halo's recomputed columns stay a small part of the band's
        band = min(v.oh, max(band, _BAND_PER_HALO * v.halo))
    return [_band(v, b, o, band, with_gx) for b in range(v.n) for o in range(0, v.oh, band)]


def _band(v: _View, image: int, row0: int, band: int, with_gx: bool) -> _Tile:
    """Output rows ``row0 .. row0 + band`` of one image. Its grad_input owns the padded
    input rows from ``row0 * sh`` (the first band: from 0) to the next band's first (the
    last band: to the end), which the windows of its rows and its halo's cover."""
    sh = v.stride[0]
    last = row0 + band >= v.oh
    return _Tile(slice(image, image + 1), row0, min(band, v.oh - row0),
                 max(0, row0 - v.halo) if with_gx else row0, row0 * sh if row0 else 0,
                 _ALL_ROWS if last else (row0 + band) * sh)


def _images(tile: _Tile) -> int:
    return tile.images.stop - tile.images.start


def _gx_rows(tile: _Tile) -> int:
    """Output rows whose columns grad_input reads: the tile's and its halo."""
    return tile.row0 + tile.rows - tile.gx_row0


class _Buffers:
    """One task's scratch for :func:`_gemm_pass`: a zero-bordered input buffer and the
    column matrix (im2col), the wide grad_output, output and column-gradient matrices.
    ``zero_cols``, ``zero_dcols``: whether the extra columns of the column matrix (read by
    grad_weight) and of the column gradient (scattered by grad_input) must be zeroed, as
    they must when ``x``, resp. the weight, holds an inf or NaN (else the products with gy's
    zero columns are zeros already)."""

    def __init__(self, v: _View, tiles: list[_Tile], dtype, x, gy, y, gx, zero_cols: bool,
                 zero_dcols: bool):
        n = max(_images(t) for t in tiles)
        rows = max(t.rows for t in tiles)
        gx_rows = max(_gx_rows(t) for t in tiles)
        self.v = v
        self.buf = (np.zeros(n * v.c * v.in_rows(rows) * v.pitch + v.slack, dtype)
                    if x is not None else None)
        self.cols = np.empty(v.crs * n * rows * v.wq, dtype) if x is not None else None
        self.gy = np.empty(v.k * n * gx_rows * v.wq, dtype) if gy is not None else None
        self.y = np.empty(v.k * n * rows * v.wq, dtype) if y is not None else None
        self.dcols = np.empty(v.crs * n * gx_rows * v.wq, dtype) if gx is not None else None
        self.zero_cols, self.zero_dcols = zero_cols, zero_dcols

    def im2col(self, x, tile: _Tile, zero_extra: bool = False):
        """The wide columns of ``tile`` of ``x: (N, C, H, W)``, as ``(groups, C/groups*R*S,
        n*rows*Wq)``: ``cols[c, r, s, b, i, q] = x_pad[b, c, (row0 + i)*sh + r*dh, q*sw + s*dw]``
        read from the buffer, which holds padded rows ``row0*sh ..`` of each image; with
        ``zero_extra`` the ``Wq - OW`` extra columns of each row are zeros."""
        v, n, rows = self.v, _images(tile), tile.rows
        cols = self.cols[:v.crs * n * rows * v.wq].reshape(v.c, v.r, v.s, n, rows, v.wq)
        _im2col_kernel(x, tile.images.start, tile.row0 * v.stride[0], *v.padding, self.buf,
                       cols, v.in_rows(rows) * v.pitch, v.pitch, *v.stride, *v.dilation)
        if zero_extra:
            _zero_columns(cols, v.ow)
        return v.grouped(cols, v.crs // v.groups)


def _gemm_pass(v: _View, w, x, gy, y, y_bias, gw, gx, gx_base):
    """One sweep of the batch computing whichever of ``y``, ``gw``, ``gx`` are given.

    Needs ``x`` for ``y`` and ``gw``, ``gy`` for ``gw`` and ``gx``. Fills ``y = conv(x, w)
    + y_bias``, ``gw = d<conv(x, w), gy>/dw`` and ``gx = conv^T(gy, w) + gx_base`` (a
    per-channel array). Arrays are C-contiguous.

    The tiles are split into equal runs, one task each on the thread pool; every tile
    writes its own rows of ``y`` and ``gx``, and each task sums its tiles' ``gw`` into its
    own partial, the partials added in task order, so the result does not depend on which
    thread ran which task.
    """
    dtype = w.dtype
    kg, crs_g = v.k // v.groups, v.crs // v.groups
    w3 = v.grouped(w, kg)
    tiles = _tiles(v, dtype.itemsize, x is not None, gx is not None)
    runs = threads.split(len(tiles), 1, _TASKS_PER_THREAD)
    partials = [gw] + [np.empty_like(gw) for _ in runs[1:]] if gw is not None else []
    if gw is not None and not tiles:
        gw.fill(0)
    zero_cols = gw is not None and not _all_finite(x.reshape(-1))
    zero_dcols = gx is not None and not _all_finite(w.reshape(-1))

    def task(t: int) -> None:
        bufs = _Buffers(v, [tiles[i] for i in runs[t]], dtype, x, gy, y, gx, zero_cols,
                        zero_dcols)
        for i in runs[t]:
            _tile_pass(v, tiles[i], bufs, w3, x, gy, y, y_bias,
                       partials[t] if gw is not None else None, i == runs[t].start, gx,
                       gx_base)

    threads.parallel_for(len(runs), task)
    for p in partials[1:]:
        gw += p


def _tile_pass(v: _View, tile: _Tile, bufs: _Buffers, w3, x, gy, y, y_bias, gw, first, gx,
               gx_base):
    """The products of :func:`_gemm_pass` on one tile (``gw`` set or, after the task's
    first tile, accumulated)."""
    n, gy_rows = _images(tile), _gx_rows(tile)
    kg, crs_g = v.k // v.groups, v.crs // v.groups
    width = n * tile.rows * v.wq
    if x is not None:
        cols = bufs.im2col(x, tile, zero_extra=gw is not None and bufs.zero_cols)
    if gy is not None:
        gy_wide = bufs.gy[:v.k * n * gy_rows * v.wq].reshape(v.k, n, gy_rows, v.wq)
        _to_wide_kernel(gy[tile.images], tile.gx_row0, gy_wide)
        # The tile's own rows (past the halo; a halo only in a band of one image).
        gy3 = v.grouped(gy_wide[:, :, tile.row0 - tile.gx_row0:], kg)
    if y is not None:
        y3 = v.grouped(bufs.y[:v.k * width], kg)
        np.matmul(w3, cols, out=y3)
        _from_wide_kernel(y3.reshape(v.k, n, tile.rows, v.wq), y_bias, y[tile.images],
                          tile.row0, v.relu)
    if gw is not None:
        _grad_weight_product(v.grouped(gw, kg), gy3, cols, first)
    if gx is not None:
        dcols = v.grouped(bufs.dcols[:v.crs * n * gy_rows * v.wq], crs_g)
        np.matmul(w3.transpose(0, 2, 1), v.grouped(gy_wide, kg), out=dcols)
        dcols = dcols.reshape(v.c, v.r, v.s, n, gy_rows, v.wq)
        if bufs.zero_dcols:   # W^T times gy's zero columns: NaN where W holds an inf
            _zero_columns(dcols, v.ow)
        _col2im_kernel(dcols, gx_base, gx[tile.images], tile.gx_row0, tile.own0, tile.own1,
                       *v.geometry)


def _grad_weight_product(gw3, gy3, cols, first: bool) -> None:
    """``gw3 = gy3 @ cols^T`` (``first``) or ``gw3 += gy3 @ cols^T``, per group: ``gy3`` is
    ``(groups, K/groups, width)``, ``cols`` ``(groups, C/groups*R*S, width)``.

    With few output channels and many columns (LeNet's second layer: 16 x 3,360 times
    3,360 x 150 per tile) OpenBLAS runs the transposed product ``cols @ gy3^T`` on a
    transposed copy of ``gy3`` (cheap: K rows) 1.4-1.7x faster than ``gy3 @ cols^T``,
    which it reads as a transposed operand; with fewer columns than about twice the rows of
    ``cols`` (deep layers, small images) the direct product is faster, up to 20x
    (bench/NOTES.md, 2026-12-07 fourth pass). Both sum the same terms per element."""
    if cols.shape[2] >= _GW_TRANSPOSED_WIDTH * cols.shape[1]:
        product = np.matmul(cols, np.ascontiguousarray(gy3.transpose(0, 2, 1)))
        product = product.transpose(0, 2, 1)
    else:
        product = np.matmul(gy3, cols.transpose(0, 2, 1))
    if first:
        np.copyto(gw3, product)
    else:
        gw3 += product


def _even(total: int, count: int) -> list[range]:
    """``range(total)`` in ``count`` contiguous parts whose sizes differ by at most one."""
    bounds = [total * i // count for i in range(count + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def _depthwise_pass(v: _View, w, x, gy, y, y_bias, gw, gx, gx_base):
    """The same contract as :func:`_gemm_pass`, by direct loops (one input channel per
    group), on the thread pool in blocks of (images, input channels). grad_weight sums each
    block of images into its own float64 partial; the partials are added in block order."""
    if v.n == 0:   # no images: no tasks, and a zero weight gradient
        if gw is not None:
            gw.fill(0)
        return
    w3 = w.reshape(v.k, v.r, v.s)
    tasks = threads.task_count(v.macs, threads.MIN_TASK_MACS, _TASKS_PER_THREAD)
    images = _even(v.n, min(v.n, tasks))
    channels = _even(v.c, min(v.c, -(-tasks // max(1, len(images)))))
    partials = np.zeros((len(images), v.k, v.r, v.s)) if gw is not None else None
    x_finite = gw is not None and _all_finite(x.reshape(-1))   # one scan, not one per task

    def task(t: int) -> None:
        i, j = divmod(t, len(channels))
        b, c = slice(images[i].start, images[i].stop), channels[j]
        if y is not None:
            _dw_forward_kernel(x[b], w3, y_bias, y[b], v.relu, c.start, c.stop, *v.geometry)
        if gx is not None:
            _dw_grad_input_kernel(gy[b], w3, gx_base, gx[b], c.start, c.stop, *v.geometry)
        if gw is not None:
            _dw_grad_weight_kernel(gy[b], x[b], x_finite, partials[i], c.start, c.stop,
                                   *v.geometry)

    threads.parallel_for(len(images) * len(channels), task)
    if gw is not None:
        np.copyto(gw, partials.sum(axis=0).reshape(gw.shape), casting="same_kind")


def _direct_pitch(v: _View) -> int:
    """The row length of the direct forward's padded planes: the padded width, or what the
    last pixel block of a row reads when it is longer."""
    step = 2 * _DIRECT_PIXELS     # the widest block: two sets of pixels
    last = (-(-v.ow // step) * step - 1) * v.stride[1] + (v.s - 1) * v.dilation[1]
    return max(v.w + 2 * v.padding[1], last + 1)


def _direct_fits(v: _View, dtype, grad_weight: bool = False) -> bool:
    """Whether the direct kernels compute this view's forward (or, with ``grad_weight``,
    its weight gradient): no groups, K a multiple of the vector lanes L, an image's padded
    planes and its channels-last output (or grad_output) within their budgets; then K of
    one or two vectors, or wider layers with many taps per output channel
    (C*R*S >= _DIRECT_TAPS_PER_CHANNEL * K for the weight gradient, whose per-image
    transpose of grad_output costs in proportion K / (C*R*S); twice that and K <= 4L for
    the forward)."""
    image_bytes = v.c * (v.h + 2 * v.padding[0]) * _direct_pitch(v) * dtype.itemsize
    output_bytes = v.k * v.oh * (v.ow + 2 * _DIRECT_PIXELS) * dtype.itemsize
    lane_n = lanes(dtype)
    if not (v.groups == 1 and v.k % lane_n == 0 and v.c > 0 and v.oh > 0 and v.ow > 0
            and image_bytes <= _DIRECT_MAX_IMAGE_BYTES
            and output_bytes <= (_DIRECT_GW_MAX_OUTPUT_BYTES if grad_weight
                                 else _DIRECT_MAX_OUTPUT_BYTES)):
        return False
    if v.k <= 2 * lane_n:
        return True
    if grad_weight:
        return v.crs >= _DIRECT_TAPS_PER_CHANNEL * v.k
    return v.k <= 4 * lane_n and v.crs >= 2 * _DIRECT_TAPS_PER_CHANNEL * v.k


def _direct_taps(v: _View, pitch: int) -> np.ndarray:
    """Each tap (c, r, s)'s offset from its window's corner in an image of padded planes
    with rows of ``pitch``, in (c, r, s) order, followed by zeros up to a multiple of
    _DIRECT_TAPS (the weight gradient's blocks)."""
    plane = (v.h + 2 * v.padding[0]) * pitch
    return _tap_offsets(v.c, v.r, v.s, plane, v.dilation[0] * pitch, v.dilation[1],
                        -(-v.crs // _DIRECT_TAPS) * _DIRECT_TAPS)


_cached_view = functools.lru_cache(maxsize=256)(_View)


def _view(x_shape, w_shape, stride, padding, dilation, groups: int, out_hw,
          relu: bool = False) -> _View:
    """The :class:`_View` of a geometry, made once (its memo kept with it)."""
    return _cached_view(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding),
                        tuple(dilation), int(groups), tuple(out_hw), bool(relu))


@functools.lru_cache(maxsize=64)
def _tap_offsets(a_n: int, b_n: int, c_n: int, a_step: int, b_step: int, c_step: int,
                 size: int) -> np.ndarray:
    """``a*a_step + b*b_step + c*c_step`` for (a, b, c) in row-major order over
    ``(a_n, b_n, c_n)``, then zeros up to ``size``, as a read-only int64 array (cached:
    a training step asks for the same few tables at every call)."""
    offsets = np.zeros(size, np.int64)
    offsets[:a_n * b_n * c_n] = (np.arange(a_n)[:, None, None] * a_step
                                 + np.arange(b_n)[None, :, None] * b_step
                                 + np.arange(c_n) * c_step).reshape(-1)
    offsets.flags.writeable = False
    return offsets


def _by_images(v: _View, run) -> list:
    """``run(images)`` for ranges of images (slices) on the thread pool, each task with
    its own scratch; returns the results in range order."""
    image_macs = max(1, v.macs // max(1, v.n))
    ranges = threads.split(v.n, -(-threads.MIN_TASK_MACS // image_macs))
    results: list = [None] * len(ranges)

    def task(t: int) -> None:
        results[t] = run(slice(ranges[t].start, ranges[t].stop))

    threads.parallel_for(len(ranges), task)
    return results


def _direct_images(v: _View, dtype, run) -> list:
    """``run(images, buf, taps, pitch)`` by :func:`_by_images`, ``buf`` a task's
    zero-padded planes of ``dtype``."""
    pitch = _direct_pitch(v)
    taps = _direct_taps(v, pitch)
    size = v.c * (v.h + 2 * v.padding[0]) * pitch
    return _by_images(v, lambda images: run(images, np.zeros(size, dtype), taps, pitch))


def _direct_forward(v: _View, w, x, y, y_bias) -> None:
    """``y = conv(x, w) + y_bias`` by :func:`_direct_forward_kernel`."""
    wp = np.ascontiguousarray(w.reshape(v.k, v.crs).T)          # (C*R*S, K)
    _direct_images(v, w.dtype, lambda images, buf, taps, pitch: _direct_forward_kernel(
        x[images], wp, y_bias, y[images], v.relu, buf, taps, pitch, *v.stride, *v.padding))


def _direct_grad_weight(v: _View, x, gy, gw) -> None:
    """``gw = d<conv(x, w), gy>/dw`` by :func:`_direct_grad_weight_kernel`: each range of
    images sums into its own channels-last partial, the partials added in range order."""
    def run(images, buf, taps, pitch):
        partial = np.zeros((taps.size, v.k), gw.dtype)
        _direct_grad_weight_kernel(x[images], gy[images], partial, buf, taps, pitch,
                                   *v.stride, *v.padding)
        return partial

    partials = _direct_images(v, gw.dtype, run)
    total = partials[0] if partials else np.zeros((v.crs, v.k), gw.dtype)
    for p in partials[1:]:
        total += p
    gw[...] = total[:v.crs].T.reshape(gw.shape)


def _direct_grad_input_fits(v: _View, dtype) -> bool:
    """Whether the direct grad_input computes this view: unit strides, no groups, rows of
    at least half a vector, the weights and an image's padded grad_output within their
    budgets."""
    lane_n = lanes(dtype)
    return (v.groups == 1 and tuple(v.stride) == (1, 1) and v.h > 0 and 2 * v.w >= lane_n
            and v.k > 0 and v.c > 0
            and v.k * v.crs * dtype.itemsize <= _DIRECT_GX_MAX_WEIGHT_BYTES
            and v.k * math.prod(_direct_gy_plane(v, lane_n)[:2]) * dtype.itemsize
            <= _DIRECT_MAX_IMAGE_BYTES)


def _direct_gy_plane(v: _View, lane_n: int) -> tuple[int, int, int, int]:
    """(rows, pitch, top, left) of a padded grad_output plane for
    :func:`_direct_grad_input_kernel`: gy at row ``top = (R-1)*dh`` and column
    ``left = (S-1)*dw``, room below for the row past H that a pair of rows reads and to
    the right for a row's last vector."""
    top, left = (v.r - 1) * v.dilation[0], (v.s - 1) * v.dilation[1]
    rows = max(top + v.oh, v.h + v.padding[0] + top + 1)
    pitch = max(left + v.ow, -(-v.w // lane_n) * lane_n + v.padding[1] + left)
    return rows, pitch, top, left


def _direct_grad_input(v: _View, w, gy, gx, gx_base, relu: bool = False) -> None:
    """``gx = conv^T(gy, w) + gx_base`` (through a ReLU with ``relu``) by
    :func:`_direct_grad_input_kernel`, ranges of images on the thread pool, each task with
    its own padded grad_output."""
    lane_n = lanes(w.dtype)
    rows, pitch, top, left = _direct_gy_plane(v, lane_n)
    c_pad = -(-v.c // _DIRECT_GX_CHANNELS) * _DIRECT_GX_CHANNELS
    wt = np.zeros((v.k * v.r * v.s, c_pad), w.dtype)           # wt[(k, r, s), c]
    wt[:, :v.c] = w.transpose(0, 2, 3, 1).reshape(-1, v.c)
    basetab = np.zeros((c_pad, lane_n), w.dtype)
    basetab[:v.c] = gx_base[:, None]
    gtaps = _tap_offsets(v.k, v.r, v.s, rows * pitch, -v.dilation[0] * pitch,
                         -v.dilation[1], v.k * v.r * v.s)
    _by_images(v, lambda images: _direct_grad_input_kernel(
        gy[images], wt, basetab.reshape(-1), gx[images], relu,
        np.zeros(v.k * rows * pitch, w.dtype), gtaps, pitch, top, left, *v.padding))


def _rows_view(v: _View) -> _View | None:
    """:func:`_rows_view_of`, kept with ``v``."""
    return v.memo("rows", lambda: _rows_view_of(v))


def _rows_view_of(v: _View) -> _View | None:
    """The conv view whose input gradient is ``v``'s forward, when ``v`` has unit strides
    and no groups (else None): from y's shape back to x's, the weight's channel axes
    swapped and its taps flipped (:func:`_rows_weight`), padding ``(R-1)*d - p`` (None
    when that is negative: padding wider than the kernel's reach). ``y[b, k, i, j] =
    sum w[k, c, r, s] x[b, c, i - p + r*d, j - p + s*d]`` is that view's grad_input with
    ``r -> R-1-r``, read over the same input positions."""
    pad = tuple((k - 1) * d - p for k, d, p in zip((v.r, v.s), v.dilation, v.padding))
    if tuple(v.stride) != (1, 1) or v.groups != 1 or min(pad) < 0:
        return None
    return _View((v.n, v.k, v.oh, v.ow), (v.c, v.k, v.r, v.s), (1, 1), pad, v.dilation, 1,
                 (v.h, v.w))


def _forward_path(v: _View, dtype) -> str:
    """Which kernel computes the forward of ``v``: ``"rows"`` (the direct grad_input of
    :func:`_rows_view`), ``"channels"`` (:func:`_direct_forward`), or ``"loops"`` (the
    depthwise loops or the GEMM path)."""
    def choose() -> str:
        rows = _rows_view(v)
        if (rows is not None and _direct_grad_input_fits(rows, dtype)
                and _rows_use(v.oh, v.ow, dtype) >= _ROWS_MIN_USE):
            return "rows"
        return "channels" if _direct_fits(v, dtype) else "loops"
    return v.memo(("path", dtype), choose)


def _rows_use(height: int, width: int, dtype) -> float:
    """The share of the row kernel's multiply-adds that reach a ``height`` x ``width``
    output: whole vectors along a row, whole pairs of rows."""
    lane_n = lanes(dtype)
    return width / (-(-width // lane_n) * lane_n) * height / (-(-height // 2) * 2)


def _rows_weight(w):
    """w (K, C, R, S) as the weight of :func:`_rows_view`: (C, K, R, S), taps flipped."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def _contiguous(a):
    return None if a is None else np.ascontiguousarray(a)


def _pass(v: _View, w, *, x=None, gy=None, y=None, y_bias=None, gw=None, gx=None,
          gx_base=None):
    """Run the conv view's products (see :func:`_gemm_pass`) on contiguous arrays, so that
    numba compiles one layout; outputs ``y``, ``gw``, ``gx`` must be C-contiguous."""
    w, x, gy, y_bias, gx_base = map(_contiguous, (w, x, gy, y_bias, gx_base))
    if gx is not None and gx_base is None:
        gx_base = np.zeros(v.c, w.dtype)
    if y is not None and y_bias is None:
        y_bias = np.zeros(v.k, w.dtype)
    path = _forward_path(v, w.dtype) if y is not None and gy is None else None
    if path == "rows":
        _direct_grad_input(_rows_view(v), _rows_weight(w), x, y, y_bias, relu=v.relu)
    elif path == "channels":
        _direct_forward(v, w, x, y, y_bias)
    elif v.depthwise:
        _depthwise_pass(v, w, x, gy, y, y_bias, gw, gx, gx_base)
    else:
        if gw is not None and y is None and v.memo(
                ("direct grad_weight", w.dtype),
                lambda: _direct_fits(v, w.dtype, grad_weight=True)):
            _direct_grad_weight(v, x, gy, gw)
            gw = None
        # The direct grad_input multiplies every weight by grad_output's zero border too:
        # exact with a finite weight, NaN from an inf one where no window puts a product.
        if (gx is not None and y is None
                and v.memo(("direct grad_input", w.dtype),
                           lambda: _direct_grad_input_fits(v, w.dtype))
                and _all_finite(w.reshape(-1))):
            _direct_grad_input(v, w, gy, gx, gx_base)
            gx = None
        if y is not None or gw is not None or gx is not None:
            _gemm_pass(v, w, x if y is not None or gw is not None else None, gy, y, y_bias,
                       gw, gx, gx_base)


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _channel_sums(g, out):
    """out[k] += the sum of every plane g[b, k] (g: (n, K, H, W) C-contiguous), each plane
    summed in float64. Reassociation lets the sum vectorise: 4x faster than NumPy's
    ``sum(axis=(0, 2, 3), dtype=float64)``, which converts through a buffer."""
    n, k_n = g.shape[0], g.shape[1]
    plane = g.shape[2] * g.shape[3]
    gf = g.reshape(-1)
    for b in range(n):
        for k in range(k_n):
            acc = 0.0
            base = (b * k_n + k) * plane
            for i in range(plane):
                acc += gf[_u(base + i)]
            out[k] += acc


def _bias_grad(grad_out, has_bias):
    """grad_out summed over (N, H, W) per channel, by ranges of images on the thread pool
    (float64 partials, added in range order)."""
    if not has_bias:
        return None
    grad_out = np.ascontiguousarray(grad_out)
    n, k = grad_out.shape[:2]
    plane = max(1, grad_out[:1].size)
    ranges = threads.split(n, -(-threads.MIN_TASK_STREAM_ELEMENTS // plane))
    partials = np.zeros((max(1, len(ranges)), k))
    threads.parallel_for(len(ranges), lambda t: _channel_sums(
        grad_out[ranges[t].start:ranges[t].stop], partials[t]))
    return partials.sum(axis=0).astype(grad_out.dtype)


# --------------------------------------------------------------------------- registered ops

_DTYPES = ("float32", "float64")


@register("conv2d", "numpy", dtypes=_DTYPES)
def conv2d(x, weight, bias, stride, padding, dilation, groups, relu: bool = False):
    out_hw = tuple(_out_size(size, k, s, p, d) for size, k, s, p, d in
                   zip(x.shape[2:], weight.shape[2:], stride, padding, dilation))
    v = _view(x.shape, weight.shape, stride, padding, dilation, groups, out_hw, relu)
    y = backend.empty((v.n, v.k) + out_hw, x.dtype)
    _pass(v, weight, x=x, y=y, y_bias=bias)
    return y


_compose_bias_act = _conv_bias_act(None)


@register("conv2d_bias_act", "numpy", dtypes=_DTYPES, priority=1)
def conv2d_bias_act(x, weight, bias, stride, padding, dilation, groups, activation, param,
                    residual, scale):
    """The ReLU (or none) of ``conv2d(x) + bias`` applied as the output is stored; other
    activations, a residual or a scale: conv2d, then the composed epilogue."""
    if activation in ("relu", "identity") and residual is None and scale is None:
        return conv2d(x, weight, bias, stride, padding, dilation, groups,
                      relu=activation == "relu")
    return _compose_bias_act(x, weight, bias, stride, padding, dilation, groups, activation,
                             param, residual, scale)


@register("conv2d_backward", "numpy", dtypes=_DTYPES)
def conv2d_backward(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    need_x, need_w, need_b = output_mask
    v = _view(x.shape, weight.shape, stride, padding, dilation, groups, grad_out.shape[2:])
    gx = backend.empty(x.shape, x.dtype) if need_x else None
    gw = backend.empty(weight.shape, x.dtype) if need_w else None
    if need_x or need_w:
        _pass(v, weight, x=x if need_w else None, gy=grad_out, gw=gw, gx=gx)
    return gx, gw, _bias_grad(grad_out, need_b)


def _transposed_view(x, weight, stride, padding, output_padding, dilation, groups) -> _View:
    """The conv view of a transposed convolution: from its output back to its input."""
    out_hw = tuple((size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, s, p, d, k, op in
                   zip(x.shape[2:], stride, padding, dilation, weight.shape[2:], output_padding))
    conv_x_shape = (x.shape[0], weight.shape[1] * groups) + out_hw
    return _view(conv_x_shape, weight.shape, stride, padding, dilation, groups, x.shape[2:])


@register("conv_transpose2d", "numpy", dtypes=_DTYPES)
def conv_transpose2d(x, weight, bias, stride, padding, output_padding, dilation, groups):
    v = _transposed_view(x, weight, stride, padding, output_padding, dilation, groups)
    y = backend.empty((v.n, v.c, v.h, v.w), x.dtype)
    _pass(v, weight, gy=x, gx=y, gx_base=bias)
    return y


@register("conv_transpose2d_backward", "numpy", dtypes=_DTYPES)
def conv_transpose2d_backward(grad_out, x, weight, has_bias, stride, padding, output_padding,
                              dilation, groups):
    v = _transposed_view(x, weight, stride, padding, output_padding, dilation, groups)
    gx = backend.empty(x.shape, x.dtype)
    gw = backend.empty(weight.shape, x.dtype)
    _pass(v, weight, x=grad_out, gy=x, y=gx, gw=gw)
    return gx, gw, _bias_grad(grad_out, has_bias)
