"""Reference k-means steps: the definitions as written, in NumPy, for any float dtype.

Registry contract of every k-means impl (the public functions in
:mod:`gpuconv.cluster.kmeans` validate the arguments first):

- ``kmeans_assign(x, centers, x_sq_norms) -> (labels, sq_dist)``: x (n, d), centers
  (k, d) of one dtype, x_sq_norms (n,) the rows' squared norms (for the impls that expand
  the distance; this one does not need them). labels (n,) int64 is the index of each
  point's nearest centre, the lowest on ties; sq_dist (n,) its squared distance, >= 0.
- ``kmeans_update(x, labels, k) -> (sums, counts)``: labels (n,) int64 in [0, k). sums
  (k, d) in x's dtype is the sum of each cluster's points (zeros for an empty one), counts
  (k,) int64 their number.
"""
from __future__ import annotations

import numpy as np

from .. import register

_LOWEST = -100
# Points per block of the distance computation (bounds the (block, k, d) temporary).
_BLOCK_ELEMENTS = 1 << 22


@register("kmeans_assign", "reference", priority=_LOWEST)
def kmeans_assign(x, centers, x_sq_norms):
    n, k = x.shape[0], centers.shape[0]
    labels = np.empty(n, np.int64)
    sq_dist = np.empty(n, x.dtype)
    block = max(1, _BLOCK_ELEMENTS // max(1, k * x.shape[1]))
    for start in range(0, n, block):
        diff = x[start:start + block, None, :] - centers[None, :, :]
        d2 = np.sum(diff * diff, axis=2)                           # (block, k)
        labels[start:start + block] = np.argmin(d2, axis=1)
        sq_dist[start:start + block] = np.min(d2, axis=1)
    return labels, sq_dist


@register("kmeans_update", "reference", priority=_LOWEST)
def kmeans_update(x, labels, k):
    sums = np.zeros((k, x.shape[1]), x.dtype)
    counts = np.zeros(k, np.int64)
    for j in range(k):
        members = x[labels == j]
        sums[j] = members.sum(axis=0)
        counts[j] = len(members)
    return sums, counts
