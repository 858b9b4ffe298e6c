"""Recurrent layers RNN, LSTM and GRU, with torch's arguments, parameter names and outputs.

Parameters, in torch's order: for each layer ``k`` and direction (``""``, then ``"_reverse"``
when bidirectional), ``weight_ih_l{k}`` (G*H, I or D*H), ``weight_hh_l{k}`` (G*H, H) and,
with ``bias``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), with G = 1 (RNN), 3 (GRU), 4 (LSTM)
and D = 2 if bidirectional else 1. All start as U(-1/sqrt(H), 1/sqrt(H)), as in torch.

``forward(input, hx=None)`` returns torch's tuple; ``backward(grad_output, grad_h_n, ...)``
takes the gradients of that tuple's parts (each may be None, meaning zero), returns the
gradient of ``input``, accumulates the parameters' ``.grad`` and leaves the gradient of the
forward's ``hx`` in ``self.grad_hx`` (None when the forward had ``hx=None``).

Inter-layer dropout draws a fresh seed per training forward from the package-wide generator
(:func:`gpuconv.nn.manual_seed`); backward reuses it, so it sees the forward's masks.

In training mode the forward keeps a :class:`gpuconv.functional.Reserve` (every step's states
and gate values) and backward starts from it instead of recomputing the forward; in eval
mode nothing extra is kept and a backward recomputes.
"""
from __future__ import annotations

import math
from typing import Any

from .. import _checks as C, functional as F, init
from ._defaults import float_dtype, new_parameter
from .module import Module, accumulate_grad

__all__ = ["RNN", "LSTM", "GRU"]

_SEED_LIMIT = 2 ** 62  # the functional op keys layer l's dropout mask with seed + l


class _RNNBase(Module):
    _gates: int

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = None):
        super().__init__()
        name = type(self).__name__
        self.input_size = C.positive_int(name, "input_size", input_size)
        self.hidden_size = C.positive_int(name, "hidden_size", hidden_size)
        self.num_layers = C.positive_int(name, "num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = C.finite_float(name, "dropout", dropout, low=0.0, high=1.0)
        self.bidirectional = bool(bidirectional)
        self.grad_hx = None
        dtype = float_dtype(name, dtype)
        directions = 2 if bidirectional else 1
        rows = self._gates * hidden_size
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else directions * hidden_size
            for suffix in ("", "_reverse")[:directions]:
                shapes = {"weight_ih": (rows, layer_input), "weight_hh": (rows, hidden_size)}
                if bias:
                    shapes.update(bias_ih=(rows,), bias_hh=(rows,))
                for kind, shape in shapes.items():
                    param_name = f"{kind}_l{layer}{suffix}"
                    setattr(self, param_name, new_parameter(shape, dtype))
                    self._flat_weights_names.append(param_name)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _flat_params(self) -> list:
        return [getattr(self, n).data for n in self._flat_weights_names]

    def _op_args(self, training: bool, seed: int) -> tuple:
        return (self.num_layers, self.bidirectional, self.batch_first, self.dropout, training,
                seed)

    def _next_seed(self) -> int:
        if not (self.training and self.dropout > 0 and self.num_layers > 1):
            return 0
        return int(init.default_generator().integers(0, _SEED_LIMIT))

    def forward(self, input, hx=None):
        training, seed = self.training, self._next_seed()
        reserve = F.Reserve() if training else None
        out = type(self)._op(input, hx, self._flat_params(), *self._op_args(training, seed),
                             reserve=reserve)
        self._save(input, hx, training, seed, reserve)
        return out

    def _run_backward(self, *grads):
        input, hx, training, seed, reserve = self._saved()
        gx, ghx, gparams = type(self)._op_backward(*grads, input, hx, self._flat_params(),
                                                   *self._op_args(training, seed),
                                                   reserve=reserve)
        for name, g in zip(self._flat_weights_names, gparams):
            accumulate_grad(getattr(self, name), g)
        self.grad_hx = ghx
        return gx

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for flag, default in (("bias", True), ("batch_first", False), ("bidirectional", False)):
            if getattr(self, flag) != default:
                s += f", {flag}={getattr(self, flag)}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


class RNN(_RNNBase):
    """Elman RNN, h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.

    forward(input (T, B, I) or (B, T, I) with batch_first, hx (L*D, B, H) or None)
    -> (output (T, B, D*H), h_n (L*D, B, H)).
    """

    _gates = 1
    _op, _op_backward = F.rnn, F.rnn_backward

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: Any = None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype)
        self.nonlinearity = nonlinearity

    def _op_args(self, training: bool, seed: int) -> tuple:
        return super()._op_args(training, seed) + (self.nonlinearity,)

    def backward(self, grad_output=None, grad_h_n=None):
        return self._run_backward(grad_output, grad_h_n)


class GRU(_RNNBase):
    """GRU (torch's formulation, gates r, z, n).

    forward(input, hx (L*D, B, H) or None) -> (output (T, B, D*H), h_n (L*D, B, H)).
    """

    _gates = 3
    _op, _op_backward = F.gru, F.gru_backward

    def backward(self, grad_output=None, grad_h_n=None):
        return self._run_backward(grad_output, grad_h_n)


class LSTM(_RNNBase):
    """LSTM (gates i, f, g, o).

    forward(input, hx (h0, c0) or None) -> (output (T, B, D*H), (h_n, c_n)), each state
    (L*D, B, H).
    """

    _gates = 4
    _op, _op_backward = F.lstm, F.lstm_backward

    def backward(self, grad_output=None, grad_h_n=None, grad_c_n=None):
        return self._run_backward(grad_output, grad_h_n, grad_c_n)

