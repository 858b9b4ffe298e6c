"""Recurrent ops: RNN (tanh/relu), LSTM and GRU cells and multi-layer sequences, with their
explicit backward functions (backpropagation through time for sequences).

Weights follow PyTorch's layout and gate order: ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``,
``bias_ih``/``bias_hh (G*H,)``, with the G gate blocks stacked as LSTM: i, f, g, o; GRU:
r, z, n; RNN: a single block. A sequence's ``params`` is the flat list of
``torch.nn.LSTM(...)._flat_weights``: for each layer, for each direction (forward, then
reverse), ``w_ih, w_hh, b_ih, b_hh``, or ``w_ih, w_hh`` for a network without biases.

Inter-layer dropout (``training=True`` and ``dropout > 0``, never after the last layer) uses
a mask that depends only on ``seed``, the layer and the shape, so a backward call with the same
arguments sees the same mask as the forward: the output of layer ``l`` (0-based,
``l < num_layers - 1``), in time-major layout ``(T, B, D*H)`` whatever ``batch_first`` says,
is multiplied by ``(u >= dropout) / (1 - dropout)`` (zero when ``dropout == 1``) where
``u = numpy.random.Generator(numpy.random.Philox(key=seed + l)).random((T, B, D*H))``
(float64 draws, so the mask does not depend on the dtype or the device).

A backward recomputes its forward, unless the forward was given a :class:`Reserve` and the
backward gets the same one: then it reuses the states and gate values the forward kept, as
cuDNN does with its reserve space (the layers in :mod:`gpuconv.nn` do this).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from .. import _checks as C, backend, kernels

__all__ = [
    "rnn_tanh_cell", "rnn_relu_cell", "lstm_cell", "gru_cell",
    "rnn_tanh_cell_backward", "rnn_relu_cell_backward", "lstm_cell_backward",
    "gru_cell_backward",
    "rnn", "lstm", "gru", "rnn_backward", "lstm_backward", "gru_backward", "Reserve",
]

_GATES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


# --------------------------------------------------------------------------- checks

def _shape(op: str, name: str, x, expected: tuple, why: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)} ({why}), "
                         f"got {tuple(x.shape)}")


def _check_weights(op: str, kind: str, hidden: int, in_size: int, in_what: str,
                   names: Sequence[str], main, w_ih, w_hh, b_ih, b_hh) -> None:
    """Ranks, dtypes and shapes of one layer's weights for hidden size ``hidden``."""
    n_ih, n_hh, n_bih, n_bhh = names
    C.float_array(op, n_ih, w_ih, 2)
    C.float_array(op, n_hh, w_hh, 2)
    for name, b in ((n_bih, b_ih), (n_bhh, b_hh)):
        if b is not None:
            C.float_array(op, name, b, 1)
    C.same_kind(op, "input", main, **{n_ih: w_ih, n_hh: w_hh, n_bih: b_ih, n_bhh: b_hh})
    gates = _GATES[kind]
    rows = len(gates) * hidden
    gate_text = f"{len(gates)} gate{'s' if len(gates) > 1 else ''} ({', '.join(gates)})"
    if w_ih.shape[0] != rows:
        raise ValueError(f"{op}: {n_ih} must have {rows} rows ({gate_text} x hidden size "
                         f"{hidden}), got shape {tuple(w_ih.shape)}")
    if w_ih.shape[1] != in_size:
        raise ValueError(f"{op}: {n_ih} has {w_ih.shape[1]} columns but {in_what} is {in_size}; "
                         f"expected shape {(rows, in_size)}")
    _shape(op, n_hh, w_hh, (rows, hidden), f"{gate_text} x hidden size {hidden}, by hidden "
                                            f"size {hidden}")
    for name, b in ((n_bih, b_ih), (n_bhh, b_hh)):
        if b is not None:
            _shape(op, name, b, (rows,), f"{gate_text} x hidden size {hidden}")


def _states_of(op: str, kind: str, hx, what_lstm_takes: str) -> tuple:
    """``hx`` as a tuple of states: the LSTM's pair (h, c), every other kind's one array."""
    if kind != "lstm":
        return (hx,)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{op}: hx must be {what_lstm_takes}, got {type(hx).__name__}")
    return tuple(hx)


class _Cell(NamedTuple):
    """A validated cell call with a batch axis: ``states`` is (hx,) or (hx, cx)."""

    input: Any
    states: tuple
    batched: bool


def _nonzero_sizes(op: str, name: str, x) -> None:
    """Every axis but the batch (the first of two) must be non-empty."""
    if 0 in tuple(x.shape[-1:]):
        raise ValueError(f"{op}: {name} must not have a zero-size feature axis, got shape "
                         f"{tuple(x.shape)}")


def _check_cell(op: str, kind: str, input, hx, weight_ih, weight_hh, bias_ih,
                bias_hh) -> _Cell:
    """Validate a cell call, PyTorch's way: input (B, I) or unbatched (I,), hx (B, H) or (H,)
    alike (for the LSTM a pair (h, c)); B may be 0."""
    C.float_array(op, "input", input, (1, 2))
    batched = input.ndim == 2
    names = ("hx", "cx") if kind == "lstm" else ("hx",)
    states = _states_of(op, kind, hx, "a pair (h, c) of arrays, as in torch.lstm_cell")
    for name, state in zip(names, states):
        C.float_array(op, name, state, input.ndim)
    C.same_kind(op, "input", input, **dict(zip(names, states)))
    _nonzero_sizes(op, "input", input)
    _nonzero_sizes(op, "hx", states[0])
    if not batched:
        input, states = input[None], tuple(state[None] for state in states)
    B, I = input.shape
    H = states[0].shape[1]
    for name, state in zip(names, states):
        _shape(op, name, state, (B, H), f"batch {B} of input, hidden size {H}")
    _check_weights(op, kind, H, I, f"the input size {I}",
                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), input,
                   weight_ih, weight_hh, bias_ih, bias_hh)
    return _Cell(input, states, batched)


def _unbatch(cell: _Cell, arrays: tuple) -> tuple:
    """Results shaped (B, ...) back in the caller's layout (None passes through)."""
    if cell.batched:
        return arrays
    return tuple(None if a is None else a[0] for a in arrays)


def _check_cell_grads(op: str, cell: _Cell, **grads) -> tuple:
    """Check each grad against the shape of the cell's states in the caller's layout; return
    them with a batch axis (None stays None)."""
    shape = tuple(cell.states[0].shape[1 - cell.batched:])
    out = []
    for name, grad in grads.items():
        if grad is not None:
            _check_grad(op, name, grad, cell.input, shape)
            grad = grad if cell.batched else grad[None]
        out.append(grad)
    return tuple(out)


def _check_grad(op: str, name: str, grad, main, shape: tuple) -> None:
    C.float_array(op, name, grad)
    C.same_kind(op, "input", main, **{name: grad})
    _shape(op, name, grad, shape, "the shape of the forward's result")


def _flag(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def _seed(op: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{op}: seed must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{op}: seed must be >= 0, got {value!r}")
    return int(value)


def _nonlinearity(op: str, value) -> str:
    if not isinstance(value, str) or value not in ("tanh", "relu"):
        raise ValueError(f"{op}: nonlinearity must be 'tanh' or 'relu', got {value!r}")
    return value


# --------------------------------------------------------------------------- cells

def _cell(op: str, kind: str, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, impl):
    cell = _check_cell(op, kind, input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    out = kernels.dispatch(op, impl, cell.input, *cell.states, weight_ih, weight_hh, bias_ih,
                           bias_hh)
    return _unbatch(cell, out if kind == "lstm" else (out,))


def _cell_backward(op: str, kind: str, grad_h, input, hx, weight_ih, weight_hh, bias_ih,
                   bias_hh, impl):
    cell = _check_cell(op, kind, input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    grad_h, = _check_cell_grads(op, cell, grad_h=grad_h)
    gx, ghx, *gparams = kernels.dispatch(op, impl, grad_h, cell.input, *cell.states, weight_ih,
                                         weight_hh, bias_ih, bias_hh)
    return (*_unbatch(cell, (gx, ghx)), *gparams)


@backend.interop
def rnn_tanh_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                  impl: str | None = None):
    """One Elman RNN step, h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh).

    input: (B, I) or unbatched (I,); hx: (B, H) or (H,) alike; weight_ih: (H, I); weight_hh:
    (H, H); biases: (H,) or None. B may be 0. Returns h': the shape of hx.
    """
    return _cell("rnn_tanh_cell", "rnn", input, hx, weight_ih, weight_hh, bias_ih, bias_hh,
                 impl)[0]


@backend.interop
def rnn_relu_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                  impl: str | None = None):
    """One Elman RNN step with ReLU, h' = max(x W_ih^T + b_ih + h W_hh^T + b_hh, 0).

    Shapes as :func:`rnn_tanh_cell`.
    """
    return _cell("rnn_relu_cell", "rnn", input, hx, weight_ih, weight_hh, bias_ih, bias_hh,
                 impl)[0]


@backend.interop
def gru_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
             impl: str | None = None):
    """One GRU step (PyTorch's formulation and argument order, as ``torch.gru_cell``).

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.

    input: (B, I) or unbatched (I,); hx: (B, H) or (H,) alike; weight_ih: (3H, I);
    weight_hh: (3H, H); biases: (3H,) or None. B may be 0. Returns h': the shape of hx.
    """
    return _cell("gru_cell", "gru", input, hx, weight_ih, weight_hh, bias_ih, bias_hh, impl)[0]


@backend.interop
def lstm_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
              impl: str | None = None):
    """One LSTM step (PyTorch's argument order, as ``torch.lstm_cell``).

    [i, f, g, o] = x W_ih^T + b_ih + h W_hh^T + b_hh, then i, f, o = sigmoid, g = tanh,
    c' = f * c + i * g, h' = o * tanh(c').

    input: (B, I) or unbatched (I,); hx: the pair (h, c), each (B, H) or (H,) alike;
    weight_ih: (4H, I); weight_hh: (4H, H); biases: (4H,) or None. B may be 0.
    Returns (h', c'), each the shape of h.
    """
    return _cell("lstm_cell", "lstm", input, hx, weight_ih, weight_hh, bias_ih, bias_hh, impl)


@backend.interop
def rnn_tanh_cell_backward(grad_h, input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None,
                           *, impl: str | None = None):
    """Gradients of :func:`rnn_tanh_cell` given grad_h = dL/dh' (the shape of hx).

    Returns (grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias_ih,
    grad_bias_hh), a bias gradient None where the bias is None.
    """
    return _cell_backward("rnn_tanh_cell_backward", "rnn", grad_h, input, hx, weight_ih,
                          weight_hh, bias_ih, bias_hh, impl)


@backend.interop
def rnn_relu_cell_backward(grad_h, input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None,
                           *, impl: str | None = None):
    """Gradients of :func:`rnn_relu_cell`; returns as :func:`rnn_tanh_cell_backward`."""
    return _cell_backward("rnn_relu_cell_backward", "rnn", grad_h, input, hx, weight_ih,
                          weight_hh, bias_ih, bias_hh, impl)


@backend.interop
def gru_cell_backward(grad_h, input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                      impl: str | None = None):
    """Gradients of :func:`gru_cell` given grad_h = dL/dh' (the shape of hx).

    Returns (grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias_ih,
    grad_bias_hh), a bias gradient None where the bias is None.
    """
    return _cell_backward("gru_cell_backward", "gru", grad_h, input, hx, weight_ih, weight_hh,
                          bias_ih, bias_hh, impl)


@backend.interop
def lstm_cell_backward(grad_h, grad_c, input, hx, weight_ih, weight_hh, bias_ih=None,
                       bias_hh=None, *, impl: str | None = None):
    """Gradients of :func:`lstm_cell` given grad_h = dL/dh' and grad_c = dL/dc' (each the
    shape of h; grad_c None means zero). The other arguments are the forward's, hx the pair
    (h, c).

    Returns (grad_input, (grad_h, grad_c), grad_weight_ih, grad_weight_hh, grad_bias_ih,
    grad_bias_hh), mirroring the forward's arguments; a bias gradient is None where the
    bias is None.
    """
    op = "lstm_cell_backward"
    cell = _check_cell(op, "lstm", input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    grad_h, grad_c = _check_cell_grads(op, cell, grad_h=grad_h, grad_c=grad_c)
    if grad_c is None:
        grad_c = backend.array_module(grad_h).zeros_like(grad_h)
    gx, ghx, gcx, *gparams = kernels.dispatch(op, impl, grad_h, grad_c, cell.input, *cell.states,
                                              weight_ih, weight_hh, bias_ih, bias_hh)
    gx, ghx, gcx = _unbatch(cell, (gx, ghx, gcx))
    return (gx, (ghx, gcx), *gparams)


# --------------------------------------------------------------------------- sequences

class _Seq(NamedTuple):
    """A validated sequence call in the form every impl takes."""

    x: Any                 # (T, B, I), time-major view of the input
    states: tuple          # (h0,) or (h0, c0), each (L*D, B, H)
    params: list           # 4 per layer and direction, biases None when absent
    masks: list | None     # inter-layer dropout masks (T, B, D*H)
    has_biases: bool
    batch_first: bool
    num_layers: int
    bidirectional: bool
    batched: bool          # False for an unbatched (T, I) input: results drop the batch axis


class Reserve:
    """What a sequence forward keeps for its backward: every layer's input, states and gate
    values (``T * B * H`` numbers per state and gate, per layer and direction).

    Pass a new ``Reserve()`` as ``reserve=`` to :func:`lstm` (:func:`gru`, :func:`rnn`), then
    the same object to the matching backward, which then skips recomputing the forward. It is
    valid for the forward's arrays as they were: the backward checks the op, the impl and
    the shapes, dtype and device of the input and states, but not their values; change the
    input or the parameters in between and the gradients are those of the old values.
    """

    def __init__(self) -> None:
        self.op: str | None = None
        self.impl: str | None = None
        self.key: tuple | None = None
        self.saved: list = []

    def __repr__(self) -> str:
        return "Reserve(empty)" if self.op is None else f"Reserve({self.op}, impl={self.impl!r})"


def _reserve_key(seq: "_Seq", extra: tuple) -> tuple:
    return (tuple(seq.x.shape), str(seq.x.dtype), backend.device_of(seq.x),
            tuple(tuple(s.shape) for s in seq.states), seq.num_layers, seq.bidirectional, extra)


def _check_reserve(op: str, reserve) -> None:
    if not isinstance(reserve, Reserve):
        raise TypeError(f"{op}: reserve must be a gpuconv.functional.Reserve or None, "
                        f"got {type(reserve).__name__}")


def _forward(op: str, impl: str | None, seq: "_Seq", extra: tuple, reserve):
    """Dispatch a sequence forward; fill ``reserve`` (a Reserve or None) with its tape."""
    args = (seq.x, *seq.states, seq.params, seq.num_layers, seq.bidirectional, seq.masks,
            *extra)
    if reserve is None:
        return kernels.dispatch(op, impl, *args, None)
    _check_reserve(op, reserve)
    chosen = kernels.select(op, impl, seq.x, args + (None,))
    reserve.op, reserve.impl, reserve.key, reserve.saved = op, chosen.name, None, []
    result = chosen.fn(*args, reserve.saved)
    reserve.key = _reserve_key(seq, extra)
    return result


def _backward(op: str, impl: str | None, grads: tuple, seq: "_Seq", extra: tuple, reserve):
    """Dispatch a sequence backward, from ``reserve`` when it holds the matching forward."""
    saved = None
    if reserve is not None:
        _check_reserve(op, reserve)
        forward_op = op.removesuffix("_backward")
        if reserve.op != forward_op or reserve.key != _reserve_key(seq, extra):
            raise ValueError(f"{op}: reserve holds {reserve!r} of a forward on other inputs; "
                             f"it must come from {forward_op} on these arguments")
        if impl is not None and impl != reserve.impl:
            raise ValueError(f"{op}: impl {impl!r} cannot use a reserve made by impl "
                             f"{reserve.impl!r}")
        impl, saved = reserve.impl, reserve.saved
    return kernels.dispatch(op, impl, *grads, seq.x, *seq.states, seq.params, seq.num_layers,
                            seq.bidirectional, seq.masks, *extra, saved)


def _param_names(num_layers: int, D: int, per: int) -> list[str]:
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[:per]
    return [f"params[{i}] ({kind}_l{layer}{'_reverse' if d else ''})"
            for i, (layer, d, kind) in enumerate(
                (layer, d, kind) for layer in range(num_layers) for d in range(D)
                for kind in kinds)]


def _check_params(op: str, kind: str, params, num_layers: int, D: int, x) -> list:
    """Validate ``params`` and return it with 4 entries per layer and direction."""
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"{op}: params must be a list of arrays, got {type(params).__name__}")
    n = num_layers * D
    if len(params) not in (4 * n, 2 * n):
        raise ValueError(
            f"{op}: params must hold {4 * n} arrays (w_ih, w_hh, b_ih, b_hh for each of "
            f"num_layers={num_layers} x {D} direction{'s' if D > 1 else ''}) or {2 * n} "
            f"without biases, got {len(params)}")
    per = 4 if len(params) == 4 * n else 2
    params = list(params)
    names = _param_names(num_layers, D, per)
    C.float_array(op, names[1], params[1], 2)
    H = params[1].shape[1]
    if H == 0:
        raise ValueError(f"{op}: the hidden size (columns of {names[1]}) must be positive, "
                         f"got shape {tuple(params[1].shape)}")
    out = []
    for layer in range(num_layers):
        in_size, in_what = ((x.shape[2], "the input size") if layer == 0 else
                            (D * H, f"layer {layer}'s input size (num_directions x hidden size)"))
        for d in range(D):
            k = per * (layer * D + d)
            group = params[k:k + per] + [None] * (4 - per)
            group_names = names[k:k + per] + ["bias_ih", "bias_hh"][:4 - per]
            _check_weights(op, kind, H, in_size, in_what, group_names, x, *group)
            out += group
    return out


def _initial_states(op: str, kind: str, hx, shape: tuple, x, batched: bool) -> tuple:
    """The initial states with a batch axis, zeros when hx is None; unbatched calls give
    them as (L*D, H)."""
    names = ("h0", "c0") if kind == "lstm" else ("hx",)
    if hx is None:
        xp = backend.array_module(x)
        return tuple(xp.zeros(shape, x.dtype) for _ in names)
    states = _states_of(op, kind, hx, "None or a pair (h0, c0)")
    why = (f"num_layers x num_directions = {shape[0]}, "
           + (f"batch {shape[1]}, " if batched else "") + f"hidden size {shape[2]}")
    user_shape = shape if batched else (shape[0], shape[2])
    for name, s in zip(names, states):
        C.float_array(op, name, s, len(user_shape))
        C.same_kind(op, "input", x, **{name: s})
        _shape(op, name, s, user_shape, why)
    return states if batched else tuple(s[:, None] for s in states)


def _dropout_masks(x, shape: tuple, num_layers: int, dropout: float, training: bool,
                   seed: int) -> list | None:
    if not training or dropout == 0 or num_layers == 1:
        return None
    scale = 1 / (1 - dropout) if dropout < 1 else 0.0
    xp = backend.array_module(x)
    return [xp.asarray(np.where(np.random.Generator(np.random.Philox(key=seed + layer))
                                .random(shape) >= dropout, scale, 0.0).astype(x.dtype))
            for layer in range(num_layers - 1)]


def _prepare(op: str, kind: str, input, hx, params, num_layers, bidirectional, batch_first,
             dropout, training, seed) -> _Seq:
    C.float_array(op, "input", input, (2, 3))
    if input.shape[0 if input.ndim == 2 or not batch_first else 1] == 0 or input.shape[-1] == 0:
        raise ValueError(f"{op}: input must have at least one time step and one feature, "
                         f"got shape {tuple(input.shape)}")
    num_layers = C.positive_int(op, "num_layers", num_layers)
    bidirectional = _flag(op, "bidirectional", bidirectional)
    batch_first = _flag(op, "batch_first", batch_first)
    training = _flag(op, "training", training)
    dropout = C.finite_float(op, "dropout", dropout, low=0.0, high=1.0)
    seed = _seed(op, seed)
    batched = input.ndim == 3
    # An unbatched (T, I) input is a batch of one, time-major whatever batch_first says.
    x = input[:, None] if not batched else input.swapaxes(0, 1) if batch_first else input
    T, B, _ = x.shape
    D = 2 if bidirectional else 1
    params4 = _check_params(op, kind, params, num_layers, D, x)
    H = params4[1].shape[1]
    states = _initial_states(op, kind, hx, (num_layers * D, B, H), x, batched)
    masks = _dropout_masks(x, (T, B, D * H), num_layers, dropout, training, seed)
    return _Seq(x, states, params4, masks, len(params) == 4 * num_layers * D,
                batch_first and batched, num_layers, bidirectional, batched)


def _output_grads(op: str, seq: _Seq, grad_output, final_grads: dict) -> tuple:
    """grad_output in time-major layout and the final-state grads, zeros where None."""
    xp = backend.array_module(seq.x)
    h0 = seq.states[0]
    T, B, _ = seq.x.shape
    out_shape = (T, B, h0.shape[0] // seq.num_layers * h0.shape[2])
    if grad_output is None:
        grad_output = xp.zeros(out_shape, seq.x.dtype)
    elif not seq.batched:
        _check_grad(op, "grad_output", grad_output, seq.x, (T, out_shape[2]))
        grad_output = grad_output[:, None]
    else:
        user_shape = (B, T, out_shape[2]) if seq.batch_first else out_shape
        _check_grad(op, "grad_output", grad_output, seq.x, user_shape)
        grad_output = grad_output.swapaxes(0, 1) if seq.batch_first else grad_output
    finals = []
    for name, g in final_grads.items():
        if g is None:
            g = xp.zeros(h0.shape, seq.x.dtype)
        else:
            _check_grad(op, name, g, seq.x, _user_state_shape(seq))
            g = g if seq.batched else g[:, None]
        finals.append(g)
    return (grad_output, *finals)


def _user_state_shape(seq: _Seq) -> tuple:
    shape = tuple(seq.states[0].shape)
    return shape if seq.batched else (shape[0], shape[2])


def _user_layout(seq: _Seq, array):
    """A time-major (T, B, F) result in the caller's layout: (B, T, F) when batch_first,
    (T, F) for an unbatched input."""
    if not seq.batched:
        return array[:, 0]
    if not seq.batch_first:
        return array
    return backend.array_module(array).ascontiguousarray(array.swapaxes(0, 1))


def _user_state(seq: _Seq, state):
    """A final state or its gradient (L*D, B, H) in the caller's layout."""
    return state if seq.batched or state is None else state[:, 0]


def _user_params(seq: _Seq, grads: list) -> list:
    return list(grads) if seq.has_biases else [g for i, g in enumerate(grads) if i % 4 < 2]


_SEQ_DOC = """
    input: (T, B, I), or (B, T, I) when batch_first, or unbatched (T, I) (batch_first is then
    ignored, as in PyTorch); T >= 1, B may be 0. params: the flat list of weights (module
    docstring). num_layers stacked layers, each bidirectional or not; D = 2 if bidirectional
    else 1, H the hidden size. Initial states are (num_layers * D, B, H) ((num_layers * D, H)
    unbatched), index layer * D + direction, zeros when hx is None. output: (T, B, D*H) (or
    (B, T, D*H), or (T, D*H)), the last layer's h at every step, forward direction in the
    first H columns; final states are shaped as the initial ones. dropout applies to
    the output of every layer but the last when training is True, with the seeded mask of the
    module docstring.
"""


@backend.interop
def rnn(input, hx, params: Sequence, num_layers: int = 1, bidirectional: bool = False,
        batch_first: bool = False, dropout: float = 0.0, training: bool = False, seed: int = 0,
        nonlinearity: str = "tanh", *, reserve: Reserve | None = None, impl: str | None = None):
    """Multi-layer Elman RNN, h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) with
    act = tanh or relu (``nonlinearity``). hx: (num_layers * D, B, H) or None.

    Returns (output, h_n).
    """
    op = "rnn"
    nonlinearity = _nonlinearity(op, nonlinearity)
    seq = _prepare(op, "rnn", input, hx, params, num_layers, bidirectional, batch_first,
                   dropout, training, seed)
    out, h_n = _forward(op, impl, seq, (nonlinearity,), reserve)
    return _user_layout(seq, out), _user_state(seq, h_n)


@backend.interop
def gru(input, hx, params: Sequence, num_layers: int = 1, bidirectional: bool = False,
        batch_first: bool = False, dropout: float = 0.0, training: bool = False, seed: int = 0,
        *, reserve: Reserve | None = None, impl: str | None = None):
    """Multi-layer GRU, each step as :func:`gru_cell`. hx: (num_layers * D, B, H) or None.

    Returns (output, h_n).
    """
    op = "gru"
    seq = _prepare(op, "gru", input, hx, params, num_layers, bidirectional, batch_first,
                   dropout, training, seed)
    out, h_n = _forward(op, impl, seq, (), reserve)
    return _user_layout(seq, out), _user_state(seq, h_n)


@backend.interop
def lstm(input, hx, params: Sequence, num_layers: int = 1, bidirectional: bool = False,
         batch_first: bool = False, dropout: float = 0.0, training: bool = False, seed: int = 0,
         *, reserve: Reserve | None = None, impl: str | None = None):
    """Multi-layer LSTM, each step as :func:`lstm_cell`. hx: a pair (h0, c0), each
    (num_layers * D, B, H), or None.

    Returns (output, (h_n, c_n)).
    """
    op = "lstm"
    seq = _prepare(op, "lstm", input, hx, params, num_layers, bidirectional, batch_first,
                   dropout, training, seed)
    out, h_n, c_n = _forward(op, impl, seq, (), reserve)
    return _user_layout(seq, out), (_user_state(seq, h_n), _user_state(seq, c_n))


_BACKWARD_DOC = """
    grad_output: dL/doutput, shaped as the forward's output; grad_h_n (and grad_c_n): dL/dh_n
    (dL/dc_n), shaped as h_n; each may be None (zero). The other arguments are the forward's.
    The forward is recomputed (same dropout masks), or taken from ``reserve`` when the forward
    filled it, then backpropagated through time. grad_params mirrors params (same length and
    order).
"""


@backend.interop
def rnn_backward(grad_output, grad_h_n, input, hx, params: Sequence, num_layers: int = 1,
                 bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                 training: bool = False, seed: int = 0, nonlinearity: str = "tanh", *,
                 reserve: Reserve | None = None, impl: str | None = None):
    """Gradients of :func:`rnn`. Returns (grad_input, grad_hx or None when hx is None,
    grad_params).
    """
    op = "rnn_backward"
    nonlinearity = _nonlinearity(op, nonlinearity)
    seq = _prepare(op, "rnn", input, hx, params, num_layers, bidirectional, batch_first,
                   dropout, training, seed)
    grads = _output_grads(op, seq, grad_output, {"grad_h_n": grad_h_n})
    gx, gh0, gparams = _backward(op, impl, grads, seq, (nonlinearity,), reserve)
    return (_user_layout(seq, gx), None if hx is None else _user_state(seq, gh0),
            _user_params(seq, gparams))


@backend.interop
def gru_backward(grad_output, grad_h_n, input, hx, params: Sequence, num_layers: int = 1,
                 bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                 training: bool = False, seed: int = 0, *, reserve: Reserve | None = None,
                 impl: str | None = None):
    """Gradients of :func:`gru`. Returns (grad_input, grad_hx or None when hx is None,
    grad_params).
    """
    op = "gru_backward"
    seq = _prepare(op, "gru", input, hx, params, num_layers, bidirectional, batch_first,
                   dropout, training, seed)
    grads = _output_grads(op, seq, grad_output, {"grad_h_n": grad_h_n})
    gx, gh0, gparams = _backward(op, impl, grads, seq, (), reserve)
    return (_user_layout(seq, gx), None if hx is None else _user_state(seq, gh0),
            _user_params(seq, gparams))


@backend.interop
def lstm_backward(grad_output, grad_h_n, grad_c_n, input, hx, params: Sequence,
                  num_layers: int = 1, bidirectional: bool = False, batch_first: bool = False,
                  dropout: float = 0.0, training: bool = False, seed: int = 0, *,
                  reserve: Reserve | None = None, impl: str | None = None):
    """Gradients of :func:`lstm`. Returns (grad_input, (grad_h0, grad_c0) or None when hx is
    None, grad_params).
    """
    op = "lstm_backward"
    seq = _prepare(op, "lstm", input, hx, params, num_layers, bidirectional, batch_first,
                   dropout, training, seed)
    grads = _output_grads(op, seq, grad_output, {"grad_h_n": grad_h_n, "grad_c_n": grad_c_n})
    gx, gh0, gc0, gparams = _backward(op, impl, grads, seq, (), reserve)
    return (_user_layout(seq, gx),
            None if hx is None else (_user_state(seq, gh0), _user_state(seq, gc0)),
            _user_params(seq, gparams))


for _fn in (rnn, gru, lstm):
    _fn.__doc__ += _SEQ_DOC
for _fn in (rnn_backward, gru_backward, lstm_backward):
    _fn.__doc__ += _SEQ_DOC + _BACKWARD_DOC
del _fn
