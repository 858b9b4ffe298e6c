"""Recurrent cells and sequences on the CPU with NumPy + BLAS.

The argument contract is in :mod:`gpuconv.kernels.reference.rnn`. The structure is the one a
GPU impl follows:

- per layer, one GEMM projects the input of every time step for both directions at once,
  ``(T*B, I) @ [W_ih fwd; W_ih rev]^T``;
- per step, one GEMM ``h @ W_hh^T``, then the pointwise gate math (the ``*_pointwise``
  functions below, which a GPU impl fuses into one kernel);
- backward runs the pointwise backward per step, keeping the gate gradients of every step,
  then gets the input gradient and ``W_ih``'s gradient from one GEMM each over all steps and
  both directions, and ``W_hh``'s gradient from one GEMM over all steps per direction.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register


# --------------------------------------------------------------------------- pointwise gate math
#
# gi = x W_ih^T + b_ih and gh = h W_hh^T come in without b_hh, which the pointwise function
# adds (GRU needs it inside r * (W_hn h + b_hn)). Each forward returns (h, c, saved) with c None
# for cells without a cell state; each backward returns
# (grad gi, grad gh, grad h_prev not through W_hh or None, grad c_prev or None).

def _sigmoid(x):
    # For very negative x, exp(-x) overflows to inf and 1 / (1 + inf) is the exact limit, 0.
    with np.errstate(over="ignore"):
        y = np.exp(-x)
    y += 1
    return np.reciprocal(y, out=y)


def _lstm_pointwise(gi, gh, b_hh, h_prev, c_prev):
    pre = gi + gh
    if b_hh is not None:
        pre += b_hh
    H = c_prev.shape[1]
    act = _sigmoid(pre)
    act[:, 2 * H:3 * H] = np.tanh(pre[:, 2 * H:3 * H])
    i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    return o * tanh_c, c, (act, tanh_c)


def _lstm_pointwise_backward(grad_h, grad_c, saved, h_prev, c_prev):
    act, tanh_c = saved
    H = c_prev.shape[1]
    i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    grad_c = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
    grad_pre = backend.empty(act.shape, act.dtype)
    grad_pre[:, :H] = grad_c * g * i * (1 - i)
    grad_pre[:, H:2 * H] = grad_c * c_prev * f * (1 - f)
    grad_pre[:, 2 * H:3 * H] = grad_c * i * (1 - g * g)
    grad_pre[:, 3 * H:] = grad_h * tanh_c * o * (1 - o)
    return grad_pre, grad_pre, None, grad_c * f


def _gru_pointwise(gi, gh, b_hh, h_prev, c_prev):
    if b_hh is not None:
        gh = gh + b_hh
    H = h_prev.shape[1]
    rz = _sigmoid(gi[:, :2 * H] + gh[:, :2 * H])
    r, z = rz[:, :H], rz[:, H:]
    gh_n = gh[:, 2 * H:]
    n = np.tanh(gi[:, 2 * H:] + r * gh_n)
    return n + z * (h_prev - n), None, (rz, n, gh_n)


def _gru_pointwise_backward(grad_h, grad_c, saved, h_prev, c_prev):
    rz, n, gh_n = saved
    H = h_prev.shape[1]
    r, z = rz[:, :H], rz[:, H:]
    grad_n_pre = grad_h * (1 - z) * (1 - n * n)
    grad_gi = backend.empty((h_prev.shape[0], 3 * H), h_prev.dtype)
    grad_gh = backend.empty((h_prev.shape[0], 3 * H), h_prev.dtype)
    grad_gi[:, :H] = grad_n_pre * gh_n * r * (1 - r)
    grad_gi[:, H:2 * H] = grad_h * (h_prev - n) * z * (1 - z)
    grad_gi[:, 2 * H:] = grad_n_pre
    grad_gh[:, :2 * H] = grad_gi[:, :2 * H]
    grad_gh[:, 2 * H:] = grad_n_pre * r
    return grad_gi, grad_gh, grad_h * z, None


def _simple_pointwise(nonlinearity):
    def forward(gi, gh, b_hh, h_prev, c_prev):
        pre = gi + gh
        if b_hh is not None:
            pre += b_hh
        h = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)
        return h, None, h

    def backward(grad_h, grad_c, h, h_prev, c_prev):
        slope = 1 - h * h if nonlinearity == "tanh" else h > 0
        grad_pre = grad_h * slope
        return grad_pre, grad_pre, None, None
    return forward, backward


class _Cell:
    """A cell kind: its gate count and pointwise forward/backward."""

    def __init__(self, gates, forward, backward, separate_hidden_grad=False):
        self.gates = gates
        self.forward = forward
        self.backward = backward
        self.separate_hidden_grad = separate_hidden_grad  # grad gh differs from grad gi


_LSTM = _Cell(4, _lstm_pointwise, _lstm_pointwise_backward)
_GRU = _Cell(3, _gru_pointwise, _gru_pointwise_backward, separate_hidden_grad=True)
_SIMPLE = {nl: _Cell(1, *_simple_pointwise(nl)) for nl in ("tanh", "relu")}


# --------------------------------------------------------------------------- cells

def _project(x, w, b):
    y = x @ w.T
    if b is not None:
        y += b
    return y


def _cell_forward(cell, x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    return cell.forward(_project(x, w_ih, b_ih), hx @ w_hh.T, b_hh, hx, cx)


def _cell_backward(cell, grad_h, grad_c, x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    _, _, saved = _cell_forward(cell, x, hx, cx, w_ih, w_hh, b_ih, b_hh)
    grad_gi, grad_gh, grad_h_direct, grad_cx = cell.backward(grad_h, grad_c, saved, hx, cx)
    grad_hx = grad_gh @ w_hh
    if grad_h_direct is not None:
        grad_hx += grad_h_direct
    return (grad_gi @ w_ih, grad_hx, grad_cx, grad_gi.T @ x, grad_gh.T @ hx,
            None if b_ih is None else grad_gi.sum(axis=0),
            None if b_hh is None else grad_gh.sum(axis=0))


def _without_cell_state(grads):
    gx, ghx, _, *gw = grads
    return (gx, ghx, *gw)


@register("lstm_cell", "numpy")
def lstm_cell(x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    h, c, _ = _cell_forward(_LSTM, x, hx, cx, w_ih, w_hh, b_ih, b_hh)
    return h, c


@register("lstm_cell_backward", "numpy")
def lstm_cell_backward(grad_h, grad_c, x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    return _cell_backward(_LSTM, grad_h, grad_c, x, hx, cx, w_ih, w_hh, b_ih, b_hh)


@register("gru_cell", "numpy")
def gru_cell(x, hx, w_ih, w_hh, b_ih, b_hh):
    return _cell_forward(_GRU, x, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


@register("gru_cell_backward", "numpy")
def gru_cell_backward(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
    return _without_cell_state(
        _cell_backward(_GRU, grad_h, None, x, hx, None, w_ih, w_hh, b_ih, b_hh))


@register("rnn_tanh_cell", "numpy")
def rnn_tanh_cell(x, hx, w_ih, w_hh, b_ih, b_hh):
    return _cell_forward(_SIMPLE["tanh"], x, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


@register("rnn_relu_cell", "numpy")
def rnn_relu_cell(x, hx, w_ih, w_hh, b_ih, b_hh):
    return _cell_forward(_SIMPLE["relu"], x, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


@register("rnn_tanh_cell_backward", "numpy")
def rnn_tanh_cell_backward(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
    return _without_cell_state(
        _cell_backward(_SIMPLE["tanh"], grad_h, None, x, hx, None, w_ih, w_hh, b_ih, b_hh))


@register("rnn_relu_cell_backward", "numpy")
def rnn_relu_cell_backward(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
    return _without_cell_state(
        _cell_backward(_SIMPLE["relu"], grad_h, None, x, hx, None, w_ih, w_hh, b_ih, b_hh))


# --------------------------------------------------------------------------- sequences

class _Tape:
    """What one direction of one layer keeps for backward, indexed by time step."""

    def __init__(self, T, B, H, dtype):
        self.h_prev = backend.empty((T, B, H), dtype)
        self.c_prev = [None] * T
        self.saved = [None] * T


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _direction_forward(cell, gi, w_hh, b_hh, h, c, reverse, out):
    """The recurrence over gi (T, B, G*H); writes h_t into out (T, B, H)."""
    T, B, H = out.shape
    tape = _Tape(T, B, H, out.dtype)
    for t in _steps(T, reverse):
        tape.h_prev[t] = h
        tape.c_prev[t] = c
        h, c, tape.saved[t] = cell.forward(gi[t], h @ w_hh.T, b_hh, h, c)
        out[t] = h
    return h, c, tape


def _direction_backward(cell, grad_out, grad_h, grad_c, tape, w_hh, reverse, grad_gi, grad_gh):
    """BPTT over one direction; fills grad_gi and grad_gh (T, B, G*H), returns the grads
    of the initial h and c."""
    for t in reversed(_steps(grad_out.shape[0], reverse)):
        gi, gh, grad_h_direct, grad_c = cell.backward(grad_h + grad_out[t], grad_c,
                                                      tape.saved[t], tape.h_prev[t],
                                                      tape.c_prev[t])
        grad_gi[t] = gi
        if cell.separate_hidden_grad:
            grad_gh[t] = gh
        grad_h = gh @ w_hh
        if grad_h_direct is not None:
            grad_h += grad_h_direct
    return grad_h, grad_c


def _layer_weights(params, layer, D):
    return [params[4 * (layer * D + d): 4 * (layer * D + d) + 4] for d in range(D)]


def _stacked(arrays):
    return None if arrays[0] is None else np.concatenate(arrays)


def _layer_forward(cell, x, weights, h0s, c0s):
    T, B, I = x.shape
    D = len(weights)
    H = h0s[0].shape[1]
    gi = _project(x.reshape(T * B, I), _stacked([w[0] for w in weights]),
                  _stacked([w[2] for w in weights])).reshape(T, B, D * cell.gates * H)
    out = backend.empty((T, B, D * H), x.dtype)
    finals, tapes = [], []
    for d, (_, w_hh, _, b_hh) in enumerate(weights):
        GH = cell.gates * H
        h, c, tape = _direction_forward(cell, gi[:, :, d * GH:(d + 1) * GH], w_hh, b_hh,
                                        h0s[d], c0s[d], d == 1, out[:, :, d * H:(d + 1) * H])
        finals.append((h, c))
        tapes.append(tape)
    return out, finals, tapes


def _layer_backward(cell, grad_out, x, weights, tapes, grad_h_ns, grad_c_ns):
    """Returns (grad x, [(grad h0, grad c0)] per direction, [4 weight grads] per direction)."""
    T, B, I = x.shape
    D = len(weights)
    H = grad_out.shape[2] // D
    GH = cell.gates * H
    grad_gi = backend.empty((T, B, D * GH), x.dtype)
    grad_gh = backend.empty((T, B, D * GH), x.dtype) if cell.separate_hidden_grad else grad_gi
    grad_states = []
    for d, (_, w_hh, _, _) in enumerate(weights):
        cols = slice(d * GH, (d + 1) * GH)
        grad_states.append(_direction_backward(
            cell, grad_out[:, :, d * H:(d + 1) * H], grad_h_ns[d], grad_c_ns[d], tapes[d], w_hh,
            d == 1, grad_gi[:, :, cols], grad_gh[:, :, cols]))
    grad_gi2 = grad_gi.reshape(T * B, D * GH)
    grad_gh2 = grad_gh.reshape(T * B, D * GH)
    x2 = x.reshape(T * B, I)
    grad_x = (grad_gi2 @ _stacked([w[0] for w in weights])).reshape(T, B, I)
    grad_w_ih = grad_gi2.T @ x2
    grad_weights = []
    for d, (_, _, b_ih, b_hh) in enumerate(weights):
        cols = slice(d * GH, (d + 1) * GH)
        grad_weights.append([
            grad_w_ih[cols],
            grad_gh2[:, cols].T @ tapes[d].h_prev.reshape(T * B, H),
            None if b_ih is None else grad_gi2[:, cols].sum(axis=0),
            None if b_hh is None else grad_gh2[:, cols].sum(axis=0),
        ])
    return grad_x, grad_states, grad_weights


def _forward(cell, x, h0, c0, params, num_layers, bidirectional, masks):
    """Returns (out, h_n, c_n or None, tape) where tape[l] = (input of layer l, its tapes)."""
    D = 2 if bidirectional else 1
    h_n = backend.empty(h0.shape, x.dtype)
    c_n = None if c0 is None else backend.empty(c0.shape, x.dtype)
    layer_in, tape = x, []
    for layer in range(num_layers):
        if layer > 0 and masks is not None:
            layer_in = layer_in * masks[layer - 1]
        ks = range(layer * D, (layer + 1) * D)
        out, finals, tapes = _layer_forward(cell, layer_in, _layer_weights(params, layer, D),
                                            [h0[k] for k in ks],
                                            [None if c0 is None else c0[k] for k in ks])
        for k, (h, c) in zip(ks, finals):
            h_n[k] = h
            if c_n is not None:
                c_n[k] = c
        tape.append((layer_in, tapes))
        layer_in = out
    return layer_in, h_n, c_n, tape


def _backward(cell, grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers, bidirectional,
              masks):
    """Returns (grad x, grad h0, grad c0 or None, grad params)."""
    _, _, _, tape = _forward(cell, x, h0, c0, params, num_layers, bidirectional, masks)
    D = 2 if bidirectional else 1
    grad_h0 = backend.empty(h0.shape, x.dtype)
    grad_c0 = None if c0 is None else backend.empty(c0.shape, x.dtype)
    grad_params = [None] * len(params)
    for layer in reversed(range(num_layers)):
        layer_in, tapes = tape[layer]
        ks = range(layer * D, (layer + 1) * D)
        grad_out, grad_states, grad_weights = _layer_backward(
            cell, grad_out, layer_in, _layer_weights(params, layer, D), tapes,
            [grad_h_n[k] for k in ks], [None if grad_c_n is None else grad_c_n[k] for k in ks])
        for k, (gh, gc), gw in zip(ks, grad_states, grad_weights):
            grad_h0[k] = gh
            if grad_c0 is not None:
                grad_c0[k] = gc
            grad_params[4 * k: 4 * k + 4] = gw
        if layer > 0 and masks is not None:
            grad_out = grad_out * masks[layer - 1]
    return grad_out, grad_h0, grad_c0, grad_params


@register("lstm", "numpy")
def lstm(x, h0, c0, params, num_layers, bidirectional, masks):
    return _forward(_LSTM, x, h0, c0, params, num_layers, bidirectional, masks)[:3]


@register("lstm_backward", "numpy")
def lstm_backward(grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers, bidirectional,
                  masks):
    return _backward(_LSTM, grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers,
                     bidirectional, masks)


@register("gru", "numpy")
def gru(x, h0, params, num_layers, bidirectional, masks):
    return _forward(_GRU, x, h0, None, params, num_layers, bidirectional, masks)[:2]


@register("gru_backward", "numpy")
def gru_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks):
    gx, gh0, _, gparams = _backward(_GRU, grad_out, grad_h_n, None, x, h0, None, params,
                                    num_layers, bidirectional, masks)
    return gx, gh0, gparams


@register("rnn", "numpy")
def rnn(x, h0, params, num_layers, bidirectional, masks, nonlinearity):
    return _forward(_SIMPLE[nonlinearity], x, h0, None, params, num_layers, bidirectional,
                    masks)[:2]


@register("rnn_backward", "numpy")
def rnn_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks,
                 nonlinearity):
    gx, gh0, _, gparams = _backward(_SIMPLE[nonlinearity], grad_out, grad_h_n, None, x, h0,
                                    None, params, num_layers, bidirectional, masks)
    return gx, gh0, gparams
