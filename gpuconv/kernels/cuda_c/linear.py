"""Linear on the GPU through cuBLAS (CuPy ``matmul``) and launchers for ``kernels/linear.cu``
(embedding lookup and its gradient), float32/float64.

Registry contract as every linear impl (see ``gpuconv/kernels/reference/linear.py``).
``linear`` views its input as a matrix of rows: one GEMM, then the bias added in place in one
broadcast pass. ``linear_backward`` is two GEMMs and a CuPy column sum (a fixed-order
reduction, accumulated in float64). ``embedding_backward`` sorts the positions by index on
the device and gathers each row's gradient in position order: no atomics, deterministic, and
the same sum in the same order as the CPU impl.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from .. import register
from .._segments import positions_by_key
from . import DTYPES, gpu_op, run_threads

FAMILY = "linear"
NO_PADDING = np.int64(-1)


def _run(name: str, dtype, total: int, args: tuple) -> None:
    run_threads(FAMILY, name, dtype, total, args)


def _rows(a):
    """``(*, n) -> (M, n)``, C-contiguous (M counted, not inferred: -1 is ambiguous when n
    is 0)."""
    cp = backend.cupy_or_none()
    return cp.ascontiguousarray(a.reshape(math.prod(a.shape[:-1]), a.shape[-1]))


@register("linear", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("linear")
def linear(x, w, b):
    cp = backend.cupy_or_none()
    rows = cp.matmul(_rows(x), cp.ascontiguousarray(w).T)
    if b is not None:
        rows += b
    return rows.reshape(x.shape[:-1] + (w.shape[0],))


@register("linear_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("linear_backward")
def linear_backward(g, x, w, b):
    cp = backend.cupy_or_none()
    g_rows = _rows(g)
    grad_input = cp.matmul(g_rows, cp.ascontiguousarray(w)).reshape(x.shape)
    grad_weight = cp.matmul(g_rows.T, _rows(x))
    grad_bias = None
    if b is not None:
        # A float64 accumulator keeps float32 sums over many positions accurate.
        acc = np.result_type(g.dtype, np.float64)
        grad_bias = g_rows.sum(axis=0, dtype=acc).astype(g.dtype, copy=False)
    return grad_input, grad_weight, grad_bias


@register("embedding", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("embedding")
def embedding(indices, weight):
    cp = backend.cupy_or_none()
    dim = weight.shape[1]
    out = backend.empty(indices.shape + (dim,), weight.dtype, cp)
    _run("embedding_fwd", weight.dtype, out.size,
         (cp.ascontiguousarray(indices), cp.ascontiguousarray(weight), out,
          np.int64(indices.size), np.int64(dim)))
    return out


@register("embedding_backward", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("embedding_backward")
def embedding_backward(g, indices, num_embeddings, padding_idx):
    cp = backend.cupy_or_none()
    dim = g.shape[-1]
    order, row_start = positions_by_key(indices, num_embeddings, "embedding_backward")
    grad_weight = backend.empty((num_embeddings, dim), g.dtype, cp)
    _run("embedding_bwd", g.dtype, grad_weight.size,
         (_rows(g), order, row_start, grad_weight, np.int64(num_embeddings), np.int64(dim),
          NO_PADDING if padding_idx is None else np.int64(padding_idx)))
    return grad_weight
