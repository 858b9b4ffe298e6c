"""Reference pooling: plain NumPy loops over kernel taps or output positions, any float dtype.

Registry contract of the pooling family (every implementation of these ops follows it).

The public functions in :mod:`gpuconv.functional.pool` validate the arguments, view 1D
inputs as 2D ones with H = 1 (so only 2D ops are registered) and compute the output size, so
an implementation gets plain arguments:

- ``x``: a floating (N, C, H, W) array with any strides (negative ones included);
- ``kernel`` (kh, kw), ``stride`` (sh, sw), ``dilation`` (dh, dw): tuples of ints >= 1;
  ``padding`` (ph, pw): ints with 0 <= p <= k // 2;
- ``out_size`` (OH, OW): ints >= 1. ``ceil_mode`` is folded into it and never reaches an
  implementation. Along each axis window ``o`` has taps at ``o*s - p + t*d``, t < k; taps
  outside [0, size) are padding. Every window starts before ``size`` (inside the input or
  the left padding) and holds at least one input element; a window may run past the padded
  input (ceil_mode), which only matters for the average-pooling divisor below.

Ops (outputs are new arrays in x's dtype, shape (N, C, OH, OW) forward and (N, C, H, W) backward):

``max_pool2d(x, kernel, stride, padding, dilation, out_size) -> (out, indices)``
    Always both. ``out`` is the window's maximum over taps inside the input (padding is -inf
    and never chosen); ``indices`` (int64) is the chosen tap's flat position h*W + w in its
    plane. PyTorch's rule picks it: scanning the taps in row-major order, the first tap inside
    the input starts the window and a later tap replaces the current maximum if it is
    greater or NaN. So ties keep the first maximum, and a window with NaN gives NaN at its
    last NaN.
``max_pool2d_backward(grad_out, indices, input_shape, kernel, stride, padding, dilation)``
    ``-> grad_input``. ``indices`` as max_pool2d with this window returns them (values in
    [0, H*W), checked by the caller); ``input_shape`` is the tuple (N, C, H, W).
    grad_input[n, c].flat[indices[n, c, i, j]] += grad_out[n, c, i, j], in grad_out's dtype.
    Scattering impls (the CPU ones) need only the indices; gathering impls (the GPU ones:
    each input element sums the windows that hold it) use the window to find them. The public backward computes indices through
    ``max_pool2d`` under the same impl name when none are passed, so an implementation of
    the backward needs a forward registered under its name.
``avg_pool2d(x, kernel, stride, padding, out_size, count_include_pad, divisor_override) -> out``
    ``count_include_pad`` is a bool, ``divisor_override`` None or a non-zero int. out =
    (sum of the taps inside the input) / divisor. Per axis a window starts at o*s - p and
    ends at min(o*s - p + k, size + p) (clipped to the padded input); the divisor is
    divisor_override when given, else the product of the two extents when count_include_pad,
    else the number of taps inside the input.
``avg_pool2d_backward(grad_out, input_shape, kernel, stride, padding, count_include_pad,
divisor_override) -> grad_input``
    Each input element receives grad_out / divisor of every window that holds it.
``adaptive_avg_pool2d(x, out_size) -> out``
    Output row oh averages input rows floor(oh*H/OH) .. ceil((oh+1)*H/OH) - 1, likewise
    columns (windows may overlap, and OH may exceed H).
``adaptive_avg_pool2d_backward(grad_out, input_shape) -> grad_input``
    Each input element receives grad_out / (window area) of every window that holds it.

Backward passes are deterministic: the same inputs give the same bits on every run. Each
input element gathers its gradient, or (on the CPU) one thread scatters serially into a
plane; no result depends on the order of racing atomic additions.
"""
from __future__ import annotations

import numpy as np

from .. import register


def _tap(out_len: int, stride: int, pad: int, dilation: int, t: int, size: int):
    """Input position of tap ``t`` of every window along one axis, and whether it is inside."""
    pos = np.arange(out_len) * stride - pad + t * dilation
    return pos, (pos >= 0) & (pos < size)


def _tap_values(x, h, w):
    """x[:, :, h[i], w[j]] for every (i, j), with positions outside the input clamped to it
    (the caller masks those)."""
    H, W = x.shape[2:]
    return x[:, :, np.clip(h, 0, H - 1)[:, None], np.clip(w, 0, W - 1)[None, :]]


@register("max_pool2d", "reference", priority=-100)
def max_pool2d(x, kernel, stride, padding, dilation, out_size):
    N, C, H, W = x.shape
    best = np.full((N, C) + tuple(out_size), -np.inf, dtype=x.dtype)
    index = np.full((N, C) + tuple(out_size), -1, dtype=np.int64)
    for i in range(kernel[0]):
        h, h_in = _tap(out_size[0], stride[0], padding[0], dilation[0], i, H)
        for j in range(kernel[1]):
            w, w_in = _tap(out_size[1], stride[1], padding[1], dilation[1], j, W)
            v = _tap_values(x, h, w)
            inside = h_in[:, None] & w_in[None, :]
            take = inside & ((index < 0) | (v > best) | np.isnan(v))
            best = np.where(take, v, best)
            index = np.where(take, h[:, None] * W + w[None, :], index)
    return best, index


@register("max_pool2d_backward", "reference", priority=-100)
def max_pool2d_backward(grad_out, indices, input_shape, kernel, stride, padding, dilation):
    N, C, H, W = input_shape
    windows = grad_out.shape[2] * grad_out.shape[3]
    grad = np.zeros((N * C, H * W), dtype=grad_out.dtype)
    plane = np.arange(N * C)[:, None]
    # np.add.at adds serially, so windows that share a maximum add up.
    np.add.at(grad, (plane, indices.reshape(N * C, windows)), grad_out.reshape(N * C, windows))
    return grad.reshape(input_shape)


def _avg_divisor(shape, kernel, stride, padding, out_size, count_include_pad, divisor_override):
    """The divisor of every window, (OH, OW) (or the override)."""
    if divisor_override is not None:
        return divisor_override
    extents = []
    for k, s, p, n, size in zip(kernel, stride, padding, out_size, shape[2:]):
        start = np.arange(n) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            extents.append(end - start)
        else:
            extents.append(np.minimum(end, size) - np.maximum(start, 0))
    return extents[0][:, None] * extents[1][None, :]


@register("avg_pool2d", "reference", priority=-100)
def avg_pool2d(x, kernel, stride, padding, out_size, count_include_pad, divisor_override):
    N, C, H, W = x.shape
    total = np.zeros((N, C) + tuple(out_size), dtype=x.dtype)
    for i in range(kernel[0]):
        h, h_in = _tap(out_size[0], stride[0], padding[0], 1, i, H)
        for j in range(kernel[1]):
            w, w_in = _tap(out_size[1], stride[1], padding[1], 1, j, W)
            total += np.where(h_in[:, None] & w_in[None, :], _tap_values(x, h, w), 0)
    divisor = _avg_divisor(x.shape, kernel, stride, padding, out_size, count_include_pad,
                           divisor_override)
    return (total / divisor).astype(x.dtype)


@register("avg_pool2d_backward", "reference", priority=-100)
def avg_pool2d_backward(grad_out, input_shape, kernel, stride, padding, count_include_pad,
                        divisor_override):
    H, W = input_shape[2:]
    out_size = grad_out.shape[2:]
    divisor = _avg_divisor(input_shape, kernel, stride, padding, out_size, count_include_pad,
                           divisor_override)
    share = (grad_out / divisor).astype(grad_out.dtype)
    grad = np.zeros(input_shape, dtype=grad_out.dtype)
    for i in range(kernel[0]):
        h, h_in = _tap(out_size[0], stride[0], padding[0], 1, i, H)
        oh = np.nonzero(h_in)[0][:, None]
        for j in range(kernel[1]):
            w, w_in = _tap(out_size[1], stride[1], padding[1], 1, j, W)
            ow = np.nonzero(w_in)[0][None, :]
            # One tap maps distinct windows to distinct input positions, so += adds each once.
            grad[:, :, h[oh], w[ow]] += share[:, :, oh, ow]
    return grad


def _adaptive_window(o: int, out_len: int, size: int) -> slice:
    """Input positions floor(o*size/out_len) .. ceil((o+1)*size/out_len) - 1."""
    return slice(o * size // out_len, -(-(o + 1) * size // out_len))


@register("adaptive_avg_pool2d", "reference", priority=-100)
def adaptive_avg_pool2d(x, out_size):
    N, C, H, W = x.shape
    OH, OW = out_size
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for oh in range(OH):
        rows = _adaptive_window(oh, OH, H)
        for ow in range(OW):
            cols = _adaptive_window(ow, OW, W)
            out[:, :, oh, ow] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


@register("adaptive_avg_pool2d_backward", "reference", priority=-100)
def adaptive_avg_pool2d_backward(grad_out, input_shape):
    H, W = input_shape[2:]
    OH, OW = grad_out.shape[2:]
    grad = np.zeros(input_shape, dtype=grad_out.dtype)
    for oh in range(OH):
        rows = _adaptive_window(oh, OH, H)
        for ow in range(OW):
            cols = _adaptive_window(ow, OW, W)
            area = (rows.stop - rows.start) * (cols.stop - cols.start)
            grad[:, :, rows, cols] += grad_out[:, :, oh, ow, None, None] / area
    return grad
