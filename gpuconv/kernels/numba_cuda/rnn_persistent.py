"""The persistent LSTM forward in numba.cuda (kernel: ``_rnn_persistent_kernels.py``): the
readable twin of ``cuda_persistent`` (gpuconv/kernels/cuda_c/rnn_persistent.py), forward only.
:func:`lstm` takes the registry's ``lstm`` arguments but is not registered: an impl of ``lstm``
must also give ``lstm_backward`` a reserve, and this one keeps none.

Per layer and direction: one GEMM on the array module for the input projection of every step
(the reverse direction runs on the time-reversed input and its output is reversed back), then
one cooperative launch for all T steps. On a GPU every block holds one tile of hidden units, as
many tiles as the device keeps resident with their rows of W_hh in at most 48 KB of shared
memory (numba's default limit; larger layers raise). Under numba's CUDA simulator (how CI runs
it) the cooperative grid is one block.
"""
from __future__ import annotations

import math

from ... import backend
from .._rnn_loop import _layer_weights
from . import optional, simulator_enabled

THREADS = 128
# numba launches with at most this much dynamic shared memory per block by default.
MAX_SHARED_BYTES = 48 * 1024


def kernel_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh, units: int) -> tuple:
    """(the kernel's arguments, its outputs (out, hs, cs)) for one layer and direction, x
    (T, B, I) in the order the direction reads it."""
    xp = backend.array_module(x)
    T, B, I = x.shape
    H = w_hh.shape[1]
    gi = xp.ascontiguousarray((x.reshape(T * B, I) @ w_ih.T).reshape(T, B, 4 * H))
    hs = backend.empty((T + 1, B, H), x.dtype, xp)
    cs = backend.empty((T + 1, B, H), x.dtype, xp)
    hs[0], cs[0] = h0, c0
    out = backend.empty((T, B, H), x.dtype, xp)
    # the registry gives both biases or neither
    (b_ih, use_bias), (b_hh, _) = optional(b_ih, x), optional(b_hh, x)
    args = (gi, xp.ascontiguousarray(w_hh), b_ih, b_hh, use_bias, hs, cs, out, units,
            x.dtype.type(1))
    return args, (out, hs, cs)


def _units(H: int) -> int:
    """Hidden units per tile: one tile per SM on a GPU; one tile in the simulator."""
    if simulator_enabled():
        return H
    from . import _numba

    return math.ceil(H / _numba.multiprocessor_count())


def _grid(kernel, args, H: int, units: int, itemsize: int) -> tuple[int, int]:
    """(blocks, shared bytes): one tile per block where that many blocks are resident (the
    simulator runs a cooperative grid of one block, which then owns every tile)."""
    tiles = math.ceil(H / units)
    tile_bytes = 4 * units * H * itemsize
    if simulator_enabled():
        return 1, _checked_shared(tiles * tile_bytes, H)
    from . import _numba

    # Blocks own ceil(tiles / blocks) tiles each, so the shared memory, and with it the
    # number of resident blocks, depends on the block count: shrink until they agree.
    blocks = tiles
    while True:
        shared = _checked_shared(math.ceil(tiles / blocks) * tile_bytes, H)
        resident = _numba.cooperative_grid_blocks(kernel, args, THREADS, shared)
        if resident >= blocks:
            return blocks, shared
        if resident < 1:
            raise ValueError(f"lstm (numba_cuda_persistent): no block with {shared} bytes of "
                             f"shared memory is resident; hidden size {H} is too large")
        blocks = resident


def _checked_shared(shared: int, H: int) -> int:
    if shared > MAX_SHARED_BYTES:
        raise ValueError(f"lstm (numba_cuda_persistent): each block's rows of W_hh take "
                         f"{shared} bytes of shared memory, more than {MAX_SHARED_BYTES}; "
                         f"hidden size {H} is too large for this readable kernel")
    return shared


def lstm_direction(x, h0, c0, w_ih, w_hh, b_ih, b_hh, units: int | None = None):
    """One layer, one direction, x (T, B, I) in the order it is read: (out (T, B, H), h_n,
    c_n). ``units``: hidden units per tile (tests split a small layer; default: _units)."""
    from . import _numba
    from ._rnn_persistent_kernels import lstm_fwd_persistent

    kernel = lstm_fwd_persistent(x.dtype)
    H = w_hh.shape[1]
    units = units or _units(H)
    args, (out, hs, cs) = kernel_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh, units)
    blocks, shared = _grid(kernel, args, H, units, x.dtype.itemsize)
    _numba.launch(kernel, blocks, THREADS, args, shared_mem=shared)
    return out, hs[-1], cs[-1]


def lstm(x, h0, c0, params, num_layers, bidirectional, masks, saved=None):
    """The registry's ``lstm`` contract (gpuconv/kernels/reference/rnn.py); ``saved`` is
    ignored."""
    xp = backend.array_module(x)
    D = 2 if bidirectional else 1
    layer_in, h_n, c_n = x, [], []
    for layer in range(num_layers):
        if layer > 0 and masks is not None:
            layer_in = layer_in * masks[layer - 1]
        outs = []
        for d, weights in enumerate(_layer_weights(params, layer, D)):
            k = layer * D + d
            seq = layer_in if d == 0 else xp.ascontiguousarray(layer_in[::-1])
            out, h, c = lstm_direction(seq, h0[k], c0[k], *weights)
            outs.append(out if d == 0 else out[::-1])
            h_n.append(h)
            c_n.append(c)
        layer_in = xp.concatenate(outs, axis=2)
    return layer_in, xp.stack(h_n), xp.stack(c_n)

