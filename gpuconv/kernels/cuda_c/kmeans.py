"""Launchers for ``kernels/kmeans.cu``: the k-means assignment (a cuBLAS GEMM, then the
fused distance + argmin kernel) and the deterministic segmented update.

Registry contract as every k-means impl (see ``gpuconv/kernels/reference/kmeans.py``).
The GEMM's (rows, k) output is the only temporary of the assignment; it is computed for
blocks of rows so that it stays under ``DOTS_ELEMENTS``. The update sorts the positions by
label on the device, cuts each cluster's run into tiles of ``TILE_POSITIONS`` points, sums
each tile (a block per tile), then each cluster's tiles in order (a block per cluster).
"""
from __future__ import annotations

import numpy as np

from ... import backend
from .. import register
from .._segments import TILE_POSITIONS, tiled_segments
from . import DTYPES, MAX_BLOCKS, entry_point, gpu_op, launch, run_threads

FAMILY = "kmeans"
WARP = 32
# Dot products per GEMM block (256 MiB of float64 at most).
DOTS_ELEMENTS = 1 << 25


def _feature_threads(d: int) -> int:
    """Threads of the update's blocks: a thread per feature, whole warps, at most 256."""
    return min(256, -(-d // WARP) * WARP)


@register("kmeans_assign", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("kmeans_assign")
def kmeans_assign(x, centers, x_sq_norms):
    cp = backend.cupy_or_none()
    n, k = x.shape[0], centers.shape[0]
    x, centers = cp.ascontiguousarray(x), cp.ascontiguousarray(centers)
    x_sq_norms = cp.ascontiguousarray(x_sq_norms)
    c_sq_norms = cp.ascontiguousarray(cp.einsum("kd,kd->k", centers, centers))
    labels = backend.empty((n,), np.int64, cp)
    sq_dist = backend.empty((n,), x.dtype, cp)
    # A warp per row once there are enough centres to give every lane one.
    variant, lanes = ("warp", WARP) if k >= WARP else ("thread", 1)
    block = max(1, DOTS_ELEMENTS // k)
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        dots = cp.matmul(x[rows], centers.T)
        m = dots.shape[0]
        run_threads(FAMILY, f"kmeans_assign_argmin_{variant}", x.dtype, m * lanes,
                    (dots, c_sq_norms, x_sq_norms[rows], np.int64(m), np.int32(k),
                     labels[rows], sq_dist[rows]))
    return labels, sq_dist


@register("kmeans_update", "cuda", device="cuda", dtypes=DTYPES, priority=10)
@gpu_op("kmeans_update")
def kmeans_update(x, labels, k):
    cp = backend.cupy_or_none()
    d = x.shape[1]
    x = cp.ascontiguousarray(x)
    seg = tiled_segments(labels, k, "kmeans_update")
    partial = backend.empty((seg.tiles, d), np.float64, cp)
    sums = backend.empty((k, d), x.dtype, cp)
    threads = _feature_threads(d)
    if seg.tiles:
        launch(FAMILY, entry_point("kmeans_update_tile_sums", x.dtype),
               (min(MAX_BLOCKS, seg.tiles),), (threads,),
               (x, seg.order, seg.start, seg.tile_start, seg.tile_segment, np.int64(seg.tiles),
                np.int64(TILE_POSITIONS), np.int32(d), partial))
    launch(FAMILY, entry_point("kmeans_update_cluster_sums", x.dtype), (min(MAX_BLOCKS, k),),
           (threads,), (partial, seg.tile_start, np.int32(k), np.int32(d), sums))
    return sums, seg.start[1:] - seg.start[:-1]
