// optim.cu: fused optimizer updates for float (_f32) and double (_f64), one parameter per
// launch or every parameter of a dtype in one launch (multi-tensor), and gradient clipping
// by the global norm.
//
//   sgd_step       SGD with momentum, dampening, Nesterov momentum
//   adam_step      Adam, AdamW (decoupled weight decay), amsgrad
//   rmsprop_step   RMSprop, centred and/or with momentum
//   adagrad_step   Adagrad (the decayed learning rate comes from the host)
//   adadelta_step  Adadelta
//
// Every update also takes weight_decay and l1: the gradient becomes
// g = grad + weight_decay * w + l1 * sign(w) before the update.
//
// One parameter per launch (<name>_step_<sfx>): thread = element i of the flattened
// parameter, in a 64-bit grid-stride loop. It reads param[i], grad[i] and its state
// elements once, computes the whole update in registers and writes param[i] and the state
// once: no temporaries, no shared memory, no atomics, each element independent of the
// others. A state pointer that is null means the option that needs it is off (no momentum,
// no amsgrad, not centred).
//
// Arithmetic follows gpuconv/kernels/reference/optim.py operation for operation (which is
// torch.optim's order). Hyperparameters arrive as double; a coefficient derived from them
// (1 - beta2, lr / bias_correction1, ...) is computed in double and rounded to T once per
// thread, as NumPy rounds a Python float that meets a float32 array. Computing 1 - beta2 in
// float instead would cost about 1e-5 relative error in float32 for beta2 = 0.999.
// Scalars that depend on the step count (bias corrections, Adagrad's decayed learning rate)
// are computed on the host for these kernels. Each update is a struct (SgdUpdate, ...) built
// from the hyperparameters, whose operator() updates element i; the multi-tensor kernels
// use the same structs, so both paths compute the same bits from the same doubles.
//
// Multi-tensor (<name>_multi_step_<sfx>): one launch updates every parameter of one dtype
// of an optimizer, so that a step costs one launch instead of one per parameter. The host
// describes the parameters in a table of int64 in device memory, MT_FIELDS rows of `count`
// columns (row f, tensor t at table[f * count + t]): device addresses of the parameter, its
// gradient and up to three state buffers (0 = none), its size, the index of its first
// chunk, its parameter group and its index in the optimizer (both rows of per-optimizer
// device arrays), and flags. Each tensor is cut into chunks of MT_CHUNK_ELEMENTS; block b
// takes chunks b, b + gridDim.x, ... and finds a chunk's tensor by binary search in the
// first-chunk row; the block's threads stride through the chunk. Hyperparameters are read
// from the device (`hyper`, MT_HYPER doubles per group, the learning rate first), and so
// is each parameter's step count (`steps`, int64): a CUDA graph that replays the launch
// sees a learning rate set since the capture and a step count that moves on. The step a
// launch applies is steps[i] + 1; the last block to finish (an atomic ticket after a fence,
// so every block has read the old counts) advances every count by one and resets the
// ticket for the next launch. The arithmetic is the structs' above; only the step-dependent
// scalars are computed here, in double, from the step count.
//
// Clipping by the global norm (multi_tensor_norm_partial, multi_tensor_clip_scale): the
// first kernel accumulates in double, per block, the sum of |g|^p (or the largest |g| for
// the inf-norm) over the table's gradients into partial[offset + b]; one launch per dtype
// writes its own slots. The second kernel, over the same tables, reduces all the partials
// in a fixed order in every block (so the result does not depend on scheduling: the same
// bits on every run), takes total = (sum)^(1/p), and scales each gradient by
// max_norm / (total + 1e-6) rounded to T when that is below 1 (or NaN); block 0 writes the
// total to `total`. The norm never leaves the device.
//
// All arrays are contiguous; element counts are 64-bit.
#include "common.cuh"

// Multi-tensor table rows (gpuconv/optim/_multi_tensor.py writes the same layout).
#define MT_PARAM 0
#define MT_GRAD 1
#define MT_STATE0 2
#define MT_STATE1 3
#define MT_STATE2 4
#define MT_SIZE 5
#define MT_FIRST_CHUNK 6
#define MT_GROUP 7
#define MT_INDEX 8
#define MT_FLAGS 9
#define MT_FIELDS 10
// Elements of one chunk: 32 per thread of a 256-thread block.
#define MT_CHUNK_ELEMENTS 8192
// Doubles of hyperparameters per parameter group.
#define MT_HYPER 8
// Flag bits.
#define MT_FLAG_FIRST_STEP 1
// Norm kinds of the clipping kernels.
#define NORM_INF 0
#define NORM_P 1

// grad + weight_decay * w + l1 * sign(w); a zero coefficient adds nothing (as in NumPy,
// where a zero coefficient skips its term).
template <typename T>
__device__ __forceinline__ T regularised_grad(T grad, T w, T weight_decay, T l1) {
    T g = grad;
    if (weight_decay != T(0)) g = w * weight_decay + g;
    if (l1 != T(0)) g = g + (w > T(0) ? l1 : (w < T(0) ? -l1 : T(0)));
    return g;
}

// ---------------------------------------------------------------------------- updates

// The arrays of one parameter: the parameter, its gradient and up to three state buffers
// (null when unused), each update struct's operator() naming them as it uses them.
template <typename T>
struct Tensors {
    T* __restrict__ param;
    const T* __restrict__ grad;
    T* __restrict__ state0;
    T* __restrict__ state1;
    T* __restrict__ state2;
};

template <typename T>
struct SgdUpdate {
    T lr, momentum, keep, decay, l1;
    bool nesterov;
    __device__ SgdUpdate(double lr_, double momentum_, double dampening, double weight_decay,
                         double l1_, bool nesterov_)
        : lr(T(lr_)), momentum(T(momentum_)), keep(T(1.0 - dampening)), decay(T(weight_decay)),
          l1(T(l1_)), nesterov(nesterov_) {}
    // state0: the momentum buffer; flags bit MT_FLAG_FIRST_STEP: it is filled, not read.
    __device__ void operator()(const Tensors<T>& a, long long i, long long flags) const {
        T* __restrict__ param = a.param;
        T* __restrict__ momentum_buffer = a.state0;
        const bool first_step = (flags & MT_FLAG_FIRST_STEP) != 0;
        const T w = param[i];
        T g = regularised_grad(a.grad[i], w, decay, l1);
        if (momentum_buffer != nullptr) {
            const T b = first_step ? g : momentum_buffer[i] * momentum + keep * g;
            momentum_buffer[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] = w - lr * g;
    }
};

template <typename T>
struct AdamUpdate {
    T coupled_decay, shrink, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt,
        step_size, eps, l1;
    // AdamW shrinks the weight itself; Adam adds weight_decay * w to the gradient.
    __device__ AdamUpdate(double lr, double beta1, double beta2_, double eps_,
                          double weight_decay, double l1_, double bias_correction1,
                          double bias_correction2, bool decoupled_weight_decay)
        : coupled_decay(T(decoupled_weight_decay ? 0.0 : weight_decay)),
          shrink(T(decoupled_weight_decay ? 1.0 - lr * weight_decay : 1.0)),
          one_minus_beta1(T(1.0 - beta1)), beta2(T(beta2_)), one_minus_beta2(T(1.0 - beta2_)),
          bias_correction2_sqrt(T(sqrt(bias_correction2))),
          step_size(T(lr / bias_correction1)), eps(T(eps_)), l1(T(l1_)) {}
    // state0..2: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad).
    __device__ void operator()(const Tensors<T>& a, long long i, long long) const {
        T* __restrict__ param = a.param;
        const T* __restrict__ grad = a.grad;
        T *__restrict__ exp_avg = a.state0, *__restrict__ exp_avg_sq = a.state1;
        T* __restrict__ max_exp_avg_sq = a.state2;
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, coupled_decay, l1);
        T m = exp_avg[i];
        m = m + (g - m) * one_minus_beta1;
        const T v = exp_avg_sq[i] * beta2 + g * g * one_minus_beta2;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        T second = v;
        if (max_exp_avg_sq != nullptr) {
            const T previous = max_exp_avg_sq[i];
            second = previous > v ? previous : v;
            max_exp_avg_sq[i] = second;
        }
        const T denom = sqrt(second) / bias_correction2_sqrt + eps;
        param[i] = w * shrink - m / denom * step_size;
    }
};

template <typename T>
struct RmspropUpdate {
    T lr, alpha, one_minus_alpha, eps, decay, momentum, l1;
    __device__ RmspropUpdate(double lr_, double alpha_, double eps_, double weight_decay,
                             double momentum_, double l1_)
        : lr(T(lr_)), alpha(T(alpha_)), one_minus_alpha(T(1.0 - alpha_)), eps(T(eps_)),
          decay(T(weight_decay)), momentum(T(momentum_)), l1(T(l1_)) {}
    // state0..2: square_avg, grad_avg (centred), momentum_buffer.
    __device__ void operator()(const Tensors<T>& a, long long i, long long) const {
        T* __restrict__ param = a.param;
        const T* __restrict__ grad = a.grad;
        T *__restrict__ square_avg = a.state0, *__restrict__ grad_avg = a.state1;
        T* __restrict__ momentum_buffer = a.state2;
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, decay, l1);
        const T v = square_avg[i] * alpha + g * g * one_minus_alpha;
        square_avg[i] = v;
        T variance = v;
        if (grad_avg != nullptr) {
            T m = grad_avg[i];
            m = m + (g - m) * one_minus_alpha;
            grad_avg[i] = m;
            variance = v - m * m;
        }
        T direction = g / (sqrt(variance) + eps);
        if (momentum_buffer != nullptr) {
            direction = momentum_buffer[i] * momentum + direction;
            momentum_buffer[i] = direction;
        }
        param[i] = w - lr * direction;
    }
};

template <typename T>
struct AdagradUpdate {
    T clr, eps, decay, l1;
    __device__ AdagradUpdate(double clr_, double eps_, double weight_decay, double l1_)
        : clr(T(clr_)), eps(T(eps_)), decay(T(weight_decay)), l1(T(l1_)) {}
    // state0: the running sum of squares.
    __device__ void operator()(const Tensors<T>& a, long long i, long long) const {
        T* __restrict__ param = a.param;
        const T* __restrict__ grad = a.grad;
        T* __restrict__ state_sum = a.state0;
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, decay, l1);
        const T s = state_sum[i] + g * g;
        state_sum[i] = s;
        param[i] = w - g / (sqrt(s) + eps) * clr;
    }
};

template <typename T>
struct AdadeltaUpdate {
    T lr, rho, one_minus_rho, eps, decay, l1;
    __device__ AdadeltaUpdate(double lr_, double rho_, double eps_, double weight_decay,
                              double l1_)
        : lr(T(lr_)), rho(T(rho_)), one_minus_rho(T(1.0 - rho_)), eps(T(eps_)),
          decay(T(weight_decay)), l1(T(l1_)) {}
    // state0, state1: square_avg, acc_delta.
    __device__ void operator()(const Tensors<T>& a, long long i, long long) const {
        T* __restrict__ param = a.param;
        const T* __restrict__ grad = a.grad;
        T *__restrict__ square_avg = a.state0, *__restrict__ acc_delta = a.state1;
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, decay, l1);
        const T v = square_avg[i] * rho + g * g * one_minus_rho;
        square_avg[i] = v;
        const T u = acc_delta[i];
        const T delta = sqrt(u + eps) / sqrt(v + eps) * g;
        acc_delta[i] = u * rho + delta * delta * one_minus_rho;
        param[i] = w - delta * lr;
    }
};

// ---------------------------------------------------------------------------- multi-tensor

// One chunk of one tensor of the table, as a block sees it.
struct Chunk {
    int tensor;
    long long begin, end;  // element range inside the tensor
};

__device__ __forceinline__ long long table_at(const long long* table, int count, int field,
                                              int t) {
    return table[(long long)field * count + t];
}

template <typename T>
__device__ __forceinline__ T* table_pointer(const long long* table, int count, int field,
                                            int t) {
    return reinterpret_cast<T*>(table_at(table, count, field, t));
}

// The tensor that holds chunk c: the last t with first_chunk[t] <= c (first_chunk ascends).
__device__ Chunk chunk_of(const long long* table, int count, long long c) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (table_at(table, count, MT_FIRST_CHUNK, mid) <= c) lo = mid; else hi = mid - 1;
    }
    const long long begin =
        (c - table_at(table, count, MT_FIRST_CHUNK, lo)) * (long long)MT_CHUNK_ELEMENTS;
    const long long size = table_at(table, count, MT_SIZE, lo);
    return Chunk{lo, begin, min(begin + (long long)MT_CHUNK_ELEMENTS, size)};
}

// Runs chunk(Chunk) for every chunk of the table that belongs to this block.
template <typename F>
__device__ void for_each_chunk(const long long* table, int count, long long chunks, F chunk) {
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) chunk(chunk_of(table, count, c));
}

// After every block has read the step counts, the last block to get here advances them.
__device__ void advance_steps_after_last_block(const long long* table, int count,
                                               long long* steps, unsigned int* ticket) {
    __shared__ bool last;
    __syncthreads();  // this block is done reading steps
    if (threadIdx.x == 0) {
        __threadfence();
        last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    for (int t = threadIdx.x; t < count; t += blockDim.x)
        steps[table_at(table, count, MT_INDEX, t)] += 1;
    if (threadIdx.x == 0) *ticket = 0u;
}

// The group's hyperparameters and the step this launch applies to tensor t.
struct TensorScalars {
    const double* hyper;
    long long step;
    long long flags;
};

__device__ __forceinline__ TensorScalars scalars_of(const long long* table, int count,
                                                    const double* hyper,
                                                    const long long* steps, int t) {
    return TensorScalars{hyper + table_at(table, count, MT_GROUP, t) * MT_HYPER,
                         steps[table_at(table, count, MT_INDEX, t)] + 1,
                         table_at(table, count, MT_FLAGS, t)};
}

template <typename T>
__device__ __forceinline__ Tensors<T> tensors_of(const long long* table, int count, int t) {
    return Tensors<T>{table_pointer<T>(table, count, MT_PARAM, t),
                      table_pointer<T>(table, count, MT_GRAD, t),
                      table_pointer<T>(table, count, MT_STATE0, t),
                      table_pointer<T>(table, count, MT_STATE1, t),
                      table_pointer<T>(table, count, MT_STATE2, t)};
}

#define MT_STEP_PARAMS                                                                      \
    const long long *table, int count, long long chunks, const double *hyper, long long *steps, \
        unsigned int *ticket
#define MT_STEP_ARGS table, count, chunks, hyper, steps, ticket

#define MT_ELEMENTS(i, c) for (long long i = (c).begin + threadIdx.x; i < (c).end; i += blockDim.x)

// The body of every <name>_multi_step: for each chunk, the update that
// make(hyperparameters, step) builds, applied to each element; then the step counts move on.
template <typename T, typename Make>
__device__ void multi_tensor_step(MT_STEP_PARAMS, Make make) {
    for_each_chunk(table, count, chunks, [&](const Chunk& c) {
        const TensorScalars s = scalars_of(table, count, hyper, steps, c.tensor);
        const auto update = make(s.hyper, s.step);
        const Tensors<T> arrays = tensors_of<T>(table, count, c.tensor);
        MT_ELEMENTS(i, c) update(arrays, i, s.flags);
    });
    advance_steps_after_last_block(table, count, steps, ticket);
}

// Each kernel's hyperparameter row (MT_HYPER doubles per group) is in its comment.

// lr, momentum, dampening, weight_decay, l1, nesterov.
template <typename T>
__device__ void sgd_multi_step(MT_STEP_PARAMS) {
    multi_tensor_step<T>(MT_STEP_ARGS, [](const double* h, long long) {
        return SgdUpdate<T>(h[0], h[1], h[2], h[3], h[4], h[5] != 0.0);
    });
}

// lr, beta1, beta2, eps, weight_decay, l1, decoupled_weight_decay; bias corrections from step.
template <typename T>
__device__ void adam_multi_step(MT_STEP_PARAMS) {
    multi_tensor_step<T>(MT_STEP_ARGS, [](const double* h, long long step) {
        return AdamUpdate<T>(h[0], h[1], h[2], h[3], h[4], h[5], 1.0 - pow(h[1], (double)step),
                             1.0 - pow(h[2], (double)step), h[6] != 0.0);
    });
}

// lr, alpha, eps, weight_decay, momentum, l1.
template <typename T>
__device__ void rmsprop_multi_step(MT_STEP_PARAMS) {
    multi_tensor_step<T>(MT_STEP_ARGS, [](const double* h, long long) {
        return RmspropUpdate<T>(h[0], h[1], h[2], h[3], h[4], h[5]);
    });
}

// lr, lr_decay, eps, weight_decay, l1; the decayed rate lr / (1 + (step - 1) * lr_decay).
template <typename T>
__device__ void adagrad_multi_step(MT_STEP_PARAMS) {
    multi_tensor_step<T>(MT_STEP_ARGS, [](const double* h, long long step) {
        return AdagradUpdate<T>(h[0] / (1.0 + (double)(step - 1) * h[1]), h[2], h[3], h[4]);
    });
}

// lr, rho, eps, weight_decay, l1.
template <typename T>
__device__ void adadelta_multi_step(MT_STEP_PARAMS) {
    multi_tensor_step<T>(MT_STEP_ARGS, [](const double* h, long long) {
        return AdadeltaUpdate<T>(h[0], h[1], h[2], h[3], h[4]);
    });
}

// ---------------------------------------------------------------------------- clipping

__device__ __forceinline__ double norm_term(double a, int kind, double p) {
    if (kind == NORM_INF) return a;
    return p == 2.0 ? a * a : (p == 1.0 ? a : pow(a, p));
}

// Two partial norms combined: the larger for the inf-norm (a NaN wins, as it would in a
// sum; NaN > x is false), else the sum.
__device__ __forceinline__ double norm_combine(double a, double b, int kind) {
    return kind == NORM_INF ? ((b > a || b != b) ? b : a) : a + b;
}

// norm_combine over the block (blockDim.x == GPUCONV_REDUCE_THREADS) in a fixed tree,
// returned to every thread.
__device__ double block_norm_combine(double value, int kind) {
    __shared__ double values[GPUCONV_REDUCE_THREADS];
    values[threadIdx.x] = value;
    __syncthreads();
    for (int half = GPUCONV_REDUCE_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            const double a = values[threadIdx.x], b = values[threadIdx.x + half];
            values[threadIdx.x] = norm_combine(a, b, kind);
        }
        __syncthreads();
    }
    const double result = values[0];
    __syncthreads();
    return result;
}

// Per block: the sum of |g|^p (or the largest |g|) over the block's chunks.
template <typename T>
__device__ void multi_tensor_norm_partial(const long long* table, int count, long long chunks,
                                          int kind, double p, double* partial,
                                          long long offset) {
    double acc = 0.0;
    for_each_chunk(table, count, chunks, [&](const Chunk& c) {
        const T* grad = table_pointer<T>(table, count, MT_GRAD, c.tensor);
        MT_ELEMENTS(i, c) acc = norm_combine(acc, norm_term(fabs((double)grad[i]), kind, p), kind);
    });
    const double block = block_norm_combine(acc, kind);
    if (threadIdx.x == 0) partial[offset + blockIdx.x] = block;
}

// The total norm from all partials (fixed order, in every block), then each gradient scaled.
template <typename T>
__device__ void multi_tensor_clip_scale(const long long* table, int count, long long chunks,
                                        const double* partial, long long partials, int kind,
                                        double p, double max_norm, double* total) {
    double acc = 0.0;
    for (long long j = threadIdx.x; j < partials; j += blockDim.x)
        acc = norm_combine(acc, partial[j], kind);
    const double combined = block_norm_combine(acc, kind);
    const double norm = kind == NORM_INF ? combined
                        : (p == 2.0 ? sqrt(combined) : pow(combined, 1.0 / p));
    if (blockIdx.x == 0 && threadIdx.x == 0) total[0] = norm;
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return;  // also scales by a NaN coefficient, as torch does
    const T scale = T(coef);
    for_each_chunk(table, count, chunks, [&](const Chunk& c) {
        T* grad = table_pointer<T>(table, count, MT_GRAD, c.tensor);
        MT_ELEMENTS(i, c) grad[i] = grad[i] * scale;
    });
}

// ---------------------------------------------------------------------------- entry points

#define OPTIM_ENTRY_POINTS(T, SUFFIX)                                                          \
    extern "C" __global__ void sgd_step_##SUFFIX(T* param, const T* grad, T* momentum_buffer,  \
                                                 long long n, double lr, double momentum,     \
                                                 double dampening, double weight_decay,       \
                                                 double l1, int nesterov, int first_step) {   \
        const SgdUpdate<T> update(lr, momentum, dampening, weight_decay, l1, nesterov != 0);   \
        const Tensors<T> a{param, grad, momentum_buffer, nullptr, nullptr};                    \
        GPUCONV_GRID_STRIDE_LOOP(i, n) update(a, i, first_step ? MT_FLAG_FIRST_STEP : 0);      \
    }                                                                                          \
    extern "C" __global__ void adam_step_##SUFFIX(                                             \
        T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, long long n,    \
        double lr, double beta1, double beta2, double eps, double weight_decay, double l1,     \
        double bias_correction1, double bias_correction2, int decoupled_weight_decay) {       \
        const AdamUpdate<T> update(lr, beta1, beta2, eps, weight_decay, l1, bias_correction1,  \
                                   bias_correction2, decoupled_weight_decay != 0);             \
        const Tensors<T> a{param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq};                  \
        GPUCONV_GRID_STRIDE_LOOP(i, n) update(a, i, 0);                                        \
    }                                                                                          \
    extern "C" __global__ void rmsprop_step_##SUFFIX(                                          \
        T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buffer, long long n,  \
        double lr, double alpha, double eps, double weight_decay, double momentum,             \
        double l1) {                                                                           \
        const RmspropUpdate<T> update(lr, alpha, eps, weight_decay, momentum, l1);             \
        const Tensors<T> a{param, grad, square_avg, grad_avg, momentum_buffer};                \
        GPUCONV_GRID_STRIDE_LOOP(i, n) update(a, i, 0);                                        \
    }                                                                                          \
    extern "C" __global__ void adagrad_step_##SUFFIX(T* param, const T* grad, T* state_sum,    \
                                                     long long n, double clr, double eps,     \
                                                     double weight_decay, double l1) {        \
        const AdagradUpdate<T> update(clr, eps, weight_decay, l1);                             \
        const Tensors<T> a{param, grad, state_sum, nullptr, nullptr};                          \
        GPUCONV_GRID_STRIDE_LOOP(i, n) update(a, i, 0);                                        \
    }                                                                                          \
    extern "C" __global__ void adadelta_step_##SUFFIX(T* param, const T* grad, T* square_avg,  \
                                                      T* acc_delta, long long n, double lr,   \
                                                      double rho, double eps,                 \
                                                      double weight_decay, double l1) {       \
        const AdadeltaUpdate<T> update(lr, rho, eps, weight_decay, l1);                        \
        const Tensors<T> a{param, grad, square_avg, acc_delta, nullptr};                       \
        GPUCONV_GRID_STRIDE_LOOP(i, n) update(a, i, 0);                                        \
    }                                                                                          \
    extern "C" __global__ void sgd_multi_step_##SUFFIX(MT_STEP_PARAMS) {                       \
        sgd_multi_step<T>(MT_STEP_ARGS);                                                       \
    }                                                                                          \
    extern "C" __global__ void adam_multi_step_##SUFFIX(MT_STEP_PARAMS) {                      \
        adam_multi_step<T>(MT_STEP_ARGS);                                                      \
    }                                                                                          \
    extern "C" __global__ void rmsprop_multi_step_##SUFFIX(MT_STEP_PARAMS) {                   \
        rmsprop_multi_step<T>(MT_STEP_ARGS);                                                   \
    }                                                                                          \
    extern "C" __global__ void adagrad_multi_step_##SUFFIX(MT_STEP_PARAMS) {                   \
        adagrad_multi_step<T>(MT_STEP_ARGS);                                                   \
    }                                                                                          \
    extern "C" __global__ void adadelta_multi_step_##SUFFIX(MT_STEP_PARAMS) {                  \
        adadelta_multi_step<T>(MT_STEP_ARGS);                                                  \
    }                                                                                          \
    extern "C" __global__ void multi_tensor_norm_partial_##SUFFIX(                             \
        const long long* table, int count, long long chunks, int kind, double p,               \
        double* partial, long long offset) {                                                   \
        multi_tensor_norm_partial<T>(table, count, chunks, kind, p, partial, offset);          \
    }                                                                                          \
    extern "C" __global__ void multi_tensor_clip_scale_##SUFFIX(                               \
        const long long* table, int count, long long chunks, const double* partial,            \
        long long partials, int kind, double p, double max_norm, double* total) {              \
        multi_tensor_clip_scale<T>(table, count, chunks, partial, partials, kind, p, max_norm, \
                                   total);                                                     \
    }

OPTIM_ENTRY_POINTS(float, f32)
OPTIM_ENTRY_POINTS(double, f64)
