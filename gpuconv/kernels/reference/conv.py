"""Reference convolution: plain NumPy, any float dtype, the oracle for every other impl.

Registry contract for the convolution family
--------------------------------------------
Every implementation of these ops receives arguments already validated and normalised by
:mod:`gpuconv.functional.conv`: arrays of one float dtype on one device (any strides,
negative ones included), integer pairs for the geometry and a plain int for ``groups``.

``conv1d`` has no implementations of its own: the public function views it as ``conv2d``
with ``H = 1``. Padding given to an implementation is always symmetric; the public function
handles the asymmetric ``padding="same"`` of an even effective kernel by zero-padding the
input itself (bottom/right, as PyTorch does) and slicing ``grad_input`` back in backward.

Ops and signatures (``stride``, ``padding``, ``output_padding``, ``dilation`` are ``(h, w)``
tuples of ints; stride and dilation >= 1, padding >= 0):

``"conv2d"``
    ``fn(x, weight, bias, stride, padding, dilation, groups) -> y``
    with ``x: (N, C_in, H, W)``, ``weight: (C_out, C_in/groups, kH, kW)``,
    ``bias: (C_out,)`` or None, ``y: (N, C_out, OH, OW)`` where
    ``OH = (H + 2*ph - dh*(kH-1) - 1) // sh + 1`` (same for ``OW``).
``"conv2d_backward"``
    ``fn(grad_out, x, weight, output_mask, stride, padding, dilation, groups)
    -> (grad_x, grad_weight, grad_bias)``; ``output_mask`` is three bools (input, weight,
    bias) and each gradient whose flag is False is not computed and returned as None.
``"conv_transpose2d"``
    ``fn(x, weight, bias, stride, padding, output_padding, dilation, groups) -> y``
    with ``x: (N, C_in, H, W)``, ``weight: (C_in, C_out/groups, kH, kW)`` (PyTorch's layout),
    ``y: (N, C_out, OH, OW)``, ``OH = (H-1)*sh - 2*ph + dh*(kH-1) + oph + 1``.
    It is the adjoint (the input gradient) of ``conv2d`` with the same weight.
``"conv_transpose2d_backward"``
    ``fn(grad_out, x, weight, has_bias, stride, padding, output_padding, dilation, groups)
    -> (grad_x, grad_weight, grad_bias)``.

Every result has the dtype of ``x``.

This module loops over the kernel offsets ``(kh, kw)``: each offset pairs an output pixel
with one input pixel through a strided slice of the padded input, and one ``einsum`` per group
contracts the channels. It shares no code with the fast impls it checks.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register


def _window(start: int, count: int, step: int) -> slice:
    """The ``count`` indices ``start, start + step, ...`` as a slice."""
    return slice(start, start + step * (count - 1) + 1, step)


def _conv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _offsets(weight, stride, dilation, out_hw):
    """Yield ``(kh, kw, rows, cols)``: the padded-input slices that kernel offset ``(kh, kw)``
    reads for the ``out_hw`` output pixels."""
    for kh in range(weight.shape[2]):
        for kw in range(weight.shape[3]):
            rows = _window(kh * dilation[0], out_hw[0], stride[0])
            cols = _window(kw * dilation[1], out_hw[1], stride[1])
            yield kh, kw, rows, cols


def _pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _crop(x, padding):
    ph, pw = padding
    return x[:, :, ph:x.shape[2] - ph, pw:x.shape[3] - pw]


@register("conv2d", "reference", priority=-100)
def conv2d(x, weight, bias, stride, padding, dilation, groups):
    n, c_in, h, w = x.shape
    c_out, cg, k_h, k_w = weight.shape
    kg = c_out // groups
    out_hw = (_conv_out_size(h, k_h, stride[0], padding[0], dilation[0]),
              _conv_out_size(w, k_w, stride[1], padding[1], dilation[1]))
    xp = _pad(x, padding)
    y = np.zeros((n, c_out) + out_hw, dtype=x.dtype)
    for kh, kw, rows, cols in _offsets(weight, stride, dilation, out_hw):
        for g in range(groups):
            xs = xp[:, g * cg:(g + 1) * cg, rows, cols]
            wg = weight[g * kg:(g + 1) * kg, :, kh, kw]
            y[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", xs, wg)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


@register("conv2d_backward", "reference", priority=-100)
def conv2d_backward(grad_out, x, weight, output_mask, stride, padding, dilation, groups):
    c_out, cg, k_h, k_w = weight.shape
    kg = c_out // groups
    out_hw = grad_out.shape[2:]
    xp = _pad(x, padding)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(weight)
    for kh, kw, rows, cols in _offsets(weight, stride, dilation, out_hw):
        for g in range(groups):
            gy = grad_out[:, g * kg:(g + 1) * kg]
            xs = xp[:, g * cg:(g + 1) * cg, rows, cols]
            wg = weight[g * kg:(g + 1) * kg, :, kh, kw]
            gxp[:, g * cg:(g + 1) * cg, rows, cols] += np.einsum("nkhw,kc->nchw", gy, wg)
            gw[g * kg:(g + 1) * kg, :, kh, kw] = np.einsum("nkhw,nchw->kc", gy, xs)
    gb = grad_out.sum(axis=(0, 2, 3))
    return tuple(g if need else None for g, need in zip((_crop(gxp, padding), gw, gb), output_mask))


@register("conv_transpose2d", "reference", priority=-100)
def conv_transpose2d(x, weight, bias, stride, padding, output_padding, dilation, groups):
    n, c_in, h, w = x.shape
    cg_in, cg_out, k_h, k_w = c_in // groups, weight.shape[1], weight.shape[2], weight.shape[3]
    # The padded output: every input pixel scatters into it, and output_padding adds rows
    # and columns at the bottom/right that no input pixel reaches.
    full = tuple((size - 1) * s + d * (k - 1) + 1 + op
                 for size, s, d, k, op in zip((h, w), stride, dilation, (k_h, k_w), output_padding))
    yp = np.zeros((n, cg_out * groups) + full, dtype=x.dtype)
    for kh, kw, rows, cols in _offsets(weight, stride, dilation, (h, w)):
        for g in range(groups):
            xg = x[:, g * cg_in:(g + 1) * cg_in]
            wg = weight[g * cg_in:(g + 1) * cg_in, :, kh, kw]
            yp[:, g * cg_out:(g + 1) * cg_out, rows, cols] += np.einsum("nchw,ck->nkhw", xg, wg)
    y = np.ascontiguousarray(_crop(yp, padding))
    if bias is not None:
        y += bias[None, :, None, None]
    return y


@register("conv_transpose2d_backward", "reference", priority=-100)
def conv_transpose2d_backward(grad_out, x, weight, has_bias, stride, padding, output_padding,
                              dilation, groups):
    n, c_in, h, w = x.shape
    cg_in, cg_out = c_in // groups, weight.shape[1]
    gyp = _pad(grad_out, padding)
    gx = np.zeros_like(x)
    gw = np.zeros_like(weight)
    for kh, kw, rows, cols in _offsets(weight, stride, dilation, (h, w)):
        for g in range(groups):
            xg = x[:, g * cg_in:(g + 1) * cg_in]
            gys = gyp[:, g * cg_out:(g + 1) * cg_out, rows, cols]
            wg = weight[g * cg_in:(g + 1) * cg_in, :, kh, kw]
            gx[:, g * cg_in:(g + 1) * cg_in] += np.einsum("nkhw,ck->nchw", gys, wg)
            gw[g * cg_in:(g + 1) * cg_in, :, kh, kw] = np.einsum("nchw,nkhw->ck", xg, gys)
    gb = grad_out.sum(axis=(0, 2, 3)) if has_bias else None
    return gx, gw, gb


# --------------------------------------------------------------------------- conv2d_bias_act
# ``fn(x, weight, bias, stride, padding, dilation, groups, activation, param, residual,
# scale) -> act(scale[k] * conv2d(x, weight) + bias[k] + residual)``: the convolution with the
# epilogue that the GPU's implicit GEMM fuses (scale, bias, residual None when absent; the
# activations of ``gpuconv.functional.CONV_ACTIVATIONS``, param the slope or alpha).
# "reference" composes reference ops; "composed" and "cuda_composed" compose whatever the
# registry picks for conv2d (the fallback where no fused kernel takes the dtype).

def _activate(z, activation: str, param: float):
    xp = backend.array_module(z)
    if activation == "gelu":
        if xp is not np:
            raise TypeError("conv2d_bias_act: gelu is fused only by impl cuda_igemm "
                            f"(float32/bfloat16/float16), not for {z.dtype} GPU arrays")
        from math import erf, sqrt
        return 0.5 * z * (1 + np.vectorize(erf, otypes=[z.dtype])(z / sqrt(2)))
    neg = z < 0
    return {"identity": lambda: z,
            "relu": lambda: xp.where(neg, 0, z).astype(z.dtype),
            "leaky_relu": lambda: xp.where(neg, z * param, z).astype(z.dtype),
            "elu": lambda: xp.where(neg, param * xp.expm1(xp.minimum(z, 0)), z).astype(z.dtype),
            "sigmoid": lambda: (1 / (1 + xp.exp(-z))).astype(z.dtype),
            "tanh": lambda: xp.tanh(z)}[activation]()


def _conv_bias_act(conv_impl):
    def fn(x, weight, bias, stride, padding, dilation, groups, activation, param, residual,
           scale):
        from ...functional import conv2d as public_conv2d
        z = public_conv2d(x, weight, None, stride, padding, dilation, groups, impl=conv_impl)
        channel = (1, -1, 1, 1)
        if scale is not None:
            z = z * scale.reshape(channel)
        if bias is not None:
            z = z + bias.reshape(channel)
        if residual is not None:
            z = z + residual
        return _activate(z, activation, param)
    return fn


register("conv2d_bias_act", "reference", priority=-100)(_conv_bias_act("reference"))
register("conv2d_bias_act", "composed", priority=0)(_conv_bias_act(None))
register("conv2d_bias_act", "cuda_composed", device="cuda", priority=0)(_conv_bias_act(None))
