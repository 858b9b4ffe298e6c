"""gpuconv's ops as JAX functions with gradients: ``jax.custom_vjp`` over gpuconv's explicit
backwards, usable under ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

Each op runs as a ``jax.pure_callback`` into :mod:`gpuconv.functional` on the host: JAX hands
the callback NumPy arrays, gpuconv computes on them with its CPU impls, and the result goes
back into the traced computation. Output shapes are known at trace time (gpuconv's own
validation computes them, so a bad argument fails when tracing, with gpuconv's error). The
backward is a second callback into the matching ``*_backward`` with the residuals the forward
kept: its inputs, and its results where the backward uses them (a softmax's output, max
pooling's indices).

Cost on a GPU: a callback always runs on the host, so with JAX arrays on a GPU every call
copies its inputs to the host and its results back (and synchronises), and the op runs on
gpuconv's CPU impls, not its CUDA kernels. Keeping the work on the device would need an
XLA FFI custom call into gpuconv's CUDA C kernels, which this module does not have. On the
CPU the callback's cost is one host function call per op, and JAX's buffers are passed
without a copy.

The recurrent sequences (``lstm``, ``gru``, ``rnn``) recompute their forward in the backward:
a callback's outputs need shapes fixed at trace time, which the recurrent reserve does not
have (``gpuconv.torch`` keeps it). Dropout takes its seed as an integer (traced or not), as
JAX code passes keys: vary it per step. ``batch_norm`` returns the updated running statistics
instead of writing them (JAX arrays are immutable). ``jax.vmap`` runs the callback once per
batch element (``vmap_method="sequential"``).

Importing this module imports JAX; ``import gpuconv`` never does.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import functional as F
from .functional import conv as _conv, pool as _pool

__all__ = [
    "conv1d", "conv2d", "conv_transpose2d", "max_pool1d", "max_pool2d", "avg_pool1d",
    "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "relu", "leaky_relu", "elu",
    "sigmoid", "tanh", "softmax", "log_softmax", "dropout", "bias_act", "linear", "embedding",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "batch_norm", "local_response_norm",
    "rnn_tanh_cell", "rnn_relu_cell", "gru_cell", "lstm_cell", "rnn", "gru", "lstm",
]


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _like(a) -> jax.ShapeDtypeStruct:
    return _spec(a.shape, a.dtype)


def _shape_only(a) -> np.ndarray:
    """A NumPy array of ``a``'s shape and dtype that takes no memory (every stride 0), for
    gpuconv's validation, which computes output sizes from shapes."""
    return np.broadcast_to(np.zeros((), a.dtype), a.shape)


def _host(fn: Callable, result, *args):
    """Run ``fn`` on NumPy versions of ``args`` on the host; ``result`` gives the shapes."""
    def call(*arrays):
        out = fn(*arrays)
        return jax.tree.map(lambda o, r: np.asarray(o, dtype=r.dtype), out, result)
    return jax.pure_callback(call, result, *args, vmap_method="sequential")


def _differentiable(arrays: Sequence, constants: tuple) -> list[bool]:
    return [a is not None and i not in constants and jnp.issubdtype(a.dtype, jnp.floating)
            for i, a in enumerate(arrays)]


def _op(forward: Callable, backward: Callable, result: Callable, *, saves_output=False,
        constants: tuple = ()):
    """A custom_vjp op ``op(static, *arrays)``: ``forward(static, *arrays)`` and
    ``result(static, *arrays)`` (the output's ShapeDtypeStructs); ``backward(static, ct,
    *arrays[, output])`` returns one gradient per array, None for the integer ones and for
    those at ``constants`` (class weights, running statistics), whose gradient is zero."""
    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def op(static, *arrays):
        return _host(lambda *a: forward(static, *a), result(static, *arrays), *arrays)

    def fwd(static, *arrays):
        out = op(static, *arrays)
        return out, (arrays, out if saves_output else None)

    def bwd(static, residuals, ct):
        arrays, out = residuals
        wanted = _differentiable(arrays, constants)
        specs = tuple(_like(a) for a, w in zip(arrays, wanted) if w)

        def grads(ct, out, *arrays):
            extra = (out,) if saves_output else ()
            all_grads = backward(static, ct, *arrays, *extra)
            return tuple(g for g, w in zip(all_grads, wanted) if w)

        # Integer outputs (max pooling's indices) have float0 cotangents: nothing to pass.
        ct = jax.tree.map(lambda c: None if c.dtype == jax.dtypes.float0 else c, ct)
        computed = iter(_host(grads, specs, ct, out, *arrays))
        return tuple(next(computed) if w else None for w in wanted)

    op.defvjp(fwd, bwd)
    return op


def _pairs(value, n: int) -> tuple:
    return (value,) * n if isinstance(value, int) else tuple(value)


# --------------------------------------------------------------------------- convolution

def _conv_result(n: int, op: str):
    def result(static, x, w, b):
        stride, padding, dilation, groups = static
        geo = _conv._conv_geometry(op, _shape_only(x), _shape_only(w), stride, padding,
                                   dilation, groups, n)
        return _spec((x.shape[0], w.shape[0]) + geo.out_hw[2 - n:], x.dtype)
    return result


def _conv_op(n: int, forward, backward):
    op = "conv1d" if n == 1 else "conv2d"
    return _op(lambda s, x, w, b: forward(x, w, b, *s),
               lambda s, ct, x, w, b: backward(ct, x, w, b, *s), _conv_result(n, op))


_conv2d = _conv_op(2, F.conv2d, F.conv2d_backward)
_conv1d = _conv_op(1, F.conv1d, F.conv1d_backward)


def _conv_static(stride, padding, dilation, groups, n: int) -> tuple:
    return (_pairs(stride, n), padding if isinstance(padding, str) else _pairs(padding, n),
            _pairs(dilation, n), int(groups))


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`gpuconv.functional.conv2d` (``torch.nn.functional.conv2d``'s arguments) with a
    custom VJP. input (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW), bias (C_out,)."""
    return _conv2d(_conv_static(stride, padding, dilation, groups, 2), input, weight, bias)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """:func:`gpuconv.functional.conv1d` with a custom VJP. input (N, C_in, L)."""
    return _conv1d(_conv_static(stride, padding, dilation, groups, 1), input, weight, bias)


def _transpose_result(static, x, w, b):
    geo = _conv._validated_conv_transpose("conv_transpose2d", _shape_only(x), _shape_only(w),
                                          None if b is None else _shape_only(b), *static)
    return _spec((x.shape[0], w.shape[1] * geo.groups) + geo.out_hw, x.dtype)


_conv_transpose2d = _op(lambda s, x, w, b: F.conv_transpose2d(x, w, b, *s),
                        lambda s, ct, x, w, b: F.conv_transpose2d_backward(ct, x, w, b, *s),
                        _transpose_result)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """:func:`gpuconv.functional.conv_transpose2d` with a custom VJP."""
    static = (_pairs(stride, 2), _pairs(padding, 2), _pairs(output_padding, 2), int(groups),
              _pairs(dilation, 2))
    return _conv_transpose2d(static, input, weight, bias)


# --------------------------------------------------------------------------- pooling

def _pool_shape(op: str, dims: int, x, kernel_size, stride, padding, dilation, ceil_mode):
    x4, batched = _pool._input4d(op, _shape_only(x), dims)
    window = _pool._window(op, x4, dims, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool._user_shape(tuple(x4.shape[:2]) + window.out, dims, batched)


def _max_pool_op(dims: int, forward, backward):
    op = f"max_pool{dims}d"

    def result(static, x):
        shape = _pool_shape(op, dims, x, *static)
        return _spec(shape, x.dtype), _spec(shape, jnp.int64 if jax.config.jax_enable_x64
                                            else jnp.int32)

    return _op(lambda s, x: forward(x, *s, return_indices=True),
               lambda s, ct, x, out: (backward(ct[0], x, *s, indices=out[1]),),
               result, saves_output=True)


_max_pool2d = _max_pool_op(2, F.max_pool2d, F.max_pool2d_backward)
_max_pool1d = _max_pool_op(1, F.max_pool1d, F.max_pool1d_backward)


def _statics(*values) -> tuple:
    """Hashable static arguments: sequences become tuples."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`gpuconv.functional.max_pool2d` with a custom VJP through the saved indices."""
    out, indices = _max_pool2d(_statics(kernel_size, stride, padding, dilation, ceil_mode),
                               input)
    return (out, indices) if return_indices else out


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`gpuconv.functional.max_pool1d` with a custom VJP through the saved indices."""
    out, indices = _max_pool1d(_statics(kernel_size, stride, padding, dilation, ceil_mode),
                               input)
    return (out, indices) if return_indices else out


def _avg_pool_op(dims: int, forward, backward):
    def result(static, x):
        kernel_size, stride, padding, ceil_mode = static[:4]
        return _spec(_pool_shape(f"avg_pool{dims}d", dims, x, kernel_size, stride, padding, 1,
                                 ceil_mode), x.dtype)
    return _op(lambda s, x: forward(x, *s), lambda s, ct, x: (backward(ct, x, *s),), result)


_avg_pool2d = _avg_pool_op(2, F.avg_pool2d, F.avg_pool2d_backward)
_avg_pool1d = _avg_pool_op(1, F.avg_pool1d, F.avg_pool1d_backward)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """:func:`gpuconv.functional.avg_pool2d` with a custom VJP."""
    return _avg_pool2d(_statics(kernel_size, stride, padding, ceil_mode, count_include_pad,
                                divisor_override), input)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """:func:`gpuconv.functional.avg_pool1d` with a custom VJP."""
    return _avg_pool1d(_statics(kernel_size, stride, padding, ceil_mode, count_include_pad),
                       input)


def _adaptive_op(dims: int, forward, backward):
    def result(static, x):
        op = f"adaptive_avg_pool{dims}d"
        x4, batched = _pool._input4d(op, _shape_only(x), dims)
        out = _pool._adaptive_size(op, static[0], tuple(x4.shape), dims)
        return _spec(_pool._user_shape(tuple(x4.shape[:2]) + out, dims, batched), x.dtype)
    return _op(lambda s, x: forward(x, *s), lambda s, ct, x: (backward(ct, x, *s),), result)


_adaptive_avg_pool2d = _adaptive_op(2, F.adaptive_avg_pool2d, F.adaptive_avg_pool2d_backward)
_adaptive_avg_pool1d = _adaptive_op(1, F.adaptive_avg_pool1d, F.adaptive_avg_pool1d_backward)


def adaptive_avg_pool2d(input, output_size):
    """:func:`gpuconv.functional.adaptive_avg_pool2d` with a custom VJP."""
    return _adaptive_avg_pool2d(_statics(output_size), input)


def adaptive_avg_pool1d(input, output_size):
    """:func:`gpuconv.functional.adaptive_avg_pool1d` with a custom VJP."""
    return _adaptive_avg_pool1d(_statics(output_size), input)


# --------------------------------------------------------------------------- pointwise

def _same_as_first(static, x, *rest):
    return _like(x)


def _unary(forward, backward, *, saves_output=False):
    """An op of one array whose backward is ``backward(ct, x, *static[, output=y])``."""
    def grad(static, ct, x, *out):
        kwargs = {"output": out[0]} if saves_output else {}
        return (backward(ct, x, *static, **kwargs),)
    return _op(lambda s, x: forward(x, *s), grad, _same_as_first, saves_output=saves_output)


_relu = _unary(F.relu, F.relu_backward)
_leaky_relu = _unary(F.leaky_relu, F.leaky_relu_backward)
_elu = _unary(F.elu, F.elu_backward)
_sigmoid = _unary(F.sigmoid, F.sigmoid_backward, saves_output=True)
_tanh = _unary(F.tanh, F.tanh_backward, saves_output=True)
_softmax = _unary(F.softmax, F.softmax_backward, saves_output=True)
_log_softmax = _unary(F.log_softmax, F.log_softmax_backward, saves_output=True)
_local_response_norm = _unary(F.local_response_norm, F.local_response_norm_backward)


def relu(input):
    """:func:`gpuconv.functional.relu` with a custom VJP."""
    return _relu((), input)


def leaky_relu(input, negative_slope=0.01):
    """:func:`gpuconv.functional.leaky_relu` with a custom VJP."""
    return _leaky_relu((float(negative_slope),), input)


def elu(input, alpha=1.0):
    """:func:`gpuconv.functional.elu` with a custom VJP."""
    return _elu((float(alpha),), input)


def sigmoid(input):
    """:func:`gpuconv.functional.sigmoid` with a custom VJP (saves its result)."""
    return _sigmoid((), input)


def tanh(input):
    """:func:`gpuconv.functional.tanh` with a custom VJP (saves its result)."""
    return _tanh((), input)


def softmax(input, dim):
    """:func:`gpuconv.functional.softmax` with a custom VJP (saves its result)."""
    return _softmax((int(dim),), input)


def log_softmax(input, dim):
    """:func:`gpuconv.functional.log_softmax` with a custom VJP (saves its result)."""
    return _log_softmax((int(dim),), input)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """:func:`gpuconv.functional.local_response_norm` with a custom VJP."""
    return _local_response_norm((int(size), float(alpha), float(beta), float(k)), input)


_dropout = _op(lambda s, x, seed: F.dropout(x, s, True, int(seed)),
               lambda s, ct, x, seed: (F.dropout_backward(ct, x, s, True, int(seed)), None),
               _same_as_first)


def dropout(input, p=0.5, training=True, seed=0):
    """:func:`gpuconv.functional.dropout` with a custom VJP. ``seed`` (an int >= 0, or a
    traced integer scalar) picks the mask, which the backward recomputes from it."""
    if not training:
        return input
    return _dropout(float(p), input, jnp.asarray(seed))


_bias_act = _op(lambda s, x, b: F.bias_act(x, b, *s),
                lambda s, ct, x, b, out: F.bias_act_backward(ct, x, b, *s, output=out),
                _same_as_first, saves_output=True)


def bias_act(input, bias, activation="relu", param=0.0):
    """:func:`gpuconv.functional.bias_act` (``act(input + bias[c])``) with a custom VJP."""
    return _bias_act((activation, float(param)), input, bias)


# --------------------------------------------------------------------------- linear

_linear = _op(lambda s, x, w, b: F.linear(x, w, b),
              lambda s, ct, x, w, b: F.linear_backward(ct, x, w, b),
              lambda s, x, w, b: _spec(x.shape[:-1] + (w.shape[0],), x.dtype))


def linear(input, weight, bias=None):
    """:func:`gpuconv.functional.linear` (y = x W^T + b) with a custom VJP."""
    return _linear((), input, weight, bias)


_embedding = _op(lambda s, i, w: F.embedding(i, w, s),
                 lambda s, ct, i, w: (None, F.embedding_backward(ct, i, w, s)),
                 lambda s, i, w: _spec(i.shape + (w.shape[1],), w.dtype))


def embedding(input, weight, padding_idx=None):
    """:func:`gpuconv.functional.embedding` with a custom VJP (for the weight)."""
    return _embedding(padding_idx, input, weight)


# --------------------------------------------------------------------------- losses

def _loss_result(static, x, target, *rest):
    reduction = next(s for s in static if isinstance(s, str))
    return _spec(target.shape if reduction == "none" else (), x.dtype)


_cross_entropy = _op(
    lambda s, x, t, w: F.cross_entropy(x, t, w, *s),
    lambda s, ct, x, t, w: (F.cross_entropy_backward(ct, x, t, w, *s), None, None),
    _loss_result, constants=(2,))
_nll_loss = _op(lambda s, x, t, w: F.nll_loss(x, t, w, *s),
                lambda s, ct, x, t, w: (F.nll_loss_backward(ct, x, t, w, *s), None, None),
                _loss_result, constants=(2,))
_mse_loss = _op(lambda s, x, t: F.mse_loss(x, t, *s),
                lambda s, ct, x, t: F.mse_loss_backward(ct, x, t, *s), _loss_result)
_l1_loss = _op(lambda s, x, t: F.l1_loss(x, t, *s),
               lambda s, ct, x, t: F.l1_loss_backward(ct, x, t, *s), _loss_result)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """:func:`gpuconv.functional.cross_entropy` with a custom VJP (for the input; the class
    weights are constants)."""
    return _cross_entropy((int(ignore_index), reduction, float(label_smoothing)), input, target,
                          weight)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """:func:`gpuconv.functional.nll_loss` with a custom VJP (for the input)."""
    return _nll_loss((int(ignore_index), reduction), input, target, weight)


def mse_loss(input, target, reduction="mean"):
    """:func:`gpuconv.functional.mse_loss` with a custom VJP (input and target)."""
    return _mse_loss((reduction,), input, target)


def l1_loss(input, target, reduction="mean"):
    """:func:`gpuconv.functional.l1_loss` with a custom VJP (input and target)."""
    return _l1_loss((reduction,), input, target)


# --------------------------------------------------------------------------- batch norm

def _batch_norm_forward(static, x, mean, var, w, b):
    training, momentum, eps = static
    stats = [None if s is None else np.array(s) for s in (mean, var)]  # updated in place
    y = F.batch_norm(x, *stats, w, b, training, momentum, eps)
    return (y, *stats)


def _batch_norm_backward(static, ct, x, mean, var, w, b):
    training, _, eps = static
    stats = (None, None) if training else (mean, var)
    gx, gw, gb = F.batch_norm_backward(ct[0], x, *stats, w, b, training, eps)
    return gx, None, None, gw, gb


_batch_norm = _op(_batch_norm_forward, _batch_norm_backward,
                  lambda s, x, mean, var, w, b: (_like(x), *(None if a is None else _like(a)
                                                             for a in (mean, var))),
                  constants=(1, 2))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """:func:`gpuconv.functional.batch_norm` with a custom VJP. Returns ``(y, running_mean,
    running_var)``: in training the updated statistics (new arrays), else those given (None
    where None)."""
    return _batch_norm((bool(training), float(momentum), float(eps)), input, running_mean,
                       running_var, weight, bias)


# --------------------------------------------------------------------------- recurrent

def _cell_op(forward, backward, n_states: int):
    def grad(static, ct, *arrays):
        cts = ct if n_states > 1 else (ct,)
        return backward(*cts, *arrays)
    return _op(lambda s, *arrays: forward(*arrays), grad,
               lambda s, x, *rest: tuple(_like(h) for h in rest[:n_states])
               if n_states > 1 else _like(rest[0]))


_rnn_tanh_cell = _cell_op(F.rnn_tanh_cell, F.rnn_tanh_cell_backward, 1)
_rnn_relu_cell = _cell_op(F.rnn_relu_cell, F.rnn_relu_cell_backward, 1)
_gru_cell = _cell_op(F.gru_cell, F.gru_cell_backward, 1)


def _lstm_cell_forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    return F.lstm_cell(input, (hx, cx), w_ih, w_hh, b_ih, b_hh)


def _lstm_cell_backward(grad_h, grad_c, input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    gx, (ghx, gcx), *gparams = F.lstm_cell_backward(grad_h, grad_c, input, (hx, cx), w_ih, w_hh,
                                                    b_ih, b_hh)
    return (gx, ghx, gcx, *gparams)


_lstm_cell = _cell_op(_lstm_cell_forward, _lstm_cell_backward, 2)


def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """:func:`gpuconv.functional.rnn_tanh_cell` with a custom VJP."""
    return _rnn_tanh_cell((), input, hx, w_ih, w_hh, b_ih, b_hh)


def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """:func:`gpuconv.functional.rnn_relu_cell` with a custom VJP."""
    return _rnn_relu_cell((), input, hx, w_ih, w_hh, b_ih, b_hh)


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """:func:`gpuconv.functional.gru_cell` with a custom VJP."""
    return _gru_cell((), input, hx, w_ih, w_hh, b_ih, b_hh)


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step with PyTorch's arguments (hx the pair (h, c)) and a custom VJP; returns
    (h', c')."""
    h, c = hx
    return _lstm_cell((), input, h, c, w_ih, w_hh, b_ih, b_hh)


def _sequence_op(forward, backward, n_states: int):
    """``op(static, input, *states, *params)``; static = (number of params, num_layers,
    bidirectional, batch_first, dropout, training, seed[, nonlinearity])."""
    def split(arrays):
        input, states, params = arrays[0], arrays[1:1 + n_states], list(arrays[1 + n_states:])
        hx = None if states[0] is None else (tuple(states) if n_states > 1 else states[0])
        return input, hx, params

    def run(static, *arrays):
        input, hx, params = split(arrays)
        out, finals = forward(input, hx, params, *static)
        return (out, *(finals if n_states > 1 else (finals,)))

    def grad(static, ct, *arrays):
        input, hx, params = split(arrays)
        gx, ghx, gparams = backward(*ct, input, hx, params, *static)
        ghx = (None,) * n_states if ghx is None else (ghx if n_states > 1 else (ghx,))
        return (gx, *ghx, *gparams)

    def result(static, input, *rest):
        num_layers, bidirectional, batch_first = static[:3]
        params = rest[n_states:]
        H, D = params[1].shape[1], 2 if bidirectional else 1
        T, B = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
        out = (B, T, D * H) if batch_first else (T, B, D * H)
        return (_spec(out, input.dtype),
                *(_spec((num_layers * D, B, H), input.dtype) for _ in range(n_states)))

    return _op(run, grad, result)


_rnn = _sequence_op(F.rnn, F.rnn_backward, 1)
_gru = _sequence_op(F.gru, F.gru_backward, 1)
_lstm = _sequence_op(F.lstm, F.lstm_backward, 2)


def _seq_static(num_layers, bidirectional, batch_first, dropout, training, seed) -> tuple:
    return (int(num_layers), bool(bidirectional), bool(batch_first), float(dropout),
            bool(training), int(seed))


def rnn(input, hx, params, num_layers=1, bidirectional=False, batch_first=False, dropout=0.0,
        training=False, seed=0, nonlinearity="tanh"):
    """:func:`gpuconv.functional.rnn` with a custom VJP; returns (output, h_n). The backward
    recomputes the forward (see the module docstring)."""
    static = _seq_static(num_layers, bidirectional, batch_first, dropout, training, seed)
    out, h_n = _rnn(static + (nonlinearity,), input, hx, *params)
    return out, h_n


def gru(input, hx, params, num_layers=1, bidirectional=False, batch_first=False, dropout=0.0,
        training=False, seed=0):
    """:func:`gpuconv.functional.gru` with a custom VJP; returns (output, h_n)."""
    static = _seq_static(num_layers, bidirectional, batch_first, dropout, training, seed)
    out, h_n = _gru(static, input, hx, *params)
    return out, h_n


def lstm(input, hx, params, num_layers=1, bidirectional=False, batch_first=False, dropout=0.0,
         training=False, seed=0):
    """:func:`gpuconv.functional.lstm` with a custom VJP; hx None or (h0, c0); returns
    (output, (h_n, c_n))."""
    static = _seq_static(num_layers, bidirectional, batch_first, dropout, training, seed)
    h0, c0 = (None, None) if hx is None else hx
    out, h_n, c_n = _lstm(static, input, h0, c0, *params)
    return out, (h_n, c_n)
