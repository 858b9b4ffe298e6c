"""The numba_cuda pooling kernels under the CUDA simulator (CI has no GPU): each impl's
function is called directly on NumPy arrays and compared with the reference impl in float64,
max-pool indices exactly (PyTorch's tie and NaN rule included).

The simulator runs every CUDA thread as a Python thread, so shapes are tiny. On a GPU
machine these impls, and the CUDA C ones, are tested on CuPy arrays by tests/test_pool.py."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from gpuconv import kernels
from gpuconv.functional import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from gpuconv.kernels.numba_cuda import simulator_enabled
from support import assert_close, rng_for

pytestmark = pytest.mark.skipif(
    not simulator_enabled(),
    reason="runs under NUMBA_ENABLE_CUDASIM=1 (set by conftest without a GPU)")

DTYPES = ("float64", "float32")
POOL_OPS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")


def _impl(op: str, name: str):
    return next(i for i in kernels.implementations(op) if i.name == name)


def _run(op: str, name: str, *args):
    return _impl(op, name).fn(*args)


def _distinct(shape) -> np.ndarray:
    """Distinct integers (exact in float32): no ties."""
    return rng_for("distinct", shape).permutation(int(np.prod(shape))).reshape(shape) * 1.0


def _ties_and_nans(shape) -> np.ndarray:
    """Values in {0, 1, 2} (many ties), two NaN and a row of -inf."""
    x = rng_for("ties", shape).integers(0, 3, shape).astype(np.float64)
    x[0, 0, 0, 1] = x[-1, -1, -1, -2] = np.nan
    x[0, -1, -1, :] = -np.inf
    return x


class MaxCase(NamedTuple):
    shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool = False

    def window(self) -> tuple:
        return self.kernel, self.stride, self.padding, self.dilation

    def reference(self, x):
        """(out, indices) of the reference; their shape gives the output size."""
        return max_pool2d(x, *self.window(), self.ceil_mode, return_indices=True,
                          impl="reference")


MAX_CASES = {
    "k2-s1-p1-batch1": MaxCase((1, 2, 5, 6), (2, 2), (1, 1), (1, 1), (1, 1)),
    "k3-s2-p1-ceil-odd": MaxCase((2, 1, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1), True),
    "rect-stride-gt-kernel-ceil": MaxCase((1, 3, 6, 8), (2, 1), (3, 2), (1, 0), (1, 1), True),
    "dilation-2x3": MaxCase((2, 2, 8, 9), (3, 2), (1, 2), (1, 1), (2, 3)),
    "1d-as-h1-dilation-ceil": MaxCase((2, 2, 1, 11), (1, 3), (1, 2), (0, 1), (1, 2), True),
}


class AvgCase(NamedTuple):
    shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def reference(self, x):
        return avg_pool2d(x, self.kernel, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override, impl="reference")

    def forward_args(self, out_size) -> tuple:
        return (self.kernel, self.stride, self.padding, out_size, self.count_include_pad,
                self.divisor_override)

    def backward_args(self) -> tuple:
        return (self.shape, self.kernel, self.stride, self.padding, self.count_include_pad,
                self.divisor_override)


AVG_CASES = {
    "k3-s2-p1-batch1": AvgCase((1, 2, 7, 6), (3, 3), (2, 2), (1, 1)),
    "ceil-exclude-pad": AvgCase((2, 1, 6, 7), (3, 3), (2, 2), (1, 1), True, False),
    "k4-s3-p2-ceil-past-padded-edge": AvgCase((1, 2, 5, 5), (4, 4), (3, 3), (2, 2), True),
    "stride-gt-kernel-divisor-override": AvgCase((2, 2, 7, 8), (2, 3), (3, 2), (1, 1),
                                                 divisor_override=5),
    "1d-as-h1-exclude-pad-ceil": AvgCase((1, 3, 1, 10), (1, 4), (1, 3), (0, 2), True, False),
}

# (input shape, output size)
ADAPTIVE_CASES = {
    "uneven": ((2, 2, 7, 9), (3, 4)),
    "larger-than-input-batch1": ((1, 2, 3, 5), (5, 7)),
    "global": ((2, 3, 4, 5), (1, 1)),
    "1d-as-h1": ((2, 2, 1, 10), (1, 4)),
}


def _grad(shape, *key) -> np.ndarray:
    return rng_for("grad", shape, *key).standard_normal(shape)


# --------------------------------------------------------------------------- max pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MAX_CASES)
def test_numba_cuda_max_pool2d_on_distinct_values_matches_reference(name, dtype):
    case = MAX_CASES[name]
    x = _distinct(case.shape)
    ref, ref_idx = case.reference(x)
    out, idx = _run("max_pool2d", "numba_cuda", x.astype(dtype), *case.window(), ref.shape[2:])
    assert out.dtype == np.dtype(dtype) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MAX_CASES)
def test_numba_cuda_max_pool2d_ties_and_nan_pick_the_reference_index(name, dtype):
    case = MAX_CASES[name]
    x = _ties_and_nans(case.shape)
    ref, ref_idx = case.reference(x)
    out, idx = _run("max_pool2d", "numba_cuda", x.astype(dtype), *case.window(), ref.shape[2:])
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", MAX_CASES)
def test_numba_cuda_max_pool2d_backward_matches_reference(name, dtype):
    # Indices of tied inputs: overlapping windows often share a maximum, so several
    # gradients land on one input element, which must gather every one of them.
    case = MAX_CASES[name]
    _, idx = case.reference(_ties_and_nans(case.shape))
    g = _grad(idx.shape, name)
    out = _run("max_pool2d_backward", "numba_cuda", g.astype(dtype), idx, case.shape,
               *case.window())
    assert out.dtype == np.dtype(dtype)
    ref = _run("max_pool2d_backward", "reference", g, idx, case.shape, *case.window())
    assert_close(out, ref, dtype)


def test_numba_cuda_max_pool2d_backward_of_an_empty_batch_is_empty():
    idx = np.zeros((0, 2, 3, 3), dtype=np.int64)
    out = _run("max_pool2d_backward", "numba_cuda", np.zeros((0, 2, 3, 3)), idx, (0, 2, 6, 6),
               (2, 2), (2, 2), (0, 0), (1, 1))
    assert out.shape == (0, 2, 6, 6)


def test_numba_cuda_max_pool2d_reads_negatively_strided_input():
    case = MAX_CASES["k3-s2-p1-ceil-odd"]
    x = _distinct(case.shape)[:, :, ::-1, ::-1]
    ref, ref_idx = case.reference(np.ascontiguousarray(x))
    out, idx = _run("max_pool2d", "numba_cuda", x, *case.window(), ref.shape[2:])
    np.testing.assert_array_equal(idx, ref_idx)
    assert_close(out, ref, "float64")


# --------------------------------------------------------------------------- average pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", AVG_CASES)
def test_numba_cuda_avg_pool2d_matches_reference(name, dtype):
    case = AVG_CASES[name]
    x = rng_for("avg", name).standard_normal(case.shape)
    ref = case.reference(x)
    out = _run("avg_pool2d", "numba_cuda", x.astype(dtype), *case.forward_args(ref.shape[2:]))
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", AVG_CASES)
def test_numba_cuda_avg_pool2d_backward_matches_reference(name, dtype):
    case = AVG_CASES[name]
    g = _grad(case.reference(np.zeros(case.shape)).shape, name)
    out = _run("avg_pool2d_backward", "numba_cuda", g.astype(dtype), *case.backward_args())
    assert out.dtype == np.dtype(dtype)
    assert_close(out, _run("avg_pool2d_backward", "reference", g, *case.backward_args()), dtype)


# --------------------------------------------------------------------------- adaptive average

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ADAPTIVE_CASES)
def test_numba_cuda_adaptive_avg_pool2d_matches_reference(name, dtype):
    shape, out_size = ADAPTIVE_CASES[name]
    x = rng_for("adaptive", name).standard_normal(shape)
    out = _run("adaptive_avg_pool2d", "numba_cuda", x.astype(dtype), out_size)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, adaptive_avg_pool2d(x, out_size, impl="reference"), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ADAPTIVE_CASES)
def test_numba_cuda_adaptive_avg_pool2d_backward_matches_reference(name, dtype):
    shape, out_size = ADAPTIVE_CASES[name]
    g = _grad(shape[:2] + out_size, name)
    out = _run("adaptive_avg_pool2d_backward", "numba_cuda", g.astype(dtype), shape)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, _run("adaptive_avg_pool2d_backward", "reference", g, shape), dtype)


# --------------------------------------------------------------------------- registration

@pytest.mark.parametrize("op", [op + suffix for op in POOL_OPS for suffix in ("", "_backward")])
def test_cuda_c_pooling_impl_is_registered_for_the_gpu_above_numba_cuda(op):
    cuda, numba = _impl(op, "cuda"), _impl(op, "numba_cuda")
    assert cuda.device == numba.device == "cuda"
    assert cuda.dtypes == numba.dtypes == {np.dtype(d) for d in DTYPES}
    assert cuda.priority > numba.priority
