"""Reference recurrent cells and sequences: plain NumPy, any float dtype, the oracle.

Every impl of these ops takes the arguments below, already validated and normalised by
:mod:`gpuconv.functional.rnn`, and returns the results below. Weights use PyTorch's layout:
``w_ih`` is ``(G*H, I)`` and ``w_hh`` is ``(G*H, H)`` with the G gate blocks stacked in
PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n; RNN: one block), biases ``(G*H,)``.

Cells (``x (B, I)``, ``hx``/``cx (B, H)``; each bias may be None on its own):

- ``rnn_tanh_cell``, ``rnn_relu_cell``, ``gru_cell``: ``(x, hx, w_ih, w_hh, b_ih, b_hh) -> h``
- ``lstm_cell``: ``(x, hx, cx, w_ih, w_hh, b_ih, b_hh) -> (h, c)``
- ``rnn_tanh_cell_backward``, ``rnn_relu_cell_backward``, ``gru_cell_backward``:
  ``(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh) -> (gx, ghx, gw_ih, gw_hh, gb_ih, gb_hh)``
- ``lstm_cell_backward``: ``(grad_h, grad_c, x, hx, cx, w_ih, w_hh, b_ih, b_hh)
  -> (gx, ghx, gcx, gw_ih, gw_hh, gb_ih, gb_hh)``; ``grad_c`` is an array (zeros when the
  caller passed None). A bias gradient is None where the bias is None.

Sequences (always time-major; the public functions transpose ``batch_first`` input):

- ``x (T, B, I)``; ``h0``, ``c0 (L*D, B, H)`` arrays (zeros when the caller passed None),
  ``L = num_layers``, ``D = 2 if bidirectional else 1``, index ``layer * D + direction``.
- ``params``: a list of ``4 * L * D`` entries, for each layer, for each direction:
  ``w_ih, w_hh, b_ih, b_hh``, the biases both None when the network has none.
- ``masks``: None, or a list of ``L - 1`` arrays ``(T, B, D*H)``: inter-layer dropout, already
  scaled; ``masks[l]`` multiplies the output of layer ``l`` before layer ``l + 1`` reads it.
- ``saved``: None, or a list. A forward given a list appends what its backward needs (the
  impl's own format, opaque to callers); a backward given a non-empty list uses that instead
  of recomputing the forward (it must come from the same impl's forward on the same inputs).
- ``lstm``: ``(x, h0, c0, params, num_layers, bidirectional, masks, saved)
  -> (out, h_n, c_n)``
- ``gru``: ``(x, h0, params, num_layers, bidirectional, masks, saved) -> (out, h_n)``
- ``rnn``: ``(x, h0, params, num_layers, bidirectional, masks, nonlinearity, saved)
  -> (out, h_n)`` with ``nonlinearity`` ``"tanh"`` or ``"relu"``.
- ``lstm_backward``: ``(grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers,
  bidirectional, masks, saved) -> (gx, gh0, gc0, grad_params)``
- ``gru_backward``: ``(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks,
  saved) -> (gx, gh0, grad_params)``
- ``rnn_backward``: as ``gru_backward`` with ``nonlinearity`` before ``saved``.

``out`` is ``(T, B, D*H)`` (direction ``d`` in columns ``d*H:(d+1)*H``; the reverse
direction reads time backwards but writes ``out[t]`` at its own ``t``); the grads are arrays
(never None) of the shapes of their inputs, and ``grad_params`` mirrors ``params`` (None for
absent biases). The backward ops recompute the forward unless ``saved`` holds it.

This module is the oracle: one readable function per cell and a per-step loop over them for
sequences and for backpropagation through time. It shares no code with the fast impls.
"""
from __future__ import annotations

import numpy as np

from .. import register

_REF = dict(priority=-100)


# --------------------------------------------------------------------------- cell math

def _sigmoid(x):
    e = np.exp(-np.abs(x))  # exp of a non-positive number never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _affine(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


def _affine_backward(grad_gi, grad_gh, x, hx, w_ih, w_hh, b_ih, b_hh):
    """Gradients through gi = x w_ih^T + b_ih and gh = hx w_hh^T + b_hh."""
    return (grad_gi @ w_ih, grad_gh @ w_hh, grad_gi.T @ x, grad_gh.T @ hx,
            None if b_ih is None else grad_gi.sum(axis=0),
            None if b_hh is None else grad_gh.sum(axis=0))


def _simple_cell(nonlinearity, x, hx, w_ih, w_hh, b_ih, b_hh):
    pre = _affine(x, w_ih, b_ih) + _affine(hx, w_hh, b_hh)
    return np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)


def _simple_cell_backward(nonlinearity, grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
    h = _simple_cell(nonlinearity, x, hx, w_ih, w_hh, b_ih, b_hh)
    # relu's gradient is PyTorch's select on the result: 0 where h <= 0, else grad_h.
    grad_pre = grad_h * (1 - h ** 2) if nonlinearity == "tanh" else np.where(h <= 0, 0, grad_h)
    return _affine_backward(grad_pre, grad_pre, x, hx, w_ih, w_hh, b_ih, b_hh)


@register("rnn_tanh_cell", "reference", **_REF)
def rnn_tanh_cell(x, hx, w_ih, w_hh, b_ih, b_hh):
    return _simple_cell("tanh", x, hx, w_ih, w_hh, b_ih, b_hh)


@register("rnn_relu_cell", "reference", **_REF)
def rnn_relu_cell(x, hx, w_ih, w_hh, b_ih, b_hh):
    return _simple_cell("relu", x, hx, w_ih, w_hh, b_ih, b_hh)


@register("rnn_tanh_cell_backward", "reference", **_REF)
def rnn_tanh_cell_backward(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
    return _simple_cell_backward("tanh", grad_h, x, hx, w_ih, w_hh, b_ih, b_hh)


@register("rnn_relu_cell_backward", "reference", **_REF)
def rnn_relu_cell_backward(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
    return _simple_cell_backward("relu", grad_h, x, hx, w_ih, w_hh, b_ih, b_hh)


def _lstm_gates(x, hx, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = np.split(_affine(x, w_ih, b_ih) + _affine(hx, w_hh, b_hh), 4, axis=1)
    return _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)


@register("lstm_cell", "reference", **_REF)
def lstm_cell(x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = _lstm_gates(x, hx, w_ih, w_hh, b_ih, b_hh)
    c = f * cx + i * g
    return o * np.tanh(c), c


@register("lstm_cell_backward", "reference", **_REF)
def lstm_cell_backward(grad_h, grad_c, x, hx, cx, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = _lstm_gates(x, hx, w_ih, w_hh, b_ih, b_hh)
    tanh_c = np.tanh(f * cx + i * g)
    grad_c = grad_c + grad_h * o * (1 - tanh_c ** 2)
    grad_gates = np.concatenate([
        grad_c * g * i * (1 - i),
        grad_c * cx * f * (1 - f),
        grad_c * i * (1 - g ** 2),
        grad_h * tanh_c * o * (1 - o),
    ], axis=1)
    gx, ghx, gw_ih, gw_hh, gb_ih, gb_hh = _affine_backward(
        grad_gates, grad_gates, x, hx, w_ih, w_hh, b_ih, b_hh)
    return gx, ghx, grad_c * f, gw_ih, gw_hh, gb_ih, gb_hh


def _gru_gates(x, hx, w_ih, w_hh, b_ih, b_hh):
    """r, z, n and the hidden part of n's pre-activation, W_hn h + b_hn."""
    i_r, i_z, i_n = np.split(_affine(x, w_ih, b_ih), 3, axis=1)
    h_r, h_z, h_n = np.split(_affine(hx, w_hh, b_hh), 3, axis=1)
    r = _sigmoid(i_r + h_r)
    z = _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return r, z, n, h_n


@register("gru_cell", "reference", **_REF)
def gru_cell(x, hx, w_ih, w_hh, b_ih, b_hh):
    r, z, n, _ = _gru_gates(x, hx, w_ih, w_hh, b_ih, b_hh)
    return (1 - z) * n + z * hx


@register("gru_cell_backward", "reference", **_REF)
def gru_cell_backward(grad_h, x, hx, w_ih, w_hh, b_ih, b_hh):
    r, z, n, h_n = _gru_gates(x, hx, w_ih, w_hh, b_ih, b_hh)
    grad_n_pre = grad_h * (1 - z) * (1 - n ** 2)
    grad_r_pre = grad_n_pre * h_n * r * (1 - r)
    grad_z_pre = grad_h * (hx - n) * z * (1 - z)
    grad_gi = np.concatenate([grad_r_pre, grad_z_pre, grad_n_pre], axis=1)
    grad_gh = np.concatenate([grad_r_pre, grad_z_pre, grad_n_pre * r], axis=1)
    gx, ghx, gw_ih, gw_hh, gb_ih, gb_hh = _affine_backward(
        grad_gi, grad_gh, x, hx, w_ih, w_hh, b_ih, b_hh)
    return gx, ghx + grad_h * z, gw_ih, gw_hh, gb_ih, gb_hh


# --------------------------------------------------------------------------- sequences
#
# A step maps (x_t, state, weights) to the next state, where state is (h,) or (h, c); its
# backward maps (grad of the next state, x_t, state, weights) to
# (grad x_t, grad of state, grads of the four weights).

def _lstm_step(x, state, w):
    return lstm_cell(x, *state, *w)


def _lstm_step_backward(grad_state, x, state, w):
    gx, ghx, gcx, *gw = lstm_cell_backward(*grad_state, x, *state, *w)
    return gx, (ghx, gcx), gw


def _gru_step(x, state, w):
    return (gru_cell(x, *state, *w),)


def _gru_step_backward(grad_state, x, state, w):
    gx, ghx, *gw = gru_cell_backward(*grad_state, x, *state, *w)
    return gx, (ghx,), gw


def _simple_steps(nonlinearity):
    def step(x, state, w):
        return (_simple_cell(nonlinearity, x, *state, *w),)

    def step_backward(grad_state, x, state, w):
        gx, ghx, *gw = _simple_cell_backward(nonlinearity, *grad_state, x, *state, *w)
        return gx, (ghx,), gw
    return step, step_backward


def _times(T, direction):
    return range(T - 1, -1, -1) if direction else range(T)


def _forward(step, x, states0, params, num_layers, bidirectional, masks):
    """Run the stack; returns (out, final states, tape) where tape[l] = (input of layer l,
    [states before each time step, per direction])."""
    T = x.shape[0]
    D = 2 if bidirectional else 1
    layer_in, finals, tape = x, [], []
    for layer in range(num_layers):
        if layer > 0 and masks is not None:
            layer_in = layer_in * masks[layer - 1]
        outs, befores = [], []
        for d in range(D):
            k = layer * D + d
            w = params[4 * k: 4 * k + 4]
            state = tuple(s[k] for s in states0)
            hs, before = [None] * T, [None] * T
            for t in _times(T, d):
                before[t] = state
                state = step(layer_in[t], state, w)
                hs[t] = state[0]
            outs.append(np.stack(hs))
            befores.append(before)
            finals.append(state)
        tape.append((layer_in, befores))
        layer_in = np.concatenate(outs, axis=2)
    final_states = tuple(np.stack(s) for s in zip(*finals))
    return layer_in, final_states, tape


def _run_forward(step, x, states0, params, num_layers, bidirectional, masks, saved):
    """_forward, keeping its tape in ``saved`` when that is a list."""
    out, finals, tape = _forward(step, x, states0, params, num_layers, bidirectional, masks)
    if saved is not None:
        saved.append(tape)
    return out, finals


def _backward(step, step_backward, grad_out, grad_finals, x, states0, params, num_layers,
              bidirectional, masks, saved):
    """Backpropagation through time, from the forward's tape in ``saved`` or recomputing it;
    returns (grad x, grads of states0, grad params)."""
    tape = saved[0] if saved else _forward(step, x, states0, params, num_layers,
                                           bidirectional, masks)[2]
    T = x.shape[0]
    D = 2 if bidirectional else 1
    H = states0[0].shape[2]
    grad_states0 = [np.zeros_like(s) for s in states0]
    grad_params = [None if p is None else np.zeros_like(p) for p in params]
    for layer in reversed(range(num_layers)):
        layer_in, befores = tape[layer]
        grad_in = np.zeros_like(layer_in)
        for d in range(D):
            k = layer * D + d
            w = params[4 * k: 4 * k + 4]
            grad_state = tuple(g[k] for g in grad_finals)
            for t in reversed(_times(T, d)):
                grad_h = grad_state[0] + grad_out[t, :, d * H:(d + 1) * H]
                gx, grad_state, gw = step_backward((grad_h,) + grad_state[1:], layer_in[t],
                                                   befores[d][t], w)
                grad_in[t] += gx
                for j, g in enumerate(gw):
                    if g is not None:
                        grad_params[4 * k + j] += g
            for g0, g in zip(grad_states0, grad_state):
                g0[k] = g
        grad_out = grad_in * masks[layer - 1] if layer > 0 and masks is not None else grad_in
    return grad_out, grad_states0, grad_params


@register("lstm", "reference", **_REF)
def lstm(x, h0, c0, params, num_layers, bidirectional, masks, saved):
    out, (h_n, c_n) = _run_forward(_lstm_step, x, (h0, c0), params, num_layers, bidirectional,
                                   masks, saved)
    return out, h_n, c_n


@register("lstm_backward", "reference", **_REF)
def lstm_backward(grad_out, grad_h_n, grad_c_n, x, h0, c0, params, num_layers, bidirectional,
                  masks, saved):
    gx, (gh0, gc0), gparams = _backward(_lstm_step, _lstm_step_backward, grad_out,
                                        (grad_h_n, grad_c_n), x, (h0, c0), params, num_layers,
                                        bidirectional, masks, saved)
    return gx, gh0, gc0, gparams


@register("gru", "reference", **_REF)
def gru(x, h0, params, num_layers, bidirectional, masks, saved):
    out, (h_n,) = _run_forward(_gru_step, x, (h0,), params, num_layers, bidirectional, masks,
                               saved)
    return out, h_n


@register("gru_backward", "reference", **_REF)
def gru_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks, saved):
    gx, (gh0,), gparams = _backward(_gru_step, _gru_step_backward, grad_out, (grad_h_n,), x,
                                    (h0,), params, num_layers, bidirectional, masks, saved)
    return gx, gh0, gparams


@register("rnn", "reference", **_REF)
def rnn(x, h0, params, num_layers, bidirectional, masks, nonlinearity, saved):
    step, _ = _simple_steps(nonlinearity)
    out, (h_n,) = _run_forward(step, x, (h0,), params, num_layers, bidirectional, masks, saved)
    return out, h_n


@register("rnn_backward", "reference", **_REF)
def rnn_backward(grad_out, grad_h_n, x, h0, params, num_layers, bidirectional, masks,
                 nonlinearity, saved):
    step, step_backward = _simple_steps(nonlinearity)
    gx, (gh0,), gparams = _backward(step, step_backward, grad_out, (grad_h_n,), x, (h0,),
                                    params, num_layers, bidirectional, masks, saved)
    return gx, gh0, gparams
