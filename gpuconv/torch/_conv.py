"""Convolutions as custom ops: ``conv1d``, ``conv2d``, ``conv_transpose2d``.

Each forward saves its input, weight and bias (references, no copies); its autograd formula
calls the matching ``gpuconv.functional.*_backward`` as the op ``gpuconv::<name>_backward``,
asking only for the gradients autograd needs (``output_mask``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF

from .. import functional as F
from ._interop import call, contiguous_like, define, empty_if_none, ints

__all__ = ["conv1d", "conv2d", "conv_transpose2d"]

_CONV_ARGS = "int[] stride, int[] padding, int[] dilation, int groups, bool same"


def _padding(same: bool, padding):
    return "same" if same else padding


def _grads_or_empty(grads, like) -> tuple:
    return tuple(empty_if_none(g, like) for g in grads)


def _define_conv(name: str, forward, backward, torch_fn):
    """``gpuconv::<name>`` and its backward for ``conv1d``/``conv2d`` (the same arguments)."""
    def impl(input, weight, bias, stride, padding, dilation, groups, same):
        return call(forward, input, weight, bias, stride, _padding(same, padding), dilation,
                    groups)

    def fake(input, weight, bias, stride, padding, dilation, groups, same):
        return contiguous_like(torch_fn(input, weight, bias, stride, _padding(same, padding),
                                        dilation, groups))

    def backward_impl(grad_output, input, weight, bias, stride, padding, dilation, groups, same,
                      output_mask):
        grads = call(backward, grad_output, input, weight, bias, stride,
                     _padding(same, padding), dilation, groups, output_mask=tuple(output_mask))
        return _grads_or_empty(grads, input)

    def backward_fake(grad_output, input, weight, bias, stride, padding, dilation, groups, same,
                      output_mask):
        shapes = (input, weight, bias if bias is not None else input.new_empty(0))
        return tuple(torch.empty_like(t) if need and t.numel() else input.new_empty(0)
                     for t, need in zip(shapes, output_mask))

    op = define(name, f"(Tensor input, Tensor weight, Tensor? bias, {_CONV_ARGS}) -> Tensor",
                impl, fake)
    op_backward = define(f"{name}_backward",
                         f"(Tensor grad_output, Tensor input, Tensor weight, Tensor? bias, "
                         f"{_CONV_ARGS}, bool[] output_mask) -> (Tensor, Tensor, Tensor)",
                         backward_impl, backward_fake)

    def setup_context(ctx, inputs, output):
        input, weight, bias, *ctx.args = inputs
        ctx.save_for_backward(input, weight, bias)

    def grad(ctx, grad_output):
        input, weight, bias = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:3])
        need[2] = need[2] and bias is not None
        grads = op_backward(grad_output, input, weight, bias, *ctx.args, need)
        return (*(g if n else None for g, n in zip(grads, need)), *[None] * len(ctx.args))

    op.register_autograd(grad, setup_context=setup_context)
    return op


_conv1d = _define_conv("conv1d", F.conv1d, F.conv1d_backward, TF.conv1d)
_conv2d = _define_conv("conv2d", F.conv2d, F.conv2d_backward, TF.conv2d)


def _conv_call(op, n: int, input, weight, bias, stride, padding, dilation, groups):
    same = padding == "same"
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ValueError(f"conv{n}d: padding must be an int, a sequence of {n} ints, 'valid' "
                         f"or 'same', got {padding!r}")
    pad = [0] * n if isinstance(padding, str) else ints(padding, n)
    return op(input, weight, bias, ints(stride, n), pad, ints(dilation, n), int(groups),
              same)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` computed by gpuconv (``gpuconv::conv2d``), with autograd.

    input (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW), bias (C_out,) or None;
    padding an int, a pair, ``"valid"`` or ``"same"``. See :func:`gpuconv.functional.conv2d`.
    """
    return _conv_call(_conv2d, 2, input, weight, bias, stride, padding, dilation, groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv1d`` computed by gpuconv (``gpuconv::conv1d``), with autograd.

    input (N, C_in, L), weight (C_out, C_in/groups, K). See :func:`gpuconv.functional.conv1d`.
    """
    return _conv_call(_conv1d, 1, input, weight, bias, stride, padding, dilation, groups)


_TRANSPOSE_ARGS = "int[] stride, int[] padding, int[] output_padding, int groups, int[] dilation"


def _transpose_impl(input, weight, bias, stride, padding, output_padding, groups, dilation):
    return call(F.conv_transpose2d, input, weight, bias, stride, padding, output_padding, groups,
                dilation)


def _transpose_fake(input, weight, bias, stride, padding, output_padding, groups, dilation):
    return contiguous_like(TF.conv_transpose2d(input, weight, bias, stride, padding,
                                               output_padding, groups, dilation))


_conv_transpose2d = define(
    "conv_transpose2d", f"(Tensor input, Tensor weight, Tensor? bias, {_TRANSPOSE_ARGS}) -> Tensor",
    _transpose_impl, _transpose_fake)


def _conv_transpose2d_backward_impl(grad_output, input, weight, bias, stride, padding,
                                    output_padding, groups, dilation):
    grads = call(F.conv_transpose2d_backward, grad_output, input, weight, bias, stride, padding,
                 output_padding, groups, dilation)
    return _grads_or_empty(grads, input)


def _conv_transpose2d_backward_fake(grad_output, input, weight, bias, *args):
    return (torch.empty_like(input), torch.empty_like(weight),
            input.new_empty(0) if bias is None else torch.empty_like(bias))


_conv_transpose2d_backward = define(
    "conv_transpose2d_backward",
    f"(Tensor grad_output, Tensor input, Tensor weight, Tensor? bias, {_TRANSPOSE_ARGS}) "
    "-> (Tensor, Tensor, Tensor)", _conv_transpose2d_backward_impl,
    _conv_transpose2d_backward_fake)


def _transpose_setup(ctx, inputs, output):
    input, weight, bias, *ctx.args = inputs
    ctx.save_for_backward(input, weight, bias)


def _transpose_grad(ctx, grad_output):
    input, weight, bias = ctx.saved_tensors
    gx, gw, gb = _conv_transpose2d_backward(grad_output, input, weight, bias, *ctx.args)
    return gx, gw, None if bias is None else gb, *[None] * len(ctx.args)


_conv_transpose2d.register_autograd(_transpose_grad, setup_context=_transpose_setup)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """``torch.nn.functional.conv_transpose2d`` computed by gpuconv, with autograd.

    input (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW), bias (C_out,) or None.
    See :func:`gpuconv.functional.conv_transpose2d`.
    """
    return _conv_transpose2d(input, weight, bias, ints(stride, 2), ints(padding, 2),
                             ints(output_padding, 2), int(groups), ints(dilation, 2))
