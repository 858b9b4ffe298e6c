"""The numba_cuda cross-entropy kernels under the CUDA simulator (CI has no GPU): each impl's
function is called directly on NumPy arrays and compared with the reference impl in float64.

The simulator runs every CUDA thread as a Python thread, so shapes are tiny. On a GPU
machine these impls are tested on CuPy arrays by tests/test_loss.py instead."""
from typing import NamedTuple

import numpy as np
import pytest

from gpuconv import kernels
from gpuconv.kernels.numba_cuda import simulator_enabled
from support import assert_close, rng_for

pytestmark = pytest.mark.skipif(
    not simulator_enabled(),
    reason="runs under NUMBA_ENABLE_CUDASIM=1 (set by conftest without a GPU)")

DTYPES = ("float64", "float32")


def _impl(op: str, name: str):
    return next(i.fn for i in kernels.implementations(op) if i.name == name)


class Case(NamedTuple):
    shape: tuple                 # scores (N, C, *d)
    ignore_index: int | None     # None: -100 and no target ignored
    weighted: bool
    label_smoothing: float
    reduction: str


CASES = {
    "2d-mean": Case((4, 3), None, False, 0.0, "mean"),
    "seq-ignored-weighted-smoothed-sum": Case((3, 4, 2), -100, True, 0.2, "sum"),
    "image-real-class-ignored-weighted-none": Case((2, 3, 2, 2), 1, True, 0.1, "none"),
    "batch1-weighted-full-smoothing-mean": Case((1, 5), None, True, 1.0, "mean"),
    "seq-ignored-smoothed-mean": Case((2, 4, 3), -100, False, 0.3, "mean"),
}


class Problem(NamedTuple):
    x: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None
    grad_output: np.ndarray
    scalars: tuple               # ignore_index, reduction, label_smoothing


def problem(name: str) -> Problem:
    case = CASES[name]
    rng = rng_for("numba_cross_entropy", name)
    n_classes = case.shape[1]
    target = rng.integers(0, n_classes, (case.shape[0],) + case.shape[2:])
    ignore_index = -100 if case.ignore_index is None else case.ignore_index
    if case.ignore_index is not None:
        target.reshape(-1)[::3] = ignore_index
    weight = rng.uniform(0.5, 2.0, n_classes) if case.weighted else None
    loss_shape = target.shape if case.reduction == "none" else ()
    return Problem(2 * rng.standard_normal(case.shape), target, weight,
                   rng.standard_normal(loss_shape),
                   (ignore_index, case.reduction, case.label_smoothing))


def in_dtype(a, dtype):
    """``a`` rounded to ``dtype`` and the same values in float64 (None passes)."""
    if a is None:
        return None, None
    low = a.astype(dtype)
    return low, low.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_numba_cuda_cross_entropy_matches_reference(name, dtype):
    p = problem(name)
    (x, x64), (w, w64) = in_dtype(p.x, dtype), in_dtype(p.weight, dtype)
    out = _impl("cross_entropy", "numba_cuda")(x, p.target, w, *p.scalars)
    ref = _impl("cross_entropy", "reference")(x64, p.target, w64, *p.scalars)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_numba_cuda_cross_entropy_backward_matches_reference(name, dtype):
    p = problem(name)
    (x, x64), (w, w64), (g, g64) = (in_dtype(a, dtype) for a in (p.x, p.weight, p.grad_output))
    out = _impl("cross_entropy_backward", "numba_cuda")(g, x, p.target, w, *p.scalars)
    ref = _impl("cross_entropy_backward", "reference")(g64, x64, p.target, w64, *p.scalars)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref, dtype)


def test_numba_cuda_cross_entropy_accepts_negatively_strided_inputs():
    p = problem("image-real-class-ignored-weighted-none")
    x, target = p.x[::-1, ::-1], p.target[::-1]
    out = _impl("cross_entropy", "numba_cuda")(x, target, p.weight[::-1], *p.scalars)
    ref = _impl("cross_entropy", "reference")(np.ascontiguousarray(x),
                                              np.ascontiguousarray(target),
                                              p.weight[::-1].copy(), *p.scalars)
    assert_close(out, ref, "float64")


def test_numba_cuda_cross_entropy_backward_accepts_negatively_strided_inputs():
    p = problem("image-real-class-ignored-weighted-none")
    g, x, target = p.grad_output[:, ::-1], p.x[:, :, ::-1], p.target[:, ::-1]
    out = _impl("cross_entropy_backward", "numba_cuda")(g, x, target, p.weight, *p.scalars)
    ref = _impl("cross_entropy_backward", "reference")(
        *map(np.ascontiguousarray, (g, x, target)), p.weight, *p.scalars)
    assert_close(out, ref, "float64")
