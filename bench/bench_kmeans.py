"""k-means fits on the CPU: gpuconv's numpy impl beside scikit-learn's KMeans (Lloyd), from
the same k-means++ centres with tol 0, on the cases of ``bench/suites/kmeans.json`` (the
suite ``GPUCONV_BENCH_SUITE`` names, ``quick`` by default; see ``bench/wrappers.py``).
Each fit's inertia is checked against scikit-learn's before it is timed."""
import numpy as np
import pytest

from gpuconv import benchmark, threads
from gpuconv.benchmark.kmeans import _data
from gpuconv.cluster import kmeans, kmeans_plusplus
from gpuconv.testing import TOL
from wrappers import SUITE

sklearn_cluster = pytest.importorskip("sklearn.cluster")

CASES = [pytest.param(case, id=case["label"]) for case in benchmark.load_suite("kmeans", SUITE)]


def _problem(case):
    x = _data(case).astype(np.float32)
    return x, kmeans_plusplus(x, case["k"], seed=0)


def _sklearn_fit(x, init, case):
    return sklearn_cluster.KMeans(case["k"], init=init, n_init=1, max_iter=case["max_iter"],
                                  tol=0.0).fit(x)


@pytest.mark.parametrize("case", CASES)
def test_numpy_impl(benchmark, case):
    x, init = _problem(case)
    ours = kmeans(x, case["k"], init=init, max_iter=case["max_iter"], tol=0.0, impl="numpy")
    theirs = _sklearn_fit(x, init, case)
    assert abs(ours.inertia - theirs.inertia_) <= TOL["float32"] * theirs.inertia_
    benchmark.group = f"kmeans {case['label']}"
    benchmark(kmeans, x, case["k"], init=init, max_iter=case["max_iter"], tol=0.0, impl="numpy")


@pytest.mark.parametrize("case", CASES)
def test_sklearn(benchmark, case):
    from threadpoolctl import threadpool_limits

    x, init = _problem(case)
    benchmark.group = f"kmeans {case['label']}"
    with threadpool_limits(threads.default_threads()):
        benchmark(_sklearn_fit, x, init, case)
