"""numba.cuda kernels for activations (see gpuconv/kernels/numba_cuda/activation.py).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.

Pointwise kernels walk flat arrays in a grid-stride loop, thread = element. Softmax kernels
take (outer, D, inner) views, thread = row (o, i), looping over d. The dropout kernel gives
thread t the Philox4x64-10 block t, whose four words decide elements 4t .. 4t+3.

Constants are NumPy scalars of the kernels' types: numba would turn ``uint64 op int64`` into
float64, and a float literal would promote float32 arithmetic to float64.
"""
import math

import numpy as np

from ._numba import cuda

# Activation codes of the pointwise kernels (the launchers pass them).
RELU, SIGMOID, TANH = 1, 4, 5

# Philox4x64-10 (Salmon et al. 2011), as kernels/philox.cuh.
PHILOX_ROUNDS = 10
PHILOX_WORDS = 4
PHILOX_M0 = np.uint64(0xD2E7470EE14C6C93)
PHILOX_M1 = np.uint64(0xCA5A826395121157)
PHILOX_W0, PHILOX_W1 = 0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B
_LOW32 = np.uint64(0xFFFFFFFF)
_HALF = np.uint64(32)
_ZERO64 = np.uint64(0)
_UINT64_MOD = 2 ** 64


# --------------------------------------------------------------------------- pointwise

@cuda.jit(device=True)
def _activation(z, act, zero, one):
    if act == RELU:
        return zero if z <= zero else z  # a NaN stays NaN, as torch's relu
    if act == SIGMOID:
        e = math.exp(-abs(z))  # <= 1 on both branches: nothing overflows
        return one / (one + e) if z >= zero else e / (one + e)
    return math.tanh(z)


@cuda.jit(device=True)
def _activation_grad(g, v, act, zero, one):
    """g * act'(z), where v is z for relu and y = act(z) for sigmoid and tanh."""
    if act == RELU:
        return zero if v <= zero else g  # a NaN input passes g, as torch's relu backward
    if act == SIGMOID:
        return g * v * (one - v)
    return g * (one - v * v)


@cuda.jit
def activation_fwd(x, y, act):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = _activation(x[i], act, zero, one)


@cuda.jit
def activation_bwd(g, v, gx, act):
    zero, one = g.dtype.type(0), g.dtype.type(1)
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        gx[i] = _activation_grad(g[i], v[i], act, zero, one)


# --------------------------------------------------------------------------- softmax

@cuda.jit(device=True)
def _row_max_and_sum(x, o, i):
    """The maximum m of row (o, :, i) and the sum of exp(x - m) over it."""
    m = x[o, 0, i]
    for d in range(1, x.shape[1]):
        m = max(m, x[o, d, i])
    s = x.dtype.type(0)
    for d in range(x.shape[1]):
        s += math.exp(x[o, d, i] - m)
    return m, s


@cuda.jit
def softmax_fwd(x, y, log):
    outer, D, inner = x.shape
    for r in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o, i = r // inner, r % inner
        m, s = _row_max_and_sum(x, o, i)
        log_s = math.log(s)
        for d in range(D):
            shifted = x[o, d, i] - m
            y[o, d, i] = shifted - log_s if log else math.exp(shifted) / s


@cuda.jit
def softmax_bwd(g, y, gx, log):
    """gx = y (g - sum(g y)) for softmax, g - exp(y) sum(g) for log_softmax."""
    outer, D, inner = g.shape
    for r in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o, i = r // inner, r % inner
        acc = g.dtype.type(0)
        for d in range(D):
            acc += g[o, d, i] if log else g[o, d, i] * y[o, d, i]
        for d in range(D):
            if log:
                gx[o, d, i] = g[o, d, i] - math.exp(y[o, d, i]) * acc
            else:
                gx[o, d, i] = y[o, d, i] * (g[o, d, i] - acc)


# --------------------------------------------------------------------------- dropout

def philox_round_keys(key: int) -> np.ndarray:
    """The (PHILOX_ROUNDS, 2) uint64 round keys of Philox4x64-10 keyed by the 128-bit
    ``key = k0 + 2**64 * k1``: round r uses ``(k0 + r * W0, k1 + r * W1) mod 2**64``. They
    do not depend on the counter, so the host computes them once per launch, in exact
    integer arithmetic."""
    k0, k1 = key % _UINT64_MOD, key // _UINT64_MOD
    return np.array([((k0 + r * PHILOX_W0) % _UINT64_MOD, (k1 + r * PHILOX_W1) % _UINT64_MOD)
                     for r in range(PHILOX_ROUNDS)], dtype=np.uint64)


@cuda.jit(device=True)
def _mul_hi_lo(a, b):
    """The high and low 64-bit words of the 128-bit product a * b, from 32-bit halves
    (portable: no 128-bit type, no overflowing intermediate, also under the simulator)."""
    a_lo, a_hi = a & _LOW32, a >> _HALF
    b_lo, b_hi = b & _LOW32, b >> _HALF
    lo_lo, lo_hi, hi_lo = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo
    middle = (lo_lo >> _HALF) + (lo_hi & _LOW32) + hi_lo  # < 2**64
    high = a_hi * b_hi + (lo_hi >> _HALF) + (middle >> _HALF)
    return high, ((middle & _LOW32) << _HALF) | (lo_lo & _LOW32)


@cuda.jit(device=True)
def _philox4x64_10(c0, c1, c2, c3, round_keys):
    """Philox4x64-10 of counter (c0, c1, c2, c3); round r uses key round_keys[r, :]
    (from ``philox_round_keys``)."""
    for r in range(PHILOX_ROUNDS):
        hi0, lo0 = _mul_hi_lo(PHILOX_M0, c0)
        hi1, lo1 = _mul_hi_lo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ round_keys[r, 0], lo1, hi0 ^ c3 ^ round_keys[r, 1], lo0
    return c0, c1, c2, c3


@cuda.jit(device=True)
def _keep_or_drop(x, y, i, word, threshold, scale):
    if i < x.size:
        # Multiplied by the mask, as torch: a dropped inf or NaN gives NaN.
        y[i] = x[i] * (scale if word >= threshold else x.dtype.type(0))


@cuda.jit
def dropout_fwd(x, y, round_keys, threshold, scale):
    blocks = (x.size + PHILOX_WORDS - 1) // PHILOX_WORDS
    for t in range(cuda.grid(1), blocks, cuda.gridsize(1)):
        w0, w1, w2, w3 = _philox4x64_10(np.uint64(t + 1), _ZERO64, _ZERO64, _ZERO64,
                                        round_keys)
        first = t * PHILOX_WORDS
        _keep_or_drop(x, y, first, w0, threshold, scale)
        _keep_or_drop(x, y, first + 1, w1, threshold, scale)
        _keep_or_drop(x, y, first + 2, w2, threshold, scale)
        _keep_or_drop(x, y, first + 3, w3, threshold, scale)
