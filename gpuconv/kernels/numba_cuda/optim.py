"""The optimizer updates in numba.cuda, one launch per parameter and step.

Registry contract as every optim impl (see ``gpuconv/kernels/reference/optim.py``): in place
on C-contiguous arrays, nothing returned. The kernels (``_optim_kernels.py``) mirror
``kernels/optim.cu``: thread = one element of the flattened parameter in a grid-stride loop,
updated in registers, parameter and state written once. The launchers flatten the arrays
(views, since they are contiguous), pass an absent state as an empty array and a flag, and
derive every coefficient in float64, rounded once to the parameter's dtype.
"""
from __future__ import annotations

import math

from .. import register
from . import DTYPES, is_available, optional, run


def _launch(name: str, arrays: tuple, *scalars) -> None:
    """Run kernel ``name`` on the flattened ``arrays`` and ``scalars``; each float scalar
    is rounded to the parameter's dtype, bools and ints pass as they are."""
    present = [a for a in arrays if a is not None]
    # reshape(-1) of another layout would copy, and the update would be lost.
    if not all(a.flags.c_contiguous for a in present):
        raise ValueError(f"{name}: the fused update needs C-contiguous arrays, got strides "
                         f"{[a.strides for a in present]}")
    dtype = arrays[0].dtype.type
    typed = [dtype(s) if isinstance(s, float) else s for s in scalars]
    run("optim", name, arrays[0].size, *(a.reshape(-1) for a in arrays), *typed,
        grid_stride=True)


def _numba(op: str):
    return register(op, "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
                    priority=-10)


@_numba("sgd_step")
def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, l1,
             nesterov, first_step):
    buffer, use_momentum = optional(momentum_buffer, param)
    _launch("sgd_step", (param, grad, buffer), use_momentum, float(lr), float(momentum),
            1.0 - dampening, float(weight_decay), float(l1), bool(nesterov), bool(first_step))


@_numba("adam_step")
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay):
    max_sq, amsgrad = optional(max_exp_avg_sq, param)
    coupled_decay = 0.0 if decoupled_weight_decay else float(weight_decay)
    shrink = 1.0 - lr * weight_decay if decoupled_weight_decay else 1.0
    _launch("adam_step", (param, grad, exp_avg, exp_avg_sq, max_sq), amsgrad, coupled_decay,
            shrink, 1.0 - beta1, float(beta2), 1.0 - beta2, math.sqrt(bias_correction2),
            lr / bias_correction1, float(eps), float(l1))


@_numba("rmsprop_step")
def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                 weight_decay, momentum, l1):
    avg, centered = optional(grad_avg, param)
    buffer, use_momentum = optional(momentum_buffer, param)
    _launch("rmsprop_step", (param, grad, square_avg, avg, buffer), centered, use_momentum,
            float(lr), float(alpha), 1.0 - alpha, float(eps), float(weight_decay),
            float(momentum), float(l1))


@_numba("adagrad_step")
def adagrad_step(param, grad, state_sum, clr, eps, weight_decay, l1):
    _launch("adagrad_step", (param, grad, state_sum), float(clr), float(eps),
            float(weight_decay), float(l1))


@_numba("adadelta_step")
def adadelta_step(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, l1):
    _launch("adadelta_step", (param, grad, square_avg, acc_delta), float(lr), float(rho),
            1.0 - rho, float(eps), float(weight_decay), float(l1))
