"""Reference optimizer updates: plain NumPy, any float dtype, the oracle for every other impl.

They are also the CPU path of :mod:`gpuconv.optim`, whose classes document each update.

Registry contract for the optim family
--------------------------------------
Each op is the whole update of one parameter at one step, done in place: ``param`` and the
state buffers are overwritten, ``grad`` is only read, nothing is returned. ``param``,
``grad`` and the state buffers are C-contiguous arrays of one shape, dtype and device (the
optimizers make them so); a buffer that the options leave unused is None. Scalars are
Python floats and bools; the ones that depend on the step count come computed. Every update
first regularises the gradient: ``g = grad + weight_decay * param + l1 * sign(param)``.

``"sgd_step"``
    ``fn(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, l1, nesterov,
    first_step)``; ``momentum_buffer`` is None when ``momentum == 0``. At the first step the
    buffer becomes ``g``, later ``b = momentum * b + (1 - dampening) * g``; the step
    direction is ``g + momentum * b`` (nesterov) or ``b``.
``"adam_step"``
    ``fn(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
    weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay)`` with
    ``bias_correction_k = 1 - beta_k ** step``; ``max_exp_avg_sq`` is None without amsgrad.
    With ``decoupled_weight_decay`` (AdamW) the weights shrink by ``1 - lr * weight_decay``
    instead of ``weight_decay * param`` joining the gradient.
``"rmsprop_step"``
    ``fn(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay,
    momentum, l1)``; ``grad_avg`` is None unless centred, ``momentum_buffer`` None when
    ``momentum == 0``.
``"adagrad_step"``
    ``fn(param, grad, state_sum, clr, eps, weight_decay, l1)`` with the decayed learning rate
    ``clr = lr / (1 + (step - 1) * lr_decay)``.
``"adadelta_step"``
    ``fn(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, l1)``.

Each function is the update's formula written with NumPy operations, in the order that
torch.optim applies them. Scalars meet the arrays as Python floats, so NumPy rounds each to
the array's dtype once: a float32 update is computed in float32.
"""
from __future__ import annotations

import numpy as np

from .. import register

PRIORITY = -100  # the reference is the CPU path, chosen only where nothing faster registers


def _regularised_grad(param, grad, weight_decay, l1):
    """``grad + weight_decay * param + l1 * sign(param)``; ``grad`` itself when both are 0."""
    g = grad
    if weight_decay:
        g = param * weight_decay + g
    if l1:
        g = g + np.sign(param) * l1
    return g


@register("sgd_step", "reference", priority=PRIORITY)
def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, l1,
             nesterov, first_step):
    g = _regularised_grad(param, grad, weight_decay, l1)
    if momentum_buffer is not None:
        if first_step:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * g


@register("adam_step", "reference", priority=PRIORITY)
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay):
    g = _regularised_grad(param, grad, 0.0 if decoupled_weight_decay else weight_decay, l1)
    if decoupled_weight_decay:
        param *= 1 - lr * weight_decay
    exp_avg += (g - exp_avg) * (1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += g * g * (1 - beta2)
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        second = np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    denom = np.sqrt(second) / bias_correction2 ** 0.5 + eps
    param -= exp_avg / denom * (lr / bias_correction1)


@register("rmsprop_step", "reference", priority=PRIORITY)
def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                 weight_decay, momentum, l1):
    g = _regularised_grad(param, grad, weight_decay, l1)
    square_avg *= alpha
    square_avg += g * g * (1 - alpha)
    variance = square_avg
    if grad_avg is not None:
        grad_avg += (g - grad_avg) * (1 - alpha)
        variance = square_avg - grad_avg * grad_avg
    direction = g / (np.sqrt(variance) + eps)
    if momentum_buffer is not None:
        momentum_buffer *= momentum
        momentum_buffer += direction
        direction = momentum_buffer
    param -= lr * direction


@register("adagrad_step", "reference", priority=PRIORITY)
def adagrad_step(param, grad, state_sum, clr, eps, weight_decay, l1):
    g = _regularised_grad(param, grad, weight_decay, l1)
    state_sum += g * g
    param -= g / (np.sqrt(state_sum) + eps) * clr


@register("adadelta_step", "reference", priority=PRIORITY)
def adadelta_step(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, l1):
    g = _regularised_grad(param, grad, weight_decay, l1)
    square_avg *= rho
    square_avg += g * g * (1 - rho)
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta *= rho
    acc_delta += delta * delta * (1 - rho)
    param -= delta * lr
