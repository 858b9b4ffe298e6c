// activation.cu: pointwise activations (optionally fused with a per-channel bias add),
// softmax and log_softmax along any axis, and dropout with a Philox4x64-10 mask, forward and
// backward, each for float (_f32) and double (_f64).
//
// Pointwise, x seen as (N, C, S) with S the product of the sizes after the channel axis
// (C = 1, S = n for a plain activation; S = 1 for (N, F) input); element (n, c, s) sits at
// (n*C + c)*S + s. The activation is an int code (enum ActivationCode) that picks a template
// instantiation once per launch, outside the element loop:
//   activation_fwd        thread = one element: y = act(x + b[c]) (b == nullptr: no bias).
//   activation_bwd        thread = one element: gx = g * act'(z), z = x + b[c]. sigmoid and
//                         tanh take their derivative from y = act(z): read from `out` when it
//                         is not null, else recomputed.
//   bias_act_bwd_partial  block = (channel c, chunk k) of `chunk` consecutive values among
//                         channel c's N*S: it writes their gx (as activation_bwd) and their
//                         fixed-order block sum to partial[c*chunks + k].
//   bias_act_bwd_reduce   block = one channel: gb[c] = fixed-order block sum of its partials.
//                         The chunking depends only on the shape, so the bias gradient is
//                         bitwise reproducible, and many chunks keep every SM busy when C
//                         is small (LeNet's 6 channels over 256*28*28 values).
//
// Softmax / log_softmax, x seen as (outer, D, inner) with the normalised axis in the middle:
// row r = o*inner + i holds x[(o*D + d)*inner + i] for d < D.
//   _warp variants    a warp owns a row; its 32 lanes stride over d (coalesced when
//                     inner == 1) and combine partial results with xor-shuffles, whose
//                     butterfly gives every lane the same bits (deterministic).
//   _thread variants  a thread owns a row; neighbouring threads own neighbouring i, so the
//                     loads are coalesced along the inner axis when inner > 1.
//   softmax_fwd, log_softmax_fwd    one pass for the row's maximum m and sum s of exp(x - m)
//                     (an online sum, rescaled when the maximum grows: every exponent <= 0),
//                     one pass writing exp(x - m) / s or (x - m) - log(s).
//   softmax_bwd       gx = y (g - sum(g y)); log_softmax_bwd: gx = g - exp(y) sum(g); y is
//                     read from `out` when not null, else recomputed from the row's m and s.
//
// Dropout (the rule of gpuconv.functional.dropout, equal bit for bit to the CPU impls):
//   dropout_fwd       thread = one Philox4x64-10 block t (philox.cuh): counter (t + 1, 0, 0, 0),
//                     key (seed, offset + offset_delta[0]) (offset_delta may be null: 0; a
//                     captured graph's replays move it on the device, gpuconv/graphs.py);
//                     its four 64-bit words decide elements 4t .. 4t+3: element i
//                     is kept iff word >= threshold, where the host passes
//                     threshold = ceil(p * 2^53) << 11, the integer form of
//                     (word >> 11) * 2^-53 >= p. y = x * (kept ? scale : 0) (torch's product:
//                     a dropped inf gives NaN). The backward pass
//                     is the same kernel applied to grad_output (dropout is linear).
//
// All entry points take plain pointers to contiguous arrays; element and row counts are
// 64-bit.
#include "common.cuh"
#include "philox.cuh"

#define FULL_WARP_MASK 0xffffffffu
#define WARP_LANES 32

// Must match ACTIVATIONS in gpuconv/kernels/cuda_c/activation.py.
enum ActivationCode {
    ACT_IDENTITY = 0,
    ACT_RELU = 1,
    ACT_LEAKY_RELU = 2,
    ACT_ELU = 3,
    ACT_SIGMOID = 4,
    ACT_TANH = 5,
};

// ---------------------------------------------------------------------------- activations
// Each activation: fwd(z, param) = act(z), and bwd(g, v, param) = g * act'(z) where v is
// y = act(z) when kGradFromOutput, else z. `param` is leaky_relu's slope or elu's alpha.
// NaN and inf as PyTorch: relu selects (a NaN z passes through forward and lets g through
// backward; an infinite g on the dead side gives 0), the others multiply where torch does.

struct Identity {
    static constexpr bool kGradFromOutput = false;
    template <typename T> static __device__ __forceinline__ T fwd(T z, T) { return z; }
    template <typename T> static __device__ __forceinline__ T bwd(T g, T, T) { return g; }
};

struct Relu {
    static constexpr bool kGradFromOutput = false;
    template <typename T> static __device__ __forceinline__ T fwd(T z, T) {
        return z <= T(0) ? T(0) : z;
    }
    template <typename T> static __device__ __forceinline__ T bwd(T g, T z, T) {
        return z <= T(0) ? T(0) : g;
    }
};

struct LeakyRelu {
    static constexpr bool kGradFromOutput = false;
    template <typename T> static __device__ __forceinline__ T fwd(T z, T slope) {
        return z > T(0) ? z : z * slope;
    }
    template <typename T> static __device__ __forceinline__ T bwd(T g, T z, T slope) {
        return z > T(0) ? g : g * slope;
    }
};

struct Elu {
    static constexpr bool kGradFromOutput = false;
    // expm1 keeps full precision near 0; only the taken branch is evaluated, so exp never
    // sees a large positive z.
    template <typename T> static __device__ __forceinline__ T fwd(T z, T alpha) {
        return z > T(0) ? z : alpha * expm1(z);
    }
    template <typename T> static __device__ __forceinline__ T bwd(T g, T z, T alpha) {
        return z > T(0) ? g : g * alpha * exp(z);
    }
};

struct Sigmoid {
    static constexpr bool kGradFromOutput = true;
    // Both branches use e = exp(-|z|) <= 1, so nothing overflows.
    template <typename T> static __device__ __forceinline__ T fwd(T z, T) {
        const T e = exp(-fabs(z));
        return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
    }
    template <typename T> static __device__ __forceinline__ T bwd(T g, T y, T) {
        return g * y * (T(1) - y);
    }
};

struct Tanh {
    static constexpr bool kGradFromOutput = true;
    template <typename T> static __device__ __forceinline__ T fwd(T z, T) { return tanh(z); }
    template <typename T> static __device__ __forceinline__ T bwd(T g, T y, T) {
        return g * (T(1) - y * y);
    }
};

// Calls body(Act{}) for the activation that `code` names; an unknown code traps (the
// launchers only pass codes from their table). `body` is a functor whose call operator is a
// __device__ template, not a generic lambda: in a __global__ function NVRTC 12.x and 13.0
// take a lambda's call operator for a host function unless given
// --device-as-default-execution-space (CuPy adds it, another loader need not), and these
// sources must not depend on that flag.
template <typename Body>
__device__ __forceinline__ void with_activation(int code, const Body& body) {
    switch (code) {
        case ACT_IDENTITY: body(Identity{}); break;
        case ACT_RELU: body(Relu{}); break;
        case ACT_LEAKY_RELU: body(LeakyRelu{}); break;
        case ACT_ELU: body(Elu{}); break;
        case ACT_SIGMOID: body(Sigmoid{}); break;
        case ACT_TANH: body(Tanh{}); break;
        default: __trap();
    }
}

// The bias of flat element i of an (N, C, S) tensor, 0 without bias.
template <typename T>
__device__ __forceinline__ T bias_of(const T* __restrict__ bias, long long i, int C,
                                     long long S) {
    return bias != nullptr ? bias[(i / S) % C] : T(0);
}

// gx of element i whose bias is b.
template <typename T, typename Act>
__device__ __forceinline__ T activation_grad(const T* __restrict__ g, const T* __restrict__ x,
                                             const T* __restrict__ out, long long i, T b,
                                             T param) {
    if constexpr (Act::kGradFromOutput) {
        const T y = out != nullptr ? out[i] : Act::fwd(x[i] + b, param);
        return Act::bwd(g[i], y, param);
    } else {
        return Act::bwd(g[i], x[i] + b, param);
    }
}

template <typename T, typename Act>
__device__ void activation_fwd(const T* __restrict__ x, const T* __restrict__ bias,
                               T* __restrict__ y, long long total, int C, long long S,
                               T param) {
    GPUCONV_GRID_STRIDE_LOOP(i, total) {
        y[i] = Act::fwd(x[i] + bias_of(bias, i, C, S), param);
    }
}

template <typename T, typename Act>
__device__ void activation_bwd(const T* __restrict__ g, const T* __restrict__ x,
                               const T* __restrict__ bias, const T* __restrict__ out,
                               T* __restrict__ gx, long long total, int C, long long S,
                               T param) {
    GPUCONV_GRID_STRIDE_LOOP(i, total) {
        gx[i] = activation_grad<T, Act>(g, x, out, i, bias_of(bias, i, C, S), param);
    }
}

template <typename T, typename Act>
__device__ void bias_act_bwd_partial(const T* __restrict__ g, const T* __restrict__ x,
                                     const T* __restrict__ bias, const T* __restrict__ out,
                                     T* __restrict__ gx, T* __restrict__ partial, int N, int C,
                                     long long S, long long chunk, long long chunks, T param) {
    const long long count = (long long)N * S;
    for (long long block = blockIdx.x; block < chunks * C; block += gridDim.x) {
        const int c = (int)(block / chunks);
        const long long begin = (block % chunks) * chunk;
        const long long end = begin + chunk < count ? begin + chunk : count;
        const T b = bias[c];
        T acc = T(0);
        for (long long j = begin + threadIdx.x; j < end; j += blockDim.x) {
            const long long n = j / S;
            const long long i = (n * C + c) * S + (j - n * S);
            const T v = activation_grad<T, Act>(g, x, out, i, b, param);
            gx[i] = v;
            acc += v;
        }
        acc = gpuconv_block_sum(acc);
        if (threadIdx.x == 0) partial[block] = acc;
    }
}

template <typename T>
__device__ void bias_act_bwd_reduce(const T* __restrict__ partial, T* __restrict__ gb, int C,
                                    long long chunks) {
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        T acc = T(0);
        for (long long k = threadIdx.x; k < chunks; k += blockDim.x) acc += partial[c * chunks + k];
        acc = gpuconv_block_sum(acc);
        if (threadIdx.x == 0) gb[c] = acc;
    }
}

// The pointwise entry points' bodies for with_activation: each holds the launch's arguments
// and runs the kernel body templated on the activation it is called with.
template <typename T>
struct PointwiseSizes {
    long long total;
    int C;
    long long S;
    T param;
};

template <typename T>
struct ActivationFwd {
    const T* x;
    const T* bias;
    T* y;
    PointwiseSizes<T> n;
    template <typename Act> __device__ __forceinline__ void operator()(Act) const {
        activation_fwd<T, Act>(x, bias, y, n.total, n.C, n.S, n.param);
    }
};

// The arrays of a backward pass: grad_output, input, bias, saved output, grad_input.
template <typename T>
struct GradArrays {
    const T* g;
    const T* x;
    const T* bias;
    const T* out;
    T* gx;
};

template <typename T>
struct ActivationBwd {
    GradArrays<T> a;
    PointwiseSizes<T> n;
    template <typename Act> __device__ __forceinline__ void operator()(Act) const {
        activation_bwd<T, Act>(a.g, a.x, a.bias, a.out, a.gx, n.total, n.C, n.S, n.param);
    }
};

template <typename T>
struct BiasActBwdPartial {
    GradArrays<T> a;
    T* partial;
    int N;
    int C;
    long long S;
    long long chunk;
    long long chunks;
    T param;
    template <typename Act> __device__ __forceinline__ void operator()(Act) const {
        bias_act_bwd_partial<T, Act>(a.g, a.x, a.bias, a.out, a.gx, partial, N, C, S, chunk,
                                     chunks, param);
    }
};

// ---------------------------------------------------------------------------- softmax

// Rows are handed out LANES threads at a time with a 64-bit grid-stride loop. With
// LANES == 32 and blockDim.x a multiple of 32 a warp's lanes always share a row, so the
// shuffles see the whole warp; with LANES == 1 there are no shuffles.
#define ROW_LOOP(row, rows, LANES)                                                            \
    for (long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / (LANES);        \
         row < (rows); row += ((long long)gridDim.x * blockDim.x) / (LANES))

template <typename T, int LANES>
__device__ __forceinline__ T lanes_sum(T v) {
    for (int offset = LANES / 2; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(FULL_WARP_MASK, v, offset);
    return v;
}

// A row's maximum and sum of exp(x - max).
template <typename T>
struct RowNorm {
    T max;
    T sum_exp;
};

// Merge another lane's partial (m, s) into `st`.
template <typename T>
__device__ __forceinline__ void row_norm_merge(RowNorm<T>& st, T m, T s) {
    const T top = st.max > m ? st.max : m;
    st.sum_exp = st.sum_exp * gpuconv_exp_below(st.max, top) + s * gpuconv_exp_below(m, top);
    st.max = top;
}

// The row's (max, sum_exp), read once. Each lane starts its maximum at the row's first value
// with an empty sum, so no infinity is needed and lanes without values merge as zeros.
template <typename T, int LANES>
__device__ RowNorm<T> row_norm(const T* __restrict__ row, long long D, long long inner,
                               int lane) {
    RowNorm<T> st = {row[0], T(0)};
    for (long long d = lane; d < D; d += LANES) {
        const T v = row[d * inner];
        if (v > st.max) {
            st.sum_exp = st.sum_exp * gpuconv_exp_below(st.max, v) + T(1);
            st.max = v;
        } else {
            st.sum_exp += gpuconv_exp_below(v, st.max);
        }
    }
    for (int offset = LANES / 2; offset > 0; offset >>= 1) {
        const T m = __shfl_xor_sync(FULL_WARP_MASK, st.max, offset);
        const T s = __shfl_xor_sync(FULL_WARP_MASK, st.sum_exp, offset);
        row_norm_merge(st, m, s);
    }
    return st;
}

// Offset of row r's first element in an (outer, D, inner) tensor.
__device__ __forceinline__ long long row_offset(long long r, long long D, long long inner) {
    return (r / inner) * D * inner + r % inner;
}

template <typename T, int LANES, bool LOG>
__device__ void softmax_fwd(const T* __restrict__ x, T* __restrict__ y, long long outer,
                            long long D, long long inner) {
    static_assert(LANES == 1 || LANES == WARP_LANES, "a row belongs to a thread or a warp");
    const int lane = threadIdx.x % LANES;
    ROW_LOOP(r, outer * inner, LANES) {
        const long long offset = row_offset(r, D, inner);
        const RowNorm<T> st = row_norm<T, LANES>(x + offset, D, inner, lane);
        const T log_sum = LOG ? log(st.sum_exp) : T(0);
        for (long long d = lane; d < D; d += LANES) {
            const long long e = offset + d * inner;
            const T shifted = x[e] - st.max;
            y[e] = LOG ? shifted - log_sum : exp(shifted) / st.sum_exp;
        }
    }
}

template <typename T, int LANES, bool LOG>
__device__ void softmax_bwd(const T* __restrict__ g, const T* __restrict__ x,
                            const T* __restrict__ out, T* __restrict__ gx, long long outer,
                            long long D, long long inner) {
    static_assert(LANES == 1 || LANES == WARP_LANES, "a row belongs to a thread or a warp");
    const int lane = threadIdx.x % LANES;
    ROW_LOOP(r, outer * inner, LANES) {
        const long long offset = row_offset(r, D, inner);
        RowNorm<T> st = {T(0), T(1)};
        if (out == nullptr) st = row_norm<T, LANES>(x + offset, D, inner, lane);
        const T log_sum = LOG ? log(st.sum_exp) : T(0);
        // The forward result at flat index e: softmax(x) or log_softmax(x).
        auto y_at = [&](long long e) -> T {
            if (out != nullptr) return out[e];
            const T shifted = x[e] - st.max;
            return LOG ? shifted - log_sum : exp(shifted) / st.sum_exp;
        };
        T acc = T(0);
        for (long long d = lane; d < D; d += LANES) {
            const long long e = offset + d * inner;
            acc += LOG ? g[e] : g[e] * y_at(e);
        }
        acc = lanes_sum<T, LANES>(acc);
        for (long long d = lane; d < D; d += LANES) {
            const long long e = offset + d * inner;
            gx[e] = LOG ? g[e] - exp(y_at(e)) * acc : y_at(e) * (g[e] - acc);
        }
    }
}

// ---------------------------------------------------------------------------- dropout

template <typename T>
__device__ void dropout_fwd(const T* __restrict__ x, T* __restrict__ y, long long n,
                            unsigned long long seed, unsigned long long offset,
                            const unsigned long long* __restrict__ offset_delta,
                            unsigned long long threshold, T scale) {
    // The key's second word; a captured graph reads how far its replay has moved it.
    const unsigned long long key1 = offset + (offset_delta != nullptr ? offset_delta[0] : 0ull);
    GPUCONV_GRID_STRIDE_LOOP(t, (n + PHILOX_WORDS - 1) / PHILOX_WORDS) {
        unsigned long long words[PHILOX_WORDS] = {(unsigned long long)t + 1, 0, 0, 0};
        philox4x64_10(words, seed, key1);
#pragma unroll
        for (int j = 0; j < PHILOX_WORDS; ++j) {
            const long long i = t * PHILOX_WORDS + j;
            if (i < n) y[i] = x[i] * (words[j] >= threshold ? scale : T(0));
        }
    }
}

// ---------------------------------------------------------------------------- entry points

#define POINTWISE_PARAMS(T) long long total, int C, long long S, int act, T param
#define SOFTMAX_PARAMS long long outer, long long D, long long inner

#define SOFTMAX_ENTRY_POINTS(T, SUFFIX, NAME, LOG, VARIANT, LANES)                            \
    extern "C" __global__ void NAME##_fwd_##VARIANT##_##SUFFIX(const T* x, T* y,              \
                                                               SOFTMAX_PARAMS) {              \
        softmax_fwd<T, LANES, LOG>(x, y, outer, D, inner);                                    \
    }                                                                                         \
    extern "C" __global__ void NAME##_bwd_##VARIANT##_##SUFFIX(                               \
        const T* g, const T* x, const T* out, T* gx, SOFTMAX_PARAMS) {                        \
        softmax_bwd<T, LANES, LOG>(g, x, out, gx, outer, D, inner);                           \
    }

#define ACTIVATION_ENTRY_POINTS(T, SUFFIX)                                                    \
    extern "C" __global__ void activation_fwd_##SUFFIX(const T* x, const T* bias, T* y,       \
                                                       POINTWISE_PARAMS(T)) {                 \
        with_activation(act, ActivationFwd<T>{x, bias, y, {total, C, S, param}});             \
    }                                                                                         \
    extern "C" __global__ void activation_bwd_##SUFFIX(const T* g, const T* x, const T* bias, \
                                                       const T* out, T* gx,                   \
                                                       POINTWISE_PARAMS(T)) {                 \
        with_activation(act, ActivationBwd<T>{{g, x, bias, out, gx}, {total, C, S, param}});  \
    }                                                                                         \
    extern "C" __global__ void bias_act_bwd_partial_##SUFFIX(                                 \
        const T* g, const T* x, const T* bias, const T* out, T* gx, T* partial, int N, int C, \
        long long S, long long chunk, long long chunks, int act, T param) {                   \
        with_activation(act, BiasActBwdPartial<T>{{g, x, bias, out, gx}, partial, N, C, S,    \
                                                  chunk, chunks, param});                     \
    }                                                                                         \
    extern "C" __global__ void bias_act_bwd_reduce_##SUFFIX(const T* partial, T* gb, int C,   \
                                                            long long chunks) {               \
        bias_act_bwd_reduce<T>(partial, gb, C, chunks);                                       \
    }                                                                                         \
    SOFTMAX_ENTRY_POINTS(T, SUFFIX, softmax, false, warp, WARP_LANES)                         \
    SOFTMAX_ENTRY_POINTS(T, SUFFIX, softmax, false, thread, 1)                                \
    SOFTMAX_ENTRY_POINTS(T, SUFFIX, log_softmax, true, warp, WARP_LANES)                      \
    SOFTMAX_ENTRY_POINTS(T, SUFFIX, log_softmax, true, thread, 1)                             \
    extern "C" __global__ void dropout_fwd_##SUFFIX(                                          \
        const T* x, T* y, long long n, unsigned long long seed, unsigned long long offset,    \
        const unsigned long long* offset_delta, unsigned long long threshold, T scale) {      \
        dropout_fwd<T>(x, y, n, seed, offset, offset_delta, threshold, scale);                \
    }

ACTIVATION_ENTRY_POINTS(float, f32)
ACTIVATION_ENTRY_POINTS(double, f64)
