"""numba.cuda implicit-GEMM convolution: the readable twin of kernels/conv_igemm.cu (see
gpuconv/kernels/numba_cuda/conv_igemm.py), the same GEMMs and gathers without tensor cores.

One kernel serves the three passes; ``pass_`` (FPROP, DGRAD, WGRAD) picks the gathers. A
block of THREADS_M x THREADS_N threads computes a TILE_M x TILE_N tile of D = A * B for one
group (blockIdx.z): each step it stages a TILE_K slice of A and of B in shared memory, then
every thread accumulates its MICRO x MICRO outputs (rows ty + THREADS_M*i, columns
tx + THREADS_N*j) in registers from them. ``geo`` holds N, H, W, C, K, R, S, P, Q, sh, sw,
ph, pw, dh, dw, groups, C/groups, K/groups; operands and outputs are NHWC / KRSC, flat.
"""
import numpy as np

from ._numba import cuda

FPROP, DGRAD, WGRAD = 0, 1, 2
MICRO = 4
THREADS_M = THREADS_N = 8
TILE_M, TILE_N, TILE_K = THREADS_M * MICRO, THREADS_N * MICRO, 8


@cuda.jit(device=True)
def gather_x(x, pixel, rsc, geo, g):
    """x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, g*cg + c] for output pixel (n, p, q) and
    reduction index rsc = (r, s, c): fprop's A[pixel, rsc] and wgrad's B[pixel, rsc]."""
    N, H, W, C, K, R, S, P, Q, sh, sw, ph, pw, dh, dw = geo[0:15]
    cg = geo[16]
    if pixel >= N * P * Q or rsc >= R * S * cg:
        return x.dtype.type(0)
    q, p, n = pixel % Q, (pixel // Q) % P, pixel // (P * Q)
    c, s, r = rsc % cg, (rsc // cg) % S, rsc // (cg * S)
    h, w = p * sh - ph + r * dh, q * sw - pw + s * dw
    if h < 0 or h >= H or w < 0 or w >= W:
        return x.dtype.type(0)
    return x[((n * H + h) * W + w) * C + g * cg + c]


@cuda.jit(device=True)
def gather_a(pass_, a, m, kk, geo, g):
    """A[m, kk] of the pass (0 outside the tensor)."""
    N, H, W, C, K, R, S, P, Q, sh, sw, ph, pw, dh, dw = geo[0:15]
    cg, kg = geo[16], geo[17]
    if pass_ == FPROP:
        return gather_x(a, m, kk, geo, g)
    if pass_ == DGRAD:   # dy[n, p, q, g*kg + k] where h + ph - r*dh = p*sh, kk = (r, s, k)
        if m >= N * H * W or kk >= R * S * kg:
            return a.dtype.type(0)
        w, h, n = m % W, (m // W) % H, m // (H * W)
        k, s, r = kk % kg, (kk // kg) % S, kk // (kg * S)
        ht, wt = h + ph - r * dh, w + pw - s * dw
        if ht < 0 or wt < 0 or ht % sh != 0 or wt % sw != 0:
            return a.dtype.type(0)
        p, q = ht // sh, wt // sw
        if p >= P or q >= Q:
            return a.dtype.type(0)
        return a[((n * P + p) * Q + q) * K + g * kg + k]
    if m >= kg or kk >= N * P * Q:   # WGRAD: dy[npq, g*kg + m]
        return a.dtype.type(0)
    return a[kk * K + g * kg + m]


@cuda.jit(device=True)
def gather_b(pass_, b, kk, col, geo, g):
    """B[kk, col] of the pass (0 outside the tensor)."""
    N, H, W, C, K, R, S, P, Q, sh, sw, ph, pw, dh, dw = geo[0:15]
    cg, kg = geo[16], geo[17]
    if pass_ == FPROP:   # w[g*kg + col, kk]
        if col >= kg or kk >= R * S * cg:
            return b.dtype.type(0)
        return b[(g * kg + col) * (R * S * cg) + kk]
    if pass_ == DGRAD:   # w[g*kg + k, r, s, col], kk = (r, s, k)
        if col >= cg or kk >= R * S * kg:
            return b.dtype.type(0)
        k, rs = kk % kg, kk // kg
        return b[((g * kg + k) * R * S + rs) * cg + col]
    return gather_x(b, kk, col, geo, g)   # WGRAD: x at output pixel kk, col = (r, s, c)


def _kernel(dtype):
    """The kernel with shared tiles and accumulators of ``dtype`` (float32 or float64)."""

    @cuda.jit
    def conv2d_igemm(pass_, a, b, out, bias, has_bias, geo, M, NG, KG, ld):
        """out[m, g*NG + n] (row length ld; wgrad: out[g*M + m, n]) = sum_k A[m, k] B[k, n]
        (+ bias[g*NG + n]) for m < M, n < NG, over the reduction of length KG."""
        sa = cuda.shared.array((TILE_K, TILE_M), dtype)
        sb = cuda.shared.array((TILE_K, TILE_N), dtype)
        acc = cuda.local.array((MICRO, MICRO), dtype)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        m0, n0, g = cuda.blockIdx.x * TILE_M, cuda.blockIdx.y * TILE_N, cuda.blockIdx.z
        tid = ty * THREADS_N + tx
        for i in range(MICRO):
            for j in range(MICRO):
                acc[i, j] = out.dtype.type(0)
        for k0 in range(0, KG, TILE_K):
            # Stage the k-slice: TILE_K x TILE_M of A and TILE_K x TILE_N of B, one element per
            # thread and step (64 threads, 256 elements each).
            for e in range(tid, TILE_K * TILE_M, THREADS_M * THREADS_N):
                kk, mm = e // TILE_M, e % TILE_M
                sa[kk, mm] = gather_a(pass_, a, m0 + mm, k0 + kk, geo, g)
            for e in range(tid, TILE_K * TILE_N, THREADS_M * THREADS_N):
                kk, nn = e // TILE_N, e % TILE_N
                sb[kk, nn] = gather_b(pass_, b, k0 + kk, n0 + nn, geo, g)
            cuda.syncthreads()
            for kk in range(TILE_K):
                for i in range(MICRO):
                    av = sa[kk, ty + THREADS_M * i]
                    for j in range(MICRO):
                        acc[i, j] += av * sb[kk, tx + THREADS_N * j]
            cuda.syncthreads()
        for i in range(MICRO):
            m = m0 + ty + THREADS_M * i
            for j in range(MICRO):
                n = n0 + tx + THREADS_N * j
                if m < M and n < NG:
                    v = acc[i, j]
                    if pass_ == WGRAD:
                        out[(g * M + m) * ld + n] = v
                    else:
                        if has_bias:
                            v += bias[g * NG + n]
                        out[m * ld + g * NG + n] = v

    return conv2d_igemm


conv2d_igemm_f32 = _kernel(np.dtype(np.float32))
conv2d_igemm_f64 = _kernel(np.dtype(np.float64))
