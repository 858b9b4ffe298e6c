"""Pooling: max, average and adaptive average pooling in 1D and 2D, with explicit backward.

Layout (N, C, H, W), or (N, C, L) for the 1D ops; an unbatched (C, H, W) or (C, L) input is
accepted as in PyTorch. The 1D ops are the 2D ops on a view with H = 1, so only 2D ops are
registered. The public functions validate and normalise the arguments and compute the output
size (``ceil_mode`` lives only here); the implementations get plain tuples, as set out in the
registry contract in :mod:`gpuconv.kernels.reference.pool`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

from .. import _checks as C, backend, device_checks, kernels

__all__ = [
    "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "max_pool1d_backward", "max_pool2d_backward", "avg_pool1d_backward", "avg_pool2d_backward",
    "adaptive_avg_pool1d_backward", "adaptive_avg_pool2d_backward",
]

IntOrTuple = Union[int, Sequence[int]]
_AXES = {1: ("length",), 2: ("height", "width")}


class _Window(NamedTuple):
    """Normalised 2D window arguments and the output size they give."""

    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    out: tuple


# --------------------------------------------------------------------------- shapes

def _input4d(op: str, x, dims: int):
    """Check ``x`` is a float array of rank dims + 1 or dims + 2; view it as (N, C, H, W).

    Returns the view and whether ``x`` had a batch axis.
    """
    C.float_array(op, "input", x, ndim=(dims + 1, dims + 2))
    batched = x.ndim == dims + 2
    return _to4d(x, dims, batched), batched


def _to4d(a, dims: int, batched: bool):
    a = a if batched else a[None]
    return a[:, :, None, :] if dims == 1 else a


def _from4d(a, dims: int, batched: bool):
    a = a[:, :, 0, :] if dims == 1 else a
    return a if batched else a[0]


def _user_shape(shape4: tuple, dims: int, batched: bool) -> tuple:
    """The shape that a (N, C, H, W) result has in the caller's layout."""
    shape = shape4[:2] + shape4[4 - dims:]
    return shape if batched else shape[1:]


def _grad4d(op: str, grad_output, x4, out: tuple, dims: int, batched: bool):
    """Check grad_output against the forward's output shape; view it as (N, C, OH, OW)."""
    C.float_array(op, "grad_output", grad_output)
    C.same_kind(op, "input", x4, grad_output=grad_output)
    expected = _user_shape(tuple(x4.shape[:2]) + out, dims, batched)
    C.shape_is(op, "grad_output", grad_output, expected)
    return _to4d(grad_output, dims, batched)


# --------------------------------------------------------------------------- windows

def _out_len(op: str, shape: tuple, axis: str, size: int, k: int, s: int, p: int, d: int,
             ceil_mode: bool) -> int:
    """PyTorch's pooling output length; with ceil_mode the last window must start inside
    the input or the left padding."""
    span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    n = span // s + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    if n < 1:
        raise ValueError(f"{op}: input of shape {shape} is too small along its {axis} ({size}) for "
                         f"kernel_size {k}, dilation {d}, padding {p}: the output would have "
                         f"{axis} {n}")
    # With dilation a window that starts in the left padding can step over the whole input.
    for o in range(min(n, -(-p // s))):
        start = o * s - p
        first = -(start // d)
        if first >= k or start + first * d >= size:
            raise ValueError(f"{op}: window {o} along the {axis} ({size}) covers only padding "
                             f"(kernel_size {k}, stride {s}, padding {p}, dilation {d})")
    return n


def _window(op: str, x4, dims: int, kernel_size, stride, padding, dilation,
            ceil_mode: bool) -> _Window:
    """Validate the window arguments of a ``dims``-D pooling op and extend them to 2D (kept
    for arguments of plain ints: a layer asks the same every step)."""
    window = (_cached_window if C.plain(kernel_size, stride, padding, dilation, ceil_mode)
              else _window_of)
    return window(op, tuple(x4.shape), dims, kernel_size, stride, padding, dilation, ceil_mode)


def _window_of(op: str, x4_shape: tuple, dims: int, kernel_size, stride, padding, dilation,
               ceil_mode: bool) -> _Window:
    k = C.ntuple(op, "kernel_size", kernel_size, dims)
    s = k if stride is None else C.ntuple(op, "stride", stride, dims)
    p = C.ntuple(op, "padding", padding, dims, minimum=0)
    d = C.ntuple(op, "dilation", dilation, dims)
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f"{op}: padding {padding!r} must be at most half of kernel_size "
                         f"{kernel_size!r}")
    shape = tuple(x4_shape[2:]) if dims == 2 else (x4_shape[3],)
    out = tuple(_out_len(op, x4_shape, *args, bool(ceil_mode))
                for args in zip(_AXES[dims], shape, k, s, p, d))
    if dims == 1:
        return _Window((1,) + k, (1,) + s, (0,) + p, (1,) + d, (1,) + out)
    return _Window(k, s, p, d, out)


# typed: True and 1 are equal keys, but True is no kernel size.
_cached_window = functools.lru_cache(maxsize=256, typed=True)(_window_of)


def _divisor(op: str, divisor_override) -> Optional[int]:
    if divisor_override is None:
        return None
    if not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override, bool):
        raise TypeError(f"{op}: divisor_override must be an int or None, "
                        f"got {C.shown(divisor_override)}")
    if divisor_override == 0:
        raise ValueError(f"{op}: divisor_override must be non-zero")
    return int(divisor_override)


def _adaptive_size(op: str, output_size, shape: tuple, dims: int) -> tuple:
    """An int or a length-``dims`` sequence of ints (None keeps that input size), extended to 2D."""
    if isinstance(output_size, (int, np.integer)) or output_size is None:
        sizes = (output_size,) * dims
    elif isinstance(output_size, (tuple, list)):
        if len(output_size) != dims:
            raise ValueError(f"{op}: output_size must be an int or a sequence of {dims}, "
                             f"got {C.shown(output_size)}")
        sizes = tuple(output_size)
    else:
        raise TypeError(f"{op}: output_size must be an int or a sequence of {dims}, "
                        f"got {C.shown(output_size)}")
    in_sizes = tuple(shape[4 - dims:])
    if min(in_sizes) < 1:
        raise ValueError(f"{op}: input of shape {shape} has an empty spatial axis")
    out = []
    for size, in_size in zip(sizes, in_sizes):
        if size is None:
            size = in_size
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise TypeError(f"{op}: output_size entries must be ints or None, "
                            f"got {C.shown(output_size)}")
        if size < 1:
            raise ValueError(f"{op}: output_size must be >= 1, got {C.shown(output_size)}")
        out.append(int(size))
    return (1,) * (2 - dims) + tuple(out)


def _indices4d(op: str, indices, grad4, out: tuple, x4, dims: int, batched: bool, impl):
    """Check saved max-pool indices (shape, device; their range here or on the device, see
    :mod:`gpuconv.device_checks`); view them as (N, C, OH, OW) int64."""
    C.int_array(op, "indices", indices)
    if backend.device_of(indices) != backend.device_of(grad4):
        raise ValueError(f"{op}: indices are on {backend.device_of(indices)} but grad_output is "
                         f"on {backend.device_of(grad4)}")
    C.shape_is(op, "indices", indices, _user_shape(tuple(x4.shape[:2]) + out, dims, batched))
    idx4 = _to4d(indices, dims, batched).astype(np.int64, copy=False)
    plane = x4.shape[2] * x4.shape[3]
    # Viewed as unsigned, a negative index is huge: one pass checks both ends.
    if idx4.size and device_checks.on_host("max_pool2d_backward", impl, grad4) \
            and int(idx4.view(np.uint64).max()) >= plane:
        raise ValueError(f"{op}: indices must lie in [0, {plane}) (a flat position in an input "
                         f"plane of shape {tuple(x4.shape[2:])}), got values in "
                         f"[{int(idx4.min())}, {int(idx4.max())}]")
    return idx4


# --------------------------------------------------------------------------- max pooling

def _max_pool(op, dims, input, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices, impl):
    x4, batched = _input4d(op, input, dims)
    w = _window(op, x4, dims, kernel_size, stride, padding, dilation, ceil_mode)
    out, indices = kernels.dispatch("max_pool2d", impl, x4, *w)
    out = _from4d(out, dims, batched)
    return (out, _from4d(indices, dims, batched)) if return_indices else out


def _max_pool_backward(op, dims, grad_output, input, kernel_size, stride, padding, dilation,
                       ceil_mode, indices, impl):
    x4, batched = _input4d(op, input, dims)
    w = _window(op, x4, dims, kernel_size, stride, padding, dilation, ceil_mode)
    g4 = _grad4d(op, grad_output, x4, w.out, dims, batched)
    if indices is None:
        _, idx4 = kernels.dispatch("max_pool2d", impl, x4, *w)
    else:
        idx4 = _indices4d(op, indices, g4, w.out, x4, dims, batched, impl)
    grad = kernels.dispatch("max_pool2d_backward", impl, g4, idx4, tuple(x4.shape), w.kernel,
                            w.stride, w.padding, w.dilation)
    return _from4d(grad, dims, batched)


@backend.interop
def max_pool2d(input, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, impl: str | None = None):
    """2D max pooling, as ``torch.nn.functional.max_pool2d``.

    input: (N, C, H, W) or (C, H, W), floating dtype. stride defaults to kernel_size; the
    input is padded with -inf (padding <= kernel_size // 2). Output (N, C, OH, OW) with
    OH = floor((H + 2*ph - dh*(kh - 1) - 1) / sh) + 1 (ceil with ceil_mode, the last window
    starting inside the input or the left padding), likewise OW.
    out[n, c, oh, ow] = max over i, j of x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw].
    With return_indices, also the int64 flat position h*W + w of each maximum in its input
    plane (ties: the first in row-major order; a NaN always wins, the last one).
    """
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, impl)


@backend.interop
def max_pool1d(input, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, impl: str | None = None):
    """1D max pooling, as ``torch.nn.functional.max_pool1d``: input (N, C, L) or (C, L).

    The 2D formula with H = 1; indices are positions along L.
    """
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, impl)


@backend.interop
def max_pool2d_backward(grad_output, input, kernel_size: IntOrTuple,
                        stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                        dilation: IntOrTuple = 1, ceil_mode: bool = False, *, indices=None,
                        impl: str | None = None):
    """Gradient of :func:`max_pool2d` with respect to its input.

    grad_output: the output's shape; input and the window arguments as in the forward.
    grad_input[n, c].flat[indices[n, c, oh, ow]] += grad_output[n, c, oh, ow]. ``indices``
    (from ``return_indices=True``) skips recomputing the forward. Returns grad_input, input's
    shape and grad_output's dtype.
    """
    return _max_pool_backward("max_pool2d_backward", 2, grad_output, input, kernel_size, stride,
                              padding, dilation, ceil_mode, indices, impl)


@backend.interop
def max_pool1d_backward(grad_output, input, kernel_size: IntOrTuple,
                        stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                        dilation: IntOrTuple = 1, ceil_mode: bool = False, *, indices=None,
                        impl: str | None = None):
    """Gradient of :func:`max_pool1d` with respect to its input; as :func:`max_pool2d_backward`."""
    return _max_pool_backward("max_pool1d_backward", 1, grad_output, input, kernel_size, stride,
                              padding, dilation, ceil_mode, indices, impl)


# --------------------------------------------------------------------------- average pooling

def _avg_args(op, dims, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    x4, batched = _input4d(op, input, dims)
    w = _window(op, x4, dims, kernel_size, stride, padding, 1, ceil_mode)
    return x4, batched, w, bool(count_include_pad), _divisor(op, divisor_override)


def _avg_pool(op, dims, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, impl):
    x4, batched, w, include_pad, divisor = _avg_args(op, dims, input, kernel_size, stride, padding,
                                                     ceil_mode, count_include_pad, divisor_override)
    out = kernels.dispatch("avg_pool2d", impl, x4, w.kernel, w.stride, w.padding, w.out,
                           include_pad, divisor)
    return _from4d(out, dims, batched)


def _avg_pool_backward(op, dims, grad_output, input, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override, impl):
    x4, batched, w, include_pad, divisor = _avg_args(op, dims, input, kernel_size, stride, padding,
                                                     ceil_mode, count_include_pad, divisor_override)
    g4 = _grad4d(op, grad_output, x4, w.out, dims, batched)
    grad = kernels.dispatch("avg_pool2d_backward", impl, g4, tuple(x4.shape), w.kernel, w.stride,
                            w.padding, include_pad, divisor)
    return _from4d(grad, dims, batched)


@backend.interop
def avg_pool2d(input, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None, *, impl: str | None = None):
    """2D average pooling, as ``torch.nn.functional.avg_pool2d``.

    input: (N, C, H, W) or (C, H, W), floating dtype; output size as :func:`max_pool2d` with
    dilation 1. out = (sum of the window's input elements) / divisor. Per axis a window
    starts at o*s - p and ends at min(o*s - p + k, size + p); the divisor is divisor_override
    when given, else the product of those extents when count_include_pad, else the number of
    input elements in the window.
    """
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override, impl)


@backend.interop
def avg_pool1d(input, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               *, impl: str | None = None):
    """1D average pooling, as ``torch.nn.functional.avg_pool1d``: input (N, C, L) or (C, L)."""
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, None, impl)


@backend.interop
def avg_pool2d_backward(grad_output, input, kernel_size: IntOrTuple,
                        stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                        ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None, *, impl: str | None = None):
    """Gradient of :func:`avg_pool2d` with respect to its input: every input element of a
    window receives grad_output / divisor of that window (summed over windows)."""
    return _avg_pool_backward("avg_pool2d_backward", 2, grad_output, input, kernel_size, stride,
                              padding, ceil_mode, count_include_pad, divisor_override, impl)


@backend.interop
def avg_pool1d_backward(grad_output, input, kernel_size: IntOrTuple,
                        stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                        ceil_mode: bool = False, count_include_pad: bool = True,
                        *, impl: str | None = None):
    """Gradient of :func:`avg_pool1d` with respect to its input."""
    return _avg_pool_backward("avg_pool1d_backward", 1, grad_output, input, kernel_size, stride,
                              padding, ceil_mode, count_include_pad, None, impl)


# --------------------------------------------------------------------------- adaptive average

def _adaptive(op, dims, input, output_size, impl):
    x4, batched = _input4d(op, input, dims)
    out = _adaptive_size(op, output_size, tuple(x4.shape), dims)
    return _from4d(kernels.dispatch("adaptive_avg_pool2d", impl, x4, out), dims, batched)


def _adaptive_backward(op, dims, grad_output, input, output_size, impl):
    x4, batched = _input4d(op, input, dims)
    out = _adaptive_size(op, output_size, tuple(x4.shape), dims)
    g4 = _grad4d(op, grad_output, x4, out, dims, batched)
    grad = kernels.dispatch("adaptive_avg_pool2d_backward", impl, g4, tuple(x4.shape))
    return _from4d(grad, dims, batched)


@backend.interop
def adaptive_avg_pool2d(input, output_size, *, impl: str | None = None):
    """2D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    input: (N, C, H, W) or (C, H, W). output_size: int or (OH, OW), None keeping that input
    size; (1, 1) is global average pooling. Output row oh averages input rows
    floor(oh*H/OH) .. ceil((oh+1)*H/OH) - 1, likewise columns.
    """
    return _adaptive("adaptive_avg_pool2d", 2, input, output_size, impl)


@backend.interop
def adaptive_avg_pool1d(input, output_size, *, impl: str | None = None):
    """1D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool1d``:
    input (N, C, L) or (C, L), output_size an int (or a 1-sequence)."""
    return _adaptive("adaptive_avg_pool1d", 1, input, output_size, impl)


@backend.interop
def adaptive_avg_pool2d_backward(grad_output, input, output_size, *, impl: str | None = None):
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input: every element of a
    window receives grad_output / (window area), summed over windows."""
    return _adaptive_backward("adaptive_avg_pool2d_backward", 2, grad_output, input, output_size,
                              impl)


@backend.interop
def adaptive_avg_pool1d_backward(grad_output, input, output_size, *, impl: str | None = None):
    """Gradient of :func:`adaptive_avg_pool1d` with respect to its input."""
    return _adaptive_backward("adaptive_avg_pool1d_backward", 1, grad_output, input, output_size,
                              impl)
