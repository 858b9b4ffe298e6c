// rnn_persistent.cuh: what the two kinds of fused recurrent kernel share: the FMA kernels
// of rnn_persistent.cu and the tensor-core kernels of rnn_persistent_mma.cu. The arrays
// of one step (ForwardStep, BackwardStep), the gate math of one (batch row, unit) pair with
// its reads and writes (LstmCell, GruCell; rnn_cell.cuh has the expressions), and where
// step s of a sequence of either direction finds its arrays (Sequence,
// sequence_forward_step, sequence_backward_step). Layouts: the top of rnn_persistent.cu.
#pragma once

#include "rnn_cell.cuh"

// 16-bit storage of the recurrent weights: the bit patterns of bfloat16 and IEEE float16.
struct bf16w {
    unsigned short bits;
};
struct f16w {
    unsigned short bits;
};

__device__ __forceinline__ long long align16(long long bytes) { return (bytes + 15) / 16 * 16; }

// The hidden units of block blockIdx.x, `units` per block along each direction: direction d,
// first unit j0, and how many it owns (the last block of a direction may own fewer).
__device__ __forceinline__ void block_units(int H, int units, int& d, int& j0, int& owned) {
    const int blocks_per_direction = (H + units - 1) / units;
    d = blockIdx.x / blocks_per_direction;
    j0 = (blockIdx.x % blocks_per_direction) * units;
    owned = min(units, H - j0);
}

// --------------------------------------------------------------------------- one step

// The arrays of one forward step of one direction (pointers already at the step and the
// direction; rows of B).
template <typename T, typename W>
struct ForwardStep {
    const T* x;         // cell kernels: the input (B, I) and its weights (G*H, I)
    const W* w_ih;
    int I;
    const T* gi;        // sequence kernels: the step's projection, row b at gi + b*ld_gi
    long long ld_gi;
    const W* w_hh;      // (G*H, H)
    const T* b_ih;      // (G*H) or null
    const T* b_hh;
    const T* h_prev;    // (B, H)
    const T* c_prev;    // (B, H), LSTM
    T* h_next;
    T* c_next;
    T* gates;           // (B, G*H) or null
    T* extra;           // (B, H) or null
    T* out;             // row b at out + b*ld_out, or null
    long long ld_out;
};

// The arrays of one backward step of one direction.
template <typename T, typename W>
struct BackwardStep {
    const T* dg_next;    // the W_hh-side gate gradients of the step after this one (its
    long long ld_dg;     // row b at dg_next + b*ld_dg); null on the first backward step
    const W* w_hh;       // (G*H, H)
    const T* grad_out;   // row b at grad_out + b*ld_out
    long long ld_out;
    const T* gates;      // the step's reserve, (B, G*H) and (B, H)
    const T* extra;
    const T* h_prev;     // (B, H), the states before the step
    const T* c_prev;
    T* grad_gi;          // row b at grad_gi + b*ld_grad
    T* grad_gh;          // GRU only
    long long ld_grad;
    T* carry_h;          // (B, H): what reaches h from outside W_hh
    T* carry_c;          // (B, H): LSTM, what reaches c
    bool last;           // the phase after the first step: carry_h += dg_next W_hh only
};

struct LstmCell {
    static constexpr int G = 4;

    template <typename T, typename W>
    __device__ static void forward(const T (&hidden)[4], const T (&input)[4],
                                   const ForwardStep<T, W>& a, long long b, int j, int H) {
        T pre[4];
        for (int q = 0; q < 4; ++q) {
            const long long col = q * (long long)H + j;
            pre[q] = hidden[q] + input[q] + bias_at(a.b_ih, col) + bias_at(a.b_hh, col);
        }
        const long long e = b * H + j;
        const LstmUnit<T> u = lstm_unit_forward(pre, a.c_prev[e]);
        a.h_next[e] = u.h;
        a.c_next[e] = u.c;
        if (a.out != nullptr) a.out[b * a.ld_out + j] = u.h;
        if (a.gates != nullptr) {
            for (int q = 0; q < 4; ++q) a.gates[b * 4LL * H + q * (long long)H + j] = u.act[q];
            a.extra[e] = u.tanh_c;
        }
    }

    template <typename T, typename W>
    __device__ static void backward(T through_w_hh, const BackwardStep<T, W>& a, long long b,
                                    int j, int H) {
        const long long e = b * H + j;
        const T dh = through_w_hh + a.carry_h[e] + a.grad_out[b * a.ld_out + j];
        const T* saved = a.gates + b * 4LL * H + j;
        const T act[4] = {saved[0], saved[H], saved[2LL * H], saved[3LL * H]};
        T dpre[4];
        a.carry_c[e] = lstm_unit_backward(act, a.extra[e], a.c_prev[e], dh, a.carry_c[e], dpre);
        a.carry_h[e] = T(0);
        T* row = a.grad_gi + b * a.ld_grad + j;
        for (int q = 0; q < 4; ++q) row[q * (long long)H] = dpre[q];
    }
};

struct GruCell {
    static constexpr int G = 3;

    template <typename T, typename W>
    __device__ static void forward(const T (&hidden)[3], const T (&input)[3],
                                   const ForwardStep<T, W>& a, long long b, int j, int H) {
        T in[3], hid[3];
        for (int q = 0; q < 3; ++q) {
            const long long col = q * (long long)H + j;
            in[q] = input[q] + bias_at(a.b_ih, col);
            hid[q] = hidden[q] + bias_at(a.b_hh, col);
        }
        const long long e = b * H + j;
        const GruUnit<T> u = gru_unit_forward(in, hid, a.h_prev[e]);
        a.h_next[e] = u.h;
        if (a.out != nullptr) a.out[b * a.ld_out + j] = u.h;
        if (a.gates != nullptr) {
            T* saved = a.gates + b * 3LL * H + j;
            saved[0] = u.r;
            saved[H] = u.z;
            saved[2LL * H] = u.n;
            a.extra[e] = hid[2];
        }
    }

    template <typename T, typename W>
    __device__ static void backward(T through_w_hh, const BackwardStep<T, W>& a, long long b,
                                    int j, int H) {
        const long long e = b * H + j;
        const T dh = through_w_hh + a.carry_h[e] + a.grad_out[b * a.ld_out + j];
        const T* saved = a.gates + b * 3LL * H + j;
        T d_in[3], d_hid[3];
        a.carry_h[e] = gru_unit_backward(saved[0], saved[H], saved[2LL * H], a.extra[e],
                                         a.h_prev[e], dh, d_in, d_hid);
        T* gi_row = a.grad_gi + b * a.ld_grad + j;
        T* gh_row = a.grad_gh + b * a.ld_grad + j;
        for (int q = 0; q < 3; ++q) {
            gi_row[q * (long long)H] = d_in[q];
            gh_row[q * (long long)H] = d_hid[q];
        }
    }
};

// --------------------------------------------------------------------------- sequences

// The sizes every sequence kernel takes.
struct Sequence {
    int steps;  // T
    int B;
    int H;
    int D;
    int units;
    int chunk;  // reduction elements per staged chunk
};

// Step s of direction d processes time step s going forward and T-1-s in reverse.
__device__ __forceinline__ int time_of(const Sequence& n, int d, int s) {
    return d == 0 ? s : n.steps - 1 - s;
}

// Offset of the state before (after) time step `time` of direction d in hs / cs.
__device__ __forceinline__ long long state_before(const Sequence& n, int d, int time) {
    const long long slot = d == 0 ? time : time + 1;
    return ((long long)d * (n.steps + 1) + slot) * n.B * n.H;
}
__device__ __forceinline__ long long state_after(const Sequence& n, int d, int time) {
    const long long slot = d == 0 ? time + 1 : time;
    return ((long long)d * (n.steps + 1) + slot) * n.B * n.H;
}

template <typename T>
__device__ __forceinline__ T* at_or_null(T* base, long long offset) {
    return base != nullptr ? base + offset : nullptr;
}

template <int G, typename T, typename W>
__device__ ForwardStep<T, W> sequence_forward_step(const Sequence& n, int d, int s, const T* gi,
                                                   const W* w_hh, const T* b_ih, const T* b_hh,
                                                   T* hs, T* cs, T* gates, T* extra, T* out) {
    const long long GH = (long long)G * n.H;
    const int time = time_of(n, d, s);
    const long long saved = ((long long)d * n.steps + time) * n.B;
    ForwardStep<T, W> a{};
    a.gi = gi + (long long)time * n.B * n.D * GH + d * GH;
    a.ld_gi = n.D * GH;
    a.w_hh = w_hh + d * GH * n.H;
    a.b_ih = at_or_null(b_ih, d * GH);
    a.b_hh = at_or_null(b_hh, d * GH);
    a.h_prev = hs + state_before(n, d, time);
    a.c_prev = at_or_null(cs, state_before(n, d, time));
    a.h_next = hs + state_after(n, d, time);
    a.c_next = at_or_null(cs, state_after(n, d, time));
    a.gates = at_or_null(gates, saved * GH);
    a.extra = at_or_null(extra, saved * n.H);
    a.out = out + (long long)time * n.B * n.D * n.H + (long long)d * n.H;
    a.ld_out = (long long)n.D * n.H;
    return a;
}

// Backward step s (s = 0 .. T-1 go back from the last time step of the direction; s = T is
// the final product into grad_h0).
template <int G, typename T, typename W>
__device__ BackwardStep<T, W> sequence_backward_step(const Sequence& n, int d, int s,
                                                     const W* w_hh, const T* grad_out,
                                                     const T* hs, const T* cs, const T* gates,
                                                     const T* extra, T* grad_gi, T* grad_gh,
                                                     T* grad_h0, T* grad_c0) {
    const long long GH = (long long)G * n.H, BH = (long long)n.B * n.H;
    const long long ld = n.D * GH;
    const T* dg = grad_gh != nullptr ? grad_gh : grad_gi;
    BackwardStep<T, W> a{};
    a.w_hh = w_hh + d * GH * n.H;
    a.ld_dg = ld;
    a.ld_grad = ld;
    a.ld_out = (long long)n.D * n.H;
    if (s > 0) a.dg_next = dg + (long long)time_of(n, d, n.steps - s) * n.B * ld + d * GH;
    a.carry_h = grad_h0 + d * BH;
    a.carry_c = at_or_null(grad_c0, d * BH);
    a.last = s == n.steps;
    if (a.last) return a;
    const int time = time_of(n, d, n.steps - 1 - s);
    const long long saved = ((long long)d * n.steps + time) * n.B;
    a.grad_out = grad_out + (long long)time * n.B * n.D * n.H + (long long)d * n.H;
    a.gates = gates + saved * GH;
    a.extra = extra + saved * n.H;
    a.h_prev = hs + state_before(n, d, time);
    a.c_prev = at_or_null(cs, state_before(n, d, time));
    a.grad_gi = grad_gi + (long long)time * n.B * ld + d * GH;
    a.grad_gh = at_or_null(grad_gh, (long long)time * n.B * ld + d * GH);
    return a;
}
