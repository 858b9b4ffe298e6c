"""Normalisation: batch normalisation and local response normalisation.

Layout is channels-first: ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)`` (and ``(N, C, D, H, W)``
for batch_norm). Statistics of batch_norm are per channel, over the batch and every spatial
position.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks as C, backend, kernels

__all__ = [
    "batch_norm", "batch_norm_backward", "batch_norm_relu", "batch_norm_fold",
    "local_response_norm", "local_response_norm_backward",
]

_BATCH_NORM_RANKS = (2, 3, 4, 5)


# --------------------------------------------------------------------------- batch norm

def _check_batch_norm(op: str, input, running_mean, running_var, weight, bias, training,
                      eps) -> float:
    """Validate the arguments batch_norm and its backward share; return eps as a float."""
    C.float_array(op, "input", input, ndim=_BATCH_NORM_RANKS)
    channels = input.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must be given together "
                         "(both arrays or both None)")
    if not training and running_mean is None:
        raise ValueError(f"{op}: running_mean and running_var are required when "
                         "training=False (evaluation normalises with them)")
    for name, a in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if a is None:
            continue
        C.float_array(op, name, a)
        C.same_kind(op, "input", input, **{name: a})
        if tuple(a.shape) != (channels,):
            raise ValueError(f"{op}: {name} must have shape ({channels},), one value per "
                             f"channel of input {tuple(input.shape)}, got {tuple(a.shape)}")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {C.shown(training)}")
    values_per_channel = input.shape[0] * math.prod(input.shape[2:])
    if training and values_per_channel == 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                         f"input of shape {tuple(input.shape)}")
    return C.finite_float(op, "eps", eps, low=0.0, low_open=True)


def _check_momentum(op: str, momentum) -> float:
    if momentum is None:
        raise ValueError(f"{op}: momentum=None (a cumulative moving average of the running "
                         "statistics) is not supported; pass a float in [0, 1]")
    return C.finite_float(op, "momentum", momentum, low=0.0, high=1.0)


def _check_writeable(op: str, training: bool, **stats) -> None:
    if not training:
        return
    for name, a in stats.items():
        if a is not None and not getattr(getattr(a, "flags", None), "writeable", True):
            raise ValueError(f"{op}: {name} is read-only, but training updates it in place")


@backend.interop
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, impl: str | None = None):
    """Batch normalisation, ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel.

    input: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W), floating dtype.
    running_mean, running_var, weight, bias: (C,) or None (weight/bias None mean 1/0).
    training=True: mean and biased variance over N and the spatial axes; running_mean and
    running_var (if given) are updated IN PLACE to ``(1 - momentum) * running + momentum *
    batch`` with the unbiased batch variance, as torch does. Needs more than one value per
    channel, except that an empty batch (N = 0) gives an empty result and leaves the running
    statistics unchanged, as in torch. training=False: normalises with running_mean and
    running_var (required).
    momentum in [0, 1] (None, a cumulative average, is not supported); eps > 0.
    Returns y with the shape and dtype of input.
    """
    op = "batch_norm"
    eps = _check_batch_norm(op, input, running_mean, running_var, weight, bias, training, eps)
    momentum = _check_momentum(op, momentum)
    _check_writeable(op, training, running_mean=running_mean, running_var=running_var)
    if input.size == 0:  # an empty batch: nothing to normalise, no statistics to update
        return backend.array_module(input).zeros_like(input)
    return kernels.dispatch(op, impl, input, running_mean, running_var, weight, bias,
                            bool(training), momentum, eps)


@backend.interop
def batch_norm_backward(grad_output, input, running_mean, running_var, weight=None, bias=None,
                        training: bool = False, eps: float = 1e-5, *, impl: str | None = None):
    """Gradients of :func:`batch_norm`: ``(grad_input, grad_weight, grad_bias)``.

    grad_output: the shape of input. Other arguments as the forward (no momentum: the
    running statistics are read, never updated). grad_weight / grad_bias are None when
    weight / bias are None. With xhat the normalised input and g = grad_output,
    grad_bias = sum(g), grad_weight = sum(g * xhat) over N and the spatial axes, and
    training: ``grad_input = weight / sqrt(var + eps) * (g - mean(g) - xhat * mean(g * xhat))``
    (batch statistics are functions of the input);
    eval: ``grad_input = weight / sqrt(running_var + eps) * g`` (running stats are constants).
    """
    op = "batch_norm_backward"
    eps = _check_batch_norm(op, input, running_mean, running_var, weight, bias, training, eps)
    C.float_array(op, "grad_output", grad_output)
    C.same_kind(op, "input", input, grad_output=grad_output)
    C.shape_is(op, "grad_output", grad_output, input.shape)
    if input.size == 0:
        xp = backend.array_module(input)
        return (xp.zeros_like(input), None if weight is None else xp.zeros_like(weight),
                None if bias is None else xp.zeros_like(bias))
    return kernels.dispatch(op, impl, grad_output, input, running_mean, running_var, weight,
                            bias, bool(training), eps)


@backend.interop
def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None,
                    training: bool = False, momentum: float = 0.1, eps: float = 1e-5, *,
                    residual=None, impl: str | None = None):
    """``relu(batch_norm(input, ...) + residual)`` in one pass over the data: the end of a
    ResNet block (residual: the shortcut, shaped like input, or None for
    ``relu(batch_norm(input))``). Arguments and the running-statistics update as
    :func:`batch_norm`.

    Its gradient needs no op of its own: with y the output, ``g = relu_backward(grad, y)``
    (y > 0 exactly where the sum is) is the residual's gradient, and
    ``batch_norm_backward(g, input, ...)`` gives the rest.
    """
    op = "batch_norm_relu"
    eps = _check_batch_norm(op, input, running_mean, running_var, weight, bias, training, eps)
    momentum = _check_momentum(op, momentum)
    _check_writeable(op, training, running_mean=running_mean, running_var=running_var)
    if residual is not None:
        C.float_array(op, "residual", residual)
        C.same_kind(op, "input", input, residual=residual)
        C.shape_is(op, "residual", residual, input.shape)
    if input.size == 0:  # as batch_norm: nothing to normalise, no statistics to update
        return backend.array_module(input).zeros_like(input)
    return kernels.dispatch(op, impl, input, running_mean, running_var, weight, bias,
                            bool(training), momentum, eps, residual)


@backend.interop
def batch_norm_fold(running_mean, running_var, weight=None, bias=None, eps: float = 1e-5, *,
                    impl: str | None = None):
    """The per-channel affine map of an evaluation-mode :func:`batch_norm`: ``(scale, shift)``
    with ``batch_norm(x, running_mean, running_var, weight, bias) == x * scale[c] +
    shift[c]``, i.e. ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias -
    running_mean * scale``. A convolution followed by that batch norm is
    ``conv2d_bias_act(..., scale=scale, bias=shift)``.

    running_mean, running_var, weight, bias: (C,) (weight/bias None mean 1/0); eps > 0.
    """
    op = "batch_norm_fold"
    C.float_array(op, "running_mean", running_mean, 1)
    for name, a in (("running_var", running_var), ("weight", weight), ("bias", bias)):
        if a is not None:
            C.float_array(op, name, a, 1)
            C.same_kind(op, "running_mean", running_mean, **{name: a})
            C.shape_is(op, name, a, running_mean.shape)
    if running_var is None:
        raise ValueError(f"{op}: running_var is required (an array of shape "
                         f"{tuple(running_mean.shape)})")
    eps = C.finite_float(op, "eps", eps, low=0.0, low_open=True)
    return kernels.dispatch(op, impl, running_mean, running_var, weight, bias, eps)


# --------------------------------------------------------------------------- local response norm

def _check_lrn(op: str, input, size, alpha, beta, k):
    """Validate local_response_norm arguments; return them as (size, alpha, beta, k)."""
    C.float_array(op, "input", input)
    if input.ndim < 3:
        raise ValueError(f"{op}: input must have 3 or more dimensions (N, C, ...), "
                         f"got shape {tuple(input.shape)}")
    size = C.positive_int(op, "size", size)
    # alpha >= 0 and k > 0 keep the base k + alpha/size * sum(x^2) positive, so the power
    # never produces NaN or a division by zero.
    alpha = C.finite_float(op, "alpha", alpha, low=0.0)
    beta = C.finite_float(op, "beta", beta)
    k = C.finite_float(op, "k", k, low=0.0, low_open=True)
    return size, alpha, beta, k


@backend.interop
def local_response_norm(input, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                        *, impl: str | None = None):
    """Local response normalisation across channels, torch's formula.

    input: (N, C, ...) with at least one spatial axis, floating dtype.
    ``b[c] = a[c] / (k + alpha / size * sum(a[j]**2))**beta`` where j runs over the channels
    ``c - size//2 .. c + (size-1)//2`` that exist (zero padding: the divisor stays ``size``).
    size >= 1, alpha >= 0, k > 0 (so the base is positive), beta finite.
    Returns b with the shape and dtype of input.
    """
    size, alpha, beta, k = _check_lrn("local_response_norm", input, size, alpha, beta, k)
    return kernels.dispatch("local_response_norm", impl, input, size, alpha, beta, k)


@backend.interop
def local_response_norm_backward(grad_output, input, size: int, alpha: float = 1e-4,
                                 beta: float = 0.75, k: float = 1.0, *, impl: str | None = None):
    """Gradient of :func:`local_response_norm` with respect to input; returns grad_input.

    With D[c] = k + alpha/size * sum(a[j]**2) and g = grad_output,
    ``grad[j] = g[j] * D[j]**-beta - 2*alpha*beta/size * a[j] * S[j]`` where
    ``S[j] = sum_c g[c] * a[c] * D[c]**(-beta-1)`` over the channels c whose window contains j.
    """
    op = "local_response_norm_backward"
    size, alpha, beta, k = _check_lrn(op, input, size, alpha, beta, k)
    C.float_array(op, "grad_output", grad_output)
    C.same_kind(op, "input", input, grad_output=grad_output)
    C.shape_is(op, "grad_output", grad_output, input.shape)
    return kernels.dispatch(op, impl, grad_output, input, size, alpha, beta, k)
