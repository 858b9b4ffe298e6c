"""The step loop every fast recurrent impl shares, written once for any array module (NumPy,
CuPy) and any pointwise gate math (a :class:`Cell`).

Each impl (``numpy_impl/rnn.py``, ``cuda_c/rnn.py``, ``numba_cuda/rnn.py``) supplies only
its pointwise functions and registers the functions that :func:`impls` (or
:func:`cell_impls`, :func:`sequence_impls`) build from them; the registry contract is the one in
``gpuconv/kernels/reference/rnn.py``, which stays independent of this module. The loop:

- per layer, one GEMM projects the input of every time step for both directions at once,
  ``(T*B, I) @ [W_ih fwd; W_ih rev]^T``; the biases are added by the pointwise functions;
- per step, one GEMM ``h @ W_hh^T``, then the pointwise forward for the whole cell update
  (one fused kernel on a GPU);
- backward takes the forward's tape (the states and saved gate values of every step, kept
  when the caller asks, as cuDNN keeps its reserve space) or recomputes the forward, then
  runs the pointwise backward per step into the gate
  gradients of every step, then gets the input gradient and ``W_ih``'s gradient from one GEMM
  each over all steps and both directions, and ``W_hh``'s from one GEMM per direction.

A cell op runs the same pointwise functions and the same step backward for one step,
without a tape. This module imports neither numba nor CuPy: the array module comes from
the arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import backend

__all__ = ["Cell", "empty_like", "sequence_forward", "sequence_backward",
           "backward_through_layers", "cell_forward", "cell_backward", "cell_impls",
           "sequence_impls", "impls"]


@dataclass(frozen=True)
class Cell:
    """A cell kind for the step loop: its gate count, the arrays its forward saves per step
    for backward (their widths in units of H) and its pointwise functions. Its states are
    (h,), or (h, c) for the LSTM.

    ``forward(gi, gh, b_ih, b_hh, prev, nxt, saved)`` reads the step's gate pre-activation
    GEMMs gi = x W_ih^T and gh = h W_hh^T (both without bias), the biases (or None) and the
    previous states ``prev``; it writes the new states ``nxt`` and ``saved``.
    ``backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh)`` reads the gradients
    of the new states and of the step's output h, and writes the gradients of gi and gh
    (``grad_gh`` is ``grad_gi`` unless ``separate_hidden_grad``); it returns the part of the
    gradient of h_prev that bypasses W_hh (or None) and the gradients of the other previous
    states (``[grad c_prev]`` or ``[]``) as new arrays. It must not write into ``grad_nxt``.

    gi, grad_out, grad_gi and grad_gh may be one direction's column block of a layer-wide
    matrix: their rows are contiguous but strided. Every other array is contiguous.
    """

    gates: int
    saved: tuple
    forward: Callable
    backward: Callable
    separate_hidden_grad: bool = False


def empty_like(a):
    """An uninitialised array of ``a``'s shape and dtype on ``a``'s device."""
    return backend.empty(a.shape, a.dtype, backend.array_module(a))


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


def _stacked_w_ih(xp, weights: list):
    """[W_ih fwd; W_ih rev], (D*G*H, I); one direction's W_ih as it is, without a copy."""
    return weights[0][0] if len(weights) == 1 else xp.concatenate([w[0] for w in weights])


def _layer_forward(cell: Cell, x, weights: list, init: list) -> list:
    """x (T, B, I); weights and init (the initial states) per direction. Returns the tapes."""
    xp = backend.array_module(x)
    T, B, I = x.shape
    D = len(weights)
    GH = cell.gates * init[0][0].shape[1]
    gi = (x.reshape(T * B, I) @ _stacked_w_ih(xp, weights).T).reshape(T, B, D * GH)
    tapes = []
    for d, (_, w_hh, b_ih, b_hh) in enumerate(weights):
        tape = _Tape(cell, init[d], T, d == 1)
        gi_d = gi[:, :, d * GH:(d + 1) * GH]
        for t in _steps(T, tape.reverse):
            prev = tape.before(t)
            cell.forward(gi_d[t], prev[0] @ w_hh.T, b_ih, b_hh, prev, tape.after(t),
                         tape.saved_at(t))
        tapes.append(tape)
    return tapes


def _layer_output(tapes: list):
    """The output of a layer, (T, B, D*H)."""
    xp = backend.array_module(tapes[0].states[0])
    return xp.concatenate([tape.outputs() for tape in tapes], axis=2)


def _step_backward(cell: Cell, grad_nxt: list, grad_out, prev: list, nxt: list, saved: list,
                   w_hh, grad_gi, grad_gh) -> list:
    """One step of BPTT: writes grad_gi and grad_gh and returns the gradients of ``prev``."""
    direct, grad_rest = cell.backward(grad_nxt, grad_out, prev, nxt, saved, grad_gi, grad_gh)
    grad_h = grad_gh @ w_hh
    if direct is not None:
        grad_h += direct
    return [grad_h, *grad_rest]


def _bias_grads(cell: Cell, grad_gi, grad_gh, b_ih, b_hh) -> list:
    """The gradients of b_ih and b_hh (None where the bias is): the column sums of the gate
    gradients, summed once when they are the same (no ``separate_hidden_grad``)."""
    grad_b_ih = None if b_ih is None else grad_gi.sum(axis=0)
    if b_hh is None:
        return [grad_b_ih, None]
    if grad_b_ih is None or cell.separate_hidden_grad:
        return [grad_b_ih, grad_gh.sum(axis=0)]
    return [grad_b_ih, grad_b_ih.copy()]


def _direction_backward(cell: Cell, grad_out, grad_nxt: list, tape: _Tape, w_hh, grad_gi,
                        grad_gh) -> list:
    """BPTT over one direction: fills grad_gi and grad_gh (T, B, G*H) and returns the
    gradients of the initial states."""
    for t in reversed(_steps(grad_out.shape[0], tape.reverse)):
        grad_nxt = _step_backward(cell, grad_nxt, grad_out[t], tape.before(t), tape.after(t),
                                  tape.saved_at(t), w_hh, grad_gi[t], grad_gh[t])
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
    grad_x = (grad_gi2 @ _stacked_w_ih(xp, weights)).reshape(T, B, I)
    grad_w_ih = grad_gi2.T @ x.reshape(T * B, I)
    grad_weights = []
    for d, (_, _, b_ih, b_hh) in enumerate(weights):
        cols = slice(d * GH, (d + 1) * GH)
        grad_weights.append([grad_w_ih[cols],
                             grad_gh2[:, cols].T @ tapes[d].inputs().reshape(T * B, H),
                             *_bias_grads(cell, grad_gi2[:, cols], grad_gh2[:, cols], b_ih,
                                          b_hh)])
    return grad_x, grad_init, grad_weights


def _contiguous(xp, arrays) -> list:
    # The pointwise functions read biases, states and state gradients as contiguous blocks.
    return [None if a is None else xp.ascontiguousarray(a) for a in arrays]


def _forward(cell: Cell, x, init, params, num_layers: int, bidirectional: bool,
             masks) -> list:
    """Runs the stack; returns, for each layer, its input and its tapes."""
    xp = backend.array_module(x)
    params = _contiguous(xp, params)
    D = 2 if bidirectional else 1
    layer_in, tape = x, []
    for layer in range(num_layers):
        if layer > 0:
            layer_in = _layer_output(tape[-1][1])
            if masks is not None:
                layer_in = layer_in * masks[layer - 1]
        ks = range(layer * D, (layer + 1) * D)
        tapes = _layer_forward(cell, layer_in, _layer_weights(params, layer, D),
                               [[s[k] for s in init] for k in ks])
        tape.append((layer_in, tapes))
    return tape


def sequence_forward(cell: Cell, x, init, params, num_layers: int, bidirectional: bool,
                     masks, saved=None):
    """The stack over x (T, B, I) from the initial states ``init`` ((h0,) or (h0, c0), each
    (L*D, B, H)). Returns (out, the final states as ``init``); appends the tape to ``saved``
    when that is a list."""
    xp = backend.array_module(x)
    tape = _forward(cell, x, init, params, num_layers, bidirectional, masks)
    if saved is not None:
        saved.append(tape)
    finals = [t.finals() for _, tapes in tape for t in tapes]
    return _layer_output(tape[-1][1]), [xp.stack(f) for f in zip(*finals)]


def sequence_backward(cell: Cell, grad_out, grad_finals, x, init, params, num_layers: int,
                      bidirectional: bool, masks, saved=None):
    """Backpropagation through time. ``grad_finals`` holds the gradients of the final states;
    ``saved`` the forward's tape, or nothing (then the forward is recomputed). Returns
    (grad x, the gradients of ``init``, grad params)."""
    xp = backend.array_module(x)
    tape = saved[0] if saved else _forward(cell, x, init, params, num_layers, bidirectional,
                                           masks)

    def layer_backward(layer, grad_out, weights, grad_finals):
        layer_in, tapes = tape[layer]
        return _layer_backward(cell, grad_out, layer_in, weights, tapes, grad_finals)

    return backward_through_layers(layer_backward, xp.ascontiguousarray(grad_out),
                                   _contiguous(xp, grad_finals), x, init, params, num_layers,
                                   bidirectional, masks)


def backward_through_layers(layer_backward: Callable, grad_out, grad_finals, x, init, params,
                            num_layers: int, bidirectional: bool, masks):
    """The layer loop of backpropagation through a stack, last layer first.
    ``layer_backward(layer, grad_out, weights, grad_finals)`` takes the gradient of the layer's
    output, its weights (per direction) and the gradients of its final states (per direction)
    and returns (the gradient of its input, per direction the gradients of its initial states,
    per direction its 4 weight gradients). Returns (grad x, the gradients of ``init``, grad
    params)."""
    xp = backend.array_module(x)
    D = 2 if bidirectional else 1
    grad_init = [backend.empty(s.shape, x.dtype, xp) for s in init]
    grad_params = [None] * len(params)
    for layer in reversed(range(num_layers)):
        ks = range(layer * D, (layer + 1) * D)
        grad_in, grad_states, grad_weights = layer_backward(
            layer, grad_out, _layer_weights(params, layer, D),
            [[g[k] for g in grad_finals] for k in ks])
        for k, states, gw in zip(ks, grad_states, grad_weights):
            for g0, g in zip(grad_init, states):
                g0[k] = g
            grad_params[4 * k: 4 * k + 4] = gw
        grad_out = grad_in * masks[layer - 1] if layer > 0 and masks is not None else grad_in
    return grad_out, grad_init, grad_params


def _step(cell: Cell, x, states: list, w_ih, w_hh, b_ih, b_hh):
    """One step of a cell from contiguous ``states``: (the new states, what the cell saves)."""
    xp = backend.array_module(x)
    B, H = states[0].shape
    nxt = [backend.empty((B, H), x.dtype, xp) for _ in states]
    saved = [backend.empty((B, w * H), x.dtype, xp) for w in cell.saved]
    b_ih, b_hh = _contiguous(xp, (b_ih, b_hh))
    cell.forward(x @ w_ih.T, states[0] @ w_hh.T, b_ih, b_hh, states, nxt, saved)
    return nxt, saved


def cell_forward(cell: Cell, x, states, w_ih, w_hh, b_ih, b_hh) -> list:
    """One step from ``states`` ((hx,) or (hx, cx)); returns the new states."""
    states = _contiguous(backend.array_module(x), states)
    return _step(cell, x, states, w_ih, w_hh, b_ih, b_hh)[0]


def cell_backward(cell: Cell, grads, x, states, w_ih, w_hh, b_ih, b_hh) -> tuple:
    """Gradients of one step given those of its new states ``grads``: (grad x, the grads of
    ``states``, the 4 weight grads)."""
    xp = backend.array_module(x)
    states = _contiguous(xp, states)
    grad_h, *grad_rest = _contiguous(xp, grads)
    nxt, saved = _step(cell, x, states, w_ih, w_hh, b_ih, b_hh)
    shape = (grad_h.shape[0], cell.gates * grad_h.shape[1])
    grad_gi = backend.empty(shape, x.dtype, xp)
    grad_gh = backend.empty(shape, x.dtype, xp) if cell.separate_hidden_grad else grad_gi
    # The new h is the step's output: its gradient comes in as grad_out, none from a next step.
    grad_states = _step_backward(cell, [xp.zeros_like(grad_h), *grad_rest], grad_h, states, nxt,
                                 saved, w_hh, grad_gi, grad_gh)
    return (grad_gi @ w_ih, *grad_states, grad_gi.T @ x, grad_gh.T @ states[0],
            *_bias_grads(cell, grad_gi, grad_gh, b_ih, b_hh))


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
    """The registry functions of the sequence ops over ``cells`` (by kind: "lstm", "gru",
    "rnn_tanh", "rnn_relu"), by op name."""
    def lstm(x, h0, c0, params, num_layers, bidirectional, masks, saved):
        out, (h_n, c_n) = sequence_forward(cells["lstm"], x, (h0, c0), params, num_layers,
                                           bidirectional, masks, saved)
        return out, h_n, c_n

    def lstm_backward(grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers,
                      bidirectional, masks, saved):
        gx, (gh0, gc0), gparams = sequence_backward(cells["lstm"], grad_out,
                                                    (grad_h_n, grad_c_n), x, (h0, c0), params,
                                                    num_layers, bidirectional, masks, saved)
        return gx, gh0, gc0, gparams

    def gru(x, h0, params, num_layers, bidirectional, masks, saved):
        return _h_only_forward(cells["gru"], x, h0, params, num_layers, bidirectional, masks,
                               saved)

    def gru_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks,
                     saved):
        return _h_only_backward(cells["gru"], grad_out, grad_h_n, x, h0, params, num_layers,
                                bidirectional, masks, saved)

    def rnn(x, h0, params, num_layers, bidirectional, masks, nonlinearity, saved):
        return _h_only_forward(cells[f"rnn_{nonlinearity}"], x, h0, params, num_layers,
                               bidirectional, masks, saved)

    def rnn_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks,
                     nonlinearity, saved):
        return _h_only_backward(cells[f"rnn_{nonlinearity}"], grad_out, grad_h_n, x, h0,
                                params, num_layers, bidirectional, masks, saved)

    return {"lstm": lstm, "lstm_backward": lstm_backward, "gru": gru,
            "gru_backward": gru_backward, "rnn": rnn, "rnn_backward": rnn_backward}


def impls(cells: dict) -> dict:
    """Every cell and sequence op over ``cells`` (all four kinds), by op name."""
    ops = sequence_impls(cells)
    for kind, cell in cells.items():
        ops.update(cell_impls(kind, cell))
    return ops


def _h_only_forward(cell, x, h0, params, num_layers, bidirectional, masks, saved):
    out, (h_n,) = sequence_forward(cell, x, (h0,), params, num_layers, bidirectional, masks,
                                   saved)
    return out, h_n


def _h_only_backward(cell, grad_out, grad_h_n, x, h0, params, num_layers, bidirectional,
                     masks, saved):
    gx, (gh0,), gparams = sequence_backward(cell, grad_out, (grad_h_n,), x, (h0,), params,
                                            num_layers, bidirectional, masks, saved)
    return gx, gh0, gparams
