"""Pooling as custom ops: max, average and adaptive average pooling in 1D and 2D.

``gpuconv::max_pool{1,2}d`` always returns the indices of the maxima too: autograd saves
them and the backward scatters through them (``indices=`` of the functional backward), so
nothing is recomputed. The other ops save only their input (a reference, for its shape).
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF

from .. import functional as F
from ._interop import call, contiguous_like, define, define_unary, ints

__all__ = ["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
           "adaptive_avg_pool2d"]


def _stride(stride: list):
    return None if len(stride) == 0 else stride


def _define_max_pool(name: str, forward, backward, torch_fn):
    args = "int[] kernel_size, int[] stride, int[] padding, int[] dilation, bool ceil_mode"

    def impl(input, kernel_size, stride, padding, dilation, ceil_mode):
        return call(forward, input, kernel_size, _stride(stride), padding, dilation, ceil_mode,
                    return_indices=True)

    def fake(input, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = torch_fn(input, kernel_size, _stride(stride), padding, dilation,
                                ceil_mode, return_indices=True)
        return contiguous_like(out), contiguous_like(indices)

    def backward_impl(grad_output, input, indices, kernel_size, stride, padding, dilation,
                      ceil_mode):
        return call(backward, grad_output, input, kernel_size, _stride(stride), padding,
                    dilation, ceil_mode, indices=indices)

    def backward_fake(grad_output, input, indices, *args):
        return torch.empty_like(input)

    op = define(name, f"(Tensor input, {args}) -> (Tensor, Tensor)", impl, fake)
    op_backward = define(f"{name}_backward",
                         f"(Tensor grad_output, Tensor input, Tensor indices, {args}) -> Tensor",
                         backward_impl, backward_fake)


    def setup_context(ctx, inputs, output):
        input, *ctx.args = inputs
        ctx.save_for_backward(input, output[1])

    def grad(ctx, grad_output, grad_indices):
        return op_backward(grad_output, *ctx.saved_tensors, *ctx.args), *[None] * len(ctx.args)

    op.register_autograd(grad, setup_context=setup_context)
    return op


_max_pool1d = _define_max_pool("max_pool1d", F.max_pool1d, F.max_pool1d_backward, TF.max_pool1d)
_max_pool2d = _define_max_pool("max_pool2d", F.max_pool2d, F.max_pool2d_backward, TF.max_pool2d)


def _max_pool(op, n: int, input, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices):
    stride = [] if stride is None else ints(stride, n)
    out, indices = op(input, ints(kernel_size, n), stride, ints(padding, n),
                      ints(dilation, n), bool(ceil_mode))
    return (out, indices) if return_indices else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool2d`` computed by gpuconv, with autograd through the saved
    indices. input (N, C, H, W) or (C, H, W). See :func:`gpuconv.functional.max_pool2d`."""
    return _max_pool(_max_pool2d, 2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool1d`` computed by gpuconv; input (N, C, L) or (C, L)."""
    return _max_pool(_max_pool1d, 1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _define_avg_pool(name: str, forward, backward, torch_fn, divisor: bool):
    params = ("int[] kernel_size, int[] stride, int[] padding, bool ceil_mode, "
              "bool count_include_pad" + (", int? divisor_override" if divisor else ""))

    def fake(input, kernel_size, stride, padding, *rest):
        return contiguous_like(torch_fn(input, kernel_size, _stride(stride), padding, *rest))

    return define_unary(
        name, lambda input, kernel_size, stride, *rest: forward(input, kernel_size,
                                                                _stride(stride), *rest),
        lambda grad_output, input, kernel_size, stride, *rest: backward(
            grad_output, input, kernel_size, _stride(stride), *rest),
        params, fake=fake)


_avg_pool1d = _define_avg_pool("avg_pool1d", F.avg_pool1d, F.avg_pool1d_backward, TF.avg_pool1d,
                               divisor=False)
_avg_pool2d = _define_avg_pool("avg_pool2d", F.avg_pool2d, F.avg_pool2d_backward, TF.avg_pool2d,
                               divisor=True)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` computed by gpuconv, with autograd.
    See :func:`gpuconv.functional.avg_pool2d`."""
    stride = [] if stride is None else ints(stride, 2)
    return _avg_pool2d(input, ints(kernel_size, 2), stride, ints(padding, 2),
                       bool(ceil_mode), bool(count_include_pad), divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """``torch.nn.functional.avg_pool1d`` computed by gpuconv, with autograd."""
    stride = [] if stride is None else ints(stride, 1)
    return _avg_pool1d(input, ints(kernel_size, 1), stride, ints(padding, 1),
                       bool(ceil_mode), bool(count_include_pad))


def _define_adaptive(name: str, forward, backward, torch_fn):
    return define_unary(name, forward, backward, "int[] output_size",
                        fake=lambda input, output_size: contiguous_like(torch_fn(input,
                                                                                 output_size)))


_adaptive_avg_pool1d = _define_adaptive("adaptive_avg_pool1d", F.adaptive_avg_pool1d,
                                        F.adaptive_avg_pool1d_backward, TF.adaptive_avg_pool1d)
_adaptive_avg_pool2d = _define_adaptive("adaptive_avg_pool2d", F.adaptive_avg_pool2d,
                                        F.adaptive_avg_pool2d_backward, TF.adaptive_avg_pool2d)


def _output_size(input, output_size, n: int) -> list:
    """An int or a sequence of n entries, None keeping that input size (as torch)."""
    sizes = [output_size] * n if output_size is None or isinstance(output_size, int) \
        else list(output_size)
    if len(sizes) != n:
        raise ValueError(f"adaptive_avg_pool{n}d: output_size must be an int or a sequence of "
                         f"{n}, got {output_size!r}")
    return [input.shape[input.dim() - n + i] if s is None else int(s)
            for i, s in enumerate(sizes)]


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` computed by gpuconv, with autograd."""
    return _adaptive_avg_pool2d(input, _output_size(input, output_size, 2))


def adaptive_avg_pool1d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool1d`` computed by gpuconv, with autograd."""
    return _adaptive_avg_pool1d(input, _output_size(input, output_size, 1))
