"""relu, sigmoid, tanh, softmax, log_softmax and dropout in numba.cuda, forward and backward.

Registry contract as every activation impl (see ``gpuconv/kernels/reference/activation.py``).
The kernels (``_activation_kernels.py``) mirror ``kernels/activation.cu`` in their simplest
form: thread = element for the pointwise ops (one kernel per direction, the activation chosen
by a code), thread = row for softmax, thread = Philox block for dropout. The launchers make
their inputs contiguous and flat (or ``(outer, D, inner)`` for softmax); a backward pass
whose saved output is None recomputes it with the forward kernel first.

Dropout draws the words of the rule documented in :func:`gpuconv.functional.dropout`, so
its mask equals the CPU impls' bit for bit.
"""
from __future__ import annotations

import functools
import math

from ... import backend
from .. import register
from ..numpy_impl.activation import _keep_threshold
from ..reference.activation import philox_key
from . import DTYPES, is_available, run


def _kernels():
    from . import _activation_kernels

    return _activation_kernels


_launch = functools.partial(run, "activation", grid_stride=True)


def _numba(*ops: str):
    """Register the decorated launcher as the ``numba_cuda`` impl of each of ``ops``."""
    def deco(fn):
        for op in ops:
            register(op, "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
                     priority=-10)(fn)
        return fn
    return deco


def _flat(a):
    return backend.array_module(a).ascontiguousarray(a).reshape(-1)


# --------------------------------------------------------------------------- pointwise

def _forward(x, code: int):
    y = backend.empty(x.shape, x.dtype, backend.array_module(x))
    _launch("activation_fwd", x.size, _flat(x), y.reshape(-1), code)
    return y


def _backward(g, v, code: int):
    """g * act'(z) with v = z (relu) or v = act(z) (sigmoid, tanh)."""
    gx = backend.empty(g.shape, g.dtype, backend.array_module(g))
    _launch("activation_bwd", g.size, _flat(g), _flat(v), gx.reshape(-1), code)
    return gx


@_numba("relu")
def relu(x):
    return _forward(x, _kernels().RELU)


@_numba("relu_backward")
def relu_backward(g, x):
    return _backward(g, x, _kernels().RELU)


@_numba("sigmoid")
def sigmoid(x):
    return _forward(x, _kernels().SIGMOID)


@_numba("sigmoid_backward")
def sigmoid_backward(g, x, output):
    return _backward(g, sigmoid(x) if output is None else output, _kernels().SIGMOID)


@_numba("tanh")
def tanh(x):
    return _forward(x, _kernels().TANH)


@_numba("tanh_backward")
def tanh_backward(g, x, output):
    return _backward(g, tanh(x) if output is None else output, _kernels().TANH)


# --------------------------------------------------------------------------- along a dim

def _rows(a, dim: int):
    """``a`` as a contiguous ``(outer, D, inner)`` array, the normalised axis in the middle."""
    shape = a.shape
    return backend.array_module(a).ascontiguousarray(a).reshape(
        math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:]))


def _along_dim_forward(x, dim: int, log: bool):
    y = backend.empty(x.shape, x.dtype, backend.array_module(x))
    rows = _rows(x, dim)
    _launch("softmax_fwd", rows.shape[0] * rows.shape[2], rows, _rows(y, dim), log)
    return y


def _along_dim_backward(g, x, dim: int, output, log: bool):
    y = _along_dim_forward(x, dim, log) if output is None else output
    gx = backend.empty(g.shape, g.dtype, backend.array_module(g))
    rows = _rows(g, dim)
    _launch("softmax_bwd", rows.shape[0] * rows.shape[2], rows, _rows(y, dim),
            _rows(gx, dim), log)
    return gx


@_numba("softmax")
def softmax(x, dim):
    return _along_dim_forward(x, dim, False)


@_numba("softmax_backward")
def softmax_backward(g, x, dim, output):
    return _along_dim_backward(g, x, dim, output, False)


@_numba("log_softmax")
def log_softmax(x, dim):
    return _along_dim_forward(x, dim, True)


@_numba("log_softmax_backward")
def log_softmax_backward(g, x, dim, output):
    return _along_dim_backward(g, x, dim, output, True)


# --------------------------------------------------------------------------- dropout

# Dropout is linear in its input, so the backward pass is the forward pass applied to
# grad_output with the same mask and scale.
@_numba("dropout", "dropout_backward")
def dropout(x, p, seed, offset, offset_delta):
    xp = backend.array_module(x)
    if p == 1:  # torch multiplies by the zero mask: an inf or NaN input gives NaN
        return x * x.dtype.type(0)
    k = _kernels()
    y = backend.empty(x.shape, x.dtype, xp)
    _launch("dropout_fwd", -(-x.size // k.PHILOX_WORDS), _flat(x), y.reshape(-1),
            xp.asarray(k.philox_round_keys(philox_key(seed, offset, offset_delta))),
            _keep_threshold(p), x.dtype.type(1 / (1 - p)))
    return y
