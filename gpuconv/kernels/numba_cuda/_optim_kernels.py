"""numba.cuda kernels for the optimizer updates (see gpuconv/kernels/numba_cuda/optim.py).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.

Each kernel walks the flattened parameter in a grid-stride loop; thread = element ``i``,
updated in registers and written once, state included. An optional state array comes with a
flag (``use_momentum``, ``amsgrad``, ``centered``): when the flag is off the array is an empty
stand-in that is never read. The launcher derives every coefficient from the
hyperparameters in float64 and rounds it to the parameter's dtype once, so the kernels
compute in the parameter's dtype only, as ``kernels/optim.cu`` and the NumPy reference do.
"""
import math

from ._numba import cuda


@cuda.jit(device=True)
def _regularised_grad(grad, w, weight_decay, l1, zero):
    """grad + weight_decay * w + l1 * sign(w); a zero coefficient adds nothing."""
    g = grad
    if weight_decay != zero:
        g = w * weight_decay + g
    if l1 != zero:
        if w > zero:
            g = g + l1
        elif w < zero:
            g = g - l1
    return g


@cuda.jit
def sgd_step(param, grad, momentum_buffer, use_momentum, lr, momentum, keep, weight_decay,
             l1, nesterov, first_step):
    """keep = 1 - dampening."""
    zero = param.dtype.type(0)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, weight_decay, l1, zero)
        if use_momentum:
            b = g if first_step else momentum_buffer[i] * momentum + keep * g
            momentum_buffer[i] = b
            g = g + momentum * b if nesterov else b
        param[i] = w - lr * g


@cuda.jit
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, coupled_decay, shrink,
              one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, step_size, eps,
              l1):
    """AdamW shrinks the weight (shrink = 1 - lr * weight_decay, coupled_decay = 0); Adam adds
    coupled_decay * w to the gradient (shrink = 1)."""
    zero = param.dtype.type(0)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, coupled_decay, l1, zero)
        m = exp_avg[i]
        m = m + (g - m) * one_minus_beta1
        v = exp_avg_sq[i] * beta2 + g * g * one_minus_beta2
        exp_avg[i] = m
        exp_avg_sq[i] = v
        second = v
        if amsgrad:
            previous = max_exp_avg_sq[i]
            second = previous if previous > v else v
            max_exp_avg_sq[i] = second
        denom = math.sqrt(second) / bias_correction2_sqrt + eps
        param[i] = w * shrink - m / denom * step_size


@cuda.jit
def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, centered, use_momentum, lr,
                 alpha, one_minus_alpha, eps, weight_decay, momentum, l1):
    zero = param.dtype.type(0)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, weight_decay, l1, zero)
        v = square_avg[i] * alpha + g * g * one_minus_alpha
        square_avg[i] = v
        variance = v
        if centered:
            m = grad_avg[i]
            m = m + (g - m) * one_minus_alpha
            grad_avg[i] = m
            variance = v - m * m
        direction = g / (math.sqrt(variance) + eps)
        if use_momentum:
            direction = momentum_buffer[i] * momentum + direction
            momentum_buffer[i] = direction
        param[i] = w - lr * direction


@cuda.jit
def adagrad_step(param, grad, state_sum, clr, eps, weight_decay, l1):
    zero = param.dtype.type(0)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, weight_decay, l1, zero)
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] = w - g / (math.sqrt(s) + eps) * clr


@cuda.jit
def adadelta_step(param, grad, square_avg, acc_delta, lr, rho, one_minus_rho, eps, weight_decay,
                  l1):
    zero = param.dtype.type(0)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        w = param[i]
        g = _regularised_grad(grad[i], w, weight_decay, l1, zero)
        v = square_avg[i] * rho + g * g * one_minus_rho
        square_avg[i] = v
        u = acc_delta[i]
        delta = math.sqrt(u + eps) / math.sqrt(v + eps) * g
        acc_delta[i] = u * rho + delta * delta * one_minus_rho
        param[i] = w - delta * lr
