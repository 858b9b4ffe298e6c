"""Convolution layers: Conv1d, Conv2d, ConvTranspose2d (torch's arguments, names and shapes)."""
from __future__ import annotations

from typing import Any

from .. import _checks as C, backend, functional as F
from ._defaults import float_dtype, new_parameter, reset_weight_and_bias
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .module import Module, accumulate_grad

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]


class _ConvNd(Module):
    """Shared parts of the convolution layers; subclasses name the functional ops and the
    order of their trailing arguments (``_op_args``)."""

    _n: int
    _transposed = False
    samples_independent = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding,
                 dilation, groups: int, bias: bool, padding_mode: str, dtype: Any,
                 output_padding=0):
        super().__init__()
        name, n = type(self).__name__, self._n
        self.in_channels = C.positive_int(name, "in_channels", in_channels)
        self.out_channels = C.positive_int(name, "out_channels", out_channels)
        self.groups = C.positive_int(name, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.kernel_size = C.ntuple(name, "kernel_size", kernel_size, n)
        self.stride = C.ntuple(name, "stride", stride, n)
        self.dilation = C.ntuple(name, "dilation", dilation, n)
        self.padding = padding if isinstance(padding, str) else C.ntuple(
            name, "padding", padding, n, minimum=0)
        self.output_padding = C.ntuple(name, "output_padding", output_padding, n, minimum=0)
        dtype = float_dtype(name, dtype)
        if self._transposed:
            shape = (in_channels, out_channels // groups) + self.kernel_size
        else:
            shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = new_parameter(shape, dtype)
        self.register_parameter("bias", new_parameter((out_channels,), dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_weight_and_bias(self.weight, self.bias)

    def _bias_data(self):
        return None if self.bias is None else self.bias.data

    def forward(self, input):
        self._save(input)
        return self._forward_op(input, self.weight.data, self._bias_data(), *self._op_args())

    def backward(self, grad_output):
        return self._backward(grad_output)

    def _backward(self, grad_output, **options):
        """Add the weight's and bias's gradients into ``.grad``; return grad_input (None
        when ``options`` ask the op not to compute it)."""
        (input,) = self._saved()
        gx, gw, gb = self._backward_op(grad_output, input, self.weight.data, self._bias_data(),
                                       *self._op_args(), **options)
        accumulate_grad(self.weight, gw)
        if self.bias is not None:
            accumulate_grad(self.bias, gb)
        return gx

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1,) * self._n:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _Conv(_ConvNd):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 dtype: Any = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, dtype)

    def _op_args(self) -> tuple:
        return self.stride, self.padding, self.dilation, self.groups

    def backward_params(self, grad_output) -> None:
        """The weight's and bias's gradients only (``output_mask`` without grad_input)."""
        self._backward(grad_output, output_mask=(False, True, self.bias is not None))


class Conv1d(_Conv):
    """1-d convolution over (N, C_in, L) -> (N, C_out, OL); weight (C_out, C_in/groups, K),
    bias (C_out,). padding may be an int, "valid" or "same".
    See :func:`gpuconv.functional.conv1d`."""

    _n = 1
    _forward_op = staticmethod(F.conv1d)
    _backward_op = staticmethod(F.conv1d_backward)


class Conv2d(_Conv):
    """2-d convolution over (N, C_in, H, W) -> (N, C_out, OH, OW); weight
    (C_out, C_in/groups, kH, kW), bias (C_out,). See :func:`gpuconv.functional.conv2d`.

    On a GPU, a :class:`~gpuconv.nn.Sequential` runs a Conv2d followed by an activation
    whose derivative follows from its output (ReLU, LeakyReLU with a slope >= 0, Sigmoid,
    Tanh) as one :func:`~gpuconv.functional.conv2d_bias_act` call: one kernel launch, no
    intermediate array (:meth:`fused_activation`, :meth:`forward_fused`); on the CPU, a
    Conv2d and a ReLU (the numpy impl clamps as it stores the output)."""

    _n = 2
    _forward_op = staticmethod(F.conv2d)
    _backward_op = staticmethod(F.conv2d_backward)

    def fused_activation(self, activation: Module, input) -> tuple[str, float] | None:
        """``(name, param)`` of ``activation`` for the fused epilogue when this layer and it
        can run as one call on ``input``, else None (an unbatched input, other activations;
        on the CPU, all but ReLU)."""
        kind = type(activation)
        if getattr(input, "ndim", 0) != 4:   # conv2d_bias_act takes batched input only
            return None
        if backend.device_of(input) != "cuda":
            return ("relu", 0.0) if kind is ReLU else None
        if kind is LeakyReLU and activation.negative_slope >= 0:
            return "leaky_relu", activation.negative_slope
        names = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh"}
        return (names[kind], 0.0) if kind in names else None

    def forward_fused(self, input, activation: Module, fused: tuple[str, float]):
        """``activation(self(input))`` in one call. Each module keeps what its backward
        needs: this layer its input, the activation its output (as its input too: for these
        activations the output's sign, or the output itself, gives the derivative)."""
        self._save(input)
        name, param = fused
        out = F.conv2d_bias_act(input, self.weight.data, self._bias_data(), *self._op_args(),
                                activation=name, param=param)
        activation._save(out, out)
        return out


class ConvTranspose2d(_ConvNd):
    """2-d transposed convolution (N, C_in, H, W) -> (N, C_out, OH, OW); weight
    (C_in, C_out/groups, kH, kW), bias (C_out,). See :func:`gpuconv.functional.conv_transpose2d`."""

    _n = 2
    _transposed = True
    _forward_op = staticmethod(F.conv_transpose2d)
    _backward_op = staticmethod(F.conv_transpose2d_backward)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros", dtype: Any = None):
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be an int or a pair, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, dtype, output_padding)

    def _op_args(self) -> tuple:
        return self.stride, self.padding, self.output_padding, self.groups, self.dilation
