"""Pooling layers: MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d (torch's arguments)."""
from __future__ import annotations

from .. import functional as F
from .activation import ReLU
from .module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
           "AdaptiveAvgPool2d"]


class _Pool(Module):
    """y = op(x, *args); backward calls op_backward(grad, x, *args)."""

    samples_independent = True

    _op = None
    _op_backward = None

    def _args(self) -> tuple:
        raise NotImplementedError

    def forward(self, input):
        self._save(input)
        return type(self)._op(input, *self._args())

    def backward(self, grad_output):
        (input,) = self._saved()
        return type(self)._op_backward(grad_output, input, *self._args())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in vars(self).items()
                         if not k.startswith("_") and k != "training")


class _MaxPool(_Pool):
    """Max pooling; the forward keeps the argmax indices so that backward scatters the
    gradient without searching again. ``return_indices=True`` makes forward return
    ``(output, indices)`` as torch (then the layer cannot sit inside a Sequential)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def _args(self) -> tuple:
        return self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode

    def forward(self, input):
        out, indices = type(self)._op(input, *self._args(), return_indices=True)
        self._save(input, indices, out)
        return (out, indices) if self.return_indices else out

    def backward(self, grad_output):
        input, indices = self._saved()[:2]
        return type(self)._op_backward(grad_output, input, *self._args(), indices=indices)

    def takes_backward_of(self, before: Module) -> bool:
        """Whether :meth:`backward_through` can run the backward of ``before`` (the module
        whose output this layer pooled) with this one: a ReLU, and this layer computing as
        gpuconv's max pooling does (a subclass with its own forward or backward runs them)."""
        cls = type(self)
        return (type(before) is ReLU and cls.forward is _MaxPool.forward
                and cls.backward is _MaxPool.backward)

    def backward_through(self, grad_output, before: Module):
        """The gradient with respect to the input of ``before``, a ReLU whose output this
        layer pooled: ``relu_backward(max_pool_backward(g))`` computed as
        ``max_pool_backward(relu_backward(g, out))``, the mask taken from this layer's
        output ``out``. Each pooled value is the ReLU output at the position it scatters
        to, and ``relu(x) <= 0`` exactly where ``x <= 0`` (a NaN stays NaN and passes), so
        both give the same elements; this one masks the pooled tensor (a quarter of the
        elements with 2x2 windows) instead of making a pass over the full-size gradient
        (0.4 ms of LeNet-5's 10 ms training step at batch 128 on one thread)."""
        input, indices, out = self._saved()
        return type(self)._op_backward(F.relu_backward(grad_output, out), input, *self._args(),
                                       indices=indices)


class MaxPool1d(_MaxPool):
    """Max pooling over (N, C, L)."""

    _op, _op_backward = F.max_pool1d, F.max_pool1d_backward


class MaxPool2d(_MaxPool):
    """Max pooling over (N, C, H, W)."""

    _op, _op_backward = F.max_pool2d, F.max_pool2d_backward


class AvgPool1d(_Pool):
    """Average pooling over (N, C, L)."""

    _op, _op_backward = F.avg_pool1d, F.avg_pool1d_backward

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def _args(self) -> tuple:
        return self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad


class AvgPool2d(AvgPool1d):
    """Average pooling over (N, C, H, W); ``divisor_override`` replaces the window size as
    the divisor."""

    _op, _op_backward = F.avg_pool2d, F.avg_pool2d_backward

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)
        self.divisor_override = divisor_override

    def _args(self) -> tuple:
        return super()._args() + (self.divisor_override,)


class AdaptiveAvgPool1d(_Pool):
    """Average pooling of (N, C, L) to a fixed output length, windows as torch computes them."""

    _op, _op_backward = F.adaptive_avg_pool1d, F.adaptive_avg_pool1d_backward

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def _args(self) -> tuple:
        return (self.output_size,)


class AdaptiveAvgPool2d(AdaptiveAvgPool1d):
    """Average pooling of (N, C, H, W) to a fixed output size (oh, ow) (an int means square;
    None keeps that input size), windows as torch computes them."""

    _op, _op_backward = F.adaptive_avg_pool2d, F.adaptive_avg_pool2d_backward
