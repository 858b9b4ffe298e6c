"""Fully connected layers and embedding lookup.

``linear`` applies ``y = x W^T + b`` over the last axis of an input of any leading shape;
``embedding`` gathers rows of a table by integer index. Their backward functions take
``grad_output`` followed by the forward's arguments: ``linear_backward`` returns
``(grad_input, grad_weight, grad_bias)`` (``grad_bias`` is None when ``bias`` is None) and
``embedding_backward`` returns ``grad_weight`` (the indices have no gradient).
"""
from __future__ import annotations

import numpy as np

from .. import _checks as C, backend, kernels

__all__ = ["linear", "linear_backward", "embedding", "embedding_backward"]


def _linear_args(op: str, input, weight, bias) -> None:
    C.float_array(op, "input", input)
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have shape (*, in_features), got shape ()")
    C.float_array(op, "weight", weight, ndim=2)
    C.same_kind(op, "input", input, weight=weight, bias=bias)
    out_features, in_features = weight.shape
    if input.shape[-1] != in_features:
        raise ValueError(f"{op}: input has {input.shape[-1]} features in its last dimension "
                         f"(shape {tuple(input.shape)}) but weight of shape "
                         f"{tuple(weight.shape)} expects {in_features}")
    if bias is not None:
        C.float_array(op, "bias", bias)
        if tuple(bias.shape) != (out_features,):
            raise ValueError(f"{op}: bias must have shape ({out_features},) for weight of shape "
                             f"{tuple(weight.shape)}, got {tuple(bias.shape)}")


@backend.interop
def linear(input, weight, bias=None, *, impl: str | None = None):
    """``y = x W^T + b``.

    input: ``(*, in_features)``; weight: ``(out_features, in_features)``; bias:
    ``(out_features,)`` or None. Returns ``(*, out_features)`` in the input's dtype.
    """
    _linear_args("linear", input, weight, bias)
    return kernels.dispatch("linear", impl, input, weight, bias)


@backend.interop
def linear_backward(grad_output, input, weight, bias=None, *, impl: str | None = None):
    """Gradients of :func:`linear`: ``(grad_input, grad_weight, grad_bias)``.

    grad_output: ``(*, out_features)``. ``grad_input = g W`` has the input's shape,
    ``grad_weight = g^T x`` summed over every leading position, ``grad_bias = sum(g)`` over
    the same positions, or None when ``bias`` is None (bias is only read for that).
    """
    op = "linear_backward"
    _linear_args(op, input, weight, bias)
    C.float_array(op, "grad_output", grad_output)
    C.same_kind(op, "input", input, grad_output=grad_output)
    C.shape_is(op, "grad_output", grad_output, tuple(input.shape[:-1]) + (weight.shape[0],))
    return kernels.dispatch(op, impl, grad_output, input, weight, bias)


def _embedding_args(op: str, input, weight, padding_idx):
    """Validate an embedding call; return the indices as int64 and ``padding_idx`` as a row
    number (or None)."""
    C.int_array(op, "input", input)
    C.float_array(op, "weight", weight, ndim=2)
    if backend.device_of(input) != backend.device_of(weight):
        raise ValueError(f"{op}: input is on {backend.device_of(input)} but weight is on "
                         f"{backend.device_of(weight)}")
    num_embeddings = weight.shape[0]
    if input.size:
        low, high = int(input.min()), int(input.max())
        if low < 0 or high >= num_embeddings:
            raise ValueError(f"{op}: indices must lie in [0, {num_embeddings}) for weight of "
                             f"shape {tuple(weight.shape)}, got values in [{low}, {high}]")
    indices = input.astype(np.int64, copy=False)
    if padding_idx is None:
        return indices, None
    if not isinstance(padding_idx, (int, np.integer)) or isinstance(padding_idx, bool):
        raise TypeError(f"{op}: padding_idx must be an int or None, got {C.shown(padding_idx)}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"{op}: padding_idx must lie in [{-num_embeddings}, {num_embeddings}) "
                         f"for weight of shape {tuple(weight.shape)}, got {padding_idx}")
    return indices, int(padding_idx) % num_embeddings


@backend.interop
def embedding(input, weight, padding_idx: int | None = None, *, impl: str | None = None):
    """``y[..., :] = weight[input[...], :]``.

    input: integer indices of any shape, each in ``[0, num_embeddings)``; weight:
    ``(num_embeddings, embedding_dim)``. Returns ``input.shape + (embedding_dim,)`` in the
    weight's dtype. padding_idx (negative counts from the end) only affects the backward
    pass: the forward returns that row as it is, as torch does.
    """
    indices, _ = _embedding_args("embedding", input, weight, padding_idx)
    # Chosen by the weight's device and dtype, not by the integer indices.
    chosen = kernels.select("embedding", impl, weight, (indices, weight))
    return chosen.fn(indices, weight)


@backend.interop
def embedding_backward(grad_output, input, weight, padding_idx: int | None = None, *,
                       impl: str | None = None):
    """``grad_weight[r] = sum of grad_output[...] over the positions where input[...] == r``.

    grad_output: ``input.shape + (embedding_dim,)``. Returns grad_weight, shaped like weight;
    the row at padding_idx is zero. The sum runs in index order, so it is deterministic.
    """
    op = "embedding_backward"
    indices, padding_idx = _embedding_args(op, input, weight, padding_idx)
    C.float_array(op, "grad_output", grad_output)
    C.same_kind(op, "weight", weight, grad_output=grad_output)
    C.shape_is(op, "grad_output", grad_output, tuple(input.shape) + (weight.shape[1],))
    return kernels.dispatch(op, impl, grad_output, indices, weight.shape[0], padding_idx)
