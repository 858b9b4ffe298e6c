"""numba.cuda kernels for pooling (see gpuconv/kernels/numba_cuda/pool.py for the mapping).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.
Inputs and input gradients are (planes, H, W), outputs and output gradients
(planes, OH, OW), all contiguous; a flat position inside a plane is h*W + w. Sums start at a
zero of the data's dtype and divisors (ints) are cast to it, so float32 pools in float32.
"""
from ._numba import cuda


@cuda.jit(device=True)
def _unravel(i, rows, cols):
    """Flat element ``i`` of (planes, rows, cols) as (plane, row, col)."""
    plane = i // (rows * cols)
    at = i - plane * rows * cols
    return plane, at // cols, at % cols


@cuda.jit(device=True)
def _taps_inside(start, d, k, size):
    """[lo, hi): the taps t < k of a window starting at ``start`` with start + t*d in [0, size)."""
    lo = 0 if start >= 0 else (d - 1 - start) // d
    hi = 0 if start >= size else min(k, (size - 1 - start) // d + 1)
    return lo, hi


@cuda.jit(device=True)
def _windows_holding(pos, k, s, p, d, out_len):
    """[lo, hi): the windows o (taps o*s - p + t*d, t < k) that can hold input position
    ``pos``, those with pos + p - (k-1)*d <= o*s <= pos + p."""
    last = pos + p
    first = last - (k - 1) * d
    lo = 0 if first <= 0 else (first + s - 1) // s
    hi = 0 if last < 0 else min(out_len, last // s + 1)
    return lo, hi


@cuda.jit(device=True)
def _avg_divisor(h0, w0, kh, kw, ph, pw, H, W, count_include_pad, divisor_override):
    """Divisor of the average-pooling window starting at (h0, w0); divisor_override 0: none."""
    if divisor_override != 0:
        return divisor_override
    if count_include_pad:
        return (min(h0 + kh, H + ph) - h0) * (min(w0 + kw, W + pw) - w0)
    return (min(h0 + kh, H) - max(h0, 0)) * (min(w0 + kw, W) - max(w0, 0))


@cuda.jit(device=True)
def _adaptive_window(o, out_len, size):
    """[floor(o*size/out_len), ceil((o+1)*size/out_len))."""
    return o * size // out_len, ((o + 1) * size + out_len - 1) // out_len


@cuda.jit
def max_pool2d_fwd(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    """Thread = one output element: the maximum of its window's taps inside the input and its
    flat position. The first tap starts the maximum; a later one replaces it if greater or
    NaN (v != v), PyTorch's rule: ties keep the first, a NaN wins, the last NaN."""
    i = cuda.grid(1)
    planes, OH, OW = out.shape
    if i >= planes * OH * OW:
        return
    p, oh, ow = _unravel(i, OH, OW)
    H, W = x.shape[1], x.shape[2]
    h0, w0 = oh * sh - ph, ow * sw - pw
    i_lo, i_hi = _taps_inside(h0, dh, kh, H)
    j_lo, j_hi = _taps_inside(w0, dw, kw, W)
    best = x.dtype.type(0)
    at = -1
    for ti in range(i_lo, i_hi):
        ih = h0 + ti * dh
        for tj in range(j_lo, j_hi):
            iw = w0 + tj * dw
            v = x[p, ih, iw]
            if at < 0 or v > best or v != v:
                best = v
                at = ih * W + iw
    out[p, oh, ow] = best
    indices[p, oh, ow] = at


@cuda.jit
def max_pool2d_bwd(grad_out, indices, grad_in, kh, kw, sh, sw, ph, pw, dh, dw):
    """Thread = one input gradient element: the sum of grad_out over the windows that can hold
    it (by the window arguments) and whose saved index is this element."""
    i = cuda.grid(1)
    planes, H, W = grad_in.shape
    if i >= planes * H * W:
        return
    p, ih, iw = _unravel(i, H, W)
    oh_lo, oh_hi = _windows_holding(ih, kh, sh, ph, dh, grad_out.shape[1])
    ow_lo, ow_hi = _windows_holding(iw, kw, sw, pw, dw, grad_out.shape[2])
    at = ih * W + iw
    total = grad_in.dtype.type(0)
    for oh in range(oh_lo, oh_hi):
        for ow in range(ow_lo, ow_hi):
            if indices[p, oh, ow] == at:
                total += grad_out[p, oh, ow]
    grad_in[p, ih, iw] = total


@cuda.jit
def avg_pool2d_fwd(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    """Thread = one output element: (sum of its window's taps inside the input) / divisor."""
    i = cuda.grid(1)
    planes, OH, OW = out.shape
    if i >= planes * OH * OW:
        return
    p, oh, ow = _unravel(i, OH, OW)
    H, W = x.shape[1], x.shape[2]
    h0, w0 = oh * sh - ph, ow * sw - pw
    T = x.dtype.type
    total = T(0)
    for ih in range(max(h0, 0), min(h0 + kh, H)):
        for iw in range(max(w0, 0), min(w0 + kw, W)):
            total += x[p, ih, iw]
    out[p, oh, ow] = total / T(_avg_divisor(h0, w0, kh, kw, ph, pw, H, W, count_include_pad,
                                            divisor_override))


@cuda.jit
def avg_pool2d_bwd(grad_out, grad_in, kh, kw, sh, sw, ph, pw, count_include_pad,
                   divisor_override):
    """Thread = one input gradient element: grad_out / divisor summed over the windows that
    hold it."""
    i = cuda.grid(1)
    planes, H, W = grad_in.shape
    if i >= planes * H * W:
        return
    p, ih, iw = _unravel(i, H, W)
    oh_lo, oh_hi = _windows_holding(ih, kh, sh, ph, 1, grad_out.shape[1])
    ow_lo, ow_hi = _windows_holding(iw, kw, sw, pw, 1, grad_out.shape[2])
    T = grad_in.dtype.type
    total = T(0)
    for oh in range(oh_lo, oh_hi):
        for ow in range(ow_lo, ow_hi):
            total += grad_out[p, oh, ow] / T(_avg_divisor(oh * sh - ph, ow * sw - pw, kh, kw,
                                                          ph, pw, H, W, count_include_pad,
                                                          divisor_override))
    grad_in[p, ih, iw] = total


@cuda.jit
def adaptive_avg_pool2d_fwd(x, out):
    """Thread = one output element: the mean of its adaptive window."""
    i = cuda.grid(1)
    planes, OH, OW = out.shape
    if i >= planes * OH * OW:
        return
    p, oh, ow = _unravel(i, OH, OW)
    h0, h1 = _adaptive_window(oh, OH, x.shape[1])
    w0, w1 = _adaptive_window(ow, OW, x.shape[2])
    T = x.dtype.type
    total = T(0)
    for ih in range(h0, h1):
        for iw in range(w0, w1):
            total += x[p, ih, iw]
    out[p, oh, ow] = total / T((h1 - h0) * (w1 - w0))


@cuda.jit
def adaptive_avg_pool2d_bwd(grad_out, grad_in):
    """Thread = one input gradient element: grad_out / area summed over the windows that hold
    it. Window o holds i iff o is in [floor(i*OH/H), ceil((i+1)*OH/H)): the window formula
    with the roles of the sizes swapped."""
    i = cuda.grid(1)
    planes, H, W = grad_in.shape
    if i >= planes * H * W:
        return
    p, ih, iw = _unravel(i, H, W)
    OH, OW = grad_out.shape[1], grad_out.shape[2]
    oh_lo, oh_hi = _adaptive_window(ih, H, OH)
    ow_lo, ow_hi = _adaptive_window(iw, W, OW)
    T = grad_in.dtype.type
    total = T(0)
    for oh in range(oh_lo, oh_hi):
        h0, h1 = _adaptive_window(oh, OH, H)
        for ow in range(ow_lo, ow_hi):
            w0, w1 = _adaptive_window(ow, OW, W)
            total += grad_out[p, oh, ow] / T((h1 - h0) * (w1 - w0))
    grad_in[p, ih, iw] = total
