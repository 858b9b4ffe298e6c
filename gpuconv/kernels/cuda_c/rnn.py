"""Recurrent cells and sequences on the GPU: cuBLAS GEMMs (``@`` on CuPy arrays) around the
fused pointwise kernels of ``kernels/rnn.cu``, float32/float64.

Registry contract as every rnn impl (see ``gpuconv/kernels/reference/rnn.py``). The step
loop is the one all fast rnn impls share (:mod:`gpuconv.kernels._rnn_loop`); this module
gives it the kernels of ``kernels/rnn.cu`` as its pointwise functions: one kernel per step
for the whole cell update, the biases added inside it.
"""
from __future__ import annotations

import numpy as np

from .. import register
from .._rnn_loop import Cell, empty_like, impls
from . import DTYPES, NULL, gpu_op, run_threads

FAMILY = "rnn"
# The activation codes of rnn_cell_*_pointwise: RNN_TANH and RNN_RELU in kernels/rnn.cu.
NONLINEARITY = {"tanh": 0, "relu": 1}


def _ld(a) -> np.int64:
    """The row stride in elements of a (B, n) matrix with contiguous rows."""
    return np.int64(a.strides[0] // a.itemsize)


def _ptr(a):
    return NULL if a is None else a  # the kernels read a null bias as "no bias"


def _run(name: str, like, args: tuple) -> None:
    """Launch ``name`` for ``like``'s dtype, one thread per element of the (B, H) ``like``."""
    B, H = like.shape
    run_threads(FAMILY, name, like.dtype, B * H, (*args, np.int32(B), np.int32(H)))


def _lstm_forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
    (_, c_prev), (h, c), (gates, tanh_c) = prev, nxt, saved
    _run("lstm_cell_fwd_pointwise", h,
         (gi, _ld(gi), gh, _ptr(b_ih), _ptr(b_hh), c_prev, h, c, gates, tanh_c))


def _lstm_backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
    (grad_h, grad_c), (_, c_prev), (gates, tanh_c) = grad_nxt, prev, saved
    grad_c_prev = empty_like(c_prev)
    _run("lstm_cell_bwd_pointwise", grad_h,
         (grad_h, grad_out, _ld(grad_out), grad_c, gates, tanh_c, c_prev, grad_gi,
          _ld(grad_gi), grad_c_prev))
    return None, [grad_c_prev]


def _gru_forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
    (h_prev,), (h,), (gates, gh_n) = prev, nxt, saved
    _run("gru_cell_fwd_pointwise", h,
         (gi, _ld(gi), gh, _ptr(b_ih), _ptr(b_hh), h_prev, h, gates, gh_n))


def _gru_backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
    (grad_h,), (h_prev,), (gates, gh_n) = grad_nxt, prev, saved
    direct = empty_like(h_prev)
    _run("gru_cell_bwd_pointwise", grad_h,
         (grad_h, grad_out, _ld(grad_out), gates, gh_n, h_prev, grad_gi, grad_gh,
          _ld(grad_gi), direct))
    return direct, []


def _simple_cell(nonlinearity: str) -> Cell:
    code = np.int32(NONLINEARITY[nonlinearity])

    def forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
        (h,) = nxt
        _run("rnn_cell_fwd_pointwise", h, (gi, _ld(gi), gh, _ptr(b_ih), _ptr(b_hh), h, code))

    def backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
        (grad_h,), (h,) = grad_nxt, nxt
        _run("rnn_cell_bwd_pointwise", grad_h,
             (grad_h, grad_out, _ld(grad_out), h, grad_gi, _ld(grad_gi), code))
        return None, []
    return Cell(1, (), forward, backward)


CELLS = {
    "lstm": Cell(4, (4, 1), _lstm_forward, _lstm_backward),
    "gru": Cell(3, (3, 1), _gru_forward, _gru_backward, separate_hidden_grad=True),
    "rnn_tanh": _simple_cell("tanh"),
    "rnn_relu": _simple_cell("relu"),
}

for _op, _fn in impls(CELLS).items():
    register(_op, "cuda", device="cuda", dtypes=DTYPES, priority=10)(gpu_op(_op)(_fn))
