"""Losses as custom ops: ``cross_entropy``, ``nll_loss``, ``mse_loss``, ``l1_loss``.

Each saves its input and target (references) for the functional backward. The class-index
losses have no gradient with respect to their class weights (as in PyTorch, asking for one
is an error); mse_loss and l1_loss also give the target's gradient.
"""
from __future__ import annotations

import torch

from .. import functional as F
from ._interop import call, define

__all__ = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss"]


def _loss_fake(input, target, *args):
    """A loss's fake result: reduced to () unless reduction is "none" (then target's shape)."""
    reduction = next(a for a in args if isinstance(a, str))
    return input.new_empty(target.shape if reduction == "none" else ())


def _define_class_loss(name: str, forward, backward, params: str):
    args = f"Tensor? weight, int ignore_index, str reduction{params}"
    op = define(name, f"(Tensor input, Tensor target, {args}) -> Tensor",
                lambda input, target, *rest: call(forward, input, target, *rest), _loss_fake)
    op_backward = define(
        f"{name}_backward", f"(Tensor grad_output, Tensor input, Tensor target, {args}) -> Tensor",
        lambda grad_output, input, target, *rest: call(backward, grad_output, input, target,
                                                       *rest),
        lambda grad_output, input, *rest: torch.empty_like(input))

    def setup_context(ctx, inputs, output):
        input, target, weight, *ctx.args = inputs
        ctx.save_for_backward(input, target, weight)

    def grad(ctx, grad_output):
        if ctx.needs_input_grad[2]:
            raise NotImplementedError(f"{name}: the gradient with respect to weight (the class "
                                      "weights) is not implemented, as in PyTorch")
        input, target, weight = ctx.saved_tensors
        return (op_backward(grad_output, input, target, weight, *ctx.args), None, None,
                *[None] * len(ctx.args))

    op.register_autograd(grad, setup_context=setup_context)
    return op


_cross_entropy = _define_class_loss("cross_entropy", F.cross_entropy, F.cross_entropy_backward,
                                    ", float label_smoothing")
_nll_loss = _define_class_loss("nll_loss", F.nll_loss, F.nll_loss_backward, "")


def _define_pointwise_loss(name: str, forward, backward):
    op = define(name, "(Tensor input, Tensor target, str reduction) -> Tensor",
                lambda input, target, reduction: call(forward, input, target, reduction),
                _loss_fake)
    op_backward = define(
        f"{name}_backward",
        "(Tensor grad_output, Tensor input, Tensor target, str reduction) -> (Tensor, Tensor)",
        lambda grad_output, input, target, reduction: call(backward, grad_output, input, target,
                                                           reduction),
        lambda grad_output, input, target, reduction: (torch.empty_like(input),
                                                       torch.empty_like(target)))

    def setup_context(ctx, inputs, output):
        input, target, ctx.reduction = inputs
        ctx.save_for_backward(input, target)

    def grad(ctx, grad_output):
        grad_input, grad_target = op_backward(grad_output, *ctx.saved_tensors, ctx.reduction)
        return grad_input, grad_target, None

    op.register_autograd(grad, setup_context=setup_context)
    return op


_mse_loss = _define_pointwise_loss("mse_loss", F.mse_loss, F.mse_loss_backward)
_l1_loss = _define_pointwise_loss("l1_loss", F.l1_loss, F.l1_loss_backward)


def _no_legacy(op: str, size_average, reduce) -> None:
    if size_average is not None or reduce is not None:
        raise ValueError(f"{op}: size_average and reduce are deprecated in PyTorch and not "
                         "supported by gpuconv; use reduction='mean', 'sum' or 'none'")


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """``torch.nn.functional.cross_entropy`` (class-index targets) computed by gpuconv.

    One difference, as :func:`gpuconv.functional.cross_entropy`: a "mean" over no counted
    target raises a ValueError where PyTorch returns NaN.
    """
    _no_legacy("cross_entropy", size_average, reduce)
    return _cross_entropy(input, target, weight, int(ignore_index), reduction,
                          float(label_smoothing))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """``torch.nn.functional.nll_loss`` computed by gpuconv, with autograd."""
    _no_legacy("nll_loss", size_average, reduce)
    return _nll_loss(input, target, weight, int(ignore_index), reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """``torch.nn.functional.mse_loss`` computed by gpuconv (no broadcasting), with autograd."""
    _no_legacy("mse_loss", size_average, reduce)
    return _mse_loss(input, target, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """``torch.nn.functional.l1_loss`` computed by gpuconv (no broadcasting), with autograd."""
    _no_legacy("l1_loss", size_average, reduce)
    return _l1_loss(input, target, reduction)
