"""An LSTM layer, forward and backward, on the CPU: the numpy impl, beside PyTorch's CPU
kernels where torch is installed.

Cases: ``bench/suites/lstm.json``; how to run and time them: ``bench/wrappers.py``."""
import pytest

from wrappers import bench_gpuconv, bench_torch, pass_params

PASSES = pass_params("lstm")


@pytest.mark.parametrize("case, p", PASSES)
def test_numpy_impl(benchmark, case, p):
    bench_gpuconv(benchmark, case, p, "numpy")


@pytest.mark.parametrize("case, p", PASSES)
def test_torch(benchmark, case, p):
    bench_torch(benchmark, case, p)
