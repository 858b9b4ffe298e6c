"""k-means (Lloyd's algorithm) with k-means++ seeding, on NumPy and CuPy arrays.

Each iteration runs two registered ops (``gpuconv.kernels``, family ``kmeans``), so the same
loop runs on the CPU (``numpy``, ``reference``) and the GPU (``cuda``: a cuBLAS GEMM and
``kernels/kmeans.cu``; ``numba_cuda``):

- :func:`kmeans_assign`: each point's nearest centre and squared distance, from
  ``||x||^2 - 2 x.c + ||c||^2`` (a GEMM) and an argmin fused with the distance;
- :func:`kmeans_update`: each cluster's sum and count, a deterministic segmented reduction
  (the same bits on every run: no atomics).

:func:`kmeans` follows scikit-learn's ``KMeans(algorithm="lloyd")`` step for step, so that
from the same initial centres both reach the same centres, labels and inertia: the data is
centred first (it keeps the expanded distance accurate), ``tol`` is relative to the mean
per-feature variance, the loop stops when the labels stop changing or the centres move
less than that (sum of squared shifts), a last assignment makes the labels match the final
centres, and an empty cluster takes the point farthest from its centre.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _checks as C, backend, kernels

__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus", "kmeans_assign", "kmeans_update"]

INITS = ("k-means++", "random")


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns: arrays of the input's kind and device."""

    centers: Any      # (k, d), the input's dtype
    labels: Any       # (n,) int64, each point's centre
    inertia: float    # sum of the squared distances of the points to their centres
    n_iter: int       # iterations of the best run


# --------------------------------------------------------------------------- the two steps

def _points(op: str, x) -> None:
    C.float_array(op, "x", x, ndim=2)
    if x.shape[1] == 0:
        raise ValueError(f"{op}: x must have at least one feature, got shape {tuple(x.shape)}")


def _row_sq_norms(x):
    # einsum, as scikit-learn's row_norms: the same rounding, so the same ties.
    return backend.array_module(x).einsum("nd,nd->n", x, x)


@backend.interop
def kmeans_assign(x, centers, *, impl: str | None = None):
    """Each point's nearest centre: ``(labels, sq_dist)``.

    x: (n, d); centers: (k, d), k >= 1, same dtype and device. labels (n,) int64, the
    index j minimising ``||x_i - c_j||^2`` (the lowest on ties); sq_dist (n,) that minimum,
    computed as ``||x||^2 - 2 x.c + ||c||^2`` by the GEMM impls, clamped at 0.
    """
    op = "kmeans_assign"
    _points(op, x)
    C.float_array(op, "centers", centers, ndim=2)
    C.same_kind(op, "x", x, centers=centers)
    if centers.shape[0] == 0 or centers.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: centers must have shape (k >= 1, {x.shape[1]}) for x of "
                         f"shape {tuple(x.shape)}, got {tuple(centers.shape)}")
    return kernels.dispatch(op, impl, x, centers, _row_sq_norms(x))


@backend.interop
def kmeans_update(x, labels, k: int, *, impl: str | None = None):
    """Each cluster's sum and size: ``(sums, counts)``.

    x: (n, d); labels: (n,) integers in [0, k) on x's device. sums (k, d) in x's dtype,
    the sum of the points labelled j (zeros where none is), computed in a fixed order;
    counts (k,) int64. The centres are ``sums / counts`` where counts > 0.
    """
    op = "kmeans_update"
    _points(op, x)
    k = C.positive_int(op, "k", k)
    C.int_array(op, "labels", labels, ndim=1)
    if backend.device_of(labels) != backend.device_of(x):
        raise ValueError(f"{op}: labels are on {backend.device_of(labels)} but x is on "
                         f"{backend.device_of(x)}")
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{op}: labels must have shape ({x.shape[0]},) for x of shape "
                         f"{tuple(x.shape)}, got {tuple(labels.shape)}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"{op}: labels must lie in [0, {k}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return kernels.dispatch(op, impl, x, labels.astype(np.int64, copy=False), k)


# --------------------------------------------------------------------------- seeding

def _generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"kmeans: seed must be None, an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)


def _sq_distances_to(points, x, x_sq_norms):
    """(m, n) squared distances from each of ``points`` (m, d) to each row of x, >= 0."""
    xp = backend.array_module(x)
    d2 = xp.matmul(points, x.T)
    d2 *= -2
    d2 += _row_sq_norms(points)[:, None]
    d2 += x_sq_norms[None, :]
    return xp.maximum(d2, 0, out=d2)


def _plusplus(x, k: int, x_sq_norms, rng: np.random.Generator, n_local_trials: int | None):
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's variant): each new
    centre is the best of ``n_local_trials`` points drawn with probability proportional to
    their squared distance to the nearest centre so far."""
    xp = backend.array_module(x)
    n = x.shape[0]
    trials = 2 + int(np.log(k)) if n_local_trials is None else n_local_trials
    centers = xp.empty((k, x.shape[1]), x.dtype)
    centers[0] = x[int(rng.integers(n))]
    closest = _sq_distances_to(centers[:1], x, x_sq_norms)[0]
    potential = float(closest.sum())
    for c in range(1, k):
        targets = xp.asarray(rng.uniform(size=trials) * potential)
        candidates = xp.minimum(xp.searchsorted(xp.cumsum(closest), targets), n - 1)
        d2 = xp.minimum(_sq_distances_to(x[candidates], x, x_sq_norms), closest[None, :])
        potentials = d2.sum(axis=1)
        best = int(xp.argmin(potentials))
        potential, closest = float(potentials[best]), d2[best]
        centers[c] = x[candidates[best]]
    return centers


def _check_k(op: str, x, k) -> int:
    k = C.positive_int(op, "k", k)
    if k > x.shape[0]:
        raise ValueError(f"{op}: k={k} clusters need at least {k} points, x has shape "
                         f"{tuple(x.shape)}")
    return k


def _finite(op: str, name: str, a) -> None:
    xp = backend.array_module(a)
    if not bool(xp.isfinite(a).all()):
        raise ValueError(f"{op}: {name} (shape {tuple(a.shape)}) holds NaN or infinite values")


def kmeans_plusplus(x, k: int, *, seed=None, n_local_trials: int | None = None):
    """k initial centres (k, d) for :func:`kmeans`, rows of x chosen by greedy k-means++.

    seed: None, an int or a ``numpy.random.Generator`` (the draws happen on the host; the
    distances on x's device). n_local_trials: candidates per centre, default 2 + ln(k).
    """
    op = "kmeans_plusplus"
    x, kind = backend.import_array(x) if C.is_array(x) else (x, "numpy")
    _points(op, x)
    k = _check_k(op, x, k)
    if n_local_trials is not None:
        n_local_trials = C.positive_int(op, "n_local_trials", n_local_trials)
    _finite(op, "x", x)
    centers = _plusplus(x, k, _row_sq_norms(x), _generator(seed), n_local_trials)
    return backend.export_array(centers, kind)


# --------------------------------------------------------------------------- Lloyd

def _tolerance(x, tol: float) -> float:
    """scikit-learn's: ``tol`` times the mean over the features of their variance."""
    return 0.0 if tol == 0 else float(x.var(axis=0).mean()) * tol


def _new_centers(x, sums, counts, labels, sq_dist):
    """``sums / counts``; each empty cluster first takes one of the points farthest from
    their centres, taken out of its old cluster (scikit-learn's relocation)."""
    xp = backend.array_module(x)
    sums, counts = sums.astype(x.dtype, copy=True), counts.copy()
    empty = backend.to_numpy(xp.flatnonzero(counts == 0))
    if empty.size:
        farthest = xp.argsort(-sq_dist)[:empty.size]
        for j, i in zip(empty.tolist(), backend.to_numpy(farthest).tolist()):
            old = int(labels[i])
            sums[old] -= x[i]
            counts[old] -= 1
            sums[j] = x[i]
            counts[j] = 1
    return sums / xp.maximum(counts, 1)[:, None].astype(x.dtype)


def _lloyd(x, centers, x_sq_norms, max_iter: int, tol: float, impl: str | None):
    """One run from ``centers``: ``(centers, labels, inertia, n_iter)``."""
    xp = backend.array_module(x)
    k = centers.shape[0]
    labels_old, converged = None, False
    for iteration in range(max_iter):
        labels, sq_dist = kernels.dispatch("kmeans_assign", impl, x, centers, x_sq_norms)
        sums, counts = kernels.dispatch("kmeans_update", impl, x, labels, k)
        new = _new_centers(x, sums, counts, labels, sq_dist)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if labels_old is not None and bool(xp.array_equal(labels, labels_old)):
            converged = True  # the labels did not change: the centres cannot either
            break
        if shift <= tol:
            break
        labels_old = labels
    if not converged:
        labels, _ = kernels.dispatch("kmeans_assign", impl, x, centers, x_sq_norms)
    residual = x - centers[labels]
    return centers, labels, float((residual * residual).sum()), iteration + 1


def _initial_centers(x, k: int, init, x_sq_norms, rng, x_mean):
    xp = backend.array_module(x)
    if isinstance(init, str):
        if init == "k-means++":
            return _plusplus(x, k, x_sq_norms, rng, None)
        return x[xp.asarray(rng.choice(x.shape[0], k, replace=False))]
    return init - x_mean


def _check_init(op: str, x, k: int, init, n_init: int):
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"{op}: init must be one of {', '.join(INITS)} or a (k, d) array, "
                             f"got {init!r}")
        return init
    init, _ = backend.import_array(init) if C.is_array(init) else (init, None)
    C.float_array(op, "init", init, ndim=2)
    C.same_kind(op, "x", x, init=init)
    if tuple(init.shape) != (k, x.shape[1]):
        raise ValueError(f"{op}: init must have shape ({k}, {x.shape[1]}) for k={k} and x of "
                         f"shape {tuple(x.shape)}, got {tuple(init.shape)}")
    if n_init != 1:
        raise ValueError(f"{op}: n_init must be 1 when init gives the centres, got {n_init}")
    _finite(op, "init", init)
    return init


def kmeans(x, k: int, *, init="k-means++", n_init: int = 1, max_iter: int = 300,
           tol: float = 1e-4, seed=None, impl: str | None = None) -> KMeansResult:
    """Cluster the rows of x into k groups by Lloyd's algorithm: ``KMeansResult(centers,
    labels, inertia, n_iter)``.

    x: (n, d) float array, NumPy or CuPy (torch/JAX arrays are viewed through DLPack), n >= k.
    init: "k-means++" (default), "random" (k distinct rows) or a (k, d) array of starting
    centres (then n_init must be 1). n_init: runs from different seeds, the lowest inertia
    kept. max_iter: iterations per run. tol: stop once the centres move less than
    ``tol * mean(var(x, axis=0))`` (sum of squared moves); they also stop when no label
    changes. seed: None, an int or a numpy Generator. impl: force an implementation of
    the two steps (``numpy``, ``reference``; ``cuda``, ``numba_cuda`` on the GPU).

    Minimises the inertia ``sum_i ||x_i - c_{label_i}||^2`` to a local minimum; from the
    same initial centres it gives scikit-learn's ``KMeans(init=centres, n_init=1)`` result.
    """
    op = "kmeans"
    x, kind = backend.import_array(x) if C.is_array(x) else (x, "numpy")
    _points(op, x)
    k = _check_k(op, x, k)
    n_init = C.positive_int(op, "n_init", n_init)
    max_iter = C.positive_int(op, "max_iter", max_iter)
    tol = C.finite_float(op, "tol", tol, low=0.0)
    init = _check_init(op, x, k, init, n_init)
    rng = _generator(seed)
    _finite(op, "x", x)
    # Centred data, as scikit-learn: the expanded distance ||x||^2 - 2 x.c + ||c||^2
    # cancels less when the norms are small.
    x_mean = x.mean(axis=0)
    centred = x - x_mean
    x_sq_norms = _row_sq_norms(centred)
    tol = _tolerance(x, tol)
    best = None
    for _ in range(n_init):
        start = _initial_centers(centred, k, init, x_sq_norms, rng, x_mean)
        run = _lloyd(centred, start, x_sq_norms, max_iter, tol, impl)
        if best is None or run[2] < best[2]:
            best = run
    centers, labels, inertia, n_iter = best
    return KMeansResult(backend.export_array(centers + x_mean, kind),
                        backend.export_array(labels, kind), inertia, n_iter)
