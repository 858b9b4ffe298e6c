"""Recurrent cells and sequences on the CPU with NumPy + BLAS.

The argument contract is in :mod:`gpuconv.kernels.reference.rnn`. The step loop and its
GEMMs are the ones every fast rnn impl shares (:mod:`gpuconv.kernels._rnn_loop`): one GEMM
per layer projects every step's input for both directions, one GEMM per step
``h @ W_hh^T``, and backward gets the input and ``W_ih`` gradients from one GEMM each over
all steps. This module gives the loop NumPy versions of the fused GPU pointwise kernels:
they write the new states, the saved arrays and the gate gradients into the arrays the loop
hands them (``out=``), so a step allocates only small temporaries. The sequence ops run on
ranges of the batch in parallel (below).
"""
from __future__ import annotations

import numpy as np

from ... import threads
from . import register
from .._rnn_loop import Cell, impls


def _sigmoid_(x):
    """Sigmoid in place."""
    np.negative(x, out=x)
    # For very negative x, exp(-x) overflows to inf and 1 / (1 + inf) is the exact limit, 0.
    with np.errstate(over="ignore"):
        np.exp(x, out=x)
    x += 1
    np.reciprocal(x, out=x)


def _part(b, cols):
    return None if b is None else b[cols]


def _bias_sum(b_ih, b_hh):
    """b_ih + b_hh where either may be None (None when both are): small vectors, added once
    so that the (B, G*H) pre-activations take one bias pass."""
    if b_ih is None or b_hh is None:
        return b_hh if b_ih is None else b_ih
    return b_ih + b_hh


def _sum_into(out, first, *rest):
    """out = first + the arrays of ``rest`` that are not None."""
    rest = [a for a in rest if a is not None]
    if not rest:
        np.copyto(out, first)
        return
    np.add(first, rest[0], out=out)
    for a in rest[1:]:
        out += a


def _blocks(a, n):
    """The n gate blocks of a (B, n*H) array, as views."""
    H = a.shape[1] // n
    return [a[:, k * H:(k + 1) * H] for k in range(n)]


def _lstm_forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
    """i, f, o = sigmoid, g = tanh of gi + gh + biases; c = f c_prev + i g, h = o tanh(c).
    Saves the activated gates (B, 4H) and tanh(c)."""
    (_, c_prev), (h, c), (gates, tanh_c) = prev, nxt, saved
    _sum_into(gates, gi, gh, _bias_sum(b_ih, b_hh))
    i, f, g, o = _blocks(gates, 4)
    # One sigmoid over the whole contiguous array beats three over its column blocks (NumPy's
    # fast loops need contiguous arrays), so g's tanh waits in tanh_c meanwhile.
    np.tanh(g, out=tanh_c)
    _sigmoid_(gates)
    np.copyto(g, tanh_c)
    np.multiply(f, c_prev, out=c)
    c += i * tanh_c
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)


def _lstm_backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
    """dh = grad_h + grad_out, dc = grad_c + dh o (1 - tanh(c)^2); the gate gradients go
    through each activation's derivative; grad c_prev = dc f."""
    (grad_h, grad_c), (_, c_prev), (gates, tanh_c) = grad_nxt, prev, saved
    i, f, g, o = _blocks(gates, 4)
    d_i, d_f, d_g, d_o = _blocks(grad_gi, 4)
    dh = grad_h + grad_out
    dc = 1 - tanh_c * tanh_c
    dc *= o
    dc *= dh
    dc += grad_c
    np.multiply(dc * g, i * (1 - i), out=d_i)
    np.multiply(dc * c_prev, f * (1 - f), out=d_f)
    np.multiply(dc * i, 1 - g * g, out=d_g)
    np.multiply(dh * tanh_c, o * (1 - o), out=d_o)
    return None, [dc * f]


def _gru_forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
    """r, z = sigmoid(gi + gh + biases), n = tanh(gi_n + b_in + r (gh_n + b_hn)),
    h = n + z (h_prev - n)."""
    (h_prev,), (h,), (rz, n, gh_n) = prev, nxt, saved
    H = h.shape[1]
    rz_cols, n_cols = slice(0, 2 * H), slice(2 * H, None)
    _sum_into(rz, gi[:, rz_cols], gh[:, rz_cols],
              _bias_sum(_part(b_ih, rz_cols), _part(b_hh, rz_cols)))
    _sigmoid_(rz)
    _sum_into(gh_n, gh[:, n_cols], _part(b_hh, n_cols))
    np.multiply(rz[:, :H], gh_n, out=n)
    _sum_into(n, n, gi[:, n_cols], _part(b_ih, n_cols))
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)
    h *= rz[:, H:]
    h += n


def _gru_backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
    """dn = dh (1 - z) (1 - n^2), dr = dn (gh_n + b_hn) r (1 - r), dz = dh (h_prev - n)
    z (1 - z); grad gi = [dr, dz, dn], grad gh = [dr, dz, dn r]; h_prev also gets dh z
    directly. The r, z part is computed as one contiguous (B, 2H) block."""
    (grad_h,), (h_prev,), (rz, n, gh_n) = grad_nxt, prev, saved
    H = n.shape[1]
    dh = grad_h + grad_out
    d_n = 1 - n * n
    d_n *= dh
    d_n *= 1 - rz[:, H:]
    d_rz = 1 - rz
    d_rz *= rz
    d_rz[:, :H] *= d_n * gh_n
    d_rz[:, H:] *= dh * (h_prev - n)
    grad_gi[:, :2 * H] = d_rz
    grad_gi[:, 2 * H:] = d_n
    grad_gh[:, :2 * H] = d_rz
    np.multiply(d_n, rz[:, :H], out=grad_gh[:, 2 * H:])
    dh *= rz[:, H:]
    return dh, []


def _simple_cell(nonlinearity: str) -> Cell:
    def forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
        (h,) = nxt
        _sum_into(h, gi, gh, _bias_sum(b_ih, b_hh))
        if nonlinearity == "tanh":
            np.tanh(h, out=h)
        else:
            np.maximum(h, 0, out=h)

    def backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
        (grad_h,), (h,) = grad_nxt, nxt
        np.add(grad_h, grad_out, out=grad_gi)
        if nonlinearity == "tanh":
            grad_gi *= 1 - h * h
        else:  # PyTorch's select on the result: 0 where h <= 0 (an inf gradient too)
            np.copyto(grad_gi, 0, where=h <= 0)
        return None, []
    return Cell(1, (), forward, backward)


CELLS = {
    "lstm": Cell(4, (4, 1), _lstm_forward, _lstm_backward),
    # Saves [r, z], n and W_hn h + b_hn as separate contiguous arrays rather than column
    # blocks of one, for NumPy's fast loops.
    "gru": Cell(3, (2, 1, 1), _gru_forward, _gru_backward, separate_hidden_grad=True),
    "rnn_tanh": _simple_cell("tanh"),
    "rnn_relu": _simple_cell("relu"),
}

# ----------------------------------------------------------------------------- batch split
# The sequences of a batch are independent, so a sequence op runs as one task per range of
# the batch on gpuconv's thread pool, each task the whole step loop on its rows (no
# synchronisation per step); the weight gradients of the ranges are added in range order.
# A range below this many rows would leave its GEMMs too few rows to run at full speed.
_MIN_BATCH_PER_TASK = 16
# Arguments before ``params`` that carry the batch on axis 1, per sequence op.
_BATCHED_ARGS = {"lstm": 3, "gru": 2, "rnn": 2,
                 "lstm_backward": 6, "gru_backward": 4, "rnn_backward": 4}


class _BatchTape:
    """What a forward split over the batch keeps for its backward: the ranges and the tape
    (``saved`` list) of each."""

    def __init__(self, ranges: list):
        self.ranges = ranges
        self.parts: list = [[] for _ in ranges]


def _rows(a, r: range):
    return None if a is None else np.ascontiguousarray(a[:, r.start:r.stop])


def _split_args(args: tuple, batched: int, r: range, saved) -> tuple:
    """``args`` restricted to the batch rows ``r`` (the inter-layer masks too), with
    ``saved`` as the last argument."""
    head = [_rows(a, r) for a in args[:batched]]
    rest = list(args[batched:-1])
    masks = rest[3]
    rest[3] = None if masks is None else [_rows(m, r) for m in masks]
    return (*head, *rest, saved)


def _batch_parallel(fn, batched: int, backward: bool):
    """``fn`` (a sequence op) run per range of the batch on the thread pool."""
    def op(*args):
        saved = args[-1]
        if backward and saved:
            if not isinstance(saved[0], _BatchTape):
                return fn(*args)           # the forward ran unsplit
            ranges, parts = saved[0].ranges, saved[0].parts
        else:
            ranges = threads.split(args[0].shape[1], _MIN_BATCH_PER_TASK)
            if len(ranges) <= 1:
                return fn(*args)
            parts = [None if saved is None else []] * len(ranges)
            if saved is not None and not backward:
                tape = _BatchTape(ranges)
                saved.append(tape)
                parts = tape.parts
        results: list = [None] * len(ranges)

        def task(t: int) -> None:
            results[t] = fn(*_split_args(args, batched, ranges[t], parts[t]))

        threads.parallel_for(len(ranges), task)
        return _gather(results, backward)
    return op


def _gather(results: list, backward: bool) -> tuple:
    """Join the ranges' results: batch arrays along axis 1; in a backward the last result
    (the parameter gradients) summed in range order."""
    arrays = [np.concatenate(parts, axis=1) for parts in zip(*(r[:len(r) - backward]
                                                               for r in results))]
    if not backward:
        return tuple(arrays)
    grads = list(results[0][-1])
    for other in results[1:]:
        grads = [None if g is None else g + o for g, o in zip(grads, other[-1])]
    return (*arrays, grads)


for _op, _fn in impls(CELLS).items():
    if _op in _BATCHED_ARGS:
        _fn = _batch_parallel(_fn, _BATCHED_ARGS[_op], _op.endswith("_backward"))
    register(_op, "numpy")(_fn)
