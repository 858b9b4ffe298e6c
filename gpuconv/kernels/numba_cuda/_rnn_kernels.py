"""numba.cuda kernels for the LSTM and GRU cell pointwise math (see
gpuconv/kernels/numba_cuda/rnn.py for the launchers, gpuconv/kernels/_rnn_loop.py for
the step loop that calls them).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.

They mirror ``kernels/rnn.cu``: thread = one (batch row b, hidden unit j) in a grid-stride
loop over B*H; it reads its unit's gate pre-activations from the GEMM results gi (B, G*H)
and gh (B, G*H), does the cell update in registers and writes each output once. Gate blocks
are stacked as in PyTorch (LSTM i, f, g, o; GRU r, z, n). An absent bias is an empty array
whose flag (``has_b_ih``, ``has_b_hh``) is False. In backward, the gradient reaching h is
grad_h (through the next step) + grad_out (this step's output). Literals are of the arrays'
dtype (``one``), so float32 cells compute in float32.
"""
import math

from ._numba import cuda


@cuda.jit(device=True)
def _sigmoid(x, zero, one):
    # Split by sign so that exp never overflows (math.exp raises on the simulator).
    if x >= zero:
        return one / (one + math.exp(-x))
    e = math.exp(x)
    return e / (one + e)


@cuda.jit(device=True)
def _with_bias(value, bias, col, has_bias):
    return value + bias[col] if has_bias else value


@cuda.jit
def lstm_cell_fwd_pointwise(gi, gh, b_ih, b_hh, c_prev, h, c, gates, tanh_c, has_b_ih,
                            has_b_hh):
    B, H = h.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for e in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = e // H, e % H
        for q in range(4):
            col = q * H + j
            pre = _with_bias(_with_bias(gi[b, col] + gh[b, col], b_ih, col, has_b_ih), b_hh,
                             col, has_b_hh)
            gates[b, col] = math.tanh(pre) if q == 2 else _sigmoid(pre, zero, one)
        i, f, g, o = gates[b, j], gates[b, H + j], gates[b, 2 * H + j], gates[b, 3 * H + j]
        c_new = f * c_prev[b, j] + i * g
        t = math.tanh(c_new)
        c[b, j] = c_new
        h[b, j] = o * t
        tanh_c[b, j] = t


@cuda.jit
def lstm_cell_bwd_pointwise(grad_h, grad_out, grad_c, gates, tanh_c, c_prev, grad_gates,
                            grad_c_prev):
    B, H = grad_h.shape
    one = grad_h.dtype.type(1)
    for e in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = e // H, e % H
        i, f, g, o = gates[b, j], gates[b, H + j], gates[b, 2 * H + j], gates[b, 3 * H + j]
        t = tanh_c[b, j]
        dh = grad_h[b, j] + grad_out[b, j]
        dc = grad_c[b, j] + dh * o * (one - t * t)
        grad_gates[b, j] = dc * g * i * (one - i)
        grad_gates[b, H + j] = dc * c_prev[b, j] * f * (one - f)
        grad_gates[b, 2 * H + j] = dc * i * (one - g * g)
        grad_gates[b, 3 * H + j] = dh * t * o * (one - o)
        grad_c_prev[b, j] = dc * f


@cuda.jit
def gru_cell_fwd_pointwise(gi, gh, b_ih, b_hh, h_prev, h, gates, gh_n, has_b_ih, has_b_hh):
    B, H = h.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for e in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = e // H, e % H
        r = _sigmoid(_with_bias(gi[b, j], b_ih, j, has_b_ih)
                     + _with_bias(gh[b, j], b_hh, j, has_b_hh), zero, one)
        z = _sigmoid(_with_bias(gi[b, H + j], b_ih, H + j, has_b_ih)
                     + _with_bias(gh[b, H + j], b_hh, H + j, has_b_hh), zero, one)
        hidden_n = _with_bias(gh[b, 2 * H + j], b_hh, 2 * H + j, has_b_hh)
        n = math.tanh(_with_bias(gi[b, 2 * H + j], b_ih, 2 * H + j, has_b_ih) + r * hidden_n)
        h[b, j] = n + z * (h_prev[b, j] - n)
        gates[b, j] = r
        gates[b, H + j] = z
        gates[b, 2 * H + j] = n
        gh_n[b, j] = hidden_n


@cuda.jit
def gru_cell_bwd_pointwise(grad_h, grad_out, gates, gh_n, h_prev, grad_gi, grad_gh,
                           grad_h_direct):
    B, H = grad_h.shape
    one = grad_h.dtype.type(1)
    for e in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = e // H, e % H
        r, z, n = gates[b, j], gates[b, H + j], gates[b, 2 * H + j]
        dh = grad_h[b, j] + grad_out[b, j]
        dn = dh * (one - z) * (one - n * n)
        dr = dn * gh_n[b, j] * r * (one - r)
        dz = dh * (h_prev[b, j] - n) * z * (one - z)
        grad_gi[b, j] = dr
        grad_gi[b, H + j] = dz
        grad_gi[b, 2 * H + j] = dn
        grad_gh[b, j] = dr
        grad_gh[b, H + j] = dz
        grad_gh[b, 2 * H + j] = dn * r
        grad_h_direct[b, j] = dh * z
