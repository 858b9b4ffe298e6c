"""Normalisation layers: BatchNorm1d, BatchNorm2d, LocalResponseNorm."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _checks as C, functional as F, init
from ._defaults import float_dtype, new_parameter
from .module import Module, accumulate_grad

__all__ = ["BatchNorm1d", "BatchNorm2d", "LocalResponseNorm"]


class _BatchNorm(Module):
    """Batch normalisation with torch's arguments, parameters and buffers.

    Parameters ``weight`` (ones) and ``bias`` (zeros) when ``affine``; buffers
    ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (int64 0)
    when ``track_running_stats``. In training mode the layer normalises with the batch
    statistics and updates the running ones in place (``momentum=None`` uses the cumulative
    average 1 / num_batches_tracked, as torch); in eval mode it normalises with the running
    statistics (or with the batch's when it tracks none).
    """

    _ranks: tuple

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype: Any = None):
        super().__init__()
        name = type(self).__name__
        self.num_features = C.positive_int(name, "num_features", num_features)
        self.eps = C.finite_float(name, "eps", eps, low=0.0, low_open=True)
        self.momentum = None if momentum is None else C.finite_float(
            name, "momentum", momentum, low=0.0, high=1.0)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = float_dtype(name, dtype)
        shape = (num_features,)
        self.register_parameter("weight", new_parameter(shape, dtype) if affine else None)
        self.register_parameter("bias", new_parameter(shape, dtype) if affine else None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(shape, dtype))
            self.register_buffer("running_var", np.ones(shape, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(buffer, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def _data(self, name: str):
        p = self._parameters[name]
        return None if p is None else p.data

    @property
    def samples_independent(self) -> bool:
        """With running statistics (eval mode) each sample is normalised on its own."""
        return not self.training and self.track_running_stats

    def _updates_running_stats(self) -> bool:
        return self.training and self.track_running_stats

    def _momentum(self) -> float:
        if not self._updates_running_stats():
            return 0.0  # unused: the running statistics stay as they are
        if self.momentum is None:
            return 1.0 / (float(self.num_batches_tracked) + 1)
        return self.momentum

    def forward(self, input):
        return self._normalise(F.batch_norm, input)

    def forward_relu(self, input, relu: Module, residual=None):
        """``relu(self(input) + residual)`` (residual None: ``relu(self(input))``) in one
        pass (:func:`~gpuconv.functional.batch_norm_relu`). Each module keeps what its
        backward needs: this layer its input, ``relu`` its output as its input too (the sum
        is positive exactly where the output is), so the backwards run unchanged and the
        residual's gradient is ``relu.backward``'s."""
        out = self._normalise(F.batch_norm_relu, input, residual=residual)
        relu._save(out, out)
        return out

    def _normalise(self, op, input, **kwargs):
        if input.ndim not in self._ranks:
            want = " or ".join(f"{r}-d" for r in self._ranks)
            raise ValueError(f"{type(self).__name__}: expected {want} input, got shape "
                             f"{tuple(input.shape)}")
        use_batch_stats = self.training or not self.track_running_stats
        out = op(input, self.running_mean, self.running_var, self._data("weight"),
                 self._data("bias"), use_batch_stats, self._momentum(), self.eps, **kwargs)
        if self._updates_running_stats():
            self.num_batches_tracked += 1
        self._save(input, use_batch_stats)
        return out

    def folds(self) -> bool:
        """Whether this layer is an affine map per channel now (evaluation with running
        statistics), which a convolution before it can apply (:meth:`fold`)."""
        return not self.training and self.track_running_stats

    def fold(self) -> tuple:
        """``(scale, shift)`` with ``self(x) == x * scale[c] + shift[c]`` while :meth:`folds`
        (:func:`~gpuconv.functional.batch_norm_fold`)."""
        return F.batch_norm_fold(self.running_mean, self.running_var, self._data("weight"),
                                 self._data("bias"), self.eps)

    def backward(self, grad_output):
        input, use_batch_stats = self._saved()
        gx, gw, gb = F.batch_norm_backward(grad_output, input, self.running_mean,
                                           self.running_var, self._data("weight"),
                                           self._data("bias"), use_batch_stats, self.eps)
        if self.affine:
            accumulate_grad(self.weight, gw)
            accumulate_grad(self.bias, gb)
        return gx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L), statistics per channel."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W), statistics per channel."""

    _ranks = (4,)


class LocalResponseNorm(Module):
    """Local response normalisation across channels (AlexNet), torch's formula; see
    :func:`gpuconv.functional.local_response_norm`."""

    samples_independent = True

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def _args(self) -> tuple:
        return self.size, self.alpha, self.beta, self.k

    def forward(self, input):
        self._save(input)
        return F.local_response_norm(input, *self._args())

    def backward(self, grad_output):
        (input,) = self._saved()
        return F.local_response_norm_backward(grad_output, input, *self._args())

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
