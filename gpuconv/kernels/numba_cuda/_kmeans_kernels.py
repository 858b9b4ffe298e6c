"""numba.cuda kernels for k-means (see gpuconv/kernels/numba_cuda/kmeans.py for the mapping).

Kept apart from the launchers because the CUDA simulator needs ``cuda`` to be a module
global of the kernels, and importing numba.cuda must wait until a kernel is launched.
"""
from numba import cuda

from .._kmeans_rows import nearest_centre


_nearest_centre = cuda.jit(device=True)(nearest_centre)


@cuda.jit
def assign_argmin_rows(dots, c_sq_norms, x_sq_norms, labels, sq_dist):
    """Thread = one point i: its nearest centre and squared distance
    (gpuconv/kernels/_kmeans_rows.py)."""
    i = cuda.grid(1)
    if i < dots.shape[0]:
        labels[i], sq_dist[i] = _nearest_centre(dots, c_sq_norms, x_sq_norms, i)


@cuda.jit
def update_tile_sums(x, order, seg_start, tile_start, tile_cluster, tile_points, partial):
    """Thread = one (tile t, feature f): partial[t, f] = the sum of x[order[p], f] over
    the tile's positions p, in order, in float64."""
    i = cuda.grid(1)
    d = x.shape[1]
    if i >= partial.shape[0] * d:
        return
    t, f = i // d, i % d
    j = tile_cluster[t]
    begin = seg_start[j] + (t - tile_start[j]) * tile_points
    end = min(begin + tile_points, seg_start[j + 1])
    acc = 0.0
    for p in range(begin, end):
        acc += x[order[p], f]
    partial[t, f] = acc


@cuda.jit
def update_cluster_sums(partial, tile_start, sums):
    """Thread = one (cluster j, feature f): sums[j, f] = the sum of partial[t, f] over the
    cluster's tiles, in order (0 for an empty cluster)."""
    i = cuda.grid(1)
    k, d = sums.shape
    if i >= k * d:
        return
    j, f = i // d, i % d
    acc = 0.0
    for t in range(tile_start[j], tile_start[j + 1]):
        acc += partial[t, f]
    sums[j, f] = acc
