"""Activations: relu, leaky_relu, elu, sigmoid, tanh, softmax, log_softmax, dropout, and
bias_act (a per-channel bias add fused with one of the pointwise activations).

Every op takes an array of any shape and floating dtype and returns a new array of the same
shape and dtype (``dropout`` with ``training=False`` returns its input itself, like torch).

Backward convention: each ``*_backward`` takes ``grad_output`` (shaped like the forward's
result) followed by the forward's input and arguments, and returns ``grad_input``. It
recomputes what it needs from the input. The four ops whose derivative is cheapest in terms
of their result (``sigmoid``, ``tanh``, ``softmax``, ``log_softmax``) also take that saved
result as ``output=``, which skips the recomputation; it must be the forward's result for
this input (only its shape, dtype and device are checked).
"""
from __future__ import annotations

import numpy as np

from .. import _checks as C, backend, kernels

__all__ = [
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "elu", "elu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "softmax", "softmax_backward",
    "log_softmax", "log_softmax_backward", "dropout", "dropout_backward", "bias_act",
    "bias_act_backward", "BIAS_ACTIVATIONS",
]

# The activations bias_act fuses with the bias add.
BIAS_ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh")

_SEED_LIMIT = 2 ** 64


def _grad_pair(op: str, grad_output, input) -> None:
    """``input`` and ``grad_output``: floating, same dtype, device and shape."""
    C.float_array(op, "input", input)
    C.float_array(op, "grad_output", grad_output)
    C.same_kind(op, "input", input, grad_output=grad_output)
    C.shape_is(op, "grad_output", grad_output, input.shape)


def _saved_output(op: str, output, input) -> None:
    if output is None:
        return
    C.float_array(op, "output", output)
    C.same_kind(op, "input", input, output=output)
    C.shape_is(op, "output", output, input.shape)


def _dim(op: str, dim, input) -> int:
    """``dim`` as a non-negative axis of ``input`` (negative counts from the end)."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {C.shown(dim)}")
    ndim = input.ndim
    if ndim == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension, got shape ()")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{op}: dim {dim} is out of range for input of shape "
                         f"{tuple(input.shape)} (valid: {-ndim} to {ndim - 1})")
    return int(dim) % ndim


def _along_dim(op: str, impl, input, *args):
    """Dispatch an op that normalises along a dim; an empty input (any zero-size axis, the
    dim's included, as torch allows) has an empty result and needs no kernel."""
    if input.size == 0:
        return backend.array_module(input).zeros_like(input)
    return kernels.dispatch(op, impl, input, *args)


def _dropout_args(op: str, input, p, training, seed, offset, offset_delta
                  ) -> tuple[float, bool, int, int]:
    p = C.finite_float(op, "p", p, low=0.0, high=1.0)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {C.shown(training)}")
    for name, value in (("seed", seed), ("offset", offset)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{op}: {name} must be an int, got {C.shown(value)}")
        if not 0 <= value < _SEED_LIMIT:
            raise ValueError(f"{op}: {name} must be in [0, 2**64), got {value}")
    if offset_delta is not None:
        if not C.is_array(offset_delta) or backend.device_of(offset_delta) != \
                backend.device_of(input):
            raise TypeError(f"{op}: offset_delta must be an array on input's device "
                            f"({backend.device_of(input)}), got {type(offset_delta).__name__}")
        if offset_delta.dtype != np.uint64 or tuple(offset_delta.shape) != (1,):
            raise TypeError(f"{op}: offset_delta must be a uint64 array of shape (1,), got "
                            f"{offset_delta.dtype} of shape {tuple(offset_delta.shape)}")
    return p, bool(training), int(seed), int(offset)


# --------------------------------------------------------------------------- pointwise

@backend.interop
def relu(input, *, impl: str | None = None):
    """Rectified linear unit, ``y = max(x, 0)``.

    input: any shape, floating dtype. Returns an array of the same shape and dtype.
    """
    C.float_array("relu", "input", input)
    return kernels.dispatch("relu", impl, input)


@backend.interop
def relu_backward(grad_output, input, *, impl: str | None = None):
    """``grad_input = grad_output * (x > 0)`` (the gradient at 0 is 0, as in torch).

    grad_output, input: the same shape and dtype. Returns grad_input of that shape.
    """
    _grad_pair("relu_backward", grad_output, input)
    return kernels.dispatch("relu_backward", impl, grad_output, input)


@backend.interop
def leaky_relu(input, negative_slope: float = 0.01, *, impl: str | None = None):
    """``y = x`` where ``x > 0``, else ``negative_slope * x``.

    input: any shape, floating dtype; negative_slope: any finite number.
    """
    C.float_array("leaky_relu", "input", input)
    slope = C.finite_float("leaky_relu", "negative_slope", negative_slope)
    return kernels.dispatch("leaky_relu", impl, input, slope)


@backend.interop
def leaky_relu_backward(grad_output, input, negative_slope: float = 0.01, *,
                        impl: str | None = None):
    """``grad_input = grad_output`` where ``x > 0``, else ``negative_slope * grad_output``."""
    _grad_pair("leaky_relu_backward", grad_output, input)
    slope = C.finite_float("leaky_relu_backward", "negative_slope", negative_slope)
    return kernels.dispatch("leaky_relu_backward", impl, grad_output, input, slope)


@backend.interop
def elu(input, alpha: float = 1.0, *, impl: str | None = None):
    """Exponential linear unit: ``y = x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``.

    input: any shape, floating dtype; alpha: any finite number (torch allows any sign).
    """
    C.float_array("elu", "input", input)
    alpha = C.finite_float("elu", "alpha", alpha)
    return kernels.dispatch("elu", impl, input, alpha)


@backend.interop
def elu_backward(grad_output, input, alpha: float = 1.0, *, impl: str | None = None):
    """``grad_input = grad_output`` where ``x > 0``, else ``grad_output * alpha * exp(x)``."""
    _grad_pair("elu_backward", grad_output, input)
    alpha = C.finite_float("elu_backward", "alpha", alpha)
    return kernels.dispatch("elu_backward", impl, grad_output, input, alpha)


@backend.interop
def sigmoid(input, *, impl: str | None = None):
    """Logistic function ``y = 1 / (1 + exp(-x))``, without overflow for any finite x.

    input: any shape, floating dtype.
    """
    C.float_array("sigmoid", "input", input)
    return kernels.dispatch("sigmoid", impl, input)


@backend.interop
def sigmoid_backward(grad_output, input, *, output=None, impl: str | None = None):
    """``grad_input = grad_output * y * (1 - y)`` with ``y = sigmoid(x)``.

    output: the saved ``sigmoid(input)``, optional; given, it is used instead of recomputing.
    """
    _grad_pair("sigmoid_backward", grad_output, input)
    _saved_output("sigmoid_backward", output, input)
    return kernels.dispatch("sigmoid_backward", impl, grad_output, input, output)


@backend.interop
def tanh(input, *, impl: str | None = None):
    """Hyperbolic tangent, ``y = tanh(x)``. input: any shape, floating dtype."""
    C.float_array("tanh", "input", input)
    return kernels.dispatch("tanh", impl, input)


@backend.interop
def tanh_backward(grad_output, input, *, output=None, impl: str | None = None):
    """``grad_input = grad_output * (1 - y**2)`` with ``y = tanh(x)``.

    output: the saved ``tanh(input)``, optional; given, it is used instead of recomputing.
    """
    _grad_pair("tanh_backward", grad_output, input)
    _saved_output("tanh_backward", output, input)
    return kernels.dispatch("tanh_backward", impl, grad_output, input, output)


# --------------------------------------------------------------------------- along a dim

@backend.interop
def softmax(input, dim: int, *, impl: str | None = None):
    """``y = exp(x - m) / sum(exp(x - m), dim)`` with ``m = max(x, dim)``.

    input: at least 1-D, floating dtype; dim: the axis that sums to 1 (negative counts from
    the end). Subtracting the maximum keeps every exponent <= 0, so large inputs (1e4) give
    no inf or NaN.
    """
    C.float_array("softmax", "input", input)
    dim = _dim("softmax", dim, input)
    return _along_dim("softmax", impl, input, dim)


@backend.interop
def softmax_backward(grad_output, input, dim: int, *, output=None, impl: str | None = None):
    """``grad_input = y * (g - sum(g * y, dim))`` with ``y = softmax(x, dim)``, ``g = grad_output``.

    output: the saved ``softmax(input, dim)``, optional; given, it is used instead of recomputing.
    """
    _grad_pair("softmax_backward", grad_output, input)
    dim = _dim("softmax_backward", dim, input)
    _saved_output("softmax_backward", output, input)
    return _along_dim("softmax_backward", impl, grad_output, input, dim, output)


@backend.interop
def log_softmax(input, dim: int, *, impl: str | None = None):
    """``y = x - m - log(sum(exp(x - m), dim))`` with ``m = max(x, dim)``.

    input: at least 1-D, floating dtype; dim: the normalised axis (negative counts from the end).
    """
    C.float_array("log_softmax", "input", input)
    dim = _dim("log_softmax", dim, input)
    return _along_dim("log_softmax", impl, input, dim)


@backend.interop
def log_softmax_backward(grad_output, input, dim: int, *, output=None,
                         impl: str | None = None):
    """``grad_input = g - exp(y) * sum(g, dim)``, ``y = log_softmax(x, dim)``, ``g = grad_output``.

    output: the saved ``log_softmax(input, dim)``, optional; given, it is used instead of
    recomputing.
    """
    _grad_pair("log_softmax_backward", grad_output, input)
    dim = _dim("log_softmax_backward", dim, input)
    _saved_output("log_softmax_backward", output, input)
    return _along_dim("log_softmax_backward", impl, grad_output, input, dim, output)


# --------------------------------------------------------------------------- dropout

@backend.interop
def dropout(input, p: float = 0.5, training: bool = True, seed: int = 0, *, offset: int = 0,
            offset_delta=None, impl: str | None = None):
    """Inverted dropout: ``y = x * keep / (1 - p)``, each element kept with probability ``1 - p``.

    input: any shape, floating dtype; p: drop probability in [0, 1] (p=1 gives zeros);
    training=False returns ``input`` itself. seed, offset: ints in [0, 2**64), the Philox
    key; offset_delta: None or a uint64 array of shape (1,) on input's device whose value
    is added to ``offset`` (mod 2**64) where the mask is drawn -- on the GPU, by the kernel,
    so that a CUDA graph replay reads the offset of its step (see :mod:`gpuconv.graphs`).

    The mask is a pure function of ``(seed, offset, input.size)``, so the backward pass
    recomputes it and a run replays exactly; callers move the offset on from call to call
    (``nn.Dropout`` does). The rule, shared by every impl on every device: number the
    elements ``i = 0, 1, ...`` in C order of ``input.shape``; ``w_i`` is 64-bit word
    ``i % 4`` of Philox4x64-10 with key ``(seed, offset)`` applied to the counter
    ``(i // 4 + 1, 0, 0, 0)``; element ``i`` is kept iff ``u_i = (w_i >> 11) * 2**-53 >= p``.
    This is exactly ``numpy.random.Generator(numpy.random.Philox(key=seed + 2**64 * offset))
    .random(input.size) >= p``.
    """
    C.float_array("dropout", "input", input)
    p, training, seed, offset = _dropout_args("dropout", input, p, training, seed, offset,
                                              offset_delta)
    if not training:
        return input
    return kernels.dispatch("dropout", impl, input, p, seed, offset, offset_delta)


@backend.interop
def dropout_backward(grad_output, input, p: float = 0.5, training: bool = True, seed: int = 0,
                     *, offset: int = 0, offset_delta=None, impl: str | None = None):
    """``grad_input = grad_output * keep / (1 - p)`` with the forward's mask (same seed,
    offset and offset_delta).

    grad_output, input: the same shape and dtype. training=False returns ``grad_output`` itself.
    """
    _grad_pair("dropout_backward", grad_output, input)
    p, training, seed, offset = _dropout_args("dropout_backward", input, p, training, seed,
                                              offset, offset_delta)
    if not training:
        return grad_output
    return kernels.dispatch("dropout_backward", impl, grad_output, p, seed, offset,
                            offset_delta)


# --------------------------------------------------------------------------- fused bias

def _bias_act_args(op: str, input, bias, activation, param) -> float:
    C.float_array(op, "input", input)
    C.float_array(op, "bias", bias, ndim=1)
    C.same_kind(op, "input", input, bias=bias)
    if input.ndim < 2 or bias.shape[0] != input.shape[1]:
        raise ValueError(f"{op}: bias must have shape (C,) for input of shape (N, C, *); got "
                         f"bias {tuple(bias.shape)} and input {tuple(input.shape)}")
    if activation not in BIAS_ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {', '.join(BIAS_ACTIVATIONS)}, "
                         f"got {C.shown(activation)}")
    return C.finite_float(op, "param", param)


@backend.interop
def bias_act(input, bias, activation: str = "relu", param: float = 0.0, *,
             impl: str | None = None):
    """``y = act(x + bias[c])``: a layer's bias added along axis 1 and its activation applied,
    in one pass over memory where the impl fuses them (the GPU's does).

    input: (N, C, *) (a convolution's output computed without bias, or (N, F) after a linear
    layer); bias: (C,), same dtype; activation: one of :data:`BIAS_ACTIVATIONS`; param:
    leaky_relu's negative_slope or elu's alpha (ignored by the others). Returns y shaped as
    input.
    """
    param = _bias_act_args("bias_act", input, bias, activation, param)
    return kernels.dispatch("bias_act", impl, input, bias, activation, param)


@backend.interop
def bias_act_backward(grad_output, input, bias, activation: str = "relu", param: float = 0.0,
                      *, output=None, impl: str | None = None):
    """Gradients of :func:`bias_act`: ``(grad_input, grad_bias)``.

    ``grad_input = grad_output * act'(x + bias[c])`` (which is also the gradient of the
    layer's pre-bias output) and ``grad_bias[c]`` its sum over every axis but 1. output: the
    saved forward result, optional; sigmoid and tanh then take their derivative from it.
    """
    param = _bias_act_args("bias_act_backward", input, bias, activation, param)
    _grad_pair("bias_act_backward", grad_output, input)
    _saved_output("bias_act_backward", output, input)
    return tuple(kernels.dispatch("bias_act_backward", impl, grad_output, input, bias,
                                  activation, param, output))
