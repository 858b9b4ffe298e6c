"""Fast CPU k-means steps (contract: :mod:`gpuconv.kernels.reference.kmeans`).

``kmeans_assign`` expands ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: one BLAS GEMM per block
of points for the dot products, then a numba loop (the CPU twin of the GPU's fused kernel)
that completes each row's distances and takes their argmin in one pass over the block.
``kmeans_update`` is a numba loop that adds each point into its cluster's row in position
order, in float64: no sort and a fixed order, so the sums are the same on every run.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ... import backend
from .._kmeans_rows import nearest_centre
from . import register

# Dot products per GEMM block (64 MiB of float64 at most).
_BLOCK_ELEMENTS = 1 << 23


_nearest_centre = njit(cache=True)(nearest_centre)


@njit(cache=True)
def _nearest(dots, c_sq_norms, x_sq_norms, labels, sq_dist):
    for i in range(dots.shape[0]):
        labels[i], sq_dist[i] = _nearest_centre(dots, c_sq_norms, x_sq_norms, i)


@register("kmeans_assign", "numpy", dtypes=("float32", "float64"))
def kmeans_assign(x, centers, x_sq_norms):
    n, k = x.shape[0], centers.shape[0]
    c_sq_norms = np.einsum("kd,kd->k", centers, centers)
    x_sq_norms = np.ascontiguousarray(x_sq_norms)
    labels = np.empty(n, np.int64)
    sq_dist = backend.empty((n,), x.dtype)
    block = max(1, _BLOCK_ELEMENTS // k)
    for start in range(0, n, block):
        rows = slice(start, start + block)
        _nearest(x[rows] @ centers.T, c_sq_norms, x_sq_norms[rows], labels[rows], sq_dist[rows])
    return labels, sq_dist


@njit(cache=True)
def _cluster_sums(x, labels, sums, counts):
    for i in range(x.shape[0]):
        j = labels[i]
        counts[j] += 1
        for f in range(x.shape[1]):
            sums[j, f] += x[i, f]


@register("kmeans_update", "numpy", dtypes=("float32", "float64"))
def kmeans_update(x, labels, k):
    sums = np.zeros((k, x.shape[1]), np.float64)
    counts = np.zeros(k, np.int64)
    _cluster_sums(np.ascontiguousarray(x), np.ascontiguousarray(labels), sums, counts)
    return sums.astype(x.dtype, copy=False), counts
