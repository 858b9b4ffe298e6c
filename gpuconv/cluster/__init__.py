"""Clustering on NumPy and CuPy arrays: k-means with k-means++ seeding.

    from gpuconv.cluster import kmeans
    result = kmeans(x, 10, seed=0)     # x (n, d); result.centers (10, d), result.labels (n,)

The assignment and update steps are registered ops (``kmeans_assign``, ``kmeans_update``)
with CPU and GPU implementations; see :mod:`gpuconv.cluster.kmeans`.
"""
from .kmeans import KMeansResult, kmeans, kmeans_assign, kmeans_plusplus, kmeans_update

__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus", "kmeans_assign", "kmeans_update"]
