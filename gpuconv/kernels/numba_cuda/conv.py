"""conv2d in numba.cuda: a direct kernel and im2col/col2im + GEMM, forward and both gradients.

Registry contract (as every conv2d impl): ``conv2d(x, weight, bias, stride, padding,
dilation, groups)`` with tuples of ints and symmetric padding, and
``conv2d_backward(grad_out, x, weight, output_mask, stride, padding, dilation, groups)``
returning ``(grad_x, grad_weight, grad_bias)``, None where ``output_mask`` says so.

Direct kernels, one thread per output element of each pass, so that every element is
written by exactly one thread (no atomics, deterministic):

- ``conv2d_fwd_direct``: thread = y[n, k, oh, ow]; it sums over the group's input
  channels and the kernel window.
- ``conv2d_bwd_input_direct``: thread = gx[n, c, ih, iw]; it gathers every (k, r, s)
  whose window covers (ih, iw): oh = (ih + ph - r*dh) / sh when that divides evenly.
- ``conv2d_bwd_weight_direct``: thread = gw[k, c, r, s]; it sums over n, oh, ow.

im2col path: ``im2col`` (thread = one column element) lays out the group's receptive
fields as a (C/g*R*S, OH*OW) matrix per image, the GEMM runs on the array module
(cuBLAS through CuPy on a GPU), and ``col2im`` (thread = one input element, gathering)
folds the gradient columns back. Images are processed in chunks so that the column
buffer stays under ``COL_BUFFER_ELEMENTS``.
"""
from __future__ import annotations

import functools

from ... import backend
from .. import register
from . import DTYPES, is_available, optional, run

# The im2col column buffer's size bound (elements): about 64 MiB of float32.
COL_BUFFER_ELEMENTS = 1 << 24


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


_launch = functools.partial(run, "conv")


def _geometry(x, weight, stride, padding, dilation):
    N, _, H, W = x.shape
    K, _, R, S = weight.shape
    OH = _out_size(H, R, stride[0], padding[0], dilation[0])
    OW = _out_size(W, S, stride[1], padding[1], dilation[1])
    return N, K, OH, OW


def _prepare(*arrays):
    xp = backend.array_module(arrays[0])
    return xp, tuple(xp.ascontiguousarray(a) for a in arrays)


@register("conv2d", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available, priority=-10)
def conv2d_direct(x, weight, bias, stride, padding, dilation, groups):
    xp, (x, weight) = _prepare(x, weight)
    N, K, OH, OW = _geometry(x, weight, stride, padding, dilation)
    y = backend.empty((N, K, OH, OW), x.dtype, xp)
    b, has_bias = optional(bias, x)
    _launch("conv2d_fwd_direct", y.size, x, weight, b, y, *stride, *padding, *dilation, groups,
            has_bias)
    return y


@register("conv2d_backward", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available, priority=-10)
def conv2d_backward_direct(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    need_x, need_w, need_b = output_mask
    xp, (grad_out, x, weight) = _prepare(grad_out, x, weight)
    gx = gw = None
    if need_x:
        gx = backend.empty(x.shape, x.dtype, xp)
        _launch("conv2d_bwd_input_direct", gx.size, grad_out, weight, gx, *stride, *padding,
                *dilation, groups)
    if need_w:
        gw = backend.empty(weight.shape, x.dtype, xp)
        _launch("conv2d_bwd_weight_direct", gw.size, grad_out, x, gw, *stride, *padding,
                *dilation, groups)
    return gx, gw, _bias_grad(grad_out, xp) if need_b else None


def _bias_grad(grad_out, xp):
    gb = backend.empty((grad_out.shape[1],), grad_out.dtype, xp)
    _launch("conv2d_bwd_bias", gb.size, grad_out, gb)
    return gb


def _chunks(N: int, per_image: int):
    step = max(1, COL_BUFFER_ELEMENTS // max(1, per_image))
    for n0 in range(0, N, step):
        yield slice(n0, min(N, n0 + step))


def _columns(x, c0, cg, R, S, stride, padding, dilation, OH, OW, xp):
    col = backend.empty((x.shape[0], cg * R * S, OH * OW), x.dtype, xp)
    _launch("im2col", col.size, x, col, c0, R, S, *stride, *padding, *dilation, OH, OW)
    return col


@register("conv2d", "numba_cuda_im2col", device="cuda", dtypes=DTYPES, available=is_available, priority=-20)
def conv2d_im2col(x, weight, bias, stride, padding, dilation, groups):
    xp, (x, weight) = _prepare(x, weight)
    N, K, OH, OW = _geometry(x, weight, stride, padding, dilation)
    _, cg, R, S = weight.shape
    kg = K // groups
    y = backend.empty((N, K, OH * OW), x.dtype, xp)
    for part in _chunks(N, cg * R * S * OH * OW):
        for g in range(groups):
            col = _columns(x[part], g * cg, cg, R, S, stride, padding, dilation, OH, OW, xp)
            wg = weight[g * kg:(g + 1) * kg].reshape(kg, -1)
            y[part, g * kg:(g + 1) * kg] = xp.matmul(wg, col)
    if bias is not None:
        y += bias.reshape(1, K, 1)
    return y.reshape(N, K, OH, OW)


@register("conv2d_backward", "numba_cuda_im2col", device="cuda", dtypes=DTYPES, available=is_available,
          priority=-20)
def conv2d_backward_im2col(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    need_x, need_w, need_b = output_mask
    xp, (grad_out, x, weight) = _prepare(grad_out, x, weight)
    N, K, OH, OW = grad_out.shape
    _, cg, R, S = weight.shape
    kg = K // groups
    gy = grad_out.reshape(N, K, OH * OW)
    gx = backend.empty(x.shape, x.dtype, xp) if need_x else None
    gw = xp.zeros((K, cg * R * S), x.dtype) if need_w else None
    for part in _chunks(N, cg * R * S * OH * OW) if need_x or need_w else ():
        for g in range(groups):
            ks = slice(g * kg, (g + 1) * kg)
            if need_w:
                col = _columns(x[part], g * cg, cg, R, S, stride, padding, dilation, OH, OW, xp)
                gw[ks] += xp.matmul(gy[part, ks], col.transpose(0, 2, 1)).sum(axis=0)
            if need_x:
                gcol = xp.matmul(weight[ks].reshape(kg, -1).T, gy[part, ks])
                gx_part = gx[part]  # a view: col2im writes straight into gx
                _launch("col2im", gx_part.shape[0] * cg * x.shape[2] * x.shape[3], gcol,
                        gx_part, g * cg, R, S, *stride, *padding, *dilation, OH, OW)
    return (gx, None if gw is None else gw.reshape(weight.shape),
            _bias_grad(grad_out, xp) if need_b else None)
