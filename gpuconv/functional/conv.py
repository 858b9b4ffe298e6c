"""Convolutions: ``conv1d``, ``conv2d``, ``conv_transpose2d`` and their explicit backward.

Layout NCHW (NCL for 1D), PyTorch's argument names, order and weight layouts; an unbatched
input (C, H, W) (or (C, L)) is accepted as in PyTorch, and its results have no batch axis
either (grad_output too). Each public function validates its arguments, normalises them
to the plain form the registry contract asks for (see :mod:`gpuconv.kernels.reference.conv`),
and dispatches. ``conv1d`` is
``conv2d`` with ``H = 1``; ``padding="same"`` with an even effective kernel pads the input
here, the extra row/column at the bottom/right as PyTorch does, so impls only ever see
symmetric padding.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence, Union

import numpy as np

from .. import _checks as C, backend, kernels

__all__ = ["conv1d", "conv2d", "conv_transpose2d",
           "conv1d_backward", "conv2d_backward", "conv_transpose2d_backward",
           "conv2d_bias_act", "CONV_ACTIVATIONS"]

# The activations conv2d_bias_act fuses into the convolution's epilogue.
CONV_ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu")

IntOrPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int], str]


class _Conv(NamedTuple):
    """A validated convolution call in the form the impls take.

    ``extra`` is the zero padding (bottom, right) the public function adds to the input
    before calling an impl (nonzero only for ``"same"`` with an even effective kernel).
    """

    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    extra: tuple
    out_hw: tuple


class _ConvTranspose(NamedTuple):
    """A validated transposed convolution call in the form the impls take."""

    stride: tuple
    padding: tuple
    output_padding: tuple
    dilation: tuple
    groups: int
    out_hw: tuple


def _batched(op: str, input, ndim: int):
    """``input`` with a batch axis (a view), and whether it had one: PyTorch accepts an
    unbatched (C, *spatial) input, rank ``ndim - 1``."""
    C.float_array(op, "input", input, (ndim - 1, ndim))
    return (input, True) if input.ndim == ndim else (input[None], False)


def _unbatched(result, batched: bool):
    return result if batched or result is None else result[0]


def _check_arrays(op: str, input, weight, bias, ndim: int, out_axis: int) -> None:
    """Dtypes, ranks and non-empty sizes; ``out_axis`` is the weight's output-channel axis.
    ``input`` has its batch axis here."""
    C.float_array(op, "weight", weight, ndim)
    if bias is not None:
        C.float_array(op, "bias", bias, 1)
    C.same_kind(op, "input", input, weight=weight, bias=bias)
    if min(input.shape[2:]) < 1:
        raise ValueError(f"{op}: input {tuple(input.shape)} has an empty spatial dimension")
    if min(weight.shape[2:]) < 1:
        raise ValueError(f"{op}: weight {tuple(weight.shape)} has an empty kernel")
    if weight.shape[out_axis] < 1:
        raise ValueError(f"{op}: weight {tuple(weight.shape)} has no output channels "
                         f"(weight.shape[{out_axis}])")


def _check_groups(op: str, groups, channels: dict) -> int:
    groups = C.positive_int(op, "groups", groups)
    for name, count in channels.items():
        if count % groups:
            raise ValueError(f"{op}: {name} ({count}) must be divisible by groups ({groups})")
    return groups


def _check_bias(op: str, bias, c_out: int) -> None:
    if bias is not None:
        C.shape_is(op, "bias", bias, (c_out,))


def _same_padding(op: str, stride, dilation, kernel) -> tuple[tuple, tuple]:
    """PyTorch's "same": total d*(k-1) per axis, the odd one out at the bottom/right."""
    if any(s != 1 for s in stride):
        raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
    totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
    return tuple(t // 2 for t in totals), tuple(t % 2 for t in totals)


def _conv_geometry(op: str, input, weight, stride, padding, dilation, groups, n: int) -> _Conv:
    """Validate the geometry of an ``n``-d convolution and return it as 2-d pairs (kept
    for arguments of plain ints and strings: a layer asks the same every step)."""
    geometry = (_cached_conv_geometry if C.plain(stride, padding, dilation, groups)
                else _conv_geometry_of)
    return geometry(op, tuple(input.shape), tuple(weight.shape), stride, padding, dilation,
                    groups, n)


def _conv_geometry_of(op: str, input_shape: tuple, weight_shape: tuple, stride, padding,
                      dilation, groups, n: int) -> _Conv:
    stride = C.ntuple(op, "stride", stride, n)
    dilation = C.ntuple(op, "dilation", dilation, n)
    kernel = tuple(weight_shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            pad, extra = (0,) * n, (0,) * n
        elif padding == "same":
            pad, extra = _same_padding(op, stride, dilation, kernel)
        else:
            raise ValueError(f"{op}: padding must be an int, a sequence of {n} ints, "
                             f"'valid' or 'same', got {C.shown(padding)}")
    else:
        pad, extra = C.ntuple(op, "padding", padding, n, minimum=0), (0,) * n
    groups = _check_groups(op, groups, {"input channels": input_shape[1],
                                        "output channels (weight.shape[0])": weight_shape[0]})
    if input_shape[1] != weight_shape[1] * groups:
        raise ValueError(f"{op}: input has {input_shape[1]} channels but weight "
                         f"{tuple(weight_shape)} with groups={groups} expects "
                         f"{weight_shape[1] * groups}")
    out = []
    for size, k, s, p, d, e in zip(input_shape[2:], kernel, stride, pad, dilation, extra):
        span = d * (k - 1) + 1
        if size + 2 * p + e < span:
            raise ValueError(f"{op}: kernel {kernel} with dilation {dilation} spans more than "
                             f"the padded input (input {input_shape}, padding {padding!r})")
        out.append((size + 2 * p + e - span) // s + 1)
    if n == 1:  # conv1d runs as conv2d over a height of 1
        return _Conv((1,) + stride, (0,) + pad, (1,) + dilation, groups, (0,) + extra,
                     (1,) + tuple(out))
    return _Conv(stride, pad, dilation, groups, extra, tuple(out))


# typed: True and 1 are equal keys, but only 1 is a valid group count.
_cached_conv_geometry = functools.lru_cache(maxsize=256, typed=True)(_conv_geometry_of)


def _validated_conv(op: str, input, weight, bias, stride, padding, dilation, groups,
                    n: int) -> _Conv:
    _check_arrays(op, input, weight, bias, n + 2, out_axis=0)
    geo = _conv_geometry(op, input, weight, stride, padding, dilation, groups, n)
    _check_bias(op, bias, weight.shape[0])
    return geo


def _check_grad_output(op: str, grad_output, input, shape: tuple, batched: bool):
    """Check grad_output against the forward's output ``shape`` (with its batch axis) in the
    caller's layout; return it with a batch axis."""
    if not batched:
        shape = shape[1:]
    C.float_array(op, "grad_output", grad_output, len(shape))
    C.same_kind(op, "input", input, grad_output=grad_output)
    C.shape_is(op, "grad_output", grad_output, shape)
    return grad_output if batched else grad_output[None]


def _as_2d(x, n: int):
    """View an NCL array as NC1L (``n == 1``); NCHW arrays pass through."""
    return x[:, :, None, :] if n == 1 else x


def _from_2d(x, n: int):
    return x[:, :, 0, :] if n == 1 else x


def _pad_extra(x, extra: tuple):
    if not any(extra):
        return x
    xp = backend.array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))


def _conv_nd(op: str, n: int, input, weight, bias, stride, padding, dilation, groups, impl):
    input, batched = _batched(op, input, n + 2)
    geo = _validated_conv(op, input, weight, bias, stride, padding, dilation, groups, n)
    x = _pad_extra(_as_2d(input, n), geo.extra)
    y = kernels.dispatch("conv2d", impl, x, _as_2d(weight, n), bias,
                         geo.stride, geo.padding, geo.dilation, geo.groups)
    return _unbatched(_from_2d(y, n), batched)


def _check_output_mask(op: str, output_mask) -> tuple[bool, bool, bool]:
    if (not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3
            or not all(isinstance(m, (bool, np.bool_)) for m in output_mask)):
        raise ValueError(f"{op}: output_mask must be three bools (input, weight, bias), "
                         f"got {C.shown(output_mask)}")
    return tuple(bool(m) for m in output_mask)


def _conv_nd_backward(op: str, n: int, grad_output, input, weight, bias, stride, padding,
                      dilation, groups, impl, output_mask):
    input, batched = _batched(op, input, n + 2)
    geo = _validated_conv(op, input, weight, bias, stride, padding, dilation, groups, n)
    out_shape = (input.shape[0], weight.shape[0]) + geo.out_hw[2 - n:]
    grad_output = _check_grad_output(op, grad_output, input, out_shape, batched)
    need_x, need_w, need_b = _check_output_mask(op, output_mask)
    x = _pad_extra(_as_2d(input, n), geo.extra)
    gx, gw, gb = kernels.dispatch("conv2d_backward", impl, _as_2d(grad_output, n), x,
                                  _as_2d(weight, n), (need_x, need_w, need_b and bias is not None),
                                  geo.stride, geo.padding, geo.dilation, geo.groups)
    if gx is not None and any(geo.extra):
        gx = gx[:, :, :gx.shape[2] - geo.extra[0], :gx.shape[3] - geo.extra[1]]
    return (None if gx is None else _unbatched(_from_2d(gx, n), batched),
            None if gw is None else _from_2d(gw, n), gb)


@backend.interop
def conv2d(input, weight, bias=None, stride: IntOrPair = 1, padding: Padding = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, impl: str | None = None):
    """2-d cross-correlation, as ``torch.nn.functional.conv2d``.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in/groups, kH, kW);
    bias: (C_out,) or None. padding: an int, a pair, ``"valid"`` (0) or ``"same"`` (output
    size = input size; stride 1). Returns y: (N, C_out, OH, OW) (or (C_out, OH, OW)), OH = (H + 2*ph - dh*(kH-1) - 1) // sh + 1, with
    y[n, o, i, j] = bias[o] + sum_{c, a, b} x_pad[n, g*C_in/groups + c, i*sh + a*dh, j*sw + b*dw]
    * weight[o, c, a, b], g = o // (C_out/groups).
    """
    return _conv_nd("conv2d", 2, input, weight, bias, stride, padding, dilation, groups, impl)


@backend.interop
def conv2d_backward(grad_output, input, weight, bias=None, stride: IntOrPair = 1,
                    padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, *,
                    output_mask: tuple[bool, bool, bool] = (True, True, True),
                    impl: str | None = None):
    """Gradients of :func:`conv2d` given grad_output (N, C_out, OH, OW).

    Returns (grad_input (N, C_in, H, W), grad_weight (C_out, C_in/groups, kH, kW),
    grad_bias (C_out,)). ``output_mask`` (input, weight, bias) says which to compute, as in
    PyTorch's ``convolution_backward``; the others are None, and so is grad_bias when bias
    is None. A network's first layer, say, needs no grad_input.
    """
    return _conv_nd_backward("conv2d_backward", 2, grad_output, input, weight, bias,
                             stride, padding, dilation, groups, impl, output_mask)


@backend.interop
def conv1d(input, weight, bias=None, stride: IntOrPair = 1, padding: Padding = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, impl: str | None = None):
    """1-d cross-correlation, as ``torch.nn.functional.conv1d``.

    input: (N, C_in, L) or unbatched (C_in, L); weight: (C_out, C_in/groups, K); bias: (C_out,) or None.
    Returns y: (N, C_out, OL) (or (C_out, OL)), OL = (L + 2*p - d*(K-1) - 1) // s + 1; computed as
    :func:`conv2d` over a height of 1.
    """
    return _conv_nd("conv1d", 1, input, weight, bias, stride, padding, dilation, groups, impl)


@backend.interop
def conv1d_backward(grad_output, input, weight, bias=None, stride: IntOrPair = 1,
                    padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, *,
                    output_mask: tuple[bool, bool, bool] = (True, True, True),
                    impl: str | None = None):
    """Gradients of :func:`conv1d` given grad_output (N, C_out, OL).

    Returns (grad_input (N, C_in, L), grad_weight (C_out, C_in/groups, K),
    grad_bias (C_out,)), None where ``output_mask`` (input, weight, bias) is False and for
    grad_bias when bias is None.
    """
    return _conv_nd_backward("conv1d_backward", 1, grad_output, input, weight, bias,
                             stride, padding, dilation, groups, impl, output_mask)


def _validated_conv_transpose(op: str, input, weight, bias, stride, padding, output_padding,
                              groups, dilation) -> _ConvTranspose:
    _check_arrays(op, input, weight, bias, 4, out_axis=1)
    stride = C.ntuple(op, "stride", stride, 2)
    dilation = C.ntuple(op, "dilation", dilation, 2)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a pair of ints "
                         "(no 'same'/'valid' for a transposed convolution), "
                         f"got {C.shown(padding)}")
    padding = C.ntuple(op, "padding", padding, 2, minimum=0)
    output_padding = C.ntuple(op, "output_padding", output_padding, 2, minimum=0)
    if any(op_ >= s and op_ >= d for op_, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"{op}: output_padding {output_padding} must be smaller than either "
                         f"stride {stride} or dilation {dilation}")
    groups = _check_groups(op, groups, {"input channels": input.shape[1]})
    if input.shape[1] != weight.shape[0]:
        raise ValueError(f"{op}: input has {input.shape[1]} channels but weight "
                         f"{tuple(weight.shape)} expects {weight.shape[0]} (weight.shape[0])")
    _check_bias(op, bias, weight.shape[1] * groups)
    out = tuple((size - 1) * s - 2 * p + d * (k - 1) + o + 1 for size, s, p, d, k, o in
                zip(input.shape[2:], stride, padding, dilation, weight.shape[2:], output_padding))
    if min(out) < 1:
        raise ValueError(f"{op}: output size {out} is not positive (input {tuple(input.shape)}, "
                         f"weight {tuple(weight.shape)}, stride {stride}, padding {padding})")
    return _ConvTranspose(stride, padding, output_padding, dilation, groups, out)


@backend.interop
def conv_transpose2d(input, weight, bias=None, stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1, dilation: IntOrPair = 1,
                     *, impl: str | None = None):
    """2-d transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_in, C_out/groups, kH, kW);
    bias: (C_out,) or None. Returns y: (N, C_out, OH, OW) (or (C_out, OH, OW)), OH = (H-1)*sh - 2*ph + dh*(kH-1) + oph + 1: the adjoint of
    :func:`conv2d` with the same weight (it maps conv2d's output space to its input space),
    plus bias. output_padding (< stride or < dilation) adds rows/columns at the bottom/right.
    """
    op = "conv_transpose2d"
    input, batched = _batched(op, input, 4)
    geo = _validated_conv_transpose(op, input, weight, bias, stride, padding, output_padding,
                                    groups, dilation)
    return _unbatched(kernels.dispatch(op, impl, input, weight, bias, geo.stride, geo.padding,
                                       geo.output_padding, geo.dilation, geo.groups), batched)


@backend.interop
def conv_transpose2d_backward(grad_output, input, weight, bias=None, stride: IntOrPair = 1,
                              padding: IntOrPair = 0, output_padding: IntOrPair = 0,
                              groups: int = 1, dilation: IntOrPair = 1, *,
                              impl: str | None = None):
    """Gradients of :func:`conv_transpose2d` given grad_output (N, C_out, OH, OW).

    Returns (grad_input (N, C_in, H, W), grad_weight (C_in, C_out/groups, kH, kW),
    grad_bias (C_out,) or None when bias is None).
    """
    op = "conv_transpose2d_backward"
    input, batched = _batched(op, input, 4)
    geo = _validated_conv_transpose(op, input, weight, bias, stride, padding, output_padding,
                                    groups, dilation)
    grad_output = _check_grad_output(op, grad_output, input,
                                     (input.shape[0], weight.shape[1] * groups) + geo.out_hw,
                                     batched)
    gx, gw, gb = kernels.dispatch(op, impl, grad_output, input, weight, bias is not None,
                                  geo.stride, geo.padding, geo.output_padding, geo.dilation,
                                  geo.groups)
    return _unbatched(gx, batched), gw, gb


@backend.interop
def conv2d_bias_act(input, weight, bias=None, stride: IntOrPair = 1, padding: Padding = 0,
                    dilation: IntOrPair = 1, groups: int = 1, *, activation: str = "relu",
                    param: float = 0.0, residual=None, scale=None, impl: str | None = None):
    """``act(scale[o] * conv2d(input, weight) + bias[o] + residual)`` in one pass: on a GPU
    the implicit-GEMM kernel applies all of it to its accumulators before the one store.

    input, weight, stride, padding, dilation, groups: as :func:`conv2d`; bias and scale:
    (C_out,) or None (scale folds an eval-mode batch norm into the convolution); residual:
    None or an array shaped like the output (N, C_out, OH, OW), added before the activation
    (a ResNet block's shortcut). activation: one of :data:`CONV_ACTIVATIONS` (gelu is the
    exact, erf form); param: leaky_relu's negative_slope or elu's alpha.
    """
    op = "conv2d_bias_act"
    geo = _validated_conv(op, input, weight, bias, stride, padding, dilation, groups, 2)
    if activation not in CONV_ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {', '.join(CONV_ACTIVATIONS)}, "
                         f"got {C.shown(activation)}")
    param = C.finite_float(op, "param", param)
    if scale is not None:
        C.float_array(op, "scale", scale, 1)
        C.same_kind(op, "input", input, scale=scale)
        _check_bias(op, scale, weight.shape[0])
    if residual is not None:
        C.float_array(op, "residual", residual, 4)
        C.same_kind(op, "input", input, residual=residual)
        C.shape_is(op, "residual", residual, (input.shape[0], weight.shape[0]) + geo.out_hw)
    x = _pad_extra(input, geo.extra)
    return kernels.dispatch(op, impl, x, weight, bias, geo.stride, geo.padding, geo.dilation,
                            geo.groups, activation, param, residual, scale)
