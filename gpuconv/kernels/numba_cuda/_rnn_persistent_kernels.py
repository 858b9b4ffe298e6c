"""The persistent LSTM forward in numba.cuda: the readable twin of ``lstm_fwd_persistent`` in
kernels/rnn_persistent.cu (launcher: gpuconv/kernels/numba_cuda/rnn_persistent.py).

One cooperative launch runs all T steps of one layer and one direction. The hidden units are
cut into tiles of ``units`` consecutive units; block k owns tiles k, k + gridDim, k + 2*gridDim,
... (on a GPU the launcher gives each block one tile; numba's CUDA simulator runs a cooperative
grid of one block, which then owns every tile). A block copies the rows of W_hh of its tiles'
units (4 gate rows each) into shared memory once. Each step, thread = one (batch row b, unit j)
pair of the block's tiles: it sums the 4 gate pre-activations over h_prev (read through L2,
since other blocks wrote it this launch), applies the gate math, writes h, c and the output,
and the grid meets at ``grid.sync()`` before the next step reads h.

Kept apart from the launcher because numba.cuda must be imported only when a kernel is
launched; one kernel per dtype (the shared memory's element type and the typed constants),
each a module global so that tests/cuda_emu/numba_launches.py finds it.
"""
import math

import numpy as np

from . import simulator_enabled
from ._numba import cuda

if simulator_enabled():
    # The simulator has no cache-hint loads; its threads share one memory.
    @cuda.jit(device=True)
    def _load_l2(array, index):
        return array[index]
else:
    _load_l2 = cuda.ldcg


@cuda.jit(device=True)
def _sigmoid(x, one):
    # Split by sign so that exp never overflows (math.exp raises on the simulator); the zero
    # is of x's type (an int 0 would make the comparison float64).
    if x >= one - one:
        return one / (one + math.exp(-x))
    e = math.exp(x)
    return e / (one + e)


def lstm_fwd_persistent(dtype):
    """The kernel for arrays of ``dtype`` (float32 or float64)::

        kernel[blocks, threads, 0, shared_bytes](gi, w_hh, b_ih, b_hh, use_bias, hs, cs, out,
                                                 units, one)

    gi (T, B, 4H): x W_ih^T of every step; w_hh (4H, H); b_ih, b_hh (4H,), read when use_bias;
    hs, cs (T+1, B, H): slot 0 holds h0 and c0, slot t+1 the states after step t; out (T, B, H);
    one: 1 in ``dtype`` (so that no constant promotes the arithmetic to float64). Shared
    memory: owned tiles x 4 x units x H elements.
    """
    return lstm_fwd_persistent_f64 if np.dtype(dtype) == np.float64 else lstm_fwd_persistent_f32


def _kernel(dtype):
    """lstm_fwd_persistent with shared memory of ``dtype``."""
    element = np.dtype(dtype)

    @cuda.jit
    def kernel(gi, w_hh, b_ih, b_hh, use_bias, hs, cs, out, units, one):
        T, B, G = gi.shape
        H = G // 4
        tiles = (H + units - 1) // units
        block, blocks = cuda.blockIdx.x, cuda.gridDim.x
        owned = (tiles - block + blocks - 1) // blocks
        zero = one - one
        # w[((m*4 + q)*units + u)*H + k] = W_hh[q*H + j, k], j the unit u of owned tile m
        w = cuda.shared.array(0, element)
        for e in range(cuda.threadIdx.x, owned * 4 * units * H, cuda.blockDim.x):
            k, r = e % H, e // H
            u, q, m = r % units, (r // units) % 4, r // (4 * units)
            j = (block + m * blocks) * units + u
            w[e] = w_hh[q * H + j, k] if j < H else zero
        cuda.syncthreads()
        grid = cuda.cg.this_grid()
        gate = units * H  # distance between a unit's gate rows in w
        for t in range(T):
            for e in range(cuda.threadIdx.x, owned * units * B, cuda.blockDim.x):
                b, r = e % B, e // B
                u, m = r % units, r // units
                j = (block + m * blocks) * units + u
                if j < H:
                    pre_i, pre_f = gi[t, b, j], gi[t, b, H + j]
                    pre_g, pre_o = gi[t, b, 2 * H + j], gi[t, b, 3 * H + j]
                    if use_bias:
                        pre_i += b_ih[j] + b_hh[j]
                        pre_f += b_ih[H + j] + b_hh[H + j]
                        pre_g += b_ih[2 * H + j] + b_hh[2 * H + j]
                        pre_o += b_ih[3 * H + j] + b_hh[3 * H + j]
                    row = (m * 4 * units + u) * H
                    for k in range(H):
                        h = _load_l2(hs, (t, b, k))
                        pre_i += w[row + k] * h
                        pre_f += w[row + gate + k] * h
                        pre_g += w[row + 2 * gate + k] * h
                        pre_o += w[row + 3 * gate + k] * h
                    c = _sigmoid(pre_f, one) * cs[t, b, j] + _sigmoid(pre_i, one) * math.tanh(pre_g)
                    h_new = _sigmoid(pre_o, one) * math.tanh(c)
                    cs[t + 1, b, j] = c
                    hs[t + 1, b, j] = h_new
                    out[t, b, j] = h_new
            grid.sync()

    return kernel


lstm_fwd_persistent_f32 = _kernel(np.float32)
lstm_fwd_persistent_f64 = _kernel(np.float64)
