"""Fast CPU convolution: im2col + one BLAS matmul per group, numba where NumPy cannot vectorise.

Every op here is phrased as a *conv view*: a convolution from ``x: (N, C, H, W)`` to
``y: (N, K, OH, OW)`` with ``weight: (K, C/groups, R, S)``. conv2d is that view as it is;
conv_transpose2d is its input gradient (the adjoint), PyTorch's transposed weight
``(C_in, C_out/groups, R, S)`` read as a conv weight from ``C_out`` to ``C_in`` channels.
Three products cover all four ops:

- ``y = conv(x, w)``: im2col of ``x``, then ``W @ cols``;
- ``gw = d<y, gy>/dw``: ``gy @ cols^T``;
- ``gx = conv^T(gy, w)``: ``W^T @ gy``, then col2im.

*Chunks.* The batch runs in chunks of images whose column matrix is about ``_CHUNK_BYTES``,
so the im2col copy, the GEMM reading it and the col2im scattering its gradient work on data
still in cache, and the scratch buffers are allocated once per call.

*Wide columns.* Each image is copied into a zero-padded buffer whose rows are ``pitch =
Wq * sw`` long, ``Wq = ceil((W + 2*pw) / sw)``. The columns hold ``Wq`` (not ``OW``) values
per output row: ``cols[c, r, s, n, oh, q] = x_buf[n, c, oh*sh + r*dh, q*sw + s*dw]``, read
straight through row ends, so with ``sh == 1`` each ``(c, r, s, n)`` block is one long
strided run that NumPy copies at memory speed (short ``OW``-long rows would not be). The
``Wq - OW`` extra columns per row are computed by the GEMM and dropped; in the backward
``gy`` carries zeros there, and the extra columns of the im2col matrix (for ``gw``) and of
the column gradient (for ``gx``) are zeroed before use, so that an inf or NaN in an input
pixel no window reads, or in the weight, never reaches a gradient as ``0 * inf``: every
result reads exactly the elements PyTorch's definition reads.
The price is GEMM work in proportion ``Wq / OW`` (1.06 for 32x32 with 3x3, 1.4 for 14x14
with 5x5 and no padding).
The columns are viewed as ``(groups, C/groups * R * S, n * OH * Wq)``, so one batched matmul
over the groups gives ``(K, n * OH * Wq)``.

*Depthwise.* With one input channel per group the GEMM's inner dimension would be just
``R * S``; those convolutions run as direct numba loops instead.

Signatures follow the registry contract in :mod:`gpuconv.kernels.reference.conv`.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import as_strided

from .. import register
from ... import backend

_CHUNK_BYTES = 1 << 21
_REDUCE = {"reassoc", "contract"}   # lets LLVM vectorise the dot-product loops


# --------------------------------------------------------------------------- numba kernels
# The kernels index flat C-contiguous arrays through unsigned offsets and write explicit
# loops rather than slices: numba then emits no negative-index wraparound test and the
# loops vectorise (2-3x faster than multi-dimensional indexing). Offsets are int64 before
# the cast. Arrays: x (n, C, H, W), y/gy (n, K, OH, OW), w (K, R, S).

@njit(cache=True)
def _u(i):
    return np.uintp(i)


@njit(cache=True)
def _fill(a, start, stop, value):
    for i in range(start, stop):
        a[_u(i)] = value


@njit(cache=True)
def _gather_axpy(dst, d0, a, src, s0, step, count):
    """dst[d0 + i] += a * src[s0 + i*step] for i in [0, count)."""
    if step == 1:
        for i in range(count):
            dst[_u(d0 + i)] += a * src[_u(s0 + i)]
    else:
        for i in range(count):
            dst[_u(d0 + i)] += a * src[_u(s0 + i * step)]


@njit(cache=True)
def _scatter_axpy(dst, d0, step, a, src, s0, count):
    """dst[d0 + i*step] += a * src[s0 + i] for i in [0, count)."""
    if step == 1:
        for i in range(count):
            dst[_u(d0 + i)] += a * src[_u(s0 + i)]
    else:
        for i in range(count):
            dst[_u(d0 + i * step)] += a * src[_u(s0 + i)]


@njit(cache=True, fastmath=_REDUCE)
def _dot(a, a0, b, b0, step, count):
    """sum_i a[a0 + i] * b[b0 + i*step] for i in [0, count), accumulated in float64."""
    acc = 0.0
    if step == 1:
        for i in range(count):
            acc += a[_u(a0 + i)] * b[_u(b0 + i)]
    else:
        for i in range(count):
            acc += a[_u(a0 + i)] * b[_u(b0 + i * step)]
    return acc


@njit(cache=True)
def _load_padded(src, s0, src_w, h, w, dst, d0, ph, pw, pitch):
    """dst[d0 + (i + ph) * pitch + j + pw] = src[s0 + i*src_w + j] for i < h, j < w: the
    top-left h x w of a plane with rows of src_w into a padded plane."""
    for i in range(h):
        for j in range(w):
            dst[_u(d0 + (i + ph) * pitch + j + pw)] = src[_u(s0 + i * src_w + j)]


@njit(cache=True)
def _store_cropped(src, s0, pitch, ph, pw, h, w, base, dst, d0):
    """dst[d0 + i*w + j] = base + src[s0 + (i + ph) * pitch + j + pw]: the inverse."""
    for i in range(h):
        for j in range(w):
            dst[_u(d0 + i * w + j)] = base + src[_u(s0 + (i + ph) * pitch + j + pw)]


@njit(cache=True)
def _runs(oh_n, wq, sh, sw):
    """How a wide block of OH rows of Wq is walked: (rows, run length). With unit strides
    the rows of the block and of the padded plane line up, so the block is one run."""
    if sh == 1 and sw == 1:
        return 1, oh_n * wq
    return oh_n, wq


@njit(cache=True)
def _col2im_kernel(cols, base, gx, sh, sw, ph, pw, dh, dw):
    """gx[b, c] = base[c] + the wide columns (C, R, S, n, OH, Wq) summed onto their windows.

    Each (b, c) plane accumulates in a padded scratch plane of row pitch ``Wq * sw`` (the
    layout im2col read from), whose interior is then copied out.
    """
    n, c_n, h, w = gx.shape
    r_n, s_n, oh_n, wq = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    pitch = wq * sw
    plane = np.empty((h + 2 * ph) * pitch + (s_n - 1) * dw + sw, cols.dtype)
    one, zero = plane.dtype.type(1), plane.dtype.type(0)
    rows, run = _runs(oh_n, wq, sh, sw)
    cf, gf = cols.reshape(-1), gx.reshape(-1)
    for b in range(n):
        for c in range(c_n):
            _fill(plane, 0, plane.size, zero)
            for r in range(r_n):
                for s in range(s_n):
                    block = (((c * r_n + r) * s_n + s) * n + b) * oh_n * wq
                    for oh in range(rows):
                        _scatter_axpy(plane, (oh * sh + r * dh) * pitch + s * dw, sw, one,
                                      cf, block + oh * wq, run)
            _store_cropped(plane, 0, pitch, ph, pw, h, w, base[c], gf, (b * c_n + c) * h * w)


@njit(cache=True)
def _to_wide_kernel(gy, wide):
    """wide[k, b, oh, q] = gy[b, k, oh, q] for q < OW, 0 for OW <= q < Wq."""
    n, k_n, oh_n, ow_n = gy.shape
    wq = wide.shape[3]
    gf, wf = gy.reshape(-1), wide.reshape(-1)
    zero = wf.dtype.type(0)
    for b in range(n):
        for k in range(k_n):
            d0 = (k * n + b) * oh_n * wq
            for oh in range(oh_n):
                _fill(wf, d0 + oh * wq + ow_n, d0 + (oh + 1) * wq, zero)
            _load_padded(gf, (b * k_n + k) * oh_n * ow_n, ow_n, oh_n, ow_n, wf, d0, 0, 0, wq)


@njit(cache=True)
def _from_wide_kernel(wide, base, y):
    """y[b, k, oh, ow] = base[k] + wide[k, b, oh, ow] (the first OW of each wide row)."""
    n, k_n, oh_n, ow_n = y.shape
    wq = wide.shape[3]
    wf, yf = wide.reshape(-1), y.reshape(-1)
    for b in range(n):
        for k in range(k_n):
            _store_cropped(wf, (k * n + b) * oh_n * wq, wq, 0, 0, oh_n, ow_n, base[k], yf,
                           (b * k_n + k) * oh_n * ow_n)


# Depthwise kernels: channel k of y reads channel k // m of x (m = K / C). Each x plane is
# loaded once into a zero-bordered scratch plane and each gy plane into a wide scratch
# (zeros past OW), so every tap (r, s) of the forward is a few long runs, as in the GEMM
# path. The backward kernels walk only the OW real columns of each row: a product with the
# zeros past OW would turn an inf in an unread pixel or in the weight into NaN.

@njit(cache=True)
def _dw_scratch(h, w, oh_n, s_n, sw, ph, pw, dw, like):
    """Zeroed scratch of ``like``'s dtype: a padded input plane (row pitch ``Wq * sw``) and
    a wide output plane (OH rows of Wq), with Wq and the pitch."""
    wq = -(-(w + 2 * pw) // sw)
    pitch = wq * sw
    padded = np.zeros((h + 2 * ph) * pitch + (s_n - 1) * dw + sw, like.dtype)
    wide = np.zeros(oh_n * wq, like.dtype)
    return padded, wide, wq, pitch


@njit(cache=True)
def _dw_forward_kernel(x, w, base, y, sh, sw, ph, pw, dh, dw):
    """Depthwise y[b, k] = base[k] + sum_{r,s} w[k, r, s] * x_pad[b, k // m, ...]."""
    n, c_n, h, wd = x.shape
    k_n, r_n, s_n = w.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    m = k_n // c_n
    padded, acc, wq, pitch = _dw_scratch(h, wd, oh_n, s_n, sw, ph, pw, dw, y)
    rows, run = _runs(oh_n, wq, sh, sw)
    zero = acc.dtype.type(0)
    xf, yf = x.reshape(-1), y.reshape(-1)
    for b in range(n):
        for c in range(c_n):
            _load_padded(xf, (b * c_n + c) * h * wd, wd, h, wd, padded, 0, ph, pw, pitch)
            for k in range(c * m, (c + 1) * m):
                _fill(acc, 0, acc.size, zero)
                for r in range(r_n):
                    for s in range(s_n):
                        for oh in range(rows):
                            _gather_axpy(acc, oh * wq, w[k, r, s], padded,
                                         (oh * sh + r * dh) * pitch + s * dw, sw, run)
                _store_cropped(acc, 0, wq, 0, 0, oh_n, ow_n, base[k], yf,
                               (b * k_n + k) * oh_n * ow_n)


@njit(cache=True)
def _dw_grad_input_kernel(gy, w, base, gx, sh, sw, ph, pw, dh, dw):
    """Depthwise gx[b, c] = base[c] + sum over its m output channels of w * gy, scattered."""
    n, c_n, h, wd = gx.shape
    k_n, r_n, s_n = w.shape
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    m = k_n // c_n
    padded, gy_wide, wq, pitch = _dw_scratch(h, wd, oh_n, s_n, sw, ph, pw, dw, gx)
    zero = padded.dtype.type(0)
    gyf, gxf = gy.reshape(-1), gx.reshape(-1)
    for b in range(n):
        for c in range(c_n):
            _fill(padded, 0, padded.size, zero)
            for k in range(c * m, (c + 1) * m):
                _load_padded(gyf, (b * k_n + k) * oh_n * ow_n, ow_n, oh_n, ow_n, gy_wide, 0,
                             0, 0, wq)
                for r in range(r_n):
                    for s in range(s_n):
                        for oh in range(oh_n):
                            _scatter_axpy(padded, (oh * sh + r * dh) * pitch + s * dw, sw,
                                          w[k, r, s], gy_wide, oh * wq, ow_n)
            _store_cropped(padded, 0, pitch, ph, pw, h, wd, base[c], gxf, (b * c_n + c) * h * wd)


@njit(cache=True)
def _dw_grad_weight_kernel(gy, x, gw, sh, sw, ph, pw, dh, dw):
    """Depthwise gw[k, r, s] = sum_{b, oh, ow} gy[b, k, oh, ow] * x_pad[b, k // m, ...]."""
    n, c_n, h, wd = x.shape
    k_n, r_n, s_n = gw.shape
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    m = k_n // c_n
    padded, gy_wide, wq, pitch = _dw_scratch(h, wd, oh_n, s_n, sw, ph, pw, dw, gw)
    acc = np.zeros((k_n, r_n, s_n))
    gyf, xf = gy.reshape(-1), x.reshape(-1)
    for b in range(n):
        for c in range(c_n):
            _load_padded(xf, (b * c_n + c) * h * wd, wd, h, wd, padded, 0, ph, pw, pitch)
            for k in range(c * m, (c + 1) * m):
                _load_padded(gyf, (b * k_n + k) * oh_n * ow_n, ow_n, oh_n, ow_n, gy_wide, 0,
                             0, 0, wq)
                for r in range(r_n):
                    for s in range(s_n):
                        for oh in range(oh_n):
                            acc[k, r, s] += _dot(gy_wide, oh * wq, padded,
                                                 (oh * sh + r * dh) * pitch + s * dw, sw, ow_n)
    for k in range(k_n):
        for r in range(r_n):
            for s in range(s_n):
                gw[k, r, s] = acc[k, r, s]


# --------------------------------------------------------------------------- conv view

class _View:
    """Sizes of one conv view ``x: (N, C, H, W) * w: (K, C/groups, R, S) -> (N, K, OH, OW)``
    and of its wide columns."""

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, out_hw):
        self.n, self.c, self.h, self.w = x_shape
        self.k, self.cg, self.r, self.s = w_shape
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.oh, self.ow = out_hw
        self.geometry = (*stride, *padding, *dilation)   # the numba kernels' trailing args
        self.hp = self.h + 2 * padding[0]
        self.wq = -(-(self.w + 2 * padding[1]) // stride[1])
        self.pitch = self.wq * stride[1]
        # Wide rows read past the end of the last row by at most this much.
        self.slack = (self.s - 1) * dilation[1] + stride[1]

    @property
    def depthwise(self) -> bool:
        return self.cg == 1 and self.groups > 1

    @property
    def crs(self) -> int:
        return self.c * self.r * self.s

    @property
    def wide(self) -> int:
        """Columns per image in the wide layout."""
        return self.oh * self.wq

    def chunk(self, itemsize: int) -> int:
        """Images per chunk: as many as keep the column matrix near ``_CHUNK_BYTES``."""
        per_image = max(1, self.crs * self.wide * itemsize)
        return int(max(1, min(self.n, _CHUNK_BYTES // per_image)))

    def grouped(self, a, rows: int):
        """View ``a`` (a weight, or a (rows * groups, cols) matrix) as (groups, rows, -1)."""
        return a.reshape(self.groups, rows, -1)


class _Im2col:
    """im2col into the wide layout, through one zero-bordered buffer for a chunk of images."""

    def __init__(self, v: _View, step: int, dtype):
        self.v = v
        self.plane = v.hp * v.pitch
        self.buf = np.zeros(step * v.c * self.plane + v.slack, dtype)
        self.cols = np.empty(v.crs * step * v.wide, dtype)

    def __call__(self, x_chunk, zero_extra: bool = False):
        """The columns of ``x_chunk: (n, C, H, W)`` as ``(groups, C/groups*R*S, n*OH*Wq)``;
        with ``zero_extra`` the ``Wq - OW`` extra columns of each row are zeros."""
        v, n = self.v, x_chunk.shape[0]
        (ph, pw), (sh, sw), (dh, dw) = v.padding, v.stride, v.dilation
        padded = self.buf[:n * v.c * self.plane].reshape(n, v.c, v.hp, v.pitch)
        padded[:, :, ph:ph + v.h, pw:pw + v.w] = x_chunk
        e = self.buf.itemsize
        windows = as_strided(self.buf, (v.c, v.r, v.s, n, v.oh, v.wq),
                             (self.plane * e, dh * v.pitch * e, dw * e, v.c * self.plane * e,
                              sh * v.pitch * e, sw * e), writeable=False)
        cols = self.cols[:v.crs * n * v.wide].reshape(windows.shape)
        np.copyto(cols, windows)
        if zero_extra:
            cols[..., v.ow:] = 0
        return v.grouped(cols, v.crs // v.groups)


def _chunks(n: int, step: int):
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _gemm_pass(v: _View, w, x, gy, y, y_bias, gw, gx, gx_base):
    """One chunked sweep of the batch computing whichever of ``y``, ``gw``, ``gx`` are given.

    Needs ``x`` for ``y`` and ``gw``, ``gy`` for ``gw`` and ``gx``. Fills ``y = conv(x, w)
    + y_bias``, ``gw = d<conv(x, w), gy>/dw`` and ``gx = conv^T(gy, w) + gx_base`` (a
    per-channel array). Arrays are C-contiguous.
    """
    dtype = w.dtype
    step = v.chunk(dtype.itemsize)
    kg, crs_g = v.k // v.groups, v.crs // v.groups
    w3 = v.grouped(w, kg)
    im2col = _Im2col(v, step, dtype) if x is not None else None
    gy_buf = np.empty(v.k * step * v.wide, dtype) if gy is not None else None
    y_buf = np.empty(v.k * step * v.wide, dtype) if y is not None else None
    dcols_buf = np.empty(v.crs * step * v.wide, dtype) if gx is not None else None
    if gw is not None and v.n == 0:
        gw.fill(0)
    for i, sl in enumerate(_chunks(v.n, step)):
        width = (sl.stop - sl.start) * v.wide
        if x is not None:
            cols = im2col(x[sl], zero_extra=gw is not None)
        if gy is not None:
            gy_wide = gy_buf[:v.k * width].reshape(v.k, -1, v.oh, v.wq)
            _to_wide_kernel(gy[sl], gy_wide)
            gy3 = v.grouped(gy_wide, kg)
        if y is not None:
            y3 = v.grouped(y_buf[:v.k * width], kg)
            np.matmul(w3, cols, out=y3)
            _from_wide_kernel(y3.reshape(v.k, -1, v.oh, v.wq), y_bias, y[sl])
        if gw is not None:
            gw3 = v.grouped(gw, kg)
            if i == 0:
                np.matmul(gy3, cols.transpose(0, 2, 1), out=gw3)
            else:
                gw3 += np.matmul(gy3, cols.transpose(0, 2, 1))
        if gx is not None:
            dcols = v.grouped(dcols_buf[:v.crs * width], crs_g)
            np.matmul(w3.transpose(0, 2, 1), gy3, out=dcols)
            dcols = dcols.reshape(v.c, v.r, v.s, -1, v.oh, v.wq)
            dcols[..., v.ow:] = 0  # W^T times gy's zero padding: NaN where W holds an inf
            _col2im_kernel(dcols, gx_base, gx[sl], *v.geometry)


def _depthwise_pass(v: _View, w, x, gy, y, y_bias, gw, gx, gx_base):
    """The same contract as :func:`_gemm_pass`, by direct loops (one channel per group)."""
    w3 = w.reshape(v.k, v.r, v.s)
    if y is not None:
        _dw_forward_kernel(x, w3, y_bias, y, *v.geometry)
    if gw is not None:
        _dw_grad_weight_kernel(gy, x, gw.reshape(v.k, v.r, v.s), *v.geometry)
    if gx is not None:
        _dw_grad_input_kernel(gy, w3, gx_base, gx, *v.geometry)


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
    if v.depthwise:
        _depthwise_pass(v, w, x, gy, y, y_bias, gw, gx, gx_base)
    else:
        _gemm_pass(v, w, x, gy, y, y_bias, gw, gx, gx_base)


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _bias_grad(grad_out, has_bias):
    return grad_out.sum(axis=(0, 2, 3)) if has_bias else None


# --------------------------------------------------------------------------- registered ops

_DTYPES = ("float32", "float64")


@register("conv2d", "numpy", dtypes=_DTYPES)
def conv2d(x, weight, bias, stride, padding, dilation, groups):
    out_hw = tuple(_out_size(size, k, s, p, d) for size, k, s, p, d in
                   zip(x.shape[2:], weight.shape[2:], stride, padding, dilation))
    v = _View(x.shape, weight.shape, stride, padding, dilation, groups, out_hw)
    y = backend.empty((v.n, v.k) + out_hw, x.dtype)
    _pass(v, weight, x=x, y=y, y_bias=bias)
    return y


@register("conv2d_backward", "numpy", dtypes=_DTYPES)
def conv2d_backward(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    need_x, need_w, need_b = output_mask
    v = _View(x.shape, weight.shape, stride, padding, dilation, groups, grad_out.shape[2:])
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
    return _View(conv_x_shape, weight.shape, stride, padding, dilation, groups, x.shape[2:])


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
