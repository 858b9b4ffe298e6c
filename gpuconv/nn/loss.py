"""Loss layers: CrossEntropyLoss, NLLLoss, MSELoss, L1Loss.

``forward(input, target)`` returns the loss (a 0-d array, or per-position losses with
``reduction="none"``); ``backward(grad_output=1.0)`` returns the gradient with respect to
``input`` (targets are data, not trained).
"""
from __future__ import annotations

from .. import backend, functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss"]


class _Loss(Module):
    _op = None
    _op_backward = None

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or "
                             f"'none', got {reduction!r}")
        self.reduction = reduction

    def _args(self) -> tuple:
        return (self.reduction,)

    def forward(self, input, target):
        self._save(input, target)
        return type(self)._op(input, target, *self._args())

    def _grad_input(self, grad):
        return type(self)._op_backward(grad, *self._saved(), *self._args())

    def backward(self, grad_output=1.0):
        """Gradient of ``grad_output * loss`` with respect to the forward's input.

        grad_output: a number or 0-d array for "mean"/"sum", an array shaped like the
        per-position loss for "none"; cast to the input's dtype and device.
        """
        input = self._saved()[0]
        xp = backend.array_module(input)
        grad = xp.asarray(grad_output, dtype=input.dtype)
        return self._grad_input(grad)

    # Per-position losses, summed or averaged over mean_divisor: shards of a batch add up to
    # the batch's loss (gpuconv.data_parallel).
    samples_independent = True

    def mean_divisor(self, target) -> float:
        """What ``reduction="mean"`` divides the summed loss of ``target`` by: here the number
        of target elements. A batch cut into shards has the batch's mean loss as the sum of
        the shards' ``"sum"`` losses over the batch's divisor (gpuconv.data_parallel)."""
        return float(target.size)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class _ClassLoss(_Loss):
    """A loss over class indices; ``weight`` (C,) is a buffer, as in torch's state_dict."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index

    def _args(self) -> tuple:
        return self.weight, self.ignore_index, self.reduction

    def mean_divisor(self, target) -> float:
        """The total weight of the targets that are not ``ignore_index`` (each counts 1
        without class weights)."""
        kept = target[target != self.ignore_index]
        if self.weight is None:
            return float(kept.size)
        return float(self.weight[kept].astype(float).sum())


class CrossEntropyLoss(_ClassLoss):
    """Cross-entropy of logits (N, C[, d...]) against class indices (N[, d...]), with optional
    class weights, ignore_index and label smoothing; see
    :func:`gpuconv.functional.cross_entropy`."""

    _op, _op_backward = F.cross_entropy, F.cross_entropy_backward

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__(weight, ignore_index, reduction)
        self.label_smoothing = label_smoothing

    def _args(self) -> tuple:
        return super()._args() + (self.label_smoothing,)


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of log-probabilities (N, C[, d...]) against class indices."""

    _op, _op_backward = F.nll_loss, F.nll_loss_backward


class _PointwiseLoss(_Loss):
    def _grad_input(self, grad):
        grad_input, _ = super()._grad_input(grad)
        return grad_input


class MSELoss(_PointwiseLoss):
    """Mean squared error (input - target)**2, reduced by mean, sum or none."""

    _op, _op_backward = F.mse_loss, F.mse_loss_backward


class L1Loss(_PointwiseLoss):
    """Mean absolute error |input - target|, reduced by mean, sum or none."""

    _op, _op_backward = F.l1_loss, F.l1_loss_backward
