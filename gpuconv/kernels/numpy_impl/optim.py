"""Fused CPU optimizer updates in numba (contract: :mod:`gpuconv.kernels.reference.optim`).

The reference writes each update as NumPy operations: four to eight passes over the
parameter's arrays with a temporary per operation, and a microsecond or more of call
overhead per operation. These kernels read and write each element once, in one loop per
parameter: SGD with momentum over LeNet-5's ten parameters took 17 us against the
reference's 51 (warm caches, one thread; bench/NOTES.md, 2026-12-07).

Each kernel computes the reference's operations in its order and in the array's dtype:
the scalars are rounded to that dtype inside the kernel, as NumPy rounds a Python float
that meets a float32 array, and numba contracts no multiply and add into an FMA without
``fastmath``; ``sqrt`` and division round correctly in both. So an update equals the
reference's in the same dtype bit for bit. Large parameters are cut into flat ranges on
gpuconv's thread pool (:func:`gpuconv.threads.split`); each element's update reads and
writes only that element.

float16 parameters compute in float32 (:func:`gpuconv.kernels.numpy_impl.register`).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ... import threads
from ..reference import optim as reference
from . import register

_DTYPES = ("float32", "float64")


@njit(cache=True, nogil=True)
def _sign(p, one, zero):
    """NumPy's ``sign``: -1, 0 (+0 for -0 too) or 1, NaN for NaN; numba's gives -0 for -0."""
    if p > 0:
        return one
    if p < 0:
        return -one
    return zero if p == 0 else p


@njit(cache=True, nogil=True)
def _regularised(p, g, weight_decay, l1, decay, penalty, one, zero):
    """``g + weight_decay * p + l1 * sign(p)``, each term only where the reference adds it
    (``decay``/``penalty``: its Python factor is nonzero; a float32 factor may round to 0,
    and ``weight_decay * p`` of an infinite ``p`` would be NaN)."""
    if decay:
        g = p * weight_decay + g
    if penalty:
        g = g + _sign(p, one, zero) * l1
    return g


@njit(cache=True, nogil=True)
def _sgd_kernel(param, grad, buf, lr, momentum, keep, weight_decay, l1, nesterov,
                first_step):
    t = param.dtype.type
    one, zero = t(1), t(0)
    decay, penalty = weight_decay != 0, l1 != 0
    lr, momentum, keep, weight_decay, l1 = t(lr), t(momentum), t(keep), t(weight_decay), t(l1)
    for i in range(param.size):
        g = _regularised(param[i], grad[i], weight_decay, l1, decay, penalty, one, zero)
        if buf is not None:
            b = g if first_step else buf[i] * momentum + keep * g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        param[i] = param[i] - lr * g


@njit(cache=True, nogil=True)
def _adam_kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step_size, beta1_keep,
                 beta2, beta2_keep, eps, sqrt_correction2, weight_decay, l1, shrink):
    t = param.dtype.type
    one, zero = t(1), t(0)
    decay, penalty = weight_decay != 0, l1 != 0
    step_size, beta1_keep, beta2, beta2_keep = t(step_size), t(beta1_keep), t(beta2), t(beta2_keep)
    eps, sqrt_correction2, weight_decay, l1, shrink = (t(eps), t(sqrt_correction2),
                                                       t(weight_decay), t(l1), t(shrink))
    for i in range(param.size):
        p = param[i]
        g = _regularised(p, grad[i], weight_decay, l1, decay, penalty, one, zero)
        if shrink != 1:
            p = p * shrink
        m = exp_avg[i]
        m = m + (g - m) * beta1_keep
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + g * g * beta2_keep
        exp_avg_sq[i] = v
        second = v
        if max_exp_avg_sq is not None:
            kept = max_exp_avg_sq[i]
            # np.maximum: the larger, NaN when either is NaN
            second = v if (v > kept or v != v) else kept
            max_exp_avg_sq[i] = second
        param[i] = p - m / (np.sqrt(second) / sqrt_correction2 + eps) * step_size


@njit(cache=True, nogil=True)
def _sgd_chunk_kernel(params, grads, bufs, first_steps, lr, momentum, keep, weight_decay, l1,
                      nesterov):
    for j in range(len(params)):
        if bufs is None:
            _sgd_kernel(params[j], grads[j], None, lr, momentum, keep, weight_decay, l1,
                        nesterov, False)
        else:
            _sgd_kernel(params[j], grads[j], bufs[j], lr, momentum, keep, weight_decay, l1,
                        nesterov, first_steps[j])


def _run(kernel, arrays: tuple, scalars: tuple) -> None:
    """``kernel(*arrays, *scalars)`` over the flat elements of the C-contiguous ``arrays``
    (None for an unused buffer), in ranges on the pool when they are large. The kernels
    index from 0 (``range(param.size)``): numba proves such indices non-negative and
    vectorises the loop, which it did not for ``range(start, stop)`` (69 against 11 us on
    48,000 float32 elements), hence the slices."""
    flat = [None if a is None else a.reshape(-1) for a in arrays]
    ranges = threads.split(flat[0].size, threads.MIN_TASK_ELEMENTS)
    if len(ranges) <= 1:
        kernel(*flat, *scalars)
        return

    def task(t: int) -> None:
        r = slice(ranges[t].start, ranges[t].stop)
        kernel(*(None if a is None else a[r] for a in flat), *scalars)

    threads.parallel_for(len(ranges), task)


def uniform(param, arrays) -> bool:
    """Whether ``arrays`` (None allowed) are C-contiguous, writeable NumPy arrays of
    ``param``'s shape and dtype, as the kernels read them (they check no bounds). An
    optimizer's state can differ: ``Module.to(dtype)`` converts the parameters, not the
    state; such updates take the reference's NumPy operations."""
    shape, dtype = param.shape, param.dtype
    for a in arrays:   # a plain loop: every CPU optimizer step asks this per parameter
        if a is not None and not (type(a) is np.ndarray and a.shape == shape
                                  and a.dtype == dtype and a.flags.c_contiguous
                                  and a.flags.writeable):
            return False
    return True


@register("sgd_step", dtypes=_DTYPES, updates=(0, 2))
def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, l1,
             nesterov, first_step):
    if not uniform(param, (param, grad, momentum_buffer)):
        reference.sgd_step(param, grad, momentum_buffer, lr, momentum, dampening,
                           weight_decay, l1, nesterov, first_step)
        return
    _run(_sgd_kernel, (param, grad, momentum_buffer),
         (float(lr), float(momentum), float(1 - dampening), float(weight_decay), float(l1),
          bool(nesterov), bool(first_step)))


@register("adam_step", dtypes=_DTYPES, updates=(0, 2, 3, 4))
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
              weight_decay, l1, bias_correction1, bias_correction2, decoupled_weight_decay):
    if not uniform(param, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)):
        reference.adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2,
                            eps, weight_decay, l1, bias_correction1, bias_correction2,
                            decoupled_weight_decay)
        return
    shrink = 1 - lr * weight_decay if decoupled_weight_decay else 1.0
    coupled_decay = 0.0 if decoupled_weight_decay else weight_decay
    _run(_adam_kernel, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
         tuple(float(v) for v in (lr / bias_correction1, 1 - beta1, beta2, 1 - beta2, eps,
                                  bias_correction2 ** 0.5, coupled_decay, l1, shrink)))


# The multi-parameter step: parameters per call. The kernel takes tuples of this many flat
# arrays (a shorter last chunk is padded with empty ones), so it compiles once, whatever
# the model.
CHUNK = 8
# Parameters at least this large take the one-parameter step, which cuts them into ranges
# on the thread pool: two ranges of 2^18 elements (a momentum update of 2^18 float32: 125 us,
# of 2^16: 17 us, on the 2-core development machine) pay for a handover (some 40 us);
# smaller parameters go faster in one call per chunk.
CHUNK_MAX_SIZE = 1 << 19


def sgd_step_chunked(params: list, grads: list, momentum_buffers: list | None,
                     first_steps: list, lr: float, momentum: float, dampening: float,
                     weight_decay: float, l1: float, nesterov: bool) -> None:
    """``sgd_step`` of each parameter of ``params`` with its gradient and momentum buffer
    (``momentum_buffers`` None when ``momentum == 0``; ``first_steps[i]``: buffer ``i`` is
    new), CHUNK parameters per call; for :class:`gpuconv.optim.SGD` on the CPU, whose
    per-parameter calls cost 10-15 us of Python each. Every parameter's arrays are
    :func:`uniform`, of one float32 or float64 dtype across the call, each smaller than
    CHUNK_MAX_SIZE elements."""
    padding = [np.empty(0, params[0].dtype)] * CHUNK
    scalars = (float(lr), float(momentum), float(1 - dampening), float(weight_decay),
               float(l1), bool(nesterov))

    def chunk(arrays: list, start: int) -> tuple:
        flat = [a if a.ndim == 1 else a.reshape(-1) for a in arrays[start:start + CHUNK]]
        return tuple(flat + padding[len(flat):])

    for start in range(0, len(params), CHUNK):
        flags = np.zeros(CHUNK, np.bool_)
        firsts = first_steps[start:start + CHUNK]
        flags[:len(firsts)] = firsts
        _sgd_chunk_kernel(chunk(params, start), chunk(grads, start),
                          None if momentum_buffers is None else chunk(momentum_buffers, start),
                          flags, *scalars)
