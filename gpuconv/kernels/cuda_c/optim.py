"""Launchers for ``kernels/optim.cu``: the fused optimizer updates, float32/float64.

Registry contract as every optim impl (see ``gpuconv/kernels/reference/optim.py``): in place
on C-contiguous arrays, nothing returned. Each call is one launch in which every element of
the parameter, its gradient and its state is read once and written once. Hyperparameters go
to the kernels as double (they round what they derive to the array's dtype), flags as int,
an unused state buffer as a null pointer.

The multi-tensor launchers at the end (one launch for every parameter of a dtype, and the
two launches of clipping by the global norm) take the table of pointers and sizes that
``gpuconv/optim/_multi_tensor.py`` builds; the layout is set out at the top of the .cu file.
"""
from __future__ import annotations


import numpy as np

from .. import register
from . import DTYPES, NULL, REDUCE_THREADS, entry_point, launch, run_threads

FAMILY = "optim"
# The multi-tensor table's rows and chunk size: must equal MT_* in kernels/optim.cu.
MT_FIELDS = 10
MT_CHUNK_ELEMENTS = 8192
MT_HYPER = 8
# The clipping kernels' norm kinds: NORM_INF and NORM_P in kernels/optim.cu.
NORM_INF, NORM_P = 0, 1
# At most this many blocks compute partial norms, so that every block of the scaling
# kernel can reduce all of them.
MAX_NORM_BLOCKS = 1024


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


# --------------------------------------------------------------------------- multi-tensor

def _blocks(chunks: int, cap: int) -> int:
    from . import MAX_BLOCKS  # read at call time: the CUDA emulator lowers it

    return max(1, min(chunks, MAX_BLOCKS, cap))


def multi_tensor_step(kind: str, dtype, table, count: int, chunks: int, hyper, steps,
                      ticket) -> None:
    """``<kind>_multi_step``: every tensor of ``table`` (``count`` of them, ``chunks``
    chunks) updated in one launch; ``hyper`` (groups x MT_HYPER float64), ``steps`` (int64
    per parameter, advanced by one) and ``ticket`` (uint32, zero between launches) live on
    the device."""
    launch(FAMILY, entry_point(f"{kind}_multi_step", dtype),
           (_blocks(chunks, chunks),), (REDUCE_THREADS,),
           (table, np.int32(count), np.int64(chunks), hyper, steps, ticket))


def norm_blocks(chunks: int) -> int:
    """Blocks (partial norms) of :func:`multi_tensor_norm_partial` for ``chunks`` chunks."""
    return _blocks(chunks, MAX_NORM_BLOCKS)


def multi_tensor_norm_partial(dtype, table, count: int, chunks: int, norm_type: float,
                              partial, offset: int) -> None:
    """Per block, the sum of |g|^p (the largest |g| for inf) into ``partial[offset + b]``
    for ``b < norm_blocks(chunks)``."""
    kind, p = _norm_kind(norm_type)
    launch(FAMILY, entry_point("multi_tensor_norm_partial", dtype),
           (norm_blocks(chunks),), (REDUCE_THREADS,),
           (table, np.int32(count), np.int64(chunks), np.int32(kind), np.float64(p), partial,
            np.int64(offset)))


def multi_tensor_clip_scale(dtype, table, count: int, chunks: int, partial, partials: int,
                            norm_type: float, max_norm: float, total) -> None:
    """The total norm from ``partial[:partials]`` into ``total[0]`` (float64) and every
    gradient of ``table`` scaled by ``max_norm / (total + 1e-6)`` when that is below 1."""
    kind, p = _norm_kind(norm_type)
    launch(FAMILY, entry_point("multi_tensor_clip_scale", dtype),
           (_blocks(chunks, chunks),), (REDUCE_THREADS,),
           (table, np.int32(count), np.int64(chunks), partial, np.int64(partials),
            np.int32(kind), np.float64(p), np.float64(max_norm), total))


def _norm_kind(norm_type: float) -> tuple[int, float]:
    return (NORM_INF, 0.0) if norm_type == float("inf") else (NORM_P, float(norm_type))
