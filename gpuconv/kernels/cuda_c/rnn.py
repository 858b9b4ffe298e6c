"""Recurrent cells and sequences on the GPU: cuBLAS GEMMs (``@`` on CuPy arrays) around the
fused pointwise kernels of ``kernels/rnn.cu``, float32/float64.

Registry contract as every rnn impl (see ``gpuconv/kernels/reference/rnn.py``). The first
half of this module is the step loop, written once for any array module and any set of
pointwise launchers (a :class:`Cell`); ``numba_cuda/rnn.py`` reuses it with its own kernels.
Its structure is the NumPy impl's:

- per layer, one GEMM projects the input of every time step for both directions at once,
  ``(T*B, I) @ [W_ih fwd; W_ih rev]^T``; the biases are added inside the pointwise kernels;
- per step, one GEMM ``h @ W_hh^T``, then one pointwise kernel for the whole cell update;
- backward recomputes the forward, runs the pointwise backward per step into the gate
  gradients of every step, then gets the input gradient and ``W_ih``'s gradient from one GEMM
  each over all steps and both directions, and ``W_hh``'s from one GEMM per direction.

A cell op is the same code run for one step of one layer (``T = 1``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ... import backend
from .. import register
from . import THREADS_1D, gpu_op, launch

# --------------------------------------------------------------------------- the step loop


@dataclass(frozen=True)
class Cell:
    """A cell kind for the step loop: its gate count, the arrays its forward saves per step
    for backward (their widths in units of H) and its pointwise launchers. Its states are
    (h,), or (h, c) for the LSTM.

    ``forward(gi, gh, b_ih, b_hh, prev, nxt, saved)`` reads the step's gate pre-activation
    GEMMs gi = x W_ih^T and gh = h W_hh^T, the biases (or None) and the previous states
    ``prev``; it writes the new states ``nxt`` and ``saved``.
    ``backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh)`` reads the gradients
    of the new states and of the step's output h, and writes the gradients of gi and gh
    (``grad_gh`` is ``grad_gi`` unless ``separate_hidden_grad``); it returns the part of the
    gradient of h_prev that bypasses W_hh (or None) and the gradients of the other previous
    states (``[grad c_prev]`` or ``[]``).

    gi, grad_out, grad_gi and grad_gh are one direction's column block of a layer-wide
    matrix: their rows are contiguous but strided. Every other array is contiguous.
    """

    gates: int
    saved: tuple
    forward: Callable
    backward: Callable
    separate_hidden_grad: bool = False


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


class _Tape:
    """One direction of one layer: its states around every step and what the cell saves.

    Each state is kept as a (T + 1, B, H) array; the state after step t sits at t + 1 going
    forward and at t in reverse, so that the state before step t is its neighbour, every step
    reads and writes contiguous (B, H) blocks, and the states before (or after) all steps are
    one contiguous (T, B, H) slice.
    """

    def __init__(self, cell: Cell, init: list, T: int, reverse: bool):
        xp = backend.array_module(init[0])
        B, H = init[0].shape
        self.reverse = reverse
        self.states = [backend.empty((T + 1, B, H), init[0].dtype, xp) for _ in init]
        self.saved = [backend.empty((T, B, w * H), init[0].dtype, xp) for w in cell.saved]
        for s, s0 in zip(self.states, init):
            s[T if reverse else 0] = s0

    def before(self, t: int) -> list:
        return [s[t + 1 if self.reverse else t] for s in self.states]

    def after(self, t: int) -> list:
        return [s[t if self.reverse else t + 1] for s in self.states]

    def saved_at(self, t: int) -> list:
        return [a[t] for a in self.saved]

    def inputs(self):
        """h before every step, (T, B, H) in time order."""
        return self.states[0][1:] if self.reverse else self.states[0][:-1]

    def outputs(self):
        """h after every step, (T, B, H) in time order."""
        return self.states[0][:-1] if self.reverse else self.states[0][1:]

    def finals(self) -> list:
        return [s[0] if self.reverse else s[-1] for s in self.states]


def _layer_weights(params: list, layer: int, D: int) -> list:
    return [params[4 * (layer * D + d): 4 * (layer * D + d) + 4] for d in range(D)]


def _layer_forward(cell: Cell, x, weights: list, init: list):
    """x (T, B, I); weights and init (the initial states) per direction.
    Returns (out (T, B, D*H), the tapes)."""
    xp = backend.array_module(x)
    T, B, I = x.shape
    D = len(weights)
    GH = cell.gates * init[0][0].shape[1]
    gi = (x.reshape(T * B, I) @ xp.concatenate([w[0] for w in weights]).T).reshape(T, B, D * GH)
    tapes = []
    for d, (_, w_hh, b_ih, b_hh) in enumerate(weights):
        tape = _Tape(cell, init[d], T, d == 1)
        gi_d = gi[:, :, d * GH:(d + 1) * GH]
        for t in _steps(T, tape.reverse):
            prev = tape.before(t)
            cell.forward(gi_d[t], prev[0] @ w_hh.T, b_ih, b_hh, prev, tape.after(t),
                         tape.saved_at(t))
        tapes.append(tape)
    return xp.concatenate([tape.outputs() for tape in tapes], axis=2), tapes


def _direction_backward(cell: Cell, grad_out, grad_nxt: list, tape: _Tape, w_hh, grad_gi,
                        grad_gh) -> list:
    """BPTT over one direction: fills grad_gi and grad_gh (T, B, G*H) and returns the
    gradients of the initial states."""
    for t in reversed(_steps(grad_out.shape[0], tape.reverse)):
        direct, grad_rest = cell.backward(grad_nxt, grad_out[t], tape.before(t), tape.after(t),
                                          tape.saved_at(t), grad_gi[t], grad_gh[t])
        grad_h = grad_gh[t] @ w_hh
        if direct is not None:
            grad_h += direct
        grad_nxt = [grad_h, *grad_rest]
    return grad_nxt


def _layer_backward(cell: Cell, grad_out, x, weights: list, tapes: list, grad_finals: list):
    """Returns (grad x, gradients of the initial states per direction, the 4 weight gradients
    per direction)."""
    xp = backend.array_module(x)
    T, B, I = x.shape
    D = len(weights)
    H = grad_out.shape[2] // D
    GH = cell.gates * H
    grad_gi = backend.empty((T, B, D * GH), x.dtype, xp)
    grad_gh = backend.empty((T, B, D * GH), x.dtype, xp) if cell.separate_hidden_grad else grad_gi
    grad_init = [
        _direction_backward(cell, grad_out[:, :, d * H:(d + 1) * H], grad_finals[d], tapes[d],
                            weights[d][1], grad_gi[:, :, d * GH:(d + 1) * GH],
                            grad_gh[:, :, d * GH:(d + 1) * GH])
        for d in range(D)]
    grad_gi2 = grad_gi.reshape(T * B, D * GH)
    grad_gh2 = grad_gh.reshape(T * B, D * GH)
    grad_x = (grad_gi2 @ xp.concatenate([w[0] for w in weights])).reshape(T, B, I)
    grad_w_ih = grad_gi2.T @ x.reshape(T * B, I)
    grad_weights = []
    for d, (_, _, b_ih, b_hh) in enumerate(weights):
        cols = slice(d * GH, (d + 1) * GH)
        grad_weights.append([
            grad_w_ih[cols],
            grad_gh2[:, cols].T @ tapes[d].inputs().reshape(T * B, H),
            None if b_ih is None else grad_gi2[:, cols].sum(axis=0),
            None if b_hh is None else grad_gh2[:, cols].sum(axis=0),
        ])
    return grad_x, grad_init, grad_weights


def _contiguous(xp, arrays) -> list:
    # The kernels read biases, states and state gradients as contiguous blocks.
    return [None if a is None else xp.ascontiguousarray(a) for a in arrays]


def sequence_forward(cell: Cell, x, init, params, num_layers: int, bidirectional: bool,
                     masks):
    """The stack over x (T, B, I) from the initial states ``init`` ((h0,) or (h0, c0), each
    (L*D, B, H)). Returns (out, the final states as ``init``, the tape for backward)."""
    xp = backend.array_module(x)
    params = _contiguous(xp, params)
    D = 2 if bidirectional else 1
    layer_in, finals, tape = x, [], []
    for layer in range(num_layers):
        if layer > 0 and masks is not None:
            layer_in = layer_in * masks[layer - 1]
        ks = range(layer * D, (layer + 1) * D)
        out, tapes = _layer_forward(cell, layer_in, _layer_weights(params, layer, D),
                                    [[s[k] for s in init] for k in ks])
        finals += [t.finals() for t in tapes]
        tape.append((layer_in, tapes))
        layer_in = out
    return layer_in, [xp.stack(f) for f in zip(*finals)], tape


def sequence_backward(cell: Cell, grad_out, grad_finals, x, init, params, num_layers: int,
                      bidirectional: bool, masks):
    """Backpropagation through time. ``grad_finals`` holds the gradients of the final states.
    Returns (grad x, the gradients of ``init``, grad params)."""
    xp = backend.array_module(x)
    params = _contiguous(xp, params)
    _, _, tape = sequence_forward(cell, x, init, params, num_layers, bidirectional, masks)
    grad_out = xp.ascontiguousarray(grad_out)
    grad_finals = _contiguous(xp, grad_finals)
    D = 2 if bidirectional else 1
    grad_init = [backend.empty(s.shape, x.dtype, xp) for s in init]
    grad_params = [None] * len(params)
    for layer in reversed(range(num_layers)):
        layer_in, tapes = tape[layer]
        ks = range(layer * D, (layer + 1) * D)
        grad_in, grad_states, grad_weights = _layer_backward(
            cell, grad_out, layer_in, _layer_weights(params, layer, D), tapes,
            [[g[k] for g in grad_finals] for k in ks])
        for k, states, gw in zip(ks, grad_states, grad_weights):
            for g0, g in zip(grad_init, states):
                g0[k] = g
            grad_params[4 * k: 4 * k + 4] = gw
        grad_out = grad_in * masks[layer - 1] if layer > 0 and masks is not None else grad_in
    return grad_out, grad_init, grad_params


def cell_forward(cell: Cell, x, states, w_ih, w_hh, b_ih, b_hh) -> list:
    """One step from ``states`` ((hx,) or (hx, cx)); returns the new states."""
    _, finals, _ = sequence_forward(cell, x[None], [s[None] for s in states],
                                    [w_ih, w_hh, b_ih, b_hh], 1, False, None)
    return [f[0] for f in finals]


def cell_backward(cell: Cell, grads, x, states, w_ih, w_hh, b_ih, b_hh) -> tuple:
    """Gradients of one step given those of its new states ``grads``: (grad x, the grads of
    ``states``, the 4 weight grads)."""
    grad_h, *grad_rest = grads
    no_grad_h = backend.array_module(x).zeros_like(grad_h[None])
    gx, grad_states, grad_params = sequence_backward(
        cell, grad_h[None], [no_grad_h, *(g[None] for g in grad_rest)], x[None],
        [s[None] for s in states], [w_ih, w_hh, b_ih, b_hh], 1, False, None)
    return (gx[0], *(g[0] for g in grad_states), *grad_params)


def cell_impls(kind: str, cell: Cell) -> dict:
    """The registry functions of the cell ops of ``kind`` ("lstm", "gru", "rnn_tanh",
    "rnn_relu"), by op name."""
    if kind == "lstm":
        def forward(x, hx, cx, w_ih, w_hh, b_ih, b_hh):
            return tuple(cell_forward(cell, x, (hx, cx), w_ih, w_hh, b_ih, b_hh))

        def backward(grad_h, grad_c, x, hx, cx, w_ih, w_hh, b_ih, b_hh):
            return cell_backward(cell, (grad_h, grad_c), x, (hx, cx), w_ih, w_hh, b_ih, b_hh)
    else:
        def forward(x, hx, w_ih, w_hh, b_ih, b_hh):
            return cell_forward(cell, x, (hx,), w_ih, w_hh, b_ih, b_hh)[0]

        def backward(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
            return cell_backward(cell, (grad_h,), x, (hx,), w_ih, w_hh, b_ih, b_hh)
    return {f"{kind}_cell": forward, f"{kind}_cell_backward": backward}


def sequence_impls(cells: dict) -> dict:
    """The registry functions of the sequence ops over ``cells`` (by kind), by op name."""
    def lstm(x, h0, c0, params, num_layers, bidirectional, masks):
        out, (h_n, c_n), _ = sequence_forward(cells["lstm"], x, (h0, c0), params, num_layers,
                                              bidirectional, masks)
        return out, h_n, c_n

    def lstm_backward(grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers,
                      bidirectional, masks):
        gx, (gh0, gc0), gparams = sequence_backward(cells["lstm"], grad_out,
                                                    (grad_h_n, grad_c_n), x, (h0, c0), params,
                                                    num_layers, bidirectional, masks)
        return gx, gh0, gc0, gparams

    def gru(x, h0, params, num_layers, bidirectional, masks):
        return _h_only_forward(cells["gru"], x, h0, params, num_layers, bidirectional, masks)

    def gru_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks):
        return _h_only_backward(cells["gru"], grad_out, grad_h_n, x, h0, params, num_layers,
                                bidirectional, masks)

    def rnn(x, h0, params, num_layers, bidirectional, masks, nonlinearity):
        return _h_only_forward(cells[f"rnn_{nonlinearity}"], x, h0, params, num_layers,
                               bidirectional, masks)

    def rnn_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks,
                     nonlinearity):
        return _h_only_backward(cells[f"rnn_{nonlinearity}"], grad_out, grad_h_n, x, h0,
                                params, num_layers, bidirectional, masks)

    return {"lstm": lstm, "lstm_backward": lstm_backward, "gru": gru,
            "gru_backward": gru_backward, "rnn": rnn, "rnn_backward": rnn_backward}


def _h_only_forward(cell, x, h0, params, num_layers, bidirectional, masks):
    out, (h_n,), _ = sequence_forward(cell, x, (h0,), params, num_layers, bidirectional, masks)
    return out, h_n


def _h_only_backward(cell, grad_out, grad_h_n, x, h0, params, num_layers, bidirectional,
                     masks):
    gx, (gh0,), gparams = sequence_backward(cell, grad_out, (grad_h_n,), x, (h0,), params,
                                            num_layers, bidirectional, masks)
    return gx, gh0, gparams


# --------------------------------------------------------------------------- CUDA C launchers

FAMILY = "rnn"
DTYPES = ("float32", "float64")
SUFFIX = {"float32": "f32", "float64": "f64"}
# Grid-stride kernels need no more blocks than this to fill any current GPU.
MAX_BLOCKS = 1 << 16
NULL = np.uint64(0)  # a null device pointer: the kernels read a null bias as "no bias"
# The activation codes of rnn_cell_*_pointwise: RNN_TANH and RNN_RELU in kernels/rnn.cu.
NONLINEARITY = {"tanh": 0, "relu": 1}


def _ld(a) -> np.int64:
    """The row stride in elements of a (B, n) matrix with contiguous rows."""
    return np.int64(a.strides[0] // a.itemsize)


def _ptr(a):
    return NULL if a is None else a


def _run(name: str, like, args: tuple) -> None:
    """Launch ``name`` for ``like``'s dtype, one thread per element of the (B, H) ``like``."""
    B, H = like.shape
    blocks = min(MAX_BLOCKS, max(1, math.ceil(B * H / THREADS_1D)))
    launch(FAMILY, f"{name}_{SUFFIX[like.dtype.name]}", (blocks,), (THREADS_1D,),
           (*args, np.int32(B), np.int32(H)))


def _empty_like(a):
    return backend.empty(a.shape, a.dtype, backend.array_module(a))


def _lstm_forward(gi, gh, b_ih, b_hh, prev, nxt, saved):
    (_, c_prev), (h, c), (gates, tanh_c) = prev, nxt, saved
    _run("lstm_cell_fwd_pointwise", h,
         (gi, _ld(gi), gh, _ptr(b_ih), _ptr(b_hh), c_prev, h, c, gates, tanh_c))


def _lstm_backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh):
    (grad_h, grad_c), (_, c_prev), (gates, tanh_c) = grad_nxt, prev, saved
    grad_c_prev = _empty_like(c_prev)
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
    direct = _empty_like(h_prev)
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


def _register(impls: dict) -> None:
    for op, fn in impls.items():
        register(op, "cuda", device="cuda", dtypes=DTYPES, priority=10)(gpu_op(op)(fn))


for _kind, _cell in CELLS.items():
    _register(cell_impls(_kind, _cell))
_register(sequence_impls(CELLS))
