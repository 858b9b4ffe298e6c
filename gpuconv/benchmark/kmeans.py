"""k-means benchmark: whole fits of :func:`gpuconv.cluster.kmeans` beside scikit-learn's
``KMeans`` (Lloyd, on the CPU) and cuML's (on a GPU, where it is installed).

Every fit of a case starts from the same k-means++ centres, with ``tol=0`` and the case's
``max_iter``, so all of them run the same iterations (``iterations`` in each row: those of
the reference fit, which stops earlier only when no label changes). Each row's result is checked first:
its inertia against scikit-learn's fit in float64 on the same data (relative error within
the dtype's tolerance). Cases (``bench/suites/kmeans.json``): ``n`` points in ``d``
dimensions drawn around ``k`` random centres (``data: "blobs"``), or scikit-learn's 8x8
digits (``data: "digits"``, 1797 x 64).

FLOPs per fit: (iterations + 1) assignments of 2 n k d (the GEMM) and the iterations'
updates of n d additions. Minimum bytes: x read twice per iteration (GEMM and update) and
once more for the last assignment, the labels written each time (8 bytes each).
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from .. import backend, kernels
from .cases import Pass
from .timing import time_call

BLOBS_SPREAD = 1.0  # centres uniform in [-1, 1]^d, points N(centre, 1): overlapping
DTYPES = {"float32": np.float32}


def _data(case: dict) -> np.ndarray:
    if case.get("data", "blobs") == "digits":
        from sklearn.datasets import load_digits
        return load_digits().data.astype(np.float64)
    rng = np.random.default_rng(0)
    centres = rng.uniform(-BLOBS_SPREAD, BLOBS_SPREAD, (case["k"], case["d"]))
    return centres[rng.integers(0, case["k"], case["n"])] + rng.standard_normal(
        (case["n"], case["d"]))


def _pass(case: dict, n: int, d: int, iters: int) -> Pass:
    k = case["k"]
    return Pass("kmeans_assign", "fit", (iters + 1) * 2 * n * k * d + iters * n * d,
                (2 * iters + 1) * n * d, (iters + 1) * n * 8, make=None, call=None,
                torch_call=None)


def _sklearn():
    try:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return KMeans, threadpool_limits


def _cuml(device: str):
    if device != "cuda":
        return None
    try:
        from cuml.cluster import KMeans
    except Exception:  # not installed, or its CUDA libraries do not load
        return None
    return KMeans


def _reference_fit(x64, init64, k: int, max_iter: int):
    """(inertia, iterations) of scikit-learn in float64, or of gpuconv's numpy impl in
    float64 where scikit-learn is missing (itself tested against scikit-learn)."""
    sk = _sklearn()
    if sk is None:
        from ..cluster import kmeans
        r = kmeans(x64, k, init=init64, max_iter=max_iter, tol=0.0, impl="numpy")
        return r.inertia, r.n_iter
    fit = sk[0](k, init=init64, n_init=1, max_iter=max_iter, tol=0.0).fit(x64)
    return float(fit.inertia_), int(fit.n_iter_)


def kmeans_rows(cases: list, device: str, dtype: str, impls, ceilings: dict, quick: bool,
                threads: int | None, log) -> list:
    """One row per implementation and reference per case (see the module docstring)."""
    from . import _row, _with_ratios, format_row
    from ..cluster import kmeans, kmeans_plusplus

    if dtype not in DTYPES:
        log(f"kmeans: dtype {dtype} is not benchmarked (float32 only); skipped")
        return []
    xp = backend.cupy_or_none() if device == "cuda" else np
    rows = []
    for case in cases:
        k, max_iter = case["k"], case["max_iter"]
        x64 = _data(case)
        init64 = kmeans_plusplus(x64, k, seed=0)
        # The reference fits the float32-rounded data, in float64.
        x32, init32 = x64.astype(np.float32), init64.astype(np.float32)
        ref_inertia, iters = _reference_fit(x32.astype(np.float64), init32.astype(np.float64),
                                            k, max_iter)
        p = _pass(case, *x64.shape, iters)
        x, init = xp.asarray(x32), xp.asarray(init32)
        case_rows = []

        def add(source, impl, fit, dev, inertia_of, sets):
            result = fit(*sets[0])
            err = abs(inertia_of(result) - ref_inertia) / ref_inertia
            timing = time_call(fit, sets, dev, quick)
            row = _row(case, p, source, impl, dtype, device, timing, err, ceilings, 4)
            case_rows.append({**row, "iterations": iters})

        for impl in kernels.available("kmeans_assign", x):
            if impls and impl not in impls:
                continue
            add("gpuconv", impl,
                lambda a, c, impl=impl: kmeans(a, k, init=c, max_iter=max_iter, tol=0.0,
                                               impl=impl),
                device, lambda r: r.inertia, [(x, init)])
        sk = _sklearn()
        if sk is not None:
            KMeans, threadpool_limits = sk
            limits = threadpool_limits(threads) if threads else nullcontext()
            with limits:
                add("sklearn", "sklearn_lloyd",
                    lambda a, c: KMeans(k, init=c, n_init=1, max_iter=max_iter, tol=0.0).fit(a),
                    "cpu", lambda r: float(r.inertia_), [(x32, init32)])
        cuml_kmeans = _cuml(device)
        if cuml_kmeans is not None:
            add("cuml", "cuml",
                lambda a, c: cuml_kmeans(n_clusters=k, init=c, n_init=1, max_iter=max_iter,
                                         tol=0.0).fit(a),
                device, lambda r: float(r.inertia_), [(x, init)])
        for r in _with_ratios(case_rows):
            log(format_row(r))
        rows += case_rows
    return rows
