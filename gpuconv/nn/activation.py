"""Activation layers and Dropout.

``inplace`` is accepted where torch has it, for signature compatibility, and ignored: the
backward pass needs the forward's input, so the layers never overwrite it.
"""
from __future__ import annotations

import numpy as np

from .. import _checks as C, functional as F, init
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout"]


class _Activation(Module):
    """y = op(x, *args); backward calls op_backward(grad, x, *args), passing the saved
    output too for the ops whose derivative is cheapest from it."""

    _op = None
    _op_backward = None
    _pass_output = False

    def _args(self) -> tuple:
        return ()

    def forward(self, input):
        out = type(self)._op(input, *self._args())
        self._save(input, out)
        return out

    def backward(self, grad_output):
        input, out = self._saved()
        kwargs = {"output": out} if self._pass_output else {}
        return type(self)._op_backward(grad_output, input, *self._args(), **kwargs)


class ReLU(_Activation):
    """y = max(x, 0)."""

    _op, _op_backward = F.relu, F.relu_backward

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace


class LeakyReLU(_Activation):
    """y = x where x > 0, else negative_slope * x."""

    _op, _op_backward = F.leaky_relu, F.leaky_relu_backward

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = C.finite_float("LeakyReLU", "negative_slope", negative_slope)
        self.inplace = inplace

    def _args(self) -> tuple:
        return (self.negative_slope,)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(_Activation):
    """y = x where x > 0, else alpha * (exp(x) - 1)."""

    _op, _op_backward = F.elu, F.elu_backward

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = C.finite_float("ELU", "alpha", alpha)
        self.inplace = inplace

    def _args(self) -> tuple:
        return (self.alpha,)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x))."""

    _op, _op_backward, _pass_output = F.sigmoid, F.sigmoid_backward, True


class Tanh(_Activation):
    """y = tanh(x)."""

    _op, _op_backward, _pass_output = F.tanh, F.tanh_backward, True


class _AlongDim(_Activation):
    _pass_output = True

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def _args(self) -> tuple:
        return (self.dim,)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """Softmax along ``dim`` (default -1, the last axis; torch has no useful default)."""

    _op, _op_backward = F.softmax, F.softmax_backward


class LogSoftmax(_AlongDim):
    """log(softmax(x)) along ``dim`` (default -1), computed stably."""

    _op, _op_backward = F.log_softmax, F.log_softmax_backward


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the
    rest by 1 / (1 - p); in eval mode, the identity.

    Each training forward draws a fresh mask seed, so masks differ from step to step, from a
    generator: by default the package-wide one that :func:`gpuconv.nn.manual_seed` reseeds
    (so a whole run replays from one seed), or, with ``seed=``, this layer's own generator
    seeded with it. Backward reuses the forward's seed, so it applies the same mask.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, seed: int | None = None):
        super().__init__()
        self.p = C.finite_float("Dropout", "p", p, low=0.0, high=1.0)
        self.inplace = inplace
        self._generator = None if seed is None else np.random.default_rng(seed)

    def _next_seed(self) -> int:
        gen = self._generator if self._generator is not None else init.default_generator()
        return int(gen.integers(0, 2 ** 64, dtype=np.uint64))

    def forward(self, input):
        training = self.training and self.p > 0
        seed = self._next_seed() if training else 0
        self._save(input, training, seed)
        return F.dropout(input, self.p, training, seed)

    def backward(self, grad_output):
        input, training, seed = self._saved()
        return F.dropout_backward(grad_output, input, self.p, training, seed)

    def extra_repr(self) -> str:
        return f"p={self.p}"
