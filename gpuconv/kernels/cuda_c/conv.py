"""Launchers for ``kernels/conv.cu``: conv2d (direct and im2col + cuBLAS) and
conv_transpose2d (the grad-input of conv2d), forward and backward, float32/float64.

Registry contract as every conv impl (see ``gpuconv/kernels/reference/conv.py``). The
default on a GPU is the direct kernel for depthwise convolution and for small reductions
(few input channels times a small window), im2col + GEMM otherwise.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register
from . import DTYPES, NULL, gpu_op, run_blocks, run_threads

FAMILY = "conv"
# The im2col column buffer's size bound (elements): 64 Mi elements, 256 MiB of float32.
COL_BUFFER_ELEMENTS = 1 << 26
# Below this many multiply-adds per output (C/groups * R * S) the direct kernel wins.
DIRECT_MAX_REDUCTION = 64


def _i32(*values) -> tuple:
    return tuple(np.int32(v) for v in values)


def _run(name: str, dtype, total: int, args: tuple) -> None:
    run_threads(FAMILY, name, dtype, total, args)


def _run_reduce(name: str, dtype, outputs: int, args: tuple) -> None:
    run_blocks(FAMILY, name, dtype, outputs, args)


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _shape_args(x_shape, w_shape, out_hw, stride, padding, dilation, groups) -> tuple:
    """The (N, C, H, W, K, R, S, OH, OW, sh, sw, ph, pw, dh, dw, groups) block of the kernels,
    for a convolution whose input is ``x_shape`` and whose output plane is ``out_hw``."""
    N, C, H, W = x_shape
    K, _, R, S = w_shape
    return _i32(N, C, H, W, K, R, S, *out_hw, *stride, *padding, *dilation, groups)


def _contiguous(*arrays):
    cp = backend.cupy_or_none()
    return tuple(None if a is None else cp.ascontiguousarray(a) for a in arrays)


def _fwd_direct(x, w, bias, out_hw, stride, padding, dilation, groups):
    cp = backend.cupy_or_none()
    y = backend.empty((x.shape[0], w.shape[0], *out_hw), x.dtype, cp)
    _run("conv2d_fwd_direct", x.dtype, y.size,
         (x, w, NULL if bias is None else bias, y,
          *_shape_args(x.shape, w.shape, out_hw, stride, padding, dilation, groups)))
    return y


def _bwd_input_direct(gy, w, x_shape, stride, padding, dilation, groups):
    cp = backend.cupy_or_none()
    gx = backend.empty(x_shape, gy.dtype, cp)
    _run("conv2d_bwd_input_direct", gy.dtype, gx.size,
         (gy, w, gx, *_shape_args(x_shape, w.shape, gy.shape[2:], stride, padding, dilation,
                                  groups)))
    return gx


def _bwd_weight_direct(gy, x, w_shape, stride, padding, dilation, groups):
    cp = backend.cupy_or_none()
    gw = backend.empty(w_shape, x.dtype, cp)
    _run_reduce("conv2d_bwd_weight_direct", x.dtype, gw.size,
                (gy, x, gw, *_shape_args(x.shape, w_shape, gy.shape[2:], stride, padding,
                                         dilation, groups)))
    return gw


def _bias_grad(gy):
    cp = backend.cupy_or_none()
    N, K, OH, OW = gy.shape
    gb = backend.empty((K,), gy.dtype, cp)
    _run_reduce("conv2d_bwd_bias", gy.dtype, K, (gy, gb, *_i32(N, K), np.int64(OH * OW)))
    return gb


def _prefer_direct(x, weight, bias, stride, padding, dilation, groups) -> int:
    _, cg, R, S = weight.shape
    depthwise = groups > 1 and cg == 1
    return 20 if depthwise or cg * R * S <= DIRECT_MAX_REDUCTION else 5


@register("conv2d", "cuda_direct", device="cuda", dtypes=DTYPES, priority=_prefer_direct)
@gpu_op("conv2d")
def conv2d_direct(x, weight, bias, stride, padding, dilation, groups):
    x, weight, bias = _contiguous(x, weight, bias)
    out_hw = (_out_size(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0]),
              _out_size(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1]))
    return _fwd_direct(x, weight, bias, out_hw, stride, padding, dilation, groups)


@register("conv2d_backward", "cuda_direct", device="cuda", dtypes=DTYPES,
          priority=lambda gy, x, w, *a: _prefer_direct(x, w, None, *a[1:]))
@gpu_op("conv2d_backward")
def conv2d_backward_direct(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    need_x, need_w, need_b = output_mask
    grad_out, x, weight = _contiguous(grad_out, x, weight)
    gx = (_bwd_input_direct(grad_out, weight, x.shape, stride, padding, dilation, groups)
          if need_x else None)
    gw = (_bwd_weight_direct(grad_out, x, weight.shape, stride, padding, dilation, groups)
          if need_w else None)
    return gx, gw, _bias_grad(grad_out) if need_b else None


# ----------------------------------------------------------------------------- im2col + GEMM

def _chunks(N: int, rows: int, plane: int):
    """Image ranges whose column matrix (rows x images*plane) fits the buffer bound."""
    step = max(1, COL_BUFFER_ELEMENTS // max(1, rows * plane))
    for n0 in range(0, N, step):
        yield n0, min(N, n0 + step) - n0


def _im2col(x, n0, nc, c0, cg, R, S, out_hw, stride, padding, dilation):
    cp = backend.cupy_or_none()
    N, C, H, W = x.shape
    col = backend.empty((cg * R * S, nc * out_hw[0] * out_hw[1]), x.dtype, cp)
    _run("im2col", x.dtype, col.size,
         (x, col, *_i32(n0, nc, C, H, W, c0, cg, R, S, *out_hw, *stride, *padding, *dilation)))
    return col


def _col2im(col, gx, n0, nc, c0, cg, R, S, out_hw, stride, padding, dilation):
    N, C, H, W = gx.shape
    _run("col2im", gx.dtype, nc * cg * H * W,
         (col, gx, *_i32(n0, nc, C, H, W, c0, cg, R, S, *out_hw, *stride, *padding, *dilation)))


@register("conv2d", "cuda_im2col", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("conv2d")
def conv2d_im2col(x, weight, bias, stride, padding, dilation, groups):
    cp = backend.cupy_or_none()
    x, weight = _contiguous(x, weight)
    N, C, H, W = x.shape
    K, cg, R, S = weight.shape
    kg = K // groups
    out_hw = (_out_size(H, R, stride[0], padding[0], dilation[0]),
              _out_size(W, S, stride[1], padding[1], dilation[1]))
    plane = out_hw[0] * out_hw[1]
    y = backend.empty((N, K, plane), x.dtype, cp)
    for n0, nc in _chunks(N, cg * R * S, plane):
        for g in range(groups):
            col = _im2col(x, n0, nc, g * cg, cg, R, S, out_hw, stride, padding, dilation)
            yg = cp.matmul(weight[g * kg:(g + 1) * kg].reshape(kg, -1), col)  # (kg, nc*plane)
            y[n0:n0 + nc, g * kg:(g + 1) * kg] = yg.reshape(kg, nc, plane).transpose(1, 0, 2)
    if bias is not None:
        y += bias.reshape(1, K, 1)
    return y.reshape(N, K, *out_hw)


@register("conv2d_backward", "cuda_im2col", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("conv2d_backward")
def conv2d_backward_im2col(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    cp = backend.cupy_or_none()
    need_x, need_w, need_b = output_mask
    grad_out, x, weight = _contiguous(grad_out, x, weight)
    N, K, OH, OW = grad_out.shape
    _, cg, R, S = weight.shape
    kg = K // groups
    plane = OH * OW
    gy = grad_out.reshape(N, K, plane)
    gx = backend.empty(x.shape, x.dtype, cp) if need_x else None
    gw = cp.zeros((K, cg * R * S), x.dtype) if need_w else None
    for n0, nc in _chunks(N, cg * R * S, plane) if need_x or need_w else ():
        for g in range(groups):
            ks = slice(g * kg, (g + 1) * kg)
            gyg = gy[n0:n0 + nc, ks].transpose(1, 0, 2).reshape(kg, nc * plane)
            if need_w:
                col = _im2col(x, n0, nc, g * cg, cg, R, S, (OH, OW), stride, padding, dilation)
                gw[ks] += cp.matmul(gyg, col.T)
            if need_x:
                gcol = cp.matmul(weight[ks].reshape(kg, -1).T, gyg)
                _col2im(gcol, gx, n0, nc, g * cg, cg, R, S, (OH, OW), stride, padding,
                        dilation)
    return (gx, None if gw is None else gw.reshape(weight.shape),
            _bias_grad(grad_out) if need_b else None)


# --------------------------------------------------------------------------- conv_transpose2d

def _transpose_out_hw(x, weight, stride, padding, output_padding, dilation):
    return tuple((x.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                 + dilation[i] * (weight.shape[2 + i] - 1) + output_padding[i] + 1
                 for i in range(2))


@register("conv_transpose2d", "cuda_direct", device="cuda", dtypes=DTYPES)
@gpu_op("conv_transpose2d")
def conv_transpose2d_direct(x, weight, bias, stride, padding, output_padding, dilation, groups):
    """The grad-input of a conv2d whose weight is ``weight`` and whose output grad is ``x``."""
    x, weight, bias = _contiguous(x, weight, bias)
    out_hw = _transpose_out_hw(x, weight, stride, padding, output_padding, dilation)
    out_shape = (x.shape[0], weight.shape[1] * groups, *out_hw)
    y = _bwd_input_direct(x, weight, out_shape, stride, padding, dilation, groups)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y


@register("conv_transpose2d_backward", "cuda_direct", device="cuda", dtypes=DTYPES)
@gpu_op("conv_transpose2d_backward")
def conv_transpose2d_backward_direct(grad_out, x, weight, has_bias, stride, padding,
                                     output_padding, dilation, groups):
    grad_out, x, weight = _contiguous(grad_out, x, weight)
    gx = _fwd_direct(grad_out, weight, None, x.shape[2:], stride, padding, dilation, groups)
    gw = _bwd_weight_direct(x, grad_out, weight.shape, stride, padding, dilation, groups)
    return gx, gw, _bias_grad(grad_out) if has_bias else None
