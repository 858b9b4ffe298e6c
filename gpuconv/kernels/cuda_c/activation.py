"""Launchers for ``kernels/activation.cu``: pointwise activations, softmax and log_softmax
along any axis, and dropout with the Philox mask, forward and backward, float32/float64.

Registry contract as every activation impl (see ``gpuconv/kernels/reference/activation.py``).
The pointwise kernels choose the activation by an int code, so one kernel per direction
serves all five; they also take an optional per-channel bias, which makes them the fused
``bias_act`` op (bias add and activation in one pass). Softmax rows are owned by a warp when the normalised
axis is the innermost (coalesced reads along it) and by a thread otherwise (coalesced reads
across neighbouring rows). Dropout draws the same Philox4x64-10 words as the CPU impls, so
the masks agree bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from .. import register
from ..numpy_impl.activation import _keep_threshold
from . import DTYPES, NULL, REDUCE_THREADS, gpu_op, run_blocks, run_threads

__all__ = ["ACTIVATIONS"]

FAMILY = "activation"
WARP_LANES = 32
# Elements decided by one Philox block (four 64-bit words).
PHILOX_WORDS = 4
# Values of one channel reduced by one block of the bias gradient (16 per thread): enough
# work per block to hide the reduction, enough blocks to fill the GPU for few channels.
BIAS_CHUNK = 16 * REDUCE_THREADS
# Activation codes: must equal enum ActivationCode in kernels/activation.cu.
ACTIVATIONS = {"identity": 0, "relu": 1, "leaky_relu": 2, "elu": 3, "sigmoid": 4, "tanh": 5}


def _run(name: str, dtype, threads_needed: int, args: tuple) -> None:
    run_threads(FAMILY, name, dtype, threads_needed, args)


def _run_reduce(name: str, dtype, blocks: int, args: tuple) -> None:
    run_blocks(FAMILY, name, dtype, blocks, args)


def _contiguous(*arrays):
    cp = backend.cupy_or_none()
    return tuple(NULL if a is None else cp.ascontiguousarray(a) for a in arrays)


def _register(*ops: str):
    """Register the decorated launcher as the ``cuda`` impl of each of ``ops``."""
    def deco(fn):
        fn = gpu_op(ops[0])(fn)
        for op in ops:
            register(op, "cuda", device="cuda", dtypes=DTYPES, priority=10)(fn)
        return fn
    return deco


# --------------------------------------------------------------------------- pointwise

def _pointwise_args(x, bias, activation: str, param: float) -> tuple:
    """(total, C, S, act, param): x seen as (N, C, S) around the bias's channel axis 1, or as
    one channel of x.size values without bias."""
    if bias is None:
        channels, plane = 1, x.size
    else:
        channels, plane = x.shape[1], math.prod(x.shape[2:])
    return (np.int64(x.size), np.int32(channels), np.int64(plane),
            np.int32(ACTIVATIONS[activation]), x.dtype.type(param))


def _forward(x, bias, activation: str, param: float = 0.0):
    cp = backend.cupy_or_none()
    y = backend.empty(x.shape, x.dtype, cp)
    xc, b = _contiguous(x, bias)
    _run("activation_fwd", x.dtype, x.size,
         (xc, b, y, *_pointwise_args(x, bias, activation, param)))
    return y


def _backward(g, x, bias, output, activation: str, param: float = 0.0):
    cp = backend.cupy_or_none()
    gx = backend.empty(x.shape, x.dtype, cp)
    gc, xc, b, out = _contiguous(g, x, bias, output)
    _run("activation_bwd", x.dtype, x.size,
         (gc, xc, b, out, gx, *_pointwise_args(x, bias, activation, param)))
    return gx


@_register("relu")
def relu(x):
    return _forward(x, None, "relu")


@_register("relu_backward")
def relu_backward(g, x):
    return _backward(g, x, None, None, "relu")


@_register("leaky_relu")
def leaky_relu(x, slope):
    return _forward(x, None, "leaky_relu", slope)


@_register("leaky_relu_backward")
def leaky_relu_backward(g, x, slope):
    return _backward(g, x, None, None, "leaky_relu", slope)


@_register("elu")
def elu(x, alpha):
    return _forward(x, None, "elu", alpha)


@_register("elu_backward")
def elu_backward(g, x, alpha):
    return _backward(g, x, None, None, "elu", alpha)


@_register("sigmoid")
def sigmoid(x):
    return _forward(x, None, "sigmoid")


@_register("sigmoid_backward")
def sigmoid_backward(g, x, output):
    return _backward(g, x, None, output, "sigmoid")


@_register("tanh")
def tanh(x):
    return _forward(x, None, "tanh")


@_register("tanh_backward")
def tanh_backward(g, x, output):
    return _backward(g, x, None, output, "tanh")


# --------------------------------------------------------------------------- fused bias

@_register("bias_act")
def bias_act(x, bias, activation, param):
    return _forward(x, bias, activation, param)


@_register("bias_act_backward")
def bias_act_backward(grad_output, x, bias, activation, param, output):
    """grad_x in one elementwise pass; grad_bias by per-chunk partial sums of each channel,
    then one block per channel adding its partials in a fixed order (deterministic)."""
    cp = backend.cupy_or_none()
    N, C = x.shape[0], x.shape[1]
    plane = math.prod(x.shape[2:])
    chunks = max(1, math.ceil(N * plane / BIAS_CHUNK))
    grad_x = backend.empty(x.shape, x.dtype, cp)
    partial = backend.empty((C, chunks), x.dtype, cp)
    grad_bias = backend.empty((C,), x.dtype, cp)
    g, xc, b, out = _contiguous(grad_output, x, bias, output)
    _run_reduce("bias_act_bwd_partial", x.dtype, C * chunks,
                (g, xc, b, out, grad_x, partial, np.int32(N), np.int32(C), np.int64(plane),
                 np.int64(BIAS_CHUNK), np.int64(chunks), np.int32(ACTIVATIONS[activation]),
                 x.dtype.type(param)))
    _run_reduce("bias_act_bwd_reduce", x.dtype, C, (partial, grad_bias, np.int32(C),
                                                    np.int64(chunks)))
    return grad_x, grad_bias


# --------------------------------------------------------------------------- along a dim

def _rows(x, dim: int) -> tuple:
    """(outer, D, inner): x seen with the normalised axis in the middle."""
    return (np.int64(math.prod(x.shape[:dim])), np.int64(x.shape[dim]),
            np.int64(math.prod(x.shape[dim + 1:])))


def _run_rows(name: str, x, dim: int, arrays: tuple) -> None:
    """Kernel ``name`` over the rows of ``x`` along ``dim``: a warp per row when the axis is
    innermost, else a thread per row."""
    outer, D, inner = _rows(x, dim)
    variant, lanes = ("warp", WARP_LANES) if inner == 1 else ("thread", 1)
    _run(f"{name}_{variant}", x.dtype, outer * inner * lanes, (*arrays, outer, D, inner))


def _along_dim_forward(name: str, x, dim: int):
    cp = backend.cupy_or_none()
    y = backend.empty(x.shape, x.dtype, cp)
    _run_rows(f"{name}_fwd", x, dim, (*_contiguous(x), y))
    return y


def _along_dim_backward(name: str, g, x, dim: int, output):
    cp = backend.cupy_or_none()
    gx = backend.empty(x.shape, x.dtype, cp)
    _run_rows(f"{name}_bwd", x, dim, (*_contiguous(g, x, output), gx))
    return gx


@_register("softmax")
def softmax(x, dim):
    return _along_dim_forward("softmax", x, dim)


@_register("softmax_backward")
def softmax_backward(g, x, dim, output):
    return _along_dim_backward("softmax", g, x, dim, output)


@_register("log_softmax")
def log_softmax(x, dim):
    return _along_dim_forward("log_softmax", x, dim)


@_register("log_softmax_backward")
def log_softmax_backward(g, x, dim, output):
    return _along_dim_backward("log_softmax", g, x, dim, output)


# --------------------------------------------------------------------------- dropout

# Dropout is linear in its input, so the backward pass is the forward pass applied to
# grad_output with the same mask and scale.
@_register("dropout", "dropout_backward")
def dropout(x, p, seed, offset, offset_delta):
    cp = backend.cupy_or_none()
    if p == 1:  # torch multiplies by the zero mask: an inf or NaN input gives NaN
        return x * x.dtype.type(0)
    y = backend.empty(x.shape, x.dtype, cp)
    (xc,) = _contiguous(x)
    _run("dropout_fwd", x.dtype, math.ceil(x.size / PHILOX_WORDS),
         (xc, y, np.int64(x.size), np.uint64(seed), np.uint64(offset),
          NULL if offset_delta is None else offset_delta, _keep_threshold(p),
          x.dtype.type(1 / (1 - p))))
    return y
