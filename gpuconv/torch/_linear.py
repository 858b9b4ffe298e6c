"""Fully connected layers and embedding lookup as custom ops: ``linear``, ``embedding``."""
from __future__ import annotations

import torch

from .. import functional as F
from ._interop import call, define, empty_if_none

__all__ = ["linear", "embedding"]


def _linear_fake(input, weight, bias):
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


def _linear_backward_impl(grad_output, input, weight, bias):
    gx, gw, gb = call(F.linear_backward, grad_output, input, weight, bias)
    return gx, gw, empty_if_none(gb, input)


def _linear_backward_fake(grad_output, input, weight, bias):
    return (torch.empty_like(input), torch.empty_like(weight),
            input.new_empty(0) if bias is None else torch.empty_like(bias))


_linear = define("linear", "(Tensor input, Tensor weight, Tensor? bias) -> Tensor",
                 lambda input, weight, bias: call(F.linear, input, weight, bias), _linear_fake)
_linear_backward = define(
    "linear_backward", "(Tensor grad_output, Tensor input, Tensor weight, Tensor? bias) "
    "-> (Tensor, Tensor, Tensor)", _linear_backward_impl, _linear_backward_fake)


def _linear_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _linear_grad(ctx, grad_output):
    input, weight, bias = ctx.saved_tensors
    gx, gw, gb = _linear_backward(grad_output, input, weight, bias)
    return gx, gw, None if bias is None else gb


_linear.register_autograd(_linear_grad, setup_context=_linear_setup)


def linear(input, weight, bias=None):
    """``torch.nn.functional.linear`` (y = x W^T + b) computed by gpuconv, with autograd."""
    return _linear(input, weight, bias)


_embedding = define(
    "embedding", "(Tensor input, Tensor weight, int? padding_idx) -> Tensor",
    lambda input, weight, padding_idx: call(F.embedding, input, weight, padding_idx),
    lambda input, weight, padding_idx: weight.new_empty((*input.shape, weight.shape[1])))
_embedding_backward = define(
    "embedding_backward",
    "(Tensor grad_output, Tensor input, Tensor weight, int? padding_idx) -> Tensor",
    lambda grad_output, input, weight, padding_idx: call(F.embedding_backward, grad_output,
                                                         input, weight, padding_idx),
    lambda grad_output, input, weight, padding_idx: torch.empty_like(weight))


def _embedding_setup(ctx, inputs, output):
    input, weight, ctx.padding_idx = inputs
    ctx.save_for_backward(input, weight)


def _embedding_grad(ctx, grad_output):
    input, weight = ctx.saved_tensors
    return None, _embedding_backward(grad_output, input, weight, ctx.padding_idx), None


_embedding.register_autograd(_embedding_grad, setup_context=_embedding_setup)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """``torch.nn.functional.embedding`` computed by gpuconv, with autograd (dense gradient).

    max_norm, scale_grad_by_freq and sparse are not supported: they must keep their defaults.
    """
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise ValueError("embedding: max_norm, scale_grad_by_freq and sparse are not supported "
                         f"by gpuconv (got max_norm={max_norm!r}, scale_grad_by_freq="
                         f"{scale_grad_by_freq!r}, sparse={sparse!r})")
    return _embedding(input, weight, padding_idx)
