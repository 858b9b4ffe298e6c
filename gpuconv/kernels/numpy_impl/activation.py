"""Fast CPU activations in plain NumPy (contract: :mod:`gpuconv.kernels.reference.activation`).

Each op writes its result into one array from ``backend.empty`` through ufunc ``out=``
arguments and works in place from there; large arrays are cut into ranges that run on
gpuconv's thread pool (:func:`gpuconv.threads.elementwise`). Choices between two values per
element are branch-free: relu's backward is a select in numba; elsewhere a boolean mask is
multiplied in (one operand being 0, the sum of the two cases is exact), because
``where=``/``np.where``/``np.putmask`` run several times slower on the unpredictable masks
that activations produce. The masks are written so that a NaN input takes PyTorch's branch
(``~(x <= 0)`` is true for NaN where ``x > 0`` is not).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ... import backend, threads
from . import register
from ..reference.activation import philox_key

# Dropout draws random words in blocks of this many elements, so its mask stays in cache
# and never costs 8 bytes per element of the whole input.
_DROPOUT_BLOCK = 1 << 16


def _out(like):
    return backend.empty(like.shape, like.dtype)


def _map(kernel, like, *arrays, streaming: bool = False, **params):
    """``kernel(*arrays, out=..., **params)`` into a new array shaped like ``like``, in
    ranges on the thread pool (:func:`gpuconv.threads.elementwise`; ``streaming``: the
    kernel runs at memory speed and takes longer ranges)."""
    return threads.elementwise(kernel, _out(like), *arrays, streaming=streaming, **params)


def _select_factor(out, keep_one, other_mask, other):
    """Fill ``out`` with 1 where ``keep_one`` and ``other`` where ``other_mask`` (complementary
    masks) as ``other * other_mask + keep_one``; one of the two terms is 0, so it is exact."""
    np.multiply(other_mask, other, out=out)
    return np.add(out, keep_one, out=out)


# Kernels: each writes ``out`` from the same elements of its inputs.

def _relu(x, out):
    np.maximum(x, 0, out=out)


@njit(cache=True, nogil=True)
def _relu_backward_flat(g, x, out):
    zero = out.dtype.type(0)
    for i in range(out.size):
        out[i] = zero if x[i] <= 0 else g[i]


def _relu_backward(g, x, out):
    # One select per element, as torch (an inf or NaN gradient on the dead side gives 0; a
    # NaN input passes the gradient): a numba loop that LLVM vectorises, 9x faster than
    # NumPy's mask, product and NaN check (1.22 against 0.14 ms for 602K floats).
    _relu_backward_flat(_flat_like(g, out), _flat_like(x, out), out.reshape(-1))


def _flat_like(a, out):
    """``a`` broadcast to ``out``'s shape, C-contiguous and flat (a view when it already is:
    ``np.broadcast_to`` alone costs some 3 us a call)."""
    if a.shape == out.shape and a.flags.c_contiguous:
        return a.reshape(-1)
    return np.ascontiguousarray(np.broadcast_to(a, out.shape)).reshape(-1)


def _leaky_relu(x, out, slope):
    # For x > 0, x beats slope * x under max when slope <= 1 and under min when slope > 1;
    # for x < 0 the same comparison picks slope * x.
    pick = np.maximum if slope <= 1 else np.minimum
    np.multiply(x, slope, out=out)
    pick(x, out, out=out)


def _leaky_relu_backward(g, x, out, slope):
    positive = x > 0
    _select_factor(out, positive, ~positive, out.dtype.type(slope))
    np.multiply(out, g, out=out)


def _elu(x, out, alpha):
    np.minimum(x, 0, out=out)
    np.expm1(out, out=out)
    np.multiply(out, alpha, out=out)
    # The negative part is 0 where x > 0 and max(x, 0) is 0 elsewhere: the sum is exact.
    np.add(out, np.maximum(x, 0), out=out)


def _elu_backward(g, x, out, alpha):
    np.minimum(x, 0, out=out)
    np.exp(out, out=out)
    np.multiply(out, alpha, out=out)
    _select_factor(out, x > 0, x <= 0, out)
    np.multiply(out, g, out=out)


def _sigmoid(x, out):
    # sigmoid(x) = n / (1 + e) with e = exp(-|x|) <= 1 (no overflow) and n = 1 for x >= 0,
    # n = e for x < 0; n = max(e, [x >= 0]) because e <= 1. copysign gives -|x| in one pass.
    np.copysign(x, -1, out=out)
    np.exp(out, out=out)
    denominator = np.add(out, 1)
    np.maximum(out, x >= 0, out=out)
    np.divide(out, denominator, out=out)


def _sigmoid_backward(g, y, out):
    np.subtract(1, y, out=out)
    np.multiply(out, y, out=out)
    np.multiply(out, g, out=out)


def _tanh(x, out):
    np.tanh(x, out=out)


def _tanh_backward(g, y, out):
    np.multiply(y, y, out=out)
    np.subtract(1, out, out=out)
    np.multiply(out, g, out=out)


@register("relu", "numpy")
def relu(x):
    return _map(_relu, x, x, streaming=True)


@register("relu_backward", "numpy")
def relu_backward(g, x):
    return _map(_relu_backward, g, g, x, streaming=True)


@register("leaky_relu", "numpy")
def leaky_relu(x, slope):
    if slope == 0:
        return relu(x)  # max(x, 0 * x) would give NaN for x = inf
    return _map(_leaky_relu, x, x, slope=slope)


@register("leaky_relu_backward", "numpy")
def leaky_relu_backward(g, x, slope):
    return _map(_leaky_relu_backward, g, g, x, slope=slope)


@register("elu", "numpy")
def elu(x, alpha):
    return _map(_elu, x, x, alpha=alpha)


@register("elu_backward", "numpy")
def elu_backward(g, x, alpha):
    return _map(_elu_backward, g, g, x, alpha=alpha)


@register("sigmoid", "numpy")
def sigmoid(x):
    return _map(_sigmoid, x, x)


@register("sigmoid_backward", "numpy")
def sigmoid_backward(g, x, output):
    return _map(_sigmoid_backward, g, g, sigmoid(x) if output is None else output)


@register("tanh", "numpy")
def tanh(x):
    return _map(_tanh, x, x)


@register("tanh_backward", "numpy")
def tanh_backward(g, x, output):
    return _map(_tanh_backward, g, g, tanh(x) if output is None else output)


def _shifted(x, dim):
    """``x - max(x, dim)`` in a fresh output array (every exponent of it is <= 0)."""
    return np.subtract(x, np.max(x, axis=dim, keepdims=True), out=_out(x))


@register("softmax", "numpy")
def softmax(x, dim):
    out = _shifted(x, dim)
    np.exp(out, out=out)
    return np.divide(out, np.sum(out, axis=dim, keepdims=True), out=out)


@register("softmax_backward", "numpy")
def softmax_backward(g, x, dim, output):
    y = softmax(x, dim) if output is None else output
    out = np.multiply(g, y, out=_out(g))
    dot = np.sum(out, axis=dim, keepdims=True)
    np.subtract(g, dot, out=out)
    return np.multiply(out, y, out=out)


@register("log_softmax", "numpy")
def log_softmax(x, dim):
    out = _shifted(x, dim)
    log_sum = np.log(np.sum(np.exp(out), axis=dim, keepdims=True))
    return np.subtract(out, log_sum, out=out)


@register("log_softmax_backward", "numpy")
def log_softmax_backward(g, x, dim, output):
    # exp(log_softmax(x)) is softmax(x); either way `out` is a fresh array to work in.
    out = softmax(x, dim) if output is None else np.exp(output, out=_out(g))
    np.multiply(out, np.sum(g, axis=dim, keepdims=True), out=out)
    return np.subtract(g, out, out=out)


def _keep_threshold(p: float) -> np.uint64:
    """Element ``i`` is kept iff its Philox word ``w_i >= _keep_threshold(p)`` (0 <= p < 1).

    The rule is ``u_i = (w_i >> 11) * 2**-53 >= p``, i.e. ``w_i >> 11 >= ceil(p * 2**53)``
    (``p * 2**53`` is exact), i.e. ``w_i >= ceil(p * 2**53) << 11``: no float conversion.
    """
    return np.uint64(math.ceil(p * 2.0 ** 53) << 11)


# Dropout is linear in its input, so the backward pass is the forward pass applied to
# grad_output with the same mask and scale.
@register("dropout", "numpy")
@register("dropout_backward", "numpy")
def dropout(x, p, seed, offset, offset_delta):
    if p == 1:  # torch multiplies by the zero mask: an inf or NaN input gives NaN
        return np.multiply(x, 0, out=_out(x))
    out = _out(x)
    if p == 0:
        np.copyto(out, x)
        return out
    words = np.random.Philox(key=philox_key(seed, offset, offset_delta))
    threshold = _keep_threshold(p)
    scale = x.dtype.type(1 / (1 - p))
    src, dst = x.reshape(-1), out.reshape(-1)
    keep = np.empty(min(x.size, _DROPOUT_BLOCK), dtype=bool)
    for start in range(0, x.size, _DROPOUT_BLOCK):
        stop = min(start + _DROPOUT_BLOCK, x.size)
        k = np.greater_equal(words.random_raw(stop - start), threshold, out=keep[:stop - start])
        d = dst[start:stop]
        np.multiply(src[start:stop], scale, out=d)
        np.multiply(d, k, out=d)
    return out


# --------------------------------------------------------------------------- bias + activation

def _plus_bias(x, bias):
    z = backend.empty(x.shape, x.dtype)
    return np.add(x, bias.reshape((1, -1) + (1,) * (x.ndim - 2)), out=z)


# name: (forward, backward, whether both take the parameter, whether backward takes output)
_BIAS_ACTS = {"relu": (relu, relu_backward, False, False),
              "leaky_relu": (leaky_relu, leaky_relu_backward, True, False),
              "elu": (elu, elu_backward, True, False),
              "sigmoid": (sigmoid, sigmoid_backward, False, True),
              "tanh": (tanh, tanh_backward, False, True)}


@register("bias_act", "numpy")
def bias_act(x, bias, activation, param):
    z = _plus_bias(x, bias)
    if activation == "identity":
        return z
    forward, _, takes_param, _ = _BIAS_ACTS[activation]
    return forward(z, param) if takes_param else forward(z)


@register("bias_act_backward", "numpy")
def bias_act_backward(g, x, bias, activation, param, output):
    if activation == "identity":
        grad_z = np.array(g)  # a new array: the result never aliases grad_output
    else:
        _, backward, takes_param, takes_output = _BIAS_ACTS[activation]
        z = None if takes_output and output is not None else _plus_bias(x, bias)
        extra = (param,) if takes_param else (output,) if takes_output else ()
        grad_z = backward(g, z, *extra)
    return grad_z, grad_z.sum(axis=(0,) + tuple(range(2, g.ndim)))
