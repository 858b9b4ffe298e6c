"""Activation layers and Dropout.

``inplace`` is accepted where torch has it, for signature compatibility, and ignored: the
backward pass needs the forward's input, so the layers never overwrite it.
"""
from __future__ import annotations


from .. import _checks as C, functional as F, graphs, init
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout"]


class _Activation(Module):
    """y = op(x, *args); backward calls op_backward(grad, x, *args), passing the saved
    output too for the ops whose derivative is cheapest from it."""

    _op = None
    _op_backward = None
    _pass_output = False
    samples_independent = True

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

    @property
    def samples_independent(self) -> bool:
        """Along an axis after the batch's (the last one, for batched input)."""
        return self.dim >= 1 or self.dim == -1

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

    Each training forward draws the next mask from a Philox stream (key ``(seed, offset)``,
    the offset moving on by one per mask), so masks differ from step to step: by default the
    package-wide stream that :func:`gpuconv.nn.manual_seed` resets (so a whole run replays
    from one seed), or, with ``seed=``, this layer's own stream. Backward reuses the
    forward's key, so it applies the same mask. Inside a CUDA graph capture the layer also
    passes the stream's device counter, so that each replay draws a new mask
    (:mod:`gpuconv.graphs`).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, seed: int | None = None):
        super().__init__()
        self.p = C.finite_float("Dropout", "p", p, low=0.0, high=1.0)
        self.inplace = inplace
        self._philox = None if seed is None else graphs.PhiloxStream(seed)

    @property
    def samples_independent(self) -> bool:
        """Only as the identity: a mask is one draw for the whole batch."""
        return not (self.training and self.p > 0)

    def forward(self, input):
        training = self.training and self.p > 0
        philox = self._philox if self._philox is not None else init.default_philox()
        key = philox.draw() if training else (0, 0, None)
        self._save(input, training, key)
        seed, offset, delta = key
        return F.dropout(input, self.p, training, seed, offset=offset, offset_delta=delta)

    def backward(self, grad_output):
        input, training, (seed, offset, delta) = self._saved()
        return F.dropout_backward(grad_output, input, self.p, training, seed, offset=offset,
                                  offset_delta=delta)

    def extra_repr(self) -> str:
        return f"p={self.p}"
