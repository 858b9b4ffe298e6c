// rnn_cell.cuh: the pointwise math of one LSTM or GRU unit (one batch row b, one hidden unit
// j), forward and backward, shared by rnn.cu (one pointwise kernel after a cuBLAS GEMM per
// step) and rnn_persistent.cu (the fused kernels), so both compute the same expressions.
//
// PyTorch's formulas and gate order. LSTM (i, f, g, o): pre[q] is gate q's pre-activation,
// both GEMMs and both biases summed; i, f, o = sigmoid, g = tanh, c = f*c_prev + i*g,
// h = o*tanh(c). GRU (r, z, n): in[q] = (x W_ih^T + b_ih)[q], hid[q] = (h W_hh^T + b_hh)[q];
// r, z = sigmoid(in + hid), n = tanh(in_n + r*hid_n), h = n + z*(h_prev - n).
//
// Backward: dh is the whole gradient reaching h (through W_hh from the next step or the final
// state, plus this step's output); the LSTM's dc_next is the gradient reaching c from the next
// step. The results are the gradients of the pre-activations (the GEMM inputs' gradients).
#pragma once

// bias[i], or 0 for a null bias (a layer without biases).
template <typename T>
__device__ __forceinline__ T bias_at(const T* __restrict__ bias, long long i) {
    return bias != nullptr ? bias[i] : T(0);
}

template <typename T>
__device__ __forceinline__ T rnn_sigmoid(T x) {
    // exp(-x) overflows to inf for very negative x, and 1 / inf is the exact limit, 0.
    return T(1) / (T(1) + exp(-x));
}

template <typename T>
struct LstmUnit {
    T act[4];  // i, f, g, o after their activations
    T c;
    T tanh_c;
    T h;
};

template <typename T>
__device__ __forceinline__ LstmUnit<T> lstm_unit_forward(const T (&pre)[4], T c_prev) {
    LstmUnit<T> u;
    for (int q = 0; q < 4; ++q) u.act[q] = q == 2 ? tanh(pre[q]) : rnn_sigmoid(pre[q]);
    u.c = u.act[1] * c_prev + u.act[0] * u.act[2];
    u.tanh_c = tanh(u.c);
    u.h = u.act[3] * u.tanh_c;
    return u;
}

// Writes the pre-activation gradients dpre (i, f, g, o) and returns dc_prev.
template <typename T>
__device__ __forceinline__ T lstm_unit_backward(const T (&act)[4], T tanh_c, T c_prev, T dh,
                                                T dc_next, T (&dpre)[4]) {
    const T i = act[0], f = act[1], g = act[2], o = act[3];
    const T dc = dc_next + dh * o * (T(1) - tanh_c * tanh_c);
    dpre[0] = dc * g * i * (T(1) - i);
    dpre[1] = dc * c_prev * f * (T(1) - f);
    dpre[2] = dc * i * (T(1) - g * g);
    dpre[3] = dh * tanh_c * o * (T(1) - o);
    return dc * f;
}

template <typename T>
struct GruUnit {
    T r;
    T z;
    T n;
    T h;
};

template <typename T>
__device__ __forceinline__ GruUnit<T> gru_unit_forward(const T (&in)[3], const T (&hid)[3],
                                                       T h_prev) {
    GruUnit<T> u;
    u.r = rnn_sigmoid(in[0] + hid[0]);
    u.z = rnn_sigmoid(in[1] + hid[1]);
    u.n = tanh(in[2] + u.r * hid[2]);
    u.h = u.n + u.z * (h_prev - u.n);
    return u;
}

// Writes the gradients of in (d_in) and hid (d_hid) and returns the part of dh_prev that
// bypasses W_hh, dh*z. hid_n is the saved hid[2].
template <typename T>
__device__ __forceinline__ T gru_unit_backward(T r, T z, T n, T hid_n, T h_prev, T dh,
                                               T (&d_in)[3], T (&d_hid)[3]) {
    const T dn = dh * (T(1) - z) * (T(1) - n * n);
    const T dr = dn * hid_n * r * (T(1) - r);
    const T dz = dh * (h_prev - n) * z * (T(1) - z);
    d_in[0] = d_hid[0] = dr;
    d_in[1] = d_hid[1] = dz;
    d_in[2] = dn;
    d_hid[2] = dn * r;
    return dh * z;
}
