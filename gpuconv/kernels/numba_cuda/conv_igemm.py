"""conv2d as implicit GEMM in numba.cuda: the readable twin of ``cuda_igemm`` (registered as
``numba_cuda_igemm``). The same three GEMMs over NHWC/KRSC operands gathered on the fly
(kernels/conv_igemm.cu's header has the table), with shared-memory tiles and 4 x 4
register blocking per thread, in FMAs of the arrays' dtype instead of tensor cores: for reading, and as
a second opinion on the gathers. Registry contract as every conv impl.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register
from . import DTYPES, is_available, optional

FPROP, DGRAD, WGRAD = 0, 1, 2
# Matches _conv_igemm_kernels: 8 x 8 threads, 32 x 32 tiles.
THREADS = (8, 8)
TILE = 32


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _geo(x_shape, w_shape, stride, padding, dilation, groups):
    N, C, H, W = x_shape
    K, _, R, S = w_shape
    P = _out_size(H, R, stride[0], padding[0], dilation[0])
    Q = _out_size(W, S, stride[1], padding[1], dilation[1])
    return (N, H, W, C, K, R, S, P, Q, *stride, *padding, *dilation, groups, C // groups,
            K // groups)


def _run(pass_, a, b, out, bias, geo, M, NG, KG, ld, xp):
    from . import _conv_igemm_kernels as k, _numba

    groups = geo[15]
    # M tiles on x: gridDim.y and .z stop at 65,535 (M = N*P*Q passes 2 million rows).
    grid = (max(1, -(-M // TILE)), max(1, -(-NG // TILE)), groups)
    bias, has_bias = optional(bias, a)
    kernel = k.conv2d_igemm_f64 if a.dtype == np.float64 else k.conv2d_igemm_f32
    _numba.launch(kernel, grid, THREADS, (pass_, a.reshape(-1), b.reshape(-1), out.reshape(-1),
                                          bias, has_bias, xp.asarray(np.array(geo, np.int64)),
                                          M, NG, KG, ld))


def _nhwc(a, xp):
    return xp.ascontiguousarray(a.transpose(0, 2, 3, 1))


@register("conv2d", "numba_cuda_igemm", device="cuda", dtypes=DTYPES,
          available=is_available, priority=-30)
def conv2d_igemm(x, weight, bias, stride, padding, dilation, groups):
    xp = backend.array_module(x)
    geo = _geo(x.shape, weight.shape, stride, padding, dilation, groups)
    N, H, W, C, K, R, S, P, Q = geo[:9]
    y = backend.empty((N, P, Q, K), x.dtype, xp)
    if y.size:
        _run(FPROP, _nhwc(x, xp), _nhwc(weight, xp), y, bias, geo, N * P * Q, K // groups,
             R * S * (C // groups), K, xp)
    return xp.ascontiguousarray(y.transpose(0, 3, 1, 2))


@register("conv2d_backward", "numba_cuda_igemm", device="cuda", dtypes=DTYPES,
          available=is_available, priority=-30)
def conv2d_backward_igemm(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    need_x, need_w, need_b = output_mask
    xp = backend.array_module(x)
    geo = _geo(x.shape, weight.shape, stride, padding, dilation, groups)
    N, H, W, C, K, R, S, P, Q = geo[:9]
    cg, kg = C // groups, K // groups
    gy = _nhwc(grad_out, xp)
    gx = gw = gb = None
    if need_x:
        gx = backend.empty((N, H, W, C), x.dtype, xp)
        if gx.size:
            _run(DGRAD, gy, _nhwc(weight, xp), gx, None, geo, N * H * W, cg, R * S * kg, C, xp)
        gx = xp.ascontiguousarray(gx.transpose(0, 3, 1, 2))
    if need_w:
        gw = backend.empty((K, R, S, cg), x.dtype, xp)
        _run(WGRAD, gy, _nhwc(x, xp), gw, None, geo, kg, R * S * cg, N * P * Q, R * S * cg, xp)
        gw = xp.ascontiguousarray(gw.transpose(0, 3, 1, 2))
    if need_b:
        gb = grad_out.sum(axis=(0, 2, 3)).astype(x.dtype)
    return gx, gw, gb
