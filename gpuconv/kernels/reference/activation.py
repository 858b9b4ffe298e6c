"""Reference activations: the formulas as written, in NumPy, for any float dtype.

Python scalars (slope, alpha, p) never promote an array's dtype, so float32 stays float32.

Backward functions take ``(grad_output, input, <the forward's arguments>)``; those of
sigmoid, tanh, softmax and log_softmax end with ``output``, the saved forward result or None
(then it is recomputed from ``input``). ``dropout`` takes ``(input, p, seed)`` and
``dropout_backward`` ``(grad_output, p, seed)``: the mask needs only the seed and the shape.

``bias_act`` takes ``(x, bias, activation, param)``: ``x`` (N, C, *), ``bias`` (C,), the
activation's name (``identity``, ``relu``, ``leaky_relu``, ``elu``, ``sigmoid``, ``tanh``)
and its parameter (leaky_relu's slope, elu's alpha; ignored by the others); it returns
``act(x + bias[c])``. ``bias_act_backward`` takes ``(grad_output, x, bias, activation, param,
output)`` and returns ``(grad_x, grad_bias)``.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register

_LOWEST = -100


@register("relu", "reference", priority=_LOWEST)
def relu(x):
    return np.where(x <= 0, 0, x)


@register("relu_backward", "reference", priority=_LOWEST)
def relu_backward(g, x):
    return np.where(x <= 0, 0, g)


@register("leaky_relu", "reference", priority=_LOWEST)
def leaky_relu(x, slope):
    return np.where(x > 0, x, x * slope)


@register("leaky_relu_backward", "reference", priority=_LOWEST)
def leaky_relu_backward(g, x, slope):
    return np.where(x > 0, g, g * slope)


@register("elu", "reference", priority=_LOWEST)
def elu(x, alpha):
    # expm1 of min(x, 0): no overflow on the discarded branch, full precision near 0.
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@register("elu_backward", "reference", priority=_LOWEST)
def elu_backward(g, x, alpha):
    return np.where(x > 0, g, g * alpha * np.exp(np.minimum(x, 0)))


@register("sigmoid", "reference", priority=_LOWEST)
def sigmoid(x):
    # Both branches use exp(-|x|) <= 1, so nothing overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register("sigmoid_backward", "reference", priority=_LOWEST)
def sigmoid_backward(g, x, output):
    y = sigmoid(x) if output is None else output
    return g * y * (1 - y)


@register("tanh", "reference", priority=_LOWEST)
def tanh(x):
    return np.tanh(x)


@register("tanh_backward", "reference", priority=_LOWEST)
def tanh_backward(g, x, output):
    y = np.tanh(x) if output is None else output
    return g * (1 - y * y)


@register("softmax", "reference", priority=_LOWEST)
def softmax(x, dim):
    e = np.exp(x - np.max(x, axis=dim, keepdims=True))
    return e / np.sum(e, axis=dim, keepdims=True)


@register("softmax_backward", "reference", priority=_LOWEST)
def softmax_backward(g, x, dim, output):
    y = softmax(x, dim) if output is None else output
    return y * (g - np.sum(g * y, axis=dim, keepdims=True))


@register("log_softmax", "reference", priority=_LOWEST)
def log_softmax(x, dim):
    shifted = x - np.max(x, axis=dim, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=dim, keepdims=True))


@register("log_softmax_backward", "reference", priority=_LOWEST)
def log_softmax_backward(g, x, dim, output):
    y = log_softmax(x, dim) if output is None else output
    return g - np.exp(y) * np.sum(g, axis=dim, keepdims=True)


def philox_key(seed: int, offset: int = 0, offset_delta=None) -> int:
    """The 128-bit Philox key ``(seed, offset + offset_delta[0])`` as one int, the form
    ``numpy.random.Philox(key=...)`` takes (its low word first). A GPU ``offset_delta`` is
    read back here (a synchronisation; the CUDA C kernel reads it on the device instead)."""
    if offset_delta is not None:
        offset = (offset + int(backend.to_numpy(offset_delta)[0])) % 2 ** 64
    return seed + (offset << 64)


def dropout_uniforms(key: int, shape) -> np.ndarray:
    """The uniforms ``u`` in [0, 1) behind the dropout mask of :func:`gpuconv.functional.dropout`:
    Philox keyed by ``key`` (see :func:`philox_key`), one per element in C order; an element
    is kept iff ``u >= p``."""
    return np.random.Generator(np.random.Philox(key=key)).random(shape)


@register("dropout", "reference", priority=_LOWEST)
def dropout(x, p, seed, offset, offset_delta):
    if p == 1:
        return x * x.dtype.type(0)
    keep = dropout_uniforms(philox_key(seed, offset, offset_delta), x.shape) >= p
    return x * np.where(keep, x.dtype.type(1 / (1 - p)), x.dtype.type(0))


@register("dropout_backward", "reference", priority=_LOWEST)
def dropout_backward(g, p, seed, offset, offset_delta):
    # The same mask and scale as the forward pass: dropout is linear in its input.
    return dropout(g, p, seed, offset, offset_delta)


def _channel(bias, ndim: int):
    """bias (C,) shaped to broadcast along axis 1 of an ndim-dimensional array."""
    return bias.reshape((1, -1) + (1,) * (ndim - 2))


def _bias_act_z(x, bias):
    return x + _channel(bias, x.ndim)


@register("bias_act", "reference", priority=_LOWEST)
def bias_act(x, bias, activation, param):
    z = _bias_act_z(x, bias)
    return {"identity": lambda: z, "relu": lambda: relu(z),
            "leaky_relu": lambda: leaky_relu(z, param), "elu": lambda: elu(z, param),
            "sigmoid": lambda: sigmoid(z), "tanh": lambda: tanh(z)}[activation]()


@register("bias_act_backward", "reference", priority=_LOWEST)
def bias_act_backward(g, x, bias, activation, param, output):
    z = _bias_act_z(x, bias)
    grad_z = {"identity": lambda: g.copy(), "relu": lambda: relu_backward(g, z),
              "leaky_relu": lambda: leaky_relu_backward(g, z, param),
              "elu": lambda: elu_backward(g, z, param),
              "sigmoid": lambda: sigmoid_backward(g, z, output),
              "tanh": lambda: tanh_backward(g, z, output)}[activation]()
    return grad_z, grad_z.sum(axis=tuple(a for a in range(g.ndim) if a != 1))
