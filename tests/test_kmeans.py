"""k-means: the two steps (kmeans_assign, kmeans_update) of every impl against the reference,
and the whole algorithm against scikit-learn's KMeans from the same initial centres.

The GPU impls run here as they run everywhere: ``cuda`` through the ``gpu`` tests (on a GPU,
or under the CUDA emulator), ``numba_cuda`` under numba's simulator (bottom of the file)
and through the real numba-cuda compiler.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from gpuconv import backend, kernels
from gpuconv.cluster import kmeans, kmeans_assign, kmeans_plusplus, kmeans_update
from gpuconv.kernels.numba_cuda import simulator_enabled
from support import TOL, assert_close, impl_params, on_device_of, rel_err, rng_for, with_impls

sklearn_cluster = pytest.importorskip("sklearn.cluster")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

DTYPES = ("float64", "float32")
# scikit-learn and gpuconv from the same initial centres: the same local minimum.
SKLEARN_RTOL = 1e-6


class StepCase(NamedTuple):
    n: int
    d: int
    k: int


STEP_CASES = {
    "no-points": StepCase(0, 3, 2),
    "one-point": StepCase(1, 3, 1),
    "one-feature": StepCase(37, 1, 4),
    "few-centres-thread-per-row": StepCase(101, 5, 7),
    "many-centres-warp-per-row": StepCase(70, 3, 40),
    "several-tiles-per-cluster": StepCase(700, 2, 2),
    "wide-rows": StepCase(9, 300, 3),
}


def _step_problem(case: StepCase):
    rng = rng_for("kmeans-step", case)
    x = rng.standard_normal((case.n, case.d))
    centers = 3 * rng.standard_normal((case.k, case.d))
    labels = rng.integers(0, case.k, case.n)
    if case.k > 1:
        labels[labels == case.k - 1] = 0      # the last cluster is empty
    return x, centers, labels


def _impl_fn(op: str, name: str):
    return next(i.fn for i in kernels.implementations(op) if i.name == name)


# --------------------------------------------------------------------------- the steps

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, impl", with_impls(list(STEP_CASES), list(STEP_CASES),
                                                  "kmeans_assign"))
def test_assign_matches_the_reference(name, impl, dtype):
    x64, c64, _ = _step_problem(STEP_CASES[name])
    x, c = on_device_of(impl, "kmeans_assign", x64.astype(dtype), c64.astype(dtype))
    labels, sq_dist = kmeans_assign(x, c, impl=impl)
    ref_labels, ref_dist = kmeans_assign(x64, c64, impl="reference")
    assert labels.dtype == np.int64 and sq_dist.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(backend.to_numpy(labels), ref_labels)
    assert_close(sq_dist, ref_dist, dtype, "sq_dist")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, impl", with_impls(list(STEP_CASES), list(STEP_CASES),
                                                  "kmeans_update"))
def test_update_matches_the_reference_with_an_empty_cluster(name, impl, dtype):
    case = STEP_CASES[name]
    x64, _, labels = _step_problem(case)
    x, lab = on_device_of(impl, "kmeans_update", x64.astype(dtype), labels)
    sums, counts = kmeans_update(x, lab, case.k, impl=impl)
    ref_sums, ref_counts = kmeans_update(x64, labels, case.k, impl="reference")
    assert sums.dtype == np.dtype(dtype) and counts.dtype == np.int64
    np.testing.assert_array_equal(backend.to_numpy(counts), ref_counts)
    assert_close(sums, ref_sums, dtype, "sums")
    if case.k > 1:
        assert ref_counts[-1] == 0 and not np.any(backend.to_numpy(sums)[-1])


@pytest.mark.parametrize("impl", impl_params("kmeans_update", include_reference=True))
def test_update_gives_the_same_bits_on_every_run(impl):
    x64, _, labels = _step_problem(STEP_CASES["several-tiles-per-cluster"])
    x, lab = on_device_of(impl, "kmeans_update", x64.astype(np.float32), labels)
    first = backend.to_numpy(kmeans_update(x, lab, 2, impl=impl)[0])
    again = backend.to_numpy(kmeans_update(x, lab, 2, impl=impl)[0])
    assert first.tobytes() == again.tobytes()


@pytest.mark.parametrize("impl", impl_params("kmeans_assign"))
def test_assign_breaks_exact_ties_towards_the_lowest_index(impl):
    # Point 0 is as far from both centres, point 1 lies on centre 1: sq_dist 0, not < 0.
    x = np.array([[0.0, 0.0], [1.0, 1.0]])
    c = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0]])
    labels, sq_dist = kmeans_assign(*on_device_of(impl, "kmeans_assign", x, c), impl=impl)
    np.testing.assert_array_equal(backend.to_numpy(labels), [0, 0])
    np.testing.assert_array_equal(backend.to_numpy(sq_dist), [2.0, 0.0])


# --------------------------------------------------------------------------- against scikit-learn

def _blobs():
    x, _ = sklearn_datasets.make_blobs(3000, 6, centers=8, cluster_std=2.5, random_state=0)
    return x, 8


def _digits():
    return sklearn_datasets.load_digits().data, 10


DATASETS = {"blobs": _blobs, "digits": _digits}
# The expanded-distance impls; the reference's exact differences break the exact ties of
# the integer digits data differently from scikit-learn's expanded form, by design.
FIT_IMPLS = [p for p in impl_params("kmeans_assign") if p.values[0] != "reference"]


def _sklearn(x, k, init, **kwargs):
    return sklearn_cluster.KMeans(k, init=init, n_init=1, **kwargs).fit(x)


def _assert_same_fit(ours, theirs, rtol):
    assert ours.n_iter == theirs.n_iter_
    assert abs(ours.inertia - theirs.inertia_) <= rtol * theirs.inertia_
    np.testing.assert_array_equal(backend.to_numpy(ours.labels), theirs.labels_)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("impl", FIT_IMPLS)
def test_kmeans_matches_sklearn_from_the_same_initial_centres(impl, dataset, seed):
    x64, k = DATASETS[dataset]()
    init = kmeans_plusplus(x64, k, seed=seed)
    theirs = _sklearn(x64, k, init)
    x, c = on_device_of(impl, "kmeans_assign", x64, init)
    ours = kmeans(x, k, init=c, impl=impl)
    _assert_same_fit(ours, theirs, SKLEARN_RTOL)
    assert backend.device_of(ours.centers) == backend.device_of(x)
    assert rel_err(ours.centers, theirs.cluster_centers_) <= TOL["float64"]


@pytest.mark.parametrize("impl", FIT_IMPLS)
def test_kmeans_matches_sklearn_in_float32(impl):
    x64, k = _blobs()
    init = kmeans_plusplus(x64, k, seed=3).astype(np.float32)
    theirs = _sklearn(x64.astype(np.float32), k, init)
    x, c = on_device_of(impl, "kmeans_assign", x64.astype(np.float32), init)
    ours = kmeans(x, k, init=c, impl=impl)
    assert ours.centers.dtype == np.float32
    assert abs(ours.inertia - theirs.inertia_) <= TOL["float32"] * theirs.inertia_


@pytest.mark.parametrize("kwargs", [dict(max_iter=1), dict(max_iter=3), dict(tol=0.5),
                                    dict(tol=0.0)], ids=str)
@pytest.mark.parametrize("impl", FIT_IMPLS)
def test_max_iter_and_tol_stop_where_sklearn_stops(impl, kwargs):
    # Blobs, not the integer digits: after one or two steps from data points, digits has
    # points at exactly equal distances from two centres, which any two BLAS libraries may
    # round apart (the full runs above end at the same minimum regardless).
    x64, k = _blobs()
    init = kmeans_plusplus(x64, k, seed=4)
    theirs = _sklearn(x64, k, init, **kwargs)
    x, c = on_device_of(impl, "kmeans_assign", x64, init)
    ours = kmeans(x, k, init=c, impl=impl, **kwargs)
    _assert_same_fit(ours, theirs, SKLEARN_RTOL)


@pytest.mark.parametrize("impl", FIT_IMPLS)
def test_an_empty_cluster_takes_the_farthest_point_as_sklearn_does(impl):
    x64, k = _blobs()
    init = kmeans_plusplus(x64, k, seed=5)
    init[2] = 1e3  # no point is nearest to this centre in the first assignment
    theirs = _sklearn(x64, k, init)
    x, c = on_device_of(impl, "kmeans_assign", x64, init)
    ours = kmeans(x, k, init=c, impl=impl)
    _assert_same_fit(ours, theirs, SKLEARN_RTOL)
    assert np.bincount(backend.to_numpy(ours.labels), minlength=k).min() > 0


def test_more_clusters_than_distinct_points_gives_finite_centres():
    x = np.repeat(np.eye(3), 4, axis=0)                  # 12 points, 3 distinct
    result = kmeans(x, 5, seed=0)
    assert np.all(np.isfinite(result.centers)) and result.inertia <= 1e-20
    assert set(np.unique(result.labels)) <= set(range(5))


# --------------------------------------------------------------------------- k-means++

def test_kmeans_plusplus_picks_distinct_rows_reproducibly():
    x, k = _blobs()
    a, b = kmeans_plusplus(x, k, seed=7), kmeans_plusplus(x, k, seed=7)
    np.testing.assert_array_equal(a, b)
    rows = {tuple(r) for r in x}
    assert all(tuple(c) in rows for c in a) and len({tuple(c) for c in a}) == k


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_plusplus_seeds_every_separated_blob(seed):
    x, truth = sklearn_datasets.make_blobs(600, 2, centers=6, cluster_std=0.3,
                                           center_box=(-30, 30), random_state=seed)
    centers = kmeans_plusplus(x, 6, seed=seed)
    nearest = np.argmin(((centers[:, None] - x[None]) ** 2).sum(-1), axis=1)
    assert len(set(truth[nearest])) == 6


def test_kmeans_with_kmeans_plusplus_is_as_good_as_sklearns():
    x, k = _digits()
    ours = kmeans(x, k, n_init=4, seed=0)
    theirs = sklearn_cluster.KMeans(k, n_init=4, random_state=0).fit(x)
    assert ours.inertia <= 1.02 * theirs.inertia_


def test_random_init_and_n_init_keep_the_best_run():
    x, k = _blobs()
    runs = [kmeans(x, k, init="random", seed=s).inertia for s in range(3)]
    best = kmeans(x, k, init="random", n_init=3, seed=np.random.default_rng(0))
    assert best.inertia <= max(runs) and best.centers.shape == (k, x.shape[1])


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU (or the emulator)")
def test_kmeans_on_cupy_arrays_returns_cupy_arrays_like_numpys_result():
    x64, k = _blobs()
    x = backend.to_device(x64.astype(np.float32), "cuda")
    ours = kmeans(x, k, seed=1)
    host = kmeans(x64.astype(np.float32), k, seed=1)
    assert backend.device_of(ours.centers) == backend.device_of(ours.labels) == "cuda"
    assert ours.n_iter == host.n_iter
    assert abs(ours.inertia - host.inertia) <= TOL["float32"] * host.inertia


# --------------------------------------------------------------------------- gpuconv bench kmeans

def test_kmeans_fit_flops_count_every_assignment_and_update():
    from gpuconv.benchmark.kmeans import _pass
    p = _pass({"label": "b", "k": 5}, 300, 4, 7)
    assert p.flops == 8 * 2 * 300 * 5 * 4 + 7 * 300 * 4
    assert p.bytes(4) == 4 * 15 * 300 * 4 + 8 * 8 * 300


def _quick_kmeans_report(device: str):
    from gpuconv import benchmark
    return benchmark.run(["kmeans"], quick=True, device=device, log=lambda s: None)


def test_quick_kmeans_bench_times_each_impl_beside_sklearn_with_a_ratio():
    rows = _quick_kmeans_report("cpu")["rows"]
    assert {(r["source"], r["impl"]) for r in rows} == {
        ("gpuconv", "reference"), ("gpuconv", "numpy"), ("sklearn", "sklearn_lloyd")}
    assert all(r["correct"] and r["ratio_to_best_reference"] > 0 for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU (or the emulator)")
def test_quick_gpu_kmeans_bench_checks_the_cuda_impl():
    rows = _quick_kmeans_report("cuda")["rows"]
    assert {"cuda", "sklearn_lloyd"} <= {r["impl"] for r in rows}
    assert all(r["correct"] for r in rows), [r for r in rows if not r["correct"]]


# --------------------------------------------------------------------------- bad input

def _x():
    return np.zeros((4, 2))


@pytest.mark.parametrize("call, error, match", [
    (lambda: kmeans(np.zeros(4), 2), ValueError, "x must have 2 dimensions"),
    (lambda: kmeans(np.zeros((4, 2), np.int64), 2), TypeError, "floating-point"),
    (lambda: kmeans(np.zeros((0, 2)), 1), ValueError, r"k=1 clusters need at least 1 points"),
    (lambda: kmeans(np.zeros((4, 0)), 1), ValueError, "at least one feature"),
    (lambda: kmeans(_x(), 5), ValueError, r"k=5 .* shape \(4, 2\)"),
    (lambda: kmeans(_x(), 0), ValueError, "k must be a positive int"),
    (lambda: kmeans(np.array([[0.0, np.nan], [1, 1]]), 1), ValueError, "NaN or infinite"),
    (lambda: kmeans(_x(), 2, init="kmeans++"), ValueError, "init must be one of"),
    (lambda: kmeans(_x(), 2, init=np.zeros((3, 2))), ValueError, r"init must have shape \(2, 2\)"),
    (lambda: kmeans(_x(), 2, init=np.zeros((2, 2), np.float32)), TypeError, "init has dtype"),
    (lambda: kmeans(_x(), 2, init=np.zeros((2, 2)), n_init=2), ValueError, "n_init must be 1"),
    (lambda: kmeans(_x(), 2, tol=-1.0), ValueError, "tol must be >= 0"),
    (lambda: kmeans(_x(), 2, max_iter=0), ValueError, "max_iter must be a positive int"),
    (lambda: kmeans(_x(), 2, seed="zero"), TypeError, "seed must be"),
    (lambda: kmeans_assign(_x(), np.zeros((2, 3))), ValueError, r"centers must have shape"),
    (lambda: kmeans_update(_x(), np.array([0, 1, 2, 3]), 3), ValueError, r"in \[0, 3\)"),
    (lambda: kmeans_update(_x(), np.array([0, 1]), 2), ValueError, r"labels must have shape"),
    (lambda: kmeans_update(_x(), np.zeros(4), 2), TypeError, "integer dtype"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_are_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- numba_cuda

@pytest.mark.skipif(not simulator_enabled(), reason="runs under NUMBA_ENABLE_CUDASIM=1")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["no-points", "one-point", "few-centres-thread-per-row",
                                  "several-tiles-per-cluster"])
def test_numba_cuda_steps_match_the_reference_under_the_simulator(name, dtype):
    case = STEP_CASES[name]
    x64, c64, labels = _step_problem(case)
    x, c = x64.astype(dtype), c64.astype(dtype)
    norms = (x * x).sum(axis=1)
    got_labels, got_dist = _impl_fn("kmeans_assign", "numba_cuda")(x, c, norms)
    ref_labels, ref_dist = _impl_fn("kmeans_assign", "reference")(x64, c64, None)
    np.testing.assert_array_equal(got_labels, ref_labels)
    assert got_dist.dtype == np.dtype(dtype)
    assert_close(got_dist, ref_dist, dtype)
    sums, counts = _impl_fn("kmeans_update", "numba_cuda")(x, labels, case.k)
    ref_sums, ref_counts = _impl_fn("kmeans_update", "reference")(x64, labels, case.k)
    np.testing.assert_array_equal(counts, ref_counts)
    assert sums.dtype == np.dtype(dtype)
    assert_close(sums, ref_sums, dtype)

