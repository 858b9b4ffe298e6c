"""k-means steps in numba.cuda: the readable GPU version of ``kernels/kmeans.cu``.

Registry contract as every k-means impl (see ``gpuconv/kernels/reference/kmeans.py``).
The assignment is the array module's GEMM (cuBLAS through CuPy on a GPU) and a thread per
point that completes the distances and takes their argmin; the update sorts the positions
by label, sums tiles of each cluster's run (a thread per tile and feature), then each
cluster's tiles in order (a thread per cluster and feature): deterministic, no atomics.
"""
from __future__ import annotations

import functools

import numpy as np

from ... import backend
from .. import register
from .._segments import TILE_POSITIONS, tiled_segments
from . import DTYPES, is_available, run

_launch = functools.partial(run, "kmeans")


@register("kmeans_assign", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
          priority=-10)
def kmeans_assign(x, centers, x_sq_norms):
    xp = backend.array_module(x)
    n = x.shape[0]
    labels = backend.empty((n,), np.int64, xp)
    sq_dist = backend.empty((n,), x.dtype, xp)
    if n:
        dots = xp.ascontiguousarray(xp.matmul(x, centers.T))
        c_sq_norms = xp.ascontiguousarray(xp.einsum("kd,kd->k", centers, centers))
        _launch("assign_argmin_rows", n, dots, c_sq_norms, xp.ascontiguousarray(x_sq_norms),
                labels, sq_dist)
    return labels, sq_dist


@register("kmeans_update", "numba_cuda", device="cuda", dtypes=DTYPES, available=is_available,
          priority=-10)
def kmeans_update(x, labels, k):
    xp = backend.array_module(x)
    d = x.shape[1]
    x = xp.ascontiguousarray(x)
    seg = tiled_segments(labels, k, "kmeans_update")
    partial = backend.empty((seg.tiles, d), np.float64, xp)
    sums = backend.empty((k, d), x.dtype, xp)
    if seg.tiles:
        _launch("update_tile_sums", seg.tiles * d, x, seg.order, seg.start, seg.tile_start,
                seg.tile_segment, np.int64(TILE_POSITIONS), partial)
    _launch("update_cluster_sums", k * d, partial, seg.tile_start, sums)
    return sums, seg.start[1:] - seg.start[:-1]
