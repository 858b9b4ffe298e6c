// norm.cu: batch normalisation and local response normalisation, forward and backward, for
// x of shape (N, C, S) where S is the product of the spatial sizes (S = 1 for (N, C) input):
// element (n, c, s) sits at (n*C + c)*S + s.
//
// Batch norm, each for float (_f32) and double (_f64):
//   batch_norm_fwd_stats   block = one channel (GPUCONV_REDUCE_THREADS threads striding over
//                          its N*S values); the mean by a fixed-order block sum, then the
//                          biased variance from a second pass over the deviations d (two
//                          passes: no cancellation), in the safe form of
//                          gpuconv/kernels/reference/norm.py: each thread keeps the sum of
//                          (d/m)^2 for m its largest |d| so far (at least 1, rescaled when it
//                          grows), the block scales every part to the sum S of the m (exact
//                          for ordinary data: S = blockDim.x), so var = S^2 v never needs
//                          d^2, which overflows float32 at |d| = 2e19. Thread 0 writes the
//                          mean and inv_std = 1/sqrt(var + eps) and, when running stats are
//                          given, updates those in place: running = (1 - momentum) * running
//                          + momentum * batch, with the unbiased variance var * n / (n - 1).
//                          The running arrays may be strided views (element strides
//                          rm_stride, rv_stride).
//   batch_norm_fwd_apply   thread = one element: y = (x - mean[c]) * inv_std[c] * w[c] + b[c].
//                          Training feeds it the batch stats; evaluation the running stats'
//                          inv_std, computed by the launcher (one elementwise pass).
//   batch_norm_fwd_apply_add_relu
//                          the same pass ending a ResNet block: y = max(bn(x) + residual, 0)
//                          (residual == nullptr: max(bn(x), 0)), so the normalised values and
//                          the sum never go through memory (3 element passes instead of 7).
//   batch_norm_fold        thread = one channel: the affine map of an evaluation-mode batch
//                          norm, scale[c] = w[c] / sqrt(var[c] + eps) and shift[c] = b[c] -
//                          mean[c] * scale[c], which a convolution's epilogue applies.
//   batch_norm_bwd_reduce  block = one channel: the statistics again (batch ones in training,
//                          in the safe form, the running ones when running_mean != nullptr),
//                          then one pass for sum(g) (grad_bias) and sum(g * (x - mean)) *
//                          inv_std (grad_weight, = sum(g * xhat)), all fixed-order block sums;
//                          thread 0 also writes mean and inv_std for the next kernel.
//   batch_norm_bwd_apply   thread = one element: grad_x = w * inv_std * g in evaluation, and in
//                          training w * inv_std * (g - sum(g)/n - xhat * sum(g * xhat)/n),
//                          the batch statistics being functions of x.
//
// Local response norm (window of `size` channels c - size/2 .. c + (size-1)/2, clipped), in
// the safe form of gpuconv/kernels/reference/norm.py: the base D = k + alpha/size * sum of
// the window's x^2 is kept as D = m^2 t, m the window's largest |x| when finite and above 1
// (else 1), t = k/m^2 + alpha/size * sum((x/m)^2), so that nothing overflows where the
// result is representable.
//   local_response_norm_fwd         thread = one element: y = (x/m) * m^(1-2 beta) * t^-beta.
//   local_response_norm_bwd_direct  thread = one element: grad_x = g * D^-beta (the direct
//                                   term), and into two scratch arrays through = g * D^-beta
//                                   * (x/m) / t and the window's m.
//   local_response_norm_bwd_spread  thread = one input element j: subtracts
//                                   2*alpha*beta/size * sum(through[c] * x[j] / m[c]) over the
//                                   output channels c whose window holds j, i.e.
//                                   c = j - (size-1)/2 .. j + size/2. Gathering, no atomics.
//
// weight == nullptr means w = 1, bias == nullptr means b = 0. Element counts are 64-bit.
#include "common.cuh"

// The flat index of the j-th value (j < N*S) of channel c.
__device__ __forceinline__ long long channel_element(long long j, int c, int C, long long S) {
    const long long n = j / S;
    return (n * C + c) * S + (j - n * S);
}

// Sum over channel c's values of f(flat index), as a fixed-order block sum.
template <typename T, typename F>
__device__ __forceinline__ T channel_sum(int N, int c, int C, long long S, F f) {
    const long long count = (long long)N * S;
    T acc = T(0);
    for (long long j = threadIdx.x; j < count; j += blockDim.x)
        acc += f(channel_element(j, c, C, S));
    return gpuconv_block_sum(acc);
}

template <typename T>
__device__ __forceinline__ T channel_mean(const T* __restrict__ x, int N, int c, int C,
                                          long long S) {
    return channel_sum<T>(N, c, C, S, [&](long long i) { return x[i]; }) / T((long long)N * S);
}

// One thread's part of a channel's sum of squared deviations, kept as m^2 * q with q the sum
// of (d/m)^2 and m the largest |d| so far, at least 1. A NaN d is never larger: it reaches q.
template <typename T>
struct ScaledSquares {
    T m;
    T q;
    __device__ __forceinline__ void add(T d) {
        const T a = fabs(d);
        if (a > m) {
            const T ratio = m / a;
            q = q * ratio * ratio + T(1);
            m = a;
        } else {
            const T r = d / m;
            q += r * r;
        }
    }
};

// The channel's biased variance (written to *var, inf where it overflows) and
// 1/sqrt(var + eps), from every thread's part: the parts are scaled to S, the sum of their m.
template <typename T>
__device__ __forceinline__ T block_inv_std(ScaledSquares<T> part, long long count, T eps,
                                           T* var) {
    const T S = gpuconv_block_sum(part.m);
    const T r = part.m / S;
    const T v = gpuconv_block_sum(part.q * r * r) / T(count);
    *var = (S * v) * S;  // not S * S * v: S * S overflows first when v is small
    return T(1) / (S * sqrt(v + eps / S / S));
}

template <typename T>
__device__ void batch_norm_fwd_stats(const T* __restrict__ x, T momentum, T eps,
                                     T* __restrict__ running_mean, long long rm_stride,
                                     T* __restrict__ running_var, long long rv_stride,
                                     T* __restrict__ mean_out, T* __restrict__ inv_std_out,
                                     int N, int C, long long S) {
    const long long count = (long long)N * S;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        const T mean = channel_mean(x, N, c, C, S);
        ScaledSquares<T> part = {T(1), T(0)};
        for (long long j = threadIdx.x; j < count; j += blockDim.x)
            part.add(x[channel_element(j, c, C, S)] - mean);
        T var;
        const T inv_std = block_inv_std(part, count, eps, &var);
        if (threadIdx.x != 0) continue;
        mean_out[c] = mean;
        inv_std_out[c] = inv_std;
        if (running_mean == nullptr) continue;
        T& rm = running_mean[c * rm_stride];
        T& rv = running_var[c * rv_stride];
        rm = (T(1) - momentum) * rm + momentum * mean;
        rv = (T(1) - momentum) * rv + momentum * var * T(count) / T(count - 1);
    }
}

// relu: add residual[i] (when not nullptr) and clamp at 0.
template <typename T>
__device__ void batch_norm_fwd_apply(const T* __restrict__ x, const T* __restrict__ mean,
                                     const T* __restrict__ inv_std,
                                     const T* __restrict__ weight, const T* __restrict__ bias,
                                     const T* __restrict__ residual, bool relu,
                                     T* __restrict__ y, int N, int C, long long S) {
    GPUCONV_GRID_STRIDE_LOOP(i, (long long)N * C * S) {
        const int c = (int)((i / S) % C);
        const T w = weight != nullptr ? weight[c] : T(1);
        const T b = bias != nullptr ? bias[c] : T(0);
        T v = (x[i] - mean[c]) * inv_std[c] * w + b;
        if (residual != nullptr) v += residual[i];
        // Not fmax: a NaN stays NaN, as relu(NaN) does.
        y[i] = relu && v < T(0) ? T(0) : v;
    }
}

template <typename T>
__device__ void batch_norm_fold(const T* __restrict__ mean, const T* __restrict__ var,
                                const T* __restrict__ weight, const T* __restrict__ bias, T eps,
                                T* __restrict__ scale, T* __restrict__ shift, int C) {
    GPUCONV_GRID_STRIDE_LOOP(c, (long long)C) {
        const T s = (weight != nullptr ? weight[c] : T(1)) / sqrt(var[c] + eps);
        scale[c] = s;
        shift[c] = (bias != nullptr ? bias[c] : T(0)) - mean[c] * s;
    }
}

template <typename T>
__device__ void batch_norm_bwd_reduce(const T* __restrict__ gy, const T* __restrict__ x,
                                      const T* __restrict__ running_mean,
                                      const T* __restrict__ running_var, T eps,
                                      T* __restrict__ mean_out, T* __restrict__ inv_std_out,
                                      T* __restrict__ grad_weight, T* __restrict__ grad_bias,
                                      int N, int C, long long S) {
    const long long count = (long long)N * S;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        const bool batch_stats = running_mean == nullptr;
        const T mean = batch_stats ? channel_mean(x, N, c, C, S) : running_mean[c];
        ScaledSquares<T> part = {T(1), T(0)};
        T g_sum = T(0), g_centred = T(0);
        for (long long j = threadIdx.x; j < count; j += blockDim.x) {
            const long long i = channel_element(j, c, C, S);
            const T d = x[i] - mean;
            part.add(d);
            g_sum += gy[i];
            g_centred += gy[i] * d;
        }
        T var;
        const T batch_inv_std = block_inv_std(part, count, eps, &var);
        g_sum = gpuconv_block_sum(g_sum);
        g_centred = gpuconv_block_sum(g_centred);
        if (threadIdx.x != 0) continue;
        const T inv_std = batch_stats ? batch_inv_std : T(1) / sqrt(running_var[c] + eps);
        mean_out[c] = mean;
        inv_std_out[c] = inv_std;
        grad_bias[c] = g_sum;
        grad_weight[c] = g_centred * inv_std;
    }
}

template <typename T>
__device__ void batch_norm_bwd_apply(const T* __restrict__ gy, const T* __restrict__ x,
                                     const T* __restrict__ mean, const T* __restrict__ inv_std,
                                     const T* __restrict__ weight,
                                     const T* __restrict__ grad_weight,
                                     const T* __restrict__ grad_bias, int training,
                                     T* __restrict__ gx, int N, int C, long long S) {
    const T count = T((long long)N * S);
    GPUCONV_GRID_STRIDE_LOOP(i, (long long)N * C * S) {
        const int c = (int)((i / S) % C);
        const T scale = (weight != nullptr ? weight[c] : T(1)) * inv_std[c];
        if (training) {
            const T xhat = (x[i] - mean[c]) * inv_std[c];
            gx[i] = scale * (gy[i] - grad_bias[c] / count - xhat * grad_weight[c] / count);
        } else {
            gx[i] = scale * gy[i];
        }
    }
}

// The base of element i's window (channels lo .. hi at its (n, s)) as D = m^2 t.
template <typename T>
struct LrnBase {
    T m;
    T t;
};

template <typename T>
__device__ __forceinline__ LrnBase<T> lrn_base(const T* __restrict__ x, long long i, int c,
                                               int C, long long S, int size, T alpha, T k) {
    const int lo = max(c - size / 2, 0);
    const int hi = min(c + (size - 1) / 2, C - 1);
    const T* column = x + (i - (long long)c * S);  // element (n, 0, s)
    T m = T(1);
    if (alpha > T(0)) {
        for (int j = lo; j <= hi; ++j) {
            const T v = fabs(column[j * S]);
            if (v > m) m = v;  // NaN never is: it reaches t below
        }
        if (m - m != T(0)) m = T(1);  // inf: the plain formula, with its inf and NaN
    }
    T total = T(0);
    for (int j = lo; j <= hi; ++j) {
        const T v = column[j * S] / m;
        total += v * v;
    }
    return {m, k / m / m + alpha / T(size) * total};
}

template <typename T>
__device__ void local_response_norm_fwd(const T* __restrict__ x, T* __restrict__ y, int N,
                                        int C, long long S, int size, T alpha, T beta, T k) {
    GPUCONV_GRID_STRIDE_LOOP(i, (long long)N * C * S) {
        const int c = (int)((i / S) % C);
        const LrnBase<T> d = lrn_base(x, i, c, C, S, size, alpha, k);
        y[i] = x[i] / d.m * pow(d.m, T(1) - T(2) * beta) * pow(d.t, -beta);
    }
}

template <typename T>
__device__ void local_response_norm_bwd_direct(const T* __restrict__ gy, const T* __restrict__ x,
                                               T* __restrict__ gx, T* __restrict__ through,
                                               T* __restrict__ window_max, int N, int C,
                                               long long S, int size, T alpha, T beta, T k) {
    GPUCONV_GRID_STRIDE_LOOP(i, (long long)N * C * S) {
        const int c = (int)((i / S) % C);
        const LrnBase<T> d = lrn_base(x, i, c, C, S, size, alpha, k);
        const T scale = pow(d.m, T(-2) * beta) * pow(d.t, -beta);  // D^-beta
        gx[i] = gy[i] * scale;
        through[i] = gy[i] * scale * (x[i] / d.m) / d.t;
        window_max[i] = d.m;
    }
}

template <typename T>
__device__ void local_response_norm_bwd_spread(const T* __restrict__ x,
                                               const T* __restrict__ through,
                                               const T* __restrict__ window_max,
                                               T* __restrict__ gx, int N, int C, long long S,
                                               int size, T alpha, T beta) {
    GPUCONV_GRID_STRIDE_LOOP(i, (long long)N * C * S) {
        const int c = (int)((i / S) % C);
        const int lo = max(c - (size - 1) / 2, 0);
        const int hi = min(c + size / 2, C - 1);
        const long long first = i - (long long)c * S;  // element (n, 0, s)
        T total = T(0);
        for (int j = lo; j <= hi; ++j)
            total += through[first + j * S] * (x[i] / window_max[first + j * S]);
        gx[i] -= T(2) * alpha * beta / T(size) * total;
    }
}

#define NORM_SHAPE_PARAMS int N, int C, long long S
#define NORM_SHAPE_ARGS N, C, S
#define LRN_PARAMS(T) int size, T alpha, T beta, T k

#define NORM_ENTRY_POINTS(T, SUFFIX)                                                         \
    extern "C" __global__ void batch_norm_fwd_stats_##SUFFIX(                                \
        const T* x, T momentum, T eps, T* running_mean, long long rm_stride, T* running_var, \
        long long rv_stride, T* mean, T* inv_std, NORM_SHAPE_PARAMS) {                       \
        batch_norm_fwd_stats<T>(x, momentum, eps, running_mean, rm_stride, running_var,      \
                                rv_stride, mean, inv_std, NORM_SHAPE_ARGS);                  \
    }                                                                                        \
    extern "C" __global__ void batch_norm_fwd_apply_##SUFFIX(                                \
        const T* x, const T* mean, const T* inv_std, const T* weight, const T* bias, T* y,   \
        NORM_SHAPE_PARAMS) {                                                                 \
        batch_norm_fwd_apply<T>(x, mean, inv_std, weight, bias, nullptr, false, y,           \
                                NORM_SHAPE_ARGS);                                            \
    }                                                                                        \
    extern "C" __global__ void batch_norm_fwd_apply_add_relu_##SUFFIX(                       \
        const T* x, const T* mean, const T* inv_std, const T* weight, const T* bias,         \
        const T* residual, T* y, NORM_SHAPE_PARAMS) {                                        \
        batch_norm_fwd_apply<T>(x, mean, inv_std, weight, bias, residual, true, y,           \
                                NORM_SHAPE_ARGS);                                            \
    }                                                                                        \
    extern "C" __global__ void batch_norm_fold_##SUFFIX(                                     \
        const T* mean, const T* var, const T* weight, const T* bias, T eps, T* scale,        \
        T* shift, int C) {                                                                   \
        batch_norm_fold<T>(mean, var, weight, bias, eps, scale, shift, C);                   \
    }                                                                                        \
    extern "C" __global__ void batch_norm_bwd_reduce_##SUFFIX(                               \
        const T* gy, const T* x, const T* running_mean, const T* running_var, T eps,         \
        T* mean, T* inv_std, T* grad_weight, T* grad_bias, NORM_SHAPE_PARAMS) {              \
        batch_norm_bwd_reduce<T>(gy, x, running_mean, running_var, eps, mean, inv_std,       \
                                 grad_weight, grad_bias, NORM_SHAPE_ARGS);                   \
    }                                                                                        \
    extern "C" __global__ void batch_norm_bwd_apply_##SUFFIX(                                \
        const T* gy, const T* x, const T* mean, const T* inv_std, const T* weight,           \
        const T* grad_weight, const T* grad_bias, int training, T* gx, NORM_SHAPE_PARAMS) {  \
        batch_norm_bwd_apply<T>(gy, x, mean, inv_std, weight, grad_weight, grad_bias,        \
                                training, gx, NORM_SHAPE_ARGS);                              \
    }                                                                                        \
    extern "C" __global__ void local_response_norm_fwd_##SUFFIX(                             \
        const T* x, T* y, NORM_SHAPE_PARAMS, LRN_PARAMS(T)) {                                \
        local_response_norm_fwd<T>(x, y, NORM_SHAPE_ARGS, size, alpha, beta, k);             \
    }                                                                                        \
    extern "C" __global__ void local_response_norm_bwd_direct_##SUFFIX(                      \
        const T* gy, const T* x, T* gx, T* through, T* window_max, NORM_SHAPE_PARAMS,        \
        LRN_PARAMS(T)) {                                                                     \
        local_response_norm_bwd_direct<T>(gy, x, gx, through, window_max, NORM_SHAPE_ARGS,   \
                                          size, alpha, beta, k);                             \
    }                                                                                        \
    extern "C" __global__ void local_response_norm_bwd_spread_##SUFFIX(                      \
        const T* x, const T* through, const T* window_max, T* gx, NORM_SHAPE_PARAMS,         \
        int size, T alpha, T beta) {                                                         \
        local_response_norm_bwd_spread<T>(x, through, window_max, gx, NORM_SHAPE_ARGS, size,  \
                                          alpha, beta);                                      \
    }

NORM_ENTRY_POINTS(float, f32)
NORM_ENTRY_POINTS(double, f64)
