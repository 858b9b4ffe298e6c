"""LSTM and GRU cells in numba.cuda: the GEMMs on the array module (cuBLAS through CuPy on a
GPU, NumPy under the simulator) around the pointwise kernels of ``_rnn_kernels.py``.

Registry contract as every rnn cell impl (see ``gpuconv/kernels/reference/rnn.py``). The
step loop is the one all fast rnn impls share (:mod:`gpuconv.kernels._rnn_loop`), given
these kernels as its pointwise functions; the kernels mirror ``kernels/rnn.cu``.
"""
from __future__ import annotations

from .. import register
from .._rnn_loop import Cell, cell_impls, empty_like
from . import DTYPES, is_available, optional, run


def _launch(name: str, like, *args) -> None:
    """Run kernel ``name`` with one thread per element of the (B, H) array ``like``."""
    run("rnn", name, like.size, *args, grid_stride=True)


def _biases(b_ih, b_hh, like) -> tuple:
    """The biases as the kernels take them: (b_ih, b_hh, has_b_ih, has_b_hh)."""
    (b_ih, has_ih), (b_hh, has_hh) = optional(b_ih, like), optional(b_hh, like)
    return b_ih, b_hh, has_ih, has_hh


def _lstm_forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
    (_, c_prev), (h, c), (gates, tanh_c) = prev, nxt, saved
    b_ih, b_hh, has_ih, has_hh = _biases(b_ih, b_hh, h)
    _launch("lstm_cell_fwd_pointwise", h, gi, gh, b_ih, b_hh, c_prev, h, c, gates, tanh_c,
            has_ih, has_hh)


def _lstm_backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
    (grad_h, grad_c), (_, c_prev), (gates, tanh_c) = grad_nxt, prev, saved
    grad_c_prev = empty_like(c_prev)
    _launch("lstm_cell_bwd_pointwise", grad_h, grad_h, grad_out, grad_c, gates, tanh_c, c_prev,
            grad_gi, grad_c_prev)
    return None, [grad_c_prev]


def _gru_forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
    (h_prev,), (h,), (gates, gh_n) = prev, nxt, saved
    b_ih, b_hh, has_ih, has_hh = _biases(b_ih, b_hh, h)
    _launch("gru_cell_fwd_pointwise", h, gi, gh, b_ih, b_hh, h_prev, h, gates, gh_n, has_ih,
            has_hh)


def _gru_backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
    (grad_h,), (h_prev,), (gates, gh_n) = grad_nxt, prev, saved
    direct = empty_like(h_prev)
    _launch("gru_cell_bwd_pointwise", grad_h, grad_h, grad_out, gates, gh_n, h_prev, grad_gi,
            grad_gh, direct)
    return direct, []


CELLS = {
    "lstm": Cell(4, (4, 1), _lstm_forward, _lstm_backward),
    "gru": Cell(3, (3, 1), _gru_forward, _gru_backward, separate_hidden_grad=True),
}

for _kind, _cell in CELLS.items():
    for _op, _fn in cell_impls(_kind, _cell).items():
        register(_op, "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
                 priority=-10)(_fn)
