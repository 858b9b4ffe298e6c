"""The numba_cuda batch-norm kernels under the CUDA simulator (CI has no GPU): each impl's
function is called directly on NumPy arrays and compared with the reference impl in float64,
the in-place update of the running statistics included.

The simulator runs every CUDA thread as a Python thread, so shapes are tiny. On a GPU
machine these impls are tested on CuPy arrays by tests/test_norm.py instead."""
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
MOMENTUM = 0.3
EPS = 1e-5


def _impl(op: str, name: str):
    return next(i.fn for i in kernels.implementations(op) if i.name == name)


class Case(NamedTuple):
    shape: tuple
    training: bool
    weight: bool
    bias: bool
    running: bool        # running stats given (always in evaluation)


CASES = {
    "fc-train": Case((4, 3), True, True, True, True),
    "seq-train-plain": Case((2, 3, 4), True, False, False, True),
    "image-train-weight-only-no-running-stats": Case((2, 2, 2, 3), True, True, False, False),
    "batch1-seq-train-bias-only": Case((1, 2, 5), True, False, True, True),
    "image-eval": Case((3, 2, 2, 2), False, True, True, True),
    "batch1-seq-eval-plain": Case((1, 3, 4), False, False, False, True),
}
TRAINING_WITH_RUNNING = [n for n, c in CASES.items() if c.training and c.running]


class Problem(NamedTuple):
    x: np.ndarray
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    weight: np.ndarray | None
    bias: np.ndarray | None
    grad_output: np.ndarray

    def in_dtype(self, dtype):
        """The problem rounded to ``dtype``, and the same values in float64."""
        low = [None if a is None else a.astype(dtype) for a in self]
        return Problem(*low), Problem(*(None if a is None else a.astype(np.float64) for a in low))


def problem(name: str) -> Problem:
    case = CASES[name]
    rng = rng_for("numba_batch_norm", name)
    channels = case.shape[1]
    per_channel = (1, channels) + (1,) * (len(case.shape) - 2)
    x = (rng.normal(0, 2, per_channel)
         + rng.uniform(0.5, 3, per_channel) * rng.standard_normal(case.shape))
    running = case.running or not case.training
    return Problem(
        x,
        rng.standard_normal(channels) if running else None,
        rng.uniform(0.5, 2.0, channels) if running else None,
        rng.uniform(0.5, 2.0, channels) if case.weight else None,
        rng.standard_normal(channels) if case.bias else None,
        rng.standard_normal(case.shape))


def forward(impl: str, p: Problem, training: bool):
    return _impl("batch_norm", impl)(p.x, p.running_mean, p.running_var, p.weight, p.bias,
                                     training, MOMENTUM, EPS)


def backward(impl: str, p: Problem, training: bool):
    return _impl("batch_norm_backward", impl)(p.grad_output, p.x, p.running_mean, p.running_var,
                                              p.weight, p.bias, training, EPS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_numba_cuda_batch_norm_matches_reference(name, dtype):
    low, high = problem(name).in_dtype(dtype)
    out = forward("numba_cuda", low, CASES[name].training)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, forward("reference", high, CASES[name].training), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", TRAINING_WITH_RUNNING)
def test_numba_cuda_batch_norm_training_updates_running_stats_like_reference(name, dtype):
    low, high = problem(name).in_dtype(dtype)
    forward("numba_cuda", low, True)
    forward("reference", high, True)
    assert_close(low.running_mean, high.running_mean, dtype, "running_mean")
    assert_close(low.running_var, high.running_var, dtype, "running_var")


def test_numba_cuda_batch_norm_eval_leaves_running_stats_alone():
    p = problem("image-eval")
    before = p.running_mean.copy(), p.running_var.copy()
    forward("numba_cuda", p, False)
    assert np.array_equal(p.running_mean, before[0]) and np.array_equal(p.running_var, before[1])


def test_numba_cuda_batch_norm_updates_strided_running_stats_in_place():
    p = problem("fc-train")
    strided = p._replace(x=p.x[::-1, ::-1], running_mean=p.running_mean[::-1],
                         running_var=p.running_var[::-1])
    twin = Problem(*(None if a is None else np.ascontiguousarray(a) for a in strided))
    forward("numba_cuda", strided, True)
    forward("reference", twin, True)
    assert_close(p.running_mean[::-1], twin.running_mean, "float64", "running_mean")
    assert_close(p.running_var[::-1], twin.running_var, "float64", "running_var")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_numba_cuda_batch_norm_backward_matches_reference(name, dtype):
    low, high = problem(name).in_dtype(dtype)
    training = CASES[name].training
    out = backward("numba_cuda", low, training)
    ref = backward("reference", high, training)
    for what, o, r in zip(("grad_x", "grad_weight", "grad_bias"), out, ref):
        assert (o is None) == (r is None), f"{what}: {o!r} where the reference gives {r!r}"
        if r is not None:
            assert o.dtype == np.dtype(dtype)
            assert_close(o, r, dtype, what)


def test_numba_cuda_batch_norm_backward_leaves_running_stats_alone():
    p = problem("fc-train")
    before = p.running_mean.copy(), p.running_var.copy()
    backward("numba_cuda", p, True)
    assert np.array_equal(p.running_mean, before[0]) and np.array_equal(p.running_var, before[1])
