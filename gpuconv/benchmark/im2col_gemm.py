"""The "CuPy im2col + cuBLAS" reference of the conv benchmark: convolution written with
array-library calls only (strided slices, ``pad``, ``matmul``), so that on the GPU it is
CuPy's own im2col with cuBLAS GEMMs and on the CPU NumPy's with BLAS, sharing no code with
gpuconv's kernels.

The column matrix of group g is ``cols[(c, r, s), (n, oh, ow)] = x_pad[n, c, oh*sh + r*dh,
ow*sw + s*dw]``, built by one strided slice per kernel offset (r, s); then
``y_g = W_g cols``, ``grad W_g = gy_g cols^T`` and ``grad cols = W_g^T gy_g``, scattered back
by the same slices. Unlike gpuconv's impls it makes the whole column matrix at once.
"""
from __future__ import annotations

from .. import backend


def _offsets(R: int, S: int, stride, dilation, out_hw):
    """(r, s, rows, cols): the slices of the padded input that kernel offset (r, s) reads."""
    (sh, sw), (dh, dw), (OH, OW) = stride, dilation, out_hw
    for r in range(R):
        for s in range(S):
            yield (r, s, slice(r * dh, r * dh + sh * (OH - 1) + 1, sh),
                   slice(s * dw, s * dw + sw * (OW - 1) + 1, sw))


def _columns(x_pad, R, S, stride, dilation, out_hw):
    """(C*R*S, N*OH*OW) for every channel of ``x_pad`` (N, C, Hp, Wp)."""
    xp = backend.array_module(x_pad)
    N, C = x_pad.shape[:2]
    cols = xp.empty((C, R, S, N) + tuple(out_hw), x_pad.dtype)
    for r, s, rows, cs in _offsets(R, S, stride, dilation, out_hw):
        cols[:, r, s] = x_pad[:, :, rows, cs].transpose(1, 0, 2, 3)
    return cols.reshape(C * R * S, -1)


def _pad(x, padding):
    xp = backend.array_module(x)
    ph, pw = padding
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _groups(K: int, C: int, groups: int):
    kg, cg = K // groups, C // groups
    return [(slice(g * kg, (g + 1) * kg), slice(g * cg, (g + 1) * cg)) for g in range(groups)]


def _out_hw(x_shape, w_shape, stride, padding, dilation):
    return tuple((x_shape[2 + i] + 2 * padding[i] - dilation[i] * (w_shape[2 + i] - 1) - 1)
                 // stride[i] + 1 for i in range(2))


def conv2d(x, w, b, stride, padding, dilation, groups):
    """y (N, K, OH, OW) of x (N, C, H, W) and w (K, C/groups, R, S); b (K,) or None."""
    xp = backend.array_module(x)
    N, (K, _, R, S) = x.shape[0], w.shape
    out_hw = _out_hw(x.shape, w.shape, stride, padding, dilation)
    x_pad = _pad(x, padding)
    y = xp.empty((K, N) + out_hw, x.dtype)
    for ks, cs in _groups(K, x.shape[1], groups):
        cols = _columns(x_pad[:, cs], R, S, stride, dilation, out_hw)
        y[ks] = xp.matmul(w[ks].reshape(ks.stop - ks.start, -1), cols).reshape(-1, N, *out_hw)
    y = y.transpose(1, 0, 2, 3)
    return y if b is None else y + b.reshape(1, K, 1, 1)


def _grad_out_rows(gy, ks):
    """grad_output of output channels ``ks`` as (K_g, N*OH*OW)."""
    return gy[:, ks].transpose(1, 0, 2, 3).reshape(ks.stop - ks.start, -1)


def conv2d_grad_input(gy, x, w, stride, padding, dilation, groups):
    """grad_x (N, C, H, W) of conv2d given gy (N, K, OH, OW)."""
    xp = backend.array_module(gy)
    (N, C, H, W), (K, cg, R, S) = x.shape, w.shape
    out_hw = gy.shape[2:]
    gx_pad = xp.zeros((N, C, H + 2 * padding[0], W + 2 * padding[1]), gy.dtype)
    for ks, cs in _groups(K, C, groups):
        gcols = xp.matmul(w[ks].reshape(ks.stop - ks.start, -1).T, _grad_out_rows(gy, ks))
        gcols = gcols.reshape((cg, R, S, N) + tuple(out_hw))
        for r, s, rows, cols in _offsets(R, S, stride, dilation, out_hw):
            gx_pad[:, cs, rows, cols] += gcols[:, r, s].transpose(1, 0, 2, 3)
    return gx_pad[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W]


def conv2d_grad_weight(gy, x, w, stride, padding, dilation, groups):
    """(grad_w (K, C/groups, R, S), grad_b (K,)) of conv2d given gy (N, K, OH, OW)."""
    xp = backend.array_module(gy)
    K, _, R, S = w.shape
    x_pad = _pad(x, padding)
    gw = xp.empty(w.shape, gy.dtype)
    for ks, cs in _groups(K, x.shape[1], groups):
        cols = _columns(x_pad[:, cs], R, S, stride, dilation, gy.shape[2:])
        gw[ks] = xp.matmul(_grad_out_rows(gy, ks), cols.T).reshape(-1, *w.shape[1:])
    return gw, gy.sum(axis=(0, 2, 3))
