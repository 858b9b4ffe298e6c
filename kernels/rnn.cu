// rnn.cu: the fused pointwise parts of the recurrent cells (LSTM, GRU, Elman RNN with tanh or
// ReLU), forward and backward, for float (_f32) and double (_f64). The GEMMs around them run
// in cuBLAS (gpuconv/kernels/cuda_c/rnn.py): per layer one GEMM projects the input of every
// time step, gi = x W_ih^T, per step one GEMM gives gh = h_prev W_hh^T, and one kernel here
// does everything between that GEMM and the next step's.
//
// Gate blocks are stacked as in PyTorch: LSTM i, f, g, o; GRU r, z, n; RNN one block. A gate
// matrix (B, G*H) holds gate q of hidden unit j of batch row b at b*ld + q*H + j.
//
// Mapping: thread = one (batch row b, hidden unit j), in a 64-bit grid-stride loop over B*H.
// It reads the G gate pre-activations of its unit, does the whole cell update in registers
// and writes each of its outputs once: no shared memory, no atomics. Consecutive threads own
// consecutive j, so every gate block is read and written coalesced.
//
// Forward (b_ih, b_hh may be null = no bias; the kernel adds both):
//   lstm_cell_fwd_pointwise  i, f, o = sigmoid, g = tanh of gi + gh + biases;
//                            c = f*c_prev + i*g, h = o*tanh(c). Saves the activated gates
//                            (B, 4H) and tanh(c) (B, H) for backward.
//   gru_cell_fwd_pointwise   r, z = sigmoid(gi + gh + biases), n = tanh(gi_n + b_in +
//                            r*(gh_n + b_hn)), h = n + z*(h_prev - n). Saves r, z, n (B, 3H)
//                            and the hidden part of n's pre-activation gh_n + b_hn (B, H).
//   rnn_cell_fwd_pointwise   h = act(gi + gh + biases), act tanh or relu (RNN_TANH/RNN_RELU).
// Backward: the gradient reaching h is grad_h (from the next step's W_hh GEMM or the final
// state) + grad_out (this step's output); it is added here instead of in a separate kernel.
//   lstm_cell_bwd_pointwise  writes the gate pre-activation gradients (B, 4H) and
//                            grad_c_prev = dc*f, dc = grad_c + dh*o*(1 - tanh(c)^2).
//   gru_cell_bwd_pointwise   writes grad_gi = [dr, dz, dn] and grad_gh = [dr, dz, dn*r], the
//                            gradients of x W_ih^T + b_ih and h W_hh^T + b_hh, and the part
//                            of grad_h_prev that bypasses W_hh, dh*z.
//   rnn_cell_bwd_pointwise   grad_pre = dh * act'(pre), from the saved output h.
//
// Row strides: gi, grad_gi/grad_gh and grad_out may be column blocks of wider matrices (one
// direction of a bidirectional layer), so they come with a row stride ld in elements; every
// other array is a contiguous (B, H) or (B, G*H) block. Element offsets are 64-bit.
//
// The LSTM and GRU unit math itself is in rnn_cell.cuh, shared with rnn_persistent.cu.
#include "common.cuh"
#include "rnn_cell.cuh"

#define RNN_TANH 0
#define RNN_RELU 1

// Where thread e's hidden unit sits: batch row b, unit j.
struct Unit {
    long long b;
    long long j;
};

__device__ __forceinline__ Unit unit_of(long long e, int H) { return {e / H, e % H}; }

template <typename T>
__device__ void lstm_cell_fwd_pointwise(const T* __restrict__ gi, long long ld_gi,
                                        const T* __restrict__ gh, const T* __restrict__ b_ih,
                                        const T* __restrict__ b_hh,
                                        const T* __restrict__ c_prev, T* __restrict__ h,
                                        T* __restrict__ c, T* __restrict__ gates,
                                        T* __restrict__ tanh_c, int B, int H) {
    const long long G = 4LL * H;
    GPUCONV_GRID_STRIDE_LOOP(e, (long long)B * H) {
        const Unit u = unit_of(e, H);
        const T* gi_row = gi + u.b * ld_gi;
        const T* gh_row = gh + u.b * G;
        T pre[4];
        for (int q = 0; q < 4; ++q) {
            const long long col = q * (long long)H + u.j;
            pre[q] = gi_row[col] + gh_row[col] + bias_at(b_ih, col) + bias_at(b_hh, col);
        }
        const LstmUnit<T> out = lstm_unit_forward(pre, c_prev[e]);
        c[e] = out.c;
        h[e] = out.h;
        tanh_c[e] = out.tanh_c;
        for (int q = 0; q < 4; ++q) gates[u.b * G + q * (long long)H + u.j] = out.act[q];
    }
}

template <typename T>
__device__ void lstm_cell_bwd_pointwise(const T* __restrict__ grad_h,
                                        const T* __restrict__ grad_out, long long ld_out,
                                        const T* __restrict__ grad_c,
                                        const T* __restrict__ gates,
                                        const T* __restrict__ tanh_c,
                                        const T* __restrict__ c_prev,
                                        T* __restrict__ grad_gates, long long ld_grad,
                                        T* __restrict__ grad_c_prev, int B, int H) {
    const long long G = 4LL * H;
    GPUCONV_GRID_STRIDE_LOOP(e, (long long)B * H) {
        const Unit u = unit_of(e, H);
        const T* saved = gates + u.b * G + u.j;
        const T act[4] = {saved[0], saved[H], saved[2LL * H], saved[3LL * H]};
        const T dh = grad_h[e] + grad_out[u.b * ld_out + u.j];
        T dpre[4];
        grad_c_prev[e] = lstm_unit_backward(act, tanh_c[e], c_prev[e], dh, grad_c[e], dpre);
        T* row = grad_gates + u.b * ld_grad + u.j;
        for (int q = 0; q < 4; ++q) row[q * (long long)H] = dpre[q];
    }
}

template <typename T>
__device__ void gru_cell_fwd_pointwise(const T* __restrict__ gi, long long ld_gi,
                                       const T* __restrict__ gh, const T* __restrict__ b_ih,
                                       const T* __restrict__ b_hh,
                                       const T* __restrict__ h_prev, T* __restrict__ h,
                                       T* __restrict__ gates, T* __restrict__ gh_n, int B,
                                       int H) {
    const long long G = 3LL * H;
    GPUCONV_GRID_STRIDE_LOOP(e, (long long)B * H) {
        const Unit u = unit_of(e, H);
        const T* gi_row = gi + u.b * ld_gi;
        const T* gh_row = gh + u.b * G;
        T in_part[3], hidden_part[3];
        for (int q = 0; q < 3; ++q) {
            const long long col = q * (long long)H + u.j;
            in_part[q] = gi_row[col] + bias_at(b_ih, col);
            hidden_part[q] = gh_row[col] + bias_at(b_hh, col);
        }
        const GruUnit<T> out = gru_unit_forward(in_part, hidden_part, h_prev[e]);
        h[e] = out.h;
        T* saved = gates + u.b * G + u.j;
        saved[0] = out.r;
        saved[H] = out.z;
        saved[2LL * H] = out.n;
        gh_n[e] = hidden_part[2];
    }
}

template <typename T>
__device__ void gru_cell_bwd_pointwise(const T* __restrict__ grad_h,
                                       const T* __restrict__ grad_out, long long ld_out,
                                       const T* __restrict__ gates, const T* __restrict__ gh_n,
                                       const T* __restrict__ h_prev, T* __restrict__ grad_gi,
                                       T* __restrict__ grad_gh, long long ld_grad,
                                       T* __restrict__ grad_h_direct, int B, int H) {
    const long long G = 3LL * H;
    GPUCONV_GRID_STRIDE_LOOP(e, (long long)B * H) {
        const Unit u = unit_of(e, H);
        const T* saved = gates + u.b * G + u.j;
        const T dh = grad_h[e] + grad_out[u.b * ld_out + u.j];
        T d_in[3], d_hid[3];
        grad_h_direct[e] = gru_unit_backward(saved[0], saved[H], saved[2LL * H], gh_n[e],
                                             h_prev[e], dh, d_in, d_hid);
        T* gi_row = grad_gi + u.b * ld_grad + u.j;
        T* gh_row = grad_gh + u.b * ld_grad + u.j;
        for (int q = 0; q < 3; ++q) {
            gi_row[q * (long long)H] = d_in[q];
            gh_row[q * (long long)H] = d_hid[q];
        }
    }
}

template <typename T>
__device__ void rnn_cell_fwd_pointwise(const T* __restrict__ gi, long long ld_gi,
                                       const T* __restrict__ gh, const T* __restrict__ b_ih,
                                       const T* __restrict__ b_hh, T* __restrict__ h,
                                       int nonlinearity, int B, int H) {
    GPUCONV_GRID_STRIDE_LOOP(e, (long long)B * H) {
        const Unit u = unit_of(e, H);
        const T pre = gi[u.b * ld_gi + u.j] + gh[e] + bias_at(b_ih, u.j) + bias_at(b_hh, u.j);
        h[e] = nonlinearity == RNN_TANH ? tanh(pre) : (pre <= T(0) ? T(0) : pre);  // NaN stays
    }
}

template <typename T>
__device__ void rnn_cell_bwd_pointwise(const T* __restrict__ grad_h,
                                       const T* __restrict__ grad_out, long long ld_out,
                                       const T* __restrict__ h, T* __restrict__ grad_pre,
                                       long long ld_grad, int nonlinearity, int B, int H) {
    GPUCONV_GRID_STRIDE_LOOP(e, (long long)B * H) {
        const Unit u = unit_of(e, H);
        const T dh = grad_h[e] + grad_out[u.b * ld_out + u.j];
        const T y = h[e];
        // relu: torch's select on the result (an infinite dh where y <= 0 gives 0).
        grad_pre[u.b * ld_grad + u.j] =
            nonlinearity == RNN_TANH ? dh * (T(1) - y * y) : (y <= T(0) ? T(0) : dh);
    }
}

#define RNN_ENTRY_POINTS(T, SUFFIX)                                                             \
    extern "C" __global__ void lstm_cell_fwd_pointwise_##SUFFIX(                              \
        const T* gi, long long ld_gi, const T* gh, const T* b_ih, const T* b_hh,              \
        const T* c_prev, T* h, T* c, T* gates, T* tanh_c, int B, int H) {                     \
        lstm_cell_fwd_pointwise<T>(gi, ld_gi, gh, b_ih, b_hh, c_prev, h, c, gates, tanh_c, B,  \
                                   H);                                                          \
    }                                                                                           \
    extern "C" __global__ void lstm_cell_bwd_pointwise_##SUFFIX(                              \
        const T* grad_h, const T* grad_out, long long ld_out, const T* grad_c,                \
        const T* gates, const T* tanh_c, const T* c_prev, T* grad_gates, long long ld_grad,   \
        T* grad_c_prev, int B, int H) {                                                       \
        lstm_cell_bwd_pointwise<T>(grad_h, grad_out, ld_out, grad_c, gates, tanh_c, c_prev,    \
                                   grad_gates, ld_grad, grad_c_prev, B, H);                    \
    }                                                                                           \
    extern "C" __global__ void gru_cell_fwd_pointwise_##SUFFIX(                               \
        const T* gi, long long ld_gi, const T* gh, const T* b_ih, const T* b_hh,              \
        const T* h_prev, T* h, T* gates, T* gh_n, int B, int H) {                             \
        gru_cell_fwd_pointwise<T>(gi, ld_gi, gh, b_ih, b_hh, h_prev, h, gates, gh_n, B, H);    \
    }                                                                                           \
    extern "C" __global__ void gru_cell_bwd_pointwise_##SUFFIX(                               \
        const T* grad_h, const T* grad_out, long long ld_out, const T* gates, const T* gh_n,  \
        const T* h_prev, T* grad_gi, T* grad_gh, long long ld_grad, T* grad_h_direct, int B,  \
        int H) {                                                                              \
        gru_cell_bwd_pointwise<T>(grad_h, grad_out, ld_out, gates, gh_n, h_prev, grad_gi,      \
                                  grad_gh, ld_grad, grad_h_direct, B, H);                      \
    }                                                                                           \
    extern "C" __global__ void rnn_cell_fwd_pointwise_##SUFFIX(                               \
        const T* gi, long long ld_gi, const T* gh, const T* b_ih, const T* b_hh, T* h,        \
        int nonlinearity, int B, int H) {                                                     \
        rnn_cell_fwd_pointwise<T>(gi, ld_gi, gh, b_ih, b_hh, h, nonlinearity, B, H);           \
    }                                                                                           \
    extern "C" __global__ void rnn_cell_bwd_pointwise_##SUFFIX(                               \
        const T* grad_h, const T* grad_out, long long ld_out, const T* h, T* grad_pre,        \
        long long ld_grad, int nonlinearity, int B, int H) {                                  \
        rnn_cell_bwd_pointwise<T>(grad_h, grad_out, ld_out, h, grad_pre, ld_grad,              \
                                  nonlinearity, B, H);                                          \
    }

RNN_ENTRY_POINTS(float, f32)
RNN_ENTRY_POINTS(double, f64)
