"""The optimizer updates in numba.cuda, one launch per parameter and step.

Registry contract as every optim impl (see ``gpuconv/kernels/reference/optim.py``): in place
on C-contiguous arrays, nothing returned. The kernels (``_optim_kernels.py``) mirror
``kernels/optim.cu``: thread = one element of the flattened parameter in a grid-stride loop,
updated in registers, parameter and state written once. The launchers flatten the arrays
(views, since they are contiguous) and pass the scalars on unchanged.
"""
from __future__ import annotations

from .. import register
from . import DTYPES, is_available, launch

THREADS = 128
# Grid-stride kernels need no more blocks than this to fill any current GPU.
MAX_BLOCKS = 1 << 16


def _launch(name: str, arrays: tuple, *scalars) -> None:
    """Run kernel ``name`` on the flattened ``arrays`` (None stays None) and ``scalars``."""
    # reshape(-1) of another layout would copy, and the update would be lost.
    if not all(a is None or a.flags.c_contiguous for a in arrays):
        raise ValueError(f"{name}: the fused update needs C-contiguous arrays, got strides "
                         f"{[None if a is None else a.strides for a in arrays]}")
    from . import _optim_kernels

    blocks = min(MAX_BLOCKS, max(1, -(-arrays[0].size // THREADS)))
    flat = tuple(None if a is None else a.reshape(-1) for a in arrays)
    launch(getattr(_optim_kernels, name), blocks, THREADS, *flat, *scalars)


def _numba(op: str):
    return register(op, "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available, priority=-10)


@_numba("sgd_step")
def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, l1,
             nesterov, first_step):
    _launch("sgd_step", (param, grad, momentum_buffer), lr, momentum, dampening, weight_decay,
            l1, nesterov, first_step)


@_numba("adam_step")
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay):
    _launch("adam_step", (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq), lr, beta1, beta2,
            eps, weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay)


@_numba("rmsprop_step")
def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                 weight_decay, momentum, l1):
    _launch("rmsprop_step", (param, grad, square_avg, grad_avg, momentum_buffer), lr, alpha,
            eps, weight_decay, momentum, l1)


@_numba("adagrad_step")
def adagrad_step(param, grad, state_sum, clr, eps, weight_decay, l1):
    _launch("adagrad_step", (param, grad, state_sum), clr, eps, weight_decay, l1)


@_numba("adadelta_step")
def adadelta_step(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, l1):
    _launch("adadelta_step", (param, grad, square_avg, acc_delta), lr, rho, eps, weight_decay, l1)
