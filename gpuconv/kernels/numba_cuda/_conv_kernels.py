"""numba.cuda kernels for conv2d (see gpuconv/kernels/numba_cuda/conv.py for the mapping).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.
Accumulators start at a zero of the output's dtype, so float32 sums stay float32.
"""
from ._numba import cuda


@cuda.jit
def conv2d_fwd_direct(x, w, b, y, sh, sw, ph, pw, dh, dw, groups, has_bias):
    i = cuda.grid(1)
    N, K, OH, OW = y.shape
    if i >= N * K * OH * OW:
        return
    ow = i % OW
    oh = (i // OW) % OH
    k = (i // (OW * OH)) % K
    n = i // (OW * OH * K)
    cg = w.shape[1]
    c0 = (k // (K // groups)) * cg
    acc = b[k] if has_bias else y.dtype.type(0)
    for c in range(cg):
        for r in range(w.shape[2]):
            ih = oh * sh - ph + r * dh
            if ih < 0 or ih >= x.shape[2]:
                continue
            for s in range(w.shape[3]):
                iw = ow * sw - pw + s * dw
                if 0 <= iw < x.shape[3]:
                    acc += x[n, c0 + c, ih, iw] * w[k, c, r, s]
    y[n, k, oh, ow] = acc


@cuda.jit
def conv2d_bwd_input_direct(gy, w, gx, sh, sw, ph, pw, dh, dw, groups):
    i = cuda.grid(1)
    N, C, H, W = gx.shape
    if i >= N * C * H * W:
        return
    iw = i % W
    ih = (i // W) % H
    c = (i // (W * H)) % C
    n = i // (W * H * C)
    K, cg = w.shape[0], w.shape[1]
    kg = K // groups
    g = c // cg
    acc = gx.dtype.type(0)
    for kk in range(kg):
        k = g * kg + kk
        for r in range(w.shape[2]):
            th = ih + ph - r * dh
            if th < 0 or th % sh != 0 or th // sh >= gy.shape[2]:
                continue
            for s in range(w.shape[3]):
                tw = iw + pw - s * dw
                if tw >= 0 and tw % sw == 0 and tw // sw < gy.shape[3]:
                    acc += gy[n, k, th // sh, tw // sw] * w[k, c - g * cg, r, s]
    gx[n, c, ih, iw] = acc


@cuda.jit
def conv2d_bwd_weight_direct(gy, x, gw, sh, sw, ph, pw, dh, dw, groups):
    i = cuda.grid(1)
    K, cg, R, S = gw.shape
    if i >= K * cg * R * S:
        return
    s = i % S
    r = (i // S) % R
    c = (i // (S * R)) % cg
    k = i // (S * R * cg)
    cx = (k // (K // groups)) * cg + c
    acc = gw.dtype.type(0)
    for n in range(gy.shape[0]):
        for oh in range(gy.shape[2]):
            ih = oh * sh - ph + r * dh
            if ih < 0 or ih >= x.shape[2]:
                continue
            for ow in range(gy.shape[3]):
                iw = ow * sw - pw + s * dw
                if 0 <= iw < x.shape[3]:
                    acc += gy[n, k, oh, ow] * x[n, cx, ih, iw]
    gw[k, c, r, s] = acc


@cuda.jit
def conv2d_bwd_bias(gy, gb):
    k = cuda.grid(1)
    if k >= gb.shape[0]:
        return
    acc = gb.dtype.type(0)
    for n in range(gy.shape[0]):
        for oh in range(gy.shape[2]):
            for ow in range(gy.shape[3]):
                acc += gy[n, k, oh, ow]
    gb[k] = acc


@cuda.jit
def im2col(x, col, c0, R, S, sh, sw, ph, pw, dh, dw, OH, OW):
    # col: (N, cg*R*S, OH*OW) for channels c0 .. c0+cg of x
    i = cuda.grid(1)
    N, rows, L = col.shape
    if i >= N * rows * L:
        return
    l = i % L
    row = (i // L) % rows
    n = i // (L * rows)
    s = row % S
    r = (row // S) % R
    c = row // (S * R)
    ih = (l // OW) * sh - ph + r * dh
    iw = (l % OW) * sw - pw + s * dw
    v = col.dtype.type(0)
    if 0 <= ih < x.shape[2] and 0 <= iw < x.shape[3]:
        v = x[n, c0 + c, ih, iw]
    col[n, row, l] = v


@cuda.jit
def col2im(col, gx, c0, R, S, sh, sw, ph, pw, dh, dw, OH, OW):
    # gathers, for each input element of channels c0 .. c0+cg, every column entry it fed
    i = cuda.grid(1)
    N = gx.shape[0]
    cg = col.shape[1] // (R * S)
    H, W = gx.shape[2], gx.shape[3]
    if i >= N * cg * H * W:
        return
    iw = i % W
    ih = (i // W) % H
    c = (i // (W * H)) % cg
    n = i // (W * H * cg)
    acc = gx.dtype.type(0)
    for r in range(R):
        th = ih + ph - r * dh
        if th < 0 or th % sh != 0 or th // sh >= OH:
            continue
        for s in range(S):
            tw = iw + pw - s * dw
            if tw >= 0 and tw % sw == 0 and tw // sw < OW:
                acc += col[n, (c * R + r) * S + s, (th // sh) * OW + tw // sw]
    gx[n, c0 + c, ih, iw] = acc
