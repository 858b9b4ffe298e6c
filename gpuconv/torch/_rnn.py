"""Recurrent cells and sequences as custom ops.

Cells (``rnn_tanh_cell``, ``rnn_relu_cell``, ``gru_cell``, ``lstm_cell``) save their inputs;
their backward recomputes the one step, as :func:`gpuconv.functional.lstm_cell_backward` does.

Sequences (``rnn``, ``gru``, ``lstm``) keep the forward's reserve (every step's states and
gate values, a :class:`gpuconv.functional.Reserve`) for the backward, as cuDNN keeps its
reserve space, so backpropagation through time does not rerun the forward. A custom op can
only hand tensors to its backward, so the op packs the reserve's arrays into one flat buffer
(one copy of what the forward wrote, the layer inputs included) and returns it with a layout
id; the backward op views the arrays back out of the buffer (no copy, read-only) and rebuilds
the Reserve from the layout, which is a function of the impl and the shapes only, recorded
once per (op, impl, shapes) in this process. The buffer's size is data-dependent for
tracing (an unbacked size), and autograd frees it after the backward. Calls that need no
gradient keep no reserve.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from .. import backend, functional as F
from ._activation import new_seed
from ._interop import arrays_of, call, define, empty_if_none

__all__ = ["rnn_tanh_cell", "rnn_relu_cell", "gru_cell", "lstm_cell", "rnn", "gru", "lstm"]

_WEIGHTS = "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh"


def _grad_or_none(grads, tensors) -> tuple:
    """The op's gradients, None for the tensors that are None (absent biases, states)."""
    return tuple(None if t is None else g for g, t in zip(grads, tensors))


def _fakes(tensors, like: torch.Tensor) -> tuple:
    return tuple(like.new_empty(0) if t is None else torch.empty_like(t) for t in tensors)


# --------------------------------------------------------------------------- cells

def _define_cell(kind: str, forward, backward, n_states: int):
    """``gpuconv::<kind>_cell(input, *states, w_ih, w_hh, b_ih, b_hh)`` and its backward, where
    the states are hx (n_states 1) or hx, cx (the LSTM)."""
    names = ("hx", "cx")[:n_states]
    states = ", ".join(f"Tensor {n}" for n in names)
    grads = ", ".join(f"Tensor grad_{n[0]}" for n in names)
    returns = ", ".join(["Tensor"] * n_states)

    def impl(*args):
        out = call(forward, *args)
        return tuple(out) if n_states > 1 else out

    def fake(input, *args):
        out = tuple(torch.empty_like(s) for s in args[:n_states])
        return out if n_states > 1 else out[0]

    def backward_impl(*args):
        tensors = args[n_states:]
        return tuple(empty_if_none(g, tensors[0]) for g in call(backward, *args))

    def backward_fake(*args):
        return _fakes(args[n_states:], args[n_states])

    op = define(f"{kind}_cell", f"(Tensor input, {states}, {_WEIGHTS}) -> ({returns})", impl,
                fake)
    op_backward = define(
        f"{kind}_cell_backward", f"({grads}, Tensor input, {states}, {_WEIGHTS}) -> "
        f"({', '.join(['Tensor'] * (n_states + 5))})", backward_impl, backward_fake)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def grad(ctx, *grad_outputs):
        tensors = ctx.saved_tensors
        grad_outputs = [torch.zeros_like(tensors[1]) if g is None else g for g in grad_outputs]
        return _grad_or_none(op_backward(*grad_outputs, *tensors), tensors)

    op.register_autograd(grad, setup_context=setup_context)
    return op


def _lstm_cell_forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    return F.lstm_cell(input, (hx, cx), w_ih, w_hh, b_ih, b_hh)


def _lstm_cell_backward(grad_h, grad_c, input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    gx, (ghx, gcx), *gparams = F.lstm_cell_backward(grad_h, grad_c, input, (hx, cx), w_ih, w_hh,
                                                    b_ih, b_hh)
    return (gx, ghx, gcx, *gparams)


_rnn_tanh_cell = _define_cell("rnn_tanh", F.rnn_tanh_cell, F.rnn_tanh_cell_backward, 1)
_rnn_relu_cell = _define_cell("rnn_relu", F.rnn_relu_cell, F.rnn_relu_cell_backward, 1)
_gru_cell = _define_cell("gru", F.gru_cell, F.gru_cell_backward, 1)
_lstm_cell = _define_cell("lstm", _lstm_cell_forward, _lstm_cell_backward, 2)


def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.rnn_tanh_cell`` computed by gpuconv, with autograd. input (B, I), hx (B, H)."""
    return _rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih, b_hh)


def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.rnn_relu_cell`` computed by gpuconv, with autograd."""
    return _rnn_relu_cell(input, hx, w_ih, w_hh, b_ih, b_hh)


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.gru_cell`` computed by gpuconv, with autograd (gates r, z, n)."""
    return _gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh)


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.lstm_cell`` computed by gpuconv, with autograd: hx is the pair (h, c);
    returns (h', c'), each (B, H)."""
    h, c = hx
    return _lstm_cell(input, h, c, w_ih, w_hh, b_ih, b_hh)


# --------------------------------------------------------------------------- the reserve

class _Leaf:
    """Where an array of a reserve lies in the flat buffer."""

    def __init__(self, offset: int, shape: tuple):
        self.offset, self.shape = offset, shape


_LAYOUTS: list = []      # layout id -> (op, impl, key, skeleton)
_LAYOUT_IDS: dict = {}   # (op, impl, key) -> layout id


def _strip(obj, leaves: list):
    """``obj`` with every array replaced by a :class:`_Leaf`; the arrays go to ``leaves``."""
    if hasattr(obj, "__array__") or hasattr(obj, "__cuda_array_interface__"):
        offset = sum(a.size for a in leaves)
        leaves.append(obj)
        return _Leaf(offset, tuple(obj.shape))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_strip(e, leaves) for e in obj)
    if hasattr(obj, "__dict__"):  # the tape objects of an impl
        stripped = copy.copy(obj)
        stripped.__dict__ = {k: _strip(v, leaves) for k, v in vars(obj).items()}
        return stripped
    return obj


def _fill(skeleton, buffer):
    """The inverse of :func:`_strip`: leaves become views of ``buffer``."""
    if isinstance(skeleton, _Leaf):
        size = int(np.prod(skeleton.shape))
        return buffer[skeleton.offset:skeleton.offset + size].reshape(skeleton.shape)
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(_fill(e, buffer) for e in skeleton)
    if hasattr(skeleton, "__dict__"):
        filled = copy.copy(skeleton)
        filled.__dict__ = {k: _fill(v, buffer) for k, v in vars(skeleton).items()}
        return filled
    return skeleton


def _pack(reserve, like: torch.Tensor) -> tuple:
    """(flat buffer, layout id) tensors holding ``reserve`` (None: an empty buffer, id -1);
    the buffer on ``like``'s device, the id on the CPU (reading it never waits for a GPU)."""
    no_reserve = like.new_empty(0), torch.tensor(-1, dtype=torch.int64)
    if reserve is None:
        return no_reserve
    leaves: list = []
    skeleton = _strip(reserve.saved, leaves)
    (x,) = arrays_of(like)
    if any(a.dtype != x.dtype for a in leaves):  # not one buffer: the backward recomputes
        return no_reserve
    key = (reserve.op, reserve.impl, reserve.key)
    if key not in _LAYOUT_IDS:
        _LAYOUT_IDS[key] = len(_LAYOUTS)
        _LAYOUTS.append((*key, skeleton))
    xp = backend.array_module(x)
    flat = xp.concatenate([a.reshape(-1) for a in leaves]) if leaves else xp.empty(0, x.dtype)
    buffer = torch.from_numpy(flat) if xp is np else torch.from_dlpack(flat)
    return buffer, torch.tensor(_LAYOUT_IDS[key], dtype=torch.int64)


def _unpack(buffer: torch.Tensor, layout: torch.Tensor):
    """The Reserve that :func:`_pack` packed, its arrays read-only views of ``buffer``."""
    layout = int(layout.item())
    if layout < 0:
        return None
    reserve = F.Reserve()
    reserve.op, reserve.impl, reserve.key, skeleton = _LAYOUTS[layout]
    (flat,) = arrays_of(buffer)
    if isinstance(flat, np.ndarray):
        flat = flat.view()
        flat.flags.writeable = False  # the backward reads the tape; a write would be a bug
    reserve.saved = _fill(skeleton, flat)
    return reserve


# --------------------------------------------------------------------------- sequences

_SEQ_ARGS = ("Tensor[] params, int num_layers, bool bidirectional, bool batch_first, "
             "float dropout, bool training, Tensor seed")


def _define_sequence(kind: str, forward, backward, n_states: int, extra: str = ""):
    """``gpuconv::<kind>`` (returning output, the final states, the reserve buffer and its
    layout id) and ``gpuconv::<kind>_backward``; ``extra`` is the schema of trailing
    arguments (rnn's nonlinearity)."""
    names = ("h0", "c0")[:n_states]
    states = ", ".join(f"Tensor? {n}" for n in names)
    grads = ", ".join(["Tensor? grad_output"] + [f"Tensor? grad_{n[0]}_n" for n in names])
    tail = f", {extra}" if extra else ""

    def split(args):
        """(input, the states as functional's hx, params, the scalar arguments)."""
        input, *states_, params = args[:n_states + 2]
        rest = args[n_states + 2:]
        hx = None if states_[0] is None else (tuple(states_) if n_states > 1 else states_[0])
        return input, hx, params, rest

    def scalars(rest):
        *flags, seed = rest[:6]
        return (*flags, int(seed.item()), *rest[6:])

    def impl(*args, keep_reserve):
        input, hx, params, rest = split(args)
        reserve = F.Reserve() if keep_reserve else None
        out, finals = call(forward, input, hx, params, *scalars(rest), reserve=reserve)
        finals = finals if n_states > 1 else (finals,)
        return (out, *finals, *_pack(reserve, input))

    def fake(input, *args, keep_reserve):
        params, num_layers, bidirectional, batch_first = args[n_states:n_states + 4]
        H = params[1].shape[1]
        D = 2 if bidirectional else 1
        T, B = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
        out = input.new_empty((B, T, D * H) if batch_first else (T, B, D * H))
        finals = [input.new_empty((num_layers * D, B, H)) for _ in range(n_states)]
        buffer = input.new_empty(torch.library.get_ctx().new_dynamic_size())
        return (out, *finals, buffer, torch.empty((), dtype=torch.int64, device="cpu"))

    def backward_impl(*args):
        output_grads = args[:n_states + 1]
        input, hx, params, rest = split(args[n_states + 1:-2])
        gx, ghx, gparams = call(backward, *output_grads, input, hx, params, *scalars(rest),
                                reserve=_unpack(*args[-2:]))
        ghx = (None,) * n_states if ghx is None else (ghx if n_states > 1 else (ghx,))
        return (gx, *(empty_if_none(g, input) for g in ghx), gparams)

    def backward_fake(*args):
        input, *states_, params = args[n_states + 1:2 * n_states + 3]
        return (torch.empty_like(input), *_fakes(states_, input), list(_fakes(params, input)))

    returns = ", ".join(["Tensor"] * (n_states + 3))
    op = define(kind, f"(Tensor input, {states}, {_SEQ_ARGS}{tail}, *, bool keep_reserve) -> "
                f"({returns})", impl, fake)
    op_backward = define(
        f"{kind}_backward", f"({grads}, Tensor input, {states}, {_SEQ_ARGS}{tail}, "
        f"Tensor reserve, Tensor layout) -> ({', '.join(['Tensor'] * (n_states + 1))}, Tensor[])",
        backward_impl, backward_fake)

    def setup_context(ctx, inputs, keyword_only_inputs, output):
        input, *states_, params = inputs[:n_states + 2]
        reserve, layout = output[-2:]
        ctx.n_params = len(params)
        ctx.args = inputs[n_states + 2:]
        ctx.mark_non_differentiable(reserve)
        ctx.save_for_backward(input, *states_, *params, reserve, layout)

    def grad(ctx, *grad_outputs):
        saved = ctx.saved_tensors
        input, states_ = saved[0], saved[1:n_states + 1]
        params = list(saved[n_states + 1:n_states + 1 + ctx.n_params])
        gx, *gstates, gparams = op_backward(*grad_outputs[:n_states + 1], input, *states_, params,
                                            *ctx.args, *saved[-2:])
        return (gx, *_grad_or_none(gstates, states_), list(_grad_or_none(gparams, params)),
                *[None] * len(ctx.args))

    op.register_autograd(grad, setup_context=setup_context)
    return op


def _lstm_forward(input, hx, params, *args, reserve):
    out, (h_n, c_n) = F.lstm(input, hx, params, *args, reserve=reserve)
    return out, (h_n, c_n)


_rnn = _define_sequence("rnn", F.rnn, F.rnn_backward, 1, "str nonlinearity")
_gru = _define_sequence("gru", F.gru, F.gru_backward, 1)
_lstm = _define_sequence("lstm", _lstm_forward, F.lstm_backward, 2)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)


def _seq_args(params, num_layers, bidirectional, batch_first, dropout, training) -> tuple:
    return (list(params), int(num_layers), bool(bidirectional), bool(batch_first),
            float(dropout), bool(training), new_seed())


def rnn(input, hx, params, num_layers=1, bidirectional=False, batch_first=False, dropout=0.0,
        training=False, nonlinearity="tanh"):
    """Multi-layer Elman RNN computed by gpuconv, with autograd; arguments and results as
    :func:`gpuconv.functional.rnn` (torch.nn.functional has no rnn), the dropout seed drawn
    from PyTorch's generator. Returns (output, h_n)."""
    out, h_n, *_ = _rnn(input, hx, *_seq_args(params, num_layers, bidirectional, batch_first,
                                              dropout, training), nonlinearity,
                        keep_reserve=_needs_grad(input, hx, *params))
    return out, h_n


def gru(input, hx, params, num_layers=1, bidirectional=False, batch_first=False, dropout=0.0,
        training=False):
    """Multi-layer GRU computed by gpuconv, with autograd (see :func:`rnn`). Returns
    (output, h_n)."""
    out, h_n, *_ = _gru(input, hx, *_seq_args(params, num_layers, bidirectional, batch_first,
                                              dropout, training),
                        keep_reserve=_needs_grad(input, hx, *params))
    return out, h_n


def lstm(input, hx, params, num_layers=1, bidirectional=False, batch_first=False, dropout=0.0,
         training=False):
    """Multi-layer LSTM computed by gpuconv, with autograd (see :func:`rnn`); hx is None or
    the pair (h0, c0). Returns (output, (h_n, c_n))."""
    h0, c0 = (None, None) if hx is None else hx
    out, h_n, c_n, *_ = _lstm(input, h0, c0, *_seq_args(params, num_layers, bidirectional,
                                                         batch_first, dropout, training),
                              keep_reserve=_needs_grad(input, h0, c0, *params))
    return out, (h_n, c_n)
