// optim.cu: fused optimizer updates, one launch per parameter and step, for float (_f32)
// and double (_f64).
//
//   sgd_step       SGD with momentum, dampening, Nesterov momentum
//   adam_step      Adam, AdamW (decoupled weight decay), amsgrad
//   rmsprop_step   RMSprop, centred and/or with momentum
//   adagrad_step   Adagrad (the decayed learning rate comes from the host)
//   adadelta_step  Adadelta
//
// Every kernel also takes weight_decay and l1: the gradient becomes
// g = grad + weight_decay * w + l1 * sign(w) before the update.
//
// Mapping: thread = element i of the flattened parameter, in a 64-bit grid-stride loop. It
// reads param[i], grad[i] and its state elements once, computes the whole update in
// registers and writes param[i] and the state once: no temporaries, no shared memory, no
// atomics, each element independent of the others. A state pointer that is null means the
// option that needs it is off (no momentum, no amsgrad, not centred).
//
// Arithmetic follows gpuconv/kernels/reference/optim.py operation for operation (which is
// torch.optim's order). Hyperparameters arrive as double; a coefficient derived from them
// (1 - beta2, lr / bias_correction1, ...) is computed in double and rounded to T once per
// thread, as NumPy rounds a Python float that meets a float32 array. Computing 1 - beta2 in
// float instead would cost about 1e-5 relative error in float32 for beta2 = 0.999.
// Scalars that depend on the step count (bias corrections, Adagrad's decayed learning rate)
// are computed on the host.
//
// All arrays are contiguous, of n elements; n is 64-bit.
#include "common.cuh"

// grad + weight_decay * w + l1 * sign(w); a zero coefficient adds nothing (as in NumPy,
// where a zero coefficient skips its term).
template <typename T>
__device__ __forceinline__ T regularised_grad(T grad, T w, T weight_decay, T l1) {
    T g = grad;
    if (weight_decay != T(0)) g = w * weight_decay + g;
    if (l1 != T(0)) g = g + (w > T(0) ? l1 : (w < T(0) ? -l1 : T(0)));
    return g;
}

template <typename T>
__device__ void sgd_step(T* __restrict__ param, const T* __restrict__ grad,
                         T* __restrict__ momentum_buffer, long long n, double lr,
                         double momentum, double dampening, double weight_decay, double l1,
                         int nesterov, int first_step) {
    const T lr_t = T(lr), momentum_t = T(momentum), keep = T(1.0 - dampening);
    const T decay = T(weight_decay), l1_t = T(l1);
    GPUCONV_GRID_STRIDE_LOOP(i, n) {
        const T w = param[i];
        T g = regularised_grad(grad[i], w, decay, l1_t);
        if (momentum_buffer != nullptr) {
            const T b = first_step ? g : momentum_buffer[i] * momentum_t + keep * g;
            momentum_buffer[i] = b;
            g = nesterov ? g + momentum_t * b : b;
        }
        param[i] = w - lr_t * g;
    }
}

template <typename T>
__device__ void adam_step(T* __restrict__ param, const T* __restrict__ grad,
                          T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                          T* __restrict__ max_exp_avg_sq, long long n, double lr, double beta1,
                          double beta2, double eps, double weight_decay, double l1,
                          double bias_correction1, double bias_correction2,
                          int decoupled_weight_decay) {
    // AdamW shrinks the weight itself; Adam adds weight_decay * w to the gradient.
    const T coupled_decay = T(decoupled_weight_decay ? 0.0 : weight_decay);
    const T shrink = T(decoupled_weight_decay ? 1.0 - lr * weight_decay : 1.0);
    const T one_minus_beta1 = T(1.0 - beta1), beta2_t = T(beta2), one_minus_beta2 = T(1.0 - beta2);
    const T bias_correction2_sqrt = T(sqrt(bias_correction2));
    const T step_size = T(lr / bias_correction1), eps_t = T(eps), l1_t = T(l1);
    GPUCONV_GRID_STRIDE_LOOP(i, n) {
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, coupled_decay, l1_t);
        T m = exp_avg[i];
        m = m + (g - m) * one_minus_beta1;
        const T v = exp_avg_sq[i] * beta2_t + g * g * one_minus_beta2;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        T second = v;
        if (max_exp_avg_sq != nullptr) {
            const T previous = max_exp_avg_sq[i];
            second = previous > v ? previous : v;
            max_exp_avg_sq[i] = second;
        }
        const T denom = sqrt(second) / bias_correction2_sqrt + eps_t;
        param[i] = w * shrink - m / denom * step_size;
    }
}

template <typename T>
__device__ void rmsprop_step(T* __restrict__ param, const T* __restrict__ grad,
                             T* __restrict__ square_avg, T* __restrict__ grad_avg,
                             T* __restrict__ momentum_buffer, long long n, double lr,
                             double alpha, double eps, double weight_decay, double momentum,
                             double l1) {
    const T lr_t = T(lr), alpha_t = T(alpha), one_minus_alpha = T(1.0 - alpha), eps_t = T(eps);
    const T decay = T(weight_decay), momentum_t = T(momentum), l1_t = T(l1);
    GPUCONV_GRID_STRIDE_LOOP(i, n) {
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, decay, l1_t);
        const T v = square_avg[i] * alpha_t + g * g * one_minus_alpha;
        square_avg[i] = v;
        T variance = v;
        if (grad_avg != nullptr) {
            T m = grad_avg[i];
            m = m + (g - m) * one_minus_alpha;
            grad_avg[i] = m;
            variance = v - m * m;
        }
        T direction = g / (sqrt(variance) + eps_t);
        if (momentum_buffer != nullptr) {
            direction = momentum_buffer[i] * momentum_t + direction;
            momentum_buffer[i] = direction;
        }
        param[i] = w - lr_t * direction;
    }
}

template <typename T>
__device__ void adagrad_step(T* __restrict__ param, const T* __restrict__ grad,
                             T* __restrict__ state_sum, long long n, double clr, double eps,
                             double weight_decay, double l1) {
    const T clr_t = T(clr), eps_t = T(eps), decay = T(weight_decay), l1_t = T(l1);
    GPUCONV_GRID_STRIDE_LOOP(i, n) {
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, decay, l1_t);
        const T s = state_sum[i] + g * g;
        state_sum[i] = s;
        param[i] = w - g / (sqrt(s) + eps_t) * clr_t;
    }
}

template <typename T>
__device__ void adadelta_step(T* __restrict__ param, const T* __restrict__ grad,
                              T* __restrict__ square_avg, T* __restrict__ acc_delta,
                              long long n, double lr, double rho, double eps,
                              double weight_decay, double l1) {
    const T lr_t = T(lr), rho_t = T(rho), one_minus_rho = T(1.0 - rho), eps_t = T(eps);
    const T decay = T(weight_decay), l1_t = T(l1);
    GPUCONV_GRID_STRIDE_LOOP(i, n) {
        const T w = param[i];
        const T g = regularised_grad(grad[i], w, decay, l1_t);
        const T v = square_avg[i] * rho_t + g * g * one_minus_rho;
        square_avg[i] = v;
        const T u = acc_delta[i];
        const T delta = sqrt(u + eps_t) / sqrt(v + eps_t) * g;
        acc_delta[i] = u * rho_t + delta * delta * one_minus_rho;
        param[i] = w - delta * lr_t;
    }
}

#define OPTIM_ENTRY_POINTS(T, SUFFIX)                                                          \
    extern "C" __global__ void sgd_step_##SUFFIX(T* param, const T* grad, T* momentum_buffer,  \
                                                 long long n, double lr, double momentum,     \
                                                 double dampening, double weight_decay,       \
                                                 double l1, int nesterov, int first_step) {   \
        sgd_step<T>(param, grad, momentum_buffer, n, lr, momentum, dampening, weight_decay,    \
                    l1, nesterov, first_step);                                                 \
    }                                                                                          \
    extern "C" __global__ void adam_step_##SUFFIX(                                             \
        T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, long long n,    \
        double lr, double beta1, double beta2, double eps, double weight_decay, double l1,     \
        double bias_correction1, double bias_correction2, int decoupled_weight_decay) {       \
        adam_step<T>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, lr, beta1, beta2,    \
                     eps, weight_decay, l1, bias_correction1, bias_correction2,                \
                     decoupled_weight_decay);                                                  \
    }                                                                                          \
    extern "C" __global__ void rmsprop_step_##SUFFIX(                                          \
        T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buffer, long long n,  \
        double lr, double alpha, double eps, double weight_decay, double momentum,             \
        double l1) {                                                                           \
        rmsprop_step<T>(param, grad, square_avg, grad_avg, momentum_buffer, n, lr, alpha, eps, \
                        weight_decay, momentum, l1);                                           \
    }                                                                                          \
    extern "C" __global__ void adagrad_step_##SUFFIX(T* param, const T* grad, T* state_sum,    \
                                                     long long n, double clr, double eps,     \
                                                     double weight_decay, double l1) {        \
        adagrad_step<T>(param, grad, state_sum, n, clr, eps, weight_decay, l1);                \
    }                                                                                          \
    extern "C" __global__ void adadelta_step_##SUFFIX(T* param, const T* grad, T* square_avg,  \
                                                      T* acc_delta, long long n, double lr,   \
                                                      double rho, double eps,                 \
                                                      double weight_decay, double l1) {       \
        adadelta_step<T>(param, grad, square_avg, acc_delta, n, lr, rho, eps, weight_decay,    \
                         l1);                                                                  \
    }

OPTIM_ENTRY_POINTS(float, f32)
OPTIM_ENTRY_POINTS(double, f64)
