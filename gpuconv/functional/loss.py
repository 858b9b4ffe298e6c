"""Loss functions: cross-entropy, negative log-likelihood, mean squared error, L1.

Class-index losses take scores of shape ``(N, C)`` or ``(N, C, d1, d2, ...)`` (class axis 1,
like torch), or an unbatched ``(C,)`` with a 0-d target, and integer targets of shape
``(N,)`` or ``(N, d1, d2, ...)``. ``reduction`` is ``"mean"`` (weighted mean over the
non-ignored targets), ``"sum"`` or ``"none"`` (one loss per target position). A reduced loss
is a 0-d array of the input's dtype.

An empty batch (no target positions at all, e.g. N = 0) works as in torch: "sum" is 0,
"none" is empty, and "mean" is NaN, the mean of no values. One deliberate difference from
torch: with ``reduction="mean"``, when there are targets but none counts (every target
equals ``ignore_index``, or their class weights sum to zero) torch returns NaN; gpuconv
raises a ``ValueError`` instead, since that is almost always a labelling mistake.

Each ``*_backward`` takes ``grad_output`` (a 0-d array for ``"mean"``/``"sum"``, an array
shaped like the per-position loss for ``"none"``) followed by the forward's arguments.
"""
from __future__ import annotations

import numpy as np

from .. import _checks as C, backend, device_checks, kernels

__all__ = [
    "cross_entropy", "cross_entropy_backward", "nll_loss", "nll_loss_backward",
    "mse_loss", "mse_loss_backward", "l1_loss", "l1_loss_backward",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', "
                         f"got {C.shown(reduction)}")


def _check_grad_output(op: str, grad_output, input, reduction: str, per_position: tuple) -> None:
    C.float_array(op, "grad_output", grad_output)
    C.same_kind(op, "input", input, grad_output=grad_output)
    C.shape_is(op, "grad_output", grad_output, per_position if reduction == "none" else ())


def _empty_loss(input, reduction: str, per_position: tuple):
    """The loss of an empty batch, as torch defines it: NaN for "mean" (the mean of no
    values), 0 for "sum", an empty array of shape ``per_position`` for "none"."""
    xp = backend.array_module(input)
    if reduction == "none":
        return xp.zeros(per_position, dtype=input.dtype)
    return xp.full((), np.nan if reduction == "mean" else 0, dtype=input.dtype)


def _zero_grad(input):
    """The (empty) gradient with respect to an empty batch."""
    return backend.array_module(input).zeros_like(input)


# --------------------------------------------------------------------------- class targets

def _class_targets(op: str, input, target, weight, ignore_index, reduction, impl):
    """Validate a class-index loss call; return the input and the int64 targets with a batch
    axis (an unbatched (C,) input and 0-d target become (1, C) and (1,)). The targets' values
    are checked here, or on the device by the kernels (see :mod:`gpuconv.device_checks`)."""
    C.float_array(op, "input", input)
    if input.ndim < 1:
        raise ValueError(f"{op}: input must have shape (C,), (N, C) or (N, C, d1, ...), "
                         f"got shape {tuple(input.shape)}")
    if C.is_array(target) and np.dtype(target.dtype).kind == "f":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {target.dtype}; "
                        "class-probability (soft) targets are not supported")
    C.int_array(op, "target", target)
    class_axis = 0 if input.ndim == 1 else 1
    n_classes = input.shape[class_axis]
    expected = tuple(input.shape[:class_axis]) + tuple(input.shape[class_axis + 1:])
    if tuple(target.shape) != expected:
        raise ValueError(f"{op}: target must have shape {expected} for input of shape "
                         f"{tuple(input.shape)} (the class axis {class_axis} removed), "
                         f"got {tuple(target.shape)}")
    if input.ndim == 1:
        input, target = input[None], target[None]
    if weight is not None:
        C.float_array(op, "weight", weight)
        C.same_kind(op, "input", input, weight=weight)
        if tuple(weight.shape) != (n_classes,):
            raise ValueError(f"{op}: weight must have shape ({n_classes},), one weight per class "
                             f"of input {tuple(input.shape)}, got {tuple(weight.shape)}")
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: ignore_index must be an int, got {C.shown(ignore_index)}")
    _check_reduction(op, reduction)
    target = target.astype(np.int64, copy=False)
    if device_checks.on_host(op, impl, input):
        _check_target_values(op, target, weight, n_classes, int(ignore_index), reduction)
    return input, target


def _check_target_values(op, target, weight, n_classes, ignore_index, reduction) -> None:
    if target.size == 0:
        return
    # NumPy targets all in [0, n_classes) are valid whatever ignore_index is, and all count
    # when it lies outside their range: two reductions instead of seven array operations,
    # twice per training step. Device targets take the full check, whose reads to the host
    # are fewer there.
    low = high = None
    if type(target) is np.ndarray:
        low, high = int(target.min()), int(target.max())
    counted = None
    if low is None or not (0 <= low and high < n_classes):
        counted = target != ignore_index
        bad = counted & ((target < 0) | (target >= n_classes))
        if bool(bad.any()):
            raise ValueError(f"{op}: target values must lie in [0, {n_classes}) or equal "
                             f"ignore_index={ignore_index}; found {int(target[bad][0])}")
    if reduction != "mean":
        return
    if counted is None and low <= ignore_index <= high:
        counted = target != ignore_index
    if counted is not None and not bool(counted.any()):
        raise ValueError(f"{op}: all targets are ignored (every target equals "
                         f"ignore_index={ignore_index}), so reduction='mean' divides by zero; "
                         "torch returns NaN here, gpuconv raises")
    if weight is not None:
        kept = target if counted is None else target[counted]
        if float(weight[kept].sum()) == 0.0:
            raise ValueError(f"{op}: the class weights of the non-ignored targets sum to "
                             "zero, so reduction='mean' divides by zero")


def _per_position(input) -> tuple:
    """The shape of the per-position loss ("none") of ``input`` in the caller's layout."""
    return () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])


def _class_loss(op: str, impl, input, input2, target, reduction: str, args: tuple):
    """Run a class-index loss on the batched ``input2``; results in ``input``'s layout."""
    if target.size == 0:
        return _empty_loss(input, reduction, _per_position(input))
    out = kernels.dispatch(op, impl, input2, target, *args)
    return out.reshape(_per_position(input)) if reduction == "none" else out


def _class_loss_backward(op: str, impl, grad_output, input, input2, target, reduction: str,
                         args: tuple):
    _check_grad_output(op, grad_output, input, reduction, _per_position(input))
    if target.size == 0:
        return _zero_grad(input)
    if reduction == "none":
        grad_output = grad_output.reshape(target.shape)
    return kernels.dispatch(op, impl, grad_output, input2, target, *args).reshape(input.shape)


def _check_label_smoothing(op: str, label_smoothing) -> float:
    return C.finite_float(op, "label_smoothing", label_smoothing, low=0.0, high=1.0)


@backend.interop
def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, impl: str | None = None):
    """Cross-entropy of logits against class indices (softmax and NLL fused, log-sum-exp stable).

    input: (N, C) or (N, C, d1, ...) logits, floating dtype, or unbatched (C,). target: (N,)
    or (N, d1, ...) (0-d for an unbatched input) integer class indices in [0, C) or equal to
    ``ignore_index``. weight: (C,) or None.

    With p = log_softmax(input) over axis 1, eps = label_smoothing and w = weight (ones if
    None), the loss at a position whose target is t is
    ``l = (1 - eps) * w[t] * (-p[t]) + eps / C * sum_c w[c] * (-p[c])``, and 0 where
    t == ignore_index. "mean" divides sum(l) by sum(w[t]) over the non-ignored positions,
    "sum" returns sum(l), "none" returns l with shape (N, d1, ...).
    """
    op = "cross_entropy"
    input2, target = _class_targets(op, input, target, weight, ignore_index, reduction, impl)
    eps = _check_label_smoothing(op, label_smoothing)
    return _class_loss(op, impl, input, input2, target, reduction,
                       (weight, int(ignore_index), reduction, eps))


@backend.interop
def cross_entropy_backward(grad_output, input, target, weight=None, ignore_index: int = -100,
                           reduction: str = "mean", label_smoothing: float = 0.0, *,
                           impl: str | None = None):
    """Gradient of :func:`cross_entropy` with respect to ``input``; returns grad_input.

    grad_output: () for "mean"/"sum", (N, d1, ...) for "none". Other arguments as the
    forward. With s = softmax(input) and W = sum_c w[c], each position's gradient is
    ``g * ((1 - eps) * w[t] * (s - onehot(t)) + eps / C * (W * s - w))`` where g is
    grad_output (divided by sum(w[t]) for "mean"); ignored positions get 0.
    grad_input has the shape and dtype of input.
    """
    op = "cross_entropy_backward"
    input2, target = _class_targets(op, input, target, weight, ignore_index, reduction, impl)
    eps = _check_label_smoothing(op, label_smoothing)
    return _class_loss_backward(op, impl, grad_output, input, input2, target, reduction,
                                (weight, int(ignore_index), reduction, eps))


@backend.interop
def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean", *,
             impl: str | None = None):
    """Negative log-likelihood of log-probabilities against class indices.

    input: (N, C) or (N, C, d1, ...) log-probabilities. target, weight, ignore_index as
    :func:`cross_entropy`. ``l = -w[t] * input[t]`` at each position (0 where ignored);
    "mean" divides sum(l) by sum(w[t]) over the non-ignored positions.
    """
    op = "nll_loss"
    input2, target = _class_targets(op, input, target, weight, ignore_index, reduction, impl)
    return _class_loss(op, impl, input, input2, target, reduction,
                       (weight, int(ignore_index), reduction))


@backend.interop
def nll_loss_backward(grad_output, input, target, weight=None, ignore_index: int = -100,
                      reduction: str = "mean", *, impl: str | None = None):
    """Gradient of :func:`nll_loss` with respect to ``input``; returns grad_input.

    grad_input is zero except ``grad_input[n, t, ...] = -g * w[t]`` at each non-ignored
    position, with g = grad_output (divided by sum(w[t]) for "mean").
    """
    op = "nll_loss_backward"
    input2, target = _class_targets(op, input, target, weight, ignore_index, reduction, impl)
    return _class_loss_backward(op, impl, grad_output, input, input2, target, reduction,
                                (weight, int(ignore_index), reduction))


# --------------------------------------------------------------------------- pointwise

def _check_pointwise(op: str, input, target, reduction) -> None:
    C.float_array(op, "input", input)
    C.float_array(op, "target", target)
    C.same_kind(op, "input", input, target=target)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"{op}: target must have the shape of input {tuple(input.shape)}, "
                         f"got {tuple(target.shape)} (no broadcasting)")
    _check_reduction(op, reduction)


def _at_least_1d(a):
    return a.reshape(1) if a.ndim == 0 else a


def _dispatch_pointwise(op: str, impl, input, target, reduction: str):
    """Run a pointwise loss; 0-d arrays travel as shape (1,) so impls always get arrays."""
    if input.size == 0:
        return _empty_loss(input, reduction, tuple(input.shape))
    out = kernels.dispatch(op, impl, _at_least_1d(input), _at_least_1d(target), reduction)
    return out.reshape(input.shape) if reduction == "none" else out


def _dispatch_pointwise_backward(op: str, impl, grad_output, input, target, reduction: str):
    """As :func:`_dispatch_pointwise`, for ``(grad_input, grad_target)``."""
    if input.size == 0:
        return _zero_grad(input), _zero_grad(input)
    if reduction == "none":
        grad_output = _at_least_1d(grad_output)
    grads = kernels.dispatch(op, impl, grad_output, _at_least_1d(input), _at_least_1d(target),
                             reduction)
    return tuple(g.reshape(input.shape) for g in grads)


@backend.interop
def mse_loss(input, target, reduction: str = "mean", *, impl: str | None = None):
    """Mean squared error ``l = (input - target)**2``, reduced by mean, sum or none.

    input, target: the same shape, floating dtype. "none" returns l with that shape.
    """
    _check_pointwise("mse_loss", input, target, reduction)
    return _dispatch_pointwise("mse_loss", impl, input, target, reduction)


@backend.interop
def mse_loss_backward(grad_output, input, target, reduction: str = "mean", *,
                      impl: str | None = None):
    """Gradients of :func:`mse_loss`: ``(grad_input, grad_target)``.

    grad_input = 2 * g * (input - target), grad_target = -grad_input, where g is
    grad_output (divided by input.size for "mean").
    """
    op = "mse_loss_backward"
    _check_pointwise(op, input, target, reduction)
    _check_grad_output(op, grad_output, input, reduction, tuple(input.shape))
    return _dispatch_pointwise_backward(op, impl, grad_output, input, target, reduction)


@backend.interop
def l1_loss(input, target, reduction: str = "mean", *, impl: str | None = None):
    """Mean absolute error ``l = |input - target|``, reduced by mean, sum or none.

    input, target: the same shape, floating dtype. "none" returns l with that shape.
    """
    _check_pointwise("l1_loss", input, target, reduction)
    return _dispatch_pointwise("l1_loss", impl, input, target, reduction)


@backend.interop
def l1_loss_backward(grad_output, input, target, reduction: str = "mean", *,
                     impl: str | None = None):
    """Gradients of :func:`l1_loss`: ``(grad_input, grad_target)``.

    grad_input = g * sign(input - target) (0 where input == target, like torch),
    grad_target = -grad_input, where g is grad_output (divided by input.size for "mean").
    """
    op = "l1_loss_backward"
    _check_pointwise(op, input, target, reduction)
    _check_grad_output(op, grad_output, input, reduction, tuple(input.shape))
    return _dispatch_pointwise_backward(op, impl, grad_output, input, target, reduction)
