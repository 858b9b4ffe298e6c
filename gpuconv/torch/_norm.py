"""Normalisation as custom ops: ``batch_norm`` and ``local_response_norm``.

PyTorch differentiates only functional custom ops, so ``gpuconv::batch_norm`` returns the
updated running statistics (a copy of C values each) and :func:`batch_norm` copies them into
the caller's buffers, which is the in-place update PyTorch's batch_norm makes.

batch_norm's backward takes the batch statistics from the saved input in training (so the
running statistics it has updated are not saved) and the running statistics in evaluation.
"""
from __future__ import annotations

import torch

from .. import functional as F
from ._interop import call, define, define_unary, empty_if_none

__all__ = ["batch_norm", "local_response_norm"]


def _batch_norm_backward_impl(grad_output, input, running_mean, running_var, weight, bias,
                              training, eps):
    grads = call(F.batch_norm_backward, grad_output, input, running_mean, running_var, weight,
                 bias, training, eps)
    return tuple(empty_if_none(g, input) for g in grads)


def _batch_norm_backward_fake(grad_output, input, running_mean, running_var, weight, bias,
                              training, eps):
    return (torch.empty_like(input), *(input.new_empty(0) if p is None else torch.empty_like(p)
                                       for p in (weight, bias)))


def _batch_norm_impl(input, running_mean, running_var, weight, bias, training, momentum, eps):
    stats = [None if s is None else s.clone() for s in (running_mean, running_var)]
    y = call(F.batch_norm, input, *stats, weight, bias, training, momentum, eps)
    return y, *(empty_if_none(s, input) for s in stats)


def _batch_norm_fake(input, running_mean, running_var, *args):
    return (torch.empty_like(input), *(input.new_empty(0) if s is None else torch.empty_like(s)
                                       for s in (running_mean, running_var)))


_batch_norm = define(
    "batch_norm", "(Tensor input, Tensor? running_mean, Tensor? running_var, Tensor? weight, "
    "Tensor? bias, bool training, float momentum, float eps) -> (Tensor, Tensor, Tensor)",
    _batch_norm_impl, _batch_norm_fake)
_batch_norm_backward = define(
    "batch_norm_backward", "(Tensor grad_output, Tensor input, Tensor? running_mean, "
    "Tensor? running_var, Tensor? weight, Tensor? bias, bool training, float eps) "
    "-> (Tensor, Tensor, Tensor)", _batch_norm_backward_impl, _batch_norm_backward_fake)


def _batch_norm_setup(ctx, inputs, output):
    input, running_mean, running_var, weight, bias, ctx.training, _, ctx.eps = inputs
    if ctx.training:  # the batch's statistics, recomputed from the input
        running_mean = running_var = None
    ctx.save_for_backward(input, running_mean, running_var, weight, bias)


def _batch_norm_grad(ctx, grad_output, grad_mean, grad_var):
    input, running_mean, running_var, weight, bias = ctx.saved_tensors
    gx, gw, gb = _batch_norm_backward(grad_output, input, running_mean, running_var, weight,
                                      bias, ctx.training, ctx.eps)
    return (gx, None, None, None if weight is None else gw, None if bias is None else gb,
            None, None, None)


_batch_norm.register_autograd(_batch_norm_grad, setup_context=_batch_norm_setup)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-05):
    """``torch.nn.functional.batch_norm`` computed by gpuconv, with autograd; in training the
    running statistics (when given) are updated in place, as PyTorch does."""
    y, mean, var = _batch_norm(input, running_mean, running_var, weight, bias, bool(training),
                               float(momentum), float(eps))
    if training and running_mean is not None:
        with torch.no_grad():
            running_mean.copy_(mean)
            running_var.copy_(var)
    return y


_local_response_norm = define_unary("local_response_norm", F.local_response_norm,
                                    F.local_response_norm_backward,
                                    "int size, float alpha, float beta, float k")


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """``torch.nn.functional.local_response_norm`` computed by gpuconv, with autograd."""
    return _local_response_norm(input, int(size), float(alpha), float(beta), float(k))
