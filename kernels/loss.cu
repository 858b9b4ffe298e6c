// loss.cu: class-index losses (fused softmax cross-entropy, negative log-likelihood) and
// their gradients, for logits/log-probabilities x of shape (N, C, S) where S is the product
// of the spatial sizes (S = 1 for plain (N, C) input) and integer targets of shape (N, S).
// Row m = n*S + s is one target position; its C class scores lie S elements apart
// (x[n*C*S + c*S + s]), so the class axis is innermost only when S == 1.
//
// Cross-entropy, each for float (_f32) and double (_f64) and two row mappings:
//   _warp    a warp owns a row; its 32 lanes stride over the classes (coalesced when
//            S == 1) and combine their partial results with xor-shuffles;
//   _thread  a thread owns a row and loops over the classes; neighbouring threads own
//            neighbouring positions s, so the loads are coalesced along S.
//   cross_entropy_fwd_*  one pass over the row: an online log-sum-exp (running maximum and
//            sum of exp rescaled whenever the maximum grows) and the weighted sum of the
//            logits taken relative to the row's first logit r, so the label-smoothing term
//            never subtracts two huge numbers. With lse = max + log(sum exp(x - max)),
//            W = sum_c w[c] and t the target, the loss is
//            (1 - eps) * w[t] * (lse - x[t]) + eps / C * (W * (lse - r) - sum_c w[c] (x[c] - r)),
//            and 0 where t == ignore_index. It writes one loss per row.
//   cross_entropy_bwd_*  the same statistics, then a second sweep writes
//            g * ((1 - eps) * w[t] * (p - onehot(t)) + eps / C * (W * p - w)) with
//            p = exp(x - lse), g the row's incoming gradient; ignored rows get 0.
//
// NLL:
//   nll_loss_fwd_rows       thread = one row: -w[t] * x[t] (0 where ignored).
//   nll_loss_bwd_pointwise  thread = one element of grad_x: -g * w[t] where c == t, else 0.
//
// Reductions (one block of GPUCONV_REDUCE_THREADS threads, fixed-order tree: deterministic):
//   class_loss_fwd_reduce        out[0] = sum of the per-row losses, divided by the total
//                                weight sum_m w[t_m] of the counted rows for "mean".
//   class_loss_bwd_total_weight  out[0] = that total weight (the "mean" backward's divisor).
//
// Training statistics (one block of GPUCONV_REDUCE_THREADS threads, fixed-order tree):
//   classification_stats  stats[0] += loss[0] * N and stats[1] += the number of positions
//                         whose first largest score (a NaN counts as largest, as NumPy's
//                         argmax has it) is the target: a training loop keeps its epoch
//                         sums on the device (double, added to in place) and reads them
//                         once per epoch.
//
// A row's incoming gradient g is grad_output[m * g_stride] (g_stride 1 for reduction "none",
// 0 for a 0-d grad_output), divided by total_weight[0] when that pointer is not null.
// weight == nullptr means every class weighs 1. Row and element counts are 64-bit.
//
// Value checks on the device (gpuconv/device_checks.py): a target outside [0, C) that is not
// ignore_index is reported in the `error` row (value, C, ignore_index) and its row is
// treated as ignored, so no kernel reads outside the scores or the weights; a "mean" whose
// total weight is zero (every target ignored, or weights summing to zero) is reported by the
// kernel that divides by it. The host reads the rows when it next looks at the device.
#include "common.cuh"

#define FULL_WARP_MASK 0xffffffffu
#define WARP_LANES 32

// The class weight w[c] (1 when the loss has no weights).
template <typename T>
__device__ __forceinline__ T class_weight(const T* __restrict__ weight, long long c) {
    return weight != nullptr ? weight[c] : T(1);
}

// Whether row target t counts: not ignore_index and a class in [0, C). A target outside
// that range is reported (when `report`) and then counts as ignored.
__device__ __forceinline__ bool counted_target(long long t, int C, long long ignore_index,
                                               long long* error, bool report) {
    if (t == ignore_index) return false;
    if (t >= 0 && t < C) return true;
    if (report) gpuconv_report_error(error, t, C, ignore_index);
    return false;
}

// w[t] of row m's target, 0 when the row does not count.
template <typename T>
__device__ __forceinline__ T target_weight(const long long* __restrict__ target,
                                           const T* __restrict__ weight, long long ignore_index,
                                           int C, long long m) {
    const long long t = target[m];
    return counted_target(t, C, ignore_index, nullptr, false) ? class_weight(weight, t) : T(0);
}

// d(reduced loss) / d(loss of row m).
template <typename T>
__device__ __forceinline__ T row_grad(const T* __restrict__ grad_output, long long g_stride,
                                      const T* __restrict__ total_weight, long long m) {
    const T g = grad_output[m * g_stride];
    return total_weight != nullptr ? g / total_weight[0] : g;
}

// Sum over the LANES lanes that share a row; every lane receives the same bits (a xor
// butterfly adds the same two operands on both sides of each exchange).
template <typename T, int LANES>
__device__ __forceinline__ T lanes_sum(T v) {
    for (int offset = LANES / 2; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(FULL_WARP_MASK, v, offset);
    return v;
}

// Merge two partial log-sum-exps (maximum m, sum s of exp(x - m)) into the first.
template <typename T>
__device__ __forceinline__ void lse_merge(T& m, T& s, T m_other, T s_other) {
    const T top = m > m_other ? m : m_other;
    s = s * gpuconv_exp_below(m, top) + s_other * gpuconv_exp_below(m_other, top);
    m = top;
}

template <typename T>
struct RowStats {
    T max;           // the largest logit of the row
    T sum_exp;       // sum_c exp(x[c] - max)
    T weighted_rel;  // sum_c w[c] * (x[c] - r), r the row's first logit
    T weight_sum;    // sum_c w[c]
};

// The statistics of one row, read once. Each lane starts its maximum at r (a logit of the
// row) with an empty sum, so no infinity is needed and idle lanes merge as zeros.
template <typename T, int LANES>
__device__ RowStats<T> row_stats(const T* __restrict__ row, long long S, int C,
                                 const T* __restrict__ weight, int lane) {
    const T r = row[0];
    RowStats<T> st = {r, T(0), T(0), T(0)};
    for (int c = lane; c < C; c += LANES) {
        const T v = row[c * S];
        if (v > st.max) {
            st.sum_exp = st.sum_exp * gpuconv_exp_below(st.max, v) + T(1);
            st.max = v;
        } else {
            st.sum_exp += gpuconv_exp_below(v, st.max);
        }
        const T w = class_weight(weight, c);
        st.weighted_rel += w * (v - r);
        st.weight_sum += w;
    }
    for (int offset = LANES / 2; offset > 0; offset >>= 1) {
        const T m_other = __shfl_xor_sync(FULL_WARP_MASK, st.max, offset);
        const T s_other = __shfl_xor_sync(FULL_WARP_MASK, st.sum_exp, offset);
        lse_merge(st.max, st.sum_exp, m_other, s_other);
    }
    st.weighted_rel = lanes_sum<T, LANES>(st.weighted_rel);
    st.weight_sum = lanes_sum<T, LANES>(st.weight_sum);
    return st;
}

// Rows are handed out LANES threads at a time with a 64-bit grid-stride loop. With
// LANES == 32 and blockDim.x a multiple of 32 a warp's lanes always share a row, so the
// shuffles see the whole warp; with LANES == 1 there are no shuffles.
#define ROW_LOOP(row, rows, LANES)                                                          \
    for (long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / (LANES);     \
         row < (rows); row += ((long long)gridDim.x * blockDim.x) / (LANES))

template <typename T, int LANES>
__device__ void cross_entropy_fwd(const T* __restrict__ x, const long long* __restrict__ target,
                                  const T* __restrict__ weight, long long ignore_index, T eps,
                                  T* __restrict__ losses, long long* error, int N, int C,
                                  long long S) {
    static_assert(LANES == 1 || LANES == WARP_LANES, "a row belongs to a thread or a warp");
    const int lane = threadIdx.x % LANES;
    ROW_LOOP(m, (long long)N * S, LANES) {
        const long long t = target[m];
        if (!counted_target(t, C, ignore_index, error, lane == 0)) {
            if (lane == 0) losses[m] = T(0);
            continue;
        }
        const T* row = x + (m / S) * C * S + m % S;
        const RowStats<T> st = row_stats<T, LANES>(row, S, C, weight, lane);
        if (lane != 0) continue;
        const T log_sum = log(st.sum_exp);
        const T nll = class_weight(weight, t) * ((st.max - row[t * S]) + log_sum);
        const T smooth = st.weight_sum * ((st.max - row[0]) + log_sum) - st.weighted_rel;
        // eps == 0: nll alone, as torch (a -inf logit makes smooth infinite, 0 * inf NaN).
        losses[m] = eps == T(0) ? nll : (T(1) - eps) * nll + eps / T(C) * smooth;
    }
}

template <typename T, int LANES>
__device__ void cross_entropy_bwd(const T* __restrict__ grad_output, long long g_stride,
                                  const T* __restrict__ total_weight, const T* __restrict__ x,
                                  const long long* __restrict__ target,
                                  const T* __restrict__ weight, long long ignore_index, T eps,
                                  T* __restrict__ grad_x, long long* error, int N, int C,
                                  long long S) {
    static_assert(LANES == 1 || LANES == WARP_LANES, "a row belongs to a thread or a warp");
    const int lane = threadIdx.x % LANES;
    ROW_LOOP(m, (long long)N * S, LANES) {
        const long long offset = (m / S) * C * S + m % S;
        T* grad_row = grad_x + offset;
        const long long t = target[m];
        if (!counted_target(t, C, ignore_index, error, lane == 0)) {
            for (int c = lane; c < C; c += LANES) grad_row[c * S] = T(0);
            continue;
        }
        const T* row = x + offset;
        const RowStats<T> st = row_stats<T, LANES>(row, S, C, weight, lane);
        const T g = row_grad(grad_output, g_stride, total_weight, m);
        const T nll_part = (T(1) - eps) * class_weight(weight, t);
        const T smooth_part = eps / T(C);
        for (int c = lane; c < C; c += LANES) {
            const T p = exp(row[c * S] - st.max) / st.sum_exp;
            const T onehot = c == t ? T(1) : T(0);
            grad_row[c * S] = g * (nll_part * (p - onehot) +
                                   smooth_part * (st.weight_sum * p - class_weight(weight, c)));
        }
    }
}

template <typename T>
__device__ void nll_loss_fwd_rows(const T* __restrict__ x, const long long* __restrict__ target,
                                  const T* __restrict__ weight, long long ignore_index,
                                  T* __restrict__ losses, long long* error, int N, int C,
                                  long long S) {
    GPUCONV_GRID_STRIDE_LOOP(m, (long long)N * S) {
        const long long t = target[m];
        losses[m] = counted_target(t, C, ignore_index, error, true)
                        ? -class_weight(weight, t) * x[(m / S) * C * S + t * S + m % S]
                        : T(0);
    }
}

template <typename T>
__device__ void nll_loss_bwd_pointwise(const T* __restrict__ grad_output, long long g_stride,
                                       const T* __restrict__ total_weight,
                                       const long long* __restrict__ target,
                                       const T* __restrict__ weight, long long ignore_index,
                                       T* __restrict__ grad_x, long long* error, int N, int C,
                                       long long S) {
    GPUCONV_GRID_STRIDE_LOOP(i, (long long)N * C * S) {
        const long long s = i % S;
        const long long c = (i / S) % C;
        const long long m = (i / (S * C)) * S + s;
        const long long t = target[m];
        grad_x[i] = (counted_target(t, C, ignore_index, error, c == 0) && c == t)
                        ? -row_grad(grad_output, g_stride, total_weight, m) *
                              class_weight(weight, t)
                        : T(0);
    }
}

// Sum of w[t] over the counted rows, returned to every thread of the block; a zero sum
// (the divisor of "mean") is reported in `error`.
template <typename T>
__device__ T total_target_weight(const long long* __restrict__ target,
                                 const T* __restrict__ weight, long long ignore_index, int C,
                                 long long rows, long long* error) {
    T acc = T(0);
    for (long long m = threadIdx.x; m < rows; m += blockDim.x)
        acc += target_weight(target, weight, ignore_index, C, m);
    const T total = gpuconv_block_sum(acc);
    if (total == T(0) && threadIdx.x == 0) gpuconv_report_error(error, 0, C, ignore_index);
    return total;
}

template <typename T>
__device__ void class_loss_fwd_reduce(const T* __restrict__ losses,
                                      const long long* __restrict__ target,
                                      const T* __restrict__ weight, long long ignore_index,
                                      long long rows, int divide_by_weight, T* __restrict__ out,
                                      long long* error, int C) {
    T acc = T(0);
    for (long long m = threadIdx.x; m < rows; m += blockDim.x) acc += losses[m];
    const T total = gpuconv_block_sum(acc);
    if (divide_by_weight) {
        const T total_weight = total_target_weight(target, weight, ignore_index, C, rows, error);
        if (threadIdx.x == 0) out[0] = total / total_weight;
    } else if (threadIdx.x == 0) {
        out[0] = total;
    }
}

template <typename T>
__device__ void class_loss_bwd_total_weight(const long long* __restrict__ target,
                                            const T* __restrict__ weight, long long ignore_index,
                                            long long rows, T* __restrict__ out,
                                            long long* error, int C) {
    const T total_weight = total_target_weight(target, weight, ignore_index, C, rows, error);
    if (threadIdx.x == 0) out[0] = total_weight;
}

template <typename T>
__device__ void classification_stats(const T* __restrict__ loss, const T* __restrict__ scores,
                                     const long long* __restrict__ target, int N, int C,
                                     long long S, double* __restrict__ stats) {
    double correct = 0.0;
    for (long long m = threadIdx.x; m < (long long)N * S; m += blockDim.x) {
        const T* row = scores + (m / S) * C * S + m % S;
        int best = 0;
        T top = row[0];
        for (int c = 1; c < C && top == top; ++c) {
            const T v = row[c * S];
            if (v > top || v != v) {
                top = v;
                best = c;
            }
        }
        correct += target[m] == best ? 1.0 : 0.0;
    }
    const double total = gpuconv_block_sum(correct);
    if (threadIdx.x == 0) {
        stats[0] += (double)loss[0] * N;
        stats[1] += total;
    }
}

#define CLASS_SHAPE_PARAMS long long *error, int N, int C, long long S
#define CLASS_SHAPE_ARGS error, N, C, S
#define ROW_GRAD_PARAMS(T) const T *grad_output, long long g_stride, const T *total_weight
#define ROW_GRAD_ARGS grad_output, g_stride, total_weight

#define CROSS_ENTROPY_ENTRY_POINTS(T, SUFFIX, VARIANT, LANES)                                \
    extern "C" __global__ void cross_entropy_fwd_##VARIANT##_##SUFFIX(                       \
        const T* x, const long long* target, const T* weight, long long ignore_index, T eps, \
        T* losses, CLASS_SHAPE_PARAMS) {                                                     \
        cross_entropy_fwd<T, LANES>(x, target, weight, ignore_index, eps, losses,            \
                                    CLASS_SHAPE_ARGS);                                       \
    }                                                                                        \
    extern "C" __global__ void cross_entropy_bwd_##VARIANT##_##SUFFIX(                       \
        ROW_GRAD_PARAMS(T), const T* x, const long long* target, const T* weight,            \
        long long ignore_index, T eps, T* grad_x, CLASS_SHAPE_PARAMS) {                      \
        cross_entropy_bwd<T, LANES>(ROW_GRAD_ARGS, x, target, weight, ignore_index, eps,     \
                                    grad_x, CLASS_SHAPE_ARGS);                               \
    }

#define LOSS_ENTRY_POINTS(T, SUFFIX)                                                         \
    CROSS_ENTROPY_ENTRY_POINTS(T, SUFFIX, warp, WARP_LANES)                                  \
    CROSS_ENTROPY_ENTRY_POINTS(T, SUFFIX, thread, 1)                                         \
    extern "C" __global__ void nll_loss_fwd_rows_##SUFFIX(                                   \
        const T* x, const long long* target, const T* weight, long long ignore_index,        \
        T* losses, CLASS_SHAPE_PARAMS) {                                                     \
        nll_loss_fwd_rows<T>(x, target, weight, ignore_index, losses, CLASS_SHAPE_ARGS);     \
    }                                                                                        \
    extern "C" __global__ void nll_loss_bwd_pointwise_##SUFFIX(                              \
        ROW_GRAD_PARAMS(T), const long long* target, const T* weight,                        \
        long long ignore_index, T* grad_x, CLASS_SHAPE_PARAMS) {                             \
        nll_loss_bwd_pointwise<T>(ROW_GRAD_ARGS, target, weight, ignore_index, grad_x,       \
                                  CLASS_SHAPE_ARGS);                                         \
    }                                                                                        \
    extern "C" __global__ void class_loss_fwd_reduce_##SUFFIX(                               \
        const T* losses, const long long* target, const T* weight, long long ignore_index,   \
        long long rows, int divide_by_weight, T* out, long long* error, int C) {             \
        class_loss_fwd_reduce<T>(losses, target, weight, ignore_index, rows,                 \
                                 divide_by_weight, out, error, C);                           \
    }                                                                                        \
    extern "C" __global__ void class_loss_bwd_total_weight_##SUFFIX(                         \
        const long long* target, const T* weight, long long ignore_index, long long rows,    \
        T* out, long long* error, int C) {                                                   \
        class_loss_bwd_total_weight<T>(target, weight, ignore_index, rows, out, error, C);   \
    }

#define STATS_ENTRY_POINTS(T, SUFFIX)                                                        \
    extern "C" __global__ void classification_stats_##SUFFIX(                                \
        const T* loss, const T* scores, const long long* target, int N, int C, long long S,  \
        double* stats) {                                                                     \
        classification_stats<T>(loss, scores, target, N, C, S, stats);                       \
    }

STATS_ENTRY_POINTS(float, f32)
STATS_ENTRY_POINTS(double, f64)
LOSS_ENTRY_POINTS(float, f32)
LOSS_ENTRY_POINTS(double, f64)
