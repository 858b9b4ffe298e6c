"""numba.cuda kernels for the optimizer updates (see gpuconv/kernels/numba_cuda/optim.py).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.

Each kernel walks the flattened parameter in a grid-stride loop; thread = element ``i``,
updated in registers and written once, state included. A state argument that is None means
the option that needs it is off; numba compiles that branch away. Hyperparameters arrive as
Python floats (float64): each coefficient is derived from them in float64 and rounded to the
parameter's dtype once (``T(...)``), so a float32 update is computed in float32, as in
``kernels/optim.cu`` and the NumPy reference.
"""
import math

from numba import cuda


@cuda.jit(device=True)
def _regularised_grad(grad, w, weight_decay, l1):
    """grad + weight_decay * w + l1 * sign(w); a zero coefficient adds nothing."""
    g = grad
    if weight_decay != 0:
        g = w * weight_decay + g
    if l1 != 0:
        if w > 0:
            g = g + l1
        elif w < 0:
            g = g - l1
    return g


@cuda.jit
def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, l1,
             nesterov, first_step):
    T = param.dtype.type
    lr_t, momentum_t, keep = T(lr), T(momentum), T(1.0 - dampening)
    decay, l1_t = T(weight_decay), T(l1)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, decay, l1_t)
        if momentum_buffer is not None:
            b = g if first_step else momentum_buffer[i] * momentum_t + keep * g
            momentum_buffer[i] = b
            g = g + momentum_t * b if nesterov else b
        param[i] = w - lr_t * g


@cuda.jit
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay):
    T = param.dtype.type
    # AdamW shrinks the weight itself; Adam adds weight_decay * w to the gradient.
    coupled_decay = T(0.0 if decoupled_weight_decay else weight_decay)
    shrink = T(1.0 - lr * weight_decay if decoupled_weight_decay else 1.0)
    one_minus_beta1, beta2_t, one_minus_beta2 = T(1.0 - beta1), T(beta2), T(1.0 - beta2)
    bias_correction2_sqrt = T(math.sqrt(bias_correction2))
    step_size, eps_t, l1_t = T(lr / bias_correction1), T(eps), T(l1)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, coupled_decay, l1_t)
        m = exp_avg[i]
        m = m + (g - m) * one_minus_beta1
        v = exp_avg_sq[i] * beta2_t + g * g * one_minus_beta2
        exp_avg[i] = m
        exp_avg_sq[i] = v
        second = v
        if max_exp_avg_sq is not None:
            previous = max_exp_avg_sq[i]
            second = previous if previous > v else v
            max_exp_avg_sq[i] = second
        denom = math.sqrt(second) / bias_correction2_sqrt + eps_t
        param[i] = w * shrink - m / denom * step_size


@cuda.jit
def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                 weight_decay, momentum, l1):
    T = param.dtype.type
    lr_t, alpha_t, one_minus_alpha, eps_t = T(lr), T(alpha), T(1.0 - alpha), T(eps)
    decay, momentum_t, l1_t = T(weight_decay), T(momentum), T(l1)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, decay, l1_t)
        v = square_avg[i] * alpha_t + g * g * one_minus_alpha
        square_avg[i] = v
        variance = v
        if grad_avg is not None:
            m = grad_avg[i]
            m = m + (g - m) * one_minus_alpha
            grad_avg[i] = m
            variance = v - m * m
        direction = g / (math.sqrt(variance) + eps_t)
        if momentum_buffer is not None:
            direction = momentum_buffer[i] * momentum_t + direction
            momentum_buffer[i] = direction
        param[i] = w - lr_t * direction


@cuda.jit
def adagrad_step(param, grad, state_sum, clr, eps, weight_decay, l1):
    T = param.dtype.type
    clr_t, eps_t, decay, l1_t = T(clr), T(eps), T(weight_decay), T(l1)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, decay, l1_t)
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] = w - g / (math.sqrt(s) + eps_t) * clr_t


@cuda.jit
def adadelta_step(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, l1):
    T = param.dtype.type
    lr_t, rho_t, one_minus_rho, eps_t = T(lr), T(rho), T(1.0 - rho), T(eps)
    decay, l1_t = T(weight_decay), T(l1)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, decay, l1_t)
        v = square_avg[i] * rho_t + g * g * one_minus_rho
        square_avg[i] = v
        u = acc_delta[i]
        delta = math.sqrt(u + eps_t) / math.sqrt(v + eps_t) * g
        acc_delta[i] = u * rho_t + delta * delta * one_minus_rho
        param[i] = w - delta * lr_t
