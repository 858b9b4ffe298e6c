"""conv2d forward, grad_input and grad_weight on the CPU: the numpy impl, beside PyTorch's
CPU kernels where torch is installed and im2col + GEMM in plain NumPy calls.

Cases: ``bench/suites/conv.json``; how to run and time them: ``bench/wrappers.py``."""
import pytest

from wrappers import bench_array_reference, bench_gpuconv, bench_torch, pass_params

PASSES = pass_params("conv")


@pytest.mark.parametrize("case, p", PASSES)
def test_numpy_impl(benchmark, case, p):
    bench_gpuconv(benchmark, case, p, "numpy")


@pytest.mark.parametrize("case, p", PASSES)
def test_numpy_im2col_gemm_reference(benchmark, case, p):
    bench_array_reference(benchmark, case, p)


@pytest.mark.parametrize("case, p", PASSES)
def test_torch(benchmark, case, p):
    bench_torch(benchmark, case, p)
