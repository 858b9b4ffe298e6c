"""Launchers for ``kernels/optim.cu``: the fused optimizer updates, float32/float64.

Registry contract as every optim impl (see ``gpuconv/kernels/reference/optim.py``): in place
on C-contiguous arrays, nothing returned. Each call is one launch in which every element of
the parameter, its gradient and its state is read once and written once. Hyperparameters go
to the kernels as double (they round what they derive to the array's dtype), flags as int,
an unused state buffer as a null pointer.
"""
from __future__ import annotations


import numpy as np

from .. import register
from . import DTYPES, NULL, run_threads

FAMILY = "optim"


def _run(name: str, arrays: tuple, doubles: tuple, ints: tuple = ()) -> None:
    """Launch ``<name>_<dtype>(*arrays, n, *doubles, *ints)`` over the parameter
    ``arrays[0]``; None in ``arrays`` becomes a null pointer."""
    # The kernels index every array as flat memory; another layout would be silently wrong.
    if not all(a is None or a.flags.c_contiguous for a in arrays):
        raise ValueError(f"{name}: the fused update needs C-contiguous arrays, got strides "
                         f"{[None if a is None else a.strides for a in arrays]}")
    param = arrays[0]
    args = (*(NULL if a is None else a for a in arrays), np.int64(param.size),
            *(np.float64(d) for d in doubles), *(np.int32(i) for i in ints))
    run_threads(FAMILY, name, param.dtype, param.size, args)


def _fused(op: str):
    return register(op, "cuda_fused", device="cuda", dtypes=DTYPES)


@_fused("sgd_step")
def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, l1,
             nesterov, first_step):
    _run("sgd_step", (param, grad, momentum_buffer),
         (lr, momentum, dampening, weight_decay, l1), (nesterov, first_step))


@_fused("adam_step")
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay):
    _run("adam_step", (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
         (lr, beta1, beta2, eps, weight_decay, l1, bias_correction1, bias_correction2),
         (decoupled_weight_decay,))


@_fused("rmsprop_step")
def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                 weight_decay, momentum, l1):
    _run("rmsprop_step", (param, grad, square_avg, grad_avg, momentum_buffer),
         (lr, alpha, eps, weight_decay, momentum, l1))


@_fused("adagrad_step")
def adagrad_step(param, grad, state_sum, clr, eps, weight_decay, l1):
    _run("adagrad_step", (param, grad, state_sum), (clr, eps, weight_decay, l1))


@_fused("adadelta_step")
def adadelta_step(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, l1):
    _run("adadelta_step", (param, grad, square_avg, acc_delta), (lr, rho, eps, weight_decay, l1))
